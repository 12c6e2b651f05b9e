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
    /// The watermarks, and the tenant's skipped and parked events (managers and admins).
    pub async fn ingest_status(&self, who: &Principal) -> Result<IngestStatus, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "the ingest status is for managers and admins",
            ));
        }
        let watermarks = self.store.watermarks().await.map_err(|e| e.into_api())?;
        let (skipped, parked) = self
            .store
            .ingest_problems(&who.tenant)
            .await
            .map_err(|e| e.into_api())?;
        Ok(IngestStatus {
            watermarks,
            skipped,
            parked,
        })
    }
}
