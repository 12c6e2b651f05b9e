//! Deliveries and their attempts: admins read them and send one again.

use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, ErrorCode, Principal};
use uuid::Uuid;

use super::{NotificationApp, ensure_admin};
use crate::domain::{Attempt, Delivery};

impl NotificationApp {
    pub async fn deliveries(&self, who: &Principal, page: &PageRequest<Uuid>) -> Result<Page<Delivery>, ApiError> {
        ensure_admin(who, "deliveries")?;
        let listed = self.store.deliveries(&who.tenant, page.after, page.fetch()).await?;
        Ok(page.page(listed, |d| d.id))
    }

    pub async fn attempts(&self, who: &Principal, delivery: Uuid) -> Result<Vec<Attempt>, ApiError> {
        ensure_admin(who, "deliveries")?;
        if self.store.delivery(&who.tenant, delivery).await?.is_none() {
            return Err(ApiError::not_found("delivery"));
        }
        Ok(self.store.attempts(&who.tenant, delivery).await?)
    }

    /// Sends a delivery again now, whatever its state, under the same `webhook-id`; not one
    /// whose endpoint was deleted.
    pub async fn redeliver(&self, who: &Principal, delivery: Uuid) -> Result<Delivery, ApiError> {
        ensure_admin(who, "deliveries")?;
        let Some(sent) = self.store.redeliver(&who.tenant, delivery, self.clock.now()).await? else {
            return Err(match self.store.delivery(&who.tenant, delivery).await? {
                Some(_) => ApiError::new(
                    ErrorCode::FailedPrecondition,
                    "ENDPOINT_DELETED",
                    "the delivery's webhook endpoint was deleted: it cannot be sent again",
                ),
                None => ApiError::not_found("delivery"),
            });
        };
        self.due.notify_one();
        Ok(sent)
    }
}
