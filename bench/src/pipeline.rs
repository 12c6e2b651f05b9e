//! The pipeline service's targets: MoveDeal over gRPC against pgbench running the same
//! statements in one transaction on tables of the same shape, and the board of a pipeline
//! holding 100k open deals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::crm::pipeline::v1::deal_service_client::DealServiceClient;
use crm_proto::crm::pipeline::v1::pipeline_service_client::PipelineServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{Bearer, BenchArgs, load, ms, pgbench, tool};

pub(crate) struct PipelineBench<'a> {
    pub args: &'a BenchArgs,
    /// The pipeline service's database.
    pub url: &'a str,
    pub grpc: &'a str,
    pub duration: Duration,
    pub board_deals: usize,
}

type Deals = DealServiceClient<InterceptedService<Channel, Bearer>>;
type Pipelines = PipelineServiceClient<InterceptedService<Channel, Bearer>>;

async fn channel(endpoint: &str) -> anyhow::Result<(Channel, Bearer)> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok((channel, Bearer(format!("Bearer {}", super::token()?).parse()?)))
}

fn money(minor: i64) -> crm_proto::crm::common::v1::Money {
    crm_proto::crm::common::v1::Money {
        amount_minor: minor,
        currency_code: "EUR".into(),
    }
}

/// A pipeline with `open` open stages, won and lost.
async fn create_pipeline(client: &mut Pipelines, open: usize) -> anyhow::Result<pb::Pipeline> {
    let mut stages: Vec<pb::Stage> = (0..open)
        .map(|i| pb::Stage {
            display_name: format!("Stage {i}"),
            probability_percent: i32::try_from(10 * (i + 1)).unwrap_or(50).min(90),
            kind: pb::StageKind::Open.into(),
            ..Default::default()
        })
        .collect();
    stages.push(pb::Stage {
        display_name: "Won".into(),
        probability_percent: 100,
        kind: pb::StageKind::Won.into(),
        ..Default::default()
    });
    stages.push(pb::Stage {
        display_name: "Lost".into(),
        kind: pb::StageKind::Lost.into(),
        ..Default::default()
    });
    let created = client
        .create_pipeline(pb::CreatePipelineRequest {
            pipeline: Some(pb::Pipeline {
                display_name: "Bench".into(),
                stages,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    created.pipeline.ok_or_else(|| anyhow::anyhow!("no pipeline"))
}

pub(crate) async fn run(bench: &PipelineBench<'_>) -> anyhow::Result<()> {
    move_deal(bench).await?;
    board(bench).await
}

/// MoveDeal against pgbench doing what one move does, in one transaction: pin the tenant,
/// read the deal and its pipeline, update the deal and the board's counts (what the trigger
/// does), append the transition, write the event (and its audit copy) and notify.
async fn move_deal(bench: &PipelineBench<'_>) -> anyhow::Result<()> {
    let args = bench.args;
    let (channel, bearer) = channel(bench.grpc).await?;
    let mut pipelines = PipelineServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let deals: Deals = DealServiceClient::with_interceptor(channel, bearer);
    let pipeline = create_pipeline(&mut pipelines, 3).await?;
    let stages: Vec<String> = pipeline.stages.iter().take(3).map(|s| s.id.clone()).collect();
    // One deal per client: moves of one deal are serialised by its etag, not what is measured.
    let mut names = Vec::new();
    for i in 0..args.clients {
        let created = deals
            .clone()
            .create_deal(pb::CreateDealRequest {
                deal: Some(pb::Deal {
                    display_name: format!("Move {i}"),
                    pipeline: pipeline.name.clone(),
                    amount: Some(money(100_000)),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        names.push(created.deal.map(|d| d.name).unwrap_or_default());
    }
    let names = Arc::new(names);
    let stages = Arc::new(stages);
    let positions: Arc<Vec<AtomicUsize>> = Arc::new((0..args.clients).map(|_| AtomicUsize::new(0)).collect());
    let run = load(args.clients, bench.duration, None, move |c, _| {
        let mut deals = deals.clone();
        let (names, stages, positions) = (Arc::clone(&names), Arc::clone(&stages), Arc::clone(&positions));
        async move {
            let next = (positions[c].load(Ordering::Relaxed) + 1) % stages.len();
            let moved = deals
                .move_deal(pb::MoveDealRequest {
                    name: names[c].clone(),
                    stage: stages[next].clone(),
                    etag: String::new(),
                })
                .await
                .is_ok();
            if moved {
                positions[c].store(next, Ordering::Relaxed);
            }
            moved
        }
    })
    .await;

    // The baseline's tables: the service's own, copied with their indexes (not their
    // policies or triggers: the audit copy is one more statement instead).
    let pipeline_id = pipeline.name.trim_start_matches("pipelines/");
    tool(
        "psql",
        &[
            bench.url,
            "-qc",
            &format!(
                "CREATE TABLE bench_deals (LIKE deals INCLUDING ALL); \
                 CREATE TABLE bench_transitions (LIKE deal_transitions INCLUDING ALL); \
                 CREATE TABLE bench_outbox (LIKE outbox_events INCLUDING ALL); \
                 CREATE TABLE bench_audit (LIKE audit_log INCLUDING ALL); \
                 CREATE TABLE bench_board (LIKE board_counts INCLUDING ALL); \
                 INSERT INTO bench_deals (tenant_id, id, revision, create_time, update_time, body) \
                   SELECT tenant_id, ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, revision, create_time, update_time, body \
                   FROM (SELECT * FROM deals WHERE body->>'pipeline' = '{pipeline_id}' LIMIT 1) AS d, generate_series(1, 1000) AS n;"
            ),
        ],
    )?;
    tool("psql", &[bench.url, "-qc", "VACUUM ANALYZE bench_deals"])?;
    let script = format!(
        "\\set n random(1, 1000)\n\
         \\set seq random(1, 1000000000000)\n\
         BEGIN;\n\
         SELECT set_config('crm.tenant_id', 'bench', true), set_config('crm.traceparent', '', true);\n\
         SELECT revision, body FROM bench_deals WHERE tenant_id = 'bench' AND id = ('00000000-0000-7000-8000-' || lpad(to_hex(:n), 12, '0'))::uuid;\n\
         SELECT revision, body FROM pipelines WHERE tenant_id = 'bench' AND id = '{pipeline_id}';\n\
         UPDATE bench_deals SET revision = revision + 1, update_time = now(), \
           body = jsonb_set(jsonb_set(body, '{{stage}}', to_jsonb(gen_random_uuid()::text)), '{{transitions}}', to_jsonb(:seq)) \
           WHERE tenant_id = 'bench' AND id = ('00000000-0000-7000-8000-' || lpad(to_hex(:n), 12, '0'))::uuid;\n\
         UPDATE bench_board SET deals = deals - 1, amount = amount - 100000 WHERE tenant_id = 'bench' AND pipeline_id = '{pipeline_id}' \
           AND stage_id = 'from' || (:seq % 3) AND currency = 'EUR' AND owner = 'bench' AND shard = :n % 8;\n\
         INSERT INTO bench_board VALUES ('bench', '{pipeline_id}', 'to' || (:seq % 3), 'EUR', 'bench', :n % 8, 1, 100000) \
           ON CONFLICT (tenant_id, pipeline_id, stage_id, currency, owner, shard) \
           DO UPDATE SET deals = bench_board.deals + 1, amount = bench_board.amount + excluded.amount;\n\
         INSERT INTO bench_transitions VALUES ('bench', ('00000000-0000-7000-8000-' || lpad(to_hex(:n), 12, '0'))::uuid, :seq, 'moved', \
           gen_random_uuid(), gen_random_uuid(), 'Stage 0', 'Stage 1', 100000, 'EUR', 'bench', now(), '');\n\
         WITH e AS (INSERT INTO bench_outbox (tenant_id, id, type, subject, time, actor, traceparent, payload) \
           SELECT 'bench', gen_random_uuid(), 'crm.pipeline.v1.DealStageChanged', 'deals/' || :n, now(), 'bench', '', \
             jsonb_build_object('record', body) FROM bench_deals WHERE tenant_id = 'bench' AND id = ('00000000-0000-7000-8000-' || lpad(to_hex(:n), 12, '0'))::uuid \
           RETURNING *) \
         INSERT INTO bench_audit SELECT tenant_id, id, type, subject, time, actor, payload FROM e;\n\
         SELECT pg_notify('bench_outbox', '');\n\
         COMMIT;\n"
    );
    let baseline = pgbench(args, bench.url, &script)?;
    println!(
        "| MoveDeal over gRPC (transition + history + outbox in one transaction), {} clients | {} | pgbench, the same statements in one transaction: {baseline:.0} tps | {:.2}x | >= 0.5x |",
        args.clients,
        run.summary(),
        run.rate() / baseline
    );
    Ok(())
}

/// The board of a pipeline holding `board_deals` open deals, from one client and under load.
async fn board(bench: &PipelineBench<'_>) -> anyhow::Result<()> {
    let (channel, bearer) = channel(bench.grpc).await?;
    let mut pipelines: Pipelines = PipelineServiceClient::with_interceptor(channel, bearer);
    let pipeline = create_pipeline(&mut pipelines, 6).await?;
    let pipeline_id = pipeline.name.trim_start_matches("pipelines/").to_owned();
    let stage_ids: Vec<String> = pipeline.stages.iter().take(6).map(|s| format!("'{}'", s.id)).collect();
    // The deals as the service stores them (its document form), written in bulk.
    tool(
        "psql",
        &[
            bench.url,
            "-qc",
            &format!(
                "INSERT INTO deals (tenant_id, id, revision, create_time, update_time, body) \
                 SELECT 'bench', gen_random_uuid(), 1, now(), now(), jsonb_build_object( \
                   'name', 'Deal ' || i, 'pipeline', '{pipeline_id}', 'stage', (ARRAY[{stages}])[1 + i % 6], 'status', 'open', \
                   'amount', jsonb_build_object('minor', 1000 + i % 100000, 'currency', CASE WHEN i % 10 = 0 THEN 'USD' ELSE 'EUR' END), \
                   'close_date', to_char(date '2027-01-01' + (i % 365), 'YYYY-MM-DD'), 'owner', 'rep' || (i % 50), \
                   'contact', NULL, 'company', NULL, 'forecast', 'pipeline', 'lines', '[]'::jsonb, 'close_reason', '', \
                   'close_time', NULL, 'lead', NULL, 'stage_enter_time', 0, 'transitions', 1) \
                 FROM generate_series(1, {n}) AS i;",
                stages = stage_ids.join(","),
                n = bench.board_deals
            ),
        ],
    )?;
    tool("psql", &[bench.url, "-qc", "VACUUM ANALYZE deals"])?;
    let request = pb::GetBoardRequest {
        pipeline: pipeline.name.clone(),
        deals_per_stage: 20,
        owner: String::new(),
    };
    let check = pipelines.get_board(request.clone()).await?.into_inner();
    let total: i64 = check.columns.iter().map(|c| c.deal_count).sum();
    anyhow::ensure!(
        total == i64::try_from(bench.board_deals)?,
        "the board counts {total} deals, not {}",
        bench.board_deals
    );
    let single = {
        let client = pipelines.clone();
        let request = request.clone();
        load(1, bench.duration, None, move |_, _| {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.get_board(request).await.is_ok() }
        })
        .await
    };
    let loaded = {
        let request = request.clone();
        load(bench.args.clients, bench.duration, None, move |_, _| {
            let (mut client, request) = (pipelines.clone(), request.clone());
            async move { client.get_board(request).await.is_ok() }
        })
        .await
    };
    println!(
        "| GetBoard over {} open deals in one pipeline (6 stages, 20 deals each, counts and totals per currency) | 1 client: {}; {} clients: {} | | p99 {:.1} ms | p99 <= 50 ms |",
        bench.board_deals,
        single.summary(),
        bench.args.clients,
        loaded.summary(),
        ms(single.percentile(0.99)),
    );
    Ok(())
}
