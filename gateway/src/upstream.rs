//! Calls to the services over gRPC, carrying the caller's token, the request id and a deadline
//! (the trace context goes with every call of a traced channel).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::problem::Problem;

/// What a REST request passes on to the gRPC call it makes.
pub struct Call {
    authorization: Option<String>,
    request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Call {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Call {
            authorization: header("authorization"),
            request_id: header("x-request-id"),
        })
    }
}

impl Call {
    /// A gRPC request for `message` with the caller's credentials and the current trace.
    pub fn request<T>(&self, message: T, deadline: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline);
        let metadata: &mut MetadataMap = request.metadata_mut();
        if let Some(value) = self
            .authorization
            .as_deref()
            .and_then(|v| MetadataValue::try_from(v).ok())
        {
            metadata.insert("authorization", value);
        }
        if let Some(value) = self.request_id.as_deref().and_then(|v| MetadataValue::try_from(v).ok()) {
            metadata.insert("x-request-id", value);
        }
        request
    }
}
