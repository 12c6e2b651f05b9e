//! The notification service through the real processes, on both backends: a rule on big wins
//! sends a webhook to a receiver on loopback, signed per the Standard Webhooks scheme (checked
//! here with the scheme's own steps, not the service's code), retried after a failure under
//! the same `webhook-id`, every attempt kept and listed, sent again on demand, signed by both
//! secrets while a rotated one overlaps, refused for a metadata address; a due task reaches
//! its assignee's inbox with no rule made; the rule's user
//! finds it in their inbox; a bad rule is refused whole; another tenant sees nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use crm_platform::Role;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::Connection;

use crate::pipeline::pipeline;
use crate::support::{BACKENDS, Deployment, Rest, id_of, violation_fields};

/// What a receiver got: each request's headers of the scheme and body.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A webhook receiver on loopback answering 500 to its first request and 204 after.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = Arc::clone(&kept);
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut all = kept.lock().expect("lock");
                all.push(Received {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body,
                });
                if all.len() == 1 {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "not yet")
                } else {
                    (axum::http::StatusCode::NO_CONTENT, "")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// The Standard Webhooks check, step by step from the specification: the signed content is
/// `{id}.{timestamp}.{body}`, the key the base64 after `whsec_`, each `v1,` entry of the
/// header a base64 HMAC-SHA256 of it.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

async fn received(got: &Arc<Mutex<Vec<Received>>>, count: usize) -> Vec<Received> {
    for _ in 0..300 {
        let all = got.lock().expect("lock").clone();
        if all.len() >= count {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{count} requests not received: {:?}", got.lock().expect("lock"));
}

pub(crate) async fn won_deal(api: &Rest, pipeline: &Value, amount_minor: &str) -> String {
    won(
        api,
        json!({"displayName": format!("Deal of {amount_minor}"), "pipeline": pipeline["name"],
               "amount": {"amountMinor": amount_minor, "currencyCode": "EUR"}}),
    )
    .await
}

/// Creates the deal `deal` and closes it won; its name.
pub(crate) async fn won(api: &Rest, deal: Value) -> String {
    let (status, deal) = api.post("/v1/deals", deal).await;
    assert_eq!(status, 201, "{deal}");
    let id = id_of(&deal["name"]);
    let (status, won) = api
        .post(
            &format!("/v1/deals/{id}:close"),
            json!({"outcome": "DEAL_STATUS_WON", "reason": "signed"}),
        )
        .await;
    assert_eq!(status, 200, "{won}");
    deal["name"].as_str().expect("name").to_owned()
}

#[tokio::test]
async fn a_rule_sends_signed_webhooks_retried_and_kept_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "notification_webhooks").await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let rep = Rest::as_user(base, "acme", "bob", Role::Rep);
        let (url, got) = receiver().await;

        let (status, endpoint) = admin
            .post(
                "/v1/webhookEndpoints",
                json!({"url": url, "eventTypes": ["crm.pipeline.v1.DealWon"], "description": "ERP"}),
            )
            .await;
        assert_eq!(status, 200, "{endpoint}");
        let secret = endpoint["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("whsec_"), "{endpoint}");
        let (status, _) = rep.post("/v1/webhookEndpoints", json!({"url": url})).await;
        assert_eq!(status, 403, "a rep manages no endpoints");

        // A bad rule is refused whole, every field named, and nothing is kept.
        let (status, problem) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Broken", "eventTypes": ["crm.pipeline.v1.DealWon", "crm.pipeline.v1.Nope"],
                       "condition": "deal.amount.amount_minor >= 1", "recipients": ["webhookEndpoints/00000000-0000-7000-8000-000000000000", "nobody"]}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(
            violation_fields(&problem),
            ["rule.recipients[0]", "rule.recipients[1]", "rule.eventTypes[1]"],
            "{problem}"
        );
        let (status, problem) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Typo", "eventTypes": ["crm.pipeline.v1.DealWon"],
                       "condition": "deal.amount.amount_mnor >= 1", "recipients": ["owner"]}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert!(problem.to_string().contains("has no field `amount_mnor`"), "{problem}");
        let (status, rules) = admin.get("/v1/rules").await;
        assert_eq!(
            (status, rules["rules"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{rules}"
        );

        let (status, rule) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Big wins", "eventTypes": ["crm.pipeline.v1.DealWon"],
                       "condition": "deal.amount.amount_minor >= 1000000",
                       "recipients": [endpoint["name"], "users/carol"]}),
            )
            .await;
        assert_eq!(status, 200, "{rule}");

        let pipeline = pipeline(&admin).await;
        won_deal(&admin, &pipeline, "500").await;
        let big = won_deal(&admin, &pipeline, "2000000").await;

        // Refused at first (500), sent again about 5 s later under the same id.
        let first_two = received(&got, 2).await;
        assert_eq!(first_two[0].id, first_two[1].id);
        for r in &first_two {
            assert!(verifies(&secret, r), "{r:?}");
            let body: Value = serde_json::from_str(&r.body).expect("JSON body");
            assert_eq!(body["type"], "crm.pipeline.v1.DealWon");
            assert_eq!(body["subject"], big.as_str());
            assert_eq!(body["data"]["deal"]["amount"]["amountMinor"], "2000000");
        }
        let tampered = Received {
            body: first_two[0].body.replace("2000000", "3000000"),
            ..first_two[0].clone()
        };
        assert!(!verifies(&secret, &tampered));

        let (status, deliveries) = admin.get("/v1/deliveries").await;
        assert_eq!(status, 200, "{deliveries}");
        let deliveries = deliveries["deliveries"].as_array().expect("deliveries").clone();
        assert_eq!(deliveries.len(), 1, "only the big win matched: {deliveries:?}");
        let delivery = &deliveries[0];
        assert_eq!(id_of(&delivery["name"]), first_two[0].id);
        let mut attempts = Value::Null;
        for _ in 0..50 {
            let (_, listed) = admin
                .get(&format!("/v1/{}/attempts", delivery["name"].as_str().expect("name")))
                .await;
            attempts = listed;
            if attempts["attempts"].as_array().map_or(0, Vec::len) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statuses: Vec<i64> = attempts["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["statusCode"].as_i64().unwrap_or_default())
            .collect();
        assert_eq!(statuses, [500, 204], "{attempts}");
        assert_eq!(attempts["attempts"][0]["responseHead"], "not yet");

        // Sent again on demand, under the same id.
        let (status, again) = admin
            .post(
                &format!("/v1/{}:redeliver", delivery["name"].as_str().expect("name")),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{again}");
        let all = received(&got, 3).await;
        assert_eq!(all[2].id, first_two[0].id);
        assert!(verifies(&secret, &all[2]));

        // A rotated secret: during the overlap both sign, so a receiver holding either accepts.
        let (status, rotated) = admin
            .post(
                &format!("/v1/{}:rotateSecret", endpoint["name"].as_str().expect("name")),
                json!({"overlapSeconds": "3600"}),
            )
            .await;
        assert_eq!(status, 200, "{rotated}");
        let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
        assert_ne!(new_secret, secret);
        assert_eq!(rotated["previousSecret"], secret.as_str());
        let (status, _) = admin
            .post(
                &format!("/v1/{}:redeliver", delivery["name"].as_str().expect("name")),
                json!({}),
            )
            .await;
        assert_eq!(status, 200);
        let all = received(&got, 4).await;
        assert_eq!(all[3].signature.split(' ').count(), 2, "{:?}", all[3]);
        assert!(verifies(&secret, &all[3]) && verifies(&new_secret, &all[3]));

        // The rule's user finds it in their inbox; nobody else does.
        let carol = Rest::as_user(base, "acme", "carol", Role::Rep);
        let (status, count) = carol.get("/v1/notifications:unreadCount").await;
        assert_eq!((status, count["unread"].as_str()), (200, Some("1")), "{count}");
        let (_, inbox) = carol.get("/v1/notifications?unreadOnly=true").await;
        let notes = inbox["notifications"].as_array().expect("notifications").clone();
        assert_eq!(notes.len(), 1, "{inbox}");
        assert_eq!(notes[0]["subject"], big.as_str());
        let (_, bobs) = rep.get("/v1/notifications:unreadCount").await;
        assert_eq!(bobs["unread"], "0");
        let (status, marked) = rep
            .post("/v1/notifications:markRead", json!({"names": [notes[0]["name"]]}))
            .await;
        assert_eq!(
            (status, marked["marked"].as_str()),
            (200, Some("0")),
            "another user's notification: {marked}"
        );
        let (status, marked) = carol
            .post("/v1/notifications:markRead", json!({"names": [notes[0]["name"]]}))
            .await;
        assert_eq!((status, marked["marked"].as_str()), (200, Some("1")), "{marked}");
        let (_, count) = carol.get("/v1/notifications:unreadCount").await;
        assert_eq!(count["unread"], "0");

        // A task's due time reaches its assignee's inbox out of the box (no rule made).
        let due =
            (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (status, task) = admin
            .post(
                "/v1/tasks",
                json!({"title": "Call back", "assignee": "dave", "dueTime": due}),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        let dave = Rest::as_user(base, "acme", "dave", Role::Rep);
        let mut reminders = Value::Null;
        for _ in 0..100 {
            let (_, inbox) = dave.get("/v1/notifications").await;
            reminders = inbox;
            if reminders["notifications"].as_array().is_some_and(|n| !n.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reminder = &reminders["notifications"][0];
        assert_eq!(reminder["eventType"], "crm.pipeline.v1.TaskDue", "{reminders}");
        assert_eq!(reminder["subject"], task["name"]);

        // A webhook to the cloud metadata address is refused after resolution, and the
        // refusal is kept with the attempt.
        let (status, metadata) = admin
            .post(
                "/v1/webhookEndpoints",
                json!({"url": "http://169.254.169.254/latest/meta-data", "eventTypes": ["crm.pipeline.v1.DealLost"]}),
            )
            .await;
        assert_eq!(status, 200, "{metadata}");
        let (status, rule) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Losses", "eventTypes": ["crm.pipeline.v1.DealLost"], "recipients": [metadata["name"]]}),
            )
            .await;
        assert_eq!(status, 200, "{rule}");
        let (status, deal) = admin
            .post(
                "/v1/deals",
                json!({"displayName": "Lost one", "pipeline": pipeline["name"],
                       "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
        let (status, lost) = admin
            .post(
                &format!("/v1/{}:close", deal["name"].as_str().expect("name")),
                json!({"outcome": "DEAL_STATUS_LOST", "reason": "price"}),
            )
            .await;
        assert_eq!(status, 200, "{lost}");
        let mut refused = Value::Null;
        for _ in 0..100 {
            let (_, listed) = admin.get("/v1/deliveries").await;
            let to_metadata = listed["deliveries"]
                .as_array()
                .and_then(|all| all.iter().find(|d| d["webhookEndpoint"] == metadata["name"]).cloned());
            if let Some(d) = to_metadata {
                let (_, attempts) = admin
                    .get(&format!("/v1/{}/attempts", d["name"].as_str().expect("name")))
                    .await;
                if attempts["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
                    refused = attempts;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = &refused["attempts"][0];
        assert_eq!(first["statusCode"], 0, "{refused}");
        assert!(
            first["error"]
                .as_str()
                .is_some_and(|e| e.contains("is not a public address")),
            "{refused}"
        );

        // Another tenant sees none of it.
        let other = Rest::as_user(base, "globex", "eve", Role::Admin);
        let (_, rules) = other.get("/v1/rules").await;
        assert_eq!(rules["rules"].as_array().map(Vec::len), Some(0), "{rules}");
        let (_, deliveries) = other.get("/v1/deliveries").await;
        assert_eq!(
            deliveries["deliveries"].as_array().map(Vec::len),
            Some(0),
            "{deliveries}"
        );
        let (status, _) = other
            .get(&format!("/v1/{}", endpoint["name"].as_str().expect("name")))
            .await;
        assert_eq!(status, 404);
        deployment.stop().await;
    }
}

/// A receiver that answers one request at a time, 204 after `delay`, and keeps the
/// `webhook-id` of each request it answered. Killed, it accepts nothing more and answers none
/// of the requests in flight.
struct Receiver {
    task: tokio::task::JoinHandle<()>,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn kill(self) {
        self.alive.store(false, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
    }
}

async fn slow_receiver(
    listener: tokio::net::TcpListener,
    delay: Duration,
    answered: Arc<Mutex<Vec<String>>>,
) -> Receiver {
    let kept = Arc::clone(&answered);
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let living = Arc::clone(&alive);
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let kept = Arc::clone(&kept);
            let living = Arc::clone(&living);
            let gate = Arc::clone(&gate);
            async move {
                let _turn = gate.lock().await;
                tokio::time::sleep(delay).await;
                if !living.load(std::sync::atomic::Ordering::SeqCst) {
                    // Dead: never answers.
                    std::future::pending::<()>().await;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock().expect("lock").push(id);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { task, alive }
}

/// Kill -9 of the notification role mid-batch and of the receiver mid-request: every delivery
/// arrives at least once, and a receiver that drops duplicates by `webhook-id` processes each
/// once. (The receiver "processes" a request when it answers it: a request cut off by its own
/// death is not processed, and is sent again.)
#[tokio::test]
async fn every_delivery_arrives_across_kills_of_the_service_and_the_receiver() {
    const DEALS: usize = 30;
    let envs = [("CRM_WEBHOOK_LEASE", "3s"), ("CRM_WEBHOOK_TIMEOUT", "2s")];
    let Some(mut pg) = crate::support::PgSuite::start("notification_kills", &envs).await else {
        return;
    };
    let admin = Rest::as_user(&pg.rest, "acme", "alice", Role::Admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver = slow_receiver(listener, Duration::from_millis(150), Arc::clone(&answered)).await;
    let (status, endpoint) = admin
        .post(
            "/v1/webhookEndpoints",
            json!({"url": format!("http://{address}/hooks")}),
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");
    let (status, rule) = admin
        .post(
            "/v1/rules",
            json!({"displayName": "Every deal", "eventTypes": ["crm.pipeline.v1.DealCreated"],
                   "recipients": [endpoint["name"]]}),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    let pipeline = pipeline(&admin).await;
    for i in 0..DEALS {
        let (status, deal) = admin
            .post(
                "/v1/deals",
                json!({"displayName": format!("Deal {i}"), "pipeline": pipeline["name"],
                       "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
    }
    let answered_by = |n: usize| {
        let answered = Arc::clone(&answered);
        async move {
            for _ in 0..600 {
                if answered.lock().expect("lock").len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{n} answers not reached");
        }
    };
    // The service dies with most deliveries claimed and in flight (the receiver answers one
    // at a time): they are attempted again by the next replica once their lease ends.
    answered_by(3).await;
    pg.kill_notification();
    let _second = pg.notification_replica();
    // The receiver dies mid-request, and comes back on the same address.
    answered_by(10).await;
    receiver.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listener = tokio::net::TcpListener::bind(address).await.expect("rebind");
    let _receiver = slow_receiver(listener, Duration::from_millis(20), Arc::clone(&answered)).await;

    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..600 {
        distinct = answered.lock().expect("lock").iter().cloned().collect();
        if distinct.len() >= DEALS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(distinct.len(), DEALS, "every delivery arrives");
    // Each delivery is recorded delivered, under the id the receiver saw.
    let mut db = sqlx::PgConnection::connect(&pg.notification_url)
        .await
        .expect("connect");
    let mut delivered: Vec<String> = Vec::new();
    for _ in 0..100 {
        delivered = sqlx::query_scalar("SELECT id::text FROM deliveries WHERE state = 'delivered' ORDER BY id")
            .fetch_all(&mut db)
            .await
            .expect("deliveries");
        if delivered.len() == DEALS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered.into_iter().collect::<std::collections::BTreeSet<_>>(),
        distinct
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(
        total,
        i64::try_from(DEALS).expect("deals"),
        "one delivery per (rule, event, endpoint)"
    );
    pg.stop().await;
}

#[tokio::test]
async fn a_drafted_rule_is_backtested_over_the_retained_events_without_sending_anything() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "notification_backtest").await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let (url, got) = receiver().await;
        let (status, endpoint) = admin
            .post(
                "/v1/webhookEndpoints",
                json!({"url": url, "eventTypes": ["crm.pipeline.v1.DealWon"]}),
            )
            .await;
        assert_eq!(status, 200, "{endpoint}");
        // History first, no rule yet: wins of these amounts, and another tenant's big win.
        let amounts = [500_i64, 1_500, 2_500, 999, 1_000];
        let pipeline = pipeline(&admin).await;
        for amount in amounts {
            won_deal(&admin, &pipeline, &amount.to_string()).await;
        }
        let other = Rest::as_user(base, "globex", "gina", Role::Admin);
        let other_pipeline = crate::pipeline::pipeline(&other).await;
        won_deal(&other, &other_pipeline, "9000").await;

        let draft = json!({"displayName": "Wins of 1000 or more", "eventTypes": ["crm.pipeline.v1.DealWon"],
            "condition": "deal.amount.amount_minor >= 1000",
            "recipients": [endpoint["name"], "owner", "mailto:cfo@acme.test"]});
        // The expected figures, from the amounts above.
        let matched = amounts.iter().filter(|a| **a >= 1000).count() as u64;
        let mut result = Value::Null;
        // The feeds are read up to their heads: wait until every win is on them.
        for _ in 0..100 {
            let (status, answer) = admin
                .post("/v1/rules:backtest", json!({"rule": draft, "days": 3}))
                .await;
            assert_eq!(status, 200, "{answer}");
            result = answer;
            if result["events"].as_str() == Some(&amounts.len().to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let figure = |name: &str| result[name].as_str().and_then(|n| n.parse::<u64>().ok());
        assert_eq!(figure("events"), Some(amounts.len() as u64), "{result}");
        assert_eq!(figure("matchedEvents"), Some(matched), "{result}");
        assert_eq!(figure("webhooks"), Some(matched), "{result}");
        assert_eq!(figure("emails"), Some(matched), "{result}");
        assert_eq!(
            figure("notifications"),
            Some(matched),
            "one to the owner each: {result}"
        );
        assert_eq!(result["truncated"], false);
        let mut reached: Vec<(String, String)> = result["recipients"]
            .as_array()
            .expect("recipients")
            .iter()
            .map(|r| {
                (
                    r["recipient"].as_str().unwrap_or_default().to_owned(),
                    r["count"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        reached.sort();
        let mut expected = vec![
            (endpoint["name"].as_str().expect("name").to_owned(), matched.to_string()),
            ("mailto:cfo@acme.test".to_owned(), matched.to_string()),
            ("users/alice".to_owned(), matched.to_string()),
        ];
        expected.sort();
        assert_eq!(reached, expected, "{result}");
        let samples = result["samples"].as_array().expect("samples");
        assert_eq!(samples.len() as u64, matched);
        assert!(
            samples
                .iter()
                .all(|s| s["eventType"] == "crm.pipeline.v1.DealWon"
                    && s["recipients"].as_array().map(Vec::len) == Some(3)),
            "{result}"
        );

        // Nothing was kept or sent.
        let (_, rules) = admin.get("/v1/rules").await;
        assert_eq!(rules["rules"].as_array().map(Vec::len), Some(0));
        let (_, deliveries) = admin.get("/v1/deliveries").await;
        assert_eq!(deliveries["deliveries"].as_array().map(Vec::len), Some(0));
        assert!(got.lock().expect("lock").is_empty());

        // Who may, and how far back.
        let rep = Rest::as_user(base, "acme", "bob", Role::Rep);
        let (status, _) = rep.post("/v1/rules:backtest", json!({"rule": draft})).await;
        assert_eq!(status, 403);
        let (status, problem) = admin
            .post("/v1/rules:backtest", json!({"rule": draft, "days": 31}))
            .await;
        assert_eq!(status, 400, "{problem}");
        // The window and the rule are checked together: every problem in one answer.
        let mut broken = draft.clone();
        broken["displayName"] = json!("");
        let (status, problem) = admin
            .post("/v1/rules:backtest", json!({"rule": broken, "days": 31}))
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(violation_fields(&problem), ["days", "rule.displayName"], "{problem}");
        deployment.stop().await;
    }
}

/// A receiver answering 204 at once, keeping when each `webhook-id` arrived.
async fn timed_receiver() -> (String, Arc<Mutex<Vec<(std::time::Instant, String)>>>) {
    let got: Arc<Mutex<Vec<(std::time::Instant, String)>>> = Arc::default();
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let kept = Arc::clone(&kept);
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock().expect("lock").push((std::time::Instant::now(), id));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn an_endpoints_throttle_spaces_its_deliveries_and_a_recovery_sends_each_again_since_a_time() {
    const DEALS: usize = 6;
    const PER_SECOND: f64 = 2.0;
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "notification_throttle").await else {
            continue;
        };
        // On PostgreSQL a second replica takes deliveries too: the throttle's slots are
        // shared by both (taken from the database), so the spacing holds whichever sends.
        let _replica = match &deployment {
            Deployment::Postgres(pg) => Some(pg.notification_replica()),
            Deployment::Serve(_) => None,
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let (url, got) = timed_receiver().await;
        let (status, endpoint) = admin
            .post(
                "/v1/webhookEndpoints",
                json!({"url": url, "eventTypes": ["crm.pipeline.v1.DealWon"], "maxPerSecond": PER_SECOND as i32}),
            )
            .await;
        assert_eq!(status, 200, "{endpoint}");
        assert_eq!(endpoint["maxPerSecond"], 2);
        assert_eq!(endpoint["createdBy"], "alice");
        let (status, _) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Wins", "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": [endpoint["name"]]}),
            )
            .await;
        assert_eq!(status, 200);
        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        let pipeline = pipeline(&admin).await;
        for i in 0..DEALS {
            won_deal(&admin, &pipeline, &(100 + i).to_string()).await;
        }
        let mut arrived = Vec::new();
        for _ in 0..200 {
            arrived = got.lock().expect("lock").clone();
            if arrived.len() >= DEALS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(arrived.len(), DEALS, "{arrived:?}");
        // At 2 a second, 6 deliveries take at least (6 - 1) / 2 = 2.5 s from first to last.
        let span = arrived[DEALS - 1].0 - arrived[0].0;
        let least = Duration::from_secs_f64((DEALS - 1) as f64 / PER_SECOND);
        assert!(span >= least - Duration::from_millis(300), "{span:?} < {least:?}");

        // Recovery: every delivery since the time, sent again under its own id.
        let name = endpoint["name"].as_str().expect("name");
        let (status, again) = admin
            .post(
                &format!("/v1/{name}:redeliver"),
                json!({"since": since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
            )
            .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["redelivered"], DEALS.to_string());
        for _ in 0..200 {
            if got.lock().expect("lock").len() >= 2 * DEALS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all = got.lock().expect("lock").clone();
        let mut first: Vec<&String> = all[..DEALS].iter().map(|(_, id)| id).collect();
        let mut second: Vec<&String> = all[DEALS..].iter().map(|(_, id)| id).collect();
        first.sort();
        second.sort();
        assert_eq!(first, second, "the same webhook-ids again");
        let (status, none) = admin
            .post(
                &format!("/v1/{name}:redeliver"),
                json!({"since": "2999-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!((status, none["redelivered"].as_str()), (200, Some("0")), "{none}");
        // A recovery reaches back 30 days at most, and says from when.
        let asked = chrono::Utc::now();
        let (status, recovered) = admin
            .post(
                &format!("/v1/{name}:redeliver"),
                json!({"since": "2000-01-01T00:00:00Z"}),
            )
            .await;
        assert_eq!(status, 200, "{recovered}");
        let from = recovered["since"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .expect("since");
        let minutes = (asked - from.with_timezone(&chrono::Utc)).num_minutes();
        assert!((30 * 24 * 60 - 2..=30 * 24 * 60 + 2).contains(&minutes), "{recovered}");
        let (status, enabled) = admin.post(&format!("/v1/{name}:enable"), json!({})).await;
        assert_eq!((status, enabled["disableTime"].is_null()), (200, true), "{enabled}");
        let rep = Rest::as_user(base, "acme", "bob", Role::Rep);
        let (status, _) = rep.post(&format!("/v1/{name}:enable"), json!({})).await;
        assert_eq!(status, 403);
        deployment.stop().await;
    }
}

/// An open Server-Sent Events stream and what has arrived of it.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// The caller's live inbox.
    async fn open(base: &str, bearer: &str) -> Sse {
        Sse::get(base, "/v1/notifications:watch", bearer).await
    }

    /// The stream at `path`.
    async fn get(base: &str, path: &str, bearer: &str) -> Sse {
        let response = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("watch");
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (its name and JSON data) within 15 s.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
                let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
                if let (Some(event), Some(data)) = (event, data) {
                    return (event.to_owned(), serde_json::from_str(data).expect("JSON"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.response.chunk())
                .await
                .expect("an event in time")
                .expect("chunk")
                .expect("stream open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Events until one named `name` for which `done` holds; that one.
    async fn until(&mut self, name: &str, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await;
            if event == name && done(&data) {
                return data;
            }
        }
    }
}

/// A gRPC watcher's next message within 15 s.
async fn next_watched(
    stream: &mut tonic::Streaming<crm_proto::crm::notification::v1::WatchNotificationsResponse>,
    waiting_for: &str,
) -> crm_proto::crm::notification::v1::watch_notifications_response::Kind {
    tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .unwrap_or_else(|_| panic!("no message in time: {waiting_for}"))
        .expect("stream")
        .expect("open")
        .kind
        .expect("kind")
}

#[tokio::test]
async fn an_inbox_is_watched_live_over_sse_and_grpc_seen_and_archived_on_both_backends() {
    use crm_proto::crm::notification::v1 as pb;
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "notification_live").await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let carol = Rest::as_user(base, "acme", "carol", Role::Rep);
        let mut live = Sse::open(base, &crate::support::token("acme", "carol", Role::Rep)).await;
        let (event, counts) = live.next().await;
        assert_eq!(
            (event.as_str(), counts["unread"].as_str()),
            ("counts", Some("0")),
            "{counts}"
        );
        let (status, _) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Wins", "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": ["users/carol"]}),
            )
            .await;
        assert_eq!(status, 200);
        let pipeline = pipeline(&admin).await;
        let deal = won_deal(&admin, &pipeline, "100").await;
        let note = live.until("notification", |_| true).await;
        assert_eq!(note["subject"], deal.as_str(), "{note}");
        assert_eq!(
            (note["read"].as_bool(), note["seen"].as_bool()),
            (Some(false), Some(false))
        );
        let counts = live.until("counts", |c| c["unread"] == "1").await;
        assert_eq!(counts["unseen"], "1");

        // Seen: the badge's count goes to zero, the notification stays unread.
        let (status, seen) = carol.post("/v1/notifications:markSeen", json!({})).await;
        assert_eq!((status, seen["marked"].as_str()), (200, Some("1")), "{seen}");
        let counts = live.until("counts", |c| c["unseen"] == "0").await;
        assert_eq!(counts["unread"], "1");
        // Archived: out of the inbox, in the archive, read.
        let (status, archived) = carol
            .post("/v1/notifications:archive", json!({"names": [note["name"]]}))
            .await;
        assert_eq!((status, archived["archived"].as_str()), (200, Some("1")), "{archived}");
        live.until("counts", |c| c["unread"] == "0").await;
        let (_, inbox) = carol.get("/v1/notifications").await;
        assert_eq!(inbox["notifications"].as_array().map(Vec::len), Some(0), "{inbox}");
        let (_, archive) = carol.get("/v1/notifications?archived=true").await;
        assert_eq!(archive["notifications"][0]["name"], note["name"], "{archive}");
        assert_eq!(archive["notifications"][0]["read"], true);
        // Another user's watch hears nothing of carol's inbox, and marks nothing of it.
        let bob = Rest::as_user(base, "acme", "bob", Role::Rep);
        let (_, marked) = bob
            .post("/v1/notifications:archive", json!({"names": [note["name"]]}))
            .await;
        assert_eq!(marked["archived"], "0");

        // On PostgreSQL, a watcher on another replica hears of a change made through this one.
        if let Deployment::Postgres(pg) = &deployment {
            let replica = pg.notification_replica();
            let endpoint = format!("http://{}", replica.address_after("gRPC on "));
            let channel = tonic::transport::Channel::from_shared(endpoint)
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            let bearer: tonic::metadata::MetadataValue<_> =
                format!("Bearer {}", crate::support::token("acme", "carol", Role::Rep))
                    .parse()
                    .expect("header");
            let mut client = pb::inbox_service_client::InboxServiceClient::with_interceptor(
                channel,
                move |mut request: tonic::Request<()>| {
                    request.metadata_mut().insert("authorization", bearer.clone());
                    Ok(request)
                },
            );
            let mut watched = client
                .watch_notifications(pb::WatchNotificationsRequest {})
                .await
                .expect("watch")
                .into_inner();
            assert!(matches!(
                next_watched(&mut watched, "the counts").await,
                pb::watch_notifications_response::Kind::Counts(_)
            ));
            let second = won_deal(&admin, &pipeline, "200").await;
            loop {
                if let pb::watch_notifications_response::Kind::Notification(n) =
                    next_watched(&mut watched, "the new notification").await
                {
                    assert_eq!(n.subject, second);
                    break;
                }
            }
            // Marked seen through the gateway's replica: heard on this one through PostgreSQL.
            let (status, _) = carol.post("/v1/notifications:markSeen", json!({})).await;
            assert_eq!(status, 200);
            loop {
                if let pb::watch_notifications_response::Kind::Counts(c) =
                    next_watched(&mut watched, "the counts after seen on the other replica").await
                    && c.unseen == 0
                {
                    assert_eq!(c.unread, 1);
                    break;
                }
            }
        }
        // A watch ends with its token: an `error` event saying so, then the end of the stream.
        let started = std::time::Instant::now();
        let mut brief = Sse::open(base, &crate::support::token_expiring("acme", "carol", Role::Rep, 3)).await;
        assert_eq!(brief.next().await.0, "counts");
        let problem = brief.until("error", |_| true).await;
        assert_eq!(problem["reason"], "TOKEN_EXPIRED", "{problem}");
        assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
        let end = tokio::time::timeout(Duration::from_secs(15), async {
            while let Ok(Some(_)) = brief.response.chunk().await {}
        })
        .await;
        assert!(end.is_ok(), "the stream ends");
        deployment.stop().await;
    }
}

/// A rule's `roles/{role}` recipient reaches the users the suite saw at work with that role
/// (their requests reported on the services' feeds), on both backends: a manager's request to
/// the pipeline makes her a member, and from then on each deal won reaches her inbox, while a
/// rep and the admin who wrote the rule hear nothing.
#[tokio::test]
async fn a_role_reaches_the_users_seen_at_work_with_it_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) =
            Deployment::start_with(postgres, "notification_roles", &[("CRM_USAGE_EVERY", "200ms")]).await
        else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let mia = Rest::as_user(base, "acme", "mia", Role::Manager);
        let rex = Rest::as_user(base, "acme", "rex", Role::Rep);
        // A manager of another tenant is never a member of this one.
        let other = Rest::as_user(base, "globex", "olga", Role::Manager);
        let (status, rule) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Wins for managers", "eventTypes": ["crm.pipeline.v1.DealWon"],
                       "recipients": ["roles/manager"]}),
            )
            .await;
        assert_eq!(status, 200, "{rule}");
        assert_eq!(rule["recipients"], json!(["roles/manager"]));
        let (status, bad) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Services", "eventTypes": ["crm.pipeline.v1.DealWon"],
                       "recipients": ["roles/service", "roles/boss"]}),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
        let fields = violation_fields(&bad);
        assert_eq!(fields, ["rule.recipients[0]", "rule.recipients[1]"], "{bad}");

        for who in [&mia, &rex, &other] {
            let (status, body) = who.get("/v1/deals").await;
            assert_eq!(status, 200, "{body}");
        }
        let pipeline = pipeline(&admin).await;
        // Deals are won until one reaches mia: her membership is kept once her usage report
        // (every 200 ms) has gone through the pipeline's feed.
        let started = std::time::Instant::now();
        let first = loop {
            let deal = won_deal(&admin, &pipeline, "100").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (_, inbox) = mia.get("/v1/notifications").await;
            let subjects: Vec<String> = inbox["notifications"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|n| n["subject"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if subjects.contains(&deal) {
                break deal;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "mia never heard of a win: {inbox}"
            );
        };
        // Once a member, every win reaches her.
        let next = won_deal(&admin, &pipeline, "200").await;
        let started = std::time::Instant::now();
        loop {
            let (_, inbox) = mia.get("/v1/notifications").await;
            let subjects: Vec<&str> = inbox["notifications"]
                .as_array()
                .map(|list| list.iter().filter_map(|n| n["subject"].as_str()).collect())
                .unwrap_or_default();
            if subjects.contains(&next.as_str()) {
                assert!(subjects.contains(&first.as_str()));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the second win never reached mia: {inbox}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (who, name) in [(&rex, "rex"), (&admin, "alice"), (&other, "olga")] {
            let (_, inbox) = who.get("/v1/notifications").await;
            assert_eq!(
                inbox["notifications"].as_array().map(Vec::len),
                Some(0),
                "{name}: {inbox}"
            );
        }
    }
}

/// The notification service publishes a feed of its own, read as integrators read the others
/// (`/v1/events:stream?source=crm.notification.v1`), on both backends: here its users' requests
/// to the inbox, reported with their roles. (A webhook endpoint disabled after five days of
/// failures is its other event; the store's conformance tests drive the clock to it.)
#[tokio::test]
async fn the_notification_service_has_a_feed_of_its_own_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) =
            Deployment::start_with(postgres, "notification_feed", &[("CRM_USAGE_EVERY", "200ms")]).await
        else {
            continue;
        };
        let base = deployment.rest();
        let carol = Rest::as_user(base, "acme", "carol", Role::Rep);
        let (status, inbox) = carol.get("/v1/notifications").await;
        assert_eq!(status, 200, "{inbox}");
        let reader = crate::support::token("acme", "reader", Role::Viewer);
        let mut feed = Sse::get(base, "/v1/events:stream?source=crm.notification.v1", &reader).await;
        let report = feed
            .until("crm.events.v1.UsageReported", |e| e["payload"]["user"] == "carol")
            .await;
        assert_eq!(
            report["payload"]["area"], "crm.notification.v1.InboxService",
            "{report}"
        );
        assert_eq!(report["payload"]["roles"], json!(["rep"]), "{report}");
        // Another tenant's reader sees none of it.
        let outsider = crate::support::token("globex", "reader", Role::Viewer);
        let mut theirs = Sse::get(base, "/v1/events:stream?source=crm.notification.v1", &outsider).await;
        let (event, _) = theirs.next().await;
        assert_eq!(event, "heartbeat");
        let (status, bad) = carol.get("/v1/events:stream?source=crm.billing.v1").await;
        assert_eq!(status, 400, "{bad}");
    }
}
