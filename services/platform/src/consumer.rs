//! A consumer of a change feed (crm.events.v1.EventFeed) that applies each event exactly
//! once: the effects and the new checkpoint are committed in one transaction of the consumer's
//! own database (the events that have arrived together, up to a batch), so a crash anywhere
//! resumes from the last committed event, and an event delivered again (after a reconnect) is
//! recognised by its sequence and skipped.
//!
//! Per-source order is kept: one subscription, applied in sequence order. Lost connections
//! are retried with exponential backoff from the checkpoint. Lag gauges: `crm_feed_lag_events`
//! (behind the source's head, from heartbeats) and `crm_feed_lag_seconds` (since the last
//! applied event was committed at the source).

use std::time::Duration;

use async_trait::async_trait;
use crm_proto::crm::events::v1 as pb;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use futures::FutureExt;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Where a consumer's effects and checkpoint live: applies a batch of events and moves the
/// checkpoint in one transaction of the consumer's own database.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The last sequence applied under `consumer` (0 before the first).
    async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64>;

    /// Applies `events` (in sequence order) and moves `consumer`'s checkpoint from `previous`
    /// to the last one's sequence, in one transaction. False, with nothing applied, when the
    /// checkpoint was no longer `previous` (another instance under the same name moved it).
    async fn apply(&self, consumer: &str, previous: u64, events: &[pb::Event]) -> anyhow::Result<bool>;

    /// Called once an event's transaction has committed (for measurements; nothing to undo).
    fn applied(&self, _event: &pb::Event) {}
}

/// Applies one event inside a PostgreSQL consumer's transaction (see [`PgSink`]).
#[async_trait]
pub trait Apply: Send + Sync {
    async fn apply(&self, tx: &mut Transaction<'static, Postgres>, event: &pb::Event) -> anyhow::Result<()>;

    /// Called once `event`'s transaction has committed (for measurements; nothing to undo).
    fn applied(&self, _event: &pb::Event) {}

    /// Statements creating the tables the handler writes, if missing (`CREATE ... IF NOT
    /// EXISTS`); [`PgSink::new`] runs them with its own.
    fn schema(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The payload of `event` as the message `M` when the event is of `M`'s type (None when it is
/// of another type; an error when it is but does not decode).
pub fn payload<M: crm_proto::prost::Name + Default>(
    event: &pb::Event,
) -> Option<Result<M, crm_proto::prost::DecodeError>> {
    if event.r#type != M::full_name() {
        return None;
    }
    let bytes = event
        .payload
        .as_ref()
        .map(|any| any.value.as_slice())
        .unwrap_or_default();
    Some(M::decode(bytes))
}

/// A span for applying one event that continues the trace of the request that caused it.
pub fn event_span(event: &pb::Event) -> tracing::Span {
    let span = tracing::info_span!(
        "apply event",
        otel.name = %format!("apply {}", event.r#type),
        otel.kind = "consumer",
        seq = event.sequence,
        kind = %event.r#type
    );
    if let Ok(value) = event.traceparent.parse() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value);
        crate::telemetry::continue_trace(&span, &headers);
    }
    span
}

/// Where and how a consumer subscribes.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer's name: its checkpoint is kept under it, so one name follows one feed.
    pub name: String,
    /// The producing service's gRPC endpoint, e.g. `http://contact:50051`.
    pub endpoint: String,
    /// How to authenticate (a `service` role token reads every tenant).
    pub credentials: Credentials,
    /// The producing service (`crm.contact.v1`), for an endpoint that serves several feeds
    /// (`crm serve`); None takes the endpoint's first.
    pub source: Option<String>,
    /// Only these event types (all when empty).
    pub types: Vec<String>,
    /// Only this partition's tenants (all when None): a replica's share.
    pub partition: Option<crate::partition::Partition>,
    /// Whether the feed currently accepts the consumer's credentials (readiness reads it).
    pub status: std::sync::Arc<FeedStatus>,
}

/// The gRPC health name that is NOT_SERVING while a feed refuses the credentials of one of the
/// process's followers (the service names stay SERVING: the API itself works).
pub const FOLLOWERS_HEALTH: &str = "crm.events.v1.Followers";

