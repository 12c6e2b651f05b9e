//! The contact service (crm.contact.v1): contacts, companies and the interaction timeline of
//! every tenant, on PostgreSQL or SQLite.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod import;
pub mod store;

use std::path::Path;
use std::sync::Arc;

pub use app::ContactApp;
pub use grpc::{ContactGrpc, SERVICE_NAME};
use store::{POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS, PgContactStore, SQLITE_MIGRATIONS, SqliteContactStore};

/// Opens the embedded SQLite database (creating and migrating it) and returns the service.
pub async fn open_sqlite(path: &Path) -> Result<ContactApp, crm_platform::db::DbError> {
    let pool = crm_platform::db::open_sqlite(path, &SQLITE_MIGRATIONS).await?;
    Ok(ContactApp::new(Arc::new(SqliteContactStore::new(pool))))
}

/// Connects to PostgreSQL as the RLS-bound serving role. Migrations are `crm migrate`'s job.
pub async fn connect_postgres(url: &str, max_connections: u32) -> Result<ContactApp, crm_platform::db::DbError> {
    let pool = crm_platform::db::connect_postgres(url, POSTGRES_APP_ROLE, max_connections).await?;
    Ok(ContactApp::new(Arc::new(PgContactStore::new(pool))))
}

/// Runs the PostgreSQL migrations with the connecting (owner) role.
pub async fn migrate_postgres(url: &str) -> Result<(), crm_platform::db::DbError> {
    crm_platform::db::migrate_postgres(url, &POSTGRES_MIGRATIONS).await
}
