//! The renderer of events written before events were typed (outbox `format` 0): their payload
//! is this service's own earlier JSON (the record after the change and what the event added),
//! not the proto3 JSON of the message their type names. Only such rows reach it (see
//! `StoredEvent::legacy`); they leave with the outbox's retention, and this module goes in a
//! later release. Nothing else reads this form.

use chrono::{DateTime, Utc};
use crm_platform::outbox::StoredEvent;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::{Message, Name};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::convert;
use crate::domain::{Deal, Money, Rec, Transition, TransitionKind};

/// An event's payload as it was stored before typed events.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Payload {
    /// The record after the change (a `Rec` in JSON).
    pub record: serde_json::Value,
    #[serde(default)]
    pub changed: Vec<String>,
    /// The deal a lead became (LeadConverted).
    #[serde(default)]
    pub deal: serde_json::Value,
    /// The stage transition (deal moves, closes, reopens).
    #[serde(default)]
    pub transition: Option<StoredTransition>,
    #[serde(default)]
    pub old_owner: String,
    #[serde(default)]
    pub new_owner: String,
}

/// A transition as such a payload stored it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct StoredTransition {
    pub seq: i64,
    pub kind: TransitionKind,
    pub from_stage: Option<Uuid>,
    pub to_stage: Uuid,
    pub from_stage_name: String,
    pub to_stage_name: String,
    pub amount: Money,
    pub actor: String,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub time: DateTime<Utc>,
    pub reason: String,
}

fn rec<T: DeserializeOwned>(value: &serde_json::Value) -> Result<Rec<T>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("stored payload: {e}"))
}

fn transition(deal: &Rec<Deal>, stored: Option<&StoredTransition>) -> Option<pb::StageTransition> {
    stored.map(|t| {
        convert::transition(&Transition {
            deal: deal.id,
            seq: t.seq,
            kind: t.kind,
            from_stage: t.from_stage,
            to_stage: t.to_stage,
            from_stage_name: t.from_stage_name.clone(),
            to_stage_name: t.to_stage_name.clone(),
            amount: t.amount.clone(),
            actor: t.actor.clone(),
            time: t.time,
            reason: t.reason.clone(),
        })
    })
}

/// Whether `kind` names the message `M`.
fn is<M: Name>(kind: &str) -> bool {
    kind == M::full_name()
}

/// Renders a legacy event's payload as the message its type names, as the service did when
/// it wrote it.
pub fn render(event: &StoredEvent) -> Result<crm_proto::prost_types::Any, String> {
    let p: Payload = serde_json::from_value(event.payload.clone()).map_err(|e| format!("stored payload: {e}"))?;
    let changed = p.changed.clone();
    let r = &p.record;
    let kind = event.kind.as_str();
    let deal_change = || -> Result<_, String> {
        let deal: Rec<Deal> = rec(r)?;
        Ok((Some(convert::deal(&deal)), transition(&deal, p.transition.as_ref())))
    };
    let value = if is::<pb::PipelineCreated>(kind) {
        pb::PipelineCreated {
            pipeline: Some(convert::pipeline(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::PipelineUpdated>(kind) {
        pb::PipelineUpdated {
            pipeline: Some(convert::pipeline(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec()
    } else if is::<pb::LeadCreated>(kind) {
        pb::LeadCreated {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::LeadUpdated>(kind) {
        pb::LeadUpdated {
            lead: Some(convert::lead(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec()
    } else if is::<pb::LeadQualified>(kind) {
        pb::LeadQualified {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::LeadDisqualified>(kind) {
        pb::LeadDisqualified {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::LeadConverted>(kind) {
        pb::LeadConverted {
            lead: Some(convert::lead(&rec(r)?)),
            deal: Some(convert::deal(&rec(&p.deal)?)),
        }
        .encode_to_vec()
    } else if is::<pb::DealCreated>(kind) {
        pb::DealCreated {
            deal: Some(convert::deal(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::DealUpdated>(kind) {
        pb::DealUpdated {
            deal: Some(convert::deal(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec()
    } else if is::<pb::DealStageChanged>(kind) {
        let (deal, transition) = deal_change()?;
        pb::DealStageChanged { deal, transition }.encode_to_vec()
    } else if is::<pb::DealWon>(kind) {
        let (deal, transition) = deal_change()?;
        pb::DealWon { deal, transition }.encode_to_vec()
    } else if is::<pb::DealLost>(kind) {
        let (deal, transition) = deal_change()?;
        pb::DealLost { deal, transition }.encode_to_vec()
    } else if is::<pb::DealReopened>(kind) {
        let (deal, transition) = deal_change()?;
        pb::DealReopened { deal, transition }.encode_to_vec()
    } else if is::<pb::ProductCreated>(kind) {
        pb::ProductCreated {
            product: Some(convert::product(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::ProductUpdated>(kind) {
        pb::ProductUpdated {
            product: Some(convert::product(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec()
    } else if is::<pb::TaskCreated>(kind) {
        pb::TaskCreated {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::TaskUpdated>(kind) {
        pb::TaskUpdated {
            task: Some(convert::task(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec()
    } else if is::<pb::TaskCompleted>(kind) {
        pb::TaskCompleted {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::TaskReopened>(kind) {
        pb::TaskReopened {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::TaskDue>(kind) {
        pb::TaskDue {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::ForecastSubmitted>(kind) {
        pb::ForecastSubmitted {
            forecast: Some(convert::forecast(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::QuotaSet>(kind) {
        pb::QuotaSet {
            quota: Some(convert::quota(&rec(r)?)),
        }
        .encode_to_vec()
    } else if is::<pb::OwnerChanged>(kind) {
        pb::OwnerChanged {
            resource: event.subject.clone(),
            old_owner: p.old_owner.clone(),
            new_owner: p.new_owner.clone(),
        }
        .encode_to_vec()
    } else {
        return Err(format!("unknown event type {kind}"));
    };
    Ok(crm_proto::prost_types::Any {
        type_url: format!("type.googleapis.com/{kind}"),
        value,
    })
}
