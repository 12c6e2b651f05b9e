//! The sales pipeline through the real binary: a lead becomes a won deal over REST with every
//! step in the stage history and on the feed, bad input refused naming the field, a portfolio
//! transfer across both services, and merges and erases of the contact service reaching the
//! pipeline service.

use std::time::Duration;

use crm_platform::Role;
use crm_proto::crm::events::v1 as events;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use crm_proto::prost::Message;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::{Bearer, Rest, Suite, id_of, token};

/// A pipeline with three open stages, won and lost.
pub(crate) async fn pipeline(api: &Rest) -> Value {
    let (status, pipeline) = api
        .post(
            "/v1/pipelines",
            json!({"displayName": "New business", "stages": [
                {"displayName": "Qualify", "probabilityPercent": 10, "kind": "STAGE_KIND_OPEN"},
                {"displayName": "Proposal", "probabilityPercent": 50, "kind": "STAGE_KIND_OPEN"},
                {"displayName": "Negotiate", "probabilityPercent": 80, "kind": "STAGE_KIND_OPEN"},
                {"displayName": "Won", "probabilityPercent": 100, "kind": "STAGE_KIND_WON"},
                {"displayName": "Lost", "kind": "STAGE_KIND_LOST"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{pipeline}");
    pipeline
}

pub(crate) async fn contact(api: &Rest, given: &str, email: &str) -> Value {
    let (status, contact) = api
        .post(
            "/v1/contacts",
            json!({"givenName": given, "familyName": "Tester", "emails": [{"address": email}]}),
        )
        .await;
    assert_eq!(status, 201, "{contact}");
    contact
}

fn stage(pipeline: &Value, index: usize) -> String {
    pipeline["stages"][index]["id"].as_str().expect("stage id").to_owned()
}

/// Events of the pipeline service's feed (through an endpoint serving several feeds).
pub(crate) async fn pipeline_events(grpc: &str, tenant: &str, count: usize) -> Vec<events::Event> {
    let channel = tonic::transport::Channel::from_shared(grpc.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = EventFeedClient::with_interceptor(channel, Bearer(Some(token(tenant, "auditor", Role::Viewer))));
    let mut request = tonic::Request::new(events::SubscribeRequest {
        after_sequence: 0,
        types: vec![],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("crm-source", "crm.pipeline.v1".parse().expect("header"));
    let mut stream = client.subscribe(request).await.expect("subscribe").into_inner();
    crate::events::take(&mut stream, count).await
}

/// Polls `read` until `done` holds for what it returns (the contact feed is followed
/// asynchronously).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut read: F, done: impl Fn(&T) -> bool) -> T
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lead_becomes_a_won_deal_over_rest() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Manager);
    let person = contact(&api, "Ada", "ada@example.com").await;
    let pipeline = pipeline(&api).await;

    let (status, lead) = api
        .post(
            "/v1/leads",
            json!({"title": "Pro plan enquiry", "contact": person["name"], "source": "web", "score": 40}),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    assert_eq!(lead["status"], "LEAD_STATUS_NEW");
    let lead_id = id_of(&lead["name"]);
    let (status, qualified) = api
        .patch(
            &format!("/v1/leads/{lead_id}"),
            json!({"status": "LEAD_STATUS_QUALIFIED"}),
        )
        .await;
    assert_eq!(
        (status, qualified["status"].as_str()),
        (200, Some("LEAD_STATUS_QUALIFIED")),
        "{qualified}"
    );

    let convert = json!({"deal": {"pipeline": pipeline["name"], "amount": {"amountMinor": "1250000", "currencyCode": "EUR"},
        "expectedCloseDate": "2026-12-31"}});
    let (status, converted) = api.post(&format!("/v1/leads/{lead_id}:convert"), convert.clone()).await;
    assert_eq!(status, 200, "{converted}");
    assert_eq!(converted["lead"]["status"], "LEAD_STATUS_CONVERTED");
    assert_eq!(converted["lead"]["convertedBy"], "alice");
    let deal = &converted["deal"];
    assert_eq!(deal["contact"], person["name"]);
    assert_eq!(deal["lead"], lead["name"]);
    assert_eq!(deal["stage"], stage(&pipeline, 0).as_str());
    let (status, again) = api.post(&format!("/v1/leads/{lead_id}:convert"), convert).await;
    assert_eq!(
        (status, again["reason"].as_str()),
        (412, Some("LEAD_CONVERTED")),
        "a lead converts once"
    );

    let deal_id = id_of(&deal["name"]);
    let (status, moved) = api
        .post(
            &format!("/v1/deals/{deal_id}:move"),
            json!({"stage": stage(&pipeline, 1), "etag": deal["etag"]}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["transition"]["toStageName"], "Proposal");
    let (status, moved) = api
        .post(
            &format!("/v1/deals/{deal_id}:move"),
            json!({"stage": stage(&pipeline, 2)}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let won: Value = api
        .request(reqwest::Method::POST, &format!("/v1/deals/{deal_id}:close"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({"outcome": "DEAL_STATUS_WON", "reason": "best fit"}))
        .send()
        .await
        .expect("close")
        .json()
        .await
        .expect("json");
    assert_eq!(won["deal"]["status"], "DEAL_STATUS_WON");
    assert_eq!(won["deal"]["forecastCategory"], "FORECAST_CATEGORY_CLOSED");

    let (status, history) = api.get(&format!("/v1/deals/{deal_id}/history")).await;
    assert_eq!(status, 200, "{history}");
    let steps: Vec<(&str, &str)> = history["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap_or(""),
                t["toStageName"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("TRANSITION_KIND_CREATED", "Qualify"),
            ("TRANSITION_KIND_MOVED", "Proposal"),
            ("TRANSITION_KIND_MOVED", "Negotiate"),
            ("TRANSITION_KIND_WON", "Won"),
        ]
    );
    let (_, board) = api
        .get(&format!("/v1/pipelines/{}/board", id_of(&pipeline["name"])))
        .await;
    assert!(
        board["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .all(|c| c["dealCount"].as_str().unwrap_or("0") == "0"),
        "a won deal is off the board: {board}"
    );

    let feed = pipeline_events(&suite.grpc, "acme", 8).await;
    let kinds: Vec<&str> = feed
        .iter()
        .map(|e| e.r#type.trim_start_matches("crm.pipeline.v1."))
        .collect();
    assert_eq!(
        kinds,
        [
            "PipelineCreated",
            "LeadCreated",
            "LeadQualified",
            "DealCreated",
            "LeadConverted",
            "DealStageChanged",
            "DealStageChanged",
            "DealWon"
        ]
    );
    assert!(feed.iter().all(|e| e.source == "crm.pipeline.v1" && e.tenant == "acme"));
    assert!(
        feed[7].traceparent.contains(trace_id),
        "the REST request's trace reaches the event: {}",
        feed[7].traceparent
    );
    let payload = feed[7].payload.as_ref().expect("payload");
    let won_event = crm_proto::crm::pipeline::v1::DealWon::decode(payload.value.as_slice()).expect("DealWon");
    assert_eq!(won_event.transition.expect("transition").reason, "best fit");

    // The same feed as Server-Sent Events through the gateway.
    let mut sse = reqwest::Client::new()
        .get(format!(
            "{}/v1/events:stream?source=crm.pipeline.v1&after=0",
            suite.rest
        ))
        .bearer_auth(token("acme", "auditor", Role::Viewer))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let streamed = crate::events::sse_events(&mut sse, 8).await;
    assert_eq!(streamed[0].1, "crm.pipeline.v1.PipelineCreated");
    assert_eq!(streamed[7].1, "crm.pipeline.v1.DealWon");
    assert_eq!(
        streamed[7].2["payload"]["deal"]["status"], "DEAL_STATUS_WON",
        "{}",
        streamed[7].2
    );

    // A task due in a moment is announced on the feed when it is due, once.
    let due = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, task) = api
        .post(
            "/v1/tasks",
            json!({"title": "Send the contract", "dueTime": due, "deal": deal["name"]}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let feed = pipeline_events(&suite.grpc, "acme", 10).await;
    assert_eq!(feed[9].r#type, "crm.pipeline.v1.TaskDue");
    assert_eq!(feed[9].subject, task["name"].as_str().expect("task name"));
    assert!(
        feed[9].time.as_ref().expect("time").seconds
            >= chrono::DateTime::parse_from_rfc3339(&due).expect("due").timestamp()
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Manager);
    let first = pipeline(&api).await;
    let second = pipeline(&api).await;
    let deal = |amount: Value| json!({"displayName": "X", "pipeline": first["name"], "amount": amount});
    let field = |problem: &Value| {
        problem["violations"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let (status, problem) = api
        .post("/v1/deals", deal(json!({"amountMinor": "-1", "currencyCode": "EUR"})))
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "deal.amount.amountMinor"),
        "{problem}"
    );
    let (status, problem) = api
        .post("/v1/deals", deal(json!({"amountMinor": "1", "currencyCode": "EUX"})))
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "deal.amount.currencyCode"),
        "{problem}"
    );
    let (status, problem) = api
        .post(
            "/v1/deals",
            json!({"displayName": "X", "pipeline": first["name"], "amount": {"amountMinor": "1", "currencyCode": "EUR"},
            "contact": format!("contacts/{}", uuid::Uuid::now_v7())}),
        )
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "deal.contact"),
        "an unknown contact: {problem}"
    );
    let theirs = contact(
        &Rest::as_user(&suite.rest, "globex", "gus", Role::Admin),
        "Gus",
        "gus@example.com",
    )
    .await;
    let (status, problem) = api
        .post(
            "/v1/deals",
            json!({"displayName": "X", "pipeline": first["name"], "amount": {"amountMinor": "1", "currencyCode": "EUR"},
            "contact": theirs["name"]}),
        )
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "deal.contact"),
        "another tenant's contact: {problem}"
    );
    let (status, problem) = api
        .post(
            "/v1/deals",
            json!({"displayName": "X", "pipeline": first["name"], "amonut": 1}),
        )
        .await;
    assert_eq!(status, 400, "an unknown field: {problem}");

    let (status, created) = api
        .post("/v1/deals", deal(json!({"amountMinor": "100", "currencyCode": "EUR"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = id_of(&created["name"]);
    let (status, problem) = api
        .post(&format!("/v1/deals/{id}:move"), json!({"stage": stage(&second, 1)}))
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "stage"),
        "a stage of another pipeline: {problem}"
    );

    // Two moves with the same etag: one wins, the other gets 412.
    let etag = format!("\"{}\"", created["etag"].as_str().expect("etag"));
    let move_to = |target: String| {
        api.request(reqwest::Method::POST, &format!("/v1/deals/{id}:move"))
            .header("if-match", etag.clone())
            .json(&json!({"stage": target}))
            .send()
    };
    let (a, b) = tokio::join!(move_to(stage(&first, 1)), move_to(stage(&first, 2)));
    let mut codes = [a.expect("a").status().as_u16(), b.expect("b").status().as_u16()];
    codes.sort_unstable();
    assert_eq!(codes, [200, 412]);

    let (status, _) = api
        .post(
            &format!("/v1/deals/{id}:close"),
            json!({"outcome": "DEAL_STATUS_LOST", "reason": "budget"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, problem) = api
        .post(&format!("/v1/deals/{id}:close"), json!({"outcome": "DEAL_STATUS_WON"}))
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (412, Some("DEAL_CLOSED")),
        "{problem}"
    );
    let (status, history) = api.get(&format!("/v1/deals/{id}/history")).await;
    assert_eq!(
        (status, history["transitions"].as_array().map(Vec::len)),
        (200, Some(3)),
        "refusals wrote nothing"
    );

    let (status, problem) = api
        .post(
            "/v1/quotas",
            json!({"owner": "bob", "period": "2026-13", "amount": {"amountMinor": "1", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!((status, field(&problem).as_str()), (400, "quota.period"), "{problem}");
    let (status, quota) = api
        .post(
            "/v1/quotas",
            json!({"owner": "bob", "period": "2026-Q4", "amount": {"amountMinor": "5000000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(
        (status, quota["name"].as_str()),
        (200, Some("quotas/bob/2026-Q4")),
        "{quota}"
    );
    let (status, problem) = api
        .post("/v1/forecasts", json!({"period": "Q4", "amount": {"amountMinor": "1", "currencyCode": "EUR"}, "category": "FORECAST_CATEGORY_COMMIT"}))
        .await;
    assert_eq!(
        (status, field(&problem).as_str()),
        (400, "forecast.period"),
        "{problem}"
    );

    let (status, problem) = api.get("/v1/deals?filter=amount%20%3D%201").await;
    assert_eq!((status, field(&problem).as_str()), (400, "filter"), "{problem}");
    let (status, page) = api
        .get("/v1/deals?filter=status%20%3D%20LOST%20AND%20owner%20%3D%20me")
        .await;
    assert_eq!(
        (status, page["deals"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{page}"
    );

    // Reps change only their own records.
    let bob = Rest::as_user(&suite.rest, "acme", "bob", Role::Rep);
    let (status, _) = bob.post(&format!("/v1/deals/{id}:reopen"), json!({})).await;
    assert_eq!(status, 403, "bob does not own alice's deal");
    let (status, _) = bob
        .post(
            "/v1/deals",
            json!({"displayName": "Mine", "pipeline": first["name"], "owner": "alice",
            "amount": {"amountMinor": "1", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 403, "nor creates deals for others");
    let (status, _) = bob
        .post("/v1/users/alice:transferPortfolio", json!({"toUsers": ["bob"]}))
        .await;
    assert_eq!(status, 403, "nor transfers portfolios");
    let intruder = Rest::as_user(&suite.rest, "globex", "gus", Role::Admin);
    assert_eq!(intruder.get(&format!("/v1/deals/{id}")).await.0, 404);
    assert_eq!(intruder.post(&format!("/v1/deals/{id}:reopen"), json!({})).await.0, 404);
}

#[tokio::test]
async fn a_portfolio_moves_across_both_services_in_one_call() {
    let suite = Suite::start();
    let manager = Rest::as_user(&suite.rest, "acme", "mia", Role::Manager);
    let leaver = Rest::as_user(&suite.rest, "acme", "leaver", Role::Rep);
    let pipeline = pipeline(&manager).await;
    let mut contacts = Vec::new();
    for i in 0..3 {
        contacts.push(contact(&leaver, &format!("C{i}"), &format!("c{i}@example.com")).await);
    }
    let (status, _) = leaver.post("/v1/companies", json!({"displayName": "Leaver Co"})).await;
    assert_eq!(status, 201);
    let mut deals = Vec::new();
    for (i, person) in contacts.iter().enumerate() {
        let (status, deal) = leaver
            .post(
                "/v1/deals",
                json!({"displayName": format!("D{i}"), "pipeline": pipeline["name"],
                "contact": person["name"], "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
        deals.push(deal);
    }
    let (status, _) = leaver
        .post(
            &format!("/v1/deals/{}:close", id_of(&deals[0]["name"])),
            json!({"outcome": "DEAL_STATUS_WON"}),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..2 {
        assert_eq!(leaver.post("/v1/leads", json!({"title": format!("L{i}")})).await.0, 201);
        assert_eq!(leaver.post("/v1/tasks", json!({"title": format!("T{i}")})).await.0, 201);
    }

    let (status, dry) = manager
        .post(
            "/v1/users/leaver:transferPortfolio",
            json!({"toUsers": ["ann", "ben"], "dryRun": true}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (
            &dry["contacts"],
            &dry["companies"],
            &dry["leads"],
            &dry["deals"],
            &dry["tasks"]
        ),
        (&json!(3), &json!(1), &json!(2), &json!(2), &json!(2))
    );
    let (status, moved) = manager
        .post("/v1/users/leaver:transferPortfolio", json!({"toUsers": ["ann", "ben"]}))
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["dryRun"], false);
    assert_eq!(
        (
            &moved["contacts"],
            &moved["companies"],
            &moved["leads"],
            &moved["deals"],
            &moved["tasks"]
        ),
        (&json!(3), &json!(1), &json!(2), &json!(2), &json!(2))
    );
    let shares = moved["shares"].as_array().expect("shares");
    assert_eq!(shares.len(), 2);
    assert!(shares.iter().all(|s| s["user"] == "ann" || s["user"] == "ben"));

    // Nothing open is left with the leaver; the won deal keeps who won it.
    let (_, left) = manager.get("/v1/deals?filter=owner%20%3D%20leaver").await;
    let left: Vec<&str> = left["deals"]
        .as_array()
        .expect("deals")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(left, ["DEAL_STATUS_WON"]);
    for path in [
        "/v1/leads?filter=owner%20%3D%20leaver",
        "/v1/tasks?filter=assignee%20%3D%20leaver%20AND%20status%20%3D%20OPEN",
    ] {
        let (_, page) = manager.get(path).await;
        let items = page
            .as_object()
            .expect("page")
            .values()
            .find_map(Value::as_array)
            .map_or(0, Vec::len);
        assert_eq!(items, 0, "{path}: {page}");
    }
    let (_, contacts_left) = manager.get("/v1/contacts?filter=owner%20%3D%20%22leaver%22").await;
    assert_eq!(
        contacts_left["contacts"].as_array().map(Vec::len),
        Some(0),
        "{contacts_left}"
    );
    let (_, again) = manager
        .post("/v1/users/leaver:transferPortfolio", json!({"toUsers": ["ann"]}))
        .await;
    assert_eq!(
        (&again["contacts"], &again["leads"], &again["deals"], &again["tasks"]),
        (&json!(0), &json!(0), &json!(0), &json!(0)),
        "nothing left behind"
    );
}

#[tokio::test]
async fn merges_and_erases_of_contacts_reach_the_pipeline() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Manager);
    let pipeline = pipeline(&api).await;
    let first = contact(&api, "Ada", "ada@example.com").await;
    let second = contact(&api, "Augusta", "augusta@example.com").await;
    let (status, deal) = api
        .post(
            "/v1/deals",
            json!({"displayName": "Engine", "pipeline": pipeline["name"], "contact": first["name"],
            "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    let (status, lead) = api
        .post(
            "/v1/leads",
            json!({"title": "Ada wants the engine", "contact": first["name"]}),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    let deal_path = format!("/v1/deals/{}", id_of(&deal["name"]));
    let lead_path = format!("/v1/leads/{}", id_of(&lead["name"]));

    let (status, merged) = api
        .post(
            &format!("/v1/contacts/{}:merge", id_of(&second["name"])),
            json!({"merged": [first["name"]]}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    eventually(
        "the merge reaching the deal",
        || async { api.get(&deal_path).await.1 },
        |d| d["contact"] == second["name"],
    )
    .await;
    eventually(
        "the merge reaching the lead",
        || async { api.get(&lead_path).await.1 },
        |l| l["contact"] == second["name"],
    )
    .await;

    let (status, _) = api
        .post(&format!("/v1/contacts/{}:erase", id_of(&second["name"])), json!({}))
        .await;
    assert_eq!(status, 200);
    let lead = eventually(
        "the erase reaching the lead",
        || async { api.get(&lead_path).await.1 },
        |l| l["contact"] == "",
    )
    .await;
    assert_eq!(lead["title"], "", "the text about the person is gone: {lead}");
    let deal = api.get(&deal_path).await.1;
    assert_eq!(deal["contact"], "", "{deal}");
    let feed = pipeline_events(&suite.grpc, "acme", 7).await;
    for event in &feed {
        let payload = &event.payload.as_ref().expect("payload").value;
        let text = String::from_utf8_lossy(payload);
        for gone in [id_of(&first["name"]), id_of(&second["name"]), "Ada wants".to_owned()] {
            assert!(!text.contains(&gone), "{} still carries {gone}", event.r#type);
        }
    }
}

#[tokio::test]
async fn a_task_due_while_the_suite_is_down_is_announced_once_after_it_restarts() {
    let suite = Suite::start();
    let data = std::sync::Arc::clone(&suite.data);
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);
    let due = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, task) = api
        .post("/v1/tasks", json!({"title": "Renewal call", "dueTime": due}))
        .await;
    assert_eq!(status, 201, "{task}");
    drop(suite); // SIGKILL, before the task is due
    // The hour passes while the suite is down: the task's due time moves an hour back in its
    // stored record, instead of the test waiting for it.
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        data.path().join("data").join("pipeline.db").display()
    ))
    .await
    .expect("pipeline.db");
    let moved =
        sqlx::query("UPDATE tasks SET body = json_set(body, '$.due', json_extract(body, '$.due') - 3600000000)")
            .execute(&mut db)
            .await
            .expect("backdate")
            .rows_affected();
    assert_eq!(moved, 1);
    db.close().await.expect("close");

    let suite = Suite::start_in(std::sync::Arc::clone(&data));
    let feed = pipeline_events(&suite.grpc, "acme", 2).await;
    assert_eq!(
        feed.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
        ["crm.pipeline.v1.TaskCreated", "crm.pipeline.v1.TaskDue"]
    );
    drop(suite); // and again, after it was announced
    let suite = Suite::start_in(data);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);
    assert_eq!(api.post("/v1/tasks", json!({"title": "Marker"})).await.0, 201);
    let feed = pipeline_events(&suite.grpc, "acme", 3).await;
    assert_eq!(
        feed.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
        [
            "crm.pipeline.v1.TaskCreated",
            "crm.pipeline.v1.TaskDue",
            "crm.pipeline.v1.TaskCreated"
        ],
        "announced once across restarts"
    );
}

#[tokio::test]
async fn products_tasks_and_forecasts_over_rest() {
    let suite = Suite::start();
    let manager = Rest::as_user(&suite.rest, "acme", "mia", Role::Manager);
    let rep = Rest::as_user(&suite.rest, "acme", "ray", Role::Rep);
    let pipeline = pipeline(&manager).await;

    let (status, product) = manager
        .post(
            "/v1/products",
            json!({"sku": "PRO-12", "displayName": "Pro, 12 months", "family": "Subscriptions",
            "listPrice": {"amountMinor": "120000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    assert_eq!(product["active"], true);
    let (status, _) = manager
        .post(
            "/v1/products",
            json!({"sku": "PRO-12", "displayName": "Again", "listPrice": {"amountMinor": "1", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 409, "SKUs are unique");
    assert_eq!(
        rep.post(
            "/v1/products",
            json!({"sku": "X", "displayName": "X", "listPrice": {"amountMinor": "1", "currencyCode": "EUR"}})
        )
        .await
        .0,
        403,
        "the catalogue is for managers"
    );
    let (status, deal) = rep
        .post(
            "/v1/deals",
            json!({"displayName": "Seats", "pipeline": pipeline["name"],
            "lineItems": [{"product": product["name"], "quantity": "3", "discountBps": 1000}]}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    assert_eq!(deal["amount"], json!({"amountMinor": "324000", "currencyCode": "EUR"}));
    assert_eq!(deal["lineItems"][0]["sku"], "PRO-12");
    let (status, _) = manager
        .patch(
            &format!("/v1/products/{}", id_of(&product["name"])),
            json!({"listPrice": {"amountMinor": "150000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, read) = rep.get(&format!("/v1/deals/{}", id_of(&deal["name"]))).await;
    assert_eq!(
        read["lineItems"][0]["unitPrice"]["amountMinor"], "120000",
        "the line keeps its price"
    );
    let (status, updated) = rep
        .patch(
            &format!("/v1/deals/{}", id_of(&deal["name"])),
            json!({"expectedCloseDate": "2027-03-31", "forecastCategory": "FORECAST_CATEGORY_COMMIT"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["forecastCategory"], "FORECAST_CATEGORY_COMMIT");
    assert_eq!(updated["etag"], "2");

    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, task) = rep
        .post(
            "/v1/tasks",
            json!({"title": "Chase the PO", "dueTime": past, "deal": deal["name"], "priority": "TASK_PRIORITY_HIGH"}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let (_, overdue) = rep
        .get("/v1/tasks?filter=assignee%20%3D%20me%20AND%20overdue%20%3D%20true")
        .await;
    assert_eq!(overdue["tasks"].as_array().map(Vec::len), Some(1), "{overdue}");
    let task_id = id_of(&task["name"]);
    let (status, done) = rep.post(&format!("/v1/tasks/{task_id}:complete"), json!({})).await;
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("TASK_STATUS_COMPLETED")),
        "{done}"
    );
    let (status, again) = rep.post(&format!("/v1/tasks/{task_id}:complete"), json!({})).await;
    assert_eq!((status, again["reason"].as_str()), (412, Some("TASK_COMPLETED")));
    let (_, overdue) = rep.get("/v1/tasks?filter=overdue%20%3D%20true").await;
    assert_eq!(
        overdue["tasks"].as_array().map_or(0, Vec::len),
        0,
        "completed tasks are not overdue"
    );
    let (status, reopened) = rep.post(&format!("/v1/tasks/{task_id}:reopen"), json!({})).await;
    assert_eq!((status, reopened["status"].as_str()), (200, Some("TASK_STATUS_OPEN")));
    let other = Rest::as_user(&suite.rest, "acme", "oli", Role::Rep);
    assert_eq!(
        other.post(&format!("/v1/tasks/{task_id}:complete"), json!({})).await.0,
        403
    );

    let (status, forecast) = rep
        .post(
            "/v1/forecasts",
            json!({"period": "2026-Q4", "amount": {"amountMinor": "324000", "currencyCode": "EUR"},
            "category": "FORECAST_CATEGORY_COMMIT"}),
        )
        .await;
    assert_eq!(status, 201, "{forecast}");
    assert_eq!(
        (forecast["owner"].as_str(), forecast["submittedBy"].as_str()),
        (Some("ray"), Some("ray"))
    );
    assert_eq!(
        rep.post(
            "/v1/forecasts",
            json!({"owner": "oli", "period": "2026-Q4", "amount": {"amountMinor": "1", "currencyCode": "EUR"},
            "category": "FORECAST_CATEGORY_COMMIT"})
        )
        .await
        .0,
        403,
        "a rep forecasts for themselves"
    );
    let (_, listed) = manager
        .get("/v1/forecasts?filter=owner%20%3D%20ray%20AND%20period%20%3D%202026-Q4")
        .await;
    assert_eq!(listed["forecasts"].as_array().map(Vec::len), Some(1), "{listed}");

    let (_, openapi) = Rest::new(&suite.rest, None).get("/openapi.json").await;
    for path in [
        "/v1/deals/{id}:move",
        "/v1/pipelines/{id}/board",
        "/v1/users/{id}:transferPortfolio",
        "/v1/tasks/{id}:complete",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is documented");
    }
}
