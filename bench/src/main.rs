//! `crm-bench`: the benchmark harness, a binary of its own beside `crm` (nothing of it is in the
//! production binary). It drives the suite as a user would: it creates a fresh PostgreSQL
//! database, starts real `crm contact` and `crm gateway` processes on it (the `crm` binary next
//! to this one, or `--binary`), and measures each target side by side with
//! its baseline in the same run on the same server (machines are noisy, so only ratios taken
//! together mean anything):
//!
//! - CreateContact over gRPC against pgbench running a single-row insert, same client count;
//!   beside it, for reading that ratio, pgbench doing what one create does in one transaction,
//!   and a create refused by validation (the harness, gRPC and authentication alone);
//! - GetContact through the gateway against the same call over gRPC directly, at full load and
//!   at half load (the gateway's added p99);
//! - an import of generated contacts against `psql \copy` of the same CSV into a table with the
//!   same kind of indexes, and the service's peak memory while importing;
//! - SearchContacts latency over a large tenant;
//! - the change feed: catch-up throughput to one consumer, and commit-to-applied latency;
//! - MoveDeal over gRPC against pgbench running the same statements in one transaction, and
//!   the board of a pipeline of 100k open deals (a `crm pipeline` on its own database).
//!
//! - on `crm serve`: creates with 20,000-item lists, search over a large SQLite tenant, and
//!   resident memory over a sustained load (see `embedded`);
//! - the analytics service: ingest in catch-up against a consumer applying nothing
//!   (`analytics`), and metric queries over a tenant of a million deals (`analytics-queries`).
//!
//! It prints a Markdown report (machine, command, figures) for BENCHMARKS.md.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod analytics;
mod analytics_latency;
mod analytics_queries;
mod analytics_value;
mod duplicates;
mod embedded;
mod feed;
mod notification;
mod pipeline;

use anyhow::Context;
use crm_platform::{Principal, Role, TenantId, UserId};
use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient;
use futures::StreamExt;
use sqlx::{Connection, Executor};
use tonic::transport::Channel;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
/// The local PostgreSQL of a development machine.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const TENANT: &str = "bench";

#[derive(clap::Parser)]
#[command(
    name = "crm-bench",
    version,
    about = "Runs the CRM suite's benchmark harness against a fresh database on a PostgreSQL server"
)]
pub(crate) struct BenchArgs {
    /// A superuser URL of the PostgreSQL server to benchmark on; a fresh database is created.
    #[arg(long, env = "CRM_BENCH_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Concurrent clients of every load test.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds each load test runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows of the import test.
    #[arg(long, default_value_t = 100_000)]
    import_rows: usize,
    /// Contacts the search test runs over.
    #[arg(long, default_value_t = 1_000_000)]
    search_rows: usize,
    /// Contacts the duplicate search pages through.
    #[arg(long, default_value_t = 200_000)]
    duplicate_rows: usize,
    /// Events the feed's catch-up test reads.
    #[arg(long, default_value_t = 200_000)]
    feed_events: u64,
    /// Events per second of the feed's latency test.
    #[arg(long, default_value_t = 1_000)]
    feed_rate: u64,
    /// Seconds the feed's latency test runs.
    #[arg(long, default_value_t = 60)]
    feed_seconds: u64,
    /// Pipeline events the analytics ingest test catches up on.
    #[arg(long, default_value_t = 200_000)]
    analytics_events: u64,
    /// Deals (each with five entries of stage history) of the analytics query test.
    #[arg(long, default_value_t = 1_000_000)]
    query_deals: u64,
    /// Partitions the analytics ingest test's `crm analytics` splits the feed into (one
    /// replica follows them all); by default as many as `crm analytics` itself
    /// (CRM_INGEST_PARTITIONS), so that the figure is that of a deployment as it comes.
    #[arg(long, default_value_t = 8)]
    analytics_partitions: u32,
    /// Customers (one to three won deals each) of the customer value test.
    #[arg(long, default_value_t = 1_000_000)]
    rfm_customers: u64,
    /// Pipeline events per second of the commit-to-metric test's load.
    #[arg(long, default_value_t = 1000)]
    latency_rate: u64,
    /// Seconds the commit-to-metric test runs.
    #[arg(long, default_value_t = 60)]
    latency_seconds: u64,
    /// Webhook deliveries of the notification throughput test.
    #[arg(long, default_value_t = 20_000)]
    notification_deliveries: u64,
    /// Pipeline events per second of the commit-to-webhook test's load.
    #[arg(long, default_value_t = 500)]
    notification_rate: u64,
    /// Seconds the commit-to-webhook test runs.
    #[arg(long, default_value_t = 60)]
    notification_seconds: u64,
    /// Open deals on the board of the board test.
    #[arg(long, default_value_t = 100_000)]
    board_deals: usize,
    /// Contacts the search test on `crm serve` (SQLite) runs over.
    #[arg(long, default_value_t = 100_000)]
    embedded_search_rows: usize,
    /// Seconds the memory soak of `crm serve` runs.
    #[arg(long, default_value_t = 120)]
    soak_seconds: u64,
    /// Scenarios to run: create, get, import, search, duplicates, feed, pipeline, analytics,
    /// analytics-queries, analytics-value, analytics-latency, notification-webhooks,
    /// notification-latency, notification-inbox, and on `crm serve`: lists, embedded-search,
    /// soak.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "create,get,import,search,duplicates,feed,pipeline,analytics,lists,embedded-search,soak"
    )]
    scenarios: Vec<String>,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
    /// The `crm` binary the measured processes run (default: the `crm` next to this
    /// executable, i.e. of the same target directory and profile), so that two builds are
    /// compared by the same harness in one sitting.
    #[arg(long, env = "CRM_BENCH_BINARY")]
    binary: Option<std::path::PathBuf>,
}

