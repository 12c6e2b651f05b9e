//! The analytics service's own feed through the real processes, on both backends: a deal quiet
//! for longer than the stall window is published once as `DealStalled`, a customer's first
//! segment as `SegmentChanged`, a goal's status as `GoalStatusChanged`; each read as an
//! integrator reads it, from `/v1/events:stream`.

use chrono::Utc;
use crm_platform::Role;
use serde_json::{Value, json};

use crate::events::sse_events;
use crate::pipeline::pipeline;
use crate::support::{BACKENDS, Deployment, Rest, id_of, token};

const DERIVED: &str = "crm.analytics.v1.SegmentChanged,crm.analytics.v1.DealStalled,crm.analytics.v1.GoalStatusChanged";

async fn open(base: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/events:stream?types={DERIVED}"))
        .bearer_auth(token("acme", "reader", Role::Viewer))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    response
}

/// The derived events of the tenant so far: read from the start until the feed is idle (its
/// first heartbeat).
async fn so_far(base: &str) -> Vec<(String, Value)> {
    let mut response = open(base).await;
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), response.chunk())
            .await
            .expect("SSE in time")
            .expect("chunk")
            .expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
            let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
            match (event, data) {
                (Some("heartbeat"), _) => return events,
                (Some(event), Some(data)) => {
                    events.push((event.to_owned(), serde_json::from_str(data).expect("JSON")));
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn derived_changes_are_published_once_on_both_backends() {
    let envs = [("CRM_DERIVE_EVERY", "200ms"), ("CRM_FEED_HEARTBEAT", "1s")];
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start_with(postgres, "analytics_derived", &envs).await else {
            continue;
        };
        derived_changes(deployment.rest()).await;
        deployment.stop().await;
    }
}

async fn derived_changes(base: &str) {
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    let p = pipeline(&admin).await;
    let (status, firm) = admin.post("/v1/companies", json!({"displayName": "Firm"})).await;
    assert_eq!(status, 201, "{firm}");
    let firm_name = firm["name"].as_str().expect("name");
    let csv = format!(
        "external_id,display_name,pipeline,amount_minor,currency_code,company,create_time,status,close_time,close_reason\n\
         quiet-1,Quiet,New business,1000,EUR,,2024-01-10T09:00:00Z,OPEN,,\n\
         won-1,Won one,New business,2000,EUR,{firm_name},2024-02-01T09:00:00Z,WON,2024-02-20T09:00:00Z,fit\n\
         won-2,Won two,New business,3000,EUR,{firm_name},2024-03-01T09:00:00Z,WON,2024-03-15T09:00:00Z,fit\n\
         lost-1,Lost,New business,4000,EUR,,2024-04-01T09:00:00Z,LOST,2024-04-10T09:00:00Z,price\n"
    );
    let response = admin
        .request(reqwest::Method::POST, "/v1/deals:import")
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains(r#""created":"4""#), "{text}");

    // The open deal imported from January 2024 is quiet; the company is scored.
    let mut stream = open(base).await;
    let mut seen = sse_events(&mut stream, 2).await;
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    let (_, kind, stalled) = &seen[0];
    assert_eq!(kind, "crm.analytics.v1.DealStalled", "{seen:?}");
    let created = chrono::DateTime::parse_from_rfc3339("2024-01-10T09:00:00Z").expect("time");
    let days = (Utc::now() - created.with_timezone(&Utc)).num_days();
    let payload = &stalled["payload"];
    assert_eq!(payload["stallDays"], 14, "{stalled}");
    assert_eq!(payload["daysWithoutActivity"], days.to_string(), "{stalled}");
    assert_eq!(payload["lastActivityTime"], "2024-01-10T09:00:00Z");
    assert_eq!(payload["owner"], "alice");
    let quiet = payload["deal"].as_str().expect("deal").to_owned();
    let (_, kind, segment) = &seen[1];
    assert_eq!(kind, "crm.analytics.v1.SegmentChanged", "{seen:?}");
    // One customer is scored in the first bin of each quintile (recency reversed: R5, F1),
    // which the RF map names `new`.
    let firm_id = id_of(&firm["name"]);
    assert_eq!(segment["payload"]["customer"], format!("customers/{firm_id}"));
    assert_eq!(segment["payload"]["from"], Value::Null, "first scored: {segment}");
    assert_eq!(segment["payload"]["to"], "new");

    // A goal: win rate of a half year in 2024 (2 won, 1 lost) to 0.9, with a deal won today
    // in its rolling window: reached.
    let (status, today_deal) = admin
        .post(
            "/v1/deals",
            json!({"displayName": "Today", "pipeline": p["name"], "amount": {"amountMinor": "500", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{today_deal}");
    let (status, closed) = admin
        .post(
            &format!("/v1/deals/{}:close", id_of(&today_deal["name"])),
            json!({"outcome": "DEAL_STATUS_WON", "reason": "fit"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    let due = Utc::now().date_naive() + chrono::Days::new(60);
    let (status, goal) = admin
        .post(
            "/v1/goals",
            json!({"displayName": "Win more", "metric": "metrics/win-rate", "baselinePeriod": "2024-01-01..2024-06-30",
                   "targetKind": "TARGET_KIND_ABSOLUTE", "target": 0.9, "dueDate": due.to_string()}),
        )
        .await;
    assert!(status == 200 || status == 201, "{goal}");
    let seen = sse_events(&mut stream, 1).await;
    let (_, kind, changed) = &seen[0];
    assert_eq!(kind, "crm.analytics.v1.GoalStatusChanged", "{seen:?}");
    assert_eq!(changed["payload"]["goal"], goal["name"]);
    assert_eq!(changed["payload"]["to"], "GOAL_STATUS_REACHED", "{changed}");

    // Activity on the quiet deal ends its quiet spell: nothing more is published for it, and
    // nothing is published twice.
    let (status, moved) = admin
        .post(
            &format!("/v1/deals/{}:move", id_of(&json!(quiet))),
            json!({"stage": p["stages"][1]["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let all = so_far(base).await;
    let kinds: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.len(), 3, "each change once: {kinds:?}");
}