/// What readiness needs to know of a consumer: whether the producer refused its credentials
/// the last time it connected (an expired or revoked token), so that the failure shows
/// instead of the consumer silently falling behind.
#[derive(Debug, Default)]
pub struct FeedStatus {
    refused: std::sync::atomic::AtomicBool,
}

impl FeedStatus {
    /// Whether the last subscription was refused for its credentials.
    pub fn credentials_refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_refused(&self, consumer: &str, refused: bool) {
        self.refused.store(refused, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("crm_feed_credentials_refused", "consumer" => consumer.to_owned()).set(if refused {
            1.0
        } else {
            0.0
        });
    }
}

/// A consumer's credentials: a token it was given, a file holding one (read again on every
/// connection, so a token the identity provider renews, or Kubernetes rotates in a mounted
/// Secret, is picked up without a restart), or a secret to mint a fresh one with on every
/// connection (so a long-running consumer never presents an expired token).
#[derive(Clone)]
pub enum Credentials {
    Token(String),
    File(std::path::PathBuf),
    Mint {
        secret: Vec<u8>,
        principal: crate::Principal,
        ttl: Duration,
    },
}

impl Credentials {
    /// The bearer token to present now.
    pub fn token(&self) -> Result<String, crate::ApiError> {
        match self {
            Credentials::Token(token) => Ok(token.clone()),
            Credentials::File(path) => std::fs::read_to_string(path)
                .map(|token| token.trim().to_owned())
                .map_err(|err| {
                    crate::ApiError::unauthenticated(
                        "CREDENTIALS_UNREADABLE",
                        format!("cannot read the token file {}: {err}", path.display()),
                    )
                }),
            Credentials::Mint { secret, principal, ttl } => crate::auth::mint_token(secret, principal, *ttl),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::File(path) => write!(f, "File({})", path.display()),
            Credentials::Mint { principal, .. } => write!(f, "Mint({} of {})", principal.user, principal.tenant),
        }
    }
}

/// Events applied in one transaction at most: in a catch-up, each transaction's round trips
/// and commit are shared by this many events.
const MAX_BATCH: usize = 5000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Pause before a consumer stopped by a failure to apply runs again (see [`spawn`]).
const RESTART_PAUSE: Duration = Duration::from_secs(5);

/// Runs the consumer in the background until `shutdown`, as a service's follower: when it
/// stops on a failure to apply (a database error), it runs again after a pause, from the
/// checkpoint (connection failures [`run`] retries itself).
pub fn spawn<S: Sink + 'static>(config: ConsumerConfig, sink: S, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match run(config.clone(), &sink, shutdown.clone()).await {
                Ok(()) => return,
                Err(err) => tracing::error!(consumer = %config.name, error = %err, "following a feed failed; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RESTART_PAUSE) => {}
            }
        }
    });
}

/// Runs the consumer until `shutdown` is cancelled; connection failures are retried, an error
/// of the handler or the database ends it (the event stays unapplied, and is applied first
/// when the consumer runs again).
pub async fn run(config: ConsumerConfig, sink: &dyn Sink, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            outcome = follow(&config, sink) => outcome,
        };
        match outcome {
            Ok(Progress::Applied) => backoff = MIN_BACKOFF,
            Ok(Progress::None) => {}
            Err(Failure::Feed(status)) => {
                let refused = matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                );
                if refused {
                    config.status.set_refused(&config.name, true);
                    tracing::error!(consumer = %config.name, code = ?status.code(), message = status.message(),
                        "the feed refused this consumer's credentials; renew the token");
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), "feed lost; reconnecting");
                }
            }
            Err(Failure::Connect(err)) => tracing::warn!(error = %err, "feed unreachable; retrying"),
            Err(Failure::Moved) => {
                tracing::warn!(consumer = %config.name, "checkpoint moved by another instance; resuming from it")
            }
            Err(Failure::Apply(err)) => return Err(err),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Progress {
    Applied,
    None,
}

