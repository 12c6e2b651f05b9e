//! A user's in-app inbox: every user reads and marks their own notifications, never another's.

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::NotificationApp;
use crate::domain::{Notification, NotificationId};

/// Most notifications marked read in one call.
pub const MAX_MARKED: usize = 1000;

impl NotificationApp {
    pub async fn inbox(
        &self,
        who: &Principal,
        unread_only: bool,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<Notification>, ApiError> {
        let listed = self
            .store
            .notifications(&who.tenant, who.user.as_str(), unread_only, page.after, page.fetch())
            .await?;
        Ok(page.page(listed, |n| n.id))
    }

    pub async fn unread_count(&self, who: &Principal) -> Result<i64, ApiError> {
        Ok(self.store.unread_count(&who.tenant, who.user.as_str()).await?)
    }

    /// Marks the caller's notifications of `names` read; how many were unread.
    pub async fn mark_read(&self, who: &Principal, names: &[String]) -> Result<i64, ApiError> {
        let mut v = Violations::new("");
        if names.is_empty() {
            v.add("names", "at least one notification is required");
        }
        let mut ids = Vec::new();
        for (i, name) in v.bounded("names", names, MAX_MARKED).iter().enumerate() {
            if let Some(id) = v.check(format!("names[{i}]"), NotificationId::parse_name(name)) {
                ids.push(id.0);
            }
        }
        v.finish()?;
        Ok(self.store.mark_read(&who.tenant, who.user.as_str(), &ids).await?)
    }
}
