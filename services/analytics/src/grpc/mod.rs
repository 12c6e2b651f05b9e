//! The gRPC servers of crm.analytics.v1: convert at the edge and delegate to
//! [`AnalyticsApp`] (the auth layer has authenticated the caller).

use crm_platform::error::Violations;
use crm_platform::identity::principal;
use crm_platform::time::timestamp;
use crm_proto::crm::analytics::v1 as pb;
use tonic::{Request, Response, Status};

use crate::app::{AnalyticsApp, Answer, IngestStatus};
use crate::domain::*;

pub use pb::ingest_service_server::IngestServiceServer;
pub use pb::metric_service_server::MetricServiceServer;

/// The fully qualified names clients and health checks use.
pub const SERVICE_NAMES: &[&str] = &["crm.analytics.v1.MetricService", "crm.analytics.v1.IngestService"];

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
    }
}

fn grouping_pb(g: Grouping) -> pb::Grouping {
    match g {
        Grouping::Tenant => pb::Grouping::Unspecified,
        Grouping::Owner => pb::Grouping::Owner,
        Grouping::Pipeline => pb::Grouping::Pipeline,
        Grouping::Month => pb::Grouping::Month,
        Grouping::LeadSource => pb::Grouping::LeadSource,
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

fn answer(a: Answer) -> pb::QueryMetricResponse {
    pb::QueryMetricResponse {
        metric: Some(metric(a.metric)),
        start_time: Some(timestamp(a.window.start_time())),
        end_time: Some(timestamp(a.window.end_time())),
        figures: a
            .figures
            .into_iter()
            .map(|f| pb::Figure {
                group: f.group,
                value: f.value,
                count: f.count,
                parts: f.parts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            })
            .collect(),
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
impl pb::ingest_service_server::IngestService for AnalyticsGrpc {
    async fn get_ingest_status(
        &self,
        request: Request<pb::GetIngestStatusRequest>,
    ) -> Result<Response<pb::GetIngestStatusResponse>, Status> {
        let who = principal(&request)?;
        Ok(Response::new(status(self.app.ingest_status(&who).await?)))
    }
}

#[cfg(test)]
mod tests {
    use crm_proto::prost::Name;

    use super::*;

    /// The proto lists the catalogue's metrics (the OpenAPI document's path enum comes from it):
    /// the two must name the same metrics.
    #[test]
    fn the_proto_lists_the_catalogue() {
        let request = crm_proto::json::descriptors()
            .expect("descriptors")
            .get_message_by_name(&pb::QueryMetricRequest::full_name())
            .expect("QueryMetricRequest");
        let name = request.get_field_by_name("name").expect("name");
        let listed = &crm_proto::options::facts(&name)
            .rules
            .as_ref()
            .expect("rules")
            .write_values;
        let catalogue: Vec<&str> = CATALOGUE.iter().map(|m| m.key).collect();
        assert_eq!(listed, &catalogue);
    }
}
