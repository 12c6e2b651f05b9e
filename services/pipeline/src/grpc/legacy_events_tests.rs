//! Upgrading over events written before typed events: a database holding them is migrated,
//! the service writes typed events next to them, and its feed serves both. The earlier rows
//! render through the legacy renderer as they did; the new ones render generically, to the
//! very messages the earlier renderer made of the same changes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use crm_platform::outbox::{Scope, StoredEvent};
use crm_platform::testing::TestDatabase;
use crm_platform::{ApiError, Principal, Role, TenantId, UserId};
use crm_proto::crm::events::v1 as feed;
use crm_proto::crm::events::v1::event_feed_server::EventFeed;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::{Message, Name};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use super::legacy_events;
use crate::PipelineService;
use crate::app::{Caller, DealInput, StageInput};
use crate::convert;
use crate::directory::Directory;
use crate::domain::{
    Deal, DealId, DealStatus, ForecastCategory, LineItem, Money, PipelineId, Rec, StageKind, Transition, TransitionKind,
};

/// A contact service that knows nobody (the case names no contacts).
struct NoDirectory;

#[async_trait]
impl Directory for NoDirectory {
    async fn contact(&self, _: &Caller, _: Uuid) -> Result<Option<Uuid>, ApiError> {
        Ok(None)
    }
    async fn company(&self, _: &Caller, _: Uuid) -> Result<Option<Uuid>, ApiError> {
        Ok(None)
    }
}

fn acme() -> TenantId {
    TenantId::parse("acme").expect("tenant")
}

fn admin() -> Principal {
    Principal {
        tenant: acme(),
        user: UserId::parse("alice").expect("user"),
        roles: vec![Role::Admin],
    }
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR").expect("money")
}

/// An event row as the service wrote it before typed events.
struct OldRow {
    id: Uuid,
    kind: String,
    subject: String,
    time: DateTime<Utc>,
    actor: &'static str,
    payload: Value,
}

/// A deal as a legacy event recorded it, and the move it reported.
fn old_deal() -> (Rec<Deal>, Transition) {
    let time = Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).single().expect("time");
    let (from, to) = (Uuid::from_u128(0xf1), Uuid::from_u128(0xf2));
    let deal = Rec {
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0d01),
        revision: 2,
        create_time: time - chrono::Duration::days(3),
        update_time: time,
        body: Deal {
            name: "Analytical engine".into(),
            pipeline: Uuid::from_u128(0xe1),
            stage: to,
            status: DealStatus::Open,
            amount: eur(150_000),
            close_date: None,
            owner: "alice".into(),
            contact: None,
            company: None,
            forecast: ForecastCategory::BestCase,
            lines: vec![LineItem {
                product: Uuid::from_u128(0xa1),
                sku: "AE-1".into(),
                name: "Engine".into(),
                quantity: 3,
                unit_price: eur(50_000),
                discount_bps: 0,
            }],
            close_reason: String::new(),
            close_time: None,
            lead: None,
            stage_enter_time: time,
            transitions: 2,
            external_id: None,
        },
    };
    let transition = Transition {
        deal: deal.id,
        seq: 2,
        kind: TransitionKind::Moved,
        from_stage: Some(from),
        to_stage: to,
        from_stage_name: "Qualify".into(),
        to_stage_name: "Proposal".into(),
        amount: deal.body.amount.clone(),
        actor: "alice".into(),
        time,
        reason: String::new(),
    };
    (deal, transition)
}

/// The earlier payload of a deal's move: the deal after it, and the transition.
fn old_move_payload(deal: &Rec<Deal>, t: &Transition) -> Value {
    json!({
        "record": serde_json::to_value(deal).expect("deal"),
        "transition": {
            "seq": t.seq,
            "kind": serde_json::to_value(t.kind).expect("kind"),
            "from_stage": t.from_stage,
            "to_stage": t.to_stage,
            "from_stage_name": t.from_stage_name,
            "to_stage_name": t.to_stage_name,
            "amount": serde_json::to_value(&t.amount).expect("amount"),
            "actor": t.actor,
            "time": t.time.timestamp_micros(),
            "reason": t.reason,
        },
    })
}

