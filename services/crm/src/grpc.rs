//! The gRPC server of a process: every service it runs, gRPC health and reflection, the
//! observe (trace + metrics) and auth layers, on one pre-bound listener.

use std::sync::Arc;

use crm_platform::auth::{AuthLayer, KeyState, Verifier, grpc_admission, grpc_rejection};
use crm_platform::config::EventArgs;
use crm_platform::consumer::{FOLLOWERS_HEALTH, FeedStatus};
use crm_platform::lifecycle::Health;
use crm_platform::metrics::GrpcObserveLayer;
use crm_platform::service::Running;
use crm_platform::usage::{Usage, UsageLayer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Paths served without a token: health checks (kubelet, load balancers) and reflection.
const PUBLIC_PATHS: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// How often events past retention are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often readiness looks at the signing keys and the followers.
const READINESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The services a process runs (at least one).
pub(crate) struct Services {
    pub(crate) running: Vec<Box<dyn Running>>,
    /// The feeds the process follows, for readiness.
    pub(crate) followers: Vec<Arc<FeedStatus>>,
}

impl Services {
    /// The services, their background work started until `shutdown`.
    pub(crate) fn start(running: Vec<Box<dyn Running>>, shutdown: &CancellationToken) -> Self {
        let followers = running
            .iter()
            .flat_map(|service| service.spawn_background(shutdown.clone()))
            .collect();
        Self { running, followers }
    }
}

/// Keeps gRPC health true until shutdown: the service names are NOT_SERVING while the signing
/// keys are unusable (every call would fail), and [`FOLLOWERS_HEALTH`] is NOT_SERVING while a
/// followed feed refuses the process's credentials. On shutdown everything is NOT_SERVING.
async fn keep_health(
    health: Health,
    verifier: Arc<Verifier>,
    followers: Vec<Arc<FeedStatus>>,
    mut reported: Readiness,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(READINESS_EVERY) => {}
        }
        let keys = tokio::select! {
            () = shutdown.cancelled() => break,
            keys = verifier.check_keys() => keys,
        };
        if shutdown.is_cancelled() {
            break;
        }
        // Only a change is reported: every report reaches each health Watch subscriber.
        let now = Readiness::of(keys, &followers);
        if now != reported {
            now.report(&health).await;
            reported = now;
        }
    }
    health.set_not_serving().await;
    health.set(FOLLOWERS_HEALTH, false).await;
}

/// What the health service says of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Readiness {
    /// The service names: false while the signing keys are unusable.
    serving: bool,
    /// [`FOLLOWERS_HEALTH`]: false while a followed feed refuses the credentials.
    following: bool,
}

impl Readiness {
    fn of(keys: KeyState, followers: &[Arc<FeedStatus>]) -> Readiness {
        Readiness {
            serving: keys != KeyState::Unavailable,
            following: !followers.iter().any(|f| f.credentials_refused()),
        }
    }

    async fn report(self, health: &Health) {
        if self.serving {
            health.set_serving().await;
        } else {
            health.set_not_serving().await;
        }
        health.set(FOLLOWERS_HEALTH, self.following).await;
    }
}

/// Serves the services and their event feeds until `shutdown` is cancelled; health flips to
/// SERVING once the server is accepting and to NOT_SERVING as soon as shutdown starts.
pub(crate) async fn serve(
    listener: TcpListener,
    services: Services,
    events: &EventArgs,
    verifier: Arc<Verifier>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let names = services.running.iter().flat_map(|s| s.health_names()).collect();
    let (health, health_service) = Health::new(names).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(health_service).add_service(reflection);
    let mut feeds = Vec::new();
    // Usage is published on the feed of the service each area (gRPC service) belongs to.
    let usage = Usage::new();
    let mut usage_outboxes = Vec::new();
    for service in &services.running {
        service.add_grpc(&mut routes);
        feeds.extend(service.event_feed(events.feed_heartbeat));
        if let Some(outbox) = service.outbox() {
            crm_platform::outbox::spawn_pruner(Arc::clone(&outbox), events.event_retention, PRUNE_EVERY);
            usage_outboxes.push((service.health_names(), outbox));
        }
    }
    // Stopped after the server: the requests served while draining are counted too.
    let usage_stop = CancellationToken::new();
    let reporter = crm_platform::usage::spawn_reporter(
        Arc::clone(&usage),
        usage_outboxes,
        events.usage_every,
        usage_stop.clone(),
    );
    // One EventFeed per process, serving each of its services' feeds (see FeedRouter).
    routes.add_service(crm_platform::feed::FeedRouter::new(feeds).into_server());
    let server = tonic::transport::Server::builder()
        .layer(GrpcObserveLayer)
        .layer(AuthLayer::new(
            Arc::clone(&verifier),
            PUBLIC_PATHS,
            grpc_admission,
            grpc_rejection,
        ))
        .layer(UsageLayer::new(usage))
        .add_routes(routes.routes());
    // The first report before serving, so that a process is SERVING as soon as it accepts.
    let readiness = Readiness::of(verifier.check_keys().await, &services.followers);
    readiness.report(&health).await;
    let watcher = tokio::spawn(keep_health(
        health,
        verifier,
        services.followers.clone(),
        readiness,
        shutdown.clone(),
    ));
    let draining = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            // The watcher reports NOT_SERVING before it returns.
            let _ = watcher.await;
        }
    };
    // The listener is bound by the caller (to report its address before serving), so tonic's
    // own TCP_NODELAY setting never reaches the accepted sockets: set it here, or small
    // responses wait for delayed ACKs (a 40 ms p99).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = server.serve_with_incoming_shutdown(incoming, draining).await;
    usage_stop.cancel();
    if tokio::time::timeout(USAGE_FLUSH, reporter).await.is_err() {
        tracing::warn!("the last usage report did not finish in time");
    }
    served?;
    Ok(())
}

/// How long the last usage report may take at shutdown.
const USAGE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
