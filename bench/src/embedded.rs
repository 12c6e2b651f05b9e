//! Scenarios on `crm serve` (the embedded SQLite backend a newcomer evaluates), each beside its
//! baseline in the same run:
//!
//! - `lists`: a create whose list holds 20,000 items (invalid addresses, or one address 20,000
//!   times) against a create refused for one bad field, through the gateway;
//! - `embedded-search`: search over a large tenant for one-letter, repeated and ordinary
//!   terms against GetContact on the same process;
//! - `soak`: resident memory of `crm serve` over a sustained mix of creates, reads and
//!   readiness checks with nothing scraping `/metrics`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{BenchArgs, ChildGuard, Run, address_after, load, memory_mib, ms, start_line, token};

/// A running `crm serve` in a data directory of its own.
struct Embedded {
    process: ChildGuard,
    rest: String,
    grpc: String,
    _data: tempfile::TempDir,
}

impl Embedded {
    fn start() -> anyhow::Result<Embedded> {
        let data = tempfile::tempdir()?;
        let (process, line) = start_line(
            &[
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--data-dir",
                data.path().to_str().context("data dir")?,
            ],
            &[],
            "crm is up",
        )?;
        Ok(Embedded {
            process,
            rest: format!("http://{}", address_after(&line, "REST on http://")?),
            grpc: format!("http://{}", address_after(&line, "gRPC on ")?),
            _data: data,
        })
    }

    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Resident memory now, in MiB.
    fn rss_mib(&self) -> anyhow::Result<f64> {
        memory_mib(self.pid(), "VmRSS:").context("resident memory")
    }
}

/// Runs `body` POSTs to `path` one after another for `duration`; a call counts when it gets
/// `expected`.
async fn posts(
    rest: &str,
    path: &str,
    body: serde_json::Value,
    expected: u16,
    duration: Duration,
) -> anyhow::Result<Run> {
    let http = reqwest::Client::new();
    let url = format!("{rest}{path}");
    let bearer = format!("Bearer {}", token()?);
    let body = std::sync::Arc::new(serde_json::to_vec(&body)?);
    Ok(load(1, duration, None, move |_, _| {
        let (http, url, bearer, body) = (http.clone(), url.clone(), bearer.clone(), std::sync::Arc::clone(&body));
        async move {
            http.post(&url)
                .header("authorization", bearer)
                .header("content-type", "application/json")
                .body(body.as_ref().clone())
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == expected)
        }
    })
    .await)
}

pub(super) async fn lists(duration: Duration) -> anyhow::Result<()> {
    let suite = Embedded::start()?;
    let create = |emails: Vec<serde_json::Value>| json!({"givenName": "Listed", "emails": emails});
    let baseline = posts(
        &suite.rest,
        "/v1/contacts",
        create(vec![json!({"address": "not-an-email"})]),
        400,
        duration,
    )
    .await?;
    let address = |text: String| json!({ "address": text });
    let cases = [
        // The attacker's request: each address was compared with all the others before the
        // count was checked.
        (
            "20,000 distinct valid addresses",
            (0..20_000)
                .map(|i| address(format!("a{i}@example.com")))
                .collect::<Vec<_>>(),
        ),
        (
            "20,000 invalid addresses",
            (0..20_000).map(|i| address(format!("not-an-email-{i}"))).collect(),
        ),
        (
            "one address 20,000 times",
            vec![address("same@example.com".to_owned()); 20_000],
        ),
    ];
    for (what, emails) in cases {
        let run = posts(&suite.rest, "/v1/contacts", create(emails), 400, duration).await?;
        println!(
            "| POST /v1/contacts with {what} (crm serve, 1 client) | {} | one bad field: {} | p99 {:.1}x | p99 < 50 ms |",
            run.summary(),
            baseline.summary(),
            ms(run.percentile(0.99)) / ms(baseline.percentile(0.99)).max(f64::EPSILON)
        );
    }
    Ok(())
}

/// Given and family names: many start with `y`, so that one-letter and repeated terms match
/// thousands of contacts.
const GIVEN: &[&str] = &[
    "Ada", "Adam", "Yara", "Yusuf", "Yves", "Yolanda", "Grace", "Alan", "Yuki", "Lin", "Maria", "Yann",
];
const FAMILY: &[&str] = &[
    "Lovelace", "Young", "Yilmaz", "Hopper", "Turing", "Yamada", "Nguyen", "Smith", "Yates", "Okafor",
];

