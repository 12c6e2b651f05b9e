//! The transactional outbox and its change feed, shared by every producing service.
//!
//! A producer's application emits typed events ([`NewEvent::of`] a generated message) and its
//! store writes them in the transaction of the change itself ([`append_pg`], [`append_sqlite`];
//! the tables are the platform's, see [`migrations`]). This module also holds the reading side: it numbers committed events (PostgreSQL), wakes feeds when events commit
//! (LISTEN/NOTIFY on PostgreSQL, an in-process signal on SQLite), serves a feed from any
//! retained sequence (catch-up, then live, with heartbeats while idle), and prunes events
//! older than the retention.
//!
//! On PostgreSQL a write notifies the sequencer only while no sequencer is polling: one that
//! numbered events keeps looking for a short window and says so in `outbox_polling`
//! (`POLL_WINDOW`), because PostgreSQL serialises the commits of notifying transactions. An
//! idle outbox is still woken by the write's notification, never by a polling loop alone.
//!
//! Sequence numbers are per source, gap-free and strictly increasing, and a feed never sees
//! a number before every smaller one is visible: on PostgreSQL, writers insert events without
//! a number and one sequencer at a time (serialised on `outbox_head`'s row) numbers committed
//! events in id order; on SQLite, writers are serialised and number their own events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::TenantId;
use crate::db::{begin_all_tenants, begin_queue_scan};

/// Numbers up to `$2` committed unnumbered events in id order, after `$1`: the sequencer's
/// statement, run in a transaction begun by [`crate::db::begin_queue_scan`].
pub const NUMBER_EVENTS: &str = "WITH todo AS (SELECT tenant_id, id, row_number() OVER (ORDER BY id) AS n FROM outbox_events \
     WHERE seq IS NULL ORDER BY id LIMIT $2) \
     UPDATE outbox_events AS e SET seq = $1 + todo.n FROM todo WHERE e.tenant_id = todo.tenant_id AND e.id = todo.id";

/// The PostgreSQL channel writers notify when they commit events (sent by `outbox_append`).
pub const WRITTEN_CHANNEL: &str = "crm_outbox";
/// The PostgreSQL channel the sequencer notifies when it has numbered events.
pub const SEQUENCED_CHANNEL: &str = "crm_outbox_head";
/// Events read from the outbox per query.
const READ_BATCH: usize = 500;
/// Events numbered per sequencing transaction.
const SEQUENCE_BATCH: i64 = 10_000;
/// How long the sequencer waits after a wake-up for more commits to number together: a
/// bounded latency (well under the feed's 100 ms target) for far fewer sequencing commits.
const GATHER: Duration = Duration::from_millis(5);
/// How often the sequencer runs even without a notification (a lost notification, a
/// listener reconnecting): a safety net, not the wake-up.
const SAFETY_TICK: Duration = Duration::from_secs(1);
/// How long a sequencer that numbered events keeps looking for more without being woken (every
/// [`GATHER`]), and promises so in `outbox_polling.polled_until`: writers meanwhile do not notify.
/// PostgreSQL serialises the commits of notifying transactions (their WAL flushes do not
/// group), so a notification in every write capped a service's writes.
const POLL_WINDOW: Duration = Duration::from_millis(100);

pub mod migrations;

/// The `format` of an event whose payload is proto3 JSON of the message its type names.
const FORMAT_PROTO_JSON: i16 = 1;

/// An event as stored: the envelope and its JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: Uuid,
    pub tenant: String,
    pub kind: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub traceparent: String,
    pub payload: serde_json::Value,
    /// Written before events were typed: the payload is in the producer's own earlier form,
    /// which only its legacy renderer reads (such events leave with the retention).
    pub legacy: bool,
}

impl StoredEvent {
    /// The payload as the message `M` (of the event's type).
    pub fn decode<M: crm_proto::prost::Name + crm_proto::prost::Message + Default>(&self) -> Result<M, String> {
        if self.kind != M::full_name() {
            return Err(format!("the event is a {}, not a {}", self.kind, M::full_name()));
        }
        crm_proto::json::from_json(&self.payload, &self.kind)
    }
}

