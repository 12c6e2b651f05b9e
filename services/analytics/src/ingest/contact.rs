//! What the contact service's events ask of the facts: contacts and companies (owner,
//! lifecycle stage and its moves, source, company, which profile fields are filled), merges,
//! deletions and erasures, interactions, and portfolio transfers. Names, emails and phone
//! numbers are read only to tell whether they are there, and never kept.

use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::events::v1 as events;
use crm_proto::prost::Name;
use crm_proto::prost_types::value::Kind;
use uuid::Uuid;

use super::{Decision, decoded, id_of};
use crate::domain::*;

/// The checkpoint name of this service's subscription to the contact feed.
pub const CONSUMER: &str = "analytics<-contact";

/// The producer name of the contact service's feed: the package of its messages.
pub const SOURCE: &str = <pb::ContactCreated as Name>::PACKAGE;

/// The commit time of `event`: when the change happened.
fn when(event: &events::Event) -> Result<chrono::DateTime<chrono::Utc>, String> {
    super::time(event.time.as_ref(), "the event's time")
}

/// Whether a JSON value holds something (not null, not an empty list, string or object).
fn filled(value: Option<&Kind>) -> bool {
    match value {
        None | Some(Kind::NullValue(_)) => false,
        Some(Kind::StringValue(s)) => !s.is_empty(),
        Some(Kind::ListValue(list)) => !list.values.is_empty(),
        Some(Kind::StructValue(object)) => object.fields.values().any(|v| filled(v.kind.as_ref())),
        Some(_) => true,
    }
}

