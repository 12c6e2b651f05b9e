//! The change feed's targets: catch-up throughput to one consumer, and the latency from a
//! change's commit to a consumer's applied effect at a steady event rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use crm_platform::consumer::{Apply, ConsumerConfig};
use crm_platform::outbox::{NewEvent, append_pg};
use crm_proto::crm::contact::v1::{ContactUpdated, FieldChange};
use crm_proto::crm::events::v1 as pb;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use super::{Run, ms, tool};

pub(crate) struct FeedBench<'a> {
    pub url: &'a str,
    pub grpc: &'a str,
    pub token: &'a str,
    pub events: u64,
    pub rate: u64,
    pub seconds: u64,
}

pub(crate) async fn run(bench: &FeedBench<'_>) -> anyhow::Result<()> {
    catch_up(bench).await?;
    latency(bench).await
}

/// Events written straight into the outbox (numbered, as the sequencer leaves them), then read
/// from the start by one subscriber.
async fn catch_up(bench: &FeedBench<'_>) -> anyhow::Result<()> {
    let seed = format!(
        "INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload) \
         SELECT 'tenant' || (i % 10), gen_random_uuid(), h.seq + i, 'crm.contact.v1.ContactUpdated', \
                'contacts/' || gen_random_uuid(), now(), 'bench', '', \
                jsonb_build_object('action', 'updated', 'changes', jsonb_build_array( \
                    jsonb_build_object('field', 'title', 'old', 'Engineer', 'new', 'Director'))) \
         FROM generate_series(1, {n}) AS i, (SELECT seq FROM outbox_head) AS h; \
         UPDATE outbox_head SET seq = seq + {n};",
        n = bench.events
    );
    let before: u64 = tool("psql", &[bench.url, "-Atc", "SELECT seq FROM outbox_head"])?
        .trim()
        .parse()
        .context("outbox head")?;
    tool("psql", &[bench.url, "-qc", &seed])?;
    tool("psql", &[bench.url, "-qc", "VACUUM ANALYZE outbox_events"])?;
    let channel = tonic::transport::Endpoint::from_shared(bench.grpc.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", bench.token).parse()?;
    let mut client = EventFeedClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    });
    let started = Instant::now();
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            after_sequence: before,
            types: vec![],
            partition: None,
            until_head: false,
            since: None,
        })
        .await?
        .into_inner();
    let mut received = 0;
    let mut last = before;
    while received < bench.events {
        let message = stream.message().await?.context("the feed ended")?;
        if let Some(pb::subscribe_response::Kind::Event(event)) = message.kind {
            anyhow::ensure!(event.sequence == last + 1, "gap after {last}");
            last = event.sequence;
            received += 1;
        }
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    println!("| feed catch-up: {received} events to one consumer | {rate:.0} events/s | | | >= 20k events/s |");
    Ok(())
}

