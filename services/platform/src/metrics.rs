//! Prometheus metrics: one process-wide recorder, RED metrics per RPC and per route.

use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::telemetry;

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets. Until then every sample is
/// kept, so without this upkeep memory grew with every request when nothing scraped.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder (once per process), starts its upkeep, and returns the handle that
/// renders it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .map(|builder| builder.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder may already be installed (tests building several servers); the
        // handle then renders an empty page rather than failing the process.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        // A plain thread: install may run before (or outside) the tokio runtime.
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the metrics upkeep; memory grows until /metrics is scraped");
        }
        handle
    })
}

/// The label of a gRPC method path: the path when the suite defines the method, else
/// `unknown`, so that requests to made-up paths cannot grow the metric families without bound.
fn method_label(path: &str) -> &'static str {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut known = std::collections::HashSet::new();
        if let Ok(pool) = crm_proto::json::descriptors() {
            for service in pool.services() {
                for method in service.methods() {
                    known.insert(format!("/{}/{}", service.full_name(), method.name()));
                }
            }
        }
        for health in ["Check", "Watch"] {
            known.insert(format!("/grpc.health.v1.Health/{health}"));
        }
        known
    });
    known.get(path).map_or("unknown", String::as_str)
}

/// Renders the Prometheus text exposition.
pub fn render() -> String {
    install().render()
}

/// Tower layer for gRPC servers: a span per RPC continuing the caller's trace, and
/// `crm_grpc_requests_total{method,code}` / `crm_grpc_request_duration_seconds{method}`.
#[derive(Clone, Copy, Default)]
pub struct GrpcObserveLayer;

impl<S> tower::Layer<S> for GrpcObserveLayer {
    type Service = GrpcObserve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcObserve { inner }
    }
}

#[derive(Clone)]
pub struct GrpcObserve<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcObserve<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = method_label(request.uri().path());
        let span = telemetry::rpc_span(telemetry::SpanKind::Server, method);
        telemetry::continue_trace(&span, request.headers());
        Box::pin(
            async move {
                let started = Instant::now();
                let result = inner.call(request).await;
                let code = match &result {
                    Ok(response) => telemetry::grpc_code(response),
                    Err(_) => tonic::Code::Internal,
                };
                telemetry::record_rpc_code(&tracing::Span::current(), telemetry::SpanKind::Server, code);
                metrics::counter!("crm_grpc_requests_total", "method" => method, "code" => format!("{code:?}"))
                    .increment(1);
                metrics::histogram!("crm_grpc_request_duration_seconds", "method" => method)
                    .record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