/// The binary the measured processes run, set once from `--binary`.
static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The `crm` binary of the measured processes.
fn binary() -> anyhow::Result<std::path::PathBuf> {
    match BINARY.get() {
        Some(path) => Ok(path.clone()),
        None => default_binary(),
    }
}

/// The `crm` binary next to this executable: `cargo build --release -p crm -p crm-bench`
/// puts both in `target/release`.
fn default_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the crm-bench executable")?;
    let dir = exe.parent().context("the crm-bench executable has no directory")?;
    Ok(dir.join(format!("crm{}", std::env::consts::EXE_SUFFIX)))
}

/// Latencies of one load run.
struct Run {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }

    fn summary(&self) -> String {
        format!(
            "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms{}",
            self.rate(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            if self.errors > 0 {
                format!(", {} errors", self.errors)
            } else {
                String::new()
            }
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `clients` loops of `op` for `duration`, each at most `rate_per_client` ops/s when set.
async fn load<F, Fut>(clients: usize, duration: Duration, rate_per_client: Option<f64>, op: F) -> Run
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = Arc::clone(&op);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n = 0;
            let interval = rate_per_client.map(|r| Duration::from_secs_f64(1.0 / r));
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let t = Instant::now();
                if op(client, n).await {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
                n += 1;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        ops: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            run.ops += latencies.len() as u64;
            run.latencies.extend(latencies);
            run.errors += errors;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// `crm pipeline` on `pipeline_url`, checking references with the contact service at
/// `contact_grpc`; returns the process and its gRPC address.
fn start_pipeline(pipeline_url: &str, contact_grpc: &str) -> anyhow::Result<(ChildGuard, String)> {
    start(
        &[
            "pipeline",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[
            ("CRM_DATABASE_URL", pipeline_url),
            ("CRM_CONTACT_ENDPOINT", contact_grpc),
        ],
        "crm pipeline is up",
        "gRPC on ",
    )
}

/// A child process killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `crm <args>` and returns it with the address printed after `label`.
/// Starts `crm analytics` on its database `analytics_url` with `envs` besides, on free ports;
/// returns it with its gRPC address.
fn start_analytics(analytics_url: &str, envs: &[(&str, &str)]) -> anyhow::Result<(ChildGuard, String)> {
    let mut all = vec![("CRM_DATABASE_URL", analytics_url)];
    all.extend_from_slice(envs);
    start(
        &[
            "analytics",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &all,
        "crm analytics is up",
        "gRPC on ",
    )
}

fn start(args: &[&str], envs: &[(&str, &str)], marker: &str, label: &str) -> anyhow::Result<(ChildGuard, String)> {
    let (child, line) = start_line(args, envs, marker)?;
    let address = address_after(&line, label)?;
    Ok((child, address))
}

/// The address printed after `label` in a process's ready line.
fn address_after(line: &str, label: &str) -> anyhow::Result<String> {
    let start = line.find(label).context("address")? + label.len();
    Ok(line[start..].split([' ', ',']).next().unwrap_or_default().to_owned())
}

/// Starts `crm <args>` and returns it with the line in which it reported `marker`.
fn start_line(args: &[&str], envs: &[(&str, &str)], marker: &str) -> anyhow::Result<(ChildGuard, String)> {
    use std::io::BufRead;
    let mut command = Command::new(binary()?);
    command
        .args(args)
        .env("CRM_JWT_SECRET", SECRET)
        .env("CRM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        if line.contains(marker) {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((ChildGuard(child), line));
        }
    }
    anyhow::bail!("crm {args:?} exited before it was up")
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    memory_mib(pid, "VmHWM:")
}

/// A memory figure of a process's /proc status (`VmHWM:` peak, `VmRSS:` now), in MiB.
fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or_else(String::new, |kib| format!(", {:.0} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores ({cpu}){memory}")
}

fn token() -> anyhow::Result<String> {
    token_for(TENANT)
}

/// An admin's token of `tenant`.
fn token_for(tenant: &str) -> anyhow::Result<String> {
    let principal = Principal {
        tenant: TenantId::parse(tenant).map_err(anyhow::Error::msg)?,
        user: UserId::parse("bench").map_err(anyhow::Error::msg)?,
        roles: vec![Role::Admin],
    };
    Ok(crm_platform::auth::mint_token(
        SECRET.as_bytes(),
        &principal,
        Duration::from_secs(24 * 3600),
    )?)
}

/// A token of the `service` role, which reads every tenant's events.
fn service_token() -> anyhow::Result<String> {
    let principal = Principal {
        tenant: TenantId::parse(TENANT).map_err(anyhow::Error::msg)?,
        user: UserId::parse("bench-consumer").map_err(anyhow::Error::msg)?,
        roles: vec![Role::Service],
    };
    Ok(crm_platform::auth::mint_token(
        SECRET.as_bytes(),
        &principal,
        Duration::from_secs(24 * 3600),
    )?)
}

type Client = ContactServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

async fn client(endpoint: &str) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(ContactServiceClient::with_interceptor(
        channel,
        Bearer(format!("Bearer {}", token()?).parse()?),
    ))
}

/// Runs an external tool, returning its standard output.
fn tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("{program} is not installed"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find('/').map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or("", |i| &url[path + i..]);
    format!("{}/{database}{query}", &url[..path])
}

fn main() -> anyhow::Result<()> {
    let args = <BenchArgs as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match &args.binary {
        Some(binary) => {
            let _ = BINARY.set(binary.clone());
        }
        None => {
            let crm = default_binary()?;
            anyhow::ensure!(
                crm.is_file(),
                "no crm binary at {}: build it beside crm-bench (cargo build --release -p crm -p crm-bench), or pass --binary PATH",
                crm.display()
            );
        }
    }
    let database = format!("crm_bench_{}", uuid_suffix());
    let mut admin = sqlx::PgConnection::connect(&args.database_url)
        .await
        .context("cannot reach PostgreSQL")?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .await?;
    for service in ["pipeline", "analytics", "notification"] {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}_{service}")))
            .await?;
    }
    let url = with_database(&args.database_url, &database);
    let pipeline_url = with_database(&args.database_url, &format!("{database}_pipeline"));
    let analytics_url = with_database(&args.database_url, &format!("{database}_analytics"));
    let notification_url = with_database(&args.database_url, &format!("{database}_notification"));
    crm_contact::migrate_postgres(&url).await?;
    crm_pipeline::migrate_postgres(&pipeline_url).await?;
    crm_platform::db::migrate_postgres(&analytics_url, &crm_analytics::store::POSTGRES_MIGRATIONS).await?;
    crm_platform::db::migrate_postgres(&notification_url, &crm_notification::store::POSTGRES_MIGRATIONS).await?;
    let databases = Databases {
        contact: &url,
        pipeline: &pipeline_url,
        analytics: &analytics_url,
        notification: &notification_url,
    };
    let result = scenarios(&args, &databases).await;
    if !args.keep {
        for name in [
            database.clone(),
            format!("{database}_pipeline"),
            format!("{database}_analytics"),
            format!("{database}_notification"),
        ] {
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await?;
        }
    }
    result
}

fn uuid_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

/// The bench's database of each service.
struct Databases<'a> {
    contact: &'a str,
    pipeline: &'a str,
    analytics: &'a str,
    notification: &'a str,
}

async fn scenarios(args: &BenchArgs, databases: &Databases<'_>) -> anyhow::Result<()> {
    let (url, pipeline_url, analytics_url) = (databases.contact, databases.pipeline, databases.analytics);
    let max_connections = (args.clients * 2).to_string();
    let (contact, grpc) = start(
        &["contact", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
        &[("CRM_DATABASE_URL", url), ("CRM_DB_MAX_CONNECTIONS", &max_connections)],
        "crm contact is up",
        "gRPC on ",
    )?;
    let grpc = format!("http://{grpc}");
    let (_gateway, rest) = start(
        &["gateway", "--http-addr", "127.0.0.1:0"],
        &[("CRM_CONTACT_ENDPOINT", &grpc)],
        "crm gateway is up",
        "REST on http://",
    )?;
    let rest = format!("http://{rest}");
    let duration = Duration::from_secs(args.seconds);
    let pg_version = tool("psql", &[url, "-Atc", "SHOW server_version"]).unwrap_or_default();

    println!("## Benchmark run\n");
    println!("- machine: {}", machine());
    println!("- PostgreSQL {}, on the same machine", pg_version.trim());
    let profile = if cfg!(debug_assertions) {
        "debug build: figures are not meaningful"
    } else {
        "release build"
    };
    println!(
        "- command: `crm-bench --clients {} --seconds {} --import-rows {} --search-rows {} --duplicate-rows {} --board-deals {} --embedded-search-rows {} --soak-seconds {} --scenarios {}{}` ({profile})",
        args.clients,
        args.seconds,
        args.import_rows,
        args.search_rows,
        args.duplicate_rows,
        args.board_deals,
        args.embedded_search_rows,
        args.soak_seconds,
        args.scenarios.join(","),
        args.binary
            .as_ref()
            .map_or_else(String::new, |b| format!(" --binary {}", b.display()))
    );
    println!();
    println!("| target | measured | baseline (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    let wants = |name: &str| args.scenarios.iter().any(|s| s == name);
    // The `crm serve` scenarios first, before the PostgreSQL seeds below keep the machine busy
    // (autovacuum runs for minutes after the search seed).
    if wants("lists") {
        embedded::lists(duration).await?;
    }
    if wants("embedded-search") {
        embedded::search(args, args.embedded_search_rows, duration).await?;
    }
    if wants("soak") {
        embedded::soak(args, Duration::from_secs(args.soak_seconds)).await?;
    }
    if wants("create") {
        create(args, url, &grpc, duration).await?;
    }
    if wants("get") {
        get(args, &grpc, &rest, duration).await?;
    }
    if wants("import") {
        import(args, url, &grpc, contact.0.id()).await?;
    }
    // The feed runs before search, whose million-row seed keeps autovacuum busy for minutes.
    if wants("feed") {
        feed::run(&feed::FeedBench {
            url,
            grpc: &grpc,
            token: &service_token()?,
            events: args.feed_events,
            rate: args.feed_rate,
            seconds: args.feed_seconds,
        })
        .await?;
    }
    if wants("pipeline") {
        let (_pipeline, pipeline_grpc) = start(
            &[
                "pipeline",
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &[
                ("CRM_DATABASE_URL", pipeline_url),
                ("CRM_DB_MAX_CONNECTIONS", &max_connections),
                ("CRM_CONTACT_ENDPOINT", &grpc),
            ],
            "crm pipeline is up",
            "gRPC on ",
        )?;
        pipeline::run(&pipeline::PipelineBench {
            args,
            url: pipeline_url,
            grpc: &format!("http://{pipeline_grpc}"),
            duration,
            board_deals: args.board_deals,
        })
        .await?;
    }
    if wants("analytics") {
        let (_pipeline, pipeline_grpc) = start_pipeline(pipeline_url, &grpc)?;
        analytics::run(&analytics::AnalyticsBench {
            pipeline_url,
            pipeline_grpc: &format!("http://{pipeline_grpc}"),
            analytics_url,
            token: &service_token()?,
            events: args.analytics_events,
            partitions: &args.analytics_partitions.to_string(),
        })
        .await?;
    }
    if wants("analytics-value") {
        analytics_value::run(&analytics_value::ValueBench {
            analytics_url,
            customers: args.rfm_customers,
        })
        .await?;
    }
    if wants("analytics-latency") {
        let (_pipeline, pipeline_grpc) = start_pipeline(pipeline_url, &grpc)?;
        analytics_latency::run(&analytics_latency::LatencyBench {
            pipeline_url,
            pipeline_grpc: &format!("http://{pipeline_grpc}"),
            analytics_url,
            rate: args.latency_rate,
            duration: Duration::from_secs(args.latency_seconds),
        })
        .await?;
    }
    if wants("analytics-queries") {
        analytics_queries::run(&analytics_queries::QueryBench {
            analytics_url,
            deals: args.query_deals,
            clients: args.clients,
            duration,
        })
        .await?;
    }
    let notification_scenarios = ["notification-webhooks", "notification-latency", "notification-inbox"];
    if notification_scenarios.iter().any(|s| wants(s)) {
        let (_pipeline, pipeline_grpc) = start_pipeline(pipeline_url, &grpc)?;
        let bench = notification::NotificationBench {
            notification_url: databases.notification,
            pipeline_url,
            pipeline_grpc: &format!("http://{pipeline_grpc}"),
            contact_grpc: &grpc,
            deliveries: args.notification_deliveries,
            rate: args.notification_rate,
            duration: Duration::from_secs(args.notification_seconds),
            clients: args.clients,
            inbox_duration: duration,
        };
        if wants("notification-webhooks") {
            notification::throughput(&bench).await?;
        }
        if wants("notification-latency") {
            notification::latency(&bench).await?;
        }
        if wants("notification-inbox") {
            notification::inbox(&bench).await?;
        }
    }
    if wants("search") {
        search(args, url, &grpc, duration).await?;
    }
    if wants("duplicates") {
        duplicates::run(args, url, &grpc).await?;
    }
    Ok(())
}

async fn create(args: &BenchArgs, url: &str, grpc: &str, duration: Duration) -> anyhow::Result<()> {
    // Two baselines: a single-row INSERT into a table shaped like the contacts table (same
    // columns, generated search document and indexes), and into a bare table of five columns.
    tool(
        "psql",
        &[
            url,
            "-qc",
            "CREATE TABLE bench_contacts (LIKE contacts INCLUDING ALL); \
             CREATE TABLE bench_insert (id uuid PRIMARY KEY, tenant_id text NOT NULL, given_name text, family_name text, email text, create_time timestamptz NOT NULL); \
             CREATE INDEX ON bench_insert (tenant_id, lower(email));",
        ],
    )?;
    let same_table = pgbench(
        args,
        url,
        "\\set n random(1, 1000000000)\n\
         INSERT INTO bench_contacts (tenant_id, id, given_name, family_name, emails, primary_email, lifecycle_stage, source, owner, \
         search_text, create_time, update_time, revision) VALUES ('bench', gen_random_uuid(), 'Given' || :n, 'Family' || :n, \
         jsonb_build_array(jsonb_build_object('address', 'c' || :n || '@example.com', 'primary', true)), 'c' || :n || '@example.com', \
         'lead', 'api', 'bench', 'Given' || :n || ' Family' || :n || ' c' || :n || ' example.com c' || :n || '@example.com', now(), now(), 1);\n",
    )?;
    let bare = pgbench(
        args,
        url,
        "INSERT INTO bench_insert VALUES (gen_random_uuid(), 'bench', 'Given', 'Family', 'someone@example.com', now());\n",
    )?;
    // The database doing what one create does, one create per transaction, in tenant
    // "pgbench" of the service's own tables (so their triggers write the search terms, and
    // the running service's sequencer numbers the event), through the functions the service
    // calls: the claim check (its lock and probe) of the email, the inserts of the contact,
    // its match keys, its audit entry and its event (outbox_append, with a payload of the
    // size the service writes), and the read of the live contacts holding its keys (two
    // thousand family names shared by the run's creates, as the gRPC load below has its
    // clients' creates of one round share one).
    let same_work = pgbench(
        args,
        url,
        "\\set n random(1, 1000000000)\n\
         \\set f random(1, 2000)\n\
         BEGIN;\n\
         SELECT set_config('crm.tenant_id', 'pgbench', true), gen_random_uuid() AS contact, 'c' || :n || '@example.com' AS email, \
         'family' || :f || '|g' AS block \\gset\n\
         SELECT * FROM contact_claim_holder('pgbench', ARRAY['email'], ARRAY[':email'], ARRAY[':contact'::uuid]);\n\
         INSERT INTO contacts (tenant_id, id, given_name, family_name, emails, primary_email, lifecycle_stage, source, owner, \
         search_text, create_time, update_time, revision) VALUES ('pgbench', ':contact', 'Given' || :n, 'Family' || :f, \
         jsonb_build_array(jsonb_build_object('address', ':email', 'primary', true)), ':email', 'lead', 'api', 'bench', \
         'Given' || :n || ' Family' || :f || ' ' || ':email', now(), now(), 1);\n\
         INSERT INTO contact_keys (tenant_id, kind, value, contact_id) VALUES ('pgbench', 'email', ':email', ':contact'), \
         ('pgbench', 'name', ':block', ':contact');\n\
         INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes) VALUES ('pgbench', \
         gen_random_uuid(), 'contact', ':contact', 'created', 'bench', now(), jsonb_build_array(jsonb_build_object('field', 'given_name', \
         'new', 'Given' || :n), jsonb_build_object('field', 'family_name', 'new', 'Family' || :f), jsonb_build_object('field', 'emails', \
         'new', ':email')));\n\
         SELECT outbox_append(ARRAY['pgbench'], ARRAY[gen_random_uuid()], ARRAY['crm.contact.v1.ContactCreated'], \
         ARRAY['contacts/:contact'], ARRAY[now()], ARRAY['bench'], ARRAY[''], ARRAY[jsonb_build_object('contact', 'contacts/:contact', \
         'fields', jsonb_build_array(jsonb_build_object('field', 'given_name', 'newValue', 'Given' || :n), \
         jsonb_build_object('field', 'family_name', 'newValue', 'Family' || :f), jsonb_build_object('field', 'emails', \
         'newValue', jsonb_build_array(jsonb_build_object('address', ':email', 'primary', true))), \
         jsonb_build_object('field', 'lifecycle_stage', 'newValue', 'lead'), jsonb_build_object('field', 'source', 'newValue', 'api'), \
         jsonb_build_object('field', 'owner', 'newValue', 'bench')))]);\n\
         SELECT * FROM contact_live('pgbench', ARRAY(SELECT m.holder FROM contact_key_matches('pgbench', ARRAY['email', 'name'], \
         ARRAY[':email', ':block'], 10) AS m WHERE m.holder <> ':contact'));\n\
         END;\n",
    )?;
    let run = create_calls(
        args,
        grpc,
        duration,
        |c, n| pb::Contact {
            given_name: format!("Given{c}"),
            family_name: format!("Family{n}"),
            emails: vec![pb::EmailAddress {
                address: format!("c{c}n{n}-{}@example.com", uuid_suffix()),
                primary: true,
            }],
            ..Default::default()
        },
        Result::is_ok,
    )
    .await?;
    println!(
        "| CreateContact over gRPC, {} clients | {} | pgbench single-row insert into a contacts-shaped table: {same_table:.0} tps (into a bare 5-column table: {bare:.0} tps) | {:.2}x ({:.2}x) | >= 0.6x |",
        args.clients,
        run.summary(),
        run.rate() / same_table,
        run.rate() / bare
    );
    println!(
        "| reference: CreateContact over gRPC against the database doing the same work, {} clients | {:.0}/s | pgbench, one create's statements in one transaction: {same_work:.0} tps | {:.2}x | (reference) |",
        args.clients,
        run.rate(),
        run.rate() / same_work,
    );
    // The ceiling of any call through this harness on this machine: a create the service
    // refuses before its store (no name, no email), so the figure is the load generator, the
    // connection, authentication and validation alone, sharing the cores as a real create does.
    let refused = create_calls(
        args,
        grpc,
        duration,
        |_, _| pb::Contact::default(),
        |answer| {
            answer
                .as_ref()
                .is_err_and(|status| status.code() == tonic::Code::InvalidArgument)
        },
    )
    .await?;
    println!(
        "| reference: CreateContact refused by validation (no database work), {} clients | {} | pgbench single-row insert: {same_table:.0} tps | {:.2}x | (the harness's ceiling) |",
        args.clients,
        refused.summary(),
        refused.rate() / same_table,
    );
    Ok(())
}

type CreateAnswer = Result<tonic::Response<pb::CreateContactResponse>, tonic::Status>;

/// CreateContact from the benchmark's clients for `duration`: `contact` makes each call's
/// contact from the client's number and the call's; a call counts when `counts` accepts its
/// answer, and is an error otherwise.
async fn create_calls(
    args: &BenchArgs,
    grpc: &str,
    duration: Duration,
    contact: fn(usize, u64) -> pb::Contact,
    counts: fn(&CreateAnswer) -> bool,
) -> anyhow::Result<Run> {
    let client = client(grpc).await?;
    Ok(load(args.clients, duration, None, move |c, n| {
        let mut client = client.clone();
        async move {
            let answer = client
                .create_contact(pb::CreateContactRequest {
                    contact: Some(contact(c, n)),
                    ..Default::default()
                })
                .await;
            counts(&answer)
        }
    })
    .await)
}

/// Runs a pgbench script with the benchmark's client count and duration; returns its tps.
fn pgbench(args: &BenchArgs, url: &str, script: &str) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("crm-bench-{}-{}.sql", std::process::id(), uuid_suffix()));
    std::fs::write(&path, script)?;
    let clients = args.clients.to_string();
    let seconds = args.seconds.to_string();
    let output = tool(
        "pgbench",
        &[
            "-n",
            "-c",
            &clients,
            "-j",
            &clients,
            "-T",
            &seconds,
            "-f",
            path_str(&path)?,
            url,
        ],
    );
    let _ = std::fs::remove_file(&path);
    output?
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse().ok())
        .context("pgbench printed no tps")
}

async fn get(args: &BenchArgs, grpc: &str, rest: &str, duration: Duration) -> anyhow::Result<()> {
    let mut seed = client(grpc).await?;
    let contact = pb::Contact {
        given_name: "Read".into(),
        family_name: "Me".into(),
        ..Default::default()
    };
    let created = seed
        .create_contact(pb::CreateContactRequest {
            contact: Some(contact),
            ..Default::default()
        })
        .await?
        .into_inner();
    let name = created.contact.context("contact")?.name;
    let id = name.trim_start_matches("contacts/").to_owned();
    let direct = {
        let client = client(grpc).await?;
        let name = name.clone();
        move |_: usize, _: u64| {
            let mut client = client.clone();
            let name = name.clone();
            async move { client.get_contact(pb::GetContactRequest { name }).await.is_ok() }
        }
    };
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let bearer = format!("Bearer {}", token()?);
    let url = format!("{rest}/v1/contacts/{id}");
    let through = move |_: usize, _: u64| {
        let request = http.get(&url).header("authorization", &bearer);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    };
    let full_direct = load(args.clients, duration, None, direct.clone()).await;
    let full_gateway = load(args.clients, duration, None, through.clone()).await;
    println!(
        "| GetContact through the gateway, {} clients | {} | same call over gRPC: {} | {:.2}x | >= 0.5x |",
        args.clients,
        full_gateway.summary(),
        full_direct.summary(),
        full_gateway.rate() / full_direct.rate()
    );
    let half = full_gateway.rate() / 2.0 / args.clients as f64;
    let half_direct = load(args.clients, duration, Some(half), direct).await;
    let half_gateway = load(args.clients, duration, Some(half), through).await;
    println!(
        "| gateway's added p99 at half load ({:.0}/s) | p99 {:.2} ms | gRPC p99 {:.2} ms | +{:.2} ms | <= +2 ms |",
        half * args.clients as f64,
        ms(half_gateway.percentile(0.99)),
        ms(half_direct.percentile(0.99)),
        ms(half_gateway.percentile(0.99)) - ms(half_direct.percentile(0.99))
    );
    Ok(())
}

async fn import(args: &BenchArgs, url: &str, grpc: &str, contact_pid: u32) -> anyhow::Result<()> {
    let file = std::env::temp_dir().join(format!("crm-bench-import-{}.csv", std::process::id()));
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        writeln!(out, "external_id,given_name,family_name,emails")?;
        for i in 0..args.import_rows {
            writeln!(out, "ext-{i},Given{i},Family{i},person{i}@example.com")?;
        }
    }
    // The same file into a table shaped like the contacts table (same columns, generated
    // search document and indexes; defaults for what the file does not give), and into a
    // bare table with a primary key, a unique external id and an email index.
    tool(
        "psql",
        &[
            url,
            "-qc",
            "CREATE TABLE bench_copy (LIKE contacts INCLUDING ALL); \
             ALTER TABLE bench_copy ALTER id SET DEFAULT gen_random_uuid(), ALTER tenant_id SET DEFAULT 'bench', \
               ALTER lifecycle_stage SET DEFAULT 'lead', ALTER source SET DEFAULT 'import', ALTER owner SET DEFAULT 'bench', \
               ALTER create_time SET DEFAULT now(), ALTER update_time SET DEFAULT now(), ALTER revision SET DEFAULT 1; \
             CREATE TABLE bench_copy_bare (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id text NOT NULL DEFAULT 'bench', external_id text, given_name text, family_name text, email text); \
             CREATE UNIQUE INDEX ON bench_copy_bare (tenant_id, external_id); CREATE INDEX ON bench_copy_bare (tenant_id, lower(email));",
        ],
    )?;
    let copy_rate = copy_rows(
        args,
        url,
        &file,
        "bench_copy (external_id, given_name, family_name, primary_email)",
    )?;
    let bare_rate = copy_rows(
        args,
        url,
        &file,
        "bench_copy_bare (external_id, given_name, family_name, email)",
    )?;

    let before = peak_rss_mib(contact_pid);
    let mut client = client(grpc).await?;
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(1024);
    let source = std::fs::File::open(&file)?;
    tokio::task::spawn_blocking(move || {
        crm_gateway::import::read_rows::<crm_gateway::table::RowReader>(
            source,
            crm_gateway::import::Format::Csv,
            &[],
            header_tx,
            rows_tx,
        )
    });
    header_rx.await?.map_err(anyhow::Error::msg)?;
    let options = pb::ImportOptions {
        natural_key: pb::NaturalKey::ExternalId as i32,
        dry_run: false,
    };
    let first = pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Options(options)),
    };
    let rows = tokio_stream::wrappers::ReceiverStream::new(rows_rx).map(|s| pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Row(s.row)),
    });
    let started = Instant::now();
    let mut responses = client
        .import_contacts(futures::stream::iter([first]).chain(rows))
        .await?
        .into_inner();
    let processed = AtomicU64::new(0);
    while let Some(message) = responses.message().await? {
        processed.fetch_add(message.results.len() as u64, Ordering::Relaxed);
    }
    let rate = processed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let peak = peak_rss_mib(contact_pid);
    println!(
        "| import of {} contacts (parse, validate, dedupe, write) | {rate:.0} rows/s | `psql \\copy` into a contacts-shaped table: {copy_rate:.0} rows/s (into a bare table: {bare_rate:.0} rows/s) | {:.2}x ({:.2}x) | >= 0.3x and >= 50k rows/s |",
        args.import_rows,
        rate / copy_rate,
        rate / bare_rate
    );
    println!(
        "| service peak memory during the import | {} | {} before | | < 200 MB |",
        peak.map_or("n/a".to_owned(), |p| format!("{p:.0} MiB")),
        before.map_or("n/a".to_owned(), |p| format!("{p:.0} MiB"))
    );
    let _ = std::fs::remove_file(&file);
    Ok(())
}

