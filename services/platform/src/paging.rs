//! List paging per AIP-158: a page size with a documented default and maximum, and an opaque
//! page token carrying a keyset cursor bound to the filter and order that produced it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page; larger requests are coerced to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Validates a requested page size: negative is invalid, 0 means the default, above the
/// maximum is coerced to the maximum.
pub fn page_size(requested: i32) -> Result<usize, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<C> {
    /// Fingerprint of the query the cursor belongs to.
    q: String,
    c: C,
}

/// Fingerprint of everything that shapes a listing (filter, order, parent, query).
pub fn query_fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
}

/// Encodes the cursor of the next page.
pub fn encode_token<C: Serialize>(cursor: &C, fingerprint: &str) -> String {
    let envelope = Envelope {
        q: fingerprint.to_owned(),
        c: cursor,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Decodes a page token; empty means the first page. A token from another query is refused.
pub fn decode_token<C: DeserializeOwned>(token: &str, fingerprint: &str) -> Result<Option<C>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid_field("page_token", "is not a token returned by this list");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let envelope: Envelope<C> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if envelope.q != fingerprint {
        return Err(ApiError::invalid_field(
            "page_token",
            "belongs to a different filter or order_by; start again without a page_token",
        ));
    }
    Ok(Some(envelope.c))
}

/// One page of a list and the token of the next (empty on the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// What a list request asks for: the page size, and the keyset cursor its page token carries,
/// bound to the shape (filter, order, parent) of the list that issued it.
#[derive(Debug, Clone)]
pub struct PageRequest<C> {
    /// Items per page.
    pub limit: usize,
    /// Where the page starts: after this cursor (none: the first page).
    pub after: Option<C>,
    fingerprint: String,
}

impl<C: Serialize + DeserializeOwned> PageRequest<C> {
    /// Checks a request's page size and token against the list's `shape`.
    pub fn parse(page_size_requested: i32, page_token: &str, shape: &[&str]) -> Result<Self, ApiError> {
        let fingerprint = query_fingerprint(shape);
        Ok(PageRequest {
            limit: page_size(page_size_requested)?,
            after: decode_token(page_token, &fingerprint)?,
            fingerprint,
        })
    }

    /// Rows to fetch: one over the page, so that the page knows whether more follow.
    pub fn fetch(&self) -> usize {
        self.limit.saturating_add(1)
    }

    /// The page of `listed` (fetched with [`fetch`](Self::fetch)): trimmed to the page size,
    /// with the token of the next page, made from the cursor of its last item, when more
    /// follow.
    pub fn page<T>(&self, mut listed: Vec<T>, cursor: impl FnOnce(&T) -> C) -> Page<T> {
        let next_page_token = if listed.len() > self.limit {
            listed.truncate(self.limit);
            listed
                .last()
                .map(|last| encode_token(&cursor(last), &self.fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page {
            items: listed,
            next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_fetched_one_over_and_its_token_leads_on() {
        let first = PageRequest::<u32>::parse(2, "", &["list"]).expect("first");
        assert_eq!(first.fetch(), 3);
        let page = first.page(vec![1_u32, 2, 3], |last| *last);
        assert_eq!(page.items, [1, 2]);
        let second = PageRequest::<u32>::parse(2, &page.next_page_token, &["list"]).expect("second");
        assert_eq!(second.after, Some(2));
        assert!(
            second.page(vec![3_u32], |last| *last).next_page_token.is_empty(),
            "the last page"
        );
        assert!(PageRequest::<u32>::parse(2, &page.next_page_token, &["other"]).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).expect("seven"), 7);
        assert_eq!(page_size(100_000).expect("coerced"), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_are_bound_to_their_query() {
        let a = query_fingerprint(&["owner = \"u1\"", "create_time desc"]);
        let b = query_fingerprint(&["owner = \"u2\"", "create_time desc"]);
        let token = encode_token(&(5_i64, "id".to_owned()), &a);
        assert_eq!(
            decode_token::<(i64, String)>(&token, &a).expect("same"),
            Some((5, "id".to_owned()))
        );
        assert!(decode_token::<(i64, String)>(&token, &b).is_err());
        assert!(decode_token::<(i64, String)>("garbage!", &a).is_err());
        assert_eq!(decode_token::<(i64, String)>("", &a).expect("first"), None);
    }
}
