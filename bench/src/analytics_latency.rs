//! Commit in the pipeline to the metric reflecting it: `crm pipeline` and `crm analytics` on
//! PostgreSQL, a load of deals created and won at `rate` events/s over ten tenants, and a probe
//! that wins a deal in its own tenant every 250 ms through the pipeline's API and polls the win
//! rate until it counts it.
//!
//! The load commits its events into the pipeline's outbox the way the service does
//! (`outbox_append`, one transaction an event, numbered by the running service's sequencer),
//! not through its API: on two cores the pipeline's own work per write leaves a load through
//! the API far below 1k events/s (about 360 to 410 in the seventeenth session), and what is
//! measured is the path from a commit to the metric.

use std::time::{Duration, Instant};

use crm_platform::TenantId;
use crm_platform::outbox::{NewEvent, append_pg};
use crm_platform::time::timestamp;
use crm_proto::crm::analytics::v1 as analytics;
use crm_proto::crm::analytics::v1::metric_service_client::MetricServiceClient;
use crm_proto::crm::common::v1::Money;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::crm::pipeline::v1::deal_service_client::DealServiceClient;
use crm_proto::crm::pipeline::v1::pipeline_service_client::PipelineServiceClient;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use super::{Bearer, load, ms, start_analytics, token_for};

pub(crate) struct LatencyBench<'a> {
    /// A migrated pipeline database with `crm pipeline` serving it.
    pub pipeline_url: &'a str,
    pub pipeline_grpc: &'a str,
    /// A migrated analytics database.
    pub analytics_url: &'a str,
    /// Pipeline events per second of the load (each deal is created and won: two events).
    pub rate: u64,
    pub duration: Duration,
}

pub(crate) type Deals = DealServiceClient<InterceptedService<Channel, Bearer>>;