async fn search(args: &BenchArgs, url: &str, grpc: &str, duration: Duration) -> anyhow::Result<()> {
    // Seeded with SQL (not measured): the search path is what is under test.
    let seed = format!(
        "INSERT INTO contacts (tenant_id, id, given_name, family_name, emails, primary_email, lifecycle_stage, source, owner, search_text, create_time, update_time, revision) \
         SELECT 'bench', gen_random_uuid(), 'Given' || i, 'Family' || (i % 50000), \
                jsonb_build_array(jsonb_build_object('address', 'p' || i || '@example.com', 'primary', true)), 'p' || i || '@example.com', \
                'lead', 'import', 'bench', 'Given' || i || ' Family' || (i % 50000) || ' p' || i || '@example.com', now(), now(), 1 \
         FROM generate_series(1, {}) AS i",
        args.search_rows
    );
    tool("psql", &[url, "-qc", &seed])?;
    // A table in steady state: vacuumed (index-only scans need the visibility map) and analysed.
    tool("psql", &[url, "-qc", "VACUUM ANALYZE contacts"])?;
    tool("psql", &[url, "-qc", "VACUUM ANALYZE contact_terms"])?;
    let client = client(grpc).await?;
    let run = load(args.clients, duration, None, move |c, n| {
        let mut client = client.clone();
        async move {
            let query = format!(
                "family{} given{}",
                (c as u64 * 7919 + n * 104_729) % 50_000,
                (n * 31) % 9 + 1
            );
            client
                .search_contacts(pb::SearchContactsRequest {
                    query,
                    page_size: 20,
                    page_token: String::new(),
                })
                .await
                .is_ok()
        }
    })
    .await;
    println!(
        "| SearchContacts over {} contacts, {} clients | {} | | | p99 <= 50 ms |",
        args.search_rows,
        args.clients,
        run.summary()
    );
    Ok(())
}

