//! Database pools and migrations for PostgreSQL (production) and SQLite (embedded).
//!
//! On PostgreSQL every service connects through a role that row-level security applies to
//! (`SET ROLE` after connect; the role cannot bypass RLS), and every transaction pins the
//! tenant with `set_config('crm.tenant_id', .., true)`, which the policies compare against.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, PgPool, Postgres, SqlitePool, Transaction};

use crate::identity::TenantId;

/// How long a request waits for a pooled connection before failing as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a lock held by another connection.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database url: {0}")]
    Url(sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the data directory: {0}")]
    DataDir(std::io::Error),
}

/// Connects to PostgreSQL for serving: every connection switches to `app_role`, which row-level
/// security applies to.
pub async fn connect_postgres(url: &str, app_role: &'static str, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(format!("SET ROLE {app_role}")))
                    .await?;
                // Statements are prepared once per connection and run for its lifetime while
                // tables grow from empty: a generic plan chosen early (a scan, cheap on an empty
                // table) would never be revisited. Plan each execution for its parameters.
                conn.execute("SET plan_cache_mode = force_custom_plan").await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Runs migrations on PostgreSQL with the connecting (owner) role, not the RLS-bound one.
pub async fn migrate_postgres(url: &str, migrator: &Migrator) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::Url)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Begins a PostgreSQL transaction pinned to one tenant, in one round trip: the pinning rides
/// with BEGIN as a literal, which is safe because a [`TenantId`] is letters, digits, '-', '_'
/// and '.' only (checked again here, so a change to that rule cannot open an injection).
pub async fn begin_tenant(pool: &PgPool, tenant: &TenantId) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    begin_pinned(pool, tenant, "BEGIN").await
}

/// Begins a read-only PostgreSQL transaction pinned to one tenant in which every statement
/// sees the same snapshot (repeatable read), in one round trip: for answers read with several
/// statements that must agree with each other.
pub async fn begin_tenant_snapshot(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    begin_pinned(pool, tenant, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await
}

/// Begins a transaction with `begin` and pins `tenant` in it (see [`begin_tenant`]).
async fn begin_pinned(
    pool: &PgPool,
    tenant: &TenantId,
    begin: &'static str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let id = tenant.as_str();
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(sqlx::Error::Protocol(format!(
            "tenant id {id:?} cannot be pinned as a literal"
        )));
    }
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "{begin}; SELECT set_config('crm.tenant_id', '{id}', true)"
    )))
    .await
}

/// The setting, for one transaction, that opens the outbox of every tenant to it.
macro_rules! all_tenants {
    () => {
        "set_config('crm.all_tenants', 'on', true)"
    };
}

/// Begins a transaction that reads and writes the outbox of every tenant (the sequencer, the
/// pruner, a service principal's feed). Row-level security still applies to every other table.
pub async fn begin_all_tenants(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(concat!("BEGIN; SELECT ", all_tenants!())).await
}

/// Begins a transaction that takes work from a queue of every tenant through its partial
/// index, by plain index scans only: the outbox sequencer (the unnumbered events), the
/// notification service's claims (the due deliveries). Entries of rows that have left the
/// queue stay in the index until vacuum; a plain index scan marks them dead as it passes (so
/// the next pass skips them), a bitmap or sequential scan never does and reads every one of
/// them again, on every pass, and an ordered read through the index needs no sort of the
/// whole queue. JIT is off: a disabled scan's penalty cost would otherwise have the one-row
/// counter compiled (40 ms) on every pass.
pub async fn begin_queue_scan(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(concat!(
        "BEGIN; SELECT ",
        all_tenants!(),
        ", set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true), \
         set_config('jit', 'off', true)"
    ))
    .await
}

/// Creates `dir` (and its parents) if missing, readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the database file at `path` (creating it empty if missing) and its log files
/// readable and writable by the owner only. SQLite gives its -wal and -shm files the mode of
/// the database file, so they follow.
fn restrict_database_files(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(path)?);
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// Opens (creating if needed) an SQLite database file, readable by its owner only, and runs
/// its migrations. Deleted content is overwritten (`secure_delete`), so an erased value does
/// not linger in free space; see [`purge_sqlite_log`] for the write-ahead log.
pub async fn open_sqlite(path: &Path, migrator: &Migrator) -> Result<SqlitePool, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(DbError::DataDir)?;
    }
    restrict_database_files(path).map_err(DbError::DataDir)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("secure_delete", "on");
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// After an erasure: copies the write-ahead log into the database and truncates it, so the
/// page images it held (with the values before the erase) are gone from the files. Readers
/// in flight can hold the log for a moment, so a busy checkpoint is tried again briefly.
pub async fn purge_sqlite_log(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for _ in 0..50 {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::warn!("the write-ahead log stayed busy; erased values leave it at the next checkpoint");
    Ok(())
}

/// Begins an SQLite write transaction that takes the write lock up front, so that two
/// read-then-write transactions cannot deadlock on lock upgrade.
pub async fn begin_sqlite_write(pool: &SqlitePool) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Whether a database error is a unique-constraint violation (SQLSTATE 23505 / SQLite 2067).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
