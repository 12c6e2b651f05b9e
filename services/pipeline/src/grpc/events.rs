//! The pipeline service's events as its feed serves them. The application emits them typed
//! (the crm.pipeline.v1 messages, stored as their proto3 JSON) and the platform's feed renders
//! them generically; events written before typed events render through
//! [`legacy_events::render`](super::legacy_events::render).

use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Name;

/// The producer name in every envelope of this service: the package of its messages.
pub const SOURCE: &str = <pb::DealCreated as Name>::PACKAGE;

/// Every event type this service publishes.
pub fn types() -> Vec<String> {
    vec![
        pb::PipelineCreated::full_name(),
        pb::PipelineUpdated::full_name(),
        pb::LeadCreated::full_name(),
        pb::LeadUpdated::full_name(),
        pb::LeadQualified::full_name(),
        pb::LeadDisqualified::full_name(),
        pb::LeadConverted::full_name(),
        pb::DealCreated::full_name(),
        pb::DealUpdated::full_name(),
        pb::DealStageChanged::full_name(),
        pb::DealWon::full_name(),
        pb::DealLost::full_name(),
        pb::DealReopened::full_name(),
        pb::ProductCreated::full_name(),
        pb::ProductUpdated::full_name(),
        pb::TaskCreated::full_name(),
        pb::TaskUpdated::full_name(),
        pb::TaskCompleted::full_name(),
        pb::TaskReopened::full_name(),
        pb::TaskDue::full_name(),
        pb::ForecastSubmitted::full_name(),
        pb::QuotaSet::full_name(),
        pb::OwnerChanged::full_name(),
    ]
}
