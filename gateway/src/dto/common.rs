//! Proto3 JSON building blocks: timestamps, int64 as strings, enums by name, typed attributes.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_platform::error::Violations;
use crm_proto::crm::common::v1 as common;
use crm_proto::prost_types::{Duration as PbDuration, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// RFC 3339 text of a proto timestamp.
pub fn time_to_json(ts: Option<&Timestamp>) -> Option<String> {
    let ts = ts?;
    let time = DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)?;
    Some(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// Parses RFC 3339 into a proto timestamp, recording a violation on failure.
pub fn time_from_json(v: &mut Violations, field: &str, raw: Option<&String>) -> Option<Timestamp> {
    let raw = raw?;
    let parsed =
        DateTime::parse_from_rfc3339(raw).map_err(|_| "must be an RFC 3339 time like 2026-01-01T09:30:00Z".to_owned());
    v.check(field, parsed).map(|t| Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// A proto3 JSON duration like `"90s"` or `"1.5s"`.
pub fn duration_to_json(d: Option<&PbDuration>) -> Option<String> {
    let d = d?;
    Some(if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let fraction = format!("{:09}", d.nanos);
        format!("{}.{}s", d.seconds, fraction.trim_end_matches('0'))
    })
}

pub fn duration_from_json(v: &mut Violations, field: &str, raw: Option<&String>) -> Option<PbDuration> {
    let raw = raw?;
    let parsed = raw
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
        .map(|secs| {
            let whole = secs.trunc();
            // Truncation is intended: a proto Duration keeps whole seconds and nanoseconds.
            #[allow(clippy::cast_possible_truncation)]
            PbDuration {
                seconds: whole as i64,
                nanos: ((secs - whole) * 1e9).round() as i32,
            }
        })
        .ok_or_else(|| "must be a duration in seconds like \"90s\" or \"1.5s\"".to_owned());
    v.check(field, parsed)
}

/// An int64 in proto3 JSON: written as a string, read from a string or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(value_type = String, example = "42")]
pub struct Int64(pub i64);

impl Serialize for Int64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Int64(n)),
            Raw::Text(t) => t
                .parse()
                .map(Int64)
                .map_err(|_| serde::de::Error::custom("expected a 64-bit integer")),
        }
    }
}

/// Declares the JSON form of a proto enum: the value names of the proto (the short form
/// without the enum prefix is accepted too), with the schema listing every value.
macro_rules! json_enum {
    ($name:ident, $proto:ty, $prefix:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub i32);

        impl $name {
            fn names() -> Vec<&'static str> {
                (1..)
                    .map_while(|i| <$proto>::try_from(i).ok())
                    .map(|v| v.as_str_name())
                    .collect()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let name = <$proto>::try_from(self.0)
                    .map(|v| v.as_str_name())
                    .unwrap_or("UNKNOWN");
                serializer.serialize_str(name)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
                <$proto>::from_str_name(&raw)
                    .or_else(|| <$proto>::from_str_name(&format!("{}{raw}", $prefix)))
                    .filter(|v| *v as i32 != 0)
                    .map(|v| $name(v as i32))
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("`{raw}` is not one of {}", Self::names().join(", ")))
                    })
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::names()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use json_enum;

/// Reads an optional enum into its proto value (0 when absent).
pub fn enum_value<E: Copy>(value: Option<E>, get: fn(E) -> i32) -> i32 {
    value.map_or(0, get)
}

/// A typed custom attribute value; exactly one member is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int_value: Option<Int64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bool_value: Option<bool>,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_value: Option<String>,
}

pub fn attributes_to_proto(
    v: &mut Violations,
    field: &str,
    raw: &BTreeMap<String, AttributeValue>,
) -> BTreeMap<String, common::AttributeValue> {
    use common::attribute_value::Kind;
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let path = format!("{field}[{key}]");
        let mut kinds = Vec::new();
        if let Some(s) = &value.string_value {
            kinds.push(Kind::StringValue(s.clone()));
        }
        if let Some(i) = value.int_value {
            kinds.push(Kind::IntValue(i.0));
        }
        if let Some(d) = value.double_value {
            kinds.push(Kind::DoubleValue(d));
        }
        if let Some(b) = value.bool_value {
            kinds.push(Kind::BoolValue(b));
        }
        if let Some(ts) = time_from_json(v, &path, value.time_value.as_ref()) {
            kinds.push(Kind::TimeValue(ts));
        }
        if kinds.len() == 1 {
            out.insert(key.clone(), common::AttributeValue { kind: kinds.pop() });
        } else if value.time_value.is_none() || !kinds.is_empty() {
            v.add(
                path,
                "set exactly one of stringValue, intValue, doubleValue, boolValue, timeValue",
            );
        }
    }
    out
}

pub fn attributes_from_proto(raw: &BTreeMap<String, common::AttributeValue>) -> BTreeMap<String, AttributeValue> {
    use common::attribute_value::Kind;
    raw.iter()
        .map(|(key, value)| {
            let mut json = AttributeValue::default();
            match &value.kind {
                Some(Kind::StringValue(s)) => json.string_value = Some(s.clone()),
                Some(Kind::IntValue(i)) => json.int_value = Some(Int64(*i)),
                Some(Kind::DoubleValue(d)) => json.double_value = Some(*d),
                Some(Kind::BoolValue(b)) => json.bool_value = Some(*b),
                Some(Kind::TimeValue(t)) => json.time_value = time_to_json(Some(t)),
                None => {}
            }
            (key.clone(), json)
        })
        .collect()
}

/// Fails when a read-only field was sent in a write.
pub fn reject_read_only(v: &mut Violations, fields: &[(&str, bool)]) {
    for (name, present) in fields {
        if *present {
            v.add(*name, "is read-only");
        }
    }
}
