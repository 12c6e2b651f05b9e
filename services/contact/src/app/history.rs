//! The audit trail of a contact or a company, newest first.

use crm_platform::paging::PageRequest;
use crm_platform::{ApiError, Principal};

use super::{ContactApp, Page};
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
        let page = PageRequest::<uuid::Uuid>::parse(size, token, &["history", &of.name()])?;
        let (before, limit) = (page.after, page.limit);
        let rows = self
            .store
            .list_history(&who.tenant, of, before, limit)
            .await
            .map_err(|err| err.into_api("history"))?;
        if rows.is_empty() && before.is_none() {
            return Err(ApiError::not_found(of.kind()));
        }
        Ok(page.page(rows, |last| last.id))
    }
}
