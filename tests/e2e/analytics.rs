//! The analytics service through the real binary, on both backends: deals and leads made over
//! REST reach it through the pipeline feed, and its figures equal what this test computes
//! itself from the deals it made (never through the service's code).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_platform::Role;
use serde_json::{Value, json};

use crate::pipeline::pipeline;
use crate::support::{BACKENDS, Deployment, Rest, id_of};

/// A deal this test made, as the pipeline answered it.
struct Made {
    owner: &'static str,
    /// Some(true) won, Some(false) lost, None open.
    won: Option<bool>,
    created: DateTime<Utc>,
    closed: Option<DateTime<Utc>>,
    lead_source: &'static str,
    amount_minor: i64,
}

pub(crate) fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

/// Closes `deal` (as `api`'s user) when `won` says so, and returns what was made.
async fn close(api: &Rest, deal: &Value, owner: &'static str, won: Option<bool>, lead_source: &'static str) -> Made {
    let mut made = Made {
        owner,
        won,
        created: time(&deal["createTime"]),
        closed: None,
        lead_source,
        amount_minor: deal["amount"]["amountMinor"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no amount: {deal}")),
    };
    if let Some(won) = won {
        let outcome = if won { "DEAL_STATUS_WON" } else { "DEAL_STATUS_LOST" };
        let (status, closed) = api
            .post(
                &format!("/v1/deals/{}:close", id_of(&deal["name"])),
                json!({"outcome": outcome, "reason": "decided"}),
            )
            .await;
        assert_eq!(status, 200, "{closed}");
        made.closed = Some(time(&closed["deal"]["closeTime"]));
    }
    made
}

/// GETs `path` until `done` holds of the answer (ingest is asynchronous), and returns it.
pub(crate) async fn eventually(api: &Rest, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, answer) = api.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        if done(&answer) {
            return answer;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never got there: {last}");
}

/// Queries a metric until its tenant-wide figure counts `records`.
pub(crate) async fn settled(api: &Rest, metric: &str, period: &str, records: i64) -> Value {
    let counted = json!(records.to_string());
    eventually(api, &format!("/v1/metrics/{metric}:query?period={period}"), |answer| {
        answer["figures"][0]["count"] == counted
    })
    .await
}

pub(crate) fn figures(answer: &Value) -> BTreeMap<String, Value> {
    answer["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .map(|f| (f["group"].as_str().unwrap_or_default().to_owned(), f.clone()))
        .collect()
}

pub(crate) fn close_to(actual: &Value, expected: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (actual - expected).abs() < 1e-9 * expected.abs().max(1.0),
        "{what}: {actual} != {expected}"
    );
}

fn days(made: &Made) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let ms = (made.closed.expect("closed") - made.created).num_milliseconds() as f64;
    ms / 86_400_000.0
}

/// The duration the medians of the funnel and of cycle days read for one of `ms`
/// milliseconds (their catalogue formulas): its whole seconds under 64 s, else the middle of its bucket, one of 32 per
/// doubling (the doubling found here by halving).
fn bucket_middle_seconds(ms: i64) -> f64 {
    let seconds = ms.max(0) / 1000;
    let mut width = 1;
    while seconds >= 64 * width {
        width *= 2;
    }
    #[allow(clippy::cast_precision_loss)]
    let middle = (seconds - seconds % width) as f64 + (width - 1) as f64 / 2.0;
    middle
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[tokio::test]
async fn figures_follow_the_deals_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "analytics_figures").await else {
            continue;
        };
        figures_follow_the_deals(deployment.rest()).await;
        deployment.stop().await;
    }
}

