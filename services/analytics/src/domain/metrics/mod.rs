//! The metrics: the catalogue (each with one documented formula and its version) and the
//! formulas themselves, as pure functions of the facts (or of the sums of closes ingest keeps).
//! Both stores hand the same rows to the same functions, so a figure cannot differ between
//! backends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

mod adoption;
mod customers;
mod deals;

pub use adoption::adoption;
pub use customers::{
    campaign_response, data_freshness, handling_time, portfolio_continuity, profile_completeness, retention,
};
pub use deals::*;

/// How a metric's figures are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Tenant,
    Owner,
    Pipeline,
    Month,
    LeadSource,
    /// By the stage of a pipeline (`pipelines/{pipeline}/stages/{stage}`).
    Stage,
    /// By campaign.
    Campaign,
}

/// A metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricId {
    WinRate,
    CohortWinRate,
    SalesCycleDays,
    LeadConversion,
    ForecastAccuracy,
    QuotaAttainment,
    StageFunnel,
    OpenPipeline,
    PipelineVelocity,
    CampaignResponse,
    HandlingTime,
    DataFreshness,
    ProfileCompleteness,
    PortfolioContinuity,
    CustomerRetention,
    ChurnRate,
    Adoption,
}

/// What the catalogue says of a metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    pub id: MetricId,
    /// Its resource id (`win-rate` of `metrics/win-rate`).
    pub key: &'static str,
    pub display_name: &'static str,
    pub formula: &'static str,
    pub version: i32,
    pub unit: &'static str,
    pub groupings: &'static [Grouping],
    pub parts: &'static [&'static str],
}

/// The parts of customer retention and churn (one computation answers both).
const RETENTION_PARTS: &[&str] = &[
    "base",
    "retained",
    "churned",
    "new",
    "net_revenue_retention",
    "gross_revenue_retention",
];

