//! A user's in-app inbox: every user reads and marks their own notifications, never another's.

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::{NotificationApp, id_of};
use crate::domain::Notification;

/// Most notifications marked read in one call.
pub const MAX_MARKED: usize = 1000;

/// The prefix of a notification's resource name.
pub const NOTIFICATIONS: &str = "notifications";

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
            match id_of(&format!("names[{i}]"), name, NOTIFICATIONS) {
                Ok(id) => ids.push(id),
                Err(e) => v.add(
                    format!("names[{i}]"),
                    e.violations.first().map_or(e.message, |f| f.description.clone()),
                ),
            }
        }
        v.finish()?;
        Ok(self.store.mark_read(&who.tenant, who.user.as_str(), &ids).await?)
    }
}
