//! The sales-pipeline service (crm.pipeline.v1): pipelines and stages, leads, deals with their
//! stage history, products, tasks, forecasts and quotas of every tenant, on PostgreSQL or
//! SQLite. It checks references to contacts and companies against the contact service and
//! follows its feed.

pub mod app;
pub mod directory;
pub mod domain;
pub mod due;
pub mod follow;
pub mod grpc;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crm_platform::feed::EventFeedService;
use crm_platform::outbox::{Outbox, PgOutbox};

pub use app::PipelineApp;
use directory::Directory;
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgPipelineStore, SQLITE_MIGRATIONS, SqlitePipelineStore};

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
            grpc::events::TYPES,
            grpc::events::render,
            heartbeat,
        )
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
