//! Metric queries: the caller's tenant only; a rep's or viewer's figures per owner are their
//! own, the tenant's aggregates are everyone's.

use crm_platform::{ApiError, Principal, TenantId};

use super::AnalyticsApp;
use crate::domain::metrics::{
    cohort_win_rate, forecast_accuracy, lead_conversion, open_pipeline, pipeline_velocity, quota_attainment,
    sales_cycle_days, stage_funnel, win_rate,
};
use crate::domain::*;

/// The answer to a metric query.
#[derive(Debug, Clone)]
pub struct Answer {
    pub metric: &'static MetricInfo,
    pub window: Window,
    pub figures: Vec<Figure>,
    pub watermarks: Vec<Watermark>,
}

impl AnalyticsApp {
    /// `metric` over `window`, split by `grouping`.
    pub async fn query_metric(
        &self,
        who: &Principal,
        metric: MetricId,
        window: Window,
        grouping: Grouping,
    ) -> Result<Answer, ApiError> {
        let info = metric.info();
        if grouping != Grouping::Tenant && !info.groupings.contains(&grouping) {
            return Err(ApiError::invalid_field(
                "group_by",
                format!("{} cannot be grouped this way", info.key),
            ));
        }
        // The watermark is read first: the figures include at least what it says.
        let watermarks = self.store.watermarks().await.map_err(|e| e.into_api())?;
        let mut figures = self.figures(&who.tenant, metric, window, grouping).await?;
        if grouping == Grouping::Owner && !who.writes_all() {
            figures.retain(|f| f.group == who.user.as_str());
        }
        Ok(Answer {
            metric: info,
            window,
            figures,
            watermarks,
        })
    }

    /// The figures of `metric` over `window` for `tenant`, split by `grouping`.
    pub(crate) async fn figures(
        &self,
        tenant: &TenantId,
        metric: MetricId,
        window: Window,
        grouping: Grouping,
    ) -> Result<Vec<Figure>, ApiError> {
        let info = metric.info();
        Ok(match metric {
            MetricId::WinRate | MetricId::SalesCycleDays => {
                let closes = self.store.closes(tenant, window).await.map_err(|e| e.into_api())?;
                if metric == MetricId::WinRate {
                    win_rate(&closes, grouping)
                } else {
                    sales_cycle_days(&closes, grouping)
                }
            }
            MetricId::CohortWinRate => {
                let deals = self
                    .store
                    .deals_created(tenant, window)
                    .await
                    .map_err(|e| e.into_api())?;
                cohort_win_rate(&deals, grouping)
            }
            MetricId::LeadConversion => {
                let leads = self
                    .store
                    .leads_created(tenant, window)
                    .await
                    .map_err(|e| e.into_api())?;
                lead_conversion(&leads, grouping)
            }
            MetricId::StageFunnel => {
                let visits = self
                    .store
                    .stage_visits(tenant, window)
                    .await
                    .map_err(|e| e.into_api())?;
                let stages = self.store.stages(tenant).await.map_err(|e| e.into_api())?;
                stage_funnel(&visits, &stages, grouping)
            }
            MetricId::OpenPipeline => {
                let open = self
                    .store
                    .open_at(tenant, window.end_time())
                    .await
                    .map_err(|e| e.into_api())?;
                open_pipeline(&open, grouping)
            }
            MetricId::PipelineVelocity => {
                let open = self
                    .store
                    .open_at(tenant, window.end_time())
                    .await
                    .map_err(|e| e.into_api())?;
                let closes = self.store.closes(tenant, window).await.map_err(|e| e.into_api())?;
                pipeline_velocity(&open, &closes, grouping)
            }
            MetricId::ForecastAccuracy | MetricId::QuotaAttainment => {
                let period = window.period().ok_or_else(|| {
                    ApiError::invalid_field(
                        "period",
                        format!(
                            "{} is over a forecast period: a month (YYYY-MM) or a quarter (YYYY-Qn)",
                            info.key
                        ),
                    )
                })?;
                let closes = self.store.closes(tenant, window).await.map_err(|e| e.into_api())?;
                let period = period.to_string();
                if metric == MetricId::ForecastAccuracy {
                    let forecasts = self.store.forecasts(tenant, &period).await.map_err(|e| e.into_api())?;
                    forecast_accuracy(&forecasts, &closes, window.start_time(), window.end_time(), grouping)
                } else {
                    let quotas = self.store.quotas(tenant, &period).await.map_err(|e| e.into_api())?;
                    quota_attainment(&quotas, &closes, grouping)
                }
            }
        })
    }
}