enum Failure {
    Connect(tonic::transport::Error),
    Feed(tonic::Status),
    Apply(anyhow::Error),
    /// The checkpoint moved under this consumer (another instance with its name).
    Moved,
}

/// One subscription, from the checkpoint until the stream breaks.
async fn follow(config: &ConsumerConfig, sink: &dyn Sink) -> Result<Progress, Failure> {
    let mut applied = sink.checkpoint(&config.name).await.map_err(Failure::Apply)?;
    let channel: Channel = Endpoint::from_shared(config.endpoint.clone())
        .map_err(Failure::Connect)?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(Failure::Connect)?;
    let token = config.credentials.token().map_err(|e| Failure::Feed(e.into()))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| Failure::Apply(anyhow::anyhow!("the token is not a valid header value")))?;
    let source: Option<tonic::metadata::MetadataValue<_>> = match &config.source {
        Some(source) => Some(
            source
                .parse()
                .map_err(|_| Failure::Apply(anyhow::anyhow!("the source is not a valid header value")))?,
        ),
        None => None,
    };
    let mut client = EventFeedClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        if let Some(source) = &source {
            request
                .metadata_mut()
                .insert(crate::feed::SOURCE_HEADER, source.clone());
        }
        Ok(request)
    });
    let stream = client
        .subscribe(pb::SubscribeRequest {
            after_sequence: applied,
            types: config.types.clone(),
            partition: config.partition.map(|p| pb::Partition {
                index: p.index,
                count: p.count,
            }),
            until_head: false,
            since: None,
        })
        .await
        .map_err(Failure::Feed)?
        .into_inner();
    config.status.set_refused(&config.name, false);
    let mut feed = Incoming {
        stream,
        consumer: &config.name,
        last: applied,
        ended: false,
        error: None,
    };
    let mut progress = Progress::None;
    let mut batch: Vec<pb::Event> = Vec::new();
    loop {
        // Wait for one message, then take what else has already arrived: the events go into
        // one transaction, so a busy feed costs one commit per batch rather than per event.
        // What arrived before the stream broke or ended is applied first.
        if batch.is_empty() {
            if let Some(status) = feed.error.take() {
                return Err(Failure::Feed(status));
            }
            if feed.ended {
                break;
            }
            let message = feed.stream.message().await;
            feed.take(message, &mut batch, applied);
        }
        feed.take_ready(&mut batch, applied);
        if batch.is_empty() {
            continue;
        }
        // While the batch is applied, the next one is received: in a catch-up the feed's
        // reading and decoding overlap the consumer's database work instead of waiting for it.
        let mut next = Vec::new();
        let moved_on = {
            let apply = apply_batch(config, sink, &batch, applied);
            tokio::pin!(apply);
            loop {
                tokio::select! {
                    biased;
                    result = &mut apply => break result.map_err(Failure::Apply)?,
                    message = feed.stream.message(), if feed.receiving() && next.len() < MAX_BATCH => {
                        feed.take(message, &mut next, applied);
                    }
                }
            }
        };
        if !moved_on {
            return Err(Failure::Moved);
        }
        for event in &batch {
            sink.applied(event);
        }
        applied = batch.last().map_or(applied, |e| e.sequence);
        progress = Progress::Applied;
        metrics::counter!("crm_feed_events_applied_total", "consumer" => config.name.clone())
            .increment(batch.len() as u64);
        // How far behind the source the applied state is, in time (heartbeats give the count).
        if let Some(time) = batch.last().and_then(|e| e.time.as_ref()) {
            #[allow(clippy::cast_precision_loss)]
            let committed = time.seconds as f64 + f64::from(time.nanos) / 1e9;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            metrics::gauge!("crm_feed_lag_seconds", "consumer" => config.name.clone()).set((now - committed).max(0.0));
        }
        batch = next;
    }
    Ok(progress)
}