fn old_rows() -> Vec<OldRow> {
    let (deal, transition) = old_deal();
    vec![
        OldRow {
            id: Uuid::now_v7(),
            kind: pb::DealStageChanged::full_name(),
            subject: format!("deals/{}", deal.id),
            time: deal.update_time,
            actor: "alice",
            payload: old_move_payload(&deal, &transition),
        },
        OldRow {
            id: Uuid::now_v7(),
            kind: pb::OwnerChanged::full_name(),
            subject: format!("deals/{}", deal.id),
            time: deal.update_time,
            actor: "boss",
            payload: json!({
                "record": serde_json::to_value(&deal).expect("deal"),
                "old_owner": "leaver",
                "new_owner": "alice",
            }),
        },
    ]
}

/// What the old rows must still render to.
fn old_messages() -> Vec<(String, Vec<u8>)> {
    let (deal, transition) = old_deal();
    vec![
        (
            pb::DealStageChanged::full_name(),
            pb::DealStageChanged {
                deal: Some(convert::deal(&deal)),
                transition: Some(convert::transition(&transition)),
            }
            .encode_to_vec(),
        ),
        (
            pb::OwnerChanged::full_name(),
            pb::OwnerChanged {
                resource: format!("deals/{}", deal.id),
                old_owner: "leaver".into(),
                new_owner: "alice".into(),
            }
            .encode_to_vec(),
        ),
    ]
}

/// The service's own migrations alone: the schema before typed events.
fn before(service: &Migrator) -> Migrator {
    Migrator::with_migrations(
        service
            .iter()
            .filter(|m| m.version < crm_platform::outbox::migrations::FIRST_VERSION)
            .cloned()
            .collect(),
    )
}

async fn write_old_sqlite(path: &Path) {
    // The service's migrations as they were: the first alone (0002 adds `format`).
    let old = Migrator::with_migrations(
        sqlx::migrate!("./migrations/sqlite")
            .iter()
            .filter(|m| m.version == 1)
            .cloned()
            .collect(),
    );
    let pool = crm_platform::db::open_sqlite(path, &old).await.expect("old sqlite");
    let mut tx = crm_platform::db::begin_sqlite_write(&pool).await.expect("tx");
    for row in old_rows() {
        let seq: i64 = sqlx::query_scalar("UPDATE outbox_head SET seq = seq + 1 WHERE only_row = 1 RETURNING seq")
            .fetch_one(&mut *tx)
            .await
            .expect("seq");
        sqlx::query(
            "INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8)",
        )
        .bind("acme")
        .bind(row.id.to_string())
        .bind(seq)
        .bind(&row.kind)
        .bind(&row.subject)
        .bind(row.time.timestamp_micros())
        .bind(row.actor)
        .bind(row.payload.to_string())
        .execute(&mut *tx)
        .await
        .expect("old row");
    }
    tx.commit().await.expect("commit");
    pool.close().await;
}

