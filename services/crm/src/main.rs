//! `crm`: the whole CRM suite in one binary, one role per subcommand.

mod dev_secret;
mod grpc;
mod import;
mod mirror;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crm_platform::auth::Verifier;
use crm_platform::config::{
    AuthArgs, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, DatabaseUrlArgs, EventArgs, FeedCredentialArgs, PostgresArgs,
    ScaleArgs, ShutdownArgs, parse_addr, parse_duration,
};
use crm_platform::lifecycle::cancel_on_signal;
use crm_platform::service::{CredentialSource, Description, Hosting, PostgresConfig, Scale};
use crm_platform::telemetry::{self, TelemetryArgs};
use crm_platform::{Principal, Role, TenantId, UserId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Default data directory of `crm serve`.
const DEFAULT_DATA_DIR: &str = "./data";
/// Default metrics/health address of single-service roles.
const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

#[derive(Parser)]
#[command(
    name = "crm",
    version,
    about = "The CRM suite: contacts, companies and interactions over gRPC and REST"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on an embedded SQLite database under --data-dir; no setup.
    Serve(ServeArgs),
    /// The contact service alone, on PostgreSQL (a Kubernetes role).
    Contact(RoleArgs),
    /// The sales-pipeline service alone, on PostgreSQL (a Kubernetes role).
    Pipeline(RoleArgs),
    /// The analytics service alone, on PostgreSQL (a Kubernetes role).
    Analytics(RoleArgs),
    /// The notification service alone, on PostgreSQL (a Kubernetes role).
    Notification(RoleArgs),
    /// The REST gateway alone, in front of the services' gRPC endpoints (a Kubernetes role).
    Gateway(GatewayRoleArgs),
    /// Applies a service's database migrations to its PostgreSQL database (a Kubernetes Job).
    Migrate(MigrateArgs),
    /// Prints a signed development token (HS256), and nothing else, on stdout.
    Token(TokenArgs),
    /// Imports a CSV or NDJSON file of contacts into a running suite, with progress.
    Import(import::ImportArgs),
    /// Copies a service's change feed into a table of another PostgreSQL database, each event
    /// exactly once, resuming where it stopped.
    Mirror(mirror::MirrorArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where the embedded database and the development secret live.
    #[arg(long, env = "CRM_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// REST listen address.
    #[arg(long, env = "CRM_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR, value_parser = parse_addr)]
    http_addr: SocketAddr,
    /// gRPC listen address (every service of the suite answers here).
    #[arg(long, env = "CRM_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR, value_parser = parse_addr)]
    grpc_addr: SocketAddr,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    gateway: crm_gateway::GatewayArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    feed: FeedCredentialArgs,
}

/// The arguments of a single-service role (a Kubernetes Deployment), the same for every
/// service.
#[derive(clap::Args)]
struct RoleArgs {
    /// gRPC listen address.
    #[arg(long, env = "CRM_GRPC_ADDR", default_value = DEFAULT_GRPC_ADDR, value_parser = parse_addr)]
    grpc_addr: SocketAddr,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "CRM_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR, value_parser = parse_addr)]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    feed: FeedCredentialArgs,
    #[command(flatten)]
    postgres: PostgresArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    scale: ScaleArgs,
}

/// Where a role finds the other services it calls or follows.
#[derive(clap::Args)]
struct PeerArgs {
    /// gRPC endpoint of the contact service (the pipeline checks references there and follows
    /// its change feed).
    #[arg(long, env = "CRM_CONTACT_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    contact_endpoint: String,
    /// gRPC endpoint of the pipeline service (analytics and notification follow its change
    /// feed).
    #[arg(long, env = "CRM_PIPELINE_ENDPOINT", default_value = crm_gateway::DEFAULT_PIPELINE_ENDPOINT)]
    pipeline_endpoint: String,
    /// gRPC endpoint of the analytics service (notification follows its change feed).
    #[arg(long, env = "CRM_ANALYTICS_ENDPOINT", default_value = crm_gateway::DEFAULT_ANALYTICS_ENDPOINT)]
    analytics_endpoint: String,
}

impl PeerArgs {
    /// Each peer's endpoint by service name.
    fn endpoints(&self) -> anyhow::Result<BTreeMap<&'static str, String>> {
        let peers = [
            ("contact", "CRM_CONTACT_ENDPOINT", &self.contact_endpoint),
            ("pipeline", "CRM_PIPELINE_ENDPOINT", &self.pipeline_endpoint),
            ("analytics", "CRM_ANALYTICS_ENDPOINT", &self.analytics_endpoint),
        ];
        let mut endpoints = BTreeMap::new();
        for (name, env, endpoint) in peers.into_iter() {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                anyhow::bail!("{env} must be an http(s):// URL");
            }
            endpoints.insert(name, endpoint.clone());
        }
        Ok(endpoints)
    }
}