/// The consumer of the latency test: applies each event into a table of its own and notes
/// when the transaction that did it committed.
struct Timed {
    committed: Arc<Mutex<HashMap<String, Instant>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Apply for Timed {
    async fn apply(&self, tx: &mut Transaction<'static, Postgres>, event: &pb::Event) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO bench_applied (seq, subject) VALUES ($1, $2)")
            .bind(i64::try_from(event.sequence)?)
            .bind(&event.subject)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    fn applied(&self, event: &pb::Event) {
        let now = Instant::now();
        let written = self.committed.lock().ok().and_then(|mut m| m.remove(&event.id));
        if let (Some(written), Ok(mut latencies)) = (written, self.latencies.lock()) {
            latencies.push(now.saturating_duration_since(written));
        }
    }
}

fn text(value: &str) -> crm_proto::prost_types::Value {
    crm_proto::prost_types::Value {
        kind: Some(crm_proto::prost_types::value::Kind::StringValue(value.to_owned())),
    }
}

/// Changes committed at a steady rate (one event per transaction, written with the platform's
/// `outbox_append` as the services write theirs), applied by a consumer through the consumer
/// library.
async fn latency(bench: &FeedBench<'_>) -> anyhow::Result<()> {
    tool(
        "psql",
        &[
            bench.url,
            "-qc",
            "CREATE TABLE bench_applied (seq bigint PRIMARY KEY, subject text NOT NULL)",
        ],
    )?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .connect(bench.url)
        .await?;
    let head: i64 = sqlx::query_scalar("SELECT seq FROM outbox_head")
        .fetch_one(&pool)
        .await?;
    // The consumer starts at the current head: only the events written below count.
    let committed = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let consumer = crm_platform::consumer::PgSink::new(
        pool.clone(),
        Timed {
            committed: Arc::clone(&committed),
            latencies: Arc::clone(&latencies),
        },
    )
    .await?;
    sqlx::query("INSERT INTO feed_checkpoints (consumer, seq) VALUES ('bench-latency', $1)")
        .bind(head)
        .execute(&pool)
        .await?;
    let stop = CancellationToken::new();
    let config = ConsumerConfig {
        name: "bench-latency".into(),
        endpoint: bench.grpc.to_owned(),
        credentials: crm_platform::consumer::Credentials::Token(bench.token.to_owned()),
        source: None,
        types: vec![],
        partition: None,
        status: Default::default(),
    };
    let consuming = {
        let stop = stop.clone();
        tokio::spawn(async move { crm_platform::consumer::run(config, &consumer, stop).await })
    };

    let interval = Duration::from_secs_f64(1.0 / bench.rate.max(1) as f64);
    let total = bench.rate * bench.seconds;
    let started = Instant::now();
    let mut writers = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((started + interval * u32::try_from(i)?).into()).await;
        let (pool, committed) = (pool.clone(), Arc::clone(&committed));
        writers.push(tokio::spawn(async move {
            // A change's event, written in its own transaction as a service writes it.
            let tenant = crm_platform::TenantId::parse(&format!("tenant{}", i % 10)).map_err(|e| anyhow::anyhow!(e))?;
            let contact = format!("contacts/{}", uuid::Uuid::now_v7());
            let event = NewEvent::of(
                &tenant,
                contact.clone(),
                "bench",
                chrono::Utc::now(),
                &ContactUpdated {
                    contact,
                    changed_fields: vec![FieldChange {
                        field: "title".to_owned(),
                        old_value: Some(text("Engineer")),
                        new_value: Some(text("Director")),
                    }],
                },
            )?;
            let id = event.id;
            let mut tx = crm_platform::db::begin_tenant(&pool, &tenant).await?;
            append_pg(&mut tx, &[event]).await?;
            // Timed from just before the commit: a consumer may apply the event before the
            // commit's acknowledgement comes back.
            if let Ok(mut map) = committed.lock() {
                map.insert(id.to_string(), Instant::now());
            }
            tx.commit().await?;
            anyhow::Ok(())
        }));
        if writers.len() >= 256 {
            for writer in writers.drain(..) {
                writer.await??;
            }
        }
    }
    for writer in writers {
        writer.await??;
    }
    let written = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.lock().map(|l| (l.len() as u64) < total).unwrap_or(false) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    consuming.await??;
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let applied = latencies.len() as u64;
    // Every event written reaches the consumer, or the figure measured something else (the
    // writes made no event, or the feed lost some).
    anyhow::ensure!(applied == total, "{applied} of {total} events written were applied");
    let run = Run {
        ops: applied,
        elapsed: written,
        latencies,
        errors: total.saturating_sub(applied),
    };
    println!(
        "| feed latency, commit to applied, {} events/s for {} s | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({applied} of {total} applied) | | | p99 <= 100 ms |",
        bench.rate,
        bench.seconds,
        ms(run.percentile(0.5)),
        ms(run.percentile(0.99)),
        ms(run.percentile(1.0)),
    );
    Ok(())
}
