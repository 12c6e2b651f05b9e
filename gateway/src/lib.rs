//! The REST/JSON gateway: REST routes over the services' gRPC APIs, with authentication,
//! problem+json errors, request ids, limits, timeouts, CORS, metrics and an OpenAPI document.

pub mod extract;
pub mod import;
pub mod openapi;
pub mod problem;
pub mod rest;
pub mod routes;
pub mod table;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use crm_platform::auth::{AuthLayer, Verifier};
use crm_platform::telemetry::{TracedChannel, traced};
use crm_platform::{ApiError, ErrorCode, Principal, Role};
use crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use crm_proto::crm::pipeline::v1::deal_service_client::DealServiceClient;
use crm_proto::crm::pipeline::v1::pipeline_service_client::PipelineServiceClient;
use http::{HeaderName, HeaderValue, Method};
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::problem::Problem;
use crate::routes::{bulk, events, inbox, ops, users};

/// The service readiness checks ask about.
pub const CONTACT_SERVICE: &str = "crm.contact.v1.ContactService";
/// Default largest request body (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default time a request may take, end to end.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "30s";
/// The pipeline service readiness checks ask about.
pub const PIPELINE_SERVICE: &str = "crm.pipeline.v1.DealService";
/// Default contact service endpoint.
pub const DEFAULT_CONTACT_ENDPOINT: &str = "http://127.0.0.1:50051";
/// Default pipeline service endpoint.
pub const DEFAULT_PIPELINE_ENDPOINT: &str = "http://127.0.0.1:50052";
/// Default analytics service endpoint.
pub const DEFAULT_ANALYTICS_ENDPOINT: &str = "http://127.0.0.1:50053";
/// Default notification service endpoint.
pub const DEFAULT_NOTIFICATION_ENDPOINT: &str = "http://127.0.0.1:50054";

/// Gateway settings.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// gRPC endpoint of the contact service.
    #[arg(long, env = "CRM_CONTACT_ENDPOINT", default_value = DEFAULT_CONTACT_ENDPOINT)]
    pub contact_endpoint: String,
    /// gRPC endpoint of the pipeline service.
    #[arg(long, env = "CRM_PIPELINE_ENDPOINT", default_value = DEFAULT_PIPELINE_ENDPOINT)]
    pub pipeline_endpoint: String,
    /// gRPC endpoint of the analytics service.
    #[arg(long, env = "CRM_ANALYTICS_ENDPOINT", default_value = DEFAULT_ANALYTICS_ENDPOINT)]
    pub analytics_endpoint: String,
    /// gRPC endpoint of the notification service.
    #[arg(long, env = "CRM_NOTIFICATION_ENDPOINT", default_value = DEFAULT_NOTIFICATION_ENDPOINT)]
    pub notification_endpoint: String,
    /// Largest request body in bytes.
    #[arg(long, env = "CRM_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Time a request may take, e.g. 30s.
    #[arg(long, env = "CRM_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT, value_parser = crm_platform::config::parse_duration)]
    pub request_timeout: Duration,
    /// Origins allowed by CORS, comma-separated (`*` for any); none by default.
    #[arg(long, env = "CRM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

/// The proto package of each upstream service.
const CONTACT_PACKAGE: &str = <crm_proto::crm::contact::v1::ContactCreated as crm_proto::prost::Name>::PACKAGE;
const PIPELINE_PACKAGE: &str = <crm_proto::crm::pipeline::v1::DealCreated as crm_proto::prost::Name>::PACKAGE;
const ANALYTICS_PACKAGE: &str = <crm_proto::crm::analytics::v1::Metric as crm_proto::prost::Name>::PACKAGE;
const NOTIFICATION_PACKAGE: &str = <crm_proto::crm::notification::v1::Rule as crm_proto::prost::Name>::PACKAGE;

