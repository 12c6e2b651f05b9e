//! History before the CRM: deals and leads of 2024 imported with their original times, through
//! `crm import` and the REST upload, on both backends; the analytics figures of 2024 equal what
//! this test computes itself from the rows it wrote.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_platform::Role;
use serde_json::{Value, json};

use crate::analytics::{close_to, eventually, figures, settled};
use crate::pipeline::pipeline;
use crate::support::{BACKENDS, Deployment, Rest, id_of, token};

/// A historical deal this test wrote.
struct Row {
    id: String,
    owner: &'static str,
    created: DateTime<Utc>,
    /// Some(true) won, Some(false) lost, None open.
    won: Option<bool>,
    closed: DateTime<Utc>,
    stages: Vec<(&'static str, DateTime<Utc>)>,
    lead: Option<(&'static str, DateTime<Utc>)>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn deals() -> Vec<Row> {
    let start = Utc.with_ymd_and_hms(2024, 1, 5, 10, 0, 0).single().expect("start");
    (0..36_i64)
        .map(|i| {
            let created = start + Duration::days(i * 4) + Duration::minutes(i * 7);
            let mut stages = vec![("Qualify", created)];
            if i % 2 == 0 {
                stages.push(("Proposal", created + Duration::days(3)));
            }
            if i % 6 == 0 {
                stages.push(("Negotiate", created + Duration::days(5)));
            }
            Row {
                id: format!("old-{i}"),
                owner: ["rhea", "sam", "tom"][usize::try_from(i % 3).expect("index")],
                created,
                won: match i % 5 {
                    0..=2 => Some(true),
                    3 => Some(false),
                    _ => None,
                },
                closed: created + Duration::days(7 + (i * 11) % 50) + Duration::hours(i % 9),
                stages,
                lead: match i % 4 {
                    0 => Some(("referral", created - Duration::days(2))),
                    1 => Some(("web", created)),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Leads that never became deals: (created, source, status).
fn leads() -> Vec<(DateTime<Utc>, &'static str, &'static str)> {
    let start = Utc.with_ymd_and_hms(2024, 2, 1, 8, 0, 0).single().expect("start");
    (0..8_i64)
        .map(|j| {
            let status = ["NEW", "QUALIFIED", "DISQUALIFIED"][usize::try_from(j % 3).expect("index")];
            (
                start + Duration::days(j * 10),
                if j % 2 == 0 { "web" } else { "fair" },
                status,
            )
        })
        .collect()
}

/// The CSV a user exports from their earlier system, with two rows that cannot be right.
fn csv(deals: &[Row]) -> String {
    let mut out = String::from(
        "record,external_id,display_name,pipeline,owner,amount_minor,currency_code,create_time,stages,status,close_time,close_reason,lead_source,lead_create_time,status_time,disqualify_reason\n",
    );
    for (i, d) in deals.iter().enumerate() {
        let stages: Vec<String> = d
            .stages
            .iter()
            .enumerate()
            .map(|(k, (name, at))| {
                if k == 0 {
                    (*name).to_owned()
                } else {
                    format!("{name}@{}", rfc3339(*at))
                }
            })
            .collect();
        let (status, closed, reason) = match d.won {
            Some(true) => ("WON", rfc3339(d.closed), "fit"),
            Some(false) => ("lost", rfc3339(d.closed), "price"),
            None => ("OPEN", String::new(), ""),
        };
        let (source, lead_time) = d
            .lead
            .map_or((String::new(), String::new()), |(s, t)| (s.to_owned(), rfc3339(t)));
        out.push_str(&format!(
            "deal,{},Deal {i},New business,{},{},EUR,{},{},{status},{closed},{reason},{source},{lead_time},,\n",
            d.id,
            d.owner,
            100_000 + i * 1000,
            rfc3339(d.created),
            stages.join(";"),
        ));
    }
    for (j, (created, source, status)) in leads().into_iter().enumerate() {
        let reason = if status == "DISQUALIFIED" { "no budget" } else { "" };
        out.push_str(&format!(
            "lead,lead-{j},Inbound {j},,rhea,,,{},,{status},,,{source},,{},{reason}\n",
            rfc3339(created),
            rfc3339(created + Duration::days(4)),
        ));
    }
    // A deal that names its closing stage among the stages it went through, and a lead with
    // an amount.
    out.push_str("deal,bad-1,Bad,New business,rhea,5,EUR,2024-03-01,Qualify;Won@2024-03-02,WON,2024-03-03,,,,,\n");
    out.push_str("lead,bad-2,Bad lead,,rhea,5,EUR,2024-03-01,,NEW,,,web,,,\n");
    out
}

async fn upload(api: &Rest, body: String) -> (u16, Vec<Value>) {
    let response = api
        .request(reqwest::Method::POST, "/v1/deals:import")
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::String(l.to_owned())))
        .collect();
    (status, lines)
}

fn summary(lines: &[Value]) -> Value {
    lines.last().map(|l| l["summary"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn history_imported_gives_the_baseline_figures_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "history_baseline").await else {
            continue;
        };
        let grpc = match &deployment {
            Deployment::Serve(suite) => Some(suite.grpc.clone()),
            Deployment::Postgres(_) => None,
        };
        history_gives_the_baseline(deployment.rest(), grpc.as_deref()).await;
        deployment.stop().await;
    }
}

async fn history_gives_the_baseline(base: &str, grpc: Option<&str>) {
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    pipeline(&admin).await;
    let deals = deals();
    let file = csv(&deals);
    let imported = deals.len() + leads().len();

    // A rep may not import history, and is refused before the upload is read.
    let rep = Rest::as_user(base, "acme", "rhea", Role::Rep);
    let (status, answer) = upload(&rep, file.clone()).await;
    assert_eq!(status, 403, "{answer:?}");

    match grpc {
        Some(endpoint) => {
            // `crm import deals.csv`: the file says it holds deals.
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("deals.csv");
            std::fs::write(&path, &file).expect("file");
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
                .args(["import", path.to_str().expect("path"), "--endpoint", endpoint])
                .env("CRM_TOKEN", token("acme", "alice", Role::Admin))
                .output()
                .expect("crm import");
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{report} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                report.contains(&format!("{imported} created, 0 already imported, 2 rejected")),
                "{report}"
            );
            let rejects = std::fs::read_to_string(dir.path().join("deals.rejected.csv")).expect("rejects file");
            assert!(rejects.contains("bad-1") && rejects.contains("bad-2"), "{rejects}");
        }
        None => {
            let (status, lines) = upload(&admin, file.clone()).await;
            assert_eq!(status, 200, "{lines:?}");
            assert_eq!(
                summary(&lines),
                json!({"created": imported.to_string(), "unchanged": "0", "rejected": "2", "dryRun": false})
            );
            let rejected: BTreeMap<String, String> = lines
                .iter()
                .filter(|l| l["outcome"] == "IMPORT_OUTCOME_REJECTED")
                .map(|l| {
                    (
                        l["line"].as_str().unwrap_or_default().to_owned(),
                        l["field"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            // Line 1 is the header.
            let last = (imported + 3).to_string();
            let before_last = (imported + 2).to_string();
            assert_eq!(
                rejected.get(&before_last).map(String::as_str),
                Some("stages[1].stage"),
                "{rejected:?}"
            );
            assert_eq!(
                rejected.get(&last).map(String::as_str),
                Some("amount_minor"),
                "{rejected:?}"
            );
        }
    }
    // Again: nothing new, whichever way it came in.
    let (status, lines) = upload(&admin, file).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(
        summary(&lines),
        json!({"created": "0", "unchanged": imported.to_string(), "rejected": "2", "dryRun": false})
    );

    // A deal keeps its original times and says it was imported.
    let first = &deals[0];
    let listed = eventually(&admin, "/v1/deals?pageSize=100", |page| {
        page["deals"].as_array().is_some_and(|d| d.len() == deals.len())
    })
    .await;
    let deal = listed["deals"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["externalId"] == first.id.as_str()))
        .cloned()
        .expect("the first deal");
    assert_eq!(deal["imported"], true);
    assert_eq!(deal["createTime"], rfc3339(first.created).as_str());
    let (status, history) = admin.get(&format!("/v1/deals/{}/history", id_of(&deal["name"]))).await;
    assert_eq!(status, 200, "{history}");
    let times: Vec<&str> = history["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| t["transitionTime"].as_str().unwrap_or_default())
        .collect();
    let mut expected: Vec<String> = first.stages.iter().map(|(_, t)| rfc3339(*t)).collect();
    expected.push(rfc3339(first.closed));
    assert_eq!(times, expected);

    // The figures of 2024, as of the original times, computed here from the rows.
    let closed: Vec<&Row> = deals.iter().filter(|d| d.won.is_some()).collect();
    settled(&admin, "win-rate", "2024", closed.len() as i64).await;
    let (status, by_owner) = admin.get("/v1/metrics/win-rate:query?period=2024&groupBy=OWNER").await;
    assert_eq!(status, 200, "{by_owner}");
    let by_owner = figures(&by_owner);
    assert_eq!(
        by_owner.keys().map(String::as_str).collect::<Vec<_>>(),
        ["rhea", "sam", "tom"]
    );
    for (owner, figure) in &by_owner {
        let theirs: Vec<&&Row> = closed.iter().filter(|d| d.owner == owner).collect();
        let won = theirs.iter().filter(|d| d.won == Some(true)).count();
        #[allow(clippy::cast_precision_loss)]
        close_to(&figure["value"], won as f64 / theirs.len() as f64, owner);
        assert_eq!(figure["count"], json!(theirs.len().to_string()), "{owner}");
    }
    let cycle: Vec<f64> = deals
        .iter()
        .filter(|d| d.won == Some(true))
        .map(|d| {
            #[allow(clippy::cast_precision_loss)]
            let ms = (d.closed - d.created).num_milliseconds() as f64;
            ms / 86_400_000.0
        })
        .collect();
    let answer = settled(&admin, "sales-cycle-days", "2024", cycle.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["value"],
        cycle.iter().sum::<f64>() / cycle.len() as f64,
        "mean cycle",
    );

    let from_leads: Vec<&Row> = deals.iter().filter(|d| d.lead.is_some()).collect();
    let all_leads = from_leads.len() + leads().len();
    let answer = settled(&admin, "lead-conversion", "2024", all_leads as i64).await;
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["value"],
        from_leads.len() as f64 / all_leads as f64,
        "lead conversion",
    );
    let won_from_leads = from_leads.iter().filter(|d| d.won == Some(true)).count();
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["parts"]["to_customer"],
        won_from_leads as f64 / all_leads as f64,
        "lead to customer",
    );
}
