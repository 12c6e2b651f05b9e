//! History: the deals and leads of the years before the CRM, imported with their original
//! times so that a baseline can be measured on day one.
//!
//! An imported record is written once, in its final state, with every stage transition it
//! went through; its events are the ones the same history would have published live (created,
//! each stage entered, won or lost; for a lead created, qualified or disqualified, converted),
//! each carrying the record as it was then and the original time. A record keeps the id it
//! had in the system it comes from (`external_id`, unique per tenant): a row whose id was
//! imported before changes nothing, so an import can be run again, also after it was cut.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_platform::{ApiError, UserId};
use uuid::Uuid;

use super::deals::transition;
use super::{Caller, PipelineApp, Rec, changed, event, put};
use crate::convert;
use crate::domain::{
    CompanyRef, ContactRef, Deal, DealId, DealStatus, ForecastCategory, Lead, LeadId, LeadStatus, MAX_STAGES, Money,
    Pipeline, PipelineId, StageKind, TransitionKind,
};
use crate::store::{Filter, Kind, ListQuery, StoreError, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// Pipelines a tenant may have that an import looks up by name.
const MAX_PIPELINES_BY_NAME: usize = 1000;

/// A stage a historical deal entered: its id or name, and when (None: at creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEntry {
    pub stage: String,
    pub time: Option<DateTime<Utc>>,
}

/// A deal of the past, as the system it comes from recorded it (checked for form at the edge;
/// [`PipelineApp::import_deal`] checks it against the tenant's pipelines and contacts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalDeal {
    pub external_id: String,
    pub name: String,
    /// `pipelines/{id}`, the id, or the pipeline's name.
    pub pipeline: String,
    pub owner: Option<String>,
    pub amount: Money,
    pub contact: Option<ContactRef>,
    pub company: Option<CompanyRef>,
    pub create_time: DateTime<Utc>,
    pub stages: Vec<StageEntry>,
    pub status: DealStatus,
    pub close_time: Option<DateTime<Utc>>,
    pub close_reason: String,
    /// The source of the lead the deal came from, and when that lead was created.
    pub lead: Option<(String, Option<DateTime<Utc>>)>,
}

/// A lead of the past that did not become a deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalLead {
    pub external_id: String,
    pub title: String,
    pub owner: Option<String>,
    pub source: String,
    pub contact: Option<ContactRef>,
    pub company: Option<CompanyRef>,
    pub create_time: DateTime<Utc>,
    pub status: LeadStatus,
    pub disqualify_reason: String,
    pub status_time: Option<DateTime<Utc>>,
}

/// What importing a row did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Created: the record's name (None on a dry run).
    Created(Option<String>),
    /// A record with this external id was imported before: its name.
    Unchanged(String),
}

/// The pipelines an import named, resolved once per import.
#[derive(Debug, Default)]
pub struct Pipelines(HashMap<String, Rec<Pipeline>>);

/// An id of a record created at `time`: time-ordered like every id, by the original time, so
/// lists (in id order) show history in the order it happened.
fn historical_id(time: DateTime<Utc>) -> Result<Uuid, String> {
    let seconds = u64::try_from(time.timestamp()).map_err(|_| "must be after 1970".to_owned())?;
    Ok(Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        time.timestamp_subsec_nanos(),
    )))
}

fn owner_of(caller: &Caller, owner: Option<String>, field: &str) -> Result<String, ApiError> {
    let owner = owner.unwrap_or_else(|| caller.user().to_owned());
    UserId::parse(&owner).map_err(|reason| ApiError::invalid_field(field, reason))?;
    Ok(owner)
}

fn not_future(time: DateTime<Utc>, now: DateTime<Utc>, field: &str) -> Result<(), ApiError> {
    if time > now {
        return Err(ApiError::invalid_field(field, "is in the future"));
    }
    Ok(())
}

impl PipelineApp {
    /// Fails unless the caller may import history: managers and admins, since the rows name
    /// any owner and the records are the company's past.
    pub fn ensure_can_import_history(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.who.writes_all() {
            Ok(())
        } else {
            Err(ApiError::permission_denied("only managers and admins import history"))
        }
    }

