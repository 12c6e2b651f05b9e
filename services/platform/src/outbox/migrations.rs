//! The outbox's schema, defined once for every producing service and both backends: a
//! service's migrator is its own migrations followed by these.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The versions of the platform's migrations start here, above any service's own (which are
/// numbered from 1), so the two never collide and the platform's run after a service's.
pub const FIRST_VERSION: i64 = 1_000_000;

/// The platform's migrations on PostgreSQL, in order.
const POSTGRES: &[(&str, &str)] = &[
    ("outbox", include_str!("../../migrations/outbox/postgres.sql")),
    (
        "outbox polling",
        include_str!("../../migrations/outbox/postgres_polling.sql"),
    ),
];
/// The platform's migrations on SQLite, in order.
const SQLITE: &[(&str, &str)] = &[("outbox", include_str!("../../migrations/outbox/sqlite.sql"))];

/// `service`'s PostgreSQL migrations followed by the outbox's, granted to `app_role` (the
/// role the service serves as).
pub fn postgres(service: &Migrator, app_role: &str) -> Migrator {
    with_platform(service, POSTGRES, |sql| sql.replace("{app_role}", app_role))
}

/// `service`'s SQLite migrations followed by the outbox's.
pub fn sqlite(service: &Migrator) -> Migrator {
    with_platform(service, SQLITE, str::to_owned)
}