/// The subscription's messages as they arrive: events after the last one taken (a repeat,
/// after a reconnect, is dropped), heartbeats turned into the lag gauge, the end or the error
/// of the stream kept for the loop to act on once the batch in hand is applied.
struct Incoming<'a> {
    stream: tonic::Streaming<pb::SubscribeResponse>,
    consumer: &'a str,
    /// The sequence of the last event taken (or the checkpoint).
    last: u64,
    ended: bool,
    error: Option<tonic::Status>,
}

impl Incoming<'_> {
    /// Whether the stream may still be read.
    fn receiving(&self) -> bool {
        !self.ended && self.error.is_none()
    }

    /// Takes one message of the stream into `batch`.
    fn take(
        &mut self,
        message: Result<Option<pb::SubscribeResponse>, tonic::Status>,
        batch: &mut Vec<pb::Event>,
        applied: u64,
    ) {
        match message {
            Err(status) => self.error = Some(status),
            Ok(None) => self.ended = true,
            Ok(Some(message)) => match message.kind {
                Some(pb::subscribe_response::Kind::Event(event)) if event.sequence > self.last => {
                    self.last = event.sequence;
                    batch.push(event);
                }
                Some(pb::subscribe_response::Kind::Heartbeat(beat)) => {
                    #[allow(clippy::cast_precision_loss)]
                    let lag = beat.head_sequence.saturating_sub(applied) as f64;
                    metrics::gauge!("crm_feed_lag_events", "consumer" => self.consumer.to_owned()).set(lag);
                }
                _ => {}
            },
        }
    }

    /// Takes the messages that have already arrived into `batch`, up to a full batch.
    fn take_ready(&mut self, batch: &mut Vec<pb::Event>, applied: u64) {
        while self.receiving() && batch.len() < MAX_BATCH {
            let Some(message) = self.stream.message().now_or_never() else {
                return;
            };
            self.take(message, batch, applied);
        }
    }
}

/// Applies a batch through the sink in a span naming the consumer and the range.
async fn apply_batch(
    config: &ConsumerConfig,
    sink: &dyn Sink,
    events: &[pb::Event],
    previous: u64,
) -> anyhow::Result<bool> {
    use tracing::Instrument;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(true);
    };
    let span =
        tracing::info_span!("apply events", consumer = %config.name, first = first.sequence, last = last.sequence);
    sink.apply(&config.name, previous, events).instrument(span).await
}

/// A [`Sink`] on PostgreSQL: the checkpoints in table `feed_checkpoints` of the consumer's
/// database, each event applied by an [`Apply`] handler in the batch's transaction.
pub struct PgSink<A> {
    pool: PgPool,
    handler: A,
}

const CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS feed_checkpoints (consumer text PRIMARY KEY, \
     seq bigint NOT NULL, update_time timestamptz NOT NULL DEFAULT now())";

impl<A: Apply> PgSink<A> {
    /// Creates the checkpoint table and the handler's tables ([`Apply::schema`]) if they are
    /// missing. Instances starting together take turns: two concurrent `CREATE TABLE IF NOT
    /// EXISTS` of one table can both miss it, and the second then fails on the catalog.
    pub async fn new(pool: PgPool, handler: A) -> Result<Self, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('crm_platform::consumer schema', 0))")
            .execute(&mut *tx)
            .await?;
        for statement in std::iter::once(&CHECKPOINT_TABLE).chain(handler.schema()) {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(Self { pool, handler })
    }
}

/// The last sequence `consumer` applied (0 before the first), from `feed_checkpoints`.
pub async fn pg_checkpoint(pool: &PgPool, consumer: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM feed_checkpoints WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(pool)
        .await?;
    Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or_default()))
}

/// Holds `consumer`'s checkpoint row for the transaction (a second instance under the same
/// name waits here) and tells whether it is still `previous`.
pub async fn pg_claim(tx: &mut sqlx::PgConnection, consumer: &str, previous: u64) -> Result<bool, sqlx::Error> {
    sqlx::query("INSERT INTO feed_checkpoints (consumer, seq) VALUES ($1, 0) ON CONFLICT (consumer) DO NOTHING")
        .bind(consumer)
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query_scalar("SELECT seq FROM feed_checkpoints WHERE consumer = $1 FOR UPDATE")
        .bind(consumer)
        .fetch_one(&mut *tx)
        .await?;
    Ok(current == seq_value(previous))
}