    /// The record of `kind` imported with `external_id`, if there is one.
    async fn imported(&self, caller: &Caller, kind: Kind, external_id: &str) -> Result<Option<Uuid>, ApiError> {
        let query = ListQuery {
            kind,
            filters: vec![Filter::ExternalId(external_id.to_owned())],
            after: None,
            limit: 1,
        };
        let found = self
            .store
            .list(caller.tenant(), &query)
            .await
            .map_err(super::store_error)?;
        Ok(found.first().map(|listed| listed.doc.id))
    }

    /// The pipeline a row names by `pipelines/{id}`, id or name.
    async fn resolve_pipeline(
        &self,
        caller: &Caller,
        pipelines: &mut Pipelines,
        named: &str,
    ) -> Result<Rec<Pipeline>, ApiError> {
        if let Some(found) = pipelines.0.get(named) {
            return Ok(found.clone());
        }
        let by_id = PipelineId::parse_name(named)
            .map(|id| id.0)
            .or_else(|_| Uuid::parse_str(named));
        let found = match by_id {
            Ok(id) => self
                .store
                .get(caller.tenant(), Kind::Pipeline, id)
                .await
                .map_err(super::store_error)?
                .map(Rec::from_doc)
                .transpose()?,
            Err(_) => {
                let query = ListQuery {
                    kind: Kind::Pipeline,
                    filters: vec![],
                    after: None,
                    limit: MAX_PIPELINES_BY_NAME,
                };
                self.list_records::<Pipeline>(caller.tenant(), &query)
                    .await?
                    .into_iter()
                    .map(|(_, p)| p)
                    .find(|p| p.body.name.eq_ignore_ascii_case(named.trim()))
            }
        };
        let found = found.ok_or_else(|| ApiError::invalid_field("deal.pipeline", format!("no pipeline `{named}`")))?;
        pipelines.0.insert(named.to_owned(), found.clone());
        Ok(found)
    }

    /// Writes an imported record's write, or finds the record a concurrent import of the same
    /// external id wrote first.
    async fn write_imported(
        &self,
        caller: &Caller,
        kind: Kind,
        external_id: &str,
        name: String,
        write: &Write,
    ) -> Result<Imported, ApiError> {
        match self.store.write(caller.tenant(), write).await {
            Ok(()) => Ok(Imported::Created(Some(name))),
            Err(StoreError::Taken("external_id")) => match self.imported(caller, kind, external_id).await? {
                Some(id) => Ok(Imported::Unchanged(format!("{}/{id}", kind.table()))),
                None => Err(ApiError::internal(&"an external id is taken by no record")),
            },
            Err(err) => Err(super::store_error(err)),
        }
    }