/// Every metric.
pub const CATALOGUE: &[MetricInfo] = &[
    MetricInfo {
        id: MetricId::WinRate,
        key: "win-rate",
        display_name: "Win rate of the deals closed in the period",
        formula: "won / (won + lost), over the deals whose last close in the period (a stage \
                  transition to a won or lost stage, not undone by a reopening later in the \
                  period) lies in the period; month: the month of that close",
        version: 1,
        unit: "ratio",
        groupings: &[
            Grouping::Owner,
            Grouping::Pipeline,
            Grouping::Month,
            Grouping::LeadSource,
        ],
        parts: &["won", "lost"],
    },
    MetricInfo {
        id: MetricId::CohortWinRate,
        key: "cohort-win-rate",
        display_name: "Win rate of the deals created in the period",
        formula: "won / (won + lost), over the deals created in the period as they stand now; \
                  deals still open are counted in `open` and left out of the rate; month: the \
                  month of creation",
        version: 1,
        unit: "ratio",
        groupings: &[
            Grouping::Owner,
            Grouping::Pipeline,
            Grouping::Month,
            Grouping::LeadSource,
        ],
        parts: &["won", "lost", "open"],
    },
    MetricInfo {
        id: MetricId::SalesCycleDays,
        key: "sales-cycle-days",
        display_name: "Sales-cycle days of the deals won in the period",
        formula: "mean of (time of the win - time the deal was created) in days of 86400 s, \
                  over the deals the win rate counts as won in the period; `median` is their \
                  median (the mean of the middle two for an even count), each cycle taken as \
                  the middle of its bucket (whole seconds under 64 s, then 32 buckets per \
                  doubling: within 1/64 of the cycle)",
        version: 2,
        unit: "days",
        groupings: &[
            Grouping::Owner,
            Grouping::Pipeline,
            Grouping::Month,
            Grouping::LeadSource,
        ],
        parts: &["mean", "median"],
    },
    MetricInfo {
        id: MetricId::LeadConversion,
        key: "lead-conversion",
        display_name: "Share of the leads created in the period that became a deal",
        formula: "converted / created, over the leads created in the period (converted: the \
                  lead became a deal, at any time since); `to_customer` = leads whose deal is \
                  won / created; month: the month the lead was created",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Owner, Grouping::Month, Grouping::LeadSource],
        parts: &["created", "converted", "to_customer"],
    },
    MetricInfo {
        id: MetricId::ForecastAccuracy,
        key: "forecast-accuracy",
        display_name: "Accuracy of each salesperson's forecast call for a forecast period",
        formula: "per salesperson with a `commit` forecast for the period (a month or quarter): \
                  call = the last such submission before the period ended (`early_call`: before \
                  it began); actual = the amount of their deals the win rate counts as won in \
                  the period, in the call's currency (`unconverted`: won deals in another); \
                  value = max(0, 1 - |actual - call| / actual), `wape` = |actual - call| / \
                  actual, `bias` = (call - actual) / actual (above 0: over-forecast); no value \
                  when actual is 0. Tenant: value = max(0, 1 - sum |actual - call| / sum \
                  actual) over salespeople when their calls are in one currency (no value \
                  otherwise), with the mean, min, max and spread (population standard \
                  deviation) of their accuracies",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Owner],
        parts: &[
            "call",
            "early_call",
            "actual",
            "abs_error",
            "wape",
            "bias",
            "early_accuracy",
            "unconverted",
            "salespeople",
            "accuracy_mean",
            "accuracy_min",
            "accuracy_max",
            "accuracy_spread",
        ],
    },
    MetricInfo {
        id: MetricId::QuotaAttainment,
        key: "quota-attainment",
        display_name: "Quota attainment of each salesperson for a quota period",
        formula: "per salesperson with a quota for the period (a month or quarter): won / quota, \
                  won = the amount of their deals the win rate counts as won in the period, in \
                  the quota's currency (`unconverted`: won deals in another). Tenant: sum won / \
                  sum quota when every quota is in one currency (no value otherwise)",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Owner],
        parts: &["quota", "won", "unconverted", "salespeople"],
    },
    MetricInfo {
        id: MetricId::StageFunnel,
        key: "stage-funnel",
        display_name: "Stage funnel: what became of the deals that entered each stage in the period",
        formula: "over the stays in a stage that began in the period (a deal created, moved or \
                  reopened into the stage), each ended by the deal's next transition whenever it \
                  came: `entered` = stays; `advanced` = ended by a win or a move to a stage not \
                  earlier on the pipeline's board (as the pipeline orders its stages now); \
                  `moved_back` = ended by a move to an earlier stage; `lost` = ended by a loss; \
                  `still_in` = not ended; value = advanced / entered; `median_days` = median \
                  days (of 86400 s) from entry to the end, over the ended stays, each duration \
                  taken as the middle of its bucket (whole seconds under 64 s, then 32 buckets \
                  per doubling: within 1/64 of the duration); `position` = the stage's place on \
                  the board, from 0 (stage grouping); month: the UTC month of entry",
        version: 2,
        unit: "ratio",
        groupings: &[Grouping::Stage, Grouping::Owner, Grouping::Pipeline, Grouping::Month],
        parts: &[
            "entered",
            "advanced",
            "moved_back",
            "lost",
            "still_in",
            "median_days",
            "position",
        ],
    },
    MetricInfo {
        id: MetricId::OpenPipeline,
        key: "open-pipeline",
        display_name: "The open pipeline as it stood at the end of the period",
        formula: "the deals open at the end of the period (their last stage transition before \
                  that instant created, moved or reopened them), each in its stage then, with its \
                  owner and amount then (as of its last event before that instant): value = \
                  deals; `amount` = the sum of their amounts when they are in one currency; \
                  `currencies` = the number of currencies among them",
        version: 1,
        unit: "deals",
        groupings: &[Grouping::Stage, Grouping::Owner, Grouping::Pipeline],
        parts: &["amount", "currencies"],
    },
    MetricInfo {
        id: MetricId::PipelineVelocity,
        key: "pipeline-velocity",
        display_name: "Pipeline velocity: the amount the pipeline is expected to win per day",
        formula: "open x avg_won_amount x win_rate / cycle_days, with open = the deals open at the \
                  end of the period (as `open-pipeline` counts them), avg_won_amount = the mean \
                  amount of the deals the win rate counts as won in the period (in minor units, \
                  when they are in one currency: no value otherwise), win_rate and cycle_days \
                  (the mean) as `win-rate` and `sales-cycle-days` compute them for the period; \
                  no value when any of them is missing or cycle_days is 0. Owner: the owner of \
                  an open deal at the end of the period and of a won deal now",
        version: 1,
        unit: "minor units per day",
        groupings: &[Grouping::Owner, Grouping::Pipeline],
        parts: &["open", "won", "lost", "avg_won_amount", "win_rate", "cycle_days"],
    },
    MetricInfo {
        id: MetricId::CampaignResponse,
        key: "campaign-response",
        display_name: "Response rate of the contacts each campaign reached in the period",
        formula: "per campaign: reached = the contacts with an outbound interaction of the \
                  campaign in the period; responded = those of them with an inbound \
                  interaction of the same campaign at or after their first outbound one in the \
                  period and at most the response window later (a setting, 30 days unless an \
                  admin changes it); value = responded / reached. Tenant: over every (campaign, \
                  contact) reached",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Campaign],
        parts: &["reached", "responded"],
    },
    MetricInfo {
        id: MetricId::HandlingTime,
        key: "handling-time",
        display_name: "Service handling time of the support tickets of the period",
        formula: "over the support-ticket interactions that occurred in the period with a \
                  recorded duration: value = the mean duration in minutes; `median` (the mean \
                  of the middle two for an even count) and `p90` (nearest rank: the smallest \
                  duration with at least 90% of them at or below it); owner: the user who had \
                  the interaction; month: the month it occurred",
        version: 1,
        unit: "minutes",
        groupings: &[Grouping::Owner, Grouping::Month],
        parts: &["median", "p90"],
    },
    MetricInfo {
        id: MetricId::DataFreshness,
        key: "data-freshness",
        display_name: "Freshness of each salesperson's customer records",
        formula: "over the contacts and companies there at the end of the period (or now, \
                  for a period not over), each with its owner then: age = days since its last \
                  change before that instant; value = the share changed less than 90 days \
                  before it (`fresh`); `mean_days` and `median_days` of the ages",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Owner],
        parts: &["fresh", "mean_days", "median_days"],
    },
    MetricInfo {
        id: MetricId::ProfileCompleteness,
        key: "profile-completeness",
        display_name: "Completeness of the contacts' profiles",
        formula: "over the contacts not deleted, erased or merged, created before the end of \
                  the period, as they are now: the share with an email, a phone, a company, an \
                  owner and a consent answer (any channel); value = the mean of the five \
                  shares",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Owner],
        parts: &["email", "phone", "company", "owner", "consent"],
    },
    MetricInfo {
        id: MetricId::PortfolioContinuity,
        key: "portfolio-continuity",
        display_name: "Records still owned by users who have left (the target is 0)",
        formula: "a user has left when their last portfolio transfer before the end of the \
                  period moved records away from them (a portfolio reassignment in the contact \
                  or pipeline service); value = the contacts, companies, open deals and \
                  unconverted leads such users own now; `departed_users`; `transfers` = the \
                  records transferred in the period (owner: the user they moved from)",
        version: 1,
        unit: "records",
        groupings: &[Grouping::Owner],
        parts: &["contacts", "companies", "deals", "leads", "departed_users", "transfers"],
    },
    MetricInfo {
        id: MetricId::CustomerRetention,
        key: "customer-retention",
        display_name: "Customer (logo) retention over the period, by cohort",
        formula: "a customer (a deal's company, else its contact) is active at an instant when \
                  its first won deal came before it, its lifecycle stage then is not CHURNED, \
                  and it won a deal in the churn window before it (a setting, 365 days unless \
                  an admin changes it) or its lifecycle stage then is CUSTOMER. base = the \
                  customers active at the period's start; retained = those of them active at \
                  its end; value = retained / base; `net_revenue_retention` = what the base won \
                  in the churn window before the end / in the churn window before the start, \
                  `gross_revenue_retention` the same with each customer's later amount capped \
                  at its earlier one (both when the amounts are in one currency); `new` = \
                  customers whose first win is in the period; month: the cohort, the month of \
                  the customer's first won deal",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Month],
        parts: RETENTION_PARTS,
    },
    MetricInfo {
        id: MetricId::ChurnRate,
        key: "churn-rate",
        display_name: "Customer churn over the period, by cohort",
        formula: "churned / base, with base and churned (base - retained) as \
                  `customer-retention` counts them",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Month],
        parts: RETENTION_PARTS,
    },
    MetricInfo {
        id: MetricId::Adoption,
        key: "crm-adoption",
        display_name: "CRM adoption: breadth, frequency and depth of use",
        formula: "from the authenticated requests each service counts per user, area (the gRPC \
                  service called) and day: active users = the users with a request in the \
                  period; users seen = the users with a request before its end; value = active / \
                  seen (breadth); `requests_per_active_user` and `changes_per_active_user` \
                  (requests that are not reads) over the period (frequency); \
                  `areas_per_active_user` = the mean number of areas each active user used \
                  (depth); month: each month of the period, its users seen being those before \
                  the month's end",
        version: 1,
        unit: "ratio",
        groupings: &[Grouping::Month],
        parts: &[
            "active_users",
            "users_seen",
            "requests_per_active_user",
            "changes_per_active_user",
            "areas_per_active_user",
        ],
    },
];

