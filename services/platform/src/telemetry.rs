//! Logging and tracing: `tracing` everywhere, OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is
//! set, and W3C trace context carried across process boundaries in `traceparent` headers.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging and tracing settings.
#[derive(clap::Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Log filter in tracing's EnvFilter syntax.
    #[arg(long, env = "CRM_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, env = "CRM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint; traces are exported only when set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Flushes exported spans when dropped at the end of `main`.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("telemetry shutdown failed: {err}");
        }
    }
}

/// Installs the global subscriber. Spans always get OpenTelemetry contexts, so trace context
/// propagates even when nothing is exported.
pub fn init(args: &TelemetryArgs, service_name: impl Into<String>) -> anyhow::Result<TelemetryGuard> {
    let service_name: String = service_name.into();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &args.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    // The log level filters logs only: request spans exist (and carry trace context into
    // calls and events) whatever CRM_LOG says.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let filter = EnvFilter::try_new(&args.log)?;
    let registry = tracing_subscriber::registry().with(otel);
    match args.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init()?,
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_filter(filter))
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// Makes `span` a child of the trace named by the `traceparent` header, if any.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    // Fails only when no OpenTelemetry layer is installed (some tests); nothing to continue then.
    let _ = span.set_parent(parent);
}

/// Writes the current span's trace context into outgoing headers (or gRPC metadata).
pub fn inject_current(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// The W3C traceparent of the current span, for storing with an event: formatted from the
/// span's context directly (every event of an import asks), as the W3C propagator writes it.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        )
    })
}

/// Renames a span once it has started (recording `otel.name` only names a span before it
/// starts): an HTTP server span learns its route only after routing.
pub fn rename_span(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    span.context().span().update_name(name);
}

/// The kind of a span, as OpenTelemetry names it (`otel.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

impl SpanKind {
    fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
        }
    }
}

/// A span for one gRPC call, named and described by the OpenTelemetry RPC conventions
/// (`{service}/{method}`, `rpc.system`, `rpc.service`, `rpc.method`); its status code is
/// recorded with [`record_rpc_code`].
pub fn rpc_span(kind: SpanKind, path: &str) -> tracing::Span {
    let full = path.trim_start_matches('/');
    let (service, method) = full.split_once('/').unwrap_or((full, ""));
    tracing::info_span!(
        "rpc",
        otel.name = %full,
        otel.kind = kind.as_str(),
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
        tenant = tracing::field::Empty,
    )
}

/// Records a gRPC status on a span from [`rpc_span`]: a server marks only the codes that
/// mean it failed as errors (a NOT_FOUND is the caller's doing), a client every code but OK.
pub fn record_rpc_code(span: &tracing::Span, kind: SpanKind, code: tonic::Code) {
    use tonic::Code;
    span.record("rpc.grpc.status_code", code as i32);
    let error = match kind {
        SpanKind::Client => code != Code::Ok,
        SpanKind::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    };
    if error {
        span.record("otel.status_code", "ERROR");
    }
}

/// The gRPC status of a response at its headers: unary errors are trailers-only responses, so
/// their status is there; a response without one has succeeded so far.
pub fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

/// A gRPC channel whose every call is a client span that carries its trace context to the
/// server: what the gateway and the services call each other with.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
}

/// A traced tonic channel.
pub type TracedChannel = Traced<tonic::transport::Channel>;

/// Wraps a channel so that its calls are traced.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    Traced { inner: channel }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let span = rpc_span(SpanKind::Client, request.uri().path());
        span.in_scope(|| inject_current(request.headers_mut()));
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let code = match &result {
                    Ok(response) => grpc_code(response),
                    Err(_) => tonic::Code::Unavailable,
                };
                record_rpc_code(&tracing::Span::current(), SpanKind::Client, code);
                result
            }
            .instrument(span),
        )
    }
}
