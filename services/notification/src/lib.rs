//! The notification service (crm.notification.v1): rules on the events of the contact,
//! pipeline and analytics feeds, webhooks signed per the Standard Webhooks scheme with retries
//! and replay, email through SMTP from templates, and an in-app inbox per user, on PostgreSQL
//! or SQLite.

pub mod app;
pub mod deliver;
pub mod dispatch;
pub mod domain;
pub mod follow;
pub mod grpc;
pub mod history;
pub mod mail;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crm_platform::config::ConfigError;
use crm_platform::consumer::{ConsumerConfig, FeedStatus};
use crm_platform::feed::EventFeedService;
use crm_platform::outbox::Outbox;
use crm_platform::service::{Description, Hosting, Running, StartError};
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

pub use app::NotificationApp;
use deliver::DeliveryConfig;
use domain::address::AddressPolicy;
use history::FeedHistory;
use mail::MailConfig;
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgNotificationStore, SQLITE_MIGRATIONS, SqliteNotificationStore};

/// The proto package of this service's API.
pub const PACKAGE: &str = <crm_proto::crm::notification::v1::Rule as crm_proto::prost::Name>::PACKAGE;

/// The user of the `system` tenant this service's followers act as.
const SYSTEM_ACTOR: &str = "notification";

/// The networks webhooks may reach besides the public internet, comma-separated CIDRs
/// (`10.20.0.0/16,fd00::/8`): none by default on Kubernetes; `crm serve` adds loopback.
pub const ALLOWED_NETWORKS_ENV: &str = "CRM_WEBHOOK_ALLOWED_NETWORKS";

/// The directory beside the database where `crm serve` writes email when no mail server is
/// configured.
pub const MAIL_DIR: &str = "mail";

/// Loopback, which `crm serve` allows so that a developer's local receiver works.
const LOOPBACK: &str = "127.0.0.0/8,::1/128";

/// The notification service, as a process hosts it.
struct Hosted {
    app: NotificationApp,
    feeds: Vec<ConsumerConfig>,
    delivery: DeliveryConfig,
    mail: MailConfig,
    /// On PostgreSQL: the pool whose changes of inboxes, announced by every replica, reach
    /// this one's watchers.
    inbox_listener: Option<sqlx::PgPool>,
}

impl Hosted {
    /// The service over `store`, hosted as `hosting` says: webhooks may reach `networks`
    /// besides public addresses, and without a mail server email is written under
    /// `mail_files` when given.
    fn new(
        store: Arc<dyn store::NotificationStore>,
        hosting: &Hosting,
        networks: &str,
        mail_files: Option<&Path>,
        inbox_listener: Option<sqlx::PgPool>,
    ) -> Result<Self, StartError> {
        let feeds = feeds(hosting)?;
        let delivery = delivery(networks)?;
        let mail = MailConfig::from_env(mail_files, delivery.lease).map_err(ConfigError)?;
        let history = FeedHistory::new(&feeds).map_err(ConfigError)?;
        Ok(Self {
            app: NotificationApp::new(store).with_history(Arc::new(history)),
            feeds,
            delivery,
            mail,
            inbox_listener,
        })
    }
}

impl Running for Hosted {
    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        let grpc = grpc::NotificationGrpc::new(self.app.clone());
        routes
            .add_service(grpc::WebhookEndpointServiceServer::new(grpc.clone()))
            .add_service(grpc::RuleServiceServer::new(grpc.clone()))
            .add_service(grpc::DeliveryServiceServer::new(grpc.clone()))
            .add_service(grpc::InboxServiceServer::new(grpc.clone()))
            .add_service(grpc::PreferenceServiceServer::new(grpc));
    }

    fn health_names(&self) -> Vec<&'static str> {
        grpc::SERVICE_NAMES.to_vec()
    }

    fn event_feed(&self, heartbeat: Duration) -> Option<EventFeedService> {
        Some(EventFeedService::new(
            self.app.store().outbox(),
            PACKAGE,
            event_types(),
            None,
            heartbeat,
        ))
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        Some(self.app.store().outbox())
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<Arc<FeedStatus>> {
        for config in &self.feeds {
            crm_platform::consumer::spawn(
                config.clone(),
                follow::Matching::new(self.app.clone()),
                shutdown.clone(),
            );
        }
        if let Some(pool) = &self.inbox_listener {
            tokio::spawn(store::postgres::listen_inbox(
                pool.clone(),
                self.app.inbox_changes().clone(),
                shutdown.clone(),
            ));
        }
        tokio::spawn(deliver::run(self.app.clone(), self.delivery.clone(), shutdown.clone()));
        tokio::spawn(mail::run(self.app.clone(), self.mail.clone(), shutdown));
        self.feeds.iter().map(|c| Arc::clone(&c.status)).collect()
    }
}

