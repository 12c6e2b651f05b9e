//! What the pipeline service's events ask of the facts: deals, their versions and stage
//! history, pipelines' stage order, leads, forecasts, quotas and owner changes.

use crm_proto::crm::events::v1 as events;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Name;
use uuid::Uuid;

use super::{Decision, decoded, id_of, optional_id, time};
use crate::domain::*;

/// The checkpoint name of this service's subscription to the pipeline feed.
pub const CONSUMER: &str = "analytics<-pipeline";

/// The producer name of the pipeline service's feed: the package of its messages.
pub const SOURCE: &str = <pb::DealCreated as Name>::PACKAGE;

/// Pipeline events this service knows and keeps nothing of (yet): not skipped as unknown.
fn known_unused() -> [String; 7] {
    [
        pb::ProductCreated::full_name(),
        pb::ProductUpdated::full_name(),
        pb::TaskCreated::full_name(),
        pb::TaskUpdated::full_name(),
        pb::TaskCompleted::full_name(),
        pb::TaskReopened::full_name(),
        pb::TaskDue::full_name(),
    ]
}

fn stage_id(raw: &str) -> Result<Option<Uuid>, String> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| format!("`{raw}` is not a stage id"))
}

fn deal(deal: Option<&pb::Deal>) -> Result<DealFact, String> {
    let deal = deal.ok_or("the deal is missing")?;
    let outcome = match pb::DealStatus::try_from(deal.status) {
        Ok(pb::DealStatus::Won) => Outcome::Won,
        Ok(pb::DealStatus::Lost) => Outcome::Lost,
        Ok(pb::DealStatus::Open) => Outcome::Open,
        _ => return Err(format!("deal status {} is not known", deal.status)),
    };
    let amount = deal.amount.clone().unwrap_or_default();
    Ok(DealFact {
        id: id_of(&deal.name, "deals")?,
        pipeline: id_of(&deal.pipeline, "pipelines")?,
        owner: deal.owner.clone(),
        lead: optional_id(&deal.lead, "leads")?,
        amount_minor: amount.amount_minor,
        currency: amount.currency_code,
        create_time: time(deal.create_time.as_ref(), "deal.create_time")?,
        outcome,
        close_time: match outcome {
            Outcome::Open => None,
            _ => Some(time(deal.close_time.as_ref(), "deal.close_time")?),
        },
        customer: match optional_id(&deal.company, "companies")? {
            Some(company) => Some(company),
            None => optional_id(&deal.contact, "contacts")?,
        },
    })
}

/// A deal's owner and amount as of its update time in the event.
fn version(deal: &pb::Deal, fact: &DealFact) -> Result<DealVersion, String> {
    let time = match deal.update_time.as_ref() {
        Some(_) => time(deal.update_time.as_ref(), "deal.update_time")?,
        None => fact.create_time,
    };
    Ok(DealVersion {
        deal: fact.id,
        time,
        owner: fact.owner.clone(),
        amount_minor: fact.amount_minor,
        currency: fact.currency.clone(),
    })
}

/// A new deal's changes: the deal, its version, and the first entry of its history (its
/// creation into its first stage, which the creating event implies: sequence 1).
fn new_deal(d: Option<&pb::Deal>) -> Result<Vec<FactChange>, String> {
    let mut changes = edited_deal(d, true)?;
    let created = match changes.iter().find(|c| matches!(c, FactChange::Deal(_))) {
        Some(FactChange::Deal(fact)) => TransitionFact {
            deal: fact.id,
            sequence: 1,
            kind: TransitionKind::Created,
            from_stage: None,
            to_stage: stage_id(&d.map(|d| d.stage.clone()).unwrap_or_default())?,
            time: fact.create_time,
        },
        _ => return Err("the deal is missing".into()),
    };
    changes.push(FactChange::Transition(created));
    Ok(changes)
}

/// A deal's stage changed (moved, won, lost, reopened): the deal and the entry of its
/// history the event carries (a stage change leaves its owner, amount and products as they
/// were).
fn deal_changes(d: Option<&pb::Deal>, t: Option<&pb::StageTransition>) -> Result<Vec<FactChange>, String> {
    let mut changes = vec![FactChange::Deal(deal(d)?)];
    if t.is_some() {
        changes.push(FactChange::Transition(transition(t)?));
    }
    Ok(changes)
}