impl GatewayArgs {
    /// Every upstream: its proto package, the setting that names it, and its endpoint. A
    /// service of the suite is one entry here (and its flag above).
    fn upstreams(&self) -> [(&'static str, &'static str, &String); 4] {
        [
            (CONTACT_PACKAGE, "CRM_CONTACT_ENDPOINT", &self.contact_endpoint),
            (PIPELINE_PACKAGE, "CRM_PIPELINE_ENDPOINT", &self.pipeline_endpoint),
            (ANALYTICS_PACKAGE, "CRM_ANALYTICS_ENDPOINT", &self.analytics_endpoint),
            (
                NOTIFICATION_PACKAGE,
                "CRM_NOTIFICATION_ENDPOINT",
                &self.notification_endpoint,
            ),
        ]
    }

    /// Sends every upstream to `endpoint` (one process serving every service: `crm serve`).
    pub fn all_at(&mut self, endpoint: &str) {
        for upstream in [
            &mut self.contact_endpoint,
            &mut self.pipeline_endpoint,
            &mut self.analytics_endpoint,
            &mut self.notification_endpoint,
        ] {
            endpoint.clone_into(upstream);
        }
    }

    pub fn validate(&self) -> Result<(), crm_platform::config::ConfigError> {
        use crm_platform::config::ConfigError;
        for (_, name, endpoint) in self.upstreams() {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError(format!("{name} must be an http(s):// URL")));
            }
        }
        if self.body_limit == 0 {
            return Err(ConfigError("CRM_BODY_LIMIT must be positive".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError("CRM_REQUEST_TIMEOUT must be positive".into()));
        }
        for origin in &self.cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError(format!("CRM_CORS_ORIGINS: `{origin}` is not an origin")));
            }
        }
        Ok(())
    }
}

