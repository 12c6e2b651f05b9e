//! The direct writer of event text against the DynamicMessage path, on random messages of every
//! type of the suite.

use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value};

use super::{descriptors, dynamic_json_text, text, to_json_text};

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Zoë",
            "\"",
            "\\",
            "\n",
            "\u{1}",
            "日本",
            "😀",
            " ",
            "x-1",
            "</script>",
        ];
        (0..self.below(5))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn float(&mut self) -> f64 {
        match self.below(6) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -1.5,
            3 => 0.1 + 0.2,
            4 => 1e300,
            _ => self.next() as f64 / 7.0,
        }
    }
}

fn scalar(kind: &Kind, rng: &mut Rng, depth: u32) -> Value {
    match kind {
        Kind::Double => Value::F64(rng.float()),
        Kind::Float => Value::F32(rng.float() as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.next() as i32 >> rng.below(31)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.next() as i64 >> rng.below(63)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.next() as u32 >> rng.below(31)),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.next() >> rng.below(63)),
        Kind::Bool => Value::Bool(rng.below(2) == 1),
        Kind::String => Value::String(rng.text()),
        Kind::Bytes => Value::Bytes(rng.text().into_bytes().into()),
        Kind::Enum(kind) => {
            let values: Vec<i32> = kind.values().map(|v| v.number()).collect();
            // Now and then a number the enum does not name.
            match rng.below(values.len() as u64 + 1) as usize {
                i if i < values.len() => Value::EnumNumber(values[i]),
                _ => Value::EnumNumber(77),
            }
        }
        Kind::Message(message) => Value::Message(random(message, rng, depth + 1)),
    }
}

fn map_key(kind: &Kind, rng: &mut Rng) -> MapKey {
    match scalar(kind, rng, 0) {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(v) => MapKey::I32(v),
        Value::I64(v) => MapKey::I64(v),
        Value::U32(v) => MapKey::U32(v),
        Value::U64(v) => MapKey::U64(v),
        Value::String(s) => MapKey::String(s),
        other => panic!("not a map key: {other:?}"),
    }
}

/// A random message of `descriptor`: each field absent, or set (lists and maps with a few
/// items), to a bounded depth; well-known types within the ranges their JSON can write.
fn random(descriptor: &MessageDescriptor, rng: &mut Rng, depth: u32) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    match descriptor.full_name() {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
            const NANOS: [i32; 4] = [0, 120_000_000, 123_456_000, 123_456_789];
            message.set_field_by_name("seconds", Value::I64(rng.below(4_000_000_000) as i64));
            message.set_field_by_name("nanos", Value::I32(NANOS[rng.below(4) as usize]));
            return message;
        }
        "google.protobuf.Any" | "google.protobuf.FieldMask" => return message,
        _ => {}
    }
    for field in descriptor.fields() {
        let nested = matches!(field.kind(), Kind::Message(_));
        if rng.below(3) == 0 || (nested && depth > 3) {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!()
            };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            Value::Map(
                (0..rng.below(3))
                    .map(|_| (map_key(&key.kind(), rng), scalar(&value.kind(), rng, depth)))
                    .collect(),
            )
        } else if field.is_list() {
            Value::List((0..rng.below(4)).map(|_| scalar(&field.kind(), rng, depth)).collect())
        } else {
            scalar(&field.kind(), rng, depth)
        };
        message.set_field(&field, value);
    }
    message
}

#[test]
fn the_direct_writer_writes_what_the_dynamic_path_writes_for_every_type() {
    let pool = descriptors().expect("descriptors");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut written, mut left) = (0, 0);
    for descriptor in pool.all_messages() {
        for _ in 0..40 {
            let bytes = random(&descriptor, &mut rng, 0).encode_to_vec();
            let Some(fast) = text::write(&bytes, &descriptor) else {
                left += 1;
                continue;
            };
            written += 1;
            let slow = dynamic_json_text(&bytes, descriptor.clone()).unwrap_or_else(|e| {
                panic!(
                    "{}: the dynamic path refused what the writer wrote ({fast}): {e}",
                    descriptor.full_name()
                )
            });
            let fast_json: serde_json::Value = serde_json::from_str(&fast)
                .unwrap_or_else(|e| panic!("{}: not JSON: {fast}: {e}", descriptor.full_name()));
            let slow_json: serde_json::Value = serde_json::from_str(&slow).expect("dynamic JSON");
            assert_eq!(fast_json, slow_json, "{}", descriptor.full_name());
        }
    }
    // Only Any, FieldMask and non-finite numbers in a google.protobuf.Value are left over.
    assert!(
        written > 20 * left,
        "the writer handled {written} messages and left {left}"
    );
}

#[test]
fn an_event_is_written_directly() {
    use crate::crm::contact::v1 as pb;
    let event = pb::ContactCreated {
        contact: "contacts/0190".to_owned(),
        fields: vec![pb::FieldChange {
            field: "emails".to_owned(),
            old_value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::NullValue(0)),
            }),
            new_value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(prost_types::ListValue {
                    values: vec![prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue("ada@example.com".to_owned())),
                    }],
                })),
            }),
        }],
    };
    let name = <pb::ContactCreated as prost::Name>::full_name();
    assert_eq!(
        to_json_text(&event, &name).expect("text"),
        r#"{"contact":"contacts/0190","fields":[{"field":"emails","oldValue":null,"newValue":["ada@example.com"]}]}"#
    );
    assert!(
        text::write(
            &event.encode_to_vec(),
            &descriptors().unwrap().get_message_by_name(&name).unwrap()
        )
        .is_some()
    );
}