pub(super) async fn search(args: &BenchArgs, rows: usize, duration: Duration) -> anyhow::Result<()> {
    let suite = Embedded::start()?;
    // Seeded through `crm import` (not measured): the search path is what is under test.
    let file = tempfile::Builder::new().suffix(".csv").tempfile()?;
    {
        let mut out = std::io::BufWriter::new(file.as_file());
        writeln!(out, "external_id,given_name,family_name,emails")?;
        for i in 0..rows {
            let given = GIVEN[i % GIVEN.len()];
            let family = FAMILY[(i / GIVEN.len()) % FAMILY.len()];
            writeln!(
                out,
                "x{i},{given},{family}{},{}.{}{i}@example.com",
                i % 97,
                given.to_lowercase(),
                family.to_lowercase()
            )?;
        }
    }
    let seeded = std::process::Command::new(super::binary()?)
        .args([
            "import",
            file.path().to_str().context("path")?,
            "--endpoint",
            &suite.grpc,
        ])
        .env("CRM_TOKEN", token()?)
        .stderr(std::process::Stdio::null())
        .output()?;
    let summary = String::from_utf8_lossy(&seeded.stdout);
    anyhow::ensure!(
        seeded.status.success() && summary.contains(&format!("{rows} created, 0 updated, 0 unchanged, 0 rejected")),
        "seeding the tenant did not create {rows} contacts: {summary}"
    );
    let client = super::client(&suite.grpc).await?;
    let first = client
        .clone()
        .list_contacts(crm_proto::crm::contact::v1::ListContactsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .contacts
        .first()
        .map(|c| c.name.clone())
        .context("no contact seeded")?;
    let get = {
        let client = client.clone();
        load(args.clients, duration, None, move |_, _| {
            let (mut client, name) = (client.clone(), first.clone());
            async move {
                client
                    .get_contact(crm_proto::crm::contact::v1::GetContactRequest { name })
                    .await
                    .is_ok()
            }
        })
        .await
    };
    for query in ["y", "y y", "y y y", "ada", "ada lovelace", "yara.young"] {
        let client = client.clone();
        let run = load(args.clients, duration, None, move |_, _| {
            let mut client = client.clone();
            async move {
                client
                    .search_contacts(crm_proto::crm::contact::v1::SearchContactsRequest {
                        query: query.to_owned(),
                        page_size: 20,
                        page_token: String::new(),
                    })
                    .await
                    .is_ok()
            }
        })
        .await;
        println!(
            "| SearchContacts `{query}` over {rows} contacts (crm serve, {} clients) | {} | GetContact: {} | p99 {:.1}x | p99 < 50 ms |",
            args.clients,
            run.summary(),
            get.summary(),
            ms(run.percentile(0.99)) / ms(get.percentile(0.99)).max(f64::EPSILON)
        );
    }
    Ok(())
}

pub(super) async fn soak(args: &BenchArgs, duration: Duration) -> anyhow::Result<()> {
    let suite = Embedded::start()?;
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token()?);
    let rest = suite.rest.clone();
    // A first contact to read, and 10 s of warm-up of the allocator and pools.
    let created: serde_json::Value = http
        .post(format!("{rest}/v1/contacts"))
        .header("authorization", &bearer)
        .json(&json!({"givenName": "Soak"}))
        .send()
        .await?
        .json()
        .await?;
    let name = created["name"].as_str().context("name")?.to_owned();
    let mix = move |client: usize, n: u64| {
        let (http, bearer, rest, name) = (http.clone(), bearer.clone(), rest.clone(), name.clone());
        async move {
            let request = match n % 10 {
                0 => http
                    .post(format!("{rest}/v1/contacts"))
                    .header("authorization", &bearer)
                    .json(&json!({"givenName": format!("Soak {client} {n}")})),
                1 => http.get(format!("{rest}/readyz")),
                _ => http.get(format!("{rest}/v1/{name}")).header("authorization", &bearer),
            };
            request.send().await.is_ok_and(|r| r.status().is_success())
        }
    };
    load(args.clients, Duration::from_secs(10), None, mix.clone()).await;
    // Measured in two halves: the SQLite page caches fill during the first (creates grow the
    // database), so "flat" is the growth over the second.
    let start = suite.rss_mib()?;
    let first = load(args.clients, duration / 2, None, mix.clone()).await;
    let middle = suite.rss_mib()?;
    let second = load(args.clients, duration / 2, None, mix).await;
    let end = suite.rss_mib()?;
    let requests = |run: &Run| (run.ops + run.errors).max(1) as f64;
    println!(
        "| resident memory of crm serve over {} s of creates, reads and /readyz, nothing scraping /metrics ({} requests, {} clients) | {start:.1} -> {middle:.1} -> {end:.1} MiB; second half {:+.1} bytes per request | {} | {:.2}x | flat |",
        duration.as_secs(),
        first.ops + second.ops,
        args.clients,
        (end - middle) * 1024.0 * 1024.0 / requests(&second),
        second.summary(),
        end / middle
    );
    Ok(())
}
