//! Operational endpoints: liveness, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use crm_platform::auth::{KeyState, Verifier};
use crm_platform::consumer::FOLLOWERS_HEALTH;
use http::StatusCode;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::Gateway;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "alive")))]
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness: every upstream service reports SERVING over gRPC health and the signing keys
/// are usable (stale keys still serve, and say so). A feed follower whose credentials are
/// refused makes the suite `degraded` (still 200: the API works, but merges and erasures stop
/// reaching the pipeline until the token is renewed).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready or degraded"), (status = 503, description = "an upstream is not serving, or no signing keys")))]
pub async fn readyz(State(gw): State<Gateway>, Extension(verifier): Extension<Arc<Verifier>>) -> Response {
    let (contact, pipeline, followers, keys) = tokio::join!(
        serving(&gw, gw.health(), crate::CONTACT_SERVICE),
        serving(&gw, gw.pipeline_health(), crate::PIPELINE_SERVICE),
        serving(&gw, gw.pipeline_health(), FOLLOWERS_HEALTH),
        verifier.check_keys(),
    );
    let ready = contact && pipeline && keys != KeyState::Unavailable;
    let (status, word) = match (ready, followers) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "degraded"),
    };
    let body = serde_json::json!({
        "status": word,
        "upstreams": { crate::CONTACT_SERVICE: contact, crate::PIPELINE_SERVICE: pipeline },
        "signingKeys": keys.as_str(),
        "feedCredentials": if followers { "accepted" } else { "refused" },
    });
    (status, axum::Json(body)).into_response()
}

/// Whether `service` reports SERVING through `health` within the deadline.
async fn serving(
    gw: &Gateway,
    mut health: tonic_health::pb::health_client::HealthClient<crm_platform::telemetry::TracedChannel>,
    service: &str,
) -> bool {
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    matches!(
        tokio::time::timeout(gw.deadline, health.check(request)).await,
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics() -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crm_platform::metrics::render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()), responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi() -> Response {
    // Generated once: the document is fixed for the life of the process.
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        crate::openapi::document()
            .map(|doc| doc.to_string())
            .unwrap_or_else(|e| serde_json::json!({ "error": e }).to_string())
    });
    ([(http::header::CONTENT_TYPE, "application/json")], json.clone()).into_response()
}
