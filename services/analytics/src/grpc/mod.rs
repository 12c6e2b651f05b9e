//! The gRPC servers of crm.analytics.v1: convert at the edge and delegate to
//! [`AnalyticsApp`] (the auth layer has authenticated the caller).

use crm_platform::error::Violations;
use crm_platform::identity::principal;
use crm_platform::time::timestamp;
use crm_proto::crm::analytics::v1 as pb;
use tonic::{Request, Response, Status};

use crate::app::{AnalyticsApp, Answer, IngestStatus, SEGMENT_PAGE, SEGMENT_PAGE_MAX, Segments, Tracked};
use crate::domain::*;

pub use pb::customer_value_service_server::CustomerValueServiceServer;
pub use pb::goal_service_server::GoalServiceServer;
pub use pb::ingest_service_server::IngestServiceServer;
pub use pb::metric_service_server::MetricServiceServer;
pub use pb::recommendation_service_server::RecommendationServiceServer;
pub use pb::report_service_server::ReportServiceServer;
pub use pb::settings_service_server::SettingsServiceServer;

/// The fully qualified names clients and health checks use.
pub const SERVICE_NAMES: &[&str] = &[
    "crm.analytics.v1.MetricService",
    "crm.analytics.v1.GoalService",
    "crm.analytics.v1.ReportService",
    "crm.analytics.v1.IngestService",
    "crm.analytics.v1.SettingsService",
    "crm.analytics.v1.CustomerValueService",
    "crm.analytics.v1.RecommendationService",
];

/// Implements every generated service trait of crm.analytics.v1.
#[derive(Clone)]
pub struct AnalyticsGrpc {
    app: AnalyticsApp,
}

impl AnalyticsGrpc {
    pub fn new(app: AnalyticsApp) -> Self {
        Self { app }
    }
}

fn grouping(g: pb::Grouping) -> Grouping {
    match g {
        pb::Grouping::Unspecified => Grouping::Tenant,
        pb::Grouping::Owner => Grouping::Owner,
        pb::Grouping::Pipeline => Grouping::Pipeline,
        pb::Grouping::Month => Grouping::Month,
        pb::Grouping::LeadSource => Grouping::LeadSource,
        pb::Grouping::Stage => Grouping::Stage,
        pb::Grouping::Campaign => Grouping::Campaign,
    }
}

fn grouping_pb(g: Grouping) -> pb::Grouping {
    match g {
        Grouping::Tenant => pb::Grouping::Unspecified,
        Grouping::Owner => pb::Grouping::Owner,
        Grouping::Pipeline => pb::Grouping::Pipeline,
        Grouping::Month => pb::Grouping::Month,
        Grouping::LeadSource => pb::Grouping::LeadSource,
        Grouping::Stage => pb::Grouping::Stage,
        Grouping::Campaign => pb::Grouping::Campaign,
    }
}

/// The prefix of a metric's resource name.
const METRICS: &str = "metrics/";

