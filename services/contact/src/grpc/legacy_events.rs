//! Events written before the application emitted typed events: the outbox triggers of
//! migrations `*_outbox.sql` stored each as its audit entry's action and changes, which this
//! renders as the crm.contact.v1 message its type names. Only rows written before migration
//! 0013 (PostgreSQL) / 0008 (SQLite) are in this form ([`StoredEvent::legacy`]); they leave with
//! the outbox's retention, and this module with them in a later release.

use crm_platform::outbox::StoredEvent;
use crm_proto::crm::contact::v1 as pb;
use crm_proto::prost::Message;
use serde_json::Value;

use crate::convert::{ProtoEnum, proto_value};
use crate::domain::{Direction, InteractionChannel, InteractionType};

/// Renders a stored event of the earlier form as the message its type names.
pub fn render(event: &StoredEvent) -> Result<crm_proto::prost_types::Any, String> {
    let subject = event.subject.clone();
    let p = &event.payload;
    let value = match event.kind.as_str() {
        "crm.contact.v1.ContactCreated" => pb::ContactCreated {
            contact: subject,
            fields: changes(p, |_| true),
        }
        .encode_to_vec(),
        "crm.contact.v1.ContactUpdated" => pb::ContactUpdated {
            contact: subject,
            changed_fields: changes(p, |_| true),
        }
        .encode_to_vec(),
        "crm.contact.v1.ConsentChanged" => pb::ConsentChanged {
            contact: subject,
            changed_fields: changes(p, |_| true),
        }
        .encode_to_vec(),
        "crm.contact.v1.ContactDeleted" => pb::ContactDeleted { contact: subject }.encode_to_vec(),
        "crm.contact.v1.ContactErased" => pb::ContactErased { contact: subject }.encode_to_vec(),
        "crm.contact.v1.ContactsMerged" => pb::ContactsMerged {
            survivor: subject,
            merged: merged(p),
            changed_fields: changes(p, |field| field != "merged"),
        }
        .encode_to_vec(),
        "crm.contact.v1.OwnerChanged" => {
            let owner = change(p, "owner");
            pb::OwnerChanged {
                resource: subject,
                old_owner: text(owner.and_then(|c| c.get("old"))),
                new_owner: text(owner.and_then(|c| c.get("new"))),
            }
            .encode_to_vec()
        }
        "crm.contact.v1.CompanyCreated" => pb::CompanyCreated {
            company: subject,
            fields: changes(p, |_| true),
        }
        .encode_to_vec(),
        "crm.contact.v1.CompanyUpdated" => pb::CompanyUpdated {
            company: subject,
            changed_fields: changes(p, |_| true),
        }
        .encode_to_vec(),
        "crm.contact.v1.CompanyDeleted" => pb::CompanyDeleted { company: subject }.encode_to_vec(),
        "crm.contact.v1.CompaniesMerged" => pb::CompaniesMerged {
            survivor: subject,
            merged: merged(p),
            changed_fields: changes(p, |field| field != "merged"),
        }
        .encode_to_vec(),
        "crm.contact.v1.InteractionLogged" => pb::InteractionLogged {
            interaction: subject,
            contact: text(p.get("contact")),
            company: text(p.get("company")),
            kind: InteractionType::to_proto(p.get("kind").and_then(Value::as_str).and_then(InteractionType::parse)),
            direction: Direction::to_proto(p.get("direction").and_then(Value::as_str).and_then(Direction::parse)),
            channel: InteractionChannel::to_proto(
                p.get("channel")
                    .and_then(Value::as_str)
                    .and_then(InteractionChannel::parse),
            ),
            occur_time_micros: p.get("occur_time_micros").and_then(Value::as_i64).unwrap_or_default(),
            duration_ms: p.get("duration_ms").and_then(Value::as_i64).unwrap_or_default(),
            campaign_id: text(p.get("campaign_id")),
        }
        .encode_to_vec(),
        other => return Err(format!("unknown event type {other}")),
    };
    Ok(crm_proto::prost_types::Any {
        type_url: format!("type.googleapis.com/{}", event.kind),
        value,
    })
}

fn entries(payload: &Value) -> impl Iterator<Item = &Value> {
    payload.get("changes").and_then(Value::as_array).into_iter().flatten()
}

fn change<'a>(payload: &'a Value, field: &str) -> Option<&'a Value> {
    entries(payload).find(|c| c.get("field").and_then(Value::as_str) == Some(field))
}

fn changes(payload: &Value, keep: impl Fn(&str) -> bool) -> Vec<pb::FieldChange> {
    entries(payload)
        .filter_map(|c| {
            let field = c.get("field")?.as_str()?;
            keep(field).then(|| pb::FieldChange {
                field: field.to_owned(),
                old_value: Some(proto_value(c.get("old").unwrap_or(&Value::Null))),
                new_value: Some(proto_value(c.get("new").unwrap_or(&Value::Null))),
            })
        })
        .collect()
}

fn merged(payload: &Value) -> Vec<String> {
    change(payload, "merged")
        .and_then(|c| c.get("new"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}
