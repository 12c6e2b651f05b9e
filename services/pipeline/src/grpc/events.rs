//! The payloads of the pipeline service's events: stored as JSON (the record after the change,
//! see `app::Payload`) and rendered as crm.pipeline.v1 messages when served.

use crm_platform::outbox::StoredEvent;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Message;
use serde::de::DeserializeOwned;

use super::convert;
use crate::app::{Payload, Rec, StoredTransition};
use crate::domain::{Deal, Transition};

/// The producer name in every envelope of this service.
pub const SOURCE: &str = "crm.pipeline.v1";

/// Every event type this service publishes.
pub const TYPES: &[&str] = &[
    "crm.pipeline.v1.PipelineCreated",
    "crm.pipeline.v1.PipelineUpdated",
    "crm.pipeline.v1.LeadCreated",
    "crm.pipeline.v1.LeadUpdated",
    "crm.pipeline.v1.LeadQualified",
    "crm.pipeline.v1.LeadDisqualified",
    "crm.pipeline.v1.LeadConverted",
    "crm.pipeline.v1.DealCreated",
    "crm.pipeline.v1.DealUpdated",
    "crm.pipeline.v1.DealStageChanged",
    "crm.pipeline.v1.DealWon",
    "crm.pipeline.v1.DealLost",
    "crm.pipeline.v1.DealReopened",
    "crm.pipeline.v1.ProductCreated",
    "crm.pipeline.v1.ProductUpdated",
    "crm.pipeline.v1.TaskCreated",
    "crm.pipeline.v1.TaskUpdated",
    "crm.pipeline.v1.TaskCompleted",
    "crm.pipeline.v1.TaskReopened",
    "crm.pipeline.v1.TaskDue",
    "crm.pipeline.v1.ForecastSubmitted",
    "crm.pipeline.v1.QuotaSet",
    "crm.pipeline.v1.OwnerChanged",
];

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

/// Renders a stored event's payload as the message its type names.
pub fn render(event: &StoredEvent) -> Result<crm_proto::prost_types::Any, String> {
    let p: Payload = serde_json::from_value(event.payload.clone()).map_err(|e| format!("stored payload: {e}"))?;
    let changed = p.changed.clone();
    let r = &p.record;
    let value = match event.kind.as_str() {
        "crm.pipeline.v1.PipelineCreated" => pb::PipelineCreated {
            pipeline: Some(convert::pipeline(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.PipelineUpdated" => pb::PipelineUpdated {
            pipeline: Some(convert::pipeline(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec(),
        "crm.pipeline.v1.LeadCreated" => pb::LeadCreated {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.LeadUpdated" => pb::LeadUpdated {
            lead: Some(convert::lead(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec(),
        "crm.pipeline.v1.LeadQualified" => pb::LeadQualified {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.LeadDisqualified" => pb::LeadDisqualified {
            lead: Some(convert::lead(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.LeadConverted" => pb::LeadConverted {
            lead: Some(convert::lead(&rec(r)?)),
            deal: Some(convert::deal(&rec(&p.deal)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.DealCreated" => pb::DealCreated {
            deal: Some(convert::deal(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.DealUpdated" => pb::DealUpdated {
            deal: Some(convert::deal(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec(),
        kind @ ("crm.pipeline.v1.DealStageChanged"
        | "crm.pipeline.v1.DealWon"
        | "crm.pipeline.v1.DealLost"
        | "crm.pipeline.v1.DealReopened") => {
            let deal: Rec<Deal> = rec(r)?;
            let (deal, transition) = (Some(convert::deal(&deal)), transition(&deal, p.transition.as_ref()));
            match kind {
                "crm.pipeline.v1.DealStageChanged" => pb::DealStageChanged { deal, transition }.encode_to_vec(),
                "crm.pipeline.v1.DealWon" => pb::DealWon { deal, transition }.encode_to_vec(),
                "crm.pipeline.v1.DealLost" => pb::DealLost { deal, transition }.encode_to_vec(),
                _ => pb::DealReopened { deal, transition }.encode_to_vec(),
            }
        }
        "crm.pipeline.v1.ProductCreated" => pb::ProductCreated {
            product: Some(convert::product(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.ProductUpdated" => pb::ProductUpdated {
            product: Some(convert::product(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec(),
        "crm.pipeline.v1.TaskCreated" => pb::TaskCreated {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.TaskUpdated" => pb::TaskUpdated {
            task: Some(convert::task(&rec(r)?)),
            changed_fields: changed,
        }
        .encode_to_vec(),
        "crm.pipeline.v1.TaskCompleted" => pb::TaskCompleted {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.TaskReopened" => pb::TaskReopened {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.TaskDue" => pb::TaskDue {
            task: Some(convert::task(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.ForecastSubmitted" => pb::ForecastSubmitted {
            forecast: Some(convert::forecast(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.QuotaSet" => pb::QuotaSet {
            quota: Some(convert::quota(&rec(r)?)),
        }
        .encode_to_vec(),
        "crm.pipeline.v1.OwnerChanged" => pb::OwnerChanged {
            resource: event.subject.clone(),
            old_owner: p.old_owner.clone(),
            new_owner: p.new_owner.clone(),
        }
        .encode_to_vec(),
        other => return Err(format!("unknown event type {other}")),
    };
    Ok(crm_proto::prost_types::Any {
        type_url: format!("type.googleapis.com/{}", event.kind),
        value,
    })
}
