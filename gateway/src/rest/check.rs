//! Checks a JSON request against its message's descriptor before it is parsed, so a bad
//! request gets every wrong field named at once (the proto3 JSON parser stops at the first),
//! and writes enum values given in their short form (`CUSTOMER`) out in full
//! (`LIFECYCLE_STAGE_CUSTOMER`).

use crm_platform::error::Violations;
use crm_proto::crm::common::v1::FieldRules;
use crm_proto::prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

pub use crm_proto::options::{enum_prefix, enum_value};

/// Whether the field is output only (`google.api.field_behavior = OUTPUT_ONLY`).
pub fn output_only(field: &FieldDescriptor) -> bool {
    crm_proto::options::facts(field).output_only
}

/// Whether the field is immutable (`google.api.field_behavior = IMMUTABLE`): set on create,
/// never changed by an update.
pub fn immutable(field: &FieldDescriptor) -> bool {
    crm_proto::options::facts(field).immutable
}

/// Whether the field is required (`google.api.field_behavior = REQUIRED`).
pub fn required(field: &FieldDescriptor) -> bool {
    crm_proto::options::facts(field).required
}

/// The rules of a field (`crm.common.v1.rules`), if it has any.
pub fn rules(field: &FieldDescriptor) -> Option<&'static FieldRules> {
    crm_proto::options::facts(field).rules.as_ref()
}

/// Checks `json` as a `message` of a request, naming fields from `prefix` (`contact.`).
/// Enum short forms are written out in full in place.
pub fn check_message(v: &mut Violations, prefix: &str, json: &mut Value, message: &MessageDescriptor) {
    let Some(object) = json.as_object_mut() else {
        v.add(field_name(prefix), "must be a JSON object");
        return;
    };
    // Fields given by their proto name (`given_name`) go by their JSON name from here on, so
    // that a field is set once, whatever spelling, and what the gateway sets wins.
    let renames: Vec<(String, String)> = object
        .keys()
        .filter(|key| message.get_field_by_json_name(key).is_none())
        .filter_map(|key| {
            let field = message.get_field_by_name(key)?;
            Some((key.clone(), field.json_name().to_owned()))
        })
        .collect();
    for (proto, json) in renames {
        if object.contains_key(&json) {
            v.add(format!("{prefix}{json}"), format!("is given twice (also as {proto})"));
        }
        if let Some(value) = object.remove(&proto) {
            object.insert(json, value);
        }
    }
    // Output only fields are ignored in a request (AIP-203), so a client may send back a
    // resource as it read it; they never reach the service.
    object.retain(|key, _| !message.get_field_by_json_name(key).is_some_and(|f| output_only(&f)));
    for (key, value) in object.iter_mut() {
        let path = format!("{prefix}{key}");
        let Some(field) = message.get_field_by_json_name(key) else {
            v.add(&path, format!("is not a field of {}", message.name()));
            continue;
        };
        check_field(v, &path, value, &field);
    }
    for oneof in message.oneofs() {
        let set = oneof.fields().filter(|f| object.contains_key(f.json_name())).count();
        if set > 1 {
            let names: Vec<String> = oneof.fields().map(|f| f.json_name().to_owned()).collect();
            v.add(field_name(prefix), format!("set exactly one of {}", names.join(", ")));
        }
    }
}

fn field_name(prefix: &str) -> String {
    let name = prefix.trim_end_matches('.');
    if name.is_empty() {
        "body".to_owned()
    } else {
        name.to_owned()
    }
}

fn check_field(v: &mut Violations, path: &str, value: &mut Value, field: &FieldDescriptor) {
    let max_items = rules(field).map_or(0, |r| r.max_items);
    let max_items = usize::try_from(max_items).unwrap_or(usize::MAX);
    if field.is_map() {
        let Some(entries) = value.as_object_mut() else {
            v.add(path, "must be a JSON object");
            return;
        };
        if max_items > 0 && !v.within(path, entries.len(), max_items) {
            return;
        }
        let Kind::Message(entry) = field.kind() else { return };
        let value_field = entry.map_entry_value_field();
        for (key, item) in entries.iter_mut() {
            check_value(v, &format!("{path}[{key}]"), item, &value_field.kind());
        }
    } else if field.is_list() {
        let Some(items) = value.as_array_mut() else {
            v.add(path, "must be a JSON array");
            return;
        };
        // The length first: an oversized list is one violation, its items never read.
        if max_items > 0 && !v.within(path, items.len(), max_items) {
            return;
        }
        for (i, item) in items.iter_mut().enumerate() {
            check_value(v, &format!("{path}[{i}]"), item, &field.kind());
        }
    } else {
        check_value(v, path, value, &field.kind());
    }
}

