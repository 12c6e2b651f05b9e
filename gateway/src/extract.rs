//! Request extractors whose failures are problem+json with the offending field named.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use crm_platform::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body: unknown fields are refused, errors name the field, oversized bodies are 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        if !content_type.starts_with("application/json") {
            return Err(Problem(ApiError::new(
                ErrorCode::InvalidArgument,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be application/json",
            )));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "PAYLOAD_TOO_LARGE",
                    "the request body is too large",
                ))
            } else {
                Problem(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "UNREADABLE_BODY",
                    "the request body could not be read",
                ))
            }
        })?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(deserializer)
            .map(JsonBody)
            .map_err(|err| {
                let path = err.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                Problem(ApiError::invalid_field(field, err.inner().to_string()))
            })
    }
}

/// Query parameters: unknown parameters are refused.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|err| Problem(ApiError::invalid_field("query", err.body_text())))
    }
}
