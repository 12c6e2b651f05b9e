//! The gRPC server of a process: every service it runs, gRPC health and reflection, the
//! observe (trace + metrics) and auth layers, on one pre-bound listener.

use std::sync::Arc;

use crm_contact::{ContactGrpc, ContactService};
use crm_platform::auth::{AuthLayer, Verifier, grpc_rejection};
use crm_platform::config::EventArgs;
use crm_platform::lifecycle::Health;
use crm_platform::metrics::GrpcObserveLayer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Paths served without a token: health checks (kubelet, load balancers) and reflection.
const PUBLIC_PATHS: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// How often events past retention are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Serves the contact service and its event feed until `shutdown` is cancelled; health flips
/// to SERVING once the server is accepting and to NOT_SERVING as soon as shutdown starts.
pub(crate) async fn serve(
    listener: TcpListener,
    contact: ContactService,
    events: &EventArgs,
    verifier: Arc<Verifier>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = Health::new(vec![crm_contact::SERVICE_NAME]).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let server = tonic::transport::Server::builder()
        .layer(GrpcObserveLayer)
        .layer(AuthLayer::new(verifier, PUBLIC_PATHS, grpc_rejection))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(contact.event_feed(events.feed_heartbeat).into_server())
        .add_service(ContactGrpc::new(contact.app).into_server());
    crm_platform::outbox::spawn_pruner(Arc::clone(&contact.outbox), events.event_retention, PRUNE_EVERY);
    health.set_serving().await;
    let draining = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            health.set_not_serving().await;
        }
    };
    // The listener is bound by the caller (to report its address before serving), so tonic's
    // own TCP_NODELAY setting never reaches the accepted sockets: set it here, or small
    // responses wait for delayed ACKs (a 40 ms p99).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    server.serve_with_incoming_shutdown(incoming, draining).await?;
    Ok(())
}
