//! Compact proto3 JSON text written straight from a message's encoded bytes, walking them once
//! with its descriptor. Events are written this way, once per change: going through a
//! `DynamicMessage` (decoding every field into a tree of its own, then serialising the tree)
//! cost an import of contacts about a tenth of its throughput.
//!
//! The output is what [`super::to_json_text`]'s `DynamicMessage` path writes (fields at their
//! default values left out, enums by name, 64-bit integers as strings), up to the order of
//! an object's keys; a test compares the two on random messages of every type of the suite.
//! What this writer does not handle (`Any`, `FieldMask`, groups, bytes that do not parse) is
//! left to that path: [`write`] answers None.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// `bytes`, an encoded message of `descriptor`, as compact proto3 JSON text; None when it holds
/// something this writer leaves to the `DynamicMessage` path.
pub(super) fn write(bytes: &[u8], descriptor: &MessageDescriptor) -> Option<String> {
    let mut out = String::with_capacity(bytes.len() * 2 + 16);
    message(&mut out, bytes, descriptor)?;
    Some(out)
}

/// One field's encoded value.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Chunk(&'a [u8]),
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let chunk = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(chunk)
}

/// The fields of an encoded message, by number in the order each number first appears, with
/// every value the number came with.
fn fields(bytes: &[u8]) -> Option<Vec<(u32, Vec<Raw<'_>>)>> {
    let mut fields: Vec<(u32, Vec<Raw<'_>>)> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        let number = u32::try_from(key >> 3).ok()?;
        let raw = match key & 7 {
            0 => Raw::Varint(varint(bytes, &mut at)?),
            1 => Raw::Fixed64(u64::from_le_bytes(take(bytes, &mut at, 8)?.try_into().ok()?)),
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                Raw::Chunk(take(bytes, &mut at, len)?)
            }
            5 => Raw::Fixed32(u32::from_le_bytes(take(bytes, &mut at, 4)?.try_into().ok()?)),
            // Groups (3, 4) are not proto3.
            _ => return None,
        };
        match fields.iter_mut().find(|(n, _)| *n == number) {
            Some((_, raws)) => raws.push(raw),
            None => fields.push((number, vec![raw])),
        }
    }
    Some(fields)
}

fn message(out: &mut String, bytes: &[u8], descriptor: &MessageDescriptor) -> Option<()> {
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let time = prost_types::Timestamp::decode(bytes).ok()?;
            // The range RFC 3339 can write (years 1 to 9999), as the DynamicMessage path checks.
            if !(-62_135_596_800..=253_402_300_799).contains(&time.seconds) || !(0..1_000_000_000).contains(&time.nanos)
            {
                return None;
            }
            string(out, &time.to_string());
        }
        "google.protobuf.Duration" => {
            let duration = prost_types::Duration::decode(bytes).ok()?;
            let valid = duration.seconds.unsigned_abs() <= 315_576_000_000
                && duration.nanos.unsigned_abs() < 1_000_000_000
                && (duration.seconds == 0 || duration.nanos == 0 || (duration.seconds < 0) == (duration.nanos < 0));
            if !valid {
                return None;
            }
            string(out, &duration.to_string());
        }
        "google.protobuf.Value" => value(out, &prost_types::Value::decode(bytes).ok()?)?,
        "google.protobuf.Struct" => object(out, &prost_types::Struct::decode(bytes).ok()?)?,
        "google.protobuf.ListValue" => list(out, &prost_types::ListValue::decode(bytes).ok()?)?,
        "google.protobuf.Any" | "google.protobuf.FieldMask" => return None,
        name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
            // A wrapper: its field 1 (the zero value when absent).
            let field = descriptor.get_field(1)?;
            match fields(bytes)?.into_iter().find(|(n, _)| *n == 1) {
                Some((_, raws)) => scalar(out, &field, *raws.last()?)?,
                None => zero(out, &field.kind()),
            }
        }
        _ => {
            out.push('{');
            let mut first = true;
            for (number, raws) in fields(bytes)? {
                // Unknown fields are not written.
                let Some(field) = descriptor.get_field(number) else {
                    continue;
                };
                if !field.is_list() && !field.is_map() && !field.supports_presence() && is_zero(*raws.last()?) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                string(out, field.json_name());
                out.push(':');
                if field.is_map() {
                    map(out, &field, &raws)?;
                } else if field.is_list() {
                    out.push('[');
                    let mut first = true;
                    for raw in raws {
                        let packed = match raw {
                            Raw::Chunk(chunk)
                                if !matches!(field.kind(), Kind::String | Kind::Bytes | Kind::Message(_)) =>
                            {
                                Some(chunk)
                            }
                            _ => None,
                        };
                        for raw in packed.map_or(Some(vec![raw]), |chunk| unpack(chunk, &field.kind()))? {
                            if !first {
                                out.push(',');
                            }
                            first = false;
                            scalar(out, &field, raw)?;
                        }
                    }
                    out.push(']');
                } else if matches!(field.kind(), Kind::Message(_)) && raws.len() > 1 {
                    // A message given in parts is merged; the DynamicMessage path does that.
                    return None;
                } else {
                    scalar(out, &field, *raws.last()?)?;
                }
            }
            out.push('}');
        }
    }
    Some(())
}