    /// Imports one historical deal (and the lead it came from). See the module's comment.
    pub async fn import_deal(
        &self,
        caller: &Caller,
        pipelines: &mut Pipelines,
        row: HistoricalDeal,
        dry_run: bool,
    ) -> Result<Imported, ApiError> {
        if let Some(id) = self.imported(caller, Kind::Deal, &row.external_id).await? {
            return Ok(Imported::Unchanged(DealId(id).name()));
        }
        let now = self.now();
        let created = row.create_time;
        not_future(created, now, "deal.create_time")?;
        let owner = owner_of(caller, row.owner.clone(), "deal.owner")?;
        let pipeline = self.resolve_pipeline(caller, pipelines, &row.pipeline).await?;
        let stages = entered_stages(&pipeline.body, &row.stages, created)?;
        let close = closing(&pipeline.body, &row, stages.last().map_or(created, |s| s.2), now)?;
        let contact = self.check_contact(caller, row.contact, "deal.contact").await?;
        let company = self.check_company(caller, row.company, "deal.company").await?;
        let lead = match &row.lead {
            None => None,
            Some((source, lead_time)) => {
                let lead_time = lead_time.unwrap_or(created);
                if lead_time > created {
                    return Err(ApiError::invalid_field(
                        "deal.lead_create_time",
                        "is after the deal was created",
                    ));
                }
                let id = historical_id(lead_time).map_err(|r| ApiError::invalid_field("deal.lead_create_time", r))?;
                Some((id, source.clone(), lead_time))
            }
        };
        let id = historical_id(created).map_err(|r| ApiError::invalid_field("deal.create_time", r))?;
        if dry_run {
            return Ok(Imported::Created(None));
        }

        let (first, rest) = stages
            .split_first()
            .ok_or_else(|| ApiError::internal(&"a historical deal has no first stage"))?;
        let mut deal = Rec {
            id,
            revision: 1,
            create_time: created,
            update_time: created,
            body: Deal {
                name: row.name,
                pipeline: pipeline.id,
                stage: first.0,
                status: DealStatus::Open,
                amount: row.amount,
                close_date: None,
                owner: owner.clone(),
                contact,
                company,
                forecast: ForecastCategory::Pipeline,
                lines: Vec::new(),
                close_reason: String::new(),
                close_time: None,
                lead: lead.as_ref().map(|l| l.0),
                stage_enter_time: created,
                transitions: 1,
                external_id: Some(row.external_id.clone()),
            },
        };
        let mut write = Write {
            transitions: vec![transition(
                &deal,
                TransitionKind::Created,
                None,
                (first.0, first.1.clone()),
                caller,
                created,
                "",
            )],
            ..Write::default()
        };
        if let Some((lead_id, source, lead_time)) = lead {
            let mut lead = Rec {
                id: lead_id,
                revision: 1,
                create_time: lead_time,
                update_time: lead_time,
                body: Lead {
                    title: deal.body.name.clone(),
                    contact,
                    company,
                    source,
                    status: LeadStatus::New,
                    disqualify_reason: String::new(),
                    score: 0,
                    owner: owner.clone(),
                    converted_deal: None,
                    convert_time: None,
                    converted_by: String::new(),
                    external_id: Some(row.external_id.clone()),
                },
            };
            write.events.push(event(
                caller,
                LeadId::COLLECTION,
                &lead,
                &pb::LeadCreated {
                    lead: Some(convert::lead(&lead)),
                },
            )?);
            write.events.push(event(
                caller,
                DealId::COLLECTION,
                &deal,
                &pb::DealCreated {
                    deal: Some(convert::deal(&deal)),
                },
            )?);
            let mut body = lead.body.clone();
            body.status = LeadStatus::Converted;
            body.converted_deal = Some(deal.id);
            body.convert_time = Some(created);
            body.converted_by = caller.user().to_owned();
            lead = lead.next(body, created);
            write.events.push(event(
                caller,
                LeadId::COLLECTION,
                &lead,
                &pb::LeadConverted {
                    lead: Some(convert::lead(&lead)),
                    deal: Some(convert::deal(&deal)),
                },
            )?);
            write.puts.push(put(Kind::Lead, &lead, None)?);
        } else {
            write.events.push(event(
                caller,
                DealId::COLLECTION,
                &deal,
                &pb::DealCreated {
                    deal: Some(convert::deal(&deal)),
                },
            )?);
        }
        let mut at = (first.0, first.1.clone());
        for (stage, name, time) in rest {
            let mut body = deal.body.clone();
            body.stage = *stage;
            body.stage_enter_time = *time;
            body.transitions += 1;
            deal = deal.next(body, *time);
            let step = transition(
                &deal,
                TransitionKind::Moved,
                Some(at),
                (*stage, name.clone()),
                caller,
                *time,
                "",
            );
            write.events.push(event(
                caller,
                DealId::COLLECTION,
                &deal,
                &pb::DealStageChanged {
                    deal: Some(convert::deal(&deal)),
                    transition: Some(convert::transition(&step)),
                },
            )?);
            write.transitions.push(step);
            at = (*stage, name.clone());
        }
        if let Some((won, (stage, name), time)) = close {
            let mut body = deal.body.clone();
            body.stage = stage;
            body.stage_enter_time = time;
            body.status = if won { DealStatus::Won } else { DealStatus::Lost };
            body.forecast = if won {
                ForecastCategory::Closed
            } else {
                ForecastCategory::Omitted
            };
            body.close_reason = row.close_reason.clone();
            body.close_time = Some(time);
            body.transitions += 1;
            deal = deal.next(body, time);
            let kind = if won { TransitionKind::Won } else { TransitionKind::Lost };
            let step = transition(&deal, kind, Some(at), (stage, name), caller, time, &row.close_reason);
            let (deal_pb, step_pb) = (Some(convert::deal(&deal)), Some(convert::transition(&step)));
            write.events.push(if won {
                event(
                    caller,
                    DealId::COLLECTION,
                    &deal,
                    &pb::DealWon {
                        deal: deal_pb,
                        transition: step_pb,
                    },
                )?
            } else {
                event(
                    caller,
                    DealId::COLLECTION,
                    &deal,
                    &pb::DealLost {
                        deal: deal_pb,
                        transition: step_pb,
                    },
                )?
            });
            write.transitions.push(step);
        }
        write.puts.insert(0, put(Kind::Deal, &deal, None)?);
        self.write_imported(caller, Kind::Deal, &row.external_id, DealId(deal.id).name(), &write)
            .await
    }

