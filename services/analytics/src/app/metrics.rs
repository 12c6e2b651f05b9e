//! Metric queries: the caller's tenant only; a rep's or viewer's figures per owner are their
//! own, the tenant's aggregates are everyone's.

use crm_platform::{ApiError, Principal, TenantId};

use super::AnalyticsApp;
use crate::domain::metrics::{
    adoption, campaign_response, cohort_win_rate, data_freshness, forecast_accuracy, handling_time, lead_conversion,
    open_pipeline, pipeline_velocity, portfolio_continuity, profile_completeness, quota_attainment, retention,
    sales_cycle_days, stage_funnel, win_rate,
};
use crate::domain::*;
use crate::store::Interactions;

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
        let watermarks = self.watermarks_of(&who.tenant).await?;
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
            MetricId::WinRate => win_rate(&self.store.close_cells(tenant, window).await?, grouping),
            MetricId::SalesCycleDays => sales_cycle_days(&self.store.cycles(tenant, window, grouping).await?, grouping),
            MetricId::CohortWinRate => {
                let deals = self.store.deals_created(tenant, window).await?;
                cohort_win_rate(&deals, grouping)
            }
            MetricId::LeadConversion => {
                let leads = self.store.leads_created(tenant, window).await?;
                lead_conversion(&leads, grouping)
            }
            MetricId::StageFunnel => stage_funnel(&self.store.stays(tenant, window, grouping).await?, grouping),
            MetricId::OpenPipeline => {
                let open = self.store.open_at(tenant, window.end_time()).await?;
                open_pipeline(&open, grouping)
            }
            MetricId::PipelineVelocity => {
                let open = self.store.open_at(tenant, window.end_time()).await?;
                let cells = self.store.close_cells(tenant, window).await?;
                pipeline_velocity(&open, &cells, grouping)
            }
            MetricId::CampaignResponse => {
                let window_after = self.settings(tenant).await?.response_window();
                let (start, end) = (window.start_time(), window.end_time());
                let interactions = self
                    .store
                    .interactions(tenant, Interactions::OfCampaigns, start, end + window_after)
                    .await?;
                campaign_response(&interactions, start, end, window_after, grouping)
            }
            MetricId::HandlingTime => {
                let tickets = self
                    .store
                    .interactions(
                        tenant,
                        Interactions::OfKind("support_ticket"),
                        window.start_time(),
                        window.end_time(),
                    )
                    .await?;
                handling_time(&tickets, grouping)
            }
            MetricId::DataFreshness => {
                let as_of = window.end_time().min(self.clock.now());
                let changes = self.store.last_changes(tenant, as_of).await?;
                data_freshness(&changes, as_of, grouping)
            }
            MetricId::ProfileCompleteness => {
                let counts = self.store.profile_counts(tenant, window.end_time()).await?;
                profile_completeness(&counts, grouping)
            }
            MetricId::PortfolioContinuity => {
                let behind = self.store.left_behind(tenant, window.end_time()).await?;
                let transfers = self.store.transfers(tenant, window).await?;
                portfolio_continuity(&behind, &transfers, grouping)
            }
            MetricId::CustomerRetention | MetricId::ChurnRate => {
                let churn_window = self.settings(tenant).await?.churn_window();
                let end = window.end_time().min(self.clock.now());
                let wins = self.store.customer_wins(tenant, end).await?;
                let lifecycles = self.store.lifecycles(tenant, end).await?;
                retention(
                    &wins,
                    &lifecycles,
                    window.start_time(),
                    end,
                    churn_window,
                    grouping,
                    metric == MetricId::ChurnRate,
                )
            }
            MetricId::Adoption => {
                let (start, end) = (window.start_time().date_naive(), window.end_time().date_naive());
                let usage = self.store.usage(tenant, start, end).await?;
                let first_use = self.store.first_use(tenant, end).await?;
                adoption(&usage, &first_use, start, end, grouping)
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
                let cells = self.store.close_cells(tenant, window).await?;
                let period = period.to_string();
                if metric == MetricId::ForecastAccuracy {
                    let forecasts = self.store.forecasts(tenant, &period).await?;
                    forecast_accuracy(&forecasts, &cells, window.start_time(), window.end_time(), grouping)
                } else {
                    let quotas = self.store.quotas(tenant, &period).await?;
                    quota_attainment(&quotas, &cells, grouping)
                }
            }
        })
    }
}