impl MetricInfo {
    /// Whether it is computed over any period (not only over forecast periods).
    pub fn any_window(&self) -> bool {
        !matches!(self.id, MetricId::ForecastAccuracy | MetricId::QuotaAttainment)
    }
}

impl MetricId {
    pub fn info(self) -> &'static MetricInfo {
        CATALOGUE.iter().find(|m| m.id == self).unwrap_or(&CATALOGUE[0])
    }

    /// The metric of a resource id (`win-rate`).
    pub fn parse(key: &str) -> Result<MetricId, String> {
        CATALOGUE.iter().find(|m| m.key == key).map(|m| m.id).ok_or_else(|| {
            let known: Vec<&str> = CATALOGUE.iter().map(|m| m.key).collect();
            format!("no metric `{key}`: the metrics are {}", known.join(", "))
        })
    }
}

/// One figure of a metric: for the tenant (group "") or one group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figure {
    pub group: String,
    /// None when nothing in the period defines it.
    pub value: Option<f64>,
    /// The records behind it.
    pub count: i64,
    pub parts: BTreeMap<&'static str, f64>,
}

/// The month (`2026-11`) of a time, in UTC.
pub(crate) fn month(time: DateTime<Utc>) -> String {
    time.format("%Y-%m").to_string()
}

#[allow(clippy::cast_precision_loss)]
pub(crate) fn ratio(numerator: i64, denominator: i64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// The mean of `values` (None for none).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The median of `values` (the mean of the middle two for an even count; None for none).
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Milliseconds in a day of 86400 s.
pub(crate) const MS_PER_DAY: f64 = 86_400_000.0;

/// Days of 86400 s from `from` to `to`.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / MS_PER_DAY
}

