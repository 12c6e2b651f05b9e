//! proto3 JSON of any message of the suite, through the compiled descriptors: how events are
//! stored and shown, and how REST bodies become requests.

#[cfg(test)]
mod tests;
mod text;

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

/// Every message of the suite (and the well-known types it uses).
static DESCRIPTORS: LazyLock<Result<DescriptorPool, String>> =
    LazyLock::new(|| DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string()));

/// The suite's descriptors.
pub fn descriptors() -> Result<&'static DescriptorPool, String> {
    DESCRIPTORS.as_ref().map_err(Clone::clone)
}

fn descriptor(type_name: &str) -> Result<prost_reflect::MessageDescriptor, String> {
    descriptors()?
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("unknown message type {type_name}"))
}

/// `message` (of the fully qualified `type_name`) as proto3 JSON: lowerCamelCase names, enums
/// by name, 64-bit integers as strings. Every list, map and scalar field is present, empty or
/// zero included (an empty list is `[]`, an empty string `""`), so a client never has to tell
/// "empty" from "not sent"; enums, messages and oneof members appear when set.
pub fn to_json<M: Message>(message: &M, type_name: &str) -> Result<serde_json::Value, String> {
    encoded_to_json(&message.encode_to_vec(), type_name)
}

/// `message` (of the fully qualified `type_name`) as compact proto3 JSON text, fields at their
/// default values left out: how events are stored (written once per change, read back by
/// [`from_json`], so the text is made without the tree [`to_json`] builds).
pub fn to_json_text<M: Message>(message: &M, type_name: &str) -> Result<String, String> {
    let descriptor = descriptor(type_name)?;
    let bytes = message.encode_to_vec();
    match text::write(&bytes, &descriptor) {
        Some(text) => Ok(text),
        None => dynamic_json_text(&bytes, descriptor),
    }
}

/// [`to_json_text`] through a `DynamicMessage`: for what [`text::write`] leaves to it.
fn dynamic_json_text(bytes: &[u8], descriptor: prost_reflect::MessageDescriptor) -> Result<String, String> {
    let dynamic = DynamicMessage::decode(descriptor, bytes).map_err(|e| e.to_string())?;
    let mut text = Vec::with_capacity(512);
    dynamic
        .serialize_with_options(&mut serde_json::Serializer::new(&mut text), &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    String::from_utf8(text).map_err(|e| e.to_string())
}

/// Encoded bytes of `type_name` as proto3 JSON.
pub fn encoded_to_json(bytes: &[u8], type_name: &str) -> Result<serde_json::Value, String> {
    let descriptor = descriptor(type_name)?;
    let dynamic = DynamicMessage::decode(descriptor.clone(), bytes).map_err(|e| e.to_string())?;
    let mut json = dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    with_defaults(&mut json, &descriptor);
    Ok(json)
}

/// Puts `[]`, `{}`, `""`, `0` and `false` for the empty lists, maps and scalars of `json` (a
/// message of `descriptor`) and of the messages inside it. Well-known types have JSON forms of
/// their own and are left alone.
fn with_defaults(json: &mut serde_json::Value, descriptor: &prost_reflect::MessageDescriptor) {
    use prost_reflect::Kind;
    if descriptor.full_name().starts_with("google.protobuf.") {
        return;
    }
    let Some(object) = json.as_object_mut() else {
        return;
    };
    for field in descriptor.fields() {
        let name = field.json_name();
        let message = match field.kind() {
            Kind::Message(message) if !field.is_map() => Some(message),
            _ => None,
        };
        if field.is_list() {
            let list = object
                .entry(name)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let (Some(message), Some(items)) = (&message, list.as_array_mut()) {
                for item in items {
                    with_defaults(item, message);
                }
            }
        } else if field.is_map() {
            object
                .entry(name)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        } else if let (Some(message), Some(value)) = (&message, object.get_mut(name)) {
            with_defaults(value, message);
        } else if field.containing_oneof().is_none() && !field.supports_presence() {
            let zero = match field.kind() {
                Kind::String | Kind::Bytes => serde_json::Value::String(String::new()),
                Kind::Bool => serde_json::Value::Bool(false),
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                    serde_json::Value::String("0".to_owned())
                }
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
                    serde_json::Value::from(0)
                }
                Kind::Double | Kind::Float => serde_json::Value::from(0.0),
                Kind::Enum(_) | Kind::Message(_) => continue,
            };
            object.entry(name).or_insert(zero);
        }
    }
}

/// Parses proto3 JSON of `type_name` into its encoded bytes. Unknown fields are refused; the
/// error names the offending field.
pub fn json_to_encoded(json: &serde_json::Value, type_name: &str) -> Result<Vec<u8>, String> {
    let dynamic = DynamicMessage::deserialize_with_options(descriptor(type_name)?, json, &DeserializeOptions::new())
        .map_err(|e| e.to_string())?;
    Ok(dynamic.encode_to_vec())
}

/// Parses proto3 JSON of `type_name` into the generated message `M`.
pub fn from_json<M: Message + Default>(json: &serde_json::Value, type_name: &str) -> Result<M, String> {
    M::decode(json_to_encoded(json, type_name)?.as_slice()).map_err(|e| e.to_string())
}
