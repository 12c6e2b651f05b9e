//! The outbox on PostgreSQL: the sequencer reads only the events it has yet to number.

use super::*;

/// The sequencer finds unnumbered events by a plain index scan of the partial index made for
/// them: numbering leaves each event's old, unnumbered version behind until vacuum, and only
/// a plain index scan marks those dead as it passes. A bitmap scan (what the planner chose
/// on its own) read the heap page of every event numbered since the last vacuum, on every
/// pass. And no JIT: a disabled scan's penalty cost would have the counter compiled.
#[tokio::test]
async fn postgres_sequencer_reads_only_unnumbered_events() {
    use crm_platform::outbox::{NUMBER_EVENTS, NewEvent, Outbox, PgOutbox, append_pg};
    let Some(db) = TestDatabase::create("postgres_sequencer_reads_only_unnumbered_events").await else {
        return;
    };
    migrate_test_db(&db.url).await;
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 4)
        .await
        .expect("connect");
    let outbox = PgOutbox::start(pool.clone()).await.expect("outbox");
    for round in 0..3 {
        let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("seq")).await.expect("tx");
        let events: Vec<NewEvent> = (0..200)
            .map(|i| NewEvent {
                id: uuid::Uuid::now_v7(),
                tenant: "seq".to_owned(),
                kind: "crm.contact.v1.ContactCreated".to_owned(),
                subject: format!("contacts/{round}-{i}"),
                time: Utc::now(),
                actor: "tester".to_owned(),
                traceparent: String::new(),
                payload: "{}".to_owned(),
            })
            .collect();
        append_pg(&mut tx, &events).await.expect("append");
        tx.commit().await.expect("commit");
        outbox.sequence().await.expect("sequence");
    }
    let bounds = outbox.bounds().await.expect("bounds");
    assert_eq!(bounds.head, 600, "every event numbered, once");

    let mut tx = crm_platform::db::begin_queue_scan(&pool).await.expect("sequencer tx");
    let plan: serde_json::Value =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {NUMBER_EVENTS}")))
            .bind(600_i64)
            .bind(10_000_i64)
            .fetch_one(&mut *tx)
            .await
            .expect("explain");
    let plan = plan.to_string();
    assert!(
        plan.contains(r#""Node Type":"Index Scan""#) && plan.contains(r#""Index Name":"outbox_events_unsequenced""#),
        "unnumbered events are read by an index scan of outbox_events_unsequenced: {plan}"
    );
    assert!(!plan.contains("Bitmap"), "no bitmap scan: {plan}");
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&mut *tx).await.expect("jit");
    assert_eq!(jit, "off");
    drop(tx);
    // The outbox's listener keeps a connection of the pool for its lifetime (closing the pool
    // would wait for it); dropping the database ends it.
    db.drop_database().await;
}
