//! Traces as an OpenTelemetry collector receives them: `crm serve` exports over OTLP to a
//! collector this test runs, and every span of a request is named and marked by the HTTP and
//! RPC conventions (kind, status, route, status code), in one trace with the effects of the
//! events it caused.

use std::sync::{Arc, Mutex};

use crm_platform::Role;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Attr;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::json;

use crate::support::{Rest, Suite};

/// An OTLP/gRPC trace collector keeping every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("spans");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let server = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (collector, endpoint)
    }

    /// Waits until the spans of `trace` include one named `name`, and returns that trace's spans.
    async fn trace_with(&self, trace: &[u8], name: &str) -> Vec<Span> {
        crate::pipeline::eventually(
            &format!("a span `{name}` in the trace"),
            || async {
                let spans = self.spans.lock().expect("spans");
                spans
                    .iter()
                    .filter(|s| s.trace_id == trace)
                    .cloned()
                    .collect::<Vec<_>>()
            },
            |spans| spans.iter().any(|s| s.name == name),
        )
        .await
    }
}

/// A trace id as a traceparent writes it.
fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Attr> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn status(span: &Span) -> StatusCode {
    span.status.as_ref().map_or(StatusCode::Unset, |s| {
        StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset)
    })
}

fn named<'a>(spans: &'a [Span], name: &str, kind: SpanKind) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name && s.kind == kind as i32)
        .unwrap_or_else(|| {
            let seen: Vec<(String, i32)> = spans.iter().map(|s| (s.name.clone(), s.kind)).collect();
            panic!("no {kind:?} span `{name}` among {seen:?}")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_follow_the_http_and_rpc_conventions_and_keep_effects_in_the_trace() {
    let (collector, endpoint) = Collector::start().await;
    let suite = Suite::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let api = Rest::as_user(&suite.rest, "traced", "tia", Role::Manager);

    // A 404: the server span is not an error (the client asked for nothing), the gateway's
    // client call is (it did not get what it asked for).
    let trace: [u8; 16] = *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36";
    let trace_hex = hex(&trace);
    let response = api
        .request(
            reqwest::Method::GET,
            "/v1/contacts/01930000-0000-7000-8000-000000000000",
        )
        .header("traceparent", format!("00-{trace_hex}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 404);
    let rpc = "crm.contact.v1.ContactService/GetContact";
    let spans = collector.trace_with(&trace, "GET /v1/contacts/{id}").await;
    let http = named(&spans, "GET /v1/contacts/{id}", SpanKind::Server);
    assert_eq!(attribute(http, "http.response.status_code"), Some(Attr::IntValue(404)));
    assert_eq!(
        attribute(http, "http.route"),
        Some(Attr::StringValue("/v1/contacts/{id}".into()))
    );
    assert_eq!(
        attribute(http, "http.request.method"),
        Some(Attr::StringValue("GET".into()))
    );
    assert_eq!(status(http), StatusCode::Unset);
    let spans = collector.trace_with(&trace, rpc).await;
    let client = named(&spans, rpc, SpanKind::Client);
    assert_eq!(attribute(client, "rpc.grpc.status_code"), Some(Attr::IntValue(5)));
    assert_eq!(attribute(client, "rpc.system"), Some(Attr::StringValue("grpc".into())));
    assert_eq!(status(client), StatusCode::Error);
    let server = named(&spans, rpc, SpanKind::Server);
    assert_eq!(attribute(server, "rpc.grpc.status_code"), Some(Attr::IntValue(5)));
    assert_eq!(
        attribute(server, "rpc.method"),
        Some(Attr::StringValue("GetContact".into()))
    );
    assert_eq!(status(server), StatusCode::Unset);
    assert_eq!(
        server.parent_span_id, client.span_id,
        "the server span is the client call's child"
    );

    // A merge: the pipeline applies it in the merge request's trace, and the deal update it
    // makes is published in that trace too.
    let pipeline = crate::pipeline::pipeline(&api).await;
    let merged = crate::pipeline::contact(&api, "Merged", "merged@traces.example").await;
    let survivor = crate::pipeline::contact(&api, "Survivor", "survivor@traces.example").await;
    let (status_code, deal) = api
        .post(
            "/v1/deals",
            json!({"displayName": "Traced", "pipeline": pipeline["name"], "contact": merged["name"],
                   "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status_code, 201, "{deal}");
    let merge_trace: [u8; 16] = *b"\x0a\xf7\x65\x19\x16\xcd\x43\xdd\x84\x48\xeb\x21\x1c\x80\x31\x9c";
    let merge_hex = hex(&merge_trace);
    let response = api
        .request(
            reqwest::Method::POST,
            &format!("/v1/{}:merge", survivor["name"].as_str().expect("name")),
        )
        .header("traceparent", format!("00-{merge_hex}-b7ad6b7169203331-01"))
        .json(&json!({"merged": [merged["name"]]}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    let spans = collector
        .trace_with(&merge_trace, "apply crm.contact.v1.ContactsMerged")
        .await;
    named(&spans, "apply crm.contact.v1.ContactsMerged", SpanKind::Consumer);
    let events = crate::pipeline::pipeline_events(&suite.grpc, "traced", 3).await;
    let updated = events
        .iter()
        .find(|e| e.r#type == "crm.pipeline.v1.DealUpdated" && e.subject == deal["name"].as_str().unwrap_or_default())
        .unwrap_or_else(|| {
            panic!(
                "no DealUpdated among {:?}",
                events.iter().map(|e| &e.r#type).collect::<Vec<_>>()
            )
        });
    assert!(
        updated.traceparent.contains(&merge_hex),
        "the deal's update is in the merge's trace: {}",
        updated.traceparent
    );
}
