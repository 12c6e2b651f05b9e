//! REST routes. Each handler converts JSON to proto, calls one RPC and converts back.

pub mod companies;
pub mod contacts;
pub mod events;
pub mod interactions;
pub mod ops;
pub mod pipeline;
pub mod transcode;
pub mod users;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;

/// Paging, filtering and ordering of every List.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page: default 50, at most 1000.
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    pub page_token: Option<String>,
    /// AIP-160 subset, e.g. `lifecycle_stage = CUSTOMER AND tag = "vip"`.
    pub filter: Option<String>,
    /// e.g. `create_time desc`, `family_name`.
    pub order_by: Option<String>,
}

/// Paging of timelines and searches.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page: default 50, at most 1000.
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    pub page_token: Option<String>,
}

/// Parameters of a PATCH.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UpdateParams {
    /// Comma-separated fields to change (proto or JSON names); default: the fields in the body.
    pub update_mask: Option<String>,
}

/// The entity tag of an `If-Match` header as sent (`*` or absent: none); the service compares
/// it strongly, so a weak tag never matches.
pub fn if_match(headers: &HeaderMap) -> String {
    headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| v != "*")
        .unwrap_or_default()
}

/// The `Idempotency-Key` header, the REST spelling of `request_id`.
pub fn idempotency_key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `givenName` -> `given_name`, so masks may use either spelling.
pub fn proto_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.trim().chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The update mask: the explicit `updateMask`, else the fields present in the body.
pub fn mask(params: &UpdateParams, present: Vec<String>) -> crm_proto::prost_types::FieldMask {
    let paths = match &params.update_mask {
        Some(explicit) => explicit
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(proto_path)
            .collect(),
        None => present,
    };
    crm_proto::prost_types::FieldMask { paths }
}

/// A JSON response carrying the resource's etag.
pub fn with_etag(status: StatusCode, etag: &str, location: Option<String>, body: impl serde::Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(http::header::ETAG, value);
    }
    if let Some(value) = location.and_then(|l| HeaderValue::from_str(&format!("/v1/{l}")).ok()) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

/// Points a created resource at its likely duplicates: a `Link` header with
/// `rel="duplicates"` to `/v1/{collection}:findDuplicates?{param}={name}`.
pub fn link_duplicates(response: &mut Response, collection: &str, param: &str, name: &str) {
    let link = format!(
        "</v1/{collection}:findDuplicates?{param}={}>; rel=\"duplicates\"",
        name.replace('/', "%2F")
    );
    if let Ok(value) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(http::header::LINK, value);
    }
}