pub(crate) async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// A tenant's deal client, and a pipeline of its own (its name and its first stage's id).
pub(crate) async fn tenant(channel: &Channel, tenant: &str) -> anyhow::Result<(Deals, Board)> {
    let bearer = || -> anyhow::Result<Bearer> { Ok(Bearer(format!("Bearer {}", token_for(tenant)?).parse()?)) };
    let stage = |name: &str, kind: pb::StageKind| pb::Stage {
        display_name: name.to_owned(),
        kind: kind as i32,
        ..Default::default()
    };
    let pipeline = PipelineServiceClient::with_interceptor(channel.clone(), bearer()?)
        .create_pipeline(pb::CreatePipelineRequest {
            pipeline: Some(pb::Pipeline {
                display_name: "Bench".to_owned(),
                stages: vec![
                    stage("Open", pb::StageKind::Open),
                    stage("Won", pb::StageKind::Won),
                    stage("Lost", pb::StageKind::Lost),
                ],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .pipeline
        .ok_or_else(|| anyhow::anyhow!("no pipeline"))?;
    let open = pipeline.stages.first().map(|s| s.id.clone()).unwrap_or_default();
    Ok((
        DealServiceClient::with_interceptor(channel.clone(), bearer()?),
        Board {
            tenant: TenantId::parse(tenant).map_err(|e| anyhow::anyhow!(e))?,
            pipeline: pipeline.name,
            open,
        },
    ))
}

/// A load tenant's pipeline.
pub(crate) struct Board {
    tenant: TenantId,
    pipeline: String,
    /// The first stage's id.
    open: String,
}

/// Event `n` of a load client: deal `n / 2` of the client created (n even) or won (n odd),
/// committed in its own transaction as the pipeline service commits its events.
pub(crate) async fn commit_load_event(pool: &PgPool, board: &Board, client: usize, n: u64) -> anyhow::Result<()> {
    let id = Uuid::from_u64_pair(u64::try_from(client)?, n / 2);
    let now = chrono::Utc::now();
    let name = format!("deals/{id}");
    let mut deal = pb::Deal {
        name: name.clone(),
        display_name: "Bench deal".to_owned(),
        pipeline: board.pipeline.clone(),
        stage: board.open.clone(),
        status: pb::DealStatus::Open as i32,
        owner: format!("rep{}", client % 20),
        amount: Some(Money {
            amount_minor: 1000,
            currency_code: "EUR".to_owned(),
        }),
        create_time: Some(timestamp(now)),
        ..Default::default()
    };
    let event = if n.is_multiple_of(2) {
        // Its creation transition is the deal's own (stage and create time).
        NewEvent::of(&board.tenant, name, "bench", now, &pb::DealCreated { deal: Some(deal) })?
    } else {
        deal.status = pb::DealStatus::Won as i32;
        deal.close_time = Some(timestamp(now));
        let transition = pb::StageTransition {
            deal: name.clone(),
            sequence: 2,
            kind: pb::TransitionKind::Won as i32,
            from_stage: board.open.clone(),
            transition_time: Some(timestamp(now)),
            ..Default::default()
        };
        NewEvent::of(
            &board.tenant,
            name,
            "bench",
            now,
            &pb::DealWon {
                deal: Some(deal),
                transition: Some(transition),
            },
        )?
    };
    let mut tx = crm_platform::db::begin_tenant(pool, &board.tenant).await?;
    append_pg(&mut tx, &[event]).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a deal in `pipeline` and wins it through the pipeline's API (two events).
async fn win(deals: &mut Deals, pipeline: &str) -> Result<(), tonic::Status> {
    let deal = deals
        .create_deal(pb::CreateDealRequest {
            deal: Some(pb::Deal {
                display_name: "Bench deal".to_owned(),
                pipeline: pipeline.to_owned(),
                amount: Some(Money {
                    amount_minor: 1000,
                    currency_code: "EUR".to_owned(),
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .deal
        .ok_or_else(|| tonic::Status::internal("no deal"))?;
    deals
        .close_deal(pb::CloseDealRequest {
            name: deal.name,
            outcome: pb::DealStatus::Won as i32,
            reason: String::new(),
            etag: String::new(),
        })
        .await?;
    Ok(())
}

pub(crate) async fn run(bench: &LatencyBench<'_>) -> anyhow::Result<()> {
    let (_analytics, analytics_grpc) =
        start_analytics(bench.analytics_url, &[("CRM_PIPELINE_ENDPOINT", bench.pipeline_grpc)])?;
    let pipeline = channel(bench.pipeline_grpc).await?;
    let mut load_tenants = Vec::new();
    for i in 0..10 {
        load_tenants.push(tenant(&pipeline, &format!("latency-load-{i}")).await?);
    }
    let (mut probe_deals, probe_board) = tenant(&pipeline, "latency-probe").await?;
    let mut metrics = MetricServiceClient::with_interceptor(
        channel(&format!("http://{analytics_grpc}")).await?,
        Bearer(format!("Bearer {}", token_for("latency-probe")?).parse()?),
    );
    let period = chrono::Utc::now().format("%Y").to_string();

    // The load: a client per 20 events/s of the rate, up to 48 (a client waits for each
    // commit, and a commit waits for its turn at the disk, so it takes many), each holding
    // its share of the rate.
    let clients = usize::try_from(bench.rate.div_ceil(20).clamp(1, 48))?;
    #[allow(clippy::cast_precision_loss)]
    let per_client = bench.rate as f64 / clients as f64;
    let load_pool = PgPoolOptions::new()
        .max_connections(u32::try_from(clients)?)
        .connect(bench.pipeline_url)
        .await?;
    let pool = load_pool.clone();
    let tenants = std::sync::Arc::new(load_tenants);
    let load_run = {
        let tenants = std::sync::Arc::clone(&tenants);
        tokio::spawn(load(clients, bench.duration, Some(per_client), move |client, n| {
            let tenants = std::sync::Arc::clone(&tenants);
            let pool = pool.clone();
            async move {
                let (_, board) = &tenants[client % tenants.len()];
                commit_load_event(&pool, board, client, n).await.is_ok()
            }
        }))
    };

    // The probe.
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut won: i64 = 0;
    while started.elapsed() < bench.duration {
        let next = Instant::now() + Duration::from_millis(250);
        let t0 = Instant::now();
        win(&mut probe_deals, &probe_board.pipeline).await?;
        won += 1;
        loop {
            let answer = metrics
                .query_metric(analytics::QueryMetricRequest {
                    name: "metrics/win-rate".to_owned(),
                    period: period.clone(),
                    group_by: 0,
                })
                .await?
                .into_inner();
            if answer.figures.first().is_some_and(|f| f.count >= won) {
                latencies.push(t0.elapsed());
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "the win never reached the metric"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let load_run = load_run.await?;
    // Every win the load committed reaches the facts, or the probes measured an analytics
    // service that parked or skipped the load.
    let wins: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE tenant_id LIKE 'latency-load-%' AND type = 'crm.pipeline.v1.DealWon'",
    )
    .fetch_one(&load_pool)
    .await?;
    let mut analytics_db = sqlx::PgConnection::connect(bench.analytics_url).await?;
    let waited = Instant::now();
    loop {
        let won: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deal_facts WHERE tenant_id LIKE 'latency-load-%' AND outcome = 'won'",
        )
        .fetch_one(&mut analytics_db)
        .await?;
        if won >= wins {
            break;
        }
        anyhow::ensure!(
            waited.elapsed() < Duration::from_secs(60),
            "{won} of the load's {wins} wins reached the facts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    let at = |p: f64| {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i]
    };
    println!(
        "| commit in the pipeline to the metric reflecting it: a won deal polled in the win rate every 5 ms, {} probes, under a load asked to hold {} pipeline events/s over 10 tenants, committed into the pipeline's outbox, that reached {:.0} events/s ({} events, commits {}) for {} s | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms | | | p99 <= 1 s at 1k events/s |",
        latencies.len(),
        bench.rate,
        load_run.rate(),
        load_run.ops,
        load_run.summary(),
        bench.duration.as_secs(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    Ok(())
}