fn metric(info: &MetricInfo) -> pb::Metric {
    pb::Metric {
        name: format!("{METRICS}{}", info.key),
        display_name: info.display_name.to_owned(),
        formula: info.formula.to_owned(),
        version: info.version,
        unit: info.unit.to_owned(),
        groupings: info.groupings.iter().map(|g| grouping_pb(*g) as i32).collect(),
        parts: info.parts.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn watermark(w: &Watermark) -> pb::Watermark {
    pb::Watermark {
        source: w.source.clone(),
        sequence: w.sequence,
        commit_time: Some(timestamp(w.commit_time)),
    }
}

fn figure(f: Figure) -> pb::Figure {
    pb::Figure {
        group: f.group,
        value: f.value,
        count: f.count,
        parts: f.parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

/// The prefix of a goal's resource name.
const GOALS: &str = "goals/";

/// A goal as a request gives it on `today`, every wrong field named at once: its form and
/// the rules a goal keeps (a baseline already measured, a due date to come, a reachable
/// target).
fn goal_spec(g: Option<&pb::Goal>, today: chrono::NaiveDate) -> Result<GoalSpec, Status> {
    let mut v = Violations::new("goal.");
    let Some(g) = g else {
        v.add("", "is required");
        v.finish()?;
        return Err(Status::internal("a missing goal was not refused"));
    };
    let display_name = v.check(
        "display_name",
        crm_platform::text::check(&g.display_name, 200, false).and_then(|()| {
            let name = g.display_name.trim();
            if name.is_empty() {
                Err("is required".to_owned())
            } else {
                Ok(name.to_owned())
            }
        }),
    );
    let metric = v.check(
        "metric",
        g.metric
            .strip_prefix(METRICS)
            .ok_or_else(|| format!("`{}` is not a metric: use metrics/{{id}}", g.metric))
            .and_then(|key| MetricId::parse(key).map(|_| key.to_owned())),
    );
    let owner = if g.owner.is_empty() {
        Some(None)
    } else {
        v.check(
            "owner",
            crm_platform::UserId::parse(&g.owner).map(|u| Some(u.as_str().to_owned())),
        )
    };
    let baseline = v.check("baseline_period", Window::parse(&g.baseline_period));
    let target = match pb::TargetKind::try_from(g.target_kind) {
        Ok(pb::TargetKind::Absolute) => Some(Target::Absolute(g.target)),
        Ok(pb::TargetKind::Relative) => Some(Target::Relative(g.target)),
        _ => {
            v.add(
                "target_kind",
                "is required: TARGET_KIND_ABSOLUTE or TARGET_KIND_RELATIVE",
            );
            None
        }
    };
    let due = v.check("due_date", crm_platform::period::date(&g.due_date));
    let info = metric
        .as_deref()
        .and_then(|key| MetricId::parse(key).ok())
        .map(MetricId::info);
    for (field, reason) in crate::domain::goals::rules(info, baseline.map(|w| w.end), due, target, today) {
        v.add(field, reason);
    }
    v.finish()?;
    match (display_name, metric, owner, baseline, target, due) {
        (Some(display_name), Some(metric), Some(owner), Some(baseline), Some(target), Some(due)) => Ok(GoalSpec {
            display_name,
            metric,
            owner,
            baseline_start: baseline.start,
            baseline_end: baseline.end,
            target,
            due,
        }),
        _ => Err(Status::internal("checked fields are missing")),
    }
}

/// A window as the proto writes it: `YYYY-MM-DD..YYYY-MM-DD`, both days included.
fn window_text(w: Window) -> String {
    let last = w.end.pred_opt().unwrap_or(w.end);
    format!("{}..{}", w.start, last)
}

fn goal(t: Tracked) -> pb::Goal {
    let (g, p) = (t.goal, t.progress);
    pb::Goal {
        name: format!("{GOALS}{}", g.id),
        display_name: g.spec.display_name.clone(),
        metric: format!("{METRICS}{}", g.spec.metric),
        owner: g.spec.owner.clone().unwrap_or_default(),
        baseline_period: window_text(g.spec.baseline_window()),
        target_kind: match g.spec.target {
            Target::Absolute(_) => pb::TargetKind::Absolute,
            Target::Relative(_) => pb::TargetKind::Relative,
        } as i32,
        target: match g.spec.target {
            Target::Absolute(v) | Target::Relative(v) => v,
        },
        due_date: g.spec.due.to_string(),
        baseline: Some(pb::Baseline {
            value: g.baseline.value,
            count: g.baseline.count,
            formula_version: g.baseline.formula_version,
            watermarks: g.baseline.watermarks.iter().map(watermark).collect(),
            freeze_time: Some(timestamp(g.baseline.freeze_time)),
        }),
        progress: Some(pb::Progress {
            period: window_text(p.window),
            value: p.value,
            count: p.count,
            target_value: p.target_value,
            change: p.change,
            share_reached: p.share_reached,
            share_elapsed: p.share_elapsed,
            on_track: p.on_track,
        }),
        created_by: g.created_by,
        create_time: Some(timestamp(g.create_time)),
    }
}

fn answer(a: Answer) -> pb::QueryMetricResponse {
    pb::QueryMetricResponse {
        metric: Some(metric(a.metric)),
        start_time: Some(timestamp(a.window.start_time())),
        end_time: Some(timestamp(a.window.end_time())),
        figures: a.figures.into_iter().map(figure).collect(),
        watermarks: a.watermarks.iter().map(watermark).collect(),
    }
}

fn status(s: IngestStatus) -> pb::GetIngestStatusResponse {
    pb::GetIngestStatusResponse {
        watermarks: s.watermarks.iter().map(watermark).collect(),
        skipped: s
            .skipped
            .into_iter()
            .map(|s| pb::SkippedType {
                source: s.source,
                r#type: s.kind,
                count: s.count,
            })
            .collect(),
        parked: s
            .parked
            .into_iter()
            .map(|p| pb::ParkedEvent {
                source: p.source,
                sequence: p.sequence,
                r#type: p.kind,
                reason: p.reason,
                park_time: Some(timestamp(p.park_time)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::metric_service_server::MetricService for AnalyticsGrpc {
    async fn list_metrics(
        &self,
        request: Request<pb::ListMetricsRequest>,
    ) -> Result<Response<pb::ListMetricsResponse>, Status> {
        principal(&request)?;
        Ok(Response::new(pb::ListMetricsResponse {
            metrics: CATALOGUE.iter().map(metric).collect(),
        }))
    }

    async fn query_metric(
        &self,
        request: Request<pb::QueryMetricRequest>,
    ) -> Result<Response<pb::QueryMetricResponse>, Status> {
        let who = principal(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new("");
        let id = v.check(
            "name",
            r.name
                .strip_prefix(METRICS)
                .ok_or_else(|| format!("`{}` is not a metric: use metrics/{{id}}", r.name))
                .and_then(MetricId::parse),
        );
        let window = v.check("period", Window::parse(&r.period));
        let group = v.check(
            "group_by",
            pb::Grouping::try_from(r.group_by).map_err(|_| format!("{} is not a grouping", r.group_by)),
        );
        v.finish()?;
        let (Some(id), Some(window), Some(group)) = (id, window, group) else {
            return Err(Status::internal("checked fields are missing"));
        };
        let answer_ = self.app.query_metric(&who, id, window, grouping(group)).await?;
        Ok(Response::new(answer(answer_)))
    }
}

#[tonic::async_trait]
impl pb::goal_service_server::GoalService for AnalyticsGrpc {
    async fn create_goal(
        &self,
        request: Request<pb::CreateGoalRequest>,
    ) -> Result<Response<pb::CreateGoalResponse>, Status> {
        let who = principal(&request)?;
        // The role first: a caller who may not set goals learns nothing of the body.
        if !who.writes_all() {
            return Err(crm_platform::ApiError::permission_denied("goals are set by managers and admins").into());
        }
        let spec = goal_spec(request.get_ref().goal.as_ref(), self.app.clock().now().date_naive())?;
        let tracked = self.app.create_goal(&who, spec).await?;
        Ok(Response::new(pb::CreateGoalResponse {
            goal: Some(goal(tracked)),
        }))
    }

    async fn get_goal(&self, request: Request<pb::GetGoalRequest>) -> Result<Response<pb::GetGoalResponse>, Status> {
        let who = principal(&request)?;
        let name = &request.get_ref().name;
        let id = name
            .strip_prefix(GOALS)
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .ok_or_else(|| {
                crm_platform::ApiError::invalid_field("name", format!("`{name}` is not a goal: use goals/{{id}}"))
            })?;
        let tracked = self.app.get_goal(&who, id).await?;
        Ok(Response::new(pb::GetGoalResponse {
            goal: Some(goal(tracked)),
        }))
    }

    async fn list_goals(
        &self,
        request: Request<pb::ListGoalsRequest>,
    ) -> Result<Response<pb::ListGoalsResponse>, Status> {
        let who = principal(&request)?;
        let goals = self.app.list_goals(&who).await?;
        Ok(Response::new(pb::ListGoalsResponse {
            goals: goals.into_iter().map(goal).collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::report_service_server::ReportService for AnalyticsGrpc {
    async fn before_after(
        &self,
        request: Request<pb::BeforeAfterRequest>,
    ) -> Result<Response<pb::BeforeAfterResponse>, Status> {
        let who = principal(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new("");
        let before = v.check("before", Window::parse(&r.before));
        let after = v.check("after", Window::parse(&r.after));
        v.finish()?;
        let (Some(before), Some(after)) = (before, after) else {
            return Err(Status::internal("checked fields are missing"));
        };
        let (comparisons, watermarks) = self.app.before_after(&who, before, after).await?;
        Ok(Response::new(pb::BeforeAfterResponse {
            comparisons: comparisons
                .into_iter()
                .map(|c| pb::Comparison {
                    metric: Some(metric(c.metric)),
                    change: c.after.value.zip(c.before.value).map(|(a, b)| a - b),
                    before: Some(figure(c.before)),
                    after: Some(figure(c.after)),
                })
                .collect(),
            watermarks: watermarks.iter().map(watermark).collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::ingest_service_server::IngestService for AnalyticsGrpc {
    async fn get_ingest_status(
        &self,
        request: Request<pb::GetIngestStatusRequest>,
    ) -> Result<Response<pb::GetIngestStatusResponse>, Status> {
        let who = principal(&request)?;
        Ok(Response::new(status(self.app.ingest_status(&who).await?)))
    }
}

fn settings(s: Settings) -> pb::Settings {
    pb::Settings {
        name: "settings".into(),
        reporting_currency: s.reporting_currency,
        response_window_days: s.response_window_days,
        churn_window_days: s.churn_window_days,
        stall_days: s.stall_days,
        update_time: s.update_time.map(timestamp),
        updated_by: s.updated_by,
    }
}

fn exchange_rate(r: ExchangeRate) -> pb::ExchangeRate {
    pb::ExchangeRate {
        currency: r.currency,
        month: r.month,
        rate: r.rate,
        update_time: Some(timestamp(r.update_time)),
        updated_by: r.updated_by,
    }
}

fn amount(amount_minor: i64, currency: &str) -> pb::Amount {
    pb::Amount {
        amount_minor,
        currency_code: currency.to_owned(),
    }
}

/// The prefix of a customer's resource name.
const CUSTOMERS: &str = "customers/";

/// The id of a customer's resource name, given in `field`.
fn customer_id(field: &str, name: &str) -> Result<uuid::Uuid, crm_platform::ApiError> {
    name.strip_prefix(CUSTOMERS)
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            crm_platform::ApiError::invalid_field(
                field,
                format!("`{name}` is not a customer: use customers/{{id}}, the id of a company or a contact"),
            )
        })
}

/// The prefix of a product's resource name.
const PRODUCTS: &str = "products/";

fn pair(p: crate::domain::crosssell::Pair) -> pb::ProductPair {
    pb::ProductPair {
        from: format!("{PRODUCTS}{}", p.from),
        to: format!("{PRODUCTS}{}", p.to),
        customers: p.customers,
        support: p.support,
        confidence: p.confidence,
        lift: p.lift,
    }
}

#[tonic::async_trait]
impl pb::recommendation_service_server::RecommendationService for AnalyticsGrpc {
    async fn list_product_pairs(
        &self,
        request: Request<pb::ListProductPairsRequest>,
    ) -> Result<Response<pb::ListProductPairsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let (pairs, customers) = self.app.product_pairs(&who, r.min_support, r.min_confidence).await?;
        Ok(Response::new(pb::ListProductPairsResponse {
            pairs: pairs.into_iter().map(pair).collect(),
            customers,
        }))
    }

    async fn list_recommendations(
        &self,
        request: Request<pb::ListRecommendationsRequest>,
    ) -> Result<Response<pb::ListRecommendationsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let customer = customer_id("customer", &r.customer)?;
        let advice = self
            .app
            .recommendations(&who, customer, r.min_support, r.min_confidence)
            .await?;
        Ok(Response::new(pb::ListRecommendationsResponse {
            recommendations: advice
                .into_iter()
                .map(|a| pb::Recommendation {
                    product: format!("{PRODUCTS}{}", a.product),
                    confidence: a.confidence,
                    evidence: a.evidence.into_iter().map(pair).collect(),
                })
                .collect(),
        }))
    }
}

fn customer_value(v: CustomerValue, reporting: &str) -> pb::CustomerValue {
    pb::CustomerValue {
        name: format!("{CUSTOMERS}{}", v.customer),
        recency_days: v.recency_days,
        frequency: v.frequency,
        monetary: Some(amount(v.monetary, reporting)),
        unconverted: v.unconverted.iter().map(|(c, a)| amount(*a, c)).collect(),
        recency_score: i32::from(v.recency_score),
        frequency_score: i32::from(v.frequency_score),
        monetary_score: i32::from(v.monetary_score),
        segment: v.segment.to_owned(),
        last_win_time: Some(timestamp(v.last_win)),
        predicted_value: Some(amount(v.predicted, reporting)),
        prediction_basis: match &v.prediction {
            Predicted::Model { .. } => pb::PredictionBasis::Model,
            Predicted::Historical(_) => pb::PredictionBasis::Historical,
        } as i32,
        prediction_reason: match &v.prediction {
            Predicted::Model { .. } => String::new(),
            Predicted::Historical(reason) => reason.clone(),
        },
        expected_purchases: match v.prediction {
            Predicted::Model { expected_purchases } => expected_purchases,
            Predicted::Historical(_) => 0.0,
        },
    }
}

#[tonic::async_trait]
impl pb::customer_value_service_server::CustomerValueService for AnalyticsGrpc {
    async fn get_customer_value(
        &self,
        request: Request<pb::GetCustomerValueRequest>,
    ) -> Result<Response<pb::GetCustomerValueResponse>, Status> {
        let who = principal(&request)?;
        let id = customer_id("name", &request.get_ref().name)?;
        let (value, reporting) = self.app.customer_value(&who, id).await?;
        Ok(Response::new(pb::GetCustomerValueResponse {
            value: Some(customer_value(value, &reporting)),
        }))
    }

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let who = principal(&request)?;
        let r = request.get_ref();
        let page_size = match r.page_size {
            0 => SEGMENT_PAGE,
            n => usize::try_from(n)
                .ok()
                .filter(|n| *n <= SEGMENT_PAGE_MAX)
                .ok_or_else(|| crm_platform::ApiError::invalid_field("page_size", "must be from 0 to 1000"))?,
        };
        let segment = (!r.segment.is_empty()).then_some(r.segment.as_str());
        let Segments {
            segments,
            reporting_currency,
            customers,
            unconverted_customers,
        } = self.app.segments(&who, segment, page_size).await?;
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: segments
                .into_iter()
                .map(|(segment, customers, monetary)| pb::Segment {
                    segment: segment.to_owned(),
                    customers,
                    monetary: Some(amount(monetary, &reporting_currency)),
                })
                .collect(),
            customers: customers
                .into_iter()
                .map(|v| customer_value(v, &reporting_currency))
                .collect(),
            reporting_currency,
            unconverted_customers,
        }))
    }
}

#[tonic::async_trait]
impl pb::settings_service_server::SettingsService for AnalyticsGrpc {
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let who = principal(&request)?;
        Ok(Response::new(pb::GetSettingsResponse {
            settings: Some(settings(self.app.settings(&who.tenant).await?)),
        }))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::UpdateSettingsResponse>, Status> {
        let who = principal(&request)?;
        // The role first: a caller who may not change the settings learns nothing of the body.
        if !who.has_role(crm_platform::Role::Admin) {
            return Err(
                crm_platform::ApiError::permission_denied("the analytics settings are changed by admins").into(),
            );
        }
        let r = request.get_ref();
        let given = r.settings.clone().unwrap_or_default();
        let paths = crm_platform::resource::update_mask(r.update_mask.as_ref(), |path| match path {
            "reporting_currency" | "response_window_days" | "churn_window_days" | "stall_days" => Ok(path.to_owned()),
            _ => Err(
                "is not a setting you can change (one of: reporting_currency, response_window_days, \
                      churn_window_days, stall_days)"
                    .to_owned(),
            ),
        })?;
        if paths.is_empty() {
            // Nothing to change: the settings as they are.
            return Ok(Response::new(pb::UpdateSettingsResponse {
                settings: Some(settings(self.app.settings(&who.tenant).await?)),
            }));
        }
        let has = |field: &str| paths.iter().any(|p| p == field);
        let change = SettingsChange {
            reporting_currency: has("reporting_currency").then(|| given.reporting_currency.clone()),
            response_window_days: has("response_window_days").then_some(given.response_window_days),
            churn_window_days: has("churn_window_days").then_some(given.churn_window_days),
            stall_days: has("stall_days").then_some(given.stall_days),
        };
        Ok(Response::new(pb::UpdateSettingsResponse {
            settings: Some(settings(self.app.update_settings(&who, &change).await?)),
        }))
    }

    async fn set_exchange_rate(
        &self,
        request: Request<pb::SetExchangeRateRequest>,
    ) -> Result<Response<pb::SetExchangeRateResponse>, Status> {
        let who = principal(&request)?;
        // The role first: a caller who may not set rates learns nothing of the body.
        if !who.has_role(crm_platform::Role::Admin) {
            return Err(crm_platform::ApiError::permission_denied("exchange rates are set by admins").into());
        }
        let r = request.get_ref().exchange_rate.clone().unwrap_or_default();
        let rate = self.app.set_exchange_rate(&who, &r.currency, &r.month, r.rate).await?;
        Ok(Response::new(pb::SetExchangeRateResponse {
            exchange_rate: Some(exchange_rate(rate)),
        }))
    }

    async fn list_exchange_rates(
        &self,
        request: Request<pb::ListExchangeRatesRequest>,
    ) -> Result<Response<pb::ListExchangeRatesResponse>, Status> {
        let who = principal(&request)?;
        let rates = self.app.exchange_rates(&who.tenant).await?;
        Ok(Response::new(pb::ListExchangeRatesResponse {
            exchange_rates: rates.into_iter().map(exchange_rate).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crm_proto::prost::Name;

    use super::*;

    /// The values the proto lists for `field` of `message`.
    fn listed(message: &str, field: &str) -> Vec<String> {
        let message = crm_proto::json::descriptors()
            .expect("descriptors")
            .get_message_by_name(message)
            .expect("message");
        let field = message.get_field_by_name(field).expect("field");
        crm_proto::options::facts(&field)
            .rules
            .as_ref()
            .expect("rules")
            .write_values
            .clone()
    }

    /// The proto lists the catalogue's metrics (the OpenAPI document's enums come from it): a
    /// query names any of them, a goal those that take any period.
    #[test]
    fn the_proto_lists_the_catalogue() {
        let catalogue: Vec<&str> = CATALOGUE.iter().map(|m| m.key).collect();
        assert_eq!(listed(&pb::QueryMetricRequest::full_name(), "name"), catalogue);
        let goals: Vec<String> = CATALOGUE
            .iter()
            .filter(|m| m.any_window())
            .map(|m| format!("{METRICS}{}", m.key))
            .collect();
        assert_eq!(listed(&pb::Goal::full_name(), "metric"), goals);
    }
}