    /// Imports one historical lead that did not become a deal.
    pub async fn import_lead(&self, caller: &Caller, row: HistoricalLead, dry_run: bool) -> Result<Imported, ApiError> {
        if let Some(id) = self.imported(caller, Kind::Lead, &row.external_id).await? {
            return Ok(Imported::Unchanged(LeadId(id).name()));
        }
        let now = self.now();
        let created = row.create_time;
        not_future(created, now, "lead.create_time")?;
        let status_time = row.status_time.unwrap_or(created);
        if status_time < created {
            return Err(ApiError::invalid_field(
                "lead.status_time",
                "is before the lead was created",
            ));
        }
        not_future(status_time, now, "lead.status_time")?;
        match row.status {
            LeadStatus::Converted => {
                return Err(ApiError::invalid_field(
                    "lead.status",
                    "a converted lead is imported with its deal (a deal row's lead_source)",
                ));
            }
            LeadStatus::Disqualified if row.disqualify_reason.is_empty() => {
                return Err(ApiError::invalid_field(
                    "lead.disqualify_reason",
                    "is required when the lead was disqualified",
                ));
            }
            _ => {}
        }
        let owner = owner_of(caller, row.owner, "lead.owner")?;
        let contact = self.check_contact(caller, row.contact, "lead.contact").await?;
        let company = self.check_company(caller, row.company, "lead.company").await?;
        let id = historical_id(created).map_err(|r| ApiError::invalid_field("lead.create_time", r))?;
        if dry_run {
            return Ok(Imported::Created(None));
        }
        let mut lead = Rec {
            id,
            revision: 1,
            create_time: created,
            update_time: created,
            body: Lead {
                title: row.title,
                contact,
                company,
                source: row.source,
                status: LeadStatus::New,
                disqualify_reason: String::new(),
                score: 0,
                owner,
                converted_deal: None,
                convert_time: None,
                converted_by: String::new(),
                external_id: Some(row.external_id.clone()),
            },
        };
        let mut write = Write::default();
        write.events.push(event(
            caller,
            LeadId::COLLECTION,
            &lead,
            &pb::LeadCreated {
                lead: Some(convert::lead(&lead)),
            },
        )?);
        if row.status != LeadStatus::New {
            let mut body = lead.body.clone();
            body.status = row.status;
            body.disqualify_reason = row.disqualify_reason;
            lead = lead.next(body, status_time);
            let record = Some(convert::lead(&lead));
            write.events.push(match row.status {
                LeadStatus::Qualified => event(caller, LeadId::COLLECTION, &lead, &pb::LeadQualified { lead: record })?,
                LeadStatus::Disqualified => event(
                    caller,
                    LeadId::COLLECTION,
                    &lead,
                    &pb::LeadDisqualified { lead: record },
                )?,
                _ => event(
                    caller,
                    LeadId::COLLECTION,
                    &lead,
                    &pb::LeadUpdated {
                        lead: record,
                        changed_fields: changed(vec!["status"]),
                    },
                )?,
            });
        }
        write.puts.push(put(Kind::Lead, &lead, None)?);
        self.write_imported(caller, Kind::Lead, &row.external_id, LeadId(lead.id).name(), &write)
            .await
    }
}

