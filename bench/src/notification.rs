//! The notification service's targets, on PostgreSQL:
//!
//! - webhook deliveries per second to a receiver on loopback, against a plain HTTP client
//!   posting the same signed bodies to the same receiver with the same concurrency, in the same
//!   run (each rate from the first request received to the last);
//! - event commit to webhook received, at `rate` events/s: a load commits deals created and won
//!   into the pipeline's outbox (as the analytics latency test does), a rule sends each to an
//!   endpoint, and the receiver measures each webhook against its event's time;
//! - the unread count and the first inbox page of a user with 100k notifications, 8 clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_notification::deliver::DeliveryConfig;
use crm_notification::domain::signature::{key_of, new_secret, sign};
use crm_proto::crm::notification::v1 as pb;
use crm_proto::crm::notification::v1::inbox_service_client::InboxServiceClient;
use crm_proto::crm::notification::v1::rule_service_client::RuleServiceClient;
use crm_proto::crm::notification::v1::webhook_endpoint_service_client::WebhookEndpointServiceClient;
use futures::StreamExt;
use sqlx::Connection;
use uuid::Uuid;

use super::analytics_latency::{commit_load_event, tenant};
use super::{Bearer, load, ms, start, token_for};

pub(crate) struct NotificationBench<'a> {
    /// A migrated notification database.
    pub notification_url: &'a str,
    /// The pipeline's database and gRPC endpoint (`crm pipeline` serving it).
    pub pipeline_url: &'a str,
    pub pipeline_grpc: &'a str,
    pub contact_grpc: &'a str,
    /// Deliveries of the throughput test.
    pub deliveries: u64,
    /// Events per second and seconds of the latency test.
    pub rate: u64,
    pub duration: Duration,
    /// Clients and seconds of the inbox test.
    pub clients: usize,
    pub inbox_duration: Duration,
}

const TENANT: &str = "notify";

/// What a receiver has seen: requests, the first and last arrival, and each webhook's
/// latency from its event's time (when asked).
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    window: std::sync::Mutex<Option<(Instant, Instant)>>,
    latencies: std::sync::Mutex<Vec<Duration>>,
}

impl Seen {
    /// Requests per second from the first arrival to the last.
    #[allow(clippy::cast_precision_loss)]
    fn rate(&self) -> f64 {
        let n = self.requests.load(Ordering::SeqCst);
        match *self.window.lock().expect("lock") {
            Some((first, last)) if n > 1 => (n - 1) as f64 / (last - first).as_secs_f64().max(f64::EPSILON),
            _ => 0.0,
        }
    }
}