/// The consumer settings of each feed this service follows.
pub fn feeds(hosting: &Hosting) -> Result<Vec<ConsumerConfig>, StartError> {
    follow::FEEDS
        .iter()
        .map(|feed| {
            Ok(ConsumerConfig {
                name: feed.consumer.to_owned(),
                endpoint: hosting.endpoint(feed.service)?.to_owned(),
                credentials: (hosting.credentials)(SYSTEM_ACTOR)?,
                types: Vec::new(),
                partition: None,
                status: Default::default(),
                source: Some(feed.source.to_owned()),
            })
        })
        .collect()
}

/// How long one webhook attempt may take, answer included (default 15s).
pub const TIMEOUT_ENV: &str = "CRM_WEBHOOK_TIMEOUT";
/// How long a replica holds a claimed delivery before another may attempt it (default 60s).
pub const LEASE_ENV: &str = "CRM_WEBHOOK_LEASE";

/// A positive duration from `env`, or `default` when it is unset.
fn duration_env(env: &str, default: Duration) -> Result<Duration, StartError> {
    match std::env::var(env) {
        Err(_) => Ok(default),
        Ok(raw) => crm_platform::config::parse_duration(&raw)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConfigError(format!("{env}: `{raw}` is not a positive duration such as 15s")).into()),
    }
}

/// The delivery settings: the networks allowed from [`ALLOWED_NETWORKS_ENV`] plus `extra`,
/// the timeout and lease from [`TIMEOUT_ENV`] and [`LEASE_ENV`].
fn delivery(extra: &str) -> Result<DeliveryConfig, StartError> {
    let configured = std::env::var(ALLOWED_NETWORKS_ENV).unwrap_or_default();
    let policy = AddressPolicy::parse(&format!("{extra},{configured}"))
        .map_err(|reason| ConfigError(format!("{ALLOWED_NETWORKS_ENV}: {reason}")))?;
    let defaults = DeliveryConfig::default();
    let timeout = duration_env(TIMEOUT_ENV, defaults.timeout)?;
    let lease = duration_env(LEASE_ENV, defaults.lease)?;
    if lease <= timeout {
        return Err(ConfigError(format!(
            "{LEASE_ENV} must be longer than {TIMEOUT_ENV}: a claim outlives its attempt"
        ))
        .into());
    }
    Ok(DeliveryConfig {
        policy,
        timeout,
        lease,
        ..defaults
    })
}

/// The types of the events the notification service publishes on its feed.
pub fn event_types() -> Vec<crm_platform::feed::EventType> {
    use crm_platform::feed::EventType;
    vec![
        EventType::of::<crm_proto::crm::notification::v1::WebhookEndpointDisabled>(),
        EventType::of::<crm_proto::crm::events::v1::UsageReported>(),
    ]
}

/// The notification service's description (see [`crm_platform::service`]).
pub fn describe() -> Description {
    Description {
        name: "notification",
        package: PACKAGE,
        migrate_postgres: |url| {
            Box::pin(async move { crm_platform::db::migrate_postgres(&url, &POSTGRES_MIGRATIONS).await })
        },
        open_sqlite: |path, hosting| {
            Box::pin(async move {
                // Without a mail server, email is written beside the database.
                let files = path.parent().unwrap_or(Path::new(".")).join(MAIL_DIR);
                let store = sqlite_store(&path).await?;
                Ok(Box::new(Hosted::new(store, &hosting, LOOPBACK, Some(&files), None)?) as Box<dyn Running>)
            })
        },
        connect_postgres: |config, hosting| {
            Box::pin(async move {
                let pool =
                    crm_platform::db::connect_postgres(&config.url, POSTGRES_APP_ROLE, config.max_connections).await?;
                let store = Arc::new(
                    PgNotificationStore::start(pool.clone())
                        .await
                        .map_err(crm_platform::db::DbError::Connect)?,
                );
                Ok(Box::new(Hosted::new(store, &hosting, "", None, Some(pool))?) as Box<dyn Running>)
            })
        },
    }
}

/// Opens the embedded SQLite database (creating and migrating it) and returns its store.
async fn sqlite_store(path: &Path) -> Result<Arc<dyn store::NotificationStore>, crm_platform::db::DbError> {
    let pool = crm_platform::db::open_sqlite(path, &SQLITE_MIGRATIONS).await?;
    Ok(Arc::new(SqliteNotificationStore::new(pool)))
}