/// Copies the generated CSV into `target` with `psql \\copy`; returns rows/s.
fn copy_rows(args: &BenchArgs, url: &str, file: &Path, target: &str) -> anyhow::Result<f64> {
    let copy = format!("\\copy {target} FROM '{}' CSV HEADER", path_str(file)?);
    let started = Instant::now();
    tool("psql", &[url, "-qc", &copy])?;
    Ok(args.import_rows as f64 / started.elapsed().as_secs_f64())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{BenchArgs, address_after, default_binary, with_database};

    #[test]
    fn the_command_line_is_well_formed() {
        BenchArgs::command().debug_assert();
    }

    #[test]
    fn the_defaults_run_every_scenario_on_the_local_server_with_the_crm_beside_it() {
        let args = BenchArgs::try_parse_from(["crm-bench"]).expect("no flags");
        assert_eq!(
            args.scenarios,
            [
                "create",
                "get",
                "import",
                "search",
                "duplicates",
                "feed",
                "pipeline",
                "analytics",
                "lists",
                "embedded-search",
                "soak"
            ]
        );
        assert_eq!((args.clients, args.seconds), (8, 10));
        let crm = default_binary().expect("default binary");
        let exe = std::env::current_exe().expect("current exe");
        assert_eq!(crm.parent(), exe.parent());
        assert_eq!(
            crm.file_name().and_then(|n| n.to_str()),
            Some(format!("crm{}", std::env::consts::EXE_SUFFIX).as_str())
        );
    }

    #[test]
    fn flags_parse_as_before() {
        let args = BenchArgs::try_parse_from([
            "crm-bench",
            "--binary",
            "/tmp/crm-old",
            "--scenarios",
            "create,lists",
            "--clients",
            "2",
            "--keep",
        ])
        .expect("flags");
        assert_eq!(args.binary.as_deref(), Some(std::path::Path::new("/tmp/crm-old")));
        assert_eq!(args.scenarios, ["create", "lists"]);
        assert_eq!(args.clients, 2);
        assert!(args.keep);
    }

    #[test]
    fn the_benchmark_database_replaces_the_path_of_the_server_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "crm_bench_1"),
            "postgres://postgres@127.0.0.1:5432/crm_bench_1"
        );
        assert_eq!(
            with_database("postgres://u:p@host/db?sslmode=disable", "b"),
            "postgres://u:p@host/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://host", "b"), "postgres://host/b");
    }

    #[test]
    fn addresses_are_read_from_ready_lines() {
        let line = "crm is up: REST on http://127.0.0.1:4000, gRPC on 127.0.0.1:5000";
        assert_eq!(address_after(line, "REST on http://").expect("rest"), "127.0.0.1:4000");
        assert_eq!(address_after(line, "gRPC on ").expect("grpc"), "127.0.0.1:5000");
    }
}
