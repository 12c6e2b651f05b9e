//! proto3 JSON of any message of the suite, through the compiled descriptors: how events are
//! stored and shown, and how REST bodies become requests.

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
/// by name, 64-bit integers as strings, default values left out.
pub fn to_json<M: Message>(message: &M, type_name: &str) -> Result<serde_json::Value, String> {
    encoded_to_json(&message.encode_to_vec(), type_name)
}

/// Encoded bytes of `type_name` as proto3 JSON.
pub fn encoded_to_json(bytes: &[u8], type_name: &str) -> Result<serde_json::Value, String> {
    let dynamic = DynamicMessage::decode(descriptor(type_name)?, bytes).map_err(|e| e.to_string())?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| e.to_string())
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
