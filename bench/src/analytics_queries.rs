//! Metric queries of the analytics service over a large tenant: deals and their stage
//! histories written straight into the analytics database (their closes and stays kept the
//! way ingest keeps them, by the same functions), then `clients` loops of QueryMetric
//! (win rate and forecast accuracy by owner, cycle days and the stage funnel, each two ways) over one
//! quarter for `seconds`.

use std::time::Duration;

use crm_proto::crm::analytics::v1 as pb;
use crm_proto::crm::analytics::v1::metric_service_client::MetricServiceClient;

use super::{Bearer, load, ms, start_analytics, token, tool};

pub(crate) struct QueryBench<'a> {
    /// A migrated analytics database (the bench tenant's facts are added to it).
    pub analytics_url: &'a str,
    pub deals: u64,
    pub clients: usize,
    pub duration: Duration,
}

/// Deals over two years (2025-2026) in one tenant, fifty owners, six stages; each with five
/// entries of history (created, three moves, then won, lost or a fourth move: open), a third
/// each; a commit forecast per owner and quarter.
fn seed(deals: u64) -> String {
    format!(
        r#"
BEGIN;
SET LOCAL crm.tenant_id = 'bench';
INSERT INTO stage_facts (tenant_id, pipeline_id, stage_id, position, kind)
SELECT 'bench', '00000000-0000-0000-0000-0000000000aa', ('00000000-0000-0000-0000-00000000000' || s)::uuid, s,
       CASE s WHEN 4 THEN 'won' WHEN 5 THEN 'lost' ELSE 'open' END
FROM generate_series(0, 5) s;
INSERT INTO deal_facts (tenant_id, deal_id, pipeline_id, owner, lead_id, amount_minor, currency, create_time,
                        outcome, close_time, customer_id)
SELECT 'bench', md5('deal' || i)::uuid, '00000000-0000-0000-0000-0000000000aa', 'rep-' || (i % 50), NULL,
       1000 + (i % 97) * 100, 'EUR', timestamptz '2025-01-01' + (i % 700) * interval '1 day' + (i % 86400) * interval '1 second',
       CASE i % 3 WHEN 0 THEN 'won' WHEN 1 THEN 'lost' ELSE 'open' END,
       CASE WHEN i % 3 < 2 THEN timestamptz '2025-01-01' + (i % 700 + 5 + i % 60) * interval '1 day' END,
       md5('customer' || (i % 100000))::uuid
FROM generate_series(1, {deals}) i;
INSERT INTO deal_transitions (tenant_id, deal_id, sequence, kind, from_stage, to_stage, time)
SELECT 'bench', md5('deal' || i)::uuid, s,
       CASE WHEN s = 1 THEN 'created' WHEN s < 5 THEN 'moved'
            WHEN i % 3 = 0 THEN 'won' WHEN i % 3 = 1 THEN 'lost' ELSE 'moved' END,
       CASE WHEN s > 1 THEN ('00000000-0000-0000-0000-00000000000' || (s - 2) % 4)::uuid END,
       CASE WHEN s < 5 OR i % 3 = 2 THEN ('00000000-0000-0000-0000-00000000000' || (s - 1) % 4)::uuid
            WHEN i % 3 = 0 THEN '00000000-0000-0000-0000-000000000004'::uuid
            ELSE '00000000-0000-0000-0000-000000000005'::uuid END,
       timestamptz '2025-01-01' + (i % 700) * interval '1 day' + (s - 1) * (1 + i % 12) * interval '1 day'
FROM generate_series(1, {deals}) i, generate_series(1, 5) s;
INSERT INTO forecast_facts (tenant_id, forecast_id, owner, period, amount_minor, currency, category, submit_time)
SELECT 'bench', md5('forecast' || o || q)::uuid, 'rep-' || o, q, 5000000, 'EUR', 'commit', timestamptz '2025-06-15'
FROM generate_series(0, 49) o, unnest(ARRAY['2025-Q3', '2025-Q4', '2026-Q1']) q;
SELECT analytics_refresh_closes(ARRAY(SELECT deal_id FROM deal_facts WHERE tenant_id = 'bench'), '{{}}');
SELECT analytics_refresh_stays(ARRAY(SELECT deal_id FROM deal_facts WHERE tenant_id = 'bench'));
COMMIT;
ANALYZE;
"#
    )
}

/// The queries the clients take turns at.
fn queries() -> Vec<(&'static str, pb::Grouping)> {
    vec![
        ("metrics/win-rate", pb::Grouping::Owner),
        ("metrics/sales-cycle-days", pb::Grouping::Unspecified),
        ("metrics/sales-cycle-days", pb::Grouping::Owner),
        ("metrics/stage-funnel", pb::Grouping::Stage),
        ("metrics/stage-funnel", pb::Grouping::Owner),
        ("metrics/forecast-accuracy", pb::Grouping::Owner),
    ]
}

pub(crate) async fn run(bench: &QueryBench<'_>) -> anyhow::Result<()> {
    let seeded = std::time::Instant::now();
    tool(
        "psql",
        &[
            bench.analytics_url,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &seed(bench.deals),
        ],
    )?;
    let seeding = seeded.elapsed();
    let (_analytics, grpc) = start_analytics(bench.analytics_url, &[("CRM_INGEST_PARTITIONS", "1")])?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer = Bearer(format!("Bearer {}", token()?).parse()?);
    let client = MetricServiceClient::with_interceptor(channel, bearer);
    println!(
        "- analytics queries: {} deals and {} stage transitions seeded in {:.0} s; {} clients for {} s, one after the other at win rate by owner, cycle days (tenant, by owner), the stage funnel (by stage, by owner) and forecast accuracy by owner over 2025-Q3",
        bench.deals,
        bench.deals * 5,
        seeding.as_secs_f64(),
        bench.clients,
        bench.duration.as_secs()
    );
    let queries = queries();
    let each = bench.duration / u32::try_from(queries.len()).unwrap_or(1);
    for (name, grouping) in queries {
        let client = client.clone();
        let run = load(bench.clients, each, None, move |_, _| {
            let mut client = client.clone();
            async move {
                client
                    .query_metric(pb::QueryMetricRequest {
                        name: name.to_owned(),
                        period: "2025-Q3".to_owned(),
                        group_by: grouping as i32,
                    })
                    .await
                    .is_ok()
            }
        })
        .await;
        println!(
            "| {name} (group {grouping:?}), {} deals | {} | p99 {:.1} ms | <= 50 ms p99, 8 clients |",
            bench.deals,
            run.summary(),
            ms(run.percentile(0.99))
        );
    }
    Ok(())
}
