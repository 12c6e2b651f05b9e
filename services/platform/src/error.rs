//! The one error table of the suite: every failure a client can see is an [`ApiError`] with a
//! canonical [`ErrorCode`], an UPPER_SNAKE reason and, for bad input, field violations. The
//! same table gives the gRPC code and the HTTP status, so gRPC and REST never disagree.

use std::borrow::Cow;

use http::StatusCode;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error the suite raises.
pub const ERROR_DOMAIN: &str = "crm";

/// Canonical error codes, each with one gRPC code and one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    /// A precondition such as an etag did not hold (HTTP 412).
    FailedPrecondition,
    Aborted,
    OutOfRange,
    ResourceExhausted,
    /// A request body over the configured limit (HTTP only; gRPC has its own message limit).
    PayloadTooLarge,
    /// A route that exists, called with a method it does not take (HTTP only).
    MethodNotAllowed,
    Cancelled,
    DeadlineExceeded,
    Unimplemented,
    Unavailable,
    Internal,
}

/// The table: (code, gRPC code, HTTP status).
const TABLE: &[(ErrorCode, Code, StatusCode)] = &[
    (
        ErrorCode::InvalidArgument,
        Code::InvalidArgument,
        StatusCode::BAD_REQUEST,
    ),
    (
        ErrorCode::Unauthenticated,
        Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
    ),
    (
        ErrorCode::PermissionDenied,
        Code::PermissionDenied,
        StatusCode::FORBIDDEN,
    ),
    (ErrorCode::NotFound, Code::NotFound, StatusCode::NOT_FOUND),
    (ErrorCode::AlreadyExists, Code::AlreadyExists, StatusCode::CONFLICT),
    (
        ErrorCode::FailedPrecondition,
        Code::FailedPrecondition,
        StatusCode::PRECONDITION_FAILED,
    ),
    (ErrorCode::Aborted, Code::Aborted, StatusCode::CONFLICT),
    (ErrorCode::OutOfRange, Code::OutOfRange, StatusCode::BAD_REQUEST),
    (
        ErrorCode::ResourceExhausted,
        Code::ResourceExhausted,
        StatusCode::TOO_MANY_REQUESTS,
    ),
    (
        ErrorCode::PayloadTooLarge,
        Code::ResourceExhausted,
        StatusCode::PAYLOAD_TOO_LARGE,
    ),
    (
        ErrorCode::MethodNotAllowed,
        Code::Unimplemented,
        StatusCode::METHOD_NOT_ALLOWED,
    ),
    (ErrorCode::Cancelled, Code::Cancelled, StatusCode::REQUEST_TIMEOUT),
    (
        ErrorCode::DeadlineExceeded,
        Code::DeadlineExceeded,
        StatusCode::GATEWAY_TIMEOUT,
    ),
    (
        ErrorCode::Unimplemented,
        Code::Unimplemented,
        StatusCode::NOT_IMPLEMENTED,
    ),
    (
        ErrorCode::Unavailable,
        Code::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
    ),
    (ErrorCode::Internal, Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
];

impl ErrorCode {
    fn row(self) -> &'static (ErrorCode, Code, StatusCode) {
        TABLE
            .iter()
            .find(|(code, _, _)| *code == self)
            .unwrap_or(&TABLE[TABLE.len() - 1])
    }

    /// The gRPC status code.
    pub fn grpc(self) -> Code {
        self.row().1
    }

    /// The HTTP status.
    pub fn http(self) -> StatusCode {
        self.row().2
    }

    /// The code a gRPC status maps back to (the gateway's direction). Codes with no row of
    /// their own (UNKNOWN, DATA_LOSS) are internal errors.
    pub fn from_grpc(code: Code) -> ErrorCode {
        TABLE
            .iter()
            .find(|(c, grpc, _)| *grpc == code && !c.http_only())
            .map_or(ErrorCode::Internal, |row| row.0)
    }

    /// Codes that only HTTP has: gRPC statuses never map back to them.
    fn http_only(self) -> bool {
        matches!(self, ErrorCode::PayloadTooLarge | ErrorCode::MethodNotAllowed)
    }

    /// Default reason for errors raised without a more specific one.
    pub fn default_reason(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// Field violations an error carries at most; the rest are only counted. Thousands of them
/// would not fit in gRPC trailers (the call would fail as a protocol error instead of a 400),
/// and the first ones are what a client fixes first.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest field path or description carried, in bytes (a description may quote the value).
const MAX_VIOLATION_TEXT: usize = 120;
/// Violations the message spells out (all of them are in the details).
const MESSAGE_VIOLATIONS: usize = 5;
/// `ErrorInfo.metadata` key of the number of violations left out.
const OMITTED_KEY: &str = "omitted_violations";

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One invalid field of a request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// An error as a client sees it. Messages are developer-facing and never carry database text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?} ({reason}): {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub reason: Cow<'static, str>,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// Violations found beyond the [`MAX_VIOLATIONS`] carried.
    pub omitted_violations: usize,
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: Cow::Borrowed(reason),
            message: message.into(),
            violations: Vec::new(),
            omitted_violations: 0,
        }
    }

    /// Invalid input in one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Invalid input in one or more fields; the message lists them (the first
    /// [`MAX_VIOLATIONS`], and how many more there are).
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        let omitted = violations.len().saturating_sub(MAX_VIOLATIONS);
        Self::counted_violations(violations.into_iter().take(MAX_VIOLATIONS).collect(), omitted)
    }

    fn counted_violations(violations: Vec<FieldViolation>, omitted: usize) -> Self {
        let violations: Vec<FieldViolation> = violations
            .into_iter()
            .map(|v| FieldViolation {
                field: clip(v.field, MAX_VIOLATION_TEXT),
                description: clip(v.description, MAX_VIOLATION_TEXT),
            })
            .collect();
        let mut message = violations
            .iter()
            .take(MESSAGE_VIOLATIONS)
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        let unspelled = violations.len().saturating_sub(MESSAGE_VIOLATIONS) + omitted;
        if unspelled > 0 {
            message.push_str(&format!("; and {unspelled} more invalid fields"));
        }
        Self {
            code: ErrorCode::InvalidArgument,
            reason: Cow::Borrowed("INVALID_FIELD"),
            message,
            violations,
            omitted_violations: omitted,
        }
    }

    /// An import row's refusal: the field (without `prefix`) and the reason, for an error
    /// about the row. Errors that are not about the row (the database is down, the deadline
    /// passed) are returned as they are: every later row would fail the same way, so the
    /// import ends.
    pub fn into_rejection(self, prefix: &str) -> Result<(String, String), ApiError> {
        match self.code {
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded | ErrorCode::Cancelled => {
                Err(self)
            }
            _ => Ok(match self.violations.first() {
                Some(v) => (v.field.trim_start_matches(prefix).to_owned(), v.description.clone()),
                None => (String::new(), self.message),
            }),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        let what = what.into();
        Self::new(ErrorCode::NotFound, "NOT_FOUND", format!("{what} not found"))
    }

    pub fn etag_mismatch() -> Self {
        Self::new(
            ErrorCode::FailedPrecondition,
            "ETAG_MISMATCH",
            "the resource changed since it was read; fetch it again and retry with the new etag",
        )
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, "PERMISSION_DENIED", message)
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, reason, message)
    }

    /// An internal failure. The cause is logged here and never sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "INTERNAL", "internal error")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, "UNAVAILABLE", message)
    }

    /// Rebuilds the error from a gRPC status received from another service (the gateway's
    /// direction), keeping its reason and field violations.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = ErrorCode::from_grpc(status.code());
        let details = status.get_error_details();
        let reason = details
            .error_info()
            .map(|info| Cow::Owned(info.reason.clone()))
            .unwrap_or(Cow::Borrowed(code.default_reason()));
        let violations = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        description: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let omitted_violations = details
            .error_info()
            .and_then(|info| info.metadata.get(OMITTED_KEY))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let message = if code == ErrorCode::Internal {
            "internal error".to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            reason,
            message,
            violations,
            omitted_violations,
        }
    }
}