/// An event a producer appends in the transaction of the change it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant: String,
    /// Fully qualified payload type, e.g. `crm.pipeline.v1.DealCreated`.
    pub kind: String,
    pub subject: String,
    pub time: DateTime<Utc>,
    pub actor: String,
    /// The W3C traceparent of the request that made the change (empty when none).
    pub traceparent: String,
    /// The payload as proto3 JSON text.
    pub payload: String,
}

impl NewEvent {
    /// The event whose payload is `message`, its type the message's own name, carrying the
    /// current request's trace.
    pub fn of<M: crm_proto::prost::Name>(
        tenant: &TenantId,
        subject: String,
        actor: &str,
        time: DateTime<Utc>,
        message: &M,
    ) -> Result<Self, EventError> {
        let kind = M::full_name();
        let payload = crm_proto::json::to_json_text(message, &kind).map_err(|reason| EventError {
            kind: kind.clone(),
            reason,
        })?;
        Ok(Self {
            id: Uuid::now_v7(),
            tenant: tenant.as_str().to_owned(),
            kind,
            subject,
            time,
            actor: actor.to_owned(),
            traceparent: traceparent_now(),
            payload,
        })
    }
}

/// An event that could not be written as JSON (its type is missing from the descriptors).
#[derive(Debug, Clone, thiserror::Error)]
#[error("event {kind} cannot be written: {reason}")]
pub struct EventError {
    pub kind: String,
    pub reason: String,
}

impl From<EventError> for crate::ApiError {
    fn from(err: EventError) -> Self {
        crate::ApiError::internal(&err)
    }
}

/// Events one array per column, as `outbox_append` (PostgreSQL) takes them.
pub struct EventColumns<'a> {
    pub tenants: Vec<&'a str>,
    pub ids: Vec<Uuid>,
    pub types: Vec<&'a str>,
    pub subjects: Vec<&'a str>,
    pub times: Vec<DateTime<Utc>>,
    pub actors: Vec<&'a str>,
    pub traceparents: Vec<&'a str>,
    /// JSON text, bound as `text[]` and cast to `jsonb[]` by the statement.
    pub payloads: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    pub fn of<E: std::borrow::Borrow<NewEvent>>(all: &'a [E]) -> Self {
        let events = || all.iter().map(|e| e.borrow());
        Self {
            tenants: events().map(|e| e.tenant.as_str()).collect(),
            ids: events().map(|e| e.id).collect(),
            types: events().map(|e| e.kind.as_str()).collect(),
            subjects: events().map(|e| e.subject.as_str()).collect(),
            times: events().map(|e| e.time).collect(),
            actors: events().map(|e| e.actor.as_str()).collect(),
            traceparents: events().map(|e| e.traceparent.as_str()).collect(),
            payloads: events().map(|e| e.payload.as_str()).collect(),
        }
    }
}

/// The current request's traceparent, if any.
fn traceparent_now() -> String {
    crate::telemetry::current_traceparent().unwrap_or_default()
}

