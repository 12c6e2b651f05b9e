//! Events: written by the store with the change the application emitted them for, never with
//! a change that failed; rendered as the typed message they were emitted as; rows written by
//! the triggers before typed events still render.

use std::sync::Arc;

use crm_platform::Principal;
use crm_platform::outbox::{Outbox, PgOutbox, Scope};
use crm_proto::crm::contact::v1 as pb;
use crm_proto::prost::{Message, Name};

use super::*;

fn principal(t: &TenantId) -> Principal {
    Principal {
        tenant: t.clone(),
        user: user("alice"),
        roles: vec![crm_platform::Role::Admin],
    }
}

async fn events_are_written_with_their_change(store: &dyn ContactStore, outbox: &dyn Outbox) {
    let t = tenant("events");
    let who = principal(&t);
    let c = contact(fields("Ann", "Lee", "ann@example.com"));
    let of = Audited::Contact(c.id);
    let created = crate::app::events::audit(
        &who,
        of,
        ChangeAction::Created,
        changes(None, Some(&c.fields)),
        c.create_time,
    )
    .expect("audit");
    store
        .create_contact(&t, &c, None, &created, false)
        .await
        .expect("create");
    // A write that fails writes none of its events.
    let mut next = c.clone();
    next.fields.consent.email = Some(ChannelConsent {
        status: ConsentStatus::OptedIn,
        time: c.create_time,
        source: "web-form".into(),
    });
    next.revision = c.revision.next();
    let consent = crate::app::events::audit(
        &who,
        of,
        ChangeAction::Updated,
        changes(Some(&c.fields), Some(&next.fields)),
        c.create_time,
    )
    .expect("audit");
    assert!(matches!(
        store.update_contact(&t, &next, c.revision.next(), &consent).await,
        Err(StoreError::RevisionMismatch)
    ));
    store
        .update_contact(&t, &next, c.revision, &consent)
        .await
        .expect("update");
    let call = interaction(c.id, 5);
    store
        .create_interaction(&t, &call, None, &logged(&t))
        .await
        .expect("call");

    // Committed events are numbered by the outbox's sequencer (PostgreSQL) before a feed sees
    // them.
    let mut events = Vec::new();
    for _ in 0..200 {
        events = outbox
            .read(&Scope::Tenant(t.clone()), 0, &[], None, 10)
            .await
            .expect("read");
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            pb::ContactCreated::full_name(),
            pb::ConsentChanged::full_name(),
            pb::InteractionLogged::full_name()
        ]
    );
    assert!(events.iter().all(|e| !e.legacy));
    assert_eq!(events[0].actor, "alice");
    let created = events[0].decode::<pb::ContactCreated>().expect("decode");
    assert_eq!(created.contact, c.id.name());
    let given = created
        .fields
        .iter()
        .find(|f| f.field == "given_name")
        .expect("given_name");
    assert_eq!(
        given.new_value.as_ref().and_then(|v| v.kind.clone()),
        Some(crm_proto::prost_types::value::Kind::StringValue("Ann".into()))
    );
    let consent = events[1].decode::<pb::ConsentChanged>().expect("decode");
    assert_eq!(
        consent
            .changed_fields
            .iter()
            .map(|f| f.field.as_str())
            .collect::<Vec<_>>(),
        ["consent"]
    );
    let logged = events[2].decode::<pb::InteractionLogged>().expect("decode");
    assert_eq!((logged.interaction, logged.contact), (call.name(), c.id.name()));
    assert_eq!(logged.duration_ms, call.fields.duration_ms.unwrap_or_default());
}

/// An event the outbox trigger wrote before typed events, as it stored it.
fn legacy_payload() -> serde_json::Value {
    serde_json::json!({"action": "updated", "changes": [{"field": "title", "old": null, "new": "CFO"}]})
}

fn assert_legacy_renders(events: &[crm_platform::outbox::StoredEvent]) {
    assert_eq!(events.len(), 1);
    assert!(events[0].legacy);
    let any = crate::grpc::legacy_events::render(&events[0]).expect("legacy render");
    let updated = pb::ContactUpdated::decode(any.value.as_slice()).expect("decode");
    assert_eq!(updated.contact, "contacts/0190f0a0-0000-7000-8000-000000000001");
    assert_eq!(updated.changed_fields[0].field, "title");
}

#[tokio::test]
async fn sqlite_events_are_written_with_their_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = crm_platform::db::open_sqlite(&dir.path().join("contact.db"), &SQLITE_MIGRATIONS)
        .await
        .expect("sqlite");
    let store = SqliteContactStore::new(pool.clone());
    let outbox = store.outbox();
    events_are_written_with_their_change(&store, outbox.as_ref()).await;

    sqlx::query(
        "INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, payload) \
         VALUES ('legacy', ?1, (SELECT seq + 1 FROM outbox_head), 'crm.contact.v1.ContactUpdated', \
         'contacts/0190f0a0-0000-7000-8000-000000000001', 0, 'alice', ?2)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(legacy_payload().to_string())
    .execute(&pool)
    .await
    .expect("legacy row");
    sqlx::query("UPDATE outbox_head SET seq = seq + 1")
        .execute(&pool)
        .await
        .expect("head");
    assert_legacy_renders(
        &outbox
            .read(&Scope::Tenant(tenant("legacy")), 0, &[], None, 10)
            .await
            .expect("read"),
    );
}

#[tokio::test]
async fn postgres_events_are_written_with_their_change() {
    let Some(db) = TestDatabase::create("postgres_events_are_written_with_their_change").await else {
        return;
    };
    migrate_test_db(&db.url).await;
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 4)
        .await
        .expect("connect");
    let store = PgContactStore::new(pool.clone());
    let outbox: Arc<PgOutbox> = PgOutbox::start(pool.clone()).await.expect("outbox");
    events_are_written_with_their_change(&store, outbox.as_ref()).await;

    let owner = sqlx::PgPool::connect(&db.url).await.expect("owner");
    sqlx::query(
        "INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, payload) \
         VALUES ('legacy', $1, 'crm.contact.v1.ContactUpdated', 'contacts/0190f0a0-0000-7000-8000-000000000001', now(), 'alice', $2)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(legacy_payload())
    .execute(&owner)
    .await
    .expect("legacy row");
    owner.close().await;
    outbox.sequence().await.expect("sequence");
    assert_legacy_renders(
        &outbox
            .read(&Scope::Tenant(tenant("legacy")), 0, &[], None, 10)
            .await
            .expect("read"),
    );
    // The outbox's listener keeps a connection of the pool for its lifetime (closing the
    // pool would wait for it); dropping the database ends it.
    db.drop_database().await;
}