/// Keeps the value of a successful parse of a request field, or names the field and why.
pub fn parse_field<T>(field: &str, parsed: Result<T, String>) -> Result<T, ApiError> {
    parsed.map_err(|reason| ApiError::invalid_field(field, reason))
}

/// A required message field of a request, or an error naming it.
pub fn required_field<'a, T>(field: &str, value: Option<&'a T>) -> Result<&'a T, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, "is required"))
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut metadata = std::collections::HashMap::<String, String>::new();
        if err.omitted_violations > 0 {
            metadata.insert(OMITTED_KEY.to_owned(), err.omitted_violations.to_string());
        }
        let mut details = ErrorDetails::with_error_info(err.reason.as_ref(), ERROR_DOMAIN, metadata);
        for violation in &err.violations {
            details.add_bad_request_violation(&violation.field, &violation.description);
        }
        tonic::Status::with_error_details(err.code.grpc(), err.message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc_except_http_only_ones() {
        for (code, grpc, _) in TABLE {
            if code.http_only() {
                continue;
            }
            assert_eq!(ErrorCode::from_grpc(*grpc), *code);
        }
    }

    #[test]
    fn status_keeps_reason_and_violations() {
        let err = ApiError::invalid_field("contact.emails[0].address", "not an email address");
        let status = tonic::Status::from(err.clone());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(ApiError::from_status(&status), err);
    }

    #[test]
    fn violations_are_capped_and_counted_through_grpc() {
        let mut violations = Violations::new("contact.");
        for i in 0..5000 {
            violations.add(
                format!("emails[{i}]"),
                format!("`{}` is not an email address", "x".repeat(10_000)),
            );
        }
        let err = violations.finish().expect_err("invalid");
        assert_eq!(err.violations.len(), MAX_VIOLATIONS);
        assert_eq!(err.omitted_violations, 5000 - MAX_VIOLATIONS);
        assert!(
            err.violations
                .iter()
                .all(|v| v.description.len() <= MAX_VIOLATION_TEXT + 3)
        );
        assert!(err.message.ends_with("and 4995 more invalid fields"), "{}", err.message);
        let status = tonic::Status::from(err.clone());
        assert!(
            status.details().len() < 8 * 1024,
            "fits in trailers: {} bytes",
            status.details().len()
        );
        assert_eq!(ApiError::from_status(&status), err);
    }

    #[test]
    fn internal_status_text_is_not_passed_on() {
        let status = tonic::Status::internal("duplicate key value violates unique constraint");
        assert_eq!(ApiError::from_status(&status).message, "internal error");
    }
}

