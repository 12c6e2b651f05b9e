//! The events of the contact service: typed crm.contact.v1 messages the application emits with
//! each change, which the store writes in the change's own transaction.

use chrono::{DateTime, Utc};
use crm_platform::feed::EventType;
use crm_platform::outbox::{EventError, NewEvent};
use crm_platform::{ApiError, Principal, TenantId, UserId};
use crm_proto::crm::contact::v1 as pb;
use crm_proto::prost::Name;

use crate::convert::{ProtoEnum, proto_value};
use crate::domain::*;

/// Every event type this service publishes.
pub fn types() -> Vec<EventType> {
    vec![
        EventType::of::<pb::ContactCreated>(),
        EventType::of::<pb::ContactUpdated>(),
        EventType::of::<pb::ConsentChanged>(),
        EventType::of::<pb::ContactDeleted>(),
        EventType::of::<pb::ContactErased>(),
        EventType::of::<pb::ContactsMerged>(),
        EventType::of::<pb::OwnerChanged>(),
        EventType::of::<pb::CompanyCreated>(),
        EventType::of::<pb::CompanyUpdated>(),
        EventType::of::<pb::CompanyDeleted>(),
        EventType::of::<pb::CompaniesMerged>(),
        EventType::of::<pb::InteractionLogged>(),
        EventType::of::<crm_proto::crm::events::v1::UsageReported>(),
    ]
}

/// The field whose change lists the records a merge absorbed (on the survivor's entry).
pub(crate) const MERGED_FIELD: &str = "merged";

/// The audit record of a write by `who` to `of` at `time`, with the event it publishes.
pub(crate) fn audit(
    who: &Principal,
    of: Audited,
    action: ChangeAction,
    changes: Vec<FieldChange>,
    time: DateTime<Utc>,
) -> Result<AuditRecord, ApiError> {
    let mut record = AuditRecord {
        action,
        actor: who.user.clone(),
        changes,
        events: Vec::new(),
    };
    record.events = event_of(&who.tenant, of, &record, time)?.into_iter().collect();
    Ok(record)
}

fn event<M: Name>(
    tenant: &TenantId,
    subject: String,
    actor: &UserId,
    time: DateTime<Utc>,
    message: &M,
) -> Result<Option<NewEvent>, EventError> {
    NewEvent::of(tenant, subject, actor.as_str(), time, message).map(Some)
}

fn field_change(change: &FieldChange) -> pb::FieldChange {
    pb::FieldChange {
        field: change.field.clone(),
        old_value: Some(proto_value(&change.old)),
        new_value: Some(proto_value(&change.new)),
    }
}

/// The changes of `record`, but for the merge's list of absorbed records.
fn changed_fields(record: &AuditRecord) -> Vec<pb::FieldChange> {
    record
        .changes
        .iter()
        .filter(|c| c.field != MERGED_FIELD)
        .map(field_change)
        .collect()
}

/// The records a survivor absorbed, when `record` is a survivor's merge entry.
fn absorbed(record: &AuditRecord) -> Option<Vec<String>> {
    let change = record.changes.iter().find(|c| c.field == MERGED_FIELD)?;
    let names = change.new.as_array()?;
    Some(names.iter().filter_map(|n| n.as_str()).map(str::to_owned).collect())
}