fn check_value(v: &mut Violations, path: &str, value: &mut Value, kind: &Kind) {
    if value.is_null() {
        v.add(path, "must not be null; leave the field out instead");
        return;
    }
    let problem = match kind {
        Kind::Message(message) => return check_nested(v, path, value, message),
        Kind::Enum(descriptor) => match value {
            Value::String(given) => match enum_value(descriptor, given) {
                Some(full) => {
                    *given = full;
                    None
                }
                None => Some(format!("must be one of {}", enum_names(descriptor))),
            },
            _ => Some(format!("must be one of {}", enum_names(descriptor))),
        },
        Kind::Bool => (!value.is_boolean()).then(|| "must be true or false".to_owned()),
        Kind::String => (!value.is_string()).then(|| "must be a string".to_owned()),
        Kind::Bytes => (!value.is_string()).then(|| "must be a base64 string".to_owned()),
        Kind::Double | Kind::Float => (!value.is_number()).then(|| "must be a number".to_owned()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 if value.is_number() => {
            integer(value, i64::from(i32::MIN), i64::from(i32::MAX))
        }
        Kind::Uint32 | Kind::Fixed32 if value.is_number() => integer(value, 0, i64::from(u32::MAX)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            Some("must be a whole number".to_owned())
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => integer(value, i64::MIN, i64::MAX),
        Kind::Uint64 | Kind::Fixed64 => integer(value, 0, i64::MAX),
    };
    if let Some(problem) = problem {
        v.add(path, problem);
    }
}

/// A message, or one of the well-known types with a JSON form of their own.
fn check_nested(v: &mut Violations, path: &str, value: &mut Value, message: &MessageDescriptor) {
    match message.full_name() {
        "google.protobuf.Timestamp" => {
            let ok = value
                .as_str()
                .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
            if !ok {
                v.add(path, "must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z");
            }
        }
        "google.protobuf.Duration" => {
            let ok = value.as_str().is_some_and(|s| {
                s.strip_suffix('s')
                    .is_some_and(|n| n.parse::<f64>().is_ok_and(|n| n.is_finite()))
            });
            if !ok {
                v.add(path, "must be a duration in seconds, e.g. 95.5s");
            }
        }
        "google.protobuf.FieldMask" => {
            if !value.is_string() {
                v.add(path, "must be a comma-separated list of field paths");
            }
        }
        name if name.starts_with("google.protobuf.") => {}
        _ => check_message(v, &format!("{path}."), value, message),
    }
}

fn integer(value: &mut Value, min: i64, max: i64) -> Option<String> {
    // JSON has one number type: 3.0 is the whole number 3 (and is sent on as 3).
    if let Some(whole) = value
        .as_f64()
        .filter(|f| !value.is_i64() && f.fract() == 0.0 && f.abs() < 9.0e15)
    {
        #[allow(clippy::cast_possible_truncation)]
        let whole = whole as i64;
        *value = Value::from(whole);
    }
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => None,
        Some(_) => Some(format!("must be between {min} and {max}")),
        None => Some("must be a whole number".to_owned()),
    }
}

fn enum_names(descriptor: &EnumDescriptor) -> String {
    let prefix = enum_prefix(descriptor);
    descriptor
        .values()
        .filter(|value| value.number() != 0)
        .map(|value| value.name().strip_prefix(&prefix).unwrap_or(value.name()).to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn contact() -> MessageDescriptor {
        crm_proto::json::descriptors()
            .expect("descriptors")
            .get_message_by_name("crm.contact.v1.Contact")
            .expect("Contact")
    }

    #[test]
    fn every_wrong_field_is_named_and_short_enums_are_written_out() {
        let mut body = json!({
            "givenName": 7,
            "lifecycleStage": "CUSTOMER",
            "source": "BOSS",
            "favouriteColour": "red",
            "createTime": "2020-01-01T00:00:00Z",
            "emails": [{"address": "a@example.com", "primary": "yes"}],
            "attributes": {"k": {"intValue": "x"}, "two": {"stringValue": "v", "boolValue": true}},
            "consent": {"email": {"status": "OPTED_IN", "updateTime": "yesterday"}}
        });
        let mut v = Violations::new("");
        check_message(&mut v, "contact.", &mut body, &contact());
        let fields: Vec<String> = v
            .finish()
            .expect_err("invalid")
            .violations
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        for expected in [
            "contact.givenName",
            "contact.source",
            "contact.favouriteColour",
            "contact.emails[0].primary",
            "contact.attributes[k].intValue",
            "contact.consent.email.updateTime",
            "contact.attributes[two]",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{expected} in {fields:?}");
        }
        assert_eq!(fields.len(), 7, "{fields:?}");
        // Output only fields are dropped, not refused (AIP-203).
        assert!(body.get("createTime").is_none(), "{body}");
        assert_eq!(body["lifecycleStage"], "LIFECYCLE_STAGE_CUSTOMER");
        assert_eq!(body["consent"]["email"]["status"], "CONSENT_STATUS_OPTED_IN");
    }

    #[test]
    fn an_oversized_list_is_one_violation_and_its_items_are_not_read() {
        let emails: Vec<serde_json::Value> = (0..25).map(|i| json!({"address": i})).collect();
        let mut body = json!({ "emails": emails });
        let mut v = Violations::new("");
        check_message(&mut v, "contact.", &mut body, &contact());
        let err = v.finish().expect_err("too many");
        assert_eq!(err.violations.len(), 1, "{err:?}");
        assert_eq!(err.violations[0].field, "contact.emails");
    }

    #[test]
    fn a_valid_body_passes_unchanged() {
        let mut body = json!({"givenName": "Ada", "lifecycleStage": "LIFECYCLE_STAGE_LEAD", "tags": ["x"]});
        let before = body.clone();
        let mut v = Violations::new("");
        check_message(&mut v, "contact.", &mut body, &contact());
        assert!(v.finish().is_ok());
        assert_eq!(body, before);
    }
}