/// Shared state of the handlers: channels to the services, and the clients of the routes that
/// are not transcoded (feeds, health, bulk transfers, the portfolio transfer).
#[derive(Clone)]
pub struct Gateway {
    /// The channel of each gRPC package (`crm.contact.v1`).
    channels: Arc<[(&'static str, TracedChannel)]>,
    contacts: ContactServiceClient<TracedChannel>,
    health: HealthClient<TracedChannel>,
    pipelines: PipelineServiceClient<TracedChannel>,
    deals: DealServiceClient<TracedChannel>,
    pipeline_health: HealthClient<TracedChannel>,
    /// Deadline of each upstream call.
    pub deadline: Duration,
}

impl Gateway {
    /// Clients that connect lazily, so the gateway starts before its upstreams are up
    /// (readiness reports them).
    pub fn connect(args: &GatewayArgs) -> Result<Self, tonic::transport::Error> {
        let lazy = |endpoint: &str| -> Result<TracedChannel, tonic::transport::Error> {
            Ok(traced(
                Endpoint::from_shared(endpoint.to_owned())?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect_lazy(),
            ))
        };
        let channels = args
            .upstreams()
            .into_iter()
            .map(|(package, _, endpoint)| Ok((package, lazy(endpoint)?)))
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        let of = |package: &str| {
            channels
                .iter()
                .find(|(p, _)| *p == package)
                .map(|(_, channel)| channel.clone())
                .expect("every upstream has a channel")
        };
        let (contact, pipeline) = (of(CONTACT_PACKAGE), of(PIPELINE_PACKAGE));
        Ok(Self {
            channels: channels.into(),
            contacts: ContactServiceClient::new(contact.clone()),
            health: HealthClient::new(contact),
            pipelines: PipelineServiceClient::new(pipeline.clone()),
            deals: DealServiceClient::new(pipeline.clone()),
            pipeline_health: HealthClient::new(pipeline),
            deadline: args.request_timeout,
        })
    }

    /// The channel of the service that serves a gRPC service (`crm.contact.v1.ContactService`).
    pub fn channel_for(&self, service: &str) -> Option<TracedChannel> {
        let (package, _) = service.rsplit_once('.')?;
        self.channels
            .iter()
            .find(|(name, _)| *name == package)
            .map(|(_, channel)| channel.clone())
    }

    pub fn contacts(&self) -> ContactServiceClient<TracedChannel> {
        self.contacts.clone()
    }

    /// The change feed of the service whose package is `package` (`crm.contact.v1`).
    pub fn events_of(&self, package: &str) -> Option<EventFeedClient<TracedChannel>> {
        self.channels
            .iter()
            .find(|(name, _)| *name == package)
            .map(|(_, channel)| EventFeedClient::new(channel.clone()))
    }

    pub fn health(&self) -> HealthClient<TracedChannel> {
        self.health.clone()
    }

    pub fn pipeline_health(&self) -> HealthClient<TracedChannel> {
        self.pipeline_health.clone()
    }

    pub fn pipelines(&self) -> PipelineServiceClient<TracedChannel> {
        self.pipelines.clone()
    }

    pub fn deals(&self) -> DealServiceClient<TracedChannel> {
        self.deals.clone()
    }
}

/// RED metrics per route, and the route and status on the request's span (the OpenTelemetry
/// HTTP server conventions: named `{method} {route}`, an error only when the server failed).
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::Span::current();
    span.record("http.route", route.as_str());
    crm_platform::telemetry::rename_span(&span, format!("{method} {route}"));
    let response = next.run(request).await;
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("crm_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("crm_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// REST admission: `service` tokens are for service-to-service gRPC and are refused here
/// (they read every tenant's feeds); a caller who may not write is refused any method but GET,
/// and one who is not a manager or admin a history import, before its body is read.
fn rest_admission(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    if principal.has_role(Role::Service) {
        return Err(ApiError::permission_denied(
            "service tokens are for service-to-service gRPC; the REST API does not accept them",
        ));
    }
    if path == "/v1/deals:import" && !principal.writes_all() {
        return Err(ApiError::permission_denied("only managers and admins import history"));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Ok(())
    } else {
        principal.ensure_writer()
    }
}

async fn not_found() -> Problem {
    Problem(ApiError::new(
        ErrorCode::NotFound,
        "ROUTE_NOT_FOUND",
        "no such route; see /openapi.json",
    ))
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            http::header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            http::header::ETAG,
            http::header::LOCATION,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

/// The whole REST application.
pub fn router(gateway: Gateway, verifier: Arc<Verifier>, args: &GatewayArgs) -> Router {
    let transcoded = rest::routes().unwrap_or_else(|e| panic!("the compiled-in HTTP rules are invalid: {e}"));
    let api = transcoded
        .route("/v1/contacts:export", get(bulk::export))
        .route("/v1/contacts:import", post(bulk::import))
        .route("/v1/deals:import", post(bulk::import_deals))
        .route("/v1/events:stream", get(events::stream))
        .route("/v1/notifications:watch", get(inbox::watch))
        .route("/v1/users/{id}", post(users::user_method))
        .route_layer(AuthLayer::new(
            Arc::clone(&verifier),
            &[],
            rest_admission,
            problem::auth_rejection,
        ));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .with_state(gateway)
        .layer(axum::Extension(verifier))
        .layer(middleware::from_fn(record_metrics))
        // The JSON extractor enforces the limit itself (see extract::read_limited).
        .layer(DefaultBodyLimit::disable())
        .layer(axum::Extension(extract::BodyLimit(args.body_limit)))
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::GATEWAY_TIMEOUT,
            args.request_timeout,
        ))
        .layer(cors(&args.cors_origins))
        // Answers carry customer data: no cache may keep them, and no browser may sniff them
        // into another type.
        .layer(SetResponseHeaderLayer::overriding(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let span = tracing::info_span!(
                "http",
                otel.name = %request.method(),
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = %request.method(),
                url.path = %request.uri().path(),
                http.route = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or(""),
                tenant = tracing::field::Empty,
            );
            crm_platform::telemetry::continue_trace(&span, request.headers());
            span
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Serves the REST application on a bound listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