/// Appends events in a PostgreSQL transaction (unnumbered; the sequencer numbers them once
/// committed) and notifies the sequencer, which hears it on commit.
pub async fn append_pg(tx: &mut sqlx::PgConnection, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let c = EventColumns::of(events);
    sqlx::query("SELECT outbox_append($1, $2, $3, $4, $5, $6, $7, $8::text[]::jsonb[])")
        .bind(c.tenants)
        .bind(c.ids)
        .bind(c.types)
        .bind(c.subjects)
        .bind(c.times)
        .bind(c.actors)
        .bind(c.traceparents)
        .bind(c.payloads)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Appends events in an SQLite write transaction, numbering them (writers are serialised, so
/// numbers are gap-free and in commit order). Call [`SqliteOutbox::committed`] after commit.
pub async fn append_sqlite<E: std::borrow::Borrow<NewEvent> + Sync>(
    tx: &mut sqlx::SqliteConnection,
    events: &[E],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let head: i64 = sqlx::query_scalar("UPDATE outbox_head SET seq = seq + ?1 RETURNING seq")
        .bind(count)
        .fetch_one(&mut *tx)
        .await?;
    let first = head - count + 1;
    // Ten values a row, within SQLite's limit of bound values per statement.
    for (chunk_index, chunk) in events.chunks(3_000).enumerate() {
        let offset = i64::try_from(chunk_index * 3_000).unwrap_or(i64::MAX);
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload, format) ",
        );
        insert.push_values(chunk.iter().zip(first + offset..), |mut row, (event, seq)| {
            let event: &NewEvent = event.borrow();
            row.push_bind(event.tenant.clone())
                .push_bind(event.id.to_string())
                .push_bind(seq)
                .push_bind(event.kind.clone())
                .push_bind(event.subject.clone())
                .push_bind(event.time.timestamp_micros())
                .push_bind(event.actor.clone())
                .push_bind(event.traceparent.clone())
                .push_bind(event.payload.clone())
                .push_bind(FORMAT_PROTO_JSON);
        });
        insert.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Whose events a reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's (a user of that tenant).
    Tenant(TenantId),
    /// Every tenant's (a service principal).
    AllTenants,
}

/// The retained range of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The oldest retained sequence number (head + 1 when nothing is retained).
    pub oldest: u64,
    /// The highest sequence number committed.
    pub head: u64,
}

/// Reading an outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Events visible to `scope` after `after`, of the given types (all when empty), in
    /// sequence order, up to `limit`; of `partition`'s tenants when given (an outbox may return
    /// others too: the reader filters again).
    async fn read(
        &self,
        scope: &Scope,
        after: u64,
        types: &[String],
        partition: Option<crate::partition::Partition>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, sqlx::Error>;
    /// The oldest retained event and the head (a subscription's start).
    async fn bounds(&self) -> Result<Bounds, sqlx::Error>;
    /// The head alone: the last number given, every event up to it committed and numbered.
    /// A feed reads it at every wake-up; the oldest retained event costs more to find.
    async fn head(&self) -> Result<u64, sqlx::Error>;
    /// The time of the first retained event (of any tenant) numbered `seq` or later; None when
    /// there is none. One read of the sequence's index: what [`sequence_before`] searches by.
    async fn time_at(&self, seq: u64) -> Result<Option<DateTime<Utc>>, sqlx::Error>;
    /// Publishes events that belong to no other write (usage reports), in a transaction of
    /// their own.
    async fn publish(&self, events: &[NewEvent]) -> Result<(), sqlx::Error>;
    /// Deletes events committed before `before`; returns how many.
    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error>;
    /// Changes whenever events may have been committed.
    fn wakeups(&self) -> watch::Receiver<u64>;
}

/// How far before its number an event's time may run: an event's time is taken when it is
/// made, its number when its transaction has committed, so the two orders differ by the
/// length of a transaction at most.
pub const SEEK_MARGIN: chrono::Duration = chrono::Duration::hours(1);

/// A sequence to follow an outbox after so that every event committed at or after `time` is
/// read (and some before it, up to [`SEEK_MARGIN`] or so): 0 when that is the oldest. A
/// binary search of the numbers by the events' times, a few dozen reads of the sequence's
/// index, instead of an index on the time that every write would pay for.
pub async fn sequence_before(outbox: &dyn Outbox, time: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let target = time - SEEK_MARGIN;
    // The last number whose event is before the target: found in [low, high] (0 stands for
    // the oldest retained, whatever its number: what `time_at(0)` reads).
    if outbox.time_at(0).await?.is_none_or(|first| first >= target) {
        return Ok(0);
    }
    let (mut low, mut high) = (0, outbox.head().await?);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        match outbox.time_at(mid).await? {
            Some(at) if at < target => low = mid,
            _ => high = mid - 1,
        }
    }
    Ok(low)
}

/// Why a subscription cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("events after {after} are no longer retained; the oldest available is {oldest}")]
    OutOfRange { after: u64, oldest: u64 },
    #[error("outbox unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// One message of a feed.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    Event(StoredEvent),
    /// Sent after `heartbeat` without events: the feed is alive, and up to `head`.
    Heartbeat {
        time: DateTime<Utc>,
        head: u64,
    },
}

