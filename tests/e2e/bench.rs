//! The benchmark harness (`crm-bench`, a binary of its own package): its create and duplicates
//! scenarios run against a real PostgreSQL and report every row without errors. Its baselines
//! are SQL scripts over the service's own tables and functions, so a schema change that breaks
//! them fails here rather than in the next benchmark run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crm_platform::testing::TestDatabase;

/// The `crm-bench` executable, built once per run of this suite. It is a binary of another
/// package, so Cargo gives this test no `CARGO_BIN_EXE_crm-bench`: the test asks Cargo to build
/// it, with the profile of the `crm` it measures, and takes the path Cargo reports.
fn harness() -> &'static Path {
    static HARNESS: OnceLock<PathBuf> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // `target/<profile dir>/crm`: `debug` is the dev profile, other directories are named
        // after their profile.
        let profile = match Path::new(env!("CARGO_BIN_EXE_crm"))
            .parent()
            .and_then(Path::file_name)
            .and_then(|dir| dir.to_str())
        {
            Some("debug") | None => "dev".to_owned(),
            Some(dir) => dir.to_owned(),
        };
        let output = Command::new(env!("CARGO"))
            .args([
                "build",
                "--locked",
                "--package",
                "crm-bench",
                "--bin",
                "crm-bench",
                "--profile",
                &profile,
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build --package crm-bench");
        assert!(
            output.status.success(),
            "cargo build --package crm-bench failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == "crm-bench")
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no crm-bench executable")
    })
}

/// Runs `crm-bench <args>` measuring this suite's `crm` on the server of `db` (the harness makes
/// its own databases there; `db` only gates the test on a reachable PostgreSQL and gives the
/// server's address) and returns its report, failing the test when the run fails.
fn bench(db: &TestDatabase, args: &[&str]) -> String {
    let output = Command::new(harness())
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        .env("CRM_BENCH_DATABASE_URL", &db.url)
        .env("CRM_LOG", "warn")
        .output()
        .expect("crm-bench");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "crm-bench failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report
}

#[tokio::test]
async fn the_create_scenario_reports_every_row_without_errors() {
    let Some(db) = TestDatabase::create("bench_create_scenario").await else {
        return;
    };
    let report = bench(&db, &["--scenarios", "create", "--clients", "2", "--seconds", "1"]);
    for row in [
        "| CreateContact over gRPC, 2 clients |",
        "| reference: CreateContact over gRPC against the database doing the same work, 2 clients |",
        "| reference: CreateContact refused by validation (no database work), 2 clients |",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in:\n{report}"));
        assert!(!line.contains("errors"), "calls failed: {line}");
        let rate: f64 = line[row.len()..]
            .trim_start()
            .split('/')
            .next()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rate in {line}"));
        assert!(rate > 0.0, "nothing measured: {line}");
    }
    db.drop_database().await;
}

/// The duplicate-search scenario seeds contacts and their match keys with SQL in the
/// service's own form and pages through FindDuplicates: it fails when a planted pair is not
/// found (the seed drifted from how the service writes keys, or the paging lost keys).
#[tokio::test]
async fn the_duplicates_scenario_finds_every_planted_pair() {
    let Some(db) = TestDatabase::create("bench_duplicates_scenario").await else {
        return;
    };
    let report = bench(&db, &["--scenarios", "duplicates", "--duplicate-rows", "30000"]);
    let line = report
        .lines()
        .find(|l| l.starts_with("| FindDuplicates, every page, over 30030 seeded contacts"))
        .unwrap_or_else(|| panic!("no FindDuplicates row in:\n{report}"));
    assert!(line.contains("30 of 30 planted pairs found"), "{line}");
    assert!(
        line.contains("| 2 pages in "),
        "3000 shared blocks take two pages: {line}"
    );
    db.drop_database().await;
}

/// The harness is not part of the production binary: `crm` has no `bench` subcommand.
#[test]
fn the_crm_binary_has_no_bench_subcommand() {
    let output = Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("bench")
        .output()
        .expect("crm bench");
    assert!(!output.status.success(), "crm bench ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unrecognized subcommand 'bench'"), "{stderr}");
}

/// The analytics scenario seeds the pipeline outbox in the service's typed form and times
/// `crm analytics` catching up: it fails when the events do not all become facts (the seed
/// drifted from the pipeline's messages, so ingest parked them).
#[tokio::test]
async fn the_analytics_scenario_applies_every_seeded_event() {
    let Some(db) = TestDatabase::create("bench_analytics_scenario").await else {
        return;
    };
    let report = bench(&db, &["--scenarios", "analytics", "--analytics-events", "2000"]);
    let line = report
        .lines()
        .find(|l| l.starts_with("| analytics ingest in catch-up: 2000 pipeline events"))
        .unwrap_or_else(|| panic!("no analytics row in:\n{report}"));
    assert!(line.contains(" events/s (process start"), "{line}");
    db.drop_database().await;
}

/// The commit-to-metric scenario: its load's events, committed into the pipeline's outbox,
/// are ingested (the probes' wins are counted only once their tenant's metric shows them, so
/// a row with probes means the whole path ran), and the row says the rate the load reached.
#[tokio::test]
async fn the_commit_to_metric_scenario_probes_under_its_load() {
    let Some(db) = TestDatabase::create("bench_latency_scenario").await else {
        return;
    };
    let report = bench(
        &db,
        &[
            "--scenarios",
            "analytics-latency",
            "--latency-rate",
            "100",
            "--latency-seconds",
            "3",
        ],
    );
    let line = report
        .lines()
        .find(|l| l.starts_with("| commit in the pipeline to the metric reflecting it"))
        .unwrap_or_else(|| panic!("no commit-to-metric row in:\n{report}"));
    assert!(line.contains("that reached "), "{line}");
    assert!(!line.contains(" 0 probes"), "{line}");
    assert!(!line.contains("(0 events"), "{line}");
    db.drop_database().await;
}

/// The feed scenario's latency half writes its events as the services do and fails unless the
/// consumer applies every one of them (its writes once made no event at all, and it reported
/// "0 of 60000 applied" as a figure).
#[tokio::test]
async fn the_feed_scenario_applies_every_event_it_writes() {
    let Some(db) = TestDatabase::create("bench_feed_scenario").await else {
        return;
    };
    let report = bench(
        &db,
        &[
            "--scenarios",
            "feed",
            "--feed-events",
            "2000",
            "--feed-rate",
            "200",
            "--feed-seconds",
            "2",
        ],
    );
    let line = report
        .lines()
        .find(|l| l.starts_with("| feed latency, commit to applied"))
        .unwrap_or_else(|| panic!("no feed latency row in:\n{report}"));
    assert!(line.contains("(400 of 400 applied)"), "{line}");
    db.drop_database().await;
}
