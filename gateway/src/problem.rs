//! REST errors as `application/problem+json` (RFC 9457), built from the suite's one error
//! table so REST and gRPC always agree.

use axum::response::{IntoResponse, Response};
use crm_platform::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every REST error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProblemBody {
    /// `urn:crm:error:<REASON>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status text.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for developers.
    pub detail: String,
    /// Machine-readable reason, UPPER_SNAKE (ErrorInfo.reason in gRPC).
    pub reason: String,
    /// Invalid fields of the request, in JSON (lowerCamelCase) names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// How many more invalid fields there were beyond the violations listed (at most 20 are).
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted_violations: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Violation {
    /// The field, e.g. `contact.emails[0].address`.
    pub field: String,
    /// Why it is invalid.
    pub description: String,
}

/// An error response.
#[derive(Debug)]
pub struct Problem(pub ApiError);

impl From<ApiError> for Problem {
    fn from(err: ApiError) -> Self {
        Problem(err)
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        Problem(ApiError::from_status(&status))
    }
}

/// `given_name` -> `givenName`, leaving map keys in brackets alone.
pub fn json_field_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0;
    let mut upper_next = false;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if depth == 0 && c == '_' {
            upper_next = true;
            continue;
        }
        if upper_next {
            out.extend(c.to_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl Problem {
    /// The problem's body, as a response carries it (and a stream's `error` event).
    pub fn body(&self) -> ProblemBody {
        let status = self.0.code.http();
        ProblemBody {
            problem_type: format!("urn:crm:error:{}", self.0.reason),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.0.message.clone(),
            reason: self.0.reason.to_string(),
            violations: self
                .0
                .violations
                .iter()
                .map(|v| Violation {
                    field: json_field_path(&v.field),
                    description: v.description.clone(),
                })
                .collect(),
            omitted_violations: self.0.omitted_violations,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let json = serde_json::to_vec(&self.body()).unwrap_or_default();
        (
            self.0.code.http(),
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response()
    }
}

/// The response the auth layer sends for a missing or bad token, or a role that may not make
/// the call. It is sent without reading the request's body, so the connection is closed after
/// it (`Connection: close`): a client must not send its next request on a connection whose
/// last body was left unread.
pub fn auth_rejection(err: ApiError) -> http::Response<axum::body::Body> {
    let mut response = Problem(err).into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_paths_become_json_names() {
        assert_eq!(super::json_field_path("contact.given_name"), "contact.givenName");
        assert_eq!(
            super::json_field_path("contact.attributes[annual_revenue]"),
            "contact.attributes[annual_revenue]"
        );
        assert_eq!(
            super::json_field_path("update_mask.paths[family_name]"),
            "updateMask.paths[family_name]"
        );
    }
}