/// The sum (saturating) of `amounts` when they are all in one currency, and the number of
/// currencies among them.
pub(crate) fn one_currency_sum<'a>(amounts: impl Iterator<Item = (&'a str, i64)>) -> (Option<i64>, usize) {
    let mut currencies: Vec<&str> = Vec::new();
    let mut sum = 0i64;
    for (currency, amount) in amounts {
        if !currencies.contains(&currency) {
            currencies.push(currency);
        }
        sum = sum.saturating_add(amount);
    }
    ((currencies.len() <= 1).then_some(sum), currencies.len())
}

/// A rate of `hits` among `hits + misses`, with its parts.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn rate_figure(hits: i64, misses: i64, parts: BTreeMap<&'static str, i64>) -> Figure {
    Figure {
        group: String::new(),
        value: ratio(hits, hits.saturating_add(misses)),
        count: hits.saturating_add(misses),
        parts: parts.into_iter().map(|(k, v)| (k, v as f64)).collect(),
    }
}

/// The figures of each group, in the group's order; for the tenant as a whole, exactly one
/// (an empty period gives a figure with no value and a count of 0).
pub(crate) fn figures<T: Default>(
    grouping: Grouping,
    groups: BTreeMap<String, T>,
    figure: impl Fn(T) -> Figure,
) -> Vec<Figure> {
    if grouping == Grouping::Tenant && groups.is_empty() {
        return vec![figure(T::default())];
    }
    groups
        .into_iter()
        .map(|(group, value)| Figure { group, ..figure(value) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_metrics_name_the_valid_ones() {
        assert_eq!(MetricId::parse("win-rate"), Ok(MetricId::WinRate));
        let err = MetricId::parse("win-ratio").expect_err("unknown");
        assert!(err.contains("win-rate") && err.contains("lead-conversion"), "{err}");
    }
}
