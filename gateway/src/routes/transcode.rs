//! REST calls that map one-to-one onto a gRPC method: the body (and path and query) become the
//! request message through its proto3 JSON form, the response message goes back as proto3
//! JSON. Unknown fields are refused, naming the field.

use std::collections::BTreeMap;

use axum::response::Response;
use crm_platform::ApiError;
use crm_proto::prost::Message;
use http::StatusCode;
use serde_json::{Map, Value};

use super::with_etag;
use crate::problem::Problem;

/// How a REST call maps onto one RPC.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    /// Fully qualified request message.
    pub request: &'static str,
    /// Fully qualified response message.
    pub response: &'static str,
    /// The response field returned as the body (a resource), or None for the whole response.
    pub unwrap: Option<&'static str>,
    /// The status of a success.
    pub status: StatusCode,
}

impl Rpc {
    pub const fn new(request: &'static str, response: &'static str) -> Self {
        Rpc {
            request,
            response,
            unwrap: None,
            status: StatusCode::OK,
        }
    }

    pub const fn resource(self, field: &'static str) -> Self {
        Rpc {
            unwrap: Some(field),
            ..self
        }
    }

    pub const fn created(self) -> Self {
        Rpc {
            status: StatusCode::CREATED,
            ..self
        }
    }

    /// Parses the request message from its proto3 JSON.
    pub fn request<M: Message + Default>(&self, json: Value) -> Result<M, Problem> {
        crm_proto::json::from_json(&json, self.request).map_err(|reason| {
            Problem(ApiError::invalid_field(
                "body",
                crate::extract::in_client_words(&reason),
            ))
        })
    }

    /// The response as proto3 JSON (the unwrapped resource, with its ETag and Location).
    pub fn respond<M: Message>(&self, message: &M) -> Result<Response, Problem> {
        let json = crm_proto::json::to_json(message, self.response).map_err(|e| Problem(ApiError::internal(&e)))?;
        let body = match self.unwrap {
            Some(field) => json.get(field).cloned().unwrap_or_else(|| Value::Object(Map::new())),
            None => json,
        };
        let etag = body.get("etag").and_then(Value::as_str).unwrap_or_default().to_owned();
        let location = (self.status == StatusCode::CREATED)
            .then(|| body.get("name").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        Ok(with_etag(self.status, &etag, location, body))
    }
}

/// A JSON object of the request fields given as query parameters (`true`/`false` as booleans).
pub fn query_fields(query: BTreeMap<String, String>) -> Map<String, Value> {
    query
        .into_iter()
        .map(|(key, value)| {
            let value = match value.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(value),
            };
            (key, value)
        })
        .collect()
}

/// The body as an object (a JSON body that is not an object is refused).
pub fn object(body: Value) -> Result<Map<String, Value>, Problem> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(Problem(ApiError::invalid_field("body", "must be a JSON object"))),
    }
}
