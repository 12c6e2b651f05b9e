//! The before/after report: every metric over any period, for the tenant, over two periods.

use crm_platform::{ApiError, Principal};

use super::AnalyticsApp;
use crate::domain::*;

/// One metric before and after.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub metric: &'static MetricInfo,
    pub before: Figure,
    pub after: Figure,
}

impl AnalyticsApp {
    /// Every metric over any period, for the caller's tenant, over `before` and `after`, with
    /// the data's watermarks.
    pub async fn before_after(
        &self,
        who: &Principal,
        before: Window,
        after: Window,
    ) -> Result<(Vec<Comparison>, Vec<Watermark>), ApiError> {
        let watermarks = self.watermarks_of(&who.tenant).await?;
        let mut comparisons = Vec::new();
        for info in CATALOGUE.iter().filter(|m| m.any_window()) {
            let tenant = |figures: Vec<Figure>| figures.into_iter().next().unwrap_or_default();
            comparisons.push(Comparison {
                metric: info,
                before: tenant(self.figures(&who.tenant, info.id, before, Grouping::Tenant).await?),
                after: tenant(self.figures(&who.tenant, info.id, after, Grouping::Tenant).await?),
            });
        }
        Ok((comparisons, watermarks))
    }
}