fn with_platform(service: &Migrator, platform: &[(&str, &str)], sql: impl Fn(&str) -> String) -> Migrator {
    let mut migrations: Vec<Migration> = service.iter().cloned().collect();
    assert!(
        migrations.iter().all(|m| m.version < FIRST_VERSION),
        "a service's migrations are numbered below {FIRST_VERSION}"
    );
    for (version, (description, text)) in (FIRST_VERSION..).zip(platform) {
        migrations.push(Migration::new(
            version,
            Cow::Owned(format!("platform {description}")),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql(text)).into_sql_str(),
            false,
        ));
    }
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use crm_proto::crm::events::v1::Heartbeat;
    use crm_proto::prost::Name;
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};

    use crate::TenantId;
    use crate::outbox::{NewEvent, Outbox, PgOutbox, Scope, SqliteOutbox, append_pg, append_sqlite};

    fn message() -> Heartbeat {
        Heartbeat {
            time: Some(prost_types::Timestamp { seconds: 7, nanos: 0 }),
            head_sequence: 42,
        }
    }

    fn event(tenant: &TenantId) -> NewEvent {
        let time = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).single().expect("a time");
        NewEvent::of(tenant, "things/1".to_owned(), "alice", time, &message()).expect("step 2")
    }

    /// What a new service's own migrations would be: its role (PostgreSQL), nothing about the
    /// outbox.
    fn service(sql: &str) -> Migrator {
        Migrator::with_migrations(vec![Migration::new(
            1,
            "service".into(),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str(),
            false,
        )])
    }

    /// The role a service on PostgreSQL serves as, in these tests.
    const ROLE: &str = "crm_outbox_test_app";

    /// A service's PostgreSQL migrations that only create its serving role, followed by the
    /// platform's.
    fn postgres_migrator() -> Migrator {
        super::postgres(
            &service(&format!(
                "DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN NOBYPASSRLS; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )),
            ROLE,
        )
    }

    #[tokio::test]
    async fn a_new_service_on_sqlite_gets_its_outbox_from_the_platform_alone() {
        let dir = tempfile::tempdir().expect("step 3");
        let migrator = super::sqlite(&service("CREATE TABLE things (id TEXT PRIMARY KEY)"));
        let pool = crate::db::open_sqlite(&dir.path().join("x.db"), &migrator)
            .await
            .expect("step 4");
        let acme = TenantId::parse("acme").expect("step 5");
        let mut tx = crate::db::begin_sqlite_write(&pool).await.expect("step 6");
        append_sqlite(&mut tx, &[event(&acme)]).await.expect("step 7");
        tx.commit().await.expect("step 8");
        let outbox = SqliteOutbox::new(pool);
        let events = outbox
            .read(&Scope::Tenant(acme), 0, &[], None, 10)
            .await
            .expect("step 9");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].seq, 1);
        assert_eq!(events[0].kind, Heartbeat::full_name());
        assert!(!events[0].legacy);
        assert_eq!(events[0].decode::<Heartbeat>().expect("step 10"), message());
        // Its time, by its number, for a seek.
        assert_eq!(outbox.time_at(1).await.expect("step 11"), Some(events[0].time));
        assert_eq!(outbox.time_at(0).await.expect("step 12"), Some(events[0].time));
        assert_eq!(outbox.time_at(2).await.expect("step 13"), None);
    }

    #[tokio::test]
    async fn a_new_service_on_postgres_gets_its_outbox_from_the_platform_alone() {
        let Some(db) = crate::testing::TestDatabase::create("platform_outbox_migrations").await else {
            return;
        };
        let migrator = postgres_migrator();
        crate::db::migrate_postgres(&db.url, &migrator).await.expect("step 11");
        // Run twice: a migrator already applied is a no-op.
        crate::db::migrate_postgres(&db.url, &migrator).await.expect("step 12");
        let pool = crate::db::connect_postgres(&db.url, ROLE, 2).await.expect("step 13");
        let outbox = PgOutbox::start(pool.clone()).await.expect("step 14");
        let acme = TenantId::parse("acme").expect("step 15");
        let mut tx = crate::db::begin_tenant(&pool, &acme).await.expect("step 16");
        append_pg(&mut tx, &[event(&acme)]).await.expect("step 17");
        tx.commit().await.expect("step 18");
        // Numbered here, or already by the sequencer the outbox runs.
        outbox.sequence().await.expect("step 19");
        let events = outbox
            .read(&Scope::Tenant(acme), 0, &[], None, 10)
            .await
            .expect("step 20");
        assert_eq!(events.len(), 1);
        assert!(!events[0].legacy);
        assert_eq!(events[0].decode::<Heartbeat>().expect("step 21"), message());
        // Row-level security applies to the serving role: another tenant sees nothing.
        let other = Scope::Tenant(TenantId::parse("globex").expect("step 22"));
        assert!(outbox.read(&other, 0, &[], None, 10).await.expect("step 23").is_empty());
        // Its time, by its number, for a seek: read past the row-level policy (a number and
        // a time, of any tenant).
        let first = events[0].seq;
        assert_eq!(outbox.time_at(first).await.expect("step 24"), Some(events[0].time));
        assert_eq!(outbox.time_at(first + 1).await.expect("step 25"), None);
        // The outbox's listener keeps a connection of the pool for its lifetime (closing the
        // pool would wait for it); dropping the database ends it.
        db.drop_database().await;
    }

    /// A write notifies the sequencer unless a sequencer said it is polling (its window in
    /// `outbox_polling.polled_until` open), and a sequencer that numbers events opens it.
    #[tokio::test]
    async fn writers_notify_only_while_no_sequencer_polls() {
        use std::time::Duration;
        let Some(db) = crate::testing::TestDatabase::create("platform_outbox_polling").await else {
            return;
        };
        let migrator = postgres_migrator();
        crate::db::migrate_postgres(&db.url, &migrator).await.expect("migrate");
        let pool = crate::db::connect_postgres(&db.url, ROLE, 4).await.expect("connect");
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.expect("listener");
        listener.listen(super::super::WRITTEN_CHANNEL).await.expect("listen");
        let acme = TenantId::parse("acme").expect("tenant");
        let append = || async {
            let mut tx = crate::db::begin_tenant(&pool, &acme).await.expect("begin");
            append_pg(&mut tx, &[event(&acme)]).await.expect("append");
            tx.commit().await.expect("commit");
        };
        let window = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query(sql).execute(&pool).await.expect("window");
            }
        };

        append().await;
        assert!(
            heard(&mut listener, Duration::from_secs(5)).await,
            "no sequencer polls: notified"
        );
        window("UPDATE outbox_polling SET polled_until = clock_timestamp() + interval '1 minute'").await;
        append().await;
        assert!(
            !heard(&mut listener, Duration::from_millis(500)).await,
            "a sequencer polls: not notified"
        );
        window("UPDATE outbox_polling SET polled_until = clock_timestamp() - interval '1 second'").await;
        append().await;
        assert!(
            heard(&mut listener, Duration::from_secs(5)).await,
            "the window closed: notified"
        );

        // A sequencer numbers the three (its first round comes at once) and opens the window.
        let outbox = PgOutbox::start(pool.clone()).await.expect("outbox");
        outbox.sequence().await.expect("sequence");
        let events = outbox
            .read(&Scope::Tenant(acme.clone()), 0, &[], None, 10)
            .await
            .expect("read");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let opened: bool =
            sqlx::query_scalar("SELECT polled_until > clock_timestamp() - interval '1 minute' FROM outbox_polling")
                .fetch_one(&pool)
                .await
                .expect("polled_until");
        assert!(opened, "the sequencer that numbered events says it polls");
        db.drop_database().await;
    }

    /// Whether `listener` hears a notification within `wait`.
    async fn heard(listener: &mut sqlx::postgres::PgListener, wait: std::time::Duration) -> bool {
        tokio::time::timeout(wait, listener.recv()).await.is_ok()
    }
}
