//! The sales-pipeline service (crm.pipeline.v1): pipelines and stages, leads, deals with their
//! stage history, products, tasks, forecasts and quotas of every tenant, on PostgreSQL or
//! SQLite. It checks references to contacts and companies against the contact service and
//! follows its feed.

pub mod app;
mod convert;
pub mod directory;
pub mod domain;
pub mod due;
pub mod follow;
pub mod grpc;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crm_platform::consumer::FeedStatus;
use crm_platform::feed::EventFeedService;
use crm_platform::outbox::{Outbox, PgOutbox};
use crm_platform::service::{Description, Hosting, Running, StartError};
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

pub use app::PipelineApp;
use directory::Directory;
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgPipelineStore, SQLITE_MIGRATIONS, SqlitePipelineStore};

/// The producer name of the contact service's feed, which this service follows: the package
/// of its messages.
const CONTACT_SOURCE: &str = <crm_proto::crm::contact::v1::ContactErased as crm_proto::prost::Name>::PACKAGE;

/// A running pipeline service: the application and the outbox its writes fill.
#[derive(Clone)]
pub struct PipelineService {
    pub app: PipelineApp,
    pub outbox: Arc<dyn Outbox>,
}

impl PipelineService {
    /// The service's EventFeed (crm.events.v1), heartbeating every `heartbeat` while idle.
    pub fn event_feed(&self, heartbeat: Duration) -> EventFeedService {
        EventFeedService::new(
            Arc::clone(&self.outbox),
            grpc::events::SOURCE,
            grpc::events::types(),
            Some(grpc::legacy_events::render),
            heartbeat,
        )
    }
}

/// The pipeline service, as a process hosts it: it checks references against the contact
/// service and follows its feed, and runs the due-task scheduler.
struct Hosted {
    service: PipelineService,
    /// How it follows the contact feed.
    contact_feed: crm_platform::consumer::ConsumerConfig,
}

impl Running for Hosted {
    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        let servers = grpc::PipelineGrpc::new(self.service.app.clone()).into_servers();
        routes
            .add_service(servers.pipelines)
            .add_service(servers.leads)
            .add_service(servers.deals)
            .add_service(servers.products)
            .add_service(servers.tasks)
            .add_service(servers.forecasts);
    }

    fn health_names(&self) -> Vec<&'static str> {
        grpc::SERVICE_NAMES.to_vec()
    }

    fn event_feed(&self, heartbeat: Duration) -> Option<EventFeedService> {
        Some(self.service.event_feed(heartbeat))
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        Some(Arc::clone(&self.service.outbox))
    }

    fn spawn_background(&self, shutdown: CancellationToken) -> Vec<Arc<FeedStatus>> {
        spawn_background(&self.service, self.contact_feed.clone(), shutdown);
        vec![Arc::clone(&self.contact_feed.status)]
    }
}

/// The name of the contact service among the suite's (see [`Hosting::endpoints`]).
const CONTACT: &str = "contact";

/// The directory of contacts and the followed contact feed a process gives this service.
fn contact_of(hosting: &Hosting) -> Result<(Arc<dyn Directory>, crm_platform::consumer::ConsumerConfig), StartError> {
    let endpoint = hosting.endpoint(CONTACT)?;
    let directory = directory::GrpcDirectory::new(endpoint).map_err(crm_platform::config::ConfigError)?;
    let credentials = (hosting.credentials)(app::SYSTEM_ACTOR)?;
    Ok((Arc::new(directory), contact_feed(endpoint, credentials)))
}

/// The pipeline service's description (see [`crm_platform::service`]).
pub fn describe() -> Description {
    Description {
        name: "pipeline",
        package: grpc::events::SOURCE,
        migrate_postgres: |url| Box::pin(async move { migrate_postgres(&url).await }),
        open_sqlite: |path, hosting| {
            Box::pin(async move {
                let (directory, contact_feed) = contact_of(&hosting)?;
                let service = open_sqlite(&path, directory).await?;
                Ok(Box::new(Hosted { service, contact_feed }) as Box<dyn Running>)
            })
        },
        connect_postgres: |config, hosting| {
            Box::pin(async move {
                let (directory, contact_feed) = contact_of(&hosting)?;
                let service = connect_postgres(&config.url, config.max_connections, directory).await?;
                Ok(Box::new(Hosted { service, contact_feed }) as Box<dyn Running>)
            })
        },
    }
}

/// Opens the embedded SQLite database (creating and migrating it) and returns the service.
pub async fn open_sqlite(
    path: &Path,
    directory: Arc<dyn Directory>,
) -> Result<PipelineService, crm_platform::db::DbError> {
    let pool = crm_platform::db::open_sqlite(path, &SQLITE_MIGRATIONS).await?;
    let store = SqlitePipelineStore::new(pool);
    let outbox = store.outbox();
    Ok(PipelineService {
        app: PipelineApp::new(Arc::new(store), directory),
        outbox,
    })
}

/// Connects to PostgreSQL as the RLS-bound serving role and starts the outbox's sequencer.
/// Migrations are `crm migrate`'s job.
pub async fn connect_postgres(
    url: &str,
    max_connections: u32,
    directory: Arc<dyn Directory>,
) -> Result<PipelineService, crm_platform::db::DbError> {
    let pool = crm_platform::db::connect_postgres(url, POSTGRES_APP_ROLE, max_connections).await?;
    let outbox = PgOutbox::start(pool.clone())
        .await
        .map_err(crm_platform::db::DbError::Connect)?;
    Ok(PipelineService {
        app: PipelineApp::new(Arc::new(PgPipelineStore::new(pool)), directory),
        outbox,
    })
}

/// Runs the PostgreSQL migrations with the connecting (owner) role.
pub async fn migrate_postgres(url: &str) -> Result<(), crm_platform::db::DbError> {
    crm_platform::db::migrate_postgres(url, &POSTGRES_MIGRATIONS).await
}

/// Starts the service's background work until `shutdown`: the due-task scheduler, and the
/// follower of the contact service's feed (merges and erases) described by `contact_feed`.
pub fn spawn_background(
    service: &PipelineService,
    contact_feed: crm_platform::consumer::ConsumerConfig,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(due::run(service.app.clone(), shutdown.clone()));
    crm_platform::consumer::spawn(contact_feed, follow::ContactFeed::new(service.app.clone()), shutdown);
}

/// The consumer settings of the contact feed this service follows.
pub fn contact_feed(
    endpoint: &str,
    credentials: crm_platform::consumer::Credentials,
) -> crm_platform::consumer::ConsumerConfig {
    crm_platform::consumer::ConsumerConfig {
        name: follow::CONSUMER.to_owned(),
        endpoint: endpoint.to_owned(),
        credentials,
        types: follow::followed_types(),
        partition: None,
        status: Default::default(),
        source: Some(CONTACT_SOURCE.to_owned()),
    }
}