/// A sequence as stored (sequences never reach i64::MAX).
fn seq_value(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// Moves `consumer`'s checkpoint to `seq` (after [`pg_claim`], in the same transaction).
pub async fn pg_advance(tx: &mut sqlx::PgConnection, consumer: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE feed_checkpoints SET seq = $2, update_time = now() WHERE consumer = $1")
        .bind(consumer)
        .bind(seq_value(seq))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Tells whether `consumer`'s checkpoint is still `previous`, in an SQLite write transaction
/// (which already excludes every other writer). Table `feed_checkpoints` is the consumer's
/// migration's to create: `(consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL, update_time INTEGER NOT NULL)`.
pub async fn sqlite_claim(tx: &mut sqlx::SqliteConnection, consumer: &str, previous: u64) -> Result<bool, sqlx::Error> {
    let current: Option<i64> = sqlx::query_scalar("SELECT seq FROM feed_checkpoints WHERE consumer = ?1")
        .bind(consumer)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(current.unwrap_or(0) == seq_value(previous))
}

/// Moves `consumer`'s checkpoint to `seq` (after [`sqlite_claim`], in the same transaction).
pub async fn sqlite_advance(tx: &mut sqlx::SqliteConnection, consumer: &str, seq: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO feed_checkpoints (consumer, seq, update_time) VALUES (?1, ?2, ?3) \
         ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq, update_time = excluded.update_time",
    )
    .bind(consumer)
    .bind(seq_value(seq))
    .bind(chrono::Utc::now().timestamp_micros())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The last sequence `consumer` applied (0 before the first), on SQLite.
pub async fn sqlite_checkpoint(pool: &sqlx::SqlitePool, consumer: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM feed_checkpoints WHERE consumer = ?1")
        .bind(consumer)
        .fetch_optional(pool)
        .await?;
    Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or_default()))
}

#[async_trait]
impl<A: Apply> Sink for PgSink<A> {
    async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64> {
        Ok(pg_checkpoint(&self.pool, consumer).await?)
    }

    async fn apply(&self, consumer: &str, previous: u64, events: &[pb::Event]) -> anyhow::Result<bool> {
        use tracing::Instrument;
        let mut tx = self.pool.begin().await?;
        if !pg_claim(&mut tx, consumer, previous).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        for event in events {
            self.handler.apply(&mut tx, event).instrument(event_span(event)).await?;
        }
        if let Some(last) = events.last() {
            pg_advance(&mut tx, consumer, last.sequence).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    fn applied(&self, event: &pb::Event) {
        self.handler.applied(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Table;

    #[async_trait]
    impl Apply for Table {
        async fn apply(&self, _tx: &mut Transaction<'static, Postgres>, _event: &pb::Event) -> anyhow::Result<()> {
            Ok(())
        }

        fn schema(&self) -> &'static [&'static str] {
            &["CREATE TABLE IF NOT EXISTS applied_here (seq bigint PRIMARY KEY)"]
        }
    }

    /// Replicas of a consumer starting at once on an empty database (a deployment scaled to
    /// several) all start, and the tables exist once.
    #[tokio::test]
    async fn sinks_starting_together_all_create_their_tables() {
        let Some(db) = crate::testing::TestDatabase::create("sink_schema").await else {
            return;
        };
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let url = db.url.clone();
            starts.spawn(async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .expect("connect");
                PgSink::new(pool, Table).await.map(|_| ())
            });
        }
        while let Some(started) = starts.join_next().await {
            started.expect("task").expect("a sink failed to start");
        }
        let pool = PgPool::connect(&db.url).await.expect("connect");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class WHERE relname IN ('feed_checkpoints', 'applied_here') AND relkind = 'r' \
             ORDER BY relname",
        )
        .fetch_all(&pool)
        .await
        .expect("tables");
        assert_eq!(tables, ["applied_here", "feed_checkpoints"]);
        pool.close().await;
        db.drop_database().await;
    }
}
