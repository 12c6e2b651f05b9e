//! The pipeline service's events as its feed serves them. The application emits them typed
//! (the crm.pipeline.v1 messages, stored as their proto3 JSON) and the platform's feed renders
//! them generically; events written before typed events render through
//! [`legacy_events::render`](super::legacy_events::render).

use crm_platform::feed::EventType;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Name;

/// The producer name in every envelope of this service: the package of its messages.
pub const SOURCE: &str = <pb::DealCreated as Name>::PACKAGE;

/// Every event type this service publishes.
pub fn types() -> Vec<EventType> {
    vec![
        EventType::of::<pb::PipelineCreated>(),
        EventType::of::<pb::PipelineUpdated>(),
        EventType::of::<pb::LeadCreated>(),
        EventType::of::<pb::LeadUpdated>(),
        EventType::of::<pb::LeadQualified>(),
        EventType::of::<pb::LeadDisqualified>(),
        EventType::of::<pb::LeadConverted>(),
        EventType::of::<pb::DealCreated>(),
        EventType::of::<pb::DealUpdated>(),
        EventType::of::<pb::DealStageChanged>(),
        EventType::of::<pb::DealWon>(),
        EventType::of::<pb::DealLost>(),
        EventType::of::<pb::DealReopened>(),
        EventType::of::<pb::ProductCreated>(),
        EventType::of::<pb::ProductUpdated>(),
        EventType::of::<pb::TaskCreated>(),
        EventType::of::<pb::TaskUpdated>(),
        EventType::of::<pb::TaskCompleted>(),
        EventType::of::<pb::TaskReopened>(),
        EventType::of::<pb::TaskDue>(),
        EventType::of::<pb::ForecastSubmitted>(),
        EventType::of::<pb::QuotaSet>(),
        EventType::of::<pb::OwnerChanged>(),
        EventType::of::<crm_proto::crm::events::v1::UsageReported>(),
    ]
}