async fn figures_follow_the_deals(base: &str) {
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    let pipeline = pipeline(&admin).await;
    let mut made = Vec::new();
    // Each rep's deals, closed as the plan says.
    let plan: [(&'static str, &[Option<bool>]); 3] = [
        ("ann", &[Some(true), Some(true), Some(false)]),
        ("ben", &[Some(false), None]),
        ("cat", &[Some(true)]),
    ];
    for (owner, outcomes) in plan {
        let rep = Rest::as_user(base, "acme", owner, Role::Rep);
        for (i, won) in outcomes.iter().enumerate() {
            let (status, deal) = rep
                .post(
                    "/v1/deals",
                    json!({"displayName": format!("{owner} {i}"), "pipeline": pipeline["name"],
                           "amount": {"amountMinor": "100000", "currencyCode": "EUR"}}),
                )
                .await;
            assert_eq!(status, 201, "{deal}");
            made.push(close(&rep, &deal, owner, *won, "").await);
        }
    }
    // Ben wins a deal and reopens it the same day: open again, so no close of the period counts
    // it (the kept closes: its win is superseded within the period).
    let ben = Rest::as_user(base, "acme", "ben", Role::Rep);
    let (status, deal) = ben
        .post(
            "/v1/deals",
            json!({"displayName": "ben reopened", "pipeline": pipeline["name"],
                   "amount": {"amountMinor": "100000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    let mut reopened = close(&ben, &deal, "ben", Some(true), "").await;
    let (status, answer) = ben
        .post(&format!("/v1/deals/{}:reopen", id_of(&deal["name"])), json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    (reopened.won, reopened.closed) = (None, None);
    made.push(reopened);
    // Ann's lead from the web becomes a deal she wins; Ben's lead from a fair stays a lead.
    let mut leads: Vec<(&str, bool)> = Vec::new();
    for (owner, source, converts) in [("ann", "web", true), ("ben", "fair", false)] {
        let rep = Rest::as_user(base, "acme", owner, Role::Rep);
        let (status, lead) = rep
            .post(
                "/v1/leads",
                json!({"title": format!("{owner}'s enquiry"), "source": source}),
            )
            .await;
        assert_eq!(status, 201, "{lead}");
        leads.push((source, converts));
        if converts {
            let (status, converted) = rep
                .post(
                    &format!("/v1/leads/{}:convert", id_of(&lead["name"])),
                    json!({"deal": {"pipeline": pipeline["name"], "amount": {"amountMinor": "5000", "currencyCode": "EUR"}}}),
                )
                .await;
            assert_eq!(status, 200, "{converted}");
            made.push(close(&rep, &converted["deal"], owner, Some(true), "web").await);
        }
    }
    // Another tenant's won deal, in the same days: never in acme's figures.
    let gus = Rest::as_user(base, "globex", "gus", Role::Admin);
    let theirs = crate::pipeline::pipeline(&gus).await;
    let (status, deal) = gus
        .post(
            "/v1/deals",
            json!({"displayName": "Theirs", "pipeline": theirs["name"], "amount": {"amountMinor": "1", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    close(&gus, &deal, "gus", Some(true), "").await;

    let today = Utc::now().date_naive();
    let period = format!("{}..{}", today.pred_opt().expect("day"), today.succ_opt().expect("day"));
    // Globex's deal was closed last: once globex counts it, acme's figures below include
    // everything ingest could have leaked into them.
    settled(&gus, "win-rate", &period, 1).await;

    // Win rate, computed here from what was made.
    let closed: Vec<&Made> = made.iter().filter(|m| m.won.is_some()).collect();
    let won = |of: &[&Made]| of.iter().filter(|m| m.won == Some(true)).count();
    let answer = settled(&admin, "win-rate", &period, closed.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    let rate = won(&closed) as f64 / closed.len() as f64;
    close_to(&answer["figures"][0]["value"], rate, "win rate");
    assert_eq!(answer["metric"]["version"], 1);
    assert!(
        answer["watermarks"]
            .as_array()
            .expect("watermarks")
            .iter()
            .any(|w| w["source"] == "crm.pipeline.v1"),
        "{answer}"
    );
    let (status, by_owner) = admin
        .get(&format!("/v1/metrics/win-rate:query?period={period}&groupBy=OWNER"))
        .await;
    assert_eq!(status, 200, "{by_owner}");
    let by_owner = figures(&by_owner);
    assert_eq!(
        by_owner.keys().map(String::as_str).collect::<Vec<_>>(),
        ["ann", "ben", "cat"]
    );
    for (owner, figure) in &by_owner {
        let theirs: Vec<&Made> = closed.iter().copied().filter(|m| m.owner == owner).collect();
        #[allow(clippy::cast_precision_loss)]
        close_to(&figure["value"], won(&theirs) as f64 / theirs.len() as f64, owner);
        assert_eq!(figure["count"], json!(theirs.len().to_string()), "{owner}");
    }

    // Sales-cycle days of the won deals: mean and median.
    let cycle: Vec<f64> = closed.iter().filter(|m| m.won == Some(true)).map(|m| days(m)).collect();
    let answer = settled(&admin, "sales-cycle-days", &period, cycle.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    let mean = cycle.iter().sum::<f64>() / cycle.len() as f64;
    close_to(&answer["figures"][0]["value"], mean, "mean cycle");
    // The median reads each cycle as the middle of its bucket (the catalogue's formula).
    let bucketed: Vec<f64> = closed
        .iter()
        .filter(|m| m.won == Some(true))
        .map(|m| bucket_middle_seconds((m.closed.expect("closed") - m.created).num_milliseconds()) / 86_400.0)
        .collect();
    close_to(
        &answer["figures"][0]["parts"]["median"],
        median(bucketed),
        "median cycle",
    );

    // Cohort win rate over every deal created in the period (the open one counted apart).
    let answer = settled(&admin, "cohort-win-rate", &period, made.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["value"],
        won(&closed) as f64 / closed.len() as f64,
        "cohort win rate",
    );
    #[allow(clippy::cast_precision_loss)]
    let open = made.iter().filter(|m| m.won.is_none()).count() as f64;
    close_to(&answer["figures"][0]["parts"]["open"], open, "open deals");

    // Lead conversion, by source.
    let answer = settled(&admin, "lead-conversion", &period, leads.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    let converted = leads.iter().filter(|(_, c)| *c).count() as f64 / leads.len() as f64;
    close_to(&answer["figures"][0]["value"], converted, "lead conversion");
    let (status, by_source) = admin
        .get(&format!(
            "/v1/metrics/lead-conversion:query?period={period}&groupBy=GROUPING_LEAD_SOURCE"
        ))
        .await;
    assert_eq!(status, 200, "{by_source}");
    let by_source = figures(&by_source);
    close_to(&by_source["web"]["value"], 1.0, "web leads");
    close_to(&by_source["web"]["parts"]["to_customer"], 1.0, "web leads won");
    close_to(&by_source["fair"]["value"], 0.0, "fair leads");
    let (status, by_source) = admin
        .get(&format!(
            "/v1/metrics/win-rate:query?period={period}&groupBy=LEAD_SOURCE"
        ))
        .await;
    assert_eq!(status, 200, "{by_source}");
    let from_web: Vec<&Made> = made
        .iter()
        .filter(|m| m.lead_source == "web" && m.won.is_some())
        .collect();
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &figures(&by_source)["web"]["value"],
        won(&from_web) as f64 / from_web.len() as f64,
        "win rate of deals from web leads",
    );

    // A rep sees the tenant's figure, and only their own per owner.
    let (status, mine) = ben
        .get(&format!("/v1/metrics/win-rate:query?period={period}&groupBy=OWNER"))
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(figures(&mine).keys().map(String::as_str).collect::<Vec<_>>(), ["ben"]);
    let (status, _) = ben.get("/v1/ingestStatus").await;
    assert_eq!(status, 403, "the ingest status is for managers and admins");

    // Bad input: the field and the reason, every one at once.
    let (status, problem) = admin.get("/v1/metrics/win-ratio:query?period=2026-13").await;
    assert_eq!(status, 400, "{problem}");
    let fields: Vec<&str> = problem["violations"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"name") && fields.contains(&"period"), "{problem}");
    assert!(
        problem.to_string().contains("win-rate"),
        "the valid metrics are named: {problem}"
    );
    let (status, problem) = admin
        .get(&format!(
            "/v1/metrics/lead-conversion:query?period={period}&groupBy=PIPELINE"
        ))
        .await;
    assert_eq!(status, 400, "lead conversion has no pipeline: {problem}");

    // Forecast accuracy and quota attainment over this month: Ann's call against what she won.
    let month = today.format("%Y-%m").to_string();
    let ann = Rest::as_user(base, "acme", "ann", Role::Rep);
    let call = 150_000i64;
    let (status, submitted) = ann
        .post(
            "/v1/forecasts",
            json!({"period": month, "amount": {"amountMinor": call.to_string(), "currencyCode": "EUR"}, "category": "FORECAST_CATEGORY_COMMIT"}),
        )
        .await;
    assert_eq!(status, 201, "{submitted}");
    let quota = 400_000i64;
    let (status, set) = admin
        .post(
            "/v1/quotas",
            json!({"owner": "ann", "period": month, "amount": {"amountMinor": quota.to_string(), "currencyCode": "EUR"}}),
        )
        .await;
    assert!(status == 200 || status == 201, "{set}");
    let actual: i64 = made
        .iter()
        .filter(|m| m.owner == "ann" && m.won == Some(true))
        .map(|m| m.amount_minor)
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let expected = (1.0 - (actual - call).abs() as f64 / actual as f64).max(0.0);
    let answer = settled(&admin, "forecast-accuracy", &month, 1).await;
    close_to(&answer["figures"][0]["value"], expected, "forecast accuracy");
    let (status, by_owner) = admin
        .get(&format!(
            "/v1/metrics/forecast-accuracy:query?period={month}&groupBy=OWNER"
        ))
        .await;
    assert_eq!(status, 200, "{by_owner}");
    let by_owner = figures(&by_owner);
    #[allow(clippy::cast_precision_loss)]
    {
        close_to(&by_owner["ann"]["parts"]["actual"], actual as f64, "ann's actual");
        close_to(
            &by_owner["ann"]["parts"]["bias"],
            (call - actual) as f64 / actual as f64,
            "ann's bias",
        );
    }
    let answer = settled(&admin, "quota-attainment", &month, 1).await;
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["value"],
        actual as f64 / quota as f64,
        "quota attainment",
    );
    let (status, problem) = admin.get("/v1/metrics/forecast-accuracy:query?period=2026").await;
    assert_eq!(status, 400, "a year is not a forecast period: {problem}");

    // A goal on the win rate, its baseline the 30 days before today (no deal closed then),
    // frozen; its progress is the same 30 days' length, ending today.
    let days = |n: u64| today.checked_sub_days(chrono::Days::new(n)).expect("day");
    let baseline_period = format!("{}..{}", days(30), days(1));
    let due = today.checked_add_days(chrono::Days::new(90)).expect("day").to_string();
    let spec = json!({"displayName": "Win more", "metric": "metrics/win-rate", "baselinePeriod": baseline_period,
                      "targetKind": "TARGET_KIND_ABSOLUTE", "target": 0.9, "dueDate": due});
    let (status, _) = ben.post("/v1/goals", spec.clone()).await;
    assert_eq!(status, 403, "goals are set by managers and admins");
    let (status, goal) = admin.post("/v1/goals", spec).await;
    assert!(status == 200 || status == 201, "{goal}");
    assert_eq!(goal["baseline"]["count"], "0", "{goal}");
    assert!(goal["baseline"]["value"].is_null(), "{goal}");
    assert_eq!(goal["baseline"]["formulaVersion"], 1);
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &goal["progress"]["value"],
        won(&closed) as f64 / closed.len() as f64,
        "goal progress",
    );
    assert_eq!(goal["progress"]["count"], json!(closed.len().to_string()));
    close_to(&goal["progress"]["targetValue"], 0.9, "goal target");
    let (status, again) = admin
        .get(&format!("/v1/{}", goal["name"].as_str().expect("name")))
        .await;
    assert_eq!(status, 200, "{again}");
    let (status, _) = gus.get(&format!("/v1/{}", goal["name"].as_str().expect("name"))).await;
    assert_eq!(status, 404, "another tenant's goal is not there");
    assert_eq!(again["baseline"], goal["baseline"], "the baseline stays frozen");
    let (status, listed) = ben.get("/v1/goals").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["goals"][0]["name"], goal["name"],
        "a rep sees the tenant's goals"
    );
    // A blank name, a baseline not yet over, a due date gone and a ratio above 1: one answer
    // names all four.
    let (status, problem) = admin
        .post(
            "/v1/goals",
            json!({"displayName": "  ", "metric": "metrics/win-rate", "baselinePeriod": format!("{}..{}", days(1), due),
                   "targetKind": "TARGET_KIND_ABSOLUTE", "target": 1.5, "dueDate": days(2).to_string()}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let mut fields: Vec<&str> = problem["violations"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["goal.baselinePeriod", "goal.displayName", "goal.dueDate", "goal.target"],
        "{problem}"
    );
    let (status, goals) = admin.get("/v1/goals").await;
    assert_eq!(
        (status, goals["goals"].as_array().map(Vec::len)),
        (200, Some(1)),
        "nothing stored: {goals}"
    );

    // Before and after: nothing closed in the 30 days before, today's closes after.
    let (status, report) = admin
        .get(&format!(
            "/v1/reports:beforeAfter?before={baseline_period}&after={period}"
        ))
        .await;
    assert_eq!(status, 200, "{report}");
    let win = report["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .find(|c| c["metric"]["name"] == "metrics/win-rate")
        .expect("win rate compared");
    assert_eq!(win["before"]["count"], "0");
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &win["after"]["value"],
        won(&closed) as f64 / closed.len() as f64,
        "after",
    );

    // The catalogue, and ingest's state.
    let (status, catalogue) = admin.get("/v1/metrics").await;
    assert_eq!(status, 200, "{catalogue}");
    let names: Vec<&str> = catalogue["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "metrics/win-rate",
            "metrics/cohort-win-rate",
            "metrics/sales-cycle-days",
            "metrics/lead-conversion",
            "metrics/forecast-accuracy",
            "metrics/quota-attainment",
            "metrics/stage-funnel",
            "metrics/open-pipeline",
            "metrics/pipeline-velocity",
            "metrics/campaign-response",
            "metrics/handling-time",
            "metrics/data-freshness",
            "metrics/profile-completeness",
            "metrics/portfolio-continuity",
            "metrics/customer-retention",
            "metrics/churn-rate",
            "metrics/crm-adoption"
        ]
    );
    assert!(
        catalogue["metrics"][0]["formula"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
    let (status, ingest) = admin.get("/v1/ingestStatus").await;
    assert_eq!(status, 200, "{ingest}");
    assert_eq!(ingest["skipped"], json!([]), "{ingest}");
    assert_eq!(ingest["parked"], json!([]), "{ingest}");
}

/// How a stay in a stage ended.
#[derive(Clone, Copy, PartialEq)]
enum Exit {
    To(usize),
    Won,
    Lost,
}

/// A deal's stay in a stage (by the stage's index on the board), as this test made it.
struct Stay {
    stage: usize,
    entered: DateTime<Utc>,
    exit: Option<(Exit, DateTime<Utc>)>,
}

/// A deal this test moves through the stages, keeping its stays.
struct Walk<'a> {
    api: &'a Rest,
    pipeline: &'a Value,
    id: String,
    stays: Vec<Stay>,
    amount_minor: i64,
    created: DateTime<Utc>,
    open: bool,
}

impl<'a> Walk<'a> {
    async fn start(api: &'a Rest, pipeline: &'a Value, amount_minor: i64) -> Walk<'a> {
        let (status, deal) = api
            .post(
                "/v1/deals",
                json!({"displayName": "Walked", "pipeline": pipeline["name"],
                       "amount": {"amountMinor": amount_minor.to_string(), "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
        let created = time(&deal["createTime"]);
        Walk {
            api,
            pipeline,
            id: id_of(&deal["name"]).to_owned(),
            stays: vec![Stay {
                stage: 0,
                entered: created,
                exit: None,
            }],
            amount_minor,
            created,
            open: true,
        }
    }

    fn end(&mut self, exit: Exit, at: DateTime<Utc>) {
        self.stays.last_mut().expect("a stay").exit = Some((exit, at));
    }

    async fn move_to(&mut self, stage: usize) {
        let (status, moved) = self
            .api
            .post(
                &format!("/v1/deals/{}:move", self.id),
                json!({"stage": self.pipeline["stages"][stage]["id"]}),
            )
            .await;
        assert_eq!(status, 200, "{moved}");
        let at = time(&moved["transition"]["transitionTime"]);
        self.end(Exit::To(stage), at);
        self.stays.push(Stay {
            stage,
            entered: at,
            exit: None,
        });
    }

    async fn close(&mut self, won: bool) -> DateTime<Utc> {
        let outcome = if won { "DEAL_STATUS_WON" } else { "DEAL_STATUS_LOST" };
        let (status, closed) = self
            .api
            .post(
                &format!("/v1/deals/{}:close", self.id),
                json!({"outcome": outcome, "reason": "decided"}),
            )
            .await;
        assert_eq!(status, 200, "{closed}");
        let at = time(&closed["deal"]["closeTime"]);
        self.end(if won { Exit::Won } else { Exit::Lost }, at);
        self.open = false;
        at
    }
}

#[tokio::test]
async fn the_funnel_and_the_open_pipeline_follow_the_stages_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "analytics_funnel").await else {
            continue;
        };
        the_funnel_and_the_open_pipeline(deployment.rest(), deployment.pipeline_grpc()).await;
        deployment.stop().await;
    }
}

async fn the_funnel_and_the_open_pipeline(base: &str, pipeline_grpc: &str) {
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    let pipeline = pipeline(&admin).await;
    let (ann, ben) = (
        Rest::as_user(base, "acme", "ann", Role::Rep),
        Rest::as_user(base, "acme", "ben", Role::Rep),
    );
    // Won through every open stage; forward and back; lost at once; left in the first stage
    // and re-valued; moved ahead two stages and left there.
    let mut won = Walk::start(&ann, &pipeline, 100_000).await;
    won.move_to(1).await;
    won.move_to(2).await;
    let won_at = won.close(true).await;
    let mut back = Walk::start(&ann, &pipeline, 100_000).await;
    back.move_to(1).await;
    back.move_to(0).await;
    let mut lost = Walk::start(&ann, &pipeline, 100_000).await;
    lost.close(false).await;
    let mut revalued = Walk::start(&ann, &pipeline, 100_000).await;
    let (status, patched) = ann
        .patch(
            &format!("/v1/deals/{}", revalued.id),
            json!({"amount": {"amountMinor": "70000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    revalued.amount_minor = 70_000;
    // Another tenant's deal moved in the same minutes: never in acme's figures.
    let gus = Rest::as_user(base, "globex", "gus", Role::Admin);
    let theirs = crate::pipeline::pipeline(&gus).await;
    let mut other = Walk::start(&gus, &theirs, 5).await;
    other.move_to(1).await;
    let mut ahead = Walk::start(&ben, &pipeline, 100_000).await;
    ahead.move_to(2).await;
    let walks = [&won, &back, &lost, &revalued, &ahead];

    let today = Utc::now().date_naive();
    let period = format!("{}..{}", today.pred_opt().expect("day"), today.succ_opt().expect("day"));
    let stays: Vec<&Stay> = walks.iter().flat_map(|w| &w.stays).collect();
    // Ben's move was the last event: once the tenant's count has it, every stay is in.
    let answer = settled(&admin, "stage-funnel", &period, stays.len() as i64).await;
    let advanced = |of: &[&Stay]| {
        of.iter()
            .filter(|s| {
                matches!(s.exit, Some((Exit::Won, _))) || matches!(s.exit, Some((Exit::To(to), _)) if to >= s.stage)
            })
            .count()
    };
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &answer["figures"][0]["value"],
        advanced(&stays) as f64 / stays.len() as f64,
        "funnel conversion",
    );
    let (status, by_stage) = admin
        .get(&format!("/v1/metrics/stage-funnel:query?period={period}&groupBy=STAGE"))
        .await;
    assert_eq!(status, 200, "{by_stage}");
    let by_stage = figures(&by_stage);
    let group = |stage: usize| {
        format!(
            "{}/stages/{}",
            pipeline["name"].as_str().expect("name"),
            pipeline["stages"][stage]["id"].as_str().expect("stage id")
        )
    };
    let entered: Vec<usize> = (0..3).filter(|i| stays.iter().any(|s| s.stage == *i)).collect();
    assert_eq!(by_stage.len(), entered.len(), "{by_stage:?}");
    for stage in entered {
        let here: Vec<&Stay> = stays.iter().copied().filter(|s| s.stage == stage).collect();
        let figure = &by_stage[&group(stage)];
        let count = |exit: fn(&Exit, usize) -> bool| {
            here.iter()
                .filter(|s| s.exit.is_some_and(|(e, _)| exit(&e, s.stage)))
                .count() as f64
        };
        #[allow(clippy::cast_precision_loss)]
        {
            close_to(&figure["parts"]["entered"], here.len() as f64, "entered");
            close_to(
                &figure["value"],
                advanced(&here) as f64 / here.len() as f64,
                "conversion",
            );
            close_to(&figure["parts"]["lost"], count(|e, _| *e == Exit::Lost), "lost");
            close_to(
                &figure["parts"]["moved_back"],
                count(|e, at| matches!(e, Exit::To(to) if *to < at)),
                "moved back",
            );
            close_to(
                &figure["parts"]["still_in"],
                here.iter().filter(|s| s.exit.is_none()).count() as f64,
                "still in",
            );
            close_to(&figure["parts"]["position"], stage as f64, "position");
        }
        let ended: Vec<f64> = here
            .iter()
            .filter_map(|s| s.exit.map(|(_, at)| at))
            .zip(here.iter().filter(|s| s.exit.is_some()))
            .map(|(at, s)| bucket_middle_seconds((at - s.entered).num_milliseconds()) / 86_400.0)
            .collect();
        if !ended.is_empty() {
            close_to(&figure["parts"]["median_days"], median(ended), "median days in stage");
        }
    }

    // The open pipeline now, by stage: the deals still open, at their amounts now.
    let open: Vec<&&Walk> = walks.iter().filter(|w| w.open).collect();
    let (status, now) = admin
        .get(&format!(
            "/v1/metrics/open-pipeline:query?period={period}&groupBy=STAGE"
        ))
        .await;
    assert_eq!(status, 200, "{now}");
    let now = figures(&now);
    let mut expected: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for walk in &open {
        let entry = expected
            .entry(group(walk.stays.last().expect("stay").stage))
            .or_default();
        entry.0 += 1;
        entry.1 += walk.amount_minor;
    }
    assert_eq!(now.len(), expected.len(), "{now:?}");
    for (group, (deals, amount)) in &expected {
        #[allow(clippy::cast_precision_loss)]
        {
            close_to(&now[group]["value"], *deals as f64, "open deals");
            close_to(&now[group]["parts"]["amount"], *amount as f64, "open amount");
        }
    }
    // As the pipeline stood at the end of yesterday: nothing was open yet.
    let yesterday = today.pred_opt().expect("day");
    let (status, then) = admin
        .get(&format!(
            "/v1/metrics/open-pipeline:query?period={yesterday}..{yesterday}"
        ))
        .await;
    assert_eq!(status, 200, "{then}");
    close_to(&then["figures"][0]["value"], 0.0, "open at the end of yesterday");

    // Velocity: open deals x average won amount x win rate / mean cycle days.
    let (status, velocity) = admin
        .get(&format!("/v1/metrics/pipeline-velocity:query?period={period}"))
        .await;
    assert_eq!(status, 200, "{velocity}");
    #[allow(clippy::cast_precision_loss)]
    let cycle = (won_at - won.created).num_milliseconds() as f64 / 86_400_000.0;
    #[allow(clippy::cast_precision_loss)]
    let expected = open.len() as f64 * won.amount_minor as f64 * 0.5 / cycle;
    close_to(&velocity["figures"][0]["value"], expected, "velocity");

    // Ben leaves: his portfolio moves to Cat in one call (OwnerChanged, no update of the deal).
    // From then on his open deal is Cat's in the pipeline, at its amount.
    reassign(pipeline_grpc, "ben", "cat").await;
    let by_owner = format!("/v1/metrics/open-pipeline:query?period={period}&groupBy=OWNER");
    let moved = eventually(&admin, &by_owner, |answer| figures(answer).contains_key("cat")).await;
    let moved = figures(&moved);
    assert!(!moved.contains_key("ben"), "{moved:?}");
    close_to(&moved["cat"]["value"], 1.0, "cat's open deals");
    #[allow(clippy::cast_precision_loss)]
    close_to(
        &moved["cat"]["parts"]["amount"],
        ahead.amount_minor as f64,
        "cat's open amount",
    );
}

/// Moves everything `from` owns in the pipeline to `to`, as a manager would over gRPC.
async fn reassign(endpoint: &str, from: &str, to: &str) {
    use crm_proto::crm::pipeline::v1 as pb;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let token = crate::support::token("acme", "alice", Role::Manager);
    let mut client = pb::pipeline_service_client::PipelineServiceClient::with_interceptor(
        channel,
        crate::support::Bearer(Some(token)),
    );
    let moved = client
        .reassign_owner(pb::ReassignOwnerRequest {
            from_user: from.into(),
            to_users: vec![to.into()],
            dry_run: false,
        })
        .await
        .expect("reassign")
        .into_inner();
    assert_eq!(moved.deals, 1, "ben's one open deal: {moved:?}");
}

/// Every metric's figures over `period`, as one value to compare (watermarks left out).
async fn every_figure(api: &Rest, period: &str, month: &str) -> Value {
    let mut all = serde_json::Map::new();
    let by_owner = "&groupBy=OWNER";
    for (metric, window, by) in [
        ("win-rate", period, by_owner),
        ("cohort-win-rate", period, by_owner),
        ("sales-cycle-days", period, by_owner),
        ("lead-conversion", period, by_owner),
        ("forecast-accuracy", month, by_owner),
        ("quota-attainment", month, by_owner),
        ("stage-funnel", period, "&groupBy=STAGE"),
        ("open-pipeline", period, by_owner),
        ("pipeline-velocity", period, by_owner),
        ("customer-retention", period, "&groupBy=MONTH"),
        ("churn-rate", period, "&groupBy=MONTH"),
    ] {
        for group in ["", by] {
            let (status, answer) = api
                .get(&format!("/v1/metrics/{metric}:query?period={window}{group}"))
                .await;
            assert_eq!(status, 200, "{answer}");
            all.insert(format!("{metric}{group}"), answer["figures"].clone());
        }
    }
    Value::Object(all)
}

/// Replaying the pipeline feed from sequence 0 into an empty database gives the same answers:
/// the analytics database of `crm serve` is deleted between two runs on the same data.
#[tokio::test]
async fn a_replay_from_the_start_gives_the_same_answers() {
    let data = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let suite = crate::support::Suite::start_in(std::sync::Arc::clone(&data));
    let admin = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let pipeline = pipeline(&admin).await;
    let mut closed = 0;
    for (i, (owner, won)) in [
        ("ann", Some(true)),
        ("ann", Some(false)),
        ("ben", Some(true)),
        ("ben", None),
    ]
    .into_iter()
    .enumerate()
    {
        let rep = Rest::as_user(&suite.rest, "acme", owner, Role::Rep);
        let (status, deal) = rep
            .post(
                "/v1/deals",
                json!({"displayName": format!("deal {i}"), "pipeline": pipeline["name"],
                       "amount": {"amountMinor": format!("{}", 1000 * (i + 1)), "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
        close(&rep, &deal, owner, won, "").await;
        closed += usize::from(won.is_some());
    }
    let today = Utc::now().date_naive();
    let period = format!("{}..{}", today.pred_opt().expect("day"), today.succ_opt().expect("day"));
    let month = today.format("%Y-%m").to_string();
    let ann = Rest::as_user(&suite.rest, "acme", "ann", Role::Rep);
    let (status, _) = ann
        .post(
            "/v1/forecasts",
            json!({"period": month, "amount": {"amountMinor": "1200", "currencyCode": "EUR"}, "category": "FORECAST_CATEGORY_COMMIT"}),
        )
        .await;
    assert_eq!(status, 201);
    settled(&admin, "win-rate", &period, closed as i64).await;
    settled(&admin, "forecast-accuracy", &month, 1).await;
    let before = every_figure(&admin, &period, &month).await;
    let (status, _) = suite.process.terminate().await;
    assert!(status.success());

    let database = data.path().join("data").join("analytics.db");
    std::fs::remove_file(&database).unwrap_or_else(|e| panic!("{}: {e}", database.display()));
    for journal in ["analytics.db-wal", "analytics.db-shm"] {
        let _ = std::fs::remove_file(data.path().join("data").join(journal));
    }
    let suite = crate::support::Suite::start_in(data);
    let admin = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    settled(&admin, "win-rate", &period, closed as i64).await;
    settled(&admin, "forecast-accuracy", &month, 1).await;
    assert_eq!(every_figure(&admin, &period, &month).await, before);
}
