//! Customer value at scale and the idle footprint of `crm analytics`: a tenant of `customers`
//! customers with one to three won deals each, written straight into the analytics database;
//! then ListSegments, which scores every customer from the facts (recency, frequency,
//! monetary, quintiles, segments, the BG/NBD and Gamma-Gamma fit): a full recompute.

use std::time::{Duration, Instant};

use crm_proto::crm::analytics::v1 as pb;
use crm_proto::crm::analytics::v1::customer_value_service_client::CustomerValueServiceClient;

use super::{Bearer, ms, start_analytics, token_for, tool};

pub(crate) struct ValueBench<'a> {
    /// A migrated analytics database (the bench tenant's facts are added to it).
    pub analytics_url: &'a str,
    pub customers: u64,
}

/// The tenant the customers are seeded in.
const TENANT: &str = "rfm";

/// Customers `c` with 1 + c % 3 won deals, on distinct days of 2025-2026.
fn seed(customers: u64) -> String {
    format!(
        r#"
BEGIN;
SET LOCAL crm.tenant_id = '{TENANT}';
INSERT INTO deal_facts (tenant_id, deal_id, pipeline_id, owner, lead_id, amount_minor, currency, create_time,
                        outcome, close_time, customer_id)
SELECT '{TENANT}', md5('rfm-deal' || c || '-' || k)::uuid, '00000000-0000-0000-0000-0000000000aa', 'rep-' || (c % 50),
       NULL, 1000 + ((c * 7 + k * 13) % 97) * 100, 'EUR',
       timestamptz '2025-01-01' + ((c + k * 97) % 690) * interval '1 day',
       'won', timestamptz '2025-01-01' + ((c + k * 97) % 690 + 3) * interval '1 day' + (c % 86400) * interval '1 second',
       md5('rfm-customer' || c)::uuid
FROM generate_series(1, {customers}) c, generate_series(0, 2) k
WHERE k <= c % 3;
COMMIT;
ANALYZE deal_facts;
"#
    )
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kib / 1024.0)
}

pub(crate) async fn run(bench: &ValueBench<'_>) -> anyhow::Result<()> {
    let (analytics, grpc) = start_analytics(bench.analytics_url, &[("CRM_INGEST_PARTITIONS", "1")])?;
    // Idle: up, following nothing new (its peers are absent), after the first rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_mib(analytics.0.id())?;
    println!("| `crm analytics` idle resident memory (PostgreSQL, 5 s after start) | {idle:.1} MiB | | | <= 30 MB |");

    let seeded = Instant::now();
    tool(
        "psql",
        &[
            bench.analytics_url,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &seed(bench.customers),
        ],
    )?;
    let seeding = seeded.elapsed();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let bearer = Bearer(format!("Bearer {}", token_for(TENANT)?).parse()?);
    let mut client = CustomerValueServiceClient::with_interceptor(channel, bearer).max_decoding_message_size(64 << 20);
    let mut times = Vec::new();
    let mut scored = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let answer = client
            .list_segments(pb::ListSegmentsRequest {
                segment: String::new(),
                page_size: 0,
            })
            .await?
            .into_inner();
        times.push(started.elapsed());
        scored = answer.segments.iter().map(|s| s.customers).sum::<i64>();
    }
    anyhow::ensure!(
        u64::try_from(scored).unwrap_or_default() == bench.customers,
        "scored {scored} customers of {}",
        bench.customers
    );
    let peak = rss_mib(analytics.0.id())?;
    times.sort();
    println!(
        "| RFM, segments and predicted value, full recompute (ListSegments): {} customers, {} won deals seeded in {:.0} s | {} | best {:.0} ms; resident memory after: {peak:.0} MiB | | <= 10 s |",
        bench.customers,
        bench.customers * 2,
        seeding.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.0} ms", ms(*t)))
            .collect::<Vec<_>>()
            .join(", "),
        ms(times[0]),
    );
    drop(analytics);
    Ok(())
}