/// The open stages a deal went through, with their names and times: the first at creation
/// (the pipeline's first open stage when none is given), each later one entered at its time,
/// in order.
fn entered_stages(
    pipeline: &Pipeline,
    entries: &[StageEntry],
    created: DateTime<Utc>,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>, ApiError> {
    if entries.len() > MAX_STAGES {
        return Err(ApiError::invalid_field(
            "deal.stages",
            format!("at most {MAX_STAGES} entries"),
        ));
    }
    if entries.is_empty() {
        let first = pipeline
            .first_open()
            .ok_or_else(|| ApiError::invalid_field("deal.pipeline", "has no open stage"))?;
        return Ok(vec![(first.id, first.name.clone(), created)]);
    }
    let mut stages: Vec<(Uuid, String, DateTime<Utc>)> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("deal.stages[{i}]");
        let stage = Uuid::parse_str(entry.stage.trim())
            .ok()
            .and_then(|id| pipeline.stage(id))
            .or_else(|| {
                pipeline
                    .stages
                    .iter()
                    .find(|s| s.name.eq_ignore_ascii_case(entry.stage.trim()))
            })
            .ok_or_else(|| {
                ApiError::invalid_field(
                    format!("{field}.stage"),
                    format!("`{}` is not a stage of pipeline `{}`", entry.stage, pipeline.name),
                )
            })?;
        if stage.kind != StageKind::Open {
            return Err(ApiError::invalid_field(
                format!("{field}.stage"),
                format!(
                    "`{}` is a closing stage: give the deal's status and close time",
                    stage.name
                ),
            ));
        }
        let time = match (i, entry.time) {
            (0, Some(time)) if time != created => {
                return Err(ApiError::invalid_field(
                    format!("{field}.enter_time"),
                    "the first stage is the one the deal was created in: its time is the create time",
                ));
            }
            (0, _) => created,
            (_, None) => {
                return Err(ApiError::invalid_field(format!("{field}.enter_time"), "is required"));
            }
            (_, Some(time)) => time,
        };
        if let Some(previous) = stages.last() {
            if time < previous.2 {
                return Err(ApiError::invalid_field(
                    format!("{field}.enter_time"),
                    "is before the previous stage was entered",
                ));
            }
            if previous.0 == stage.id {
                return Err(ApiError::invalid_field(
                    format!("{field}.stage"),
                    "is the stage the deal was already in",
                ));
            }
        }
        stages.push((stage.id, stage.name.clone(), time));
    }
    Ok(stages)
}

/// How a historical deal closed: won or not, the closing stage and the time; None while open.
type Close = Option<(bool, (Uuid, String), DateTime<Utc>)>;

fn closing(
    pipeline: &Pipeline,
    row: &HistoricalDeal,
    last_entered: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Close, ApiError> {
    let won = match row.status {
        DealStatus::Open => {
            if row.close_time.is_some() {
                return Err(ApiError::invalid_field(
                    "deal.close_time",
                    "an open deal has no close time",
                ));
            }
            return Ok(None);
        }
        DealStatus::Won => true,
        DealStatus::Lost => false,
    };
    let time = row
        .close_time
        .ok_or_else(|| ApiError::invalid_field("deal.close_time", "is required for a won or lost deal"))?;
    if time < last_entered {
        return Err(ApiError::invalid_field(
            "deal.close_time",
            "is before the deal was created or entered its last stage",
        ));
    }
    not_future(time, now, "deal.close_time")?;
    if !won && row.close_reason.is_empty() {
        return Err(ApiError::invalid_field(
            "deal.close_reason",
            "is required when a deal was lost",
        ));
    }
    let kind = if won { StageKind::Won } else { StageKind::Lost };
    let stage = pipeline
        .closing(kind)
        .ok_or_else(|| ApiError::invalid_field("deal.pipeline", "has no stage to close the deal into"))?;
    Ok(Some((won, (stage.id, stage.name.clone()), time)))
}
