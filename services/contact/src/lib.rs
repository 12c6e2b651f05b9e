//! The contact service (crm.contact.v1): contacts, companies and the interaction timeline of
//! every tenant, on PostgreSQL or SQLite.

pub mod app;
pub mod convert;
pub mod domain;
pub mod grpc;
pub mod import;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crm_platform::consumer::FeedStatus;
use crm_platform::feed::EventFeedService;
use crm_platform::outbox::{Outbox, PgOutbox};
use crm_platform::service::{Description, Running};
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;

pub use app::ContactApp;

/// The producer name in every envelope of this service: its proto package.
pub const SOURCE: &str = <crm_proto::crm::contact::v1::ContactCreated as crm_proto::prost::Name>::PACKAGE;
pub use grpc::{ContactGrpc, SERVICE_NAME};
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgContactStore, SQLITE_MIGRATIONS, SqliteContactStore};

/// A running contact service: the application and the outbox its writes fill.
#[derive(Clone)]
pub struct ContactService {
    pub app: ContactApp,
    pub outbox: Arc<dyn Outbox>,
}

impl ContactService {
    /// The service's EventFeed (crm.events.v1), heartbeating every `heartbeat` while idle.
    pub fn event_feed(&self, heartbeat: Duration) -> EventFeedService {
        EventFeedService::new(
            Arc::clone(&self.outbox),
            SOURCE,
            app::events::types(),
            Some(grpc::legacy_events::render),
            heartbeat,
        )
    }
}

/// The contact service, as a process hosts it: it calls and follows no other service.
impl Running for ContactService {
    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(ContactGrpc::new(self.app.clone()).into_server());
    }

    fn health_names(&self) -> Vec<&'static str> {
        vec![SERVICE_NAME]
    }

    fn event_feed(&self, heartbeat: Duration) -> Option<EventFeedService> {
        Some(ContactService::event_feed(self, heartbeat))
    }

    fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        Some(Arc::clone(&self.outbox))
    }

    fn spawn_background(&self, _shutdown: CancellationToken) -> Vec<Arc<FeedStatus>> {
        Vec::new()
    }
}

/// The contact service's description (see [`crm_platform::service`]).
pub fn describe() -> Description {
    Description {
        name: "contact",
        package: SOURCE,
        migrate_postgres: |url| Box::pin(async move { migrate_postgres(&url).await }),
        open_sqlite: |path, _hosting| {
            Box::pin(async move { Ok(Box::new(open_sqlite(&path).await?) as Box<dyn Running>) })
        },
        connect_postgres: |config, _hosting| {
            Box::pin(async move {
                let service = connect_postgres(&config.url, config.max_connections).await?;
                Ok(Box::new(service) as Box<dyn Running>)
            })
        },
    }
}

/// Opens the embedded SQLite database (creating and migrating it) and returns the service.
pub async fn open_sqlite(path: &Path) -> Result<ContactService, crm_platform::db::DbError> {
    let pool = crm_platform::db::open_sqlite(path, &SQLITE_MIGRATIONS).await?;
    let store = SqliteContactStore::new(pool);
    let outbox = store.outbox();
    Ok(ContactService {
        app: ContactApp::new(Arc::new(store)),
        outbox,
    })
}

/// Connects to PostgreSQL as the RLS-bound serving role and starts the outbox's sequencer.
/// Migrations are `crm migrate`'s job.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<ContactService, crm_platform::db::DbError> {
    let pool = crm_platform::db::connect_postgres(url, POSTGRES_APP_ROLE, max_connections).await?;
    let outbox = PgOutbox::start(pool.clone())
        .await
        .map_err(crm_platform::db::DbError::Connect)?;
    Ok(ContactService {
        app: ContactApp::new(Arc::new(PgContactStore::new(pool))),
        outbox,
    })
}

/// Runs the PostgreSQL migrations with the connecting (owner) role.
pub async fn migrate_postgres(url: &str) -> Result<(), crm_platform::db::DbError> {
    crm_platform::db::migrate_postgres(url, &POSTGRES_MIGRATIONS).await
}
