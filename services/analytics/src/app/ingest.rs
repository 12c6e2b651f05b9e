//! The state of ingest: how far each feed has been applied, and what the caller's tenant had
//! skipped and parked.

use crm_platform::{ApiError, Principal};

use super::AnalyticsApp;
use crate::domain::{Parked, Skipped, Watermark};

/// What ingest has done.
#[derive(Debug, Clone)]
pub struct IngestStatus {
    pub watermarks: Vec<Watermark>,
    pub skipped: Vec<Skipped>,
    pub parked: Vec<Parked>,
}

impl AnalyticsApp {
    /// The watermarks of the consumers that apply `tenant`'s events: each feed's, or the
    /// partition of it the tenant is in.
    pub(crate) async fn watermarks_of(&self, tenant: &crm_platform::TenantId) -> Result<Vec<Watermark>, ApiError> {
        let mut watermarks = self.store.watermarks().await?;
        watermarks.retain(|w| crate::ingest::covers(&w.consumer, tenant.as_str()));
        Ok(watermarks)
    }

    /// The watermarks, and the tenant's skipped and parked events (managers and admins).
    pub async fn ingest_status(&self, who: &Principal) -> Result<IngestStatus, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "the ingest status is for managers and admins",
            ));
        }
        let watermarks = self.watermarks_of(&who.tenant).await?;
        let (skipped, parked) = self.store.ingest_problems(&who.tenant).await?;
        Ok(IngestStatus {
            watermarks,
            skipped,
            parked,
        })
    }
}