/// A text value (empty for null).
fn text(value: Option<&Kind>, field: &str) -> Result<String, String> {
    match value {
        None | Some(Kind::NullValue(_)) => Ok(String::new()),
        Some(Kind::StringValue(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{field} is not a text")),
    }
}

/// What `changes` (the new values of a contact's or company's fields) change of its profile.
fn profile(changes: &[pb::FieldChange]) -> Result<ProfileChange, String> {
    let mut profile = ProfileChange::default();
    for change in changes {
        let new = change.new_value.as_ref().and_then(|v| v.kind.as_ref());
        match change.field.as_str() {
            "owner" => profile.owner = Some(text(new, "owner")?),
            "lifecycle_stage" => profile.lifecycle = Some(text(new, "lifecycle_stage")?),
            "source" => profile.source = Some(text(new, "source")?),
            "company" => {
                let company = text(new, "company")?;
                profile.company = Some(if company.is_empty() {
                    None
                } else {
                    Some(id_of(&company, "companies")?)
                });
            }
            "emails" => profile.has_email = Some(filled(new)),
            "phones" => profile.has_phone = Some(filled(new)),
            "consent" => profile.has_consent = Some(filled(new)),
            _ => {}
        }
    }
    Ok(profile)
}

/// The changes a contact's or company's creation or update comes to: the change, and the move
/// of its lifecycle stage if any.
fn changed(
    event: &events::Event,
    name: &str,
    kind: CustomerKind,
    created: bool,
    fields: &[pb::FieldChange],
) -> Result<Vec<FactChange>, String> {
    let id = id_of(name, kind.collection())?;
    let time = when(event)?;
    let mut change = if created {
        // What a creation does not list is empty.
        ProfileChange {
            owner: Some(String::new()),
            lifecycle: Some(String::new()),
            source: Some(String::new()),
            company: Some(None),
            has_email: Some(false),
            has_phone: Some(false),
            has_consent: Some(false),
        }
    } else {
        ProfileChange::default()
    };
    change.then(profile(fields)?);
    let mut changes = vec![FactChange::Customer(CustomerChange {
        id,
        kind,
        time,
        created,
        change,
    })];
    if let Some(stage) = fields.iter().find(|c| c.field == "lifecycle_stage") {
        let value =
            |v: Option<&crm_proto::prost_types::Value>| text(v.and_then(|v| v.kind.as_ref()), "lifecycle_stage");
        changes.push(FactChange::Lifecycle(LifecycleFact {
            customer: id,
            time,
            from: value(stage.old_value.as_ref())?,
            to: value(stage.new_value.as_ref())?,
        }));
    }
    Ok(changes)
}

fn gone(event: &events::Event, name: &str, kind: CustomerKind, how: Gone) -> Result<Vec<FactChange>, String> {
    Ok(vec![FactChange::CustomerGone {
        id: id_of(name, kind.collection())?,
        kind,
        time: when(event)?,
        gone: how,
    }])
}

/// A merge: the survivor's changes, then each merged record gone into it.
fn merged(
    event: &events::Event,
    survivor: &str,
    merged: &[String],
    kind: CustomerKind,
    fields: &[pb::FieldChange],
) -> Result<Vec<FactChange>, String> {
    let mut changes = changed(event, survivor, kind, false, fields)?;
    let into = id_of(survivor, kind.collection())?;
    for name in merged {
        changes.extend(gone(event, name, kind, Gone::Merged(into))?);
    }
    Ok(changes)
}

/// The lower-case word of a proto enum value name without its prefix (`INTERACTION_TYPE_CALL`:
/// `call`); empty for the unspecified value.
fn word(name: &str, prefix: &str) -> String {
    let bare = name.strip_prefix(prefix).unwrap_or(name);
    if bare == "UNSPECIFIED" {
        String::new()
    } else {
        bare.to_ascii_lowercase()
    }
}

fn interaction(event: &events::Event, m: pb::InteractionLogged) -> Result<Vec<FactChange>, String> {
    let (contact, id) = m
        .interaction
        .split_once("/interactions/")
        .ok_or_else(|| format!("`{}` is not an interaction resource name", m.interaction))?;
    let id = Uuid::parse_str(id).map_err(|_| format!("`{}` is not an interaction resource name", m.interaction))?;
    let contact = id_of(if m.contact.is_empty() { contact } else { &m.contact }, "contacts")?;
    let company = if m.company.is_empty() {
        None
    } else {
        Some(id_of(&m.company, "companies")?)
    };
    let kind = pb::InteractionType::try_from(m.kind)
        .map_err(|_| format!("interaction type {} is not known", m.kind))?
        .as_str_name();
    let direction = pb::Direction::try_from(m.direction)
        .map_err(|_| format!("direction {} is not known", m.direction))?
        .as_str_name();
    let channel = pb::InteractionChannel::try_from(m.channel)
        .map_err(|_| format!("channel {} is not known", m.channel))?
        .as_str_name();
    let time = chrono::DateTime::from_timestamp_micros(m.occur_time_micros)
        .ok_or_else(|| format!("occur_time_micros {} is not a time", m.occur_time_micros))?;
    if m.duration_ms < 0 {
        return Err(format!("duration_ms {} is negative", m.duration_ms));
    }
    Ok(vec![FactChange::Interaction(InteractionFact {
        id,
        contact,
        company,
        kind: word(kind, "INTERACTION_TYPE_"),
        direction: word(direction, "DIRECTION_"),
        channel: word(channel, "INTERACTION_CHANNEL_"),
        time,
        duration_ms: m.duration_ms,
        campaign: m.campaign_id,
        actor: event.actor.clone(),
    })])
}

fn owner_changed(event: &events::Event, m: pb::OwnerChanged) -> Result<Vec<FactChange>, String> {
    let kind = if m.resource.starts_with("companies/") {
        CustomerKind::Company
    } else {
        CustomerKind::Contact
    };
    let time = when(event)?;
    Ok(vec![
        FactChange::Customer(CustomerChange {
            id: id_of(&m.resource, kind.collection())?,
            kind,
            time,
            created: false,
            change: ProfileChange {
                owner: Some(m.new_owner.clone()),
                ..ProfileChange::default()
            },
        }),
        FactChange::Transfer(TransferFact {
            resource: m.resource,
            time,
            from: m.old_owner,
            to: m.new_owner,
        }),
    ])
}

/// What a contact event asks of the facts.
pub fn decide(event: &events::Event) -> Decision {
    use CustomerKind::{Company, Contact};
    let changes = || -> Option<Result<Vec<FactChange>, String>> {
        if let Some(m) = decoded::<pb::ContactCreated>(event) {
            return Some(m.and_then(|m| changed(event, &m.contact, Contact, true, &m.fields)));
        }
        if let Some(m) = decoded::<pb::ContactUpdated>(event) {
            return Some(m.and_then(|m| changed(event, &m.contact, Contact, false, &m.changed_fields)));
        }
        if let Some(m) = decoded::<pb::ConsentChanged>(event) {
            return Some(m.and_then(|m| changed(event, &m.contact, Contact, false, &m.changed_fields)));
        }
        if let Some(m) = decoded::<pb::ContactDeleted>(event) {
            return Some(m.and_then(|m| gone(event, &m.contact, Contact, Gone::Deleted)));
        }
        if let Some(m) = decoded::<pb::ContactErased>(event) {
            return Some(m.and_then(|m| gone(event, &m.contact, Contact, Gone::Erased)));
        }
        if let Some(m) = decoded::<pb::ContactsMerged>(event) {
            return Some(m.and_then(|m| merged(event, &m.survivor, &m.merged, Contact, &m.changed_fields)));
        }
        if let Some(m) = decoded::<pb::CompanyCreated>(event) {
            return Some(m.and_then(|m| changed(event, &m.company, Company, true, &m.fields)));
        }
        if let Some(m) = decoded::<pb::CompanyUpdated>(event) {
            return Some(m.and_then(|m| changed(event, &m.company, Company, false, &m.changed_fields)));
        }
        if let Some(m) = decoded::<pb::CompanyDeleted>(event) {
            return Some(m.and_then(|m| gone(event, &m.company, Company, Gone::Deleted)));
        }
        if let Some(m) = decoded::<pb::CompaniesMerged>(event) {
            return Some(m.and_then(|m| merged(event, &m.survivor, &m.merged, Company, &m.changed_fields)));
        }
        if let Some(m) = decoded::<pb::InteractionLogged>(event) {
            return Some(m.and_then(|m| interaction(event, m)));
        }
        if let Some(m) = decoded::<pb::OwnerChanged>(event) {
            return Some(m.and_then(|m| owner_changed(event, m)));
        }
        super::usage(event)
    };
    Decision::of(changes(), event, &[])
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use crm_proto::prost::Message;
    use crm_proto::prost_types;

    use super::*;

    fn event(kind: String, payload: Vec<u8>) -> events::Event {
        events::Event {
            tenant: "acme".into(),
            sequence: 3,
            r#type: kind,
            time: Some(prost_types::Timestamp {
                seconds: 1_790_000_000,
                nanos: 0,
            }),
            actor: "ann".into(),
            payload: Some(prost_types::Any {
                type_url: String::new(),
                value: payload,
            }),
            ..Default::default()
        }
    }

    fn value(kind: Kind) -> Option<prost_types::Value> {
        Some(prost_types::Value { kind: Some(kind) })
    }

    fn set(field: &str, old: Kind, new: Kind) -> pb::FieldChange {
        pb::FieldChange {
            field: field.into(),
            old_value: value(old),
            new_value: value(new),
        }
    }

    fn string(s: &str) -> Kind {
        Kind::StringValue(s.into())
    }

    #[test]
    fn a_contact_keeps_categories_and_what_is_filled_never_a_name() {
        let (id, company) = (Uuid::now_v7(), Uuid::now_v7());
        let null = || Kind::NullValue(0);
        let created = event(
            pb::ContactCreated::full_name(),
            pb::ContactCreated {
                contact: format!("contacts/{id}"),
                fields: vec![
                    set("given_name", null(), string("Ann")),
                    set(
                        "emails",
                        null(),
                        Kind::ListValue(prost_types::ListValue {
                            values: vec![prost_types::Value {
                                kind: Some(string("ann@example.com")),
                            }],
                        }),
                    ),
                    set("company", null(), string(&format!("companies/{company}"))),
                    set("lifecycle_stage", null(), string("customer")),
                    set("owner", null(), string("ben")),
                ],
            }
            .encode_to_vec(),
        );
        let Decision::Apply(changes) = decide(&created) else {
            panic!("a contact is applied")
        };
        let time = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        assert_eq!(
            changes,
            [
                FactChange::Customer(CustomerChange {
                    id,
                    kind: CustomerKind::Contact,
                    time,
                    created: true,
                    change: ProfileChange {
                        owner: Some("ben".into()),
                        lifecycle: Some("customer".into()),
                        source: Some(String::new()),
                        company: Some(Some(company)),
                        has_email: Some(true),
                        has_phone: Some(false),
                        has_consent: Some(false),
                    },
                }),
                FactChange::Lifecycle(LifecycleFact {
                    customer: id,
                    time,
                    from: String::new(),
                    to: "customer".into(),
                }),
            ]
        );
        // An update changes only what it lists.
        let updated = event(
            pb::ContactUpdated::full_name(),
            pb::ContactUpdated {
                contact: format!("contacts/{id}"),
                changed_fields: vec![set("phones", null(), Kind::ListValue(Default::default()))],
            }
            .encode_to_vec(),
        );
        let Decision::Apply(changes) = decide(&updated) else {
            panic!("an update is applied")
        };
        assert!(matches!(&changes[..], [FactChange::Customer(c)]
            if c.change == ProfileChange { has_phone: Some(false), ..ProfileChange::default() }));
        // A merge: the survivor changed, the merged one gone into it.
        let other = Uuid::now_v7();
        let merge = event(
            pb::ContactsMerged::full_name(),
            pb::ContactsMerged {
                survivor: format!("contacts/{id}"),
                merged: vec![format!("contacts/{other}")],
                changed_fields: Vec::new(),
            }
            .encode_to_vec(),
        );
        let Decision::Apply(changes) = decide(&merge) else {
            panic!("a merge is applied")
        };
        assert_eq!(
            changes[1],
            FactChange::CustomerGone {
                id: other,
                kind: CustomerKind::Contact,
                time,
                gone: Gone::Merged(id),
            }
        );
        let bad = event(
            pb::ContactDeleted::full_name(),
            pb::ContactDeleted {
                contact: "people/1".into(),
            }
            .encode_to_vec(),
        );
        assert!(matches!(decide(&bad), Decision::Park(reason) if reason.contains("contacts")));
    }

    #[test]
    fn an_interaction_keeps_its_categories_length_and_actor() {
        let (contact, id) = (Uuid::now_v7(), Uuid::now_v7());
        let logged = event(
            pb::InteractionLogged::full_name(),
            pb::InteractionLogged {
                interaction: format!("contacts/{contact}/interactions/{id}"),
                contact: format!("contacts/{contact}"),
                company: String::new(),
                kind: pb::InteractionType::SupportTicket as i32,
                direction: pb::Direction::Inbound as i32,
                channel: pb::InteractionChannel::Email as i32,
                occur_time_micros: 1_790_000_000_000_000,
                duration_ms: 90_000,
                campaign_id: "spring".into(),
            }
            .encode_to_vec(),
        );
        let Decision::Apply(changes) = decide(&logged) else {
            panic!("an interaction is applied")
        };
        assert_eq!(
            changes,
            [FactChange::Interaction(InteractionFact {
                id,
                contact,
                company: None,
                kind: "support_ticket".into(),
                direction: "inbound".into(),
                channel: "email".into(),
                time: Utc.timestamp_opt(1_790_000_000, 0).unwrap(),
                duration_ms: 90_000,
                campaign: "spring".into(),
                actor: "ann".into(),
            })]
        );
        assert_eq!(
            decide(&event("crm.contact.v1.ContactTeleported".into(), Vec::new())),
            Decision::Skip
        );
    }
}
