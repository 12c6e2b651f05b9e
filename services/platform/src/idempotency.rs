//! Idempotent creates: a client's request id (gRPC `request_id`, REST `Idempotency-Key`),
//! checked one way for every service, scoped to the caller, with a fingerprint of what was
//! asked so that a reused id with a different request is refused rather than replayed.

use crm_proto::prost::Message;
use sha2::{Digest, Sha256};

use crate::{ApiError, UserId};

/// Longest request id, in characters.
pub const MAX_REQUEST_ID: usize = 128;

/// The idempotency key of one create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The caller and the client's request id: keys are scoped to the caller, as payment APIs
    /// scope them, so another user of the tenant who replays someone's key makes a request of
    /// their own and never reads what the first user created. (A user id has no whitespace, so
    /// the first space separates the two unambiguously.)
    pub key: String,
    /// SHA-256 of the request as sent.
    pub fingerprint: [u8; 32],
}

impl RequestKey {
    /// The key of `request` sent by `caller` with `request_id`; None without a request id.
    pub fn of(caller: &UserId, request_id: &str, request: &impl Message) -> Result<Option<RequestKey>, ApiError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        if request_id.chars().count() > MAX_REQUEST_ID || request_id.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "request_id",
                format!("must be at most {MAX_REQUEST_ID} characters, none of them a control character"),
            ));
        }
        Ok(Some(RequestKey {
            key: format!("{caller} {request_id}"),
            fingerprint: Sha256::digest(request.encode_to_vec()).into(),
        }))
    }

    /// The fingerprint in lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The answer to a request id used before for a different request: refused (400,
/// REQUEST_ID_REUSED), never the first request's result.
pub fn reused() -> crate::ApiError {
    crate::ApiError::new(
        crate::ErrorCode::InvalidArgument,
        "REQUEST_ID_REUSED",
        "request_id was already used for a different request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_to_the_caller() {
        let alice = UserId::parse("alice").expect("user");
        let bob = UserId::parse("bob").expect("user");
        let request = crm_proto::prost_types::Duration { seconds: 1, nanos: 0 };
        let a = RequestKey::of(&alice, "k-1", &request).expect("valid").expect("key");
        let b = RequestKey::of(&bob, "k-1", &request).expect("valid").expect("key");
        assert_ne!(a.key, b.key);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint_hex().len(), 64);
        assert!(RequestKey::of(&alice, "", &request).expect("valid").is_none());
        assert!(RequestKey::of(&alice, &"k".repeat(129), &request).is_err());
        assert!(RequestKey::of(&alice, "a\nb", &request).is_err());
    }
}