/// Whether a proto3 field without presence holds its default (not written).
fn is_zero(raw: Raw<'_>) -> bool {
    match raw {
        Raw::Varint(v) | Raw::Fixed64(v) => v == 0,
        Raw::Fixed32(v) => v == 0,
        Raw::Chunk(chunk) => chunk.is_empty(),
    }
}

/// The values of a packed list.
fn unpack<'a>(chunk: &'a [u8], kind: &Kind) -> Option<Vec<Raw<'a>>> {
    let mut values = Vec::new();
    let mut at = 0;
    while at < chunk.len() {
        values.push(match kind {
            Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => {
                Raw::Fixed64(u64::from_le_bytes(take(chunk, &mut at, 8)?.try_into().ok()?))
            }
            Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => {
                Raw::Fixed32(u32::from_le_bytes(take(chunk, &mut at, 4)?.try_into().ok()?))
            }
            _ => Raw::Varint(varint(chunk, &mut at)?),
        });
    }
    Some(values)
}

fn map(out: &mut String, field: &FieldDescriptor, entries: &[Raw<'_>]) -> Option<()> {
    let Kind::Message(entry) = field.kind() else {
        return None;
    };
    let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
    out.push('{');
    for (i, raw) in entries.iter().enumerate() {
        let Raw::Chunk(bytes) = raw else {
            return None;
        };
        if i > 0 {
            out.push(',');
        }
        let parts = fields(bytes)?;
        let part = |number: u32| {
            parts
                .iter()
                .find(|(n, _)| *n == number)
                .and_then(|(_, raws)| raws.last().copied())
        };
        // A key is written as a string, whatever its type.
        let mut key = String::new();
        match part(1) {
            Some(raw) => scalar(&mut key, &key_field, raw)?,
            None => zero(&mut key, &key_field.kind()),
        }
        if key.starts_with('"') {
            out.push_str(&key);
        } else {
            string(out, &key);
        }
        out.push(':');
        match part(2) {
            Some(raw) => scalar(out, &value_field, raw)?,
            None => match value_field.kind() {
                Kind::Message(message) => self::message(out, &[], &message)?,
                kind => zero(out, &kind),
            },
        }
    }
    out.push('}');
    Some(())
}

/// One value of `field` (an element, for a list).
fn scalar(out: &mut String, field: &FieldDescriptor, raw: Raw<'_>) -> Option<()> {
    use std::fmt::Write as _;
    match (field.kind(), raw) {
        (Kind::Message(message), Raw::Chunk(bytes)) => self::message(out, bytes, &message)?,
        (Kind::String, Raw::Chunk(bytes)) => string(out, std::str::from_utf8(bytes).ok()?),
        (Kind::Bytes, Raw::Chunk(bytes)) => {
            out.push('"');
            out.push_str(&BASE64.encode(bytes));
            out.push('"');
        }
        (Kind::Enum(kind), Raw::Varint(v)) => {
            let number = v as i32;
            if kind.full_name() == "google.protobuf.NullValue" {
                out.push_str("null");
            } else {
                match kind.get_value(number) {
                    Some(value) => string(out, value.name()),
                    None => write!(out, "{number}").ok()?,
                }
            }
        }
        (Kind::Bool, Raw::Varint(v)) => out.push_str(if v != 0 { "true" } else { "false" }),
        (Kind::Int32, Raw::Varint(v)) => write!(out, "{}", v as i32).ok()?,
        (Kind::Uint32, Raw::Varint(v)) => write!(out, "{}", v as u32).ok()?,
        (Kind::Sint32, Raw::Varint(v)) => write!(out, "{}", zigzag(v) as i32).ok()?,
        (Kind::Int64, Raw::Varint(v)) => write!(out, "\"{}\"", v as i64).ok()?,
        (Kind::Uint64, Raw::Varint(v)) => write!(out, "\"{v}\"").ok()?,
        (Kind::Sint64, Raw::Varint(v)) => write!(out, "\"{}\"", zigzag(v)).ok()?,
        (Kind::Fixed32, Raw::Fixed32(v)) => write!(out, "{v}").ok()?,
        (Kind::Sfixed32, Raw::Fixed32(v)) => write!(out, "{}", v as i32).ok()?,
        (Kind::Fixed64, Raw::Fixed64(v)) => write!(out, "\"{v}\"").ok()?,
        (Kind::Sfixed64, Raw::Fixed64(v)) => write!(out, "\"{}\"", v as i64).ok()?,
        (Kind::Double, Raw::Fixed64(v)) => float(out, f64::from_bits(v), serde_json::to_string(&f64::from_bits(v))),
        (Kind::Float, Raw::Fixed32(v)) => float(
            out,
            f64::from(f32::from_bits(v)),
            serde_json::to_string(&f32::from_bits(v)),
        ),
        _ => return None,
    }
    Some(())
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A float: its JSON number (`finite`, as serde writes it), or the proto3 JSON names of the
/// values JSON has no number for.
fn float(out: &mut String, value: f64, finite: serde_json::Result<String>) {
    if value.is_nan() {
        out.push_str("\"NaN\"");
    } else if value == f64::INFINITY {
        out.push_str("\"Infinity\"");
    } else if value == f64::NEG_INFINITY {
        out.push_str("\"-Infinity\"");
    } else if let Ok(text) = finite {
        out.push_str(&text);
    }
}

/// The default value of a scalar kind, as written for an absent wrapper value or map part.
fn zero(out: &mut String, kind: &Kind) {
    out.push_str(match kind {
        Kind::String | Kind::Bytes => "\"\"",
        Kind::Bool => "false",
        Kind::Int64 | Kind::Uint64 | Kind::Sint64 | Kind::Fixed64 | Kind::Sfixed64 => "\"0\"",
        Kind::Double | Kind::Float => "0.0",
        Kind::Enum(kind) if kind.full_name() == "google.protobuf.NullValue" => "null",
        Kind::Enum(kind) => return string(out, kind.default_value().name()),
        _ => "0",
    });
}

fn string(out: &mut String, text: &str) {
    // serde_json's escaping, written into `out` (a String is always valid UTF-8 JSON text).
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

fn value(out: &mut String, value: &prost_types::Value) -> Option<()> {
    use prost_types::value::Kind as V;
    match &value.kind {
        None | Some(V::NullValue(_)) => out.push_str("null"),
        Some(V::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        // The DynamicMessage path refuses a Value that JSON has no number for.
        Some(V::NumberValue(n)) if !n.is_finite() => return None,
        Some(V::NumberValue(n)) => out.push_str(&serde_json::to_string(n).ok()?),
        Some(V::StringValue(s)) => string(out, s),
        Some(V::ListValue(l)) => list(out, l)?,
        Some(V::StructValue(s)) => object(out, s)?,
    }
    Some(())
}

fn object(out: &mut String, object: &prost_types::Struct) -> Option<()> {
    out.push('{');
    for (i, (key, item)) in object.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, key);
        out.push(':');
        value(out, item)?;
    }
    out.push('}');
    Some(())
}

fn list(out: &mut String, list: &prost_types::ListValue) -> Option<()> {
    out.push('[');
    for (i, item) in list.values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        value(out, item)?;
    }
    out.push(']');
    Some(())
}
