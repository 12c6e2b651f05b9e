//! The audit trail of a contact or a company, newest first.

use crm_platform::paging::{decode_token, encode_token, page_size, query_fingerprint};
use crm_platform::{ApiError, Principal};

use super::{ContactApp, Page, page_of};
use crate::domain::*;

impl ContactApp {
    /// The audit trail of a contact or company, newest first. Every role that may read the
    /// record may read its history; the trail outlives a deleted record.
    pub async fn list_history(
        &self,
        who: &Principal,
        of: Audited,
        size: i32,
        token: &str,
    ) -> Result<Page<HistoryEntry>, ApiError> {
        let limit = page_size(size)?;
        let fingerprint = query_fingerprint(&["history", &of.name()]);
        let before = decode_token::<uuid::Uuid>(token, &fingerprint)?;
        let rows = self
            .store
            .list_history(&who.tenant, of, before, limit)
            .await
            .map_err(|err| err.into_api("history"))?;
        if rows.is_empty() && before.is_none() {
            return Err(ApiError::not_found(of.kind()));
        }
        Ok(page_of(rows, limit, |last| encode_token(&last.id, &fingerprint)))
    }
}
