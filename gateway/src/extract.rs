//! Request extractors whose failures are problem+json with the offending field named.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use crm_platform::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// The largest request body, put on each request by the router.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// How much of an oversized upload is read and thrown away before answering 413. Answering
/// while the client is still sending makes many clients see a reset instead of the answer.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

fn too_large() -> Problem {
    Problem(ApiError::new(
        ErrorCode::PayloadTooLarge,
        "PAYLOAD_TOO_LARGE",
        "the request body is too large",
    ))
}

/// Reads a body of at most `limit` bytes. A larger one is drained (up to [`DRAIN_CAP`]) and
/// refused with 413.
async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, Problem> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buffer = Vec::new();
    let mut seen = 0_usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            Problem(ApiError::new(
                ErrorCode::InvalidArgument,
                "UNREADABLE_BODY",
                "the request body could not be read",
            ))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_CAP {
            break;
        }
        if seen <= limit {
            buffer.extend_from_slice(&data);
        }
    }
    if seen > limit {
        Err(too_large())
    } else {
        Ok(Bytes::from(buffer))
    }
}

/// A JSON body: unknown fields are refused, errors name the field, oversized bodies are 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        parse_json(&read_body(request).await?).map(JsonBody)
    }
}

/// A JSON body that may be left out (a custom method's): `None` when the body is empty.
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // An empty body is no body, whatever its declared type (`curl -d ''` says a form).
        let json = is_json(&request);
        let limit = body_limit(&request);
        let bytes = read_limited(request.into_body(), limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse_json(&bytes).map(|body| OptionalJson(Some(body)))
    }
}

/// The body of a request that must be JSON (or have no content type), at most the body limit.
async fn read_body(request: Request) -> Result<Bytes, Problem> {
    if !is_json(&request) {
        return Err(unsupported_media_type());
    }
    let limit = body_limit(&request);
    read_limited(request.into_body(), limit).await
}

/// Whether the body is declared JSON (or not declared at all).
fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"))
}

fn unsupported_media_type() -> Problem {
    Problem(ApiError::new(
        ErrorCode::InvalidArgument,
        "UNSUPPORTED_MEDIA_TYPE",
        "the body must be application/json",
    ))
}

/// The largest body the router allows this request.
fn body_limit(request: &Request) -> usize {
    request
        .extensions()
        .get::<BodyLimit>()
        .map_or(crate::DEFAULT_BODY_LIMIT, |l| l.0)
}

/// Parses JSON, naming the field an error is in.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        Problem(ApiError::invalid_field(
            field,
            in_client_words(&err.inner().to_string()),
        ))
    })
}

/// A JSON error in the client's terms: serde names the gateway's own Rust types (`expected
/// struct EmailDto`, `expected u32`), which mean nothing to a client; say what JSON was expected.
pub fn in_client_words(message: &str) -> String {
    const KINDS: &[(&str, &str)] = &[("struct ", "a JSON object"), ("enum ", "one of the documented values")];
    const NUMBERS: &[(&str, &str)] = &[
        ("usize", "a non-negative integer"),
        ("u64", "a non-negative integer"),
        ("u32", "a non-negative integer"),
        ("u16", "a non-negative integer"),
        ("u8", "a non-negative integer"),
        ("i64", "an integer"),
        ("i32", "an integer"),
        ("f64", "a number"),
        ("f32", "a number"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (kind, words) in KINDS {
            if let Some(after) = rest.strip_prefix(kind) {
                let name_len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.push_str(words);
                    rest = &after[name_len..];
                    continue 'scan;
                }
            }
        }
        if let Some(after) = rest.strip_prefix("expected ") {
            for (number, words) in NUMBERS {
                if let Some(tail) = after.strip_prefix(number)
                    && !tail.starts_with(|c: char| c.is_ascii_alphanumeric())
                {
                    out.push_str("expected ");
                    out.push_str(words);
                    rest = tail;
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Query parameters: unknown parameters are refused.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|err| Problem(ApiError::invalid_field("query", in_client_words(&err.body_text()))))
    }
}

#[cfg(test)]
mod tests {
    use super::in_client_words;

    #[test]
    fn serde_type_names_become_json_words() {
        assert_eq!(
            in_client_words("invalid type: integer `5`, expected struct EmailDto at line 1 column 12"),
            "invalid type: integer `5`, expected a JSON object at line 1 column 12"
        );
        assert_eq!(
            in_client_words("invalid value: integer `-1`, expected u32"),
            "invalid value: integer `-1`, expected a non-negative integer"
        );
        assert_eq!(
            in_client_words("invalid type: map, expected enum LifecycleStageDto"),
            "invalid type: map, expected one of the documented values"
        );
        assert_eq!(
            in_client_words("unknown field `x`, expected one of `givenName`"),
            "unknown field `x`, expected one of `givenName`"
        );
        assert_eq!(in_client_words("the struct is fine"), "the struct is fine");
    }
}