/// The event an audited change publishes: none for a record merged away (its survivor's
/// event tells of it).
fn event_of(
    tenant: &TenantId,
    of: Audited,
    record: &AuditRecord,
    time: DateTime<Utc>,
) -> Result<Option<NewEvent>, EventError> {
    let name = of.name();
    let actor = &record.actor;
    let all = || record.changes.iter().map(field_change).collect::<Vec<_>>();
    match (of, record.action) {
        (Audited::Contact(_), ChangeAction::Created) => event(
            tenant,
            name.clone(),
            actor,
            time,
            &pb::ContactCreated {
                contact: name,
                fields: all(),
            },
        ),
        (Audited::Contact(_), ChangeAction::Updated) if record.changes.iter().all(|c| c.field == "consent") => event(
            tenant,
            name.clone(),
            actor,
            time,
            &pb::ConsentChanged {
                contact: name,
                changed_fields: all(),
            },
        ),
        (Audited::Contact(_), ChangeAction::Updated) => event(
            tenant,
            name.clone(),
            actor,
            time,
            &pb::ContactUpdated {
                contact: name,
                changed_fields: all(),
            },
        ),
        (Audited::Contact(_), ChangeAction::Deleted) => {
            event(tenant, name.clone(), actor, time, &pb::ContactDeleted { contact: name })
        }
        (Audited::Contact(_), ChangeAction::Erased) => {
            event(tenant, name.clone(), actor, time, &pb::ContactErased { contact: name })
        }
        (Audited::Contact(_), ChangeAction::Merged) => match absorbed(record) {
            Some(merged) => event(
                tenant,
                name.clone(),
                actor,
                time,
                &pb::ContactsMerged {
                    survivor: name,
                    merged,
                    changed_fields: changed_fields(record),
                },
            ),
            None => Ok(None),
        },
        (Audited::Company(_), ChangeAction::Created) => event(
            tenant,
            name.clone(),
            actor,
            time,
            &pb::CompanyCreated {
                company: name,
                fields: all(),
            },
        ),
        (Audited::Company(_), ChangeAction::Updated) => event(
            tenant,
            name.clone(),
            actor,
            time,
            &pb::CompanyUpdated {
                company: name,
                changed_fields: all(),
            },
        ),
        (Audited::Company(_), ChangeAction::Deleted) => {
            event(tenant, name.clone(), actor, time, &pb::CompanyDeleted { company: name })
        }
        (Audited::Company(_), ChangeAction::Merged) => match absorbed(record) {
            Some(merged) => event(
                tenant,
                name.clone(),
                actor,
                time,
                &pb::CompaniesMerged {
                    survivor: name,
                    merged,
                    changed_fields: changed_fields(record),
                },
            ),
            None => Ok(None),
        },
        // A reassignment's event is told by the store's batch (see `owner_changed`); a company
        // is never erased.
        (_, ChangeAction::Reassigned) | (Audited::Company(_), ChangeAction::Erased) => Ok(None),
    }
}

/// The event of a record moved from `old` to `new` owner by `actor`'s reassignment.
pub(crate) fn owner_changed(
    tenant: &TenantId,
    of: Audited,
    old: &UserId,
    new: &UserId,
    actor: &UserId,
    time: DateTime<Utc>,
) -> Result<NewEvent, EventError> {
    let name = of.name();
    NewEvent::of(
        tenant,
        name.clone(),
        actor.as_str(),
        time,
        &pb::OwnerChanged {
            resource: name,
            old_owner: old.as_str().to_owned(),
            new_owner: new.as_str().to_owned(),
        },
    )
}

/// The event of a logged interaction: what analytics counts, never its subject, body or
/// outcome.
pub(crate) fn interaction_logged(tenant: &TenantId, interaction: &Interaction) -> Result<NewEvent, EventError> {
    let f = &interaction.fields;
    let name = interaction.name();
    NewEvent::of(
        tenant,
        name.clone(),
        f.actor.as_str(),
        interaction.create_time,
        &pb::InteractionLogged {
            interaction: name,
            contact: interaction.contact.name(),
            company: interaction.company.map(|c| c.name()).unwrap_or_default(),
            kind: InteractionType::to_proto(Some(f.kind)),
            direction: Direction::to_proto(Some(f.direction)),
            channel: InteractionChannel::to_proto(f.channel),
            occur_time_micros: f.occur_time.timestamp_micros(),
            duration_ms: f.duration_ms.unwrap_or_default(),
            campaign_id: f.campaign_id.clone(),
        },
    )
}