/// Where a follower stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Never: new events are followed as they commit.
    Ever,
    /// Once the events up to the head are delivered (a read of what is retained).
    Head,
}

/// Follows an outbox from `after`: the retained events after it (of `partition`'s tenants
/// when given), then each new one as it commits, with a heartbeat after every `heartbeat`
/// without events, or until the head with [`Until::Head`]. The channel is bounded:
/// a slow reader slows the feed, and the feed ends when the reader goes away.
pub async fn follow(
    outbox: Arc<dyn Outbox>,
    scope: Scope,
    after: u64,
    types: Vec<String>,
    partition: Option<crate::partition::Partition>,
    heartbeat: Duration,
    until: Until,
) -> Result<mpsc::Receiver<Result<FeedItem, FeedError>>, FeedError> {
    let bounds = outbox.bounds().await?;
    if after > 0 && after.saturating_add(1) < bounds.oldest {
        return Err(FeedError::OutOfRange {
            after,
            oldest: bounds.oldest,
        });
    }
    let (tx, rx) = mpsc::channel(READ_BATCH);
    tokio::spawn(async move {
        let mut wakeups = outbox.wakeups();
        let mut cursor = after;
        loop {
            wakeups.borrow_and_update();
            // Every event up to the head read here is committed and numbered, so once a read
            // comes back short the cursor may move to it (events filtered out included).
            let head = match outbox.head().await {
                Ok(head) => head,
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            };
            let events = match outbox.read(&scope, cursor, &types, partition, READ_BATCH).await {
                Ok(events) => events,
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            };
            let full = events.len() == READ_BATCH;
            for event in events {
                cursor = event.seq;
                // Another partition's tenant: read past, not delivered.
                if partition.is_some_and(|p| !p.holds(event.tenant.as_str())) {
                    continue;
                }
                if tx.send(Ok(FeedItem::Event(event))).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            if until == Until::Head {
                return;
            }
            cursor = cursor.max(head);
            tokio::select! {
                changed = wakeups.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(heartbeat) => {
                    let beat = FeedItem::Heartbeat { time: Utc::now(), head: cursor };
                    if tx.send(Ok(beat)).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

/// Deletes events older than `retention` every `every`, until the process ends.
pub fn spawn_pruner(outbox: Arc<dyn Outbox>, retention: Duration, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Ok(retention) = chrono::Duration::from_std(retention) else {
                return;
            };
            match outbox.prune(Utc::now() - retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "outbox events past retention pruned"),
                Err(err) => tracing::warn!(error = %err, "outbox pruning failed"),
            }
        }
    });
}

fn seq(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or_default()
}

fn bound(raw: u64) -> i64 {
    i64::try_from(raw).unwrap_or(i64::MAX)
}

/// The outbox of a PostgreSQL producer.
pub struct PgOutbox {
    pool: PgPool,
    wakeups: watch::Sender<u64>,
}

impl PgOutbox {
    /// Starts the sequencer and the listener that wakes feeds; they run until the process
    /// ends. `pool` connects as the producer's serving role.
    pub async fn start(pool: PgPool) -> Result<Arc<Self>, sqlx::Error> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all([WRITTEN_CHANNEL, SEQUENCED_CHANNEL]).await?;
        let outbox = Arc::new(Self {
            pool,
            wakeups: watch::Sender::new(0),
        });
        let runner = Arc::clone(&outbox);
        tokio::spawn(async move { runner.run(listener).await });
        Ok(outbox)
    }

    async fn run(&self, mut listener: PgListener) {
        let mut tick = tokio::time::interval(SAFETY_TICK);
        // Until when this sequencer promised to keep looking (see POLL_WINDOW): it keeps
        // sequencing until a round has begun after then (the first one at once, for what was
        // left unnumbered before it started).
        let mut polling_until = tokio::time::Instant::now();
        let mut round_began = polling_until;
        loop {
            let mut sequence = if round_began <= polling_until {
                true
            } else {
                tokio::select! {
                    notification = listener.try_recv() => self.noted(notification).await,
                    _ = tick.tick() => true,
                }
            };
            // Let a busy moment's commits gather, then take every notification already here:
            // one sequencing transaction numbers all their events.
            if sequence {
                tokio::time::sleep(GATHER).await;
            }
            while let Some(notification) = listener.try_recv().now_or_never() {
                sequence |= self.noted(notification).await;
            }
            if sequence {
                round_began = tokio::time::Instant::now();
                match self.sequence().await {
                    Ok(0) => {}
                    Ok(_) => {
                        // Reckoned after the commit, so never earlier than the database's.
                        polling_until = tokio::time::Instant::now() + POLL_WINDOW;
                        self.wake();
                    }
                    Err(err) => tracing::warn!(error = %err, "outbox sequencing failed"),
                }
            }
        }
    }

    /// Handles one notification; true when there may be events to number.
    async fn noted(&self, notification: Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>) -> bool {
        match notification {
            Ok(Some(n)) if n.channel() == SEQUENCED_CHANNEL => {
                self.wake();
                false
            }
            Ok(Some(_)) => true,
            // The connection was lost and is re-established on the next call: events may have
            // been missed meanwhile.
            Ok(None) => true,
            Err(err) => {
                tracing::warn!(error = %err, "outbox listener failed");
                tokio::time::sleep(SAFETY_TICK).await;
                true
            }
        }
    }

    fn wake(&self) {
        self.wakeups.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Numbers committed events until none is left; returns how many.
    pub async fn sequence(&self) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let mut tx = begin_queue_scan(&self.pool).await?;
            // Taking the counter's row first serialises sequencers, and the statement below
            // then sees every event committed before it.
            let head: i64 = sqlx::query_scalar("SELECT seq FROM outbox_head FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
            let numbered = sqlx::query(NUMBER_EVENTS)
                .bind(head)
                .bind(SEQUENCE_BATCH)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if numbered == 0 {
                tx.rollback().await?;
                return Ok(total);
            }
            let head = head + i64::try_from(numbered).unwrap_or(i64::MAX);
            sqlx::query("UPDATE outbox_head SET seq = $1")
                .bind(head)
                .execute(&mut *tx)
                .await?;
            // Writers need not notify while this sequencer keeps looking (see POLL_WINDOW); the
            // row every writer reads is rewritten once the window is half gone.
            sqlx::query(
                "UPDATE outbox_polling SET polled_until = clock_timestamp() + make_interval(secs => $1) \
                 WHERE polled_until < clock_timestamp() + make_interval(secs => $1 / 2)",
            )
            .bind(POLL_WINDOW.as_secs_f64())
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(SEQUENCED_CHANNEL)
                .bind(head.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            total += numbered;
            if numbered < SEQUENCE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

fn pg_event(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        seq: seq(row.try_get("seq")?),
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        kind: row.try_get("type")?,
        subject: row.try_get("subject")?,
        time: row.try_get("time")?,
        actor: row.try_get("actor")?,
        traceparent: row.try_get("traceparent")?,
        payload: row.try_get("payload")?,
        legacy: row.try_get::<i16, _>("format")? != FORMAT_PROTO_JSON,
    })
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn read(
        &self,
        scope: &Scope,
        after: u64,
        types: &[String],
        partition: Option<crate::partition::Partition>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let (mut tx, tenant) = match scope {
            Scope::Tenant(tenant) => (
                crate::db::begin_tenant(&self.pool, tenant).await?,
                Some(tenant.as_str()),
            ),
            Scope::AllTenants => (begin_all_tenants(&self.pool).await?, None),
        };
        // The row-level policy makes the planner expect a handful of rows and sort them; the
        // index already holds them in sequence order, and reading it stops at the limit. A
        // partition's filter makes it expect to read far into the table, and it would start
        // parallel workers (a process each) for every page of the feed.
        sqlx::query(
            "SELECT set_config('enable_sort', 'off', true), set_config('max_parallel_workers_per_gather', '0', true)",
        )
        .execute(&mut *tx)
        .await?;
        // A partition's tenants: the key PostgreSQL computes as the platform does.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, id, tenant_id, type, subject, time, actor, traceparent, payload, format FROM outbox_events \
             WHERE seq > $1 AND ($2::text IS NULL OR tenant_id = $2) AND (cardinality($3::text[]) = 0 OR type = ANY($3)) \
             AND ($5::bigint IS NULL OR {key} % $5 = $6) ORDER BY seq LIMIT $4",
            key = crate::partition::SQL_KEY
        )))
        .bind(bound(after))
        .bind(tenant)
        .bind(types)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(partition.map(|p| i64::from(p.count)))
        .bind(partition.map_or(0, |p| i64::from(p.index)))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(pg_event).collect()
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Row-level security admits each tenant's events with that tenant pinned.
        let mut tenants: Vec<&str> = events.iter().map(|e| e.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        for tenant in tenants {
            sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await?;
            let theirs: Vec<NewEvent> = events.iter().filter(|e| e.tenant.as_str() == tenant).cloned().collect();
            append_pg(&mut tx, &theirs).await?;
        }
        tx.commit().await
    }

    async fn bounds(&self) -> Result<Bounds, sqlx::Error> {
        let mut tx = begin_all_tenants(&self.pool).await?;
        let row =
            sqlx::query("SELECT (SELECT seq FROM outbox_head) AS head, (SELECT min(seq) FROM outbox_events) AS oldest")
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        let head = seq(row.try_get("head")?);
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(Bounds {
            oldest: oldest.map_or(head + 1, seq),
            head,
        })
    }

    async fn head(&self) -> Result<u64, sqlx::Error> {
        let head: i64 = sqlx::query_scalar("SELECT seq FROM outbox_head")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq(head))
    }

    async fn time_at(&self, at: u64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let mut tx = begin_all_tenants(&self.pool).await?;
        let time = sqlx::query_scalar("SELECT time FROM outbox_events WHERE seq >= $1 ORDER BY seq LIMIT 1")
            .bind(bound(at))
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(time)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let mut tx = begin_all_tenants(&self.pool).await?;
        let pruned = sqlx::query("DELETE FROM outbox_events WHERE time < $1 AND seq IS NOT NULL")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

/// The outbox of an SQLite producer. Its writers call [`SqliteOutbox::committed`] after each
/// commit, which wakes the feeds of this process (the only one that writes the file).
pub struct SqliteOutbox {
    pool: SqlitePool,
    wakeups: watch::Sender<u64>,
}

impl SqliteOutbox {
    pub fn new(pool: SqlitePool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            wakeups: watch::Sender::new(0),
        })
    }

    /// Wakes the feeds: a write transaction committed.
    pub fn committed(&self) {
        self.wakeups.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn micros_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn read(
        &self,
        scope: &Scope,
        after: u64,
        types: &[String],
        _partition: Option<crate::partition::Partition>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let tenant = match scope {
            Scope::Tenant(tenant) => Some(tenant.as_str()),
            Scope::AllTenants => None,
        };
        let types = serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned());
        let rows = sqlx::query(
            "SELECT seq, id, tenant_id, type, subject, time, actor, traceparent, payload, format FROM outbox_events \
             WHERE seq > ?1 AND (?2 IS NULL OR tenant_id = ?2) \
             AND (json_array_length(?3) = 0 OR type IN (SELECT value FROM json_each(?3))) ORDER BY seq LIMIT ?4",
        )
        .bind(bound(after))
        .bind(tenant)
        .bind(types)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let payload: String = row.try_get("payload")?;
                Ok(StoredEvent {
                    seq: seq(row.try_get("seq")?),
                    id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    tenant: row.try_get("tenant_id")?,
                    kind: row.try_get("type")?,
                    subject: row.try_get("subject")?,
                    time: micros_time(row.try_get("time")?),
                    actor: row.try_get("actor")?,
                    traceparent: row.try_get("traceparent")?,
                    payload: serde_json::from_str(&payload).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    legacy: row.try_get::<i64, _>("format")? != i64::from(FORMAT_PROTO_JSON),
                })
            })
            .collect()
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), sqlx::Error> {
        let mut tx = crate::db::begin_sqlite_write(&self.pool).await?;
        append_sqlite(&mut tx, events).await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    async fn bounds(&self) -> Result<Bounds, sqlx::Error> {
        let row =
            sqlx::query("SELECT (SELECT seq FROM outbox_head) AS head, (SELECT min(seq) FROM outbox_events) AS oldest")
                .fetch_one(&self.pool)
                .await?;
        let head = seq(row.try_get("head")?);
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(Bounds {
            oldest: oldest.map_or(head + 1, seq),
            head,
        })
    }

    async fn head(&self) -> Result<u64, sqlx::Error> {
        let head: i64 = sqlx::query_scalar("SELECT seq FROM outbox_head")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq(head))
    }

    async fn time_at(&self, at: u64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let time: Option<i64> =
            sqlx::query_scalar("SELECT time FROM outbox_events WHERE seq >= ?1 ORDER BY seq LIMIT 1")
                .bind(bound(at))
                .fetch_optional(&self.pool)
                .await?;
        Ok(time.map(micros_time))
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let mut tx = crate::db::begin_sqlite_write(&self.pool).await?;
        let pruned = sqlx::query("DELETE FROM outbox_events WHERE time < ?1")
            .bind(before.timestamp_micros())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

#[cfg(test)]
mod seek_tests {
    use super::*;

    /// An outbox of events `oldest..=head`, event N made N minutes after `base`.
    struct Minutes {
        base: DateTime<Utc>,
        oldest: u64,
        head: u64,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl Outbox for Minutes {
        async fn read(
            &self,
            _: &Scope,
            _: u64,
            _: &[String],
            _: Option<crate::partition::Partition>,
            _: usize,
        ) -> Result<Vec<StoredEvent>, sqlx::Error> {
            Ok(Vec::new())
        }
        async fn bounds(&self) -> Result<Bounds, sqlx::Error> {
            Ok(Bounds {
                oldest: self.oldest,
                head: self.head,
            })
        }
        async fn head(&self) -> Result<u64, sqlx::Error> {
            Ok(self.head)
        }
        async fn time_at(&self, seq: u64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let seq = seq.max(self.oldest);
            Ok((seq <= self.head).then(|| self.base + chrono::Duration::minutes(i64::try_from(seq).expect("seq"))))
        }
        async fn publish(&self, _: &[NewEvent]) -> Result<(), sqlx::Error> {
            Ok(())
        }
        async fn prune(&self, _: DateTime<Utc>) -> Result<u64, sqlx::Error> {
            Ok(0)
        }
        fn wakeups(&self) -> watch::Receiver<u64> {
            watch::Sender::new(0).subscribe()
        }
    }

    #[tokio::test]
    async fn a_seek_starts_an_hour_before_the_time_in_a_few_reads() {
        let base = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let outbox = Minutes {
            base,
            oldest: 1,
            head: 100_000,
            reads: Default::default(),
        };
        let minutes = |n: i64| base + chrono::Duration::minutes(n);
        // Event 500 was made at minute 500: reading after 439 gives every event from minute 440.
        assert_eq!(sequence_before(&outbox, minutes(500)).await.expect("seek"), 439);
        assert!(outbox.reads.load(std::sync::atomic::Ordering::Relaxed) <= 20);
        // Before the oldest and its margin: from the oldest.
        assert_eq!(sequence_before(&outbox, minutes(30)).await.expect("seek"), 0);
        // Past the head: after the last event before the margin.
        assert_eq!(sequence_before(&outbox, minutes(200_000)).await.expect("seek"), 100_000);
        // Pruned up to 5000: the seek stays in what is retained.
        let pruned = Minutes {
            oldest: 5000,
            reads: Default::default(),
            ..outbox
        };
        assert_eq!(sequence_before(&pruned, minutes(5030)).await.expect("seek"), 0);
        assert_eq!(sequence_before(&pruned, minutes(7000)).await.expect("seek"), 6939);
        // Nothing retained.
        let empty = Minutes {
            oldest: 1,
            head: 0,
            reads: Default::default(),
            ..pruned
        };
        assert_eq!(sequence_before(&empty, minutes(7000)).await.expect("seek"), 0);
    }
}