/// A deal created or edited: its products (an edit may remove them all; a creation names them
/// when it has any), the deal, and its version (owner and amount as of then).
fn edited_deal(d: Option<&pb::Deal>, created: bool) -> Result<Vec<FactChange>, String> {
    let fact = deal(d)?;
    let proto = d.ok_or("the deal is missing")?;
    let version = version(proto, &fact)?;
    let products = proto
        .line_items
        .iter()
        .map(|item| id_of(&item.product, "products"))
        .collect::<Result<Vec<_>, String>>()?;
    let mut changes = Vec::new();
    if !(created && products.is_empty()) {
        changes.push(FactChange::Products {
            deal: fact.id,
            products,
        });
    }
    changes.push(FactChange::Deal(fact));
    changes.push(FactChange::Version(version));
    Ok(changes)
}

/// A pipeline's stages in board order.
fn stages(p: Option<&pb::Pipeline>) -> Result<Vec<FactChange>, String> {
    let p = p.ok_or("the pipeline is missing")?;
    let pipeline = id_of(&p.name, "pipelines")?;
    let stages = p
        .stages
        .iter()
        .enumerate()
        .map(|(position, s)| {
            let kind = match pb::StageKind::try_from(s.kind) {
                Ok(pb::StageKind::Open) => StageKind::Open,
                Ok(pb::StageKind::Won) => StageKind::Won,
                Ok(pb::StageKind::Lost) => StageKind::Lost,
                _ => return Err(format!("stage kind {} is not known", s.kind)),
            };
            Ok(StageFact {
                pipeline,
                stage: stage_id(&s.id)?.ok_or("a stage has no id")?,
                position: i32::try_from(position).map_err(|_| "too many stages")?,
                kind,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(vec![FactChange::Stages { pipeline, stages }])
}

fn transition(t: Option<&pb::StageTransition>) -> Result<TransitionFact, String> {
    let t = t.ok_or("the transition is missing")?;
    let kind = match pb::TransitionKind::try_from(t.kind) {
        Ok(pb::TransitionKind::Created) => TransitionKind::Created,
        Ok(pb::TransitionKind::Moved) => TransitionKind::Moved,
        Ok(pb::TransitionKind::Won) => TransitionKind::Won,
        Ok(pb::TransitionKind::Lost) => TransitionKind::Lost,
        Ok(pb::TransitionKind::Reopened) => TransitionKind::Reopened,
        _ => return Err(format!("transition kind {} is not known", t.kind)),
    };
    Ok(TransitionFact {
        deal: id_of(&t.deal, "deals")?,
        sequence: t.sequence,
        kind,
        from_stage: stage_id(&t.from_stage)?,
        to_stage: stage_id(&t.to_stage)?,
        time: time(t.transition_time.as_ref(), "transition.transition_time")?,
    })
}

fn lead(lead: Option<&pb::Lead>) -> Result<LeadFact, String> {
    let lead = lead.ok_or("the lead is missing")?;
    let converted = match optional_id(&lead.converted_deal, "deals")? {
        Some(deal) => Some((deal, time(lead.convert_time.as_ref(), "lead.convert_time")?)),
        None => None,
    };
    Ok(LeadFact {
        id: id_of(&lead.name, "leads")?,
        owner: lead.owner.clone(),
        source: lead.source.clone(),
        create_time: time(lead.create_time.as_ref(), "lead.create_time")?,
        converted,
    })
}

fn money(money: Option<&crm_proto::crm::common::v1::Money>, field: &str) -> Result<(i64, String), String> {
    let money = money.ok_or_else(|| format!("{field} is missing"))?;
    Ok((money.amount_minor, money.currency_code.clone()))
}

fn forecast(f: Option<&pb::Forecast>) -> Result<ForecastFact, String> {
    let f = f.ok_or("the forecast is missing")?;
    let category = match pb::ForecastCategory::try_from(f.category) {
        Ok(pb::ForecastCategory::Pipeline) => "pipeline",
        Ok(pb::ForecastCategory::BestCase) => "best_case",
        Ok(pb::ForecastCategory::Commit) => CALL_CATEGORY,
        Ok(pb::ForecastCategory::Closed) => "closed",
        Ok(pb::ForecastCategory::Omitted) => "omitted",
        _ => return Err(format!("forecast category {} is not known", f.category)),
    };
    let (amount_minor, currency) = money(f.amount.as_ref(), "forecast.amount")?;
    Ok(ForecastFact {
        id: id_of(&f.name, "forecasts")?,
        owner: f.owner.clone(),
        period: f.period.clone(),
        amount_minor,
        currency,
        category: category.to_owned(),
        submit_time: time(f.submit_time.as_ref(), "forecast.submit_time")?,
    })
}

fn quota(q: Option<&pb::Quota>) -> Result<QuotaFact, String> {
    let q = q.ok_or("the quota is missing")?;
    let (amount_minor, currency) = money(q.amount.as_ref(), "quota.amount")?;
    Ok(QuotaFact {
        owner: q.owner.clone(),
        period: q.period.clone(),
        amount_minor,
        currency,
    })
}

/// What a pipeline event asks of the facts.
pub fn decide(event: &events::Event) -> Decision {
    let changes = || -> Option<Result<Vec<FactChange>, String>> {
        if let Some(m) = decoded::<pb::PipelineCreated>(event) {
            return Some(m.and_then(|m| stages(m.pipeline.as_ref())));
        }
        if let Some(m) = decoded::<pb::PipelineUpdated>(event) {
            return Some(m.and_then(|m| stages(m.pipeline.as_ref())));
        }
        if let Some(m) = decoded::<pb::DealCreated>(event) {
            return Some(m.and_then(|m| new_deal(m.deal.as_ref())));
        }
        if let Some(m) = decoded::<pb::DealUpdated>(event) {
            return Some(m.and_then(|m| edited_deal(m.deal.as_ref(), false)));
        }
        if let Some(m) = decoded::<pb::DealStageChanged>(event) {
            return Some(m.and_then(|m| deal_changes(m.deal.as_ref(), m.transition.as_ref())));
        }
        if let Some(m) = decoded::<pb::DealWon>(event) {
            return Some(m.and_then(|m| deal_changes(m.deal.as_ref(), m.transition.as_ref())));
        }
        if let Some(m) = decoded::<pb::DealLost>(event) {
            return Some(m.and_then(|m| deal_changes(m.deal.as_ref(), m.transition.as_ref())));
        }
        if let Some(m) = decoded::<pb::DealReopened>(event) {
            return Some(m.and_then(|m| deal_changes(m.deal.as_ref(), m.transition.as_ref())));
        }
        let lead_changed = |l: Option<&pb::Lead>| lead(l).map(|l| vec![FactChange::Lead(l)]);
        if let Some(m) = decoded::<pb::LeadCreated>(event) {
            return Some(m.and_then(|m| lead_changed(m.lead.as_ref())));
        }
        if let Some(m) = decoded::<pb::LeadUpdated>(event) {
            return Some(m.and_then(|m| lead_changed(m.lead.as_ref())));
        }
        if let Some(m) = decoded::<pb::LeadQualified>(event) {
            return Some(m.and_then(|m| lead_changed(m.lead.as_ref())));
        }
        if let Some(m) = decoded::<pb::LeadDisqualified>(event) {
            return Some(m.and_then(|m| lead_changed(m.lead.as_ref())));
        }
        if let Some(m) = decoded::<pb::LeadConverted>(event) {
            return Some(m.and_then(|m| {
                let mut changes = lead_changed(m.lead.as_ref())?;
                changes.extend(new_deal(m.deal.as_ref())?);
                Ok(changes)
            }));
        }
        if let Some(m) = decoded::<pb::ForecastSubmitted>(event) {
            return Some(m.and_then(|m| Ok(vec![FactChange::Forecast(forecast(m.forecast.as_ref())?)])));
        }
        if let Some(m) = decoded::<pb::QuotaSet>(event) {
            return Some(m.and_then(|m| Ok(vec![FactChange::Quota(quota(m.quota.as_ref())?)])));
        }
        if let Some(m) = decoded::<pb::OwnerChanged>(event) {
            return Some(m.and_then(|m| {
                let at = time(event.time.as_ref(), "the event's time")?;
                let transfer = FactChange::Transfer(TransferFact {
                    resource: m.resource.clone(),
                    time: at,
                    from: m.old_owner,
                    to: m.new_owner.clone(),
                });
                let record = if m.resource.starts_with("deals/") {
                    Record::Deal(id_of(&m.resource, "deals")?)
                } else if m.resource.starts_with("leads/") {
                    Record::Lead(id_of(&m.resource, "leads")?)
                } else {
                    // Tasks and other records: only the transfer is kept.
                    return Ok(vec![transfer]);
                };
                Ok(vec![
                    FactChange::Owner {
                        record,
                        owner: m.new_owner,
                        time: at,
                    },
                    transfer,
                ])
            }));
        }
        super::usage(event)
    };
    Decision::of(changes(), event, &known_unused())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use crm_proto::prost::Message;

    use super::super::batch_of;
    use super::*;

    fn event(kind: String, payload: Vec<u8>) -> events::Event {
        events::Event {
            tenant: "acme".into(),
            sequence: 7,
            r#type: kind,
            payload: Some(prost_types::Any {
                type_url: String::new(),
                value: payload,
            }),
            ..Default::default()
        }
    }

    fn stamp(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn each_event_is_applied_ignored_skipped_or_parked() {
        let deal = pb::Deal {
            name: format!("deals/{}", Uuid::now_v7()),
            pipeline: format!("pipelines/{}", Uuid::now_v7()),
            owner: "ann".into(),
            status: pb::DealStatus::Open as i32,
            create_time: stamp(1_790_000_000),
            ..Default::default()
        };
        let created = event(
            pb::DealCreated::full_name(),
            pb::DealCreated {
                deal: Some(deal.clone()),
            }
            .encode_to_vec(),
        );
        // The deal (without products), its version, and its creation into its first stage.
        let Decision::Apply(changes) = decide(&created) else {
            panic!("a new deal is applied")
        };
        assert!(
            matches!(&changes[..], [FactChange::Deal(_), FactChange::Version(_), FactChange::Transition(t)]
            if t.sequence == 1 && t.kind == TransitionKind::Created && t.time == Utc.timestamp_opt(1_790_000_000, 0).unwrap())
        );
        let task = event(pb::TaskCreated::full_name(), Vec::new());
        assert_eq!(decide(&task), Decision::Ignore);
        let future = event("crm.pipeline.v1.DealTeleported".into(), Vec::new());
        assert_eq!(decide(&future), Decision::Skip);
        let garbage = event(pb::DealWon::full_name(), vec![0xff, 0xff, 0xff]);
        assert!(matches!(decide(&garbage), Decision::Park(reason) if reason.contains("does not decode")));
        let mut bad_id = deal;
        bad_id.name = "deals/not-a-uuid".into();
        let bad = event(
            pb::DealCreated::full_name(),
            pb::DealCreated { deal: Some(bad_id) }.encode_to_vec(),
        );
        assert!(matches!(decide(&bad), Decision::Park(reason) if reason.contains("not a deals resource name")));

        // In a batch: the applied changes under their tenant, the skipped and parked counted,
        // the watermark at the last event.
        let now = Utc::now();
        let batch = batch_of(SOURCE, decide, &[created, task, future, garbage], now);
        assert_eq!(batch.changes.len(), 3);
        assert_eq!(batch.skipped.len(), 1);
        assert_eq!(batch.parked.len(), 1);
        assert_eq!(batch.last.map(|(seq, _)| seq), Some(7));
    }

    #[test]
    fn an_owner_change_of_a_deal_is_its_new_owner_from_the_event_time() {
        let deal = Uuid::now_v7();
        let mut moved = event(
            pb::OwnerChanged::full_name(),
            pb::OwnerChanged {
                resource: format!("deals/{deal}"),
                old_owner: "ann".into(),
                new_owner: "ben".into(),
            }
            .encode_to_vec(),
        );
        moved.time = stamp(1_790_000_000);
        let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        let Decision::Apply(changes) = decide(&moved) else {
            panic!("an owner change is applied")
        };
        assert!(
            matches!(&changes[..], [FactChange::Owner { record: Record::Deal(id), owner, time }, FactChange::Transfer(t)]
            if *id == deal && owner == "ben" && *time == at && t.time == at && t.from == "ann"),
            "{changes:?}"
        );
        // A task's: the transfer alone.
        let mut task = moved.clone();
        task.payload = Some(prost_types::Any {
            type_url: String::new(),
            value: pb::OwnerChanged {
                resource: format!("tasks/{}", Uuid::now_v7()),
                old_owner: "ann".into(),
                new_owner: "ben".into(),
            }
            .encode_to_vec(),
        });
        assert!(matches!(decide(&task), Decision::Apply(changes) if matches!(&changes[..], [FactChange::Transfer(_)])));
    }
}