/// Collects the field violations of one request, so that a client learns every problem at
/// once. Field paths are prefixed (for example `contact.`) to name the request field.
#[derive(Debug, Default)]
pub struct Violations {
    prefix: String,
    list: Vec<FieldViolation>,
    /// Violations past [`MAX_VIOLATIONS`], counted and not kept.
    omitted: usize,
}

impl Violations {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            list: Vec::new(),
            omitted: 0,
        }
    }

    pub fn add(&mut self, field: impl std::fmt::Display, description: impl Into<String>) {
        if self.list.len() >= MAX_VIOLATIONS {
            self.omitted += 1;
            return;
        }
        self.list.push(FieldViolation {
            field: format!("{}{field}", self.prefix),
            description: description.into(),
        });
    }

    /// Keeps the value of a successful parse, or records why it failed.
    pub fn check<T>(&mut self, field: impl std::fmt::Display, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(reason) => {
                self.add(field, reason);
                None
            }
        }
    }

    /// The items of list field `field`, or none when there are more than `max`: the length is
    /// checked before any item is looked at, so an oversized list costs no more than its count,
    /// and its items are not reported one by one.
    pub fn bounded<'a, T>(&mut self, field: impl std::fmt::Display, items: &'a [T], max: usize) -> &'a [T] {
        if self.within(field, items.len(), max) {
            items
        } else {
            &[]
        }
    }

    /// False (with a violation) when a collection of `len` items is over `max`.
    pub fn within(&mut self, field: impl std::fmt::Display, len: usize, max: usize) -> bool {
        if len > max {
            self.add(field, format!("at most {max} items, not {len}"));
            false
        } else {
            true
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Adds `other`'s violations (named by its own prefix) to these, so that a request whose
    /// parts are checked apart still answers with every problem at once.
    pub fn merge(&mut self, other: Violations) {
        for violation in other.list {
            if self.list.len() >= MAX_VIOLATIONS {
                self.omitted += 1;
            } else {
                self.list.push(violation);
            }
        }
        self.omitted += other.omitted;
    }

    /// Ok when nothing was recorded, else an INVALID_ARGUMENT listing every violation.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ApiError::counted_violations(self.list, self.omitted))
        }
    }
}
