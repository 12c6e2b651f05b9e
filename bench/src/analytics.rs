//! The analytics service's ingest in catch-up: a `crm analytics` process following a pipeline
//! feed that already holds the events, against a consumer that applies nothing on the same
//! feed in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use crm_platform::consumer::{ConsumerConfig, Credentials, Sink};
use crm_proto::crm::events::v1 as pb;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::{start_analytics, tool};

pub(crate) struct AnalyticsBench<'a> {
    /// The pipeline service's database (its outbox is seeded).
    pub pipeline_url: &'a str,
    /// The pipeline service's gRPC endpoint.
    pub pipeline_grpc: &'a str,
    /// A fresh, migrated analytics database.
    pub analytics_url: &'a str,
    pub token: &'a str,
    pub events: u64,
    /// The partitions `crm analytics` splits the feed into (CRM_INGEST_PARTITIONS).
    pub partitions: &'a str,
}

/// Won deals, each a DealWon event with its deal and transition (two facts), over ten tenants
/// and twenty owners, written straight into the pipeline outbox (numbered, in the service's
/// typed form).
fn seed(events: u64) -> String {
    let at = |expr: &str| format!("to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    format!(
        "INSERT INTO outbox_events (tenant_id, id, seq, type, subject, time, actor, traceparent, payload, format) \
         SELECT 'tenant' || (i % 10), gen_random_uuid(), h.seq + i, 'crm.pipeline.v1.DealWon', 'deals/' || d.id, now(), \
                'bench', '', jsonb_build_object( \
                  'deal', jsonb_build_object('name', 'deals/' || d.id, \
                    'pipeline', 'pipelines/0190a0a0-0000-7000-8000-000000000001', 'owner', 'rep' || (i % 20), \
                    'status', 'DEAL_STATUS_WON', 'displayName', 'Deal', \
                    'amount', jsonb_build_object('amountMinor', (1000 + i % 5000)::text, 'currencyCode', 'EUR'), \
                    'createTime', {created}, 'closeTime', {closed}), \
                  'transition', jsonb_build_object('deal', 'deals/' || d.id, 'sequence', '2', \
                    'kind', 'TRANSITION_KIND_WON', 'transitionTime', {closed})), 1 \
         FROM generate_series(1, {events}) AS i, (SELECT seq FROM outbox_head) AS h, \
              LATERAL (SELECT gen_random_uuid() AS id, i AS n) AS d; \
         UPDATE outbox_head SET seq = seq + {events};",
        created = at("now() - (i % 90) * interval '1 day'"),
        closed = at("now()"),
    )
}

/// Counts events from the start of the feed and stops when the last one arrives.
struct Nothing {
    applied: AtomicU64,
    last: u64,
    done: CancellationToken,
}

#[async_trait]
impl Sink for Nothing {
    async fn checkpoint(&self, _consumer: &str) -> anyhow::Result<u64> {
        Ok(0)
    }

    async fn apply(&self, _consumer: &str, _previous: u64, events: &[pb::Event]) -> anyhow::Result<bool> {
        self.applied.fetch_add(events.len() as u64, Ordering::Relaxed);
        if events.last().is_some_and(|e| e.sequence >= self.last) {
            self.done.cancel();
        }
        Ok(true)
    }
}

pub(crate) async fn run(bench: &AnalyticsBench<'_>) -> anyhow::Result<()> {
    tool("psql", &[bench.pipeline_url, "-qc", &seed(bench.events)])?;
    tool("psql", &[bench.pipeline_url, "-qc", "VACUUM ANALYZE outbox_events"])?;
    let head: u64 = tool("psql", &[bench.pipeline_url, "-Atc", "SELECT seq FROM outbox_head"])?
        .trim()
        .parse()
        .context("outbox head")?;

    // The baseline: the platform's consumer with a sink that applies nothing.
    let done = CancellationToken::new();
    let nothing = Nothing {
        applied: AtomicU64::new(0),
        last: head,
        done: done.clone(),
    };
    let config = ConsumerConfig {
        name: "bench<-pipeline".to_owned(),
        endpoint: bench.pipeline_grpc.to_owned(),
        credentials: Credentials::Token(bench.token.to_owned()),
        source: None,
        types: Vec::new(),
        partition: None,
        status: Default::default(),
    };
    let started = Instant::now();
    crm_platform::consumer::run(config, &nothing, done).await?;
    let baseline_elapsed = started.elapsed();
    let applied = nothing.applied.load(Ordering::Relaxed);
    anyhow::ensure!(applied >= head, "the baseline consumer saw {applied} of {head} events");

    // `crm analytics` from an empty database, until its checkpoint reaches the head.
    let started = Instant::now();
    let (_analytics, _) = start_analytics(
        bench.analytics_url,
        &[
            ("CRM_PIPELINE_ENDPOINT", bench.pipeline_grpc),
            ("CRM_INGEST_PARTITIONS", bench.partitions),
        ],
    )?;
    // The events its consumers applied, each counted once in the transaction that applied it
    // (whatever the partitions), polled on one kept connection: starting psql at every poll
    // took about a fifth of the machine's CPU from the ingest it measured.
    let mut poll = sqlx::PgConnection::connect(bench.analytics_url).await?;
    let query = "SELECT coalesce(sum(events), 0)::bigint FROM ingest_watermarks WHERE source = 'crm.pipeline.v1'";
    loop {
        let seq: i64 = sqlx::query_scalar(query).fetch_one(&mut poll).await?;
        if u64::try_from(seq).unwrap_or(0) >= head {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "analytics stopped at {seq} of {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    // Every seeded event became facts (none parked or skipped), or the rate measured
    // something other than ingest.
    let count = |table: &str| -> anyhow::Result<u64> {
        Ok(tool(
            "psql",
            &[bench.analytics_url, "-Atc", &format!("SELECT count(*) FROM {table}")],
        )?
        .trim()
        .parse()?)
    };
    let (deals, transitions) = (count("deal_facts")?, count("deal_transitions")?);
    anyhow::ensure!(
        deals >= bench.events && transitions >= bench.events,
        "{deals} deal facts and {transitions} transitions for {} events",
        bench.events
    );
    #[allow(clippy::cast_precision_loss)]
    let (rate, baseline) = (
        head as f64 / elapsed.as_secs_f64(),
        head as f64 / baseline_elapsed.as_secs_f64(),
    );
    println!(
        "| analytics ingest in catch-up: {head} pipeline events ({} DealWon: deal and transition facts; 10 tenants; {} partitions on one replica) | {rate:.0} events/s (process start to checkpoint at the head) | the platform consumer applying nothing, same feed: {baseline:.0} events/s | {:.2}x | >= 20k events/s and >= 0.3x |",
        bench.events,
        bench.partitions,
        rate / baseline
    );
    Ok(())
}