/// A receiver on loopback answering 204 to every POST; measures latency from the body's
/// `timestamp` when `latency`.
async fn receiver(latency: bool) -> anyhow::Result<(String, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let kept = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: String| {
            let seen = Arc::clone(&kept);
            async move {
                let now = Instant::now();
                if latency
                    && let Ok(body) = serde_json::from_str::<serde_json::Value>(&body)
                    && let Some(time) = body["timestamp"].as_str()
                    && let Ok(time) = chrono::DateTime::parse_from_rfc3339(time)
                {
                    let late = (chrono::Utc::now() - time.with_timezone(&chrono::Utc))
                        .to_std()
                        .unwrap_or_default();
                    seen.latencies.lock().expect("lock").push(late);
                }
                {
                    let mut window = seen.window.lock().expect("lock");
                    let first = window.map_or(now, |(first, _)| first);
                    *window = Some((first, now));
                }
                seen.requests.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

/// A body of the size of a deal's webhook.
fn body(n: u64) -> String {
    serde_json::json!({
        "type": "crm.pipeline.v1.DealCreated",
        "timestamp": "2026-12-06T12:00:00.000000Z",
        "eventId": format!("0193a5b0-0000-7000-8000-{n:012x}"),
        "subject": format!("deals/0193a5b0-0000-7000-8000-{n:012x}"),
        "data": {"deal": {"name": format!("deals/0193a5b0-0000-7000-8000-{n:012x}"), "displayName": "Bench deal",
                 "pipeline": "pipelines/0193a5b0-0000-7000-8000-000000000001", "stage": "0193a5b0-0000-7000-8000-000000000002",
                 "status": "DEAL_STATUS_OPEN", "owner": "rep-1", "amount": {"amountMinor": "125000", "currencyCode": "EUR"},
                 "createTime": "2026-12-06T12:00:00Z", "updateTime": "2026-12-06T12:00:00Z"}}
    })
    .to_string()
}

async fn wait_for(seen: &Seen, n: u64, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while seen.requests.load(Ordering::SeqCst) < n {
        anyhow::ensure!(
            started.elapsed() < limit,
            "{} of {n} webhooks received",
            seen.requests.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `crm notification` on the bench's database, following the pipeline's and contact's feeds.
fn start_notification(bench: &NotificationBench<'_>) -> anyhow::Result<(super::ChildGuard, String)> {
    start(
        &[
            "notification",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[
            ("CRM_DATABASE_URL", bench.notification_url),
            ("CRM_PIPELINE_ENDPOINT", bench.pipeline_grpc),
            ("CRM_CONTACT_ENDPOINT", bench.contact_grpc),
            // Nobody serves the analytics feed here: its follower retries in the background.
            ("CRM_ANALYTICS_ENDPOINT", "http://127.0.0.1:9"),
            ("CRM_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ],
        "crm notification is up",
        "gRPC on ",
    )
}

async fn bearer(tenant: &str) -> anyhow::Result<Bearer> {
    Ok(Bearer(format!("Bearer {}", token_for(tenant)?).parse()?))
}

/// Webhook deliveries per second against a plain client.
pub(crate) async fn throughput(bench: &NotificationBench<'_>) -> anyhow::Result<()> {
    let concurrency = DeliveryConfig::default().concurrency;
    let n = bench.deliveries;
    let secret = new_secret()?;
    let key = key_of(&secret).map_err(anyhow::Error::msg)?;

    // The baseline, before the service and again after it: the same signed bodies, posted by
    // one client with the same concurrency. The service is measured against the faster of the
    // two, so that a baseline slowed by the machine for a while never flatters the ratio.
    let before = plain_rate(n, concurrency, &key).await?;

    // The service: the same number of deliveries made due at once.
    let (url, delivered) = receiver(false).await?;
    let (notification, _) = start_notification(bench)?;
    let mut db = sqlx::PgConnection::connect(bench.notification_url).await?;
    let endpoint = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, description, secret, create_time) \
         VALUES ($1, $2, $3, '[]', 'bench', $4, now())",
    )
    .bind(TENANT)
    .bind(endpoint)
    .bind(&url)
    .bind(&secret)
    .execute(&mut db)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (tenant_id, id, rule_id, endpoint_id, event_id, event_type, body, state, \
         next_attempt_time, create_time) \
         SELECT $1, gen_random_uuid(), $2, $3, 'event-' || g, 'crm.pipeline.v1.DealCreated', $4, 'pending', now(), now() \
         FROM generate_series(1, $5) g",
    )
    .bind(TENANT)
    .bind(Uuid::now_v7())
    .bind(endpoint)
    .bind(body(0))
    .bind(i64::try_from(n)?)
    .execute(&mut db)
    .await?;
    // The pending deliveries' queue, as the service's matching writes it beside them.
    sqlx::query(
        "INSERT INTO delivery_queue (tenant_id, id, next_attempt_time) \
         SELECT tenant_id, id, next_attempt_time FROM deliveries WHERE state = 'pending'",
    )
    .execute(&mut db)
    .await?;
    wait_for(&delivered, n, Duration::from_secs(600)).await?;
    let rate = delivered.rate();
    // Every delivery is recorded delivered (attempts kept), not only posted.
    let started = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
            .fetch_one(&mut db)
            .await?;
        if done == i64::try_from(n)? {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{done} of {n} recorded delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The service stopped, so that it takes nothing from the second baseline.
    drop(db);
    drop(notification);
    let after = plain_rate(n, concurrency, &key).await?;
    let baseline = before.max(after);
    println!(
        "| webhook deliveries to a loopback receiver, {n} deliveries, {concurrency} in flight | {rate:.0}/s | plain HTTP client, same signed bodies and concurrency, before and after the service: {before:.0}/s, {after:.0}/s | {:.2}x of the faster | >= 0.5x |",
        rate / baseline.max(f64::EPSILON)
    );
    Ok(())
}

/// Requests per second of a plain HTTP client posting `n` signed bodies, `concurrency` at
/// once, to a receiver of its own on loopback.
async fn plain_rate(n: u64, concurrency: usize, key: &[u8]) -> anyhow::Result<f64> {
    let (url, plain) = receiver(false).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let failed = AtomicU64::new(0);
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let (client, url, failed) = (&client, &url, &failed);
            async move {
                let id = Uuid::now_v7().to_string();
                let body = body(i);
                let timestamp = chrono::Utc::now().timestamp();
                let sent = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign(key, &id, timestamp, body.as_bytes()))
                    .body(body)
                    .send()
                    .await;
                if !sent.is_ok_and(|r| r.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    anyhow::ensure!(failed.load(Ordering::Relaxed) == 0, "the plain client failed");
    Ok(plain.rate())
}

/// Event commit to webhook received at `rate` events/s.
pub(crate) async fn latency(bench: &NotificationBench<'_>) -> anyhow::Result<()> {
    let (url, seen) = receiver(true).await?;
    let (_notification, grpc) = start_notification(bench)?;
    let notification = super::analytics_latency::channel(&format!("http://{grpc}")).await?;
    let pipeline = super::analytics_latency::channel(bench.pipeline_grpc).await?;
    let mut tenants = Vec::new();
    for i in 0..10 {
        let name = format!("notify-load-{i}");
        let endpoint = WebhookEndpointServiceClient::with_interceptor(notification.clone(), bearer(&name).await?)
            .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
                webhook_endpoint: Some(pb::WebhookEndpoint {
                    url: url.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .webhook_endpoint
            .ok_or_else(|| anyhow::anyhow!("no endpoint"))?;
        RuleServiceClient::with_interceptor(notification.clone(), bearer(&name).await?)
            .create_rule(pb::CreateRuleRequest {
                rule: Some(pb::Rule {
                    display_name: "Every deal".to_owned(),
                    event_types: vec![
                        "crm.pipeline.v1.DealCreated".to_owned(),
                        "crm.pipeline.v1.DealWon".to_owned(),
                    ],
                    recipients: vec![endpoint.name],
                    ..Default::default()
                }),
            })
            .await?;
        tenants.push(tenant(&pipeline, &name).await?);
    }
    let clients = usize::try_from(bench.rate.div_ceil(20).clamp(1, 48))?;
    #[allow(clippy::cast_precision_loss)]
    let per_client = bench.rate as f64 / clients as f64;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(clients)?)
        .connect(bench.pipeline_url)
        .await?;
    let tenants = Arc::new(tenants);
    let run = load(clients, bench.duration, Some(per_client), move |client, n| {
        let tenants = Arc::clone(&tenants);
        let pool = pool.clone();
        async move {
            let (_, board) = &tenants[client % tenants.len()];
            commit_load_event(&pool, board, client, n).await.is_ok()
        }
    })
    .await;
    anyhow::ensure!(run.errors == 0, "{} load commits failed", run.errors);
    wait_for(&seen, run.ops, Duration::from_secs(120)).await?;
    let mut latencies = seen.latencies.lock().expect("lock").clone();
    latencies.sort_unstable();
    let at = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    println!(
        "| event commit to webhook received, {} events/s asked for {} s | p99 {:.0} ms (p50 {:.0} ms, max {:.0} ms; {} webhooks, load reached {:.0} events/s) | | | p99 <= 250 ms |",
        bench.rate,
        bench.duration.as_secs(),
        ms(at(0.99)),
        ms(at(0.5)),
        ms(at(1.0)),
        latencies.len(),
        run.rate()
    );
    Ok(())
}

/// The unread count and the first inbox page of a user with 100k notifications.
pub(crate) async fn inbox(bench: &NotificationBench<'_>) -> anyhow::Result<()> {
    const USER: &str = "bench";
    let mut db = sqlx::PgConnection::connect(bench.notification_url).await?;
    // 100k for the user, a third of them read, and as many for 100 other users of the tenant.
    sqlx::query(
        "INSERT INTO notifications (tenant_id, id, user_id, rule_id, event_id, event_type, subject, title, read, create_time) \
         SELECT $1, gen_random_uuid(), CASE WHEN g <= 100000 THEN $2 ELSE 'rep-' || (g % 100) END, $3, 'event-' || g, \
                'crm.pipeline.v1.TaskDue', 'tasks/' || g, 'Task due: call back', g % 3 = 0, \
                now() - (200000 - g) * interval '1 second' \
         FROM generate_series(1, 200000) g",
    )
    .bind(TENANT)
    .bind(USER)
    .bind(Uuid::now_v7())
    .execute(&mut db)
    .await?;
    // The users' unread counts, as the migration that introduced them fills them.
    sqlx::query(
        "INSERT INTO inbox_counts (tenant_id, user_id, unread) \
         SELECT tenant_id, user_id, count(*) FROM notifications WHERE NOT read GROUP BY tenant_id, user_id",
    )
    .execute(&mut db)
    .await?;
    sqlx::query("ANALYZE notifications").execute(&mut db).await?;
    let (_notification, grpc) = start_notification(bench)?;
    let channel = super::analytics_latency::channel(&format!("http://{grpc}")).await?;
    let client = InboxServiceClient::with_interceptor(channel, bearer(TENANT).await?);
    let counts = {
        let client = client.clone();
        load(bench.clients, bench.inbox_duration, None, move |_, _| {
            let mut client = client.clone();
            async move {
                client
                    .get_unread_count(pb::GetUnreadCountRequest {})
                    .await
                    .is_ok_and(|r| r.into_inner().unread == 66_667)
            }
        })
        .await
    };
    let pages = load(bench.clients, bench.inbox_duration, None, move |_, _| {
        let mut client = client.clone();
        async move {
            client
                .list_notifications(pb::ListNotificationsRequest {
                    page_size: 50,
                    ..Default::default()
                })
                .await
                .is_ok_and(|r| r.into_inner().notifications.len() == 50)
        }
    })
    .await;
    println!(
        "| inbox of a user with 100k notifications, {} clients: unread count | {} | | | p99 <= 20 ms |",
        bench.clients,
        counts.summary()
    );
    println!(
        "| inbox of a user with 100k notifications, {} clients: first page of 50 | {} | | | p99 <= 20 ms |",
        bench.clients,
        pages.summary()
    );
    Ok(())
}