#[derive(clap::Args)]
struct GatewayRoleArgs {
    /// REST listen address.
    #[arg(long, env = "CRM_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR, value_parser = parse_addr)]
    http_addr: SocketAddr,
    #[command(flatten)]
    gateway: crm_gateway::GatewayArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    shutdown: ShutdownArgs,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The service whose database this is.
    #[arg(long, default_value = "contact", value_parser = suite().iter().map(|s| s.name).collect::<Vec<_>>())]
    service: String,
    /// PostgreSQL URL of the owning (migrating) role.
    #[command(flatten)]
    database: DatabaseUrlArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Tenant (organisation) id.
    #[arg(long)]
    tenant: String,
    /// User id (the `sub` claim).
    #[arg(long)]
    user: String,
    /// Role: admin, manager, rep or viewer (repeatable). The `service` role is internal: it
    /// reads every tenant's change feeds over gRPC (the REST gateway refuses it), and is minted
    /// only with --internal-service-token.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// Allows `--role service`: a token for the suite's own services, never for a person or an
    /// integration.
    #[arg(long)]
    internal_service_token: bool,
    /// Lifetime, e.g. 30m or 720m.
    #[arg(long, default_value = "720m", value_parser = parse_duration)]
    ttl: Duration,
    /// HS256 secret; defaults to the development secret of `crm serve` in --data-dir.
    #[arg(long, env = "CRM_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    #[arg(long, env = "CRM_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Contact(args) => role(crm_contact::describe(), args).await,
            Command::Pipeline(args) => role(crm_pipeline::describe(), args).await,
            Command::Analytics(args) => role(crm_analytics::describe(), args).await,
            Command::Notification(args) => role(crm_notification::describe(), args).await,
            Command::Gateway(args) => gateway(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Token(args) => token(&args),
            Command::Import(args) => import::run(args).await,
            Command::Mirror(args) => {
                let _telemetry = telemetry::init(&args.telemetry, "crm-mirror")?;
                mirror::run(args).await
            }
        }
    })
}

/// Binds a listener, naming the setting on failure.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Waits for a shutdown signal, then gives the servers `grace` to drain.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    token
}

async fn drain<F: std::future::Future<Output = anyhow::Result<()>>>(
    servers: F,
    token: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => result,
        () = token.cancelled() => match tokio::time::timeout(grace, servers).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period elapsed; exiting with requests in flight");
                Ok(())
            }
        },
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.gateway.validate()?;
    args.events.validate()?;
    let fallback = dev_secret::load_or_create(&args.data_dir)?;
    let verifier_config = args.auth.verifier_config(Some(fallback))?;
    let _telemetry = telemetry::init(&args.telemetry, "crm")?;
    crm_platform::metrics::install();
    tracing::info!(data_dir = %args.data_dir.display(), http = %args.http_addr, grpc = %args.grpc_addr, auth = ?verifier_config, gateway = ?args.gateway, "starting crm serve");
    let grpc_listener = bind(args.grpc_addr, "CRM_GRPC_ADDR").await?;
    let http_listener = bind(args.http_addr, "CRM_HTTP_ADDR").await?;
    let http_local = http_listener.local_addr()?;
    let grpc_local = grpc_listener.local_addr()?;
    let loopback = format!("http://127.0.0.1:{}", grpc_local.port());
    let hosting = Hosting {
        endpoints: suite().iter().map(|s| (s.name, loopback.clone())).collect(),
        credentials: feed_credentials(args.feed.clone(), verifier_config.clone()),
        // One process: each feed followed whole.
        scale: Scale {
            derive_every: args.events.derive_every,
            ..Scale::default()
        },
    };
    let mut running = Vec::new();
    for service in suite() {
        let path = args.data_dir.join(format!("{}.db", service.name));
        running.push((service.open_sqlite)(path, hosting.clone()).await?);
    }
    let verifier = Verifier::new(verifier_config);

    let mut gateway_args = args.gateway.clone();
    gateway_args.all_at(&loopback);
    let app = crm_gateway::router(
        crm_gateway::Gateway::connect(&gateway_args)?,
        Arc::clone(&verifier),
        &gateway_args,
    );

    let token = shutdown_token();
    let services = grpc::Services::start(running, &token);
    let grpc = grpc::serve(grpc_listener, services, &args.events, verifier, token.clone());
    let http = {
        let token = token.clone();
        async move { Ok(crm_gateway::serve(http_listener, app, async move { token.cancelled().await }).await?) }
    };
    eprintln!(
        "crm is up: REST on http://{}, gRPC on {}\nget a token with: crm token --tenant demo --user alice --role admin",
        http_display(http_local),
        grpc_local
    );
    drain(
        async { tokio::try_join!(grpc, http).map(drop) },
        &token,
        args.shutdown.shutdown_grace,
    )
    .await
}