async fn write_old_postgres(url: &str) {
    crm_platform::db::migrate_postgres(url, &before(&crate::store::POSTGRES_MIGRATIONS))
        .await
        .expect("old migrations");
    let pool = crm_platform::db::connect_postgres(url, crate::store::POSTGRES_APP_ROLE, 1)
        .await
        .expect("connect");
    let mut tx = crm_platform::db::begin_tenant(&pool, &acme()).await.expect("tx");
    for row in old_rows() {
        sqlx::query(
            "INSERT INTO outbox_events (tenant_id, id, type, subject, time, actor, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind("acme")
        .bind(row.id)
        .bind(&row.kind)
        .bind(&row.subject)
        .bind(row.time)
        .bind(row.actor)
        .bind(&row.payload)
        .execute(&mut *tx)
        .await
        .expect("old row");
    }
    tx.commit().await.expect("commit");
    pool.close().await;
}

/// Writes typed events through the application; returns the messages they must render to.
async fn write_new(service: &PipelineService) -> Vec<(String, Vec<u8>)> {
    let who = Caller {
        who: admin(),
        credentials: String::new(),
    };
    let stage = |name: &str, kind| StageInput {
        id: None,
        name: name.into(),
        probability: 50,
        kind,
    };
    let app = &service.app;
    let pipeline = app
        .create_pipeline(
            &who,
            "New business".into(),
            vec![
                stage("Qualify", StageKind::Open),
                stage("Proposal", StageKind::Open),
                stage("Won", StageKind::Won),
                stage("Lost", StageKind::Lost),
            ],
            None,
        )
        .await
        .expect("pipeline");
    let deal = app
        .create_deal(
            &who,
            DealInput {
                name: "Difference engine".into(),
                pipeline: PipelineId(pipeline.id),
                stage: None,
                amount: Some(eur(90_000)),
                close_date: Some(crate::domain::values::date("2027-01-31").expect("date")),
                owner: None,
                contact: None,
                company: None,
                forecast: None,
                lines: vec![],
            },
            None,
        )
        .await
        .expect("deal");
    let (moved, transition) = app
        .move_deal(&who, DealId(deal.id), pipeline.body.stages[1].id, Some(deal.revision))
        .await
        .expect("move");
    vec![
        (
            pb::PipelineCreated::full_name(),
            pb::PipelineCreated {
                pipeline: Some(convert::pipeline(&pipeline)),
            }
            .encode_to_vec(),
        ),
        (
            pb::DealCreated::full_name(),
            pb::DealCreated {
                deal: Some(convert::deal(&deal)),
            }
            .encode_to_vec(),
        ),
        (
            pb::DealStageChanged::full_name(),
            // What the earlier renderer made of this move's earlier payload: the same message.
            legacy_events::render(&StoredEvent {
                seq: 0,
                id: Uuid::now_v7(),
                tenant: "acme".into(),
                kind: pb::DealStageChanged::full_name(),
                subject: format!("deals/{}", moved.id),
                time: moved.update_time,
                actor: "alice".into(),
                traceparent: String::new(),
                payload: old_move_payload(&moved, &transition),
                legacy: true,
            })
            .expect("earlier render")
            .value,
        ),
    ]
}

/// The tenant's events as its feed serves them, `count` of them, in sequence order.
async fn served(service: &PipelineService, count: usize) -> Vec<feed::Event> {
    let server = service.event_feed(Duration::from_secs(60));
    let mut request = tonic::Request::new(feed::SubscribeRequest {
        after_sequence: 0,
        types: vec![],
        ..Default::default()
    });
    request.extensions_mut().insert(admin());
    let mut stream = server.subscribe(request).await.expect("subscribe").into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the feed goes on")
            .expect("an event that renders");
        if let Some(feed::subscribe_response::Kind::Event(event)) = next.kind {
            events.push(event);
        }
    }
    events
}

async fn check(service: &PipelineService) {
    let mut expected = old_messages();
    expected.extend(write_new(service).await);
    // (Served first: on PostgreSQL that waits for the sequencer to number the new events.)
    let events = served(service, expected.len()).await;
    let stored = service
        .outbox
        .read(&Scope::Tenant(acme()), 0, &[], None, 100)
        .await
        .expect("read");
    assert_eq!(
        stored.iter().map(|e| e.legacy).collect::<Vec<_>>(),
        [true, true, false, false, false],
        "the rows written before typed events are told apart"
    );
    assert_eq!(events.len(), expected.len());
    for (event, (kind, message)) in events.iter().zip(&expected) {
        assert_eq!(&event.r#type, kind);
        let payload = event.payload.as_ref().expect("payload");
        assert_eq!(payload.type_url, format!("type.googleapis.com/{kind}"));
        assert_eq!(&payload.value, message, "{kind} renders as it did");
    }
    // And a consumer decodes them as the messages they are.
    let moved = crm_platform::consumer::payload::<pb::DealStageChanged>(&events[4])
        .expect("a stage change")
        .expect("decodes");
    assert_eq!(moved.transition.expect("transition").to_stage_name, "Proposal");
}

#[tokio::test]
async fn legacy_and_typed_events_render_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.db");
    write_old_sqlite(&path).await;
    let service = crate::open_sqlite(&path, Arc::new(NoDirectory))
        .await
        .expect("upgraded");
    check(&service).await;
    // Migrating again is a no-op.
    crm_platform::db::open_sqlite(&path, &crate::store::SQLITE_MIGRATIONS)
        .await
        .expect("again");
}

#[tokio::test]
async fn legacy_and_typed_events_render_on_postgres() {
    let Some(db) = TestDatabase::create("pipeline_legacy_events").await else {
        return;
    };
    write_old_postgres(&db.url).await;
    crate::migrate_postgres(&db.url).await.expect("upgrade");
    let service = crate::connect_postgres(&db.url, 4, Arc::new(NoDirectory))
        .await
        .expect("connect");
    check(&service).await;
    drop(service);
    db.drop_database().await;
}
