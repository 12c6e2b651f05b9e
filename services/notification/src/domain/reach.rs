//! What email may reach a contact, from the contact feed: the contact's primary address (the
//! first one when none is marked) and whether they consented to email. The contact service's
//! events carry each changed field's value as the contact history shows it: `emails` a list of
//! `{"address", "primary"}`, `consent` an object whose `email.status` is `opted_in` when they
//! consented.

use crm_proto::crm::contact::v1 as contact;
use crm_proto::crm::events::v1 as events;
use crm_proto::prost::{Message, Name};
use crm_proto::prost_reflect::{DynamicMessage, ReflectMessage, Value};
use crm_proto::prost_types;

/// A change of what may reach one contact (`contacts/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReachChange {
    /// Their address and consent as now known; None leaves one as it was.
    Set {
        contact: String,
        email_address: Option<String>,
        email_consent: Option<bool>,
    },
    /// Gone: deleted or merged into another.
    Remove { contact: String },
    /// Erased: gone, and every copy of their personal data this service holds with it (the
    /// emails to them, the webhook bodies of their events).
    Erase { contact: String },
}

/// The JSON of a `google.protobuf.Value`.
fn json_of(value: Option<&prost_types::Value>) -> serde_json::Value {
    use prost_types::value::Kind as V;
    match value.and_then(|v| v.kind.as_ref()) {
        None | Some(V::NullValue(_)) => serde_json::Value::Null,
        Some(V::NumberValue(n)) => serde_json::json!(n),
        Some(V::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(V::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(V::StructValue(s)) => {
            serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), json_of(Some(v)))).collect())
        }
        Some(V::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(|v| json_of(Some(v))).collect()),
    }
}