fn http_display(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// A service alone, on PostgreSQL: a Kubernetes role.
async fn role(service: Description, args: RoleArgs) -> anyhow::Result<()> {
    let database_url = args.postgres.validate()?;
    args.events.validate()?;
    let verifier_config = args.auth.verifier_config(None)?;
    let hosting = Hosting {
        endpoints: args.peers.endpoints()?,
        credentials: feed_credentials(args.feed.clone(), verifier_config.clone()),
        scale: args.scale.scale(&args.events)?,
    };
    let name = service.name;
    let _telemetry = telemetry::init(&args.telemetry, format!("crm-{name}"))?;
    crm_platform::metrics::install();
    tracing::info!(service = name, grpc = %args.grpc_addr, metrics = %args.metrics_addr, peers = ?hosting.endpoints, postgres = ?args.postgres, auth = ?verifier_config, "starting");
    let grpc_listener = bind(args.grpc_addr, "CRM_GRPC_ADDR").await?;
    let metrics_listener = bind(args.metrics_addr, "CRM_METRICS_ADDR").await?;
    let postgres = PostgresConfig {
        url: database_url,
        max_connections: args.postgres.db_max_connections,
    };
    let running = (service.connect_postgres)(postgres, hosting).await?;
    eprintln!(
        "crm {name} is up: gRPC on {}, metrics on {}",
        grpc_listener.local_addr()?,
        metrics_listener.local_addr()?
    );
    let token = shutdown_token();
    let services = grpc::Services::start(vec![running], &token);
    let grpc = grpc::serve(
        grpc_listener,
        services,
        &args.events,
        Verifier::new(verifier_config),
        token.clone(),
    );
    let metrics = serve_metrics(metrics_listener, token.clone());
    drain(
        async { tokio::try_join!(grpc, metrics).map(drop) },
        &token,
        args.shutdown.shutdown_grace,
    )
    .await
}

/// Every service of the suite, in the order a process starts them.
fn suite() -> Vec<Description> {
    vec![
        crm_contact::describe(),
        crm_pipeline::describe(),
        crm_analytics::describe(),
        crm_notification::describe(),
    ]
}

/// How a process's followers get their credentials: from the feed arguments, or minted with
/// the shared secret.
fn feed_credentials(feed: FeedCredentialArgs, verifier: crm_platform::auth::VerifierConfig) -> CredentialSource {
    Arc::new(move |user| feed.credentials(&verifier, user))
}

/// /metrics and /healthz of a role without a REST API of its own.
async fn serve_metrics(listener: TcpListener, token: CancellationToken) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/metrics", get(|| async { crm_platform::metrics::render() }))
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await?;
    Ok(())
}

async fn gateway(args: GatewayRoleArgs) -> anyhow::Result<()> {
    args.gateway.validate()?;
    let verifier_config = args.auth.verifier_config(None)?;
    let _telemetry = telemetry::init(&args.telemetry, "crm-gateway")?;
    crm_platform::metrics::install();
    tracing::info!(http = %args.http_addr, gateway = ?args.gateway, auth = ?verifier_config, "starting gateway");
    let listener = bind(args.http_addr, "CRM_HTTP_ADDR").await?;
    eprintln!(
        "crm gateway is up: REST on http://{}",
        http_display(listener.local_addr()?)
    );
    let app = crm_gateway::router(
        crm_gateway::Gateway::connect(&args.gateway)?,
        Verifier::new(verifier_config),
        &args.gateway,
    );
    let token = shutdown_token();
    let http = {
        let token = token.clone();
        async move { Ok(crm_gateway::serve(listener, app, async move { token.cancelled().await }).await?) }
    };
    drain(http, &token, args.shutdown.shutdown_grace).await
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&args.telemetry, "crm-migrate")?;
    let database_url = args.database.url()?;
    tracing::info!(service = %args.service, database = %crm_platform::config::redact_url(&database_url), "migrating");
    let service = suite()
        .into_iter()
        .find(|s| s.name == args.service)
        .ok_or_else(|| anyhow::anyhow!("no service named {}", args.service))?;
    (service.migrate_postgres)(database_url).await?;
    tracing::info!("migrations applied");
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = match &args.secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => dev_secret::load(&args.data_dir).with_context(|| {
            format!(
                "no secret: set CRM_JWT_SECRET, or run `crm serve` once so that {} exists",
                dev_secret::path(&args.data_dir).display()
            )
        })?,
    };
    let tenant = TenantId::parse(&args.tenant).map_err(|reason| anyhow::anyhow!("--tenant {reason}"))?;
    let user = UserId::parse(&args.user).map_err(|reason| anyhow::anyhow!("--user {reason}"))?;
    let roles = args
        .roles
        .iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| anyhow::anyhow!("--role must be admin, manager, rep or viewer, not `{r}`"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if roles.contains(&Role::Service) && !args.internal_service_token {
        anyhow::bail!(
            "the service role reads every tenant's feeds and is for the suite's own services; \
             pass --internal-service-token to mint one"
        );
    }
    let token = crm_platform::auth::mint_token(&secret, &Principal { tenant, user, roles }, args.ttl)?;
    println!("{token}");
    Ok(())
}