/// The primary address of an `emails` value (the first when none is marked); "" for none.
fn primary(emails: &serde_json::Value) -> String {
    let list = emails.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .find(|e| e.get("primary").and_then(serde_json::Value::as_bool) == Some(true))
        .or_else(|| list.first())
        .and_then(|e| e.get("address"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Whether a `consent` value says the contact consented to email.
fn consents(consent: &serde_json::Value) -> bool {
    consent
        .get("email")
        .and_then(|e| e.get("status"))
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("opted_in") || s == "CONSENT_STATUS_OPTED_IN")
}

/// The change `fields` (a contact's changed fields) makes to what may reach `contact`, if any.
fn from_fields(contact: &str, fields: &[contact::FieldChange]) -> Option<ReachChange> {
    let mut email_address = None;
    let mut email_consent = None;
    for f in fields {
        let value = json_of(f.new_value.as_ref());
        match f.field.as_str() {
            "emails" => email_address = Some(primary(&value)),
            "consent" => email_consent = Some(consents(&value)),
            _ => {}
        }
    }
    (email_address.is_some() || email_consent.is_some()).then(|| ReachChange::Set {
        contact: contact.to_owned(),
        email_address,
        email_consent,
    })
}

/// What a contact-feed event changes of what may reach its contacts.
pub fn reach_changes(event: &events::Event) -> Vec<ReachChange> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    let t = event.r#type.as_str();
    let remove = |contact: String| vec![ReachChange::Remove { contact }];
    let changes = if t == contact::ContactCreated::full_name() {
        contact::ContactCreated::decode(bytes).map(|e| from_fields(&e.contact, &e.fields).into_iter().collect())
    } else if t == contact::ContactUpdated::full_name() {
        contact::ContactUpdated::decode(bytes).map(|e| from_fields(&e.contact, &e.changed_fields).into_iter().collect())
    } else if t == contact::ConsentChanged::full_name() {
        contact::ConsentChanged::decode(bytes).map(|e| from_fields(&e.contact, &e.changed_fields).into_iter().collect())
    } else if t == contact::ContactsMerged::full_name() {
        contact::ContactsMerged::decode(bytes).map(|e| {
            let survivor = from_fields(&e.survivor, &e.changed_fields);
            survivor
                .into_iter()
                .chain(e.merged.into_iter().map(|contact| ReachChange::Remove { contact }))
                .collect()
        })
    } else if t == contact::ContactDeleted::full_name() {
        contact::ContactDeleted::decode(bytes).map(|e| remove(e.contact))
    } else if t == contact::ContactErased::full_name() {
        contact::ContactErased::decode(bytes).map(|e| vec![ReachChange::Erase { contact: e.contact }])
    } else {
        Ok(Vec::new())
    };
    changes.unwrap_or_else(|e| {
        tracing::warn!(kind = t, error = %e, "a contact event does not decode: what may reach its contact is not changed");
        Vec::new()
    })
}

/// The contact an event is about: a `contact` field (`contacts/{id}`) of its payload or of
/// one of its messages (a deal's, a task's), else its subject when it is a contact.
pub fn contact_of(payload: &DynamicMessage, subject: &str) -> Option<String> {
    super::matching::find_in_payload(payload, |m| {
        let field = m.descriptor().get_field_by_name("contact")?;
        match m.get_field(&field).into_owned() {
            Value::String(s) if s.starts_with("contacts/") => Some(s),
            _ => None,
        }
    })
    .or_else(|| subject.starts_with("contacts/").then(|| subject.to_owned()))
}

#[cfg(test)]
mod tests {
    use prost_types::value::Kind as V;

    use super::*;

    fn string(s: &str) -> prost_types::Value {
        prost_types::Value {
            kind: Some(V::StringValue(s.into())),
        }
    }

    fn object(fields: Vec<(&str, prost_types::Value)>) -> prost_types::Value {
        prost_types::Value {
            kind: Some(V::StructValue(prost_types::Struct {
                fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            })),
        }
    }

    fn list(values: Vec<prost_types::Value>) -> prost_types::Value {
        prost_types::Value {
            kind: Some(V::ListValue(prost_types::ListValue { values })),
        }
    }

    fn event<M: Message + Name>(m: &M) -> events::Event {
        events::Event {
            r#type: M::full_name(),
            payload: Some(prost_types::Any {
                type_url: String::new(),
                value: m.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_contacts_primary_address_and_email_consent_follow_its_events() {
        let emails = list(vec![
            object(vec![
                ("address", string("old@acme.test")),
                (
                    "primary",
                    prost_types::Value {
                        kind: Some(V::BoolValue(false)),
                    },
                ),
            ]),
            object(vec![
                ("address", string("ann@acme.test")),
                (
                    "primary",
                    prost_types::Value {
                        kind: Some(V::BoolValue(true)),
                    },
                ),
            ]),
        ]);
        let consent = object(vec![("email", object(vec![("status", string("opted_in"))]))]);
        let created = contact::ContactCreated {
            contact: "contacts/1".into(),
            fields: vec![
                contact::FieldChange {
                    field: "emails".into(),
                    old_value: None,
                    new_value: Some(emails),
                },
                contact::FieldChange {
                    field: "consent".into(),
                    old_value: None,
                    new_value: Some(consent),
                },
            ],
        };
        assert_eq!(
            reach_changes(&event(&created)),
            [ReachChange::Set {
                contact: "contacts/1".into(),
                email_address: Some("ann@acme.test".into()),
                email_consent: Some(true),
            }]
        );
        let withdrawn = contact::ConsentChanged {
            contact: "contacts/1".into(),
            changed_fields: vec![contact::FieldChange {
                field: "consent".into(),
                old_value: None,
                new_value: Some(object(vec![("email", object(vec![("status", string("opted_out"))]))])),
            }],
        };
        assert_eq!(
            reach_changes(&event(&withdrawn)),
            [ReachChange::Set {
                contact: "contacts/1".into(),
                email_address: None,
                email_consent: Some(false),
            }]
        );
        let renamed = contact::ContactUpdated {
            contact: "contacts/1".into(),
            changed_fields: vec![contact::FieldChange {
                field: "title".into(),
                old_value: None,
                new_value: Some(string("CEO")),
            }],
        };
        assert!(reach_changes(&event(&renamed)).is_empty());
        let erased = contact::ContactErased {
            contact: "contacts/1".into(),
        };
        assert_eq!(
            reach_changes(&event(&erased)),
            [ReachChange::Erase {
                contact: "contacts/1".into()
            }]
        );
    }
}
