//! Webhook delivery, a [`Channel`] of the [`dispatch`] worker: posts each due delivery signed
//! per the Standard Webhooks scheme with a per-attempt timeout, keeps the attempt and
//! schedules the next by [`schedule`](crate::domain::schedule). A webhook's address is
//! checked after name resolution at every connection ([`AddressPolicy`]); redirects are not
//! followed (an attempt answered 3xx failed).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::NotificationApp;
use crate::dispatch::{self, Channel, QueueConfig, chain, retry_time};
use crate::domain::address::AddressPolicy;
use crate::domain::signature::{key_of, sign};
use crate::domain::{Attempt, DeliveryState, Due};
use crate::store::{Claim, Finished, Outcome, StoreError};

/// How the worker delivers.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The networks webhooks may reach besides the public internet.
    pub policy: AddressPolicy,
    /// How long one attempt may take, answer included.
    pub timeout: Duration,
    /// How long a claim holds a delivery: past it, another worker may attempt it.
    pub lease: Duration,
    /// Deliveries claimed at once.
    pub batch: usize,
    /// Attempts in flight at once.
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::public_only(),
            timeout: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            batch: 256,
            concurrency: 32,
        }
    }
}

/// Bytes of an answer kept with its attempt.
const RESPONSE_HEAD: usize = 1024;

/// A resolver that refuses a name any of whose addresses the policy refuses.
struct Guarded {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            if let Some(reason) = addrs.iter().find_map(|a| policy.refusal(a.ip())) {
                return Err(format!("{host}: {reason}").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of the deliveries.
pub fn client(config: &DeliveryConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(Guarded {
            policy: config.policy.clone(),
        }))
        .redirect(reqwest::redirect::Policy::none())
        // Straight to the target: through a proxy of the environment (`HTTPS_PROXY`), the
        // proxy would resolve the target's name, and the guard would never see its addresses.
        .no_proxy()
        .pool_max_idle_per_host(config.concurrency)
        .user_agent(concat!("crm-notification/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Delivers webhooks until `shutdown` (see [`dispatch::run`]).
pub async fn run(app: NotificationApp, config: DeliveryConfig, shutdown: CancellationToken) {
    let client = match client(&config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: webhooks are not delivered");
            return;
        }
    };
    let queue = QueueConfig {
        lease: config.lease,
        batch: config.batch,
        concurrency: config.concurrency,
        timeout: config.timeout,
    };
    let webhooks = Webhooks {
        app,
        client,
        policy: config.policy,
        timeout: config.timeout,
    };
    dispatch::run(Arc::new(webhooks), queue, shutdown).await;
}

/// The webhook channel.
struct Webhooks {
    app: NotificationApp,
    client: reqwest::Client,
    policy: AddressPolicy,
    timeout: Duration,
}

#[async_trait]
impl Channel for Webhooks {
    type Due = Due;
    type Done = Finished;

    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Claim<Due, Finished>, StoreError> {
        self.app.store().claim_due(now, lease, limit).await
    }

    async fn attempt(&self, due: Due) -> Option<Finished> {
        let tenant = TenantId::parse(&due.tenant).ok()?;
        let put_back = |next_attempt_time, slotted| {
            Some(Finished {
                tenant: tenant.clone(),
                delivery: due.id,
                endpoint: due.endpoint,
                attempt: None,
                outcome: Outcome {
                    state: DeliveryState::Pending,
                    next_attempt_time,
                    slotted,
                },
            })
        };
        // A disabled endpoint's deliveries wait, due at no time, until it is enabled.
        if due.disabled {
            return put_back(None, false);
        }
        // A throttled endpoint's slots are kept in the database, so that every replica
        // shares them; a delivery given a later slot waits in the queue for it.
        if due.max_per_second > 0 && !due.slotted {
            let now = self.app.clock().now();
            match self
                .app
                .store()
                .take_slot(&tenant, due.endpoint, due.max_per_second, now)
                .await
            {
                Ok(Some(slot)) if slot > now => {
                    ::metrics::counter!("crm_notification_webhooks_throttled_total").increment(1);
                    return put_back(Some(slot), true);
                }
                Ok(Some(_)) => {}
                // The endpoint was deleted since the claim: its deliveries left the queue with
                // it, and nothing is posted to where it pointed.
                Ok(None) => return put_back(None, false),
                Err(e) => {
                    tracing::warn!(error = %e, "an endpoint's throttle could not be read; its delivery waits a second");
                    return put_back(Some(now + chrono::Duration::seconds(1)), false);
                }
            }
        }
        attempt(&self.app, &self.client, &self.policy, self.timeout, due).await
    }

    async fn keep(&self, done: &[Finished]) -> Result<(), StoreError> {
        self.app.store().finish_attempts(done).await
    }

    fn due(&self) -> &Notify {
        self.app.due()
    }

    fn now(&self) -> DateTime<Utc> {
        self.app.clock().now()
    }
}

/// One attempt at `due`: posted, and what it leaves the delivery in (None for a delivery of
/// no valid tenant, which cannot be kept).
async fn attempt(
    app: &NotificationApp,
    client: &reqwest::Client,
    policy: &AddressPolicy,
    timeout: Duration,
    due: Due,
) -> Option<Finished> {
    let number = due.attempts.saturating_add(1);
    let started = Instant::now();
    let time = app.clock().now();
    let (status_code, error, response_head) =
        match tokio::time::timeout(timeout, post(client, policy, &due, time.timestamp())).await {
            Ok(answer) => answer,
            Err(_) => (0, format!("no answer within {timeout:?}"), String::new()),
        };
    let attempt = Attempt {
        attempt: number,
        time,
        status_code,
        error,
        latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        response_head,
    };
    let outcome = if attempt.succeeded() {
        Outcome {
            state: DeliveryState::Delivered,
            next_attempt_time: None,
            slotted: false,
        }
    } else {
        match retry_time(number, app.clock().now()) {
            Some(next) => Outcome {
                state: DeliveryState::Pending,
                next_attempt_time: Some(next),
                slotted: false,
            },
            None => Outcome {
                state: DeliveryState::Failed,
                next_attempt_time: None,
                slotted: false,
            },
        }
    };
    ::metrics::counter!("crm_notification_webhook_attempts_total", "outcome" => outcome.state.as_str()).increment(1);
    Some(Finished {
        tenant: TenantId::parse(&due.tenant).ok()?,
        delivery: due.id,
        endpoint: due.endpoint,
        attempt: Some(attempt),
        outcome,
    })
}

/// Posts `due` signed at `timestamp`: (status, error, the answer's first bytes).
async fn post(client: &reqwest::Client, policy: &AddressPolicy, due: &Due, timestamp: i64) -> (i32, String, String) {
    let keys = match due.secrets.iter().map(|s| key_of(s)).collect::<Result<Vec<_>, _>>() {
        Ok(keys) => keys,
        Err(reason) => return (0, format!("the endpoint's secret: {reason}"), String::new()),
    };
    let url = match reqwest::Url::parse(&due.url) {
        Ok(url) => url,
        Err(e) => return (0, format!("the endpoint's URL: {e}"), String::new()),
    };
    // A literal address is not resolved, so the resolver never sees it: checked here.
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok());
    if let Some(reason) = literal.and_then(|ip| policy.refusal(ip)) {
        return (0, reason, String::new());
    }
    let id = due.id.to_string();
    // During a rotation both secrets sign: a receiver accepts either.
    let signature = keys
        .iter()
        .map(|key| sign(key, &id, timestamp, due.body.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ");
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(due.body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return (0, chain(&e), String::new()),
    };
    let status = i32::from(response.status().as_u16());
    let mut head = Vec::new();
    while head.len() < RESPONSE_HEAD {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_HEAD - head.len())]),
            Ok(None) => break,
            Err(e) => return (status, chain(&e), String::from_utf8_lossy(&head).into_owned()),
        }
    }
    (status, String::new(), String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use crm_platform::time::ManualClock;

    use super::*;
    use crate::domain::matching::{Matched, fixtures};
    use crate::domain::{Endpoint, NewDelivery};

    /// Works what is due at the clock's time once: (whether an attempt was made, the slot it
    /// was put back to), in the due order.
    async fn work(webhooks: &Webhooks) -> Vec<(bool, Option<DateTime<Utc>>)> {
        dispatch::work_once(webhooks)
            .await
            .iter()
            .map(|f| {
                let slot = f.outcome.next_attempt_time.filter(|_| f.outcome.slotted);
                (f.attempt.is_some(), slot)
            })
            .collect()
    }

    /// How a receiver of [`receiver`] answers each connection.
    #[derive(Clone, Copy)]
    enum Answer {
        /// 302 to `Location: http://127.0.0.1:{port}/`.
        Redirect(u16),
        /// Closes the connection once the request has arrived.
        Close,
        /// A 200 whose body comes a byte every 100 ms.
        Trickle,
    }

    /// A raw HTTP receiver on loopback answering every connection as `answer` says; with the
    /// connections it has accepted.
    async fn receiver(answer: Answer) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    match answer {
                        Answer::Redirect(port) => {
                            let head = format!(
                                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/\r\ncontent-length: 5\r\n\r\nmoved"
                            );
                            let _ = socket.write_all(head.as_bytes()).await;
                        }
                        Answer::Close => {}
                        Answer::Trickle => {
                            let _ = socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                                .await;
                            for _ in 0..100 {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if socket.write_all(b"x").await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        (addr, accepted)
    }

    /// One attempt, the first, at a delivery to `url` under `policy` and `timeout`: what it
    /// leaves to keep, and when it was made.
    async fn attempted(url: &str, policy: AddressPolicy, timeout: Duration) -> (Finished, DateTime<Utc>) {
        let (_dir, store) = crate::store::sqlite_for_test().await;
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).single().expect("time");
        let app = NotificationApp::with_clock(store, Arc::new(ManualClock::at(now)) as _);
        let config = DeliveryConfig {
            policy: policy.clone(),
            timeout,
            ..DeliveryConfig::default()
        };
        let due = Due {
            tenant: "acme".into(),
            id: uuid::Uuid::now_v7(),
            endpoint: uuid::Uuid::now_v7(),
            max_per_second: 0,
            disabled: false,
            url: url.into(),
            secrets: vec![fixtures::endpoint(now).secret],
            body: "{}".into(),
            attempts: 0,
            slotted: false,
        };
        let client = client(&config).expect("client");
        (attempt(&app, &client, &policy, timeout, due).await.expect("kept"), now)
    }

    /// The attempt's (status, error), after checking that it is kept and its delivery
    /// retried on the schedule (the second attempt about 5 s after the first).
    fn retried(finished: &Finished, now: DateTime<Utc>) -> (i32, String) {
        let attempt = finished.attempt.clone().expect("an attempt is kept");
        assert_eq!(finished.outcome.state, DeliveryState::Pending);
        let next = finished.outcome.next_attempt_time.expect("due again");
        assert!(next > now && next <= now + chrono::Duration::seconds(10), "{next}");
        (attempt.status_code, attempt.error)
    }

    fn loopback() -> AddressPolicy {
        AddressPolicy::parse("127.0.0.0/8,::1/128").expect("policy")
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_never_connected_to() {
        let (addr, accepted) = receiver(Answer::Close).await;
        // The Kubernetes roles' default: public addresses only. `localhost` is a name, so the
        // check is the resolver's, after resolution.
        let url = format!("http://localhost:{}/hooks", addr.port());
        let (finished, now) = attempted(&url, AddressPolicy::public_only(), Duration::from_secs(2)).await;
        let (status, error) = retried(&finished, now);
        assert_eq!(status, 0);
        assert!(error.contains("localhost"), "{error}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Allowed by the operator, the same name is posted to.
        let (finished, now) = attempted(&url, loopback(), Duration::from_secs(2)).await;
        retried(&finished, now);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_is_retried() {
        let (elsewhere, followed) = receiver(Answer::Close).await;
        let (addr, _) = receiver(Answer::Redirect(elsewhere.port())).await;
        let (finished, now) = attempted(&format!("http://{addr}/hooks"), loopback(), Duration::from_secs(2)).await;
        let (status, error) = retried(&finished, now);
        assert_eq!((status, error.as_str()), (302, ""));
        assert_eq!(finished.attempt.expect("attempt").response_head, "moved");
        assert_eq!(followed.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_retried() {
        let (addr, accepted) = receiver(Answer::Close).await;
        let (finished, now) = attempted(&format!("http://{addr}/hooks"), loopback(), Duration::from_secs(2)).await;
        let (status, error) = retried(&finished, now);
        assert_eq!(status, 0);
        assert!(!error.is_empty());
        assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn an_answer_trickling_past_the_timeout_is_cut_and_retried() {
        let (addr, _) = receiver(Answer::Trickle).await;
        let timeout = Duration::from_millis(700);
        let (finished, now) = attempted(&format!("http://{addr}/hooks"), loopback(), timeout).await;
        let latency = finished.attempt.as_ref().expect("attempt").latency_ms;
        let (status, error) = retried(&finished, now);
        assert_eq!(status, 0);
        assert!(error.contains("no answer within"), "{error}");
        // Cut at the timeout, not when the last byte came (ten seconds on).
        assert!((700..5000).contains(&latency), "{latency} ms");
    }

    #[tokio::test]
    async fn a_throttled_endpoints_deliveries_wait_for_their_slots_and_a_late_one_takes_a_new_slot() {
        let (_dir, store) = crate::store::sqlite_for_test().await;
        let start = Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).single().expect("time");
        let clock = Arc::new(ManualClock::at(start));
        let app = NotificationApp::with_clock(Arc::clone(&store), Arc::clone(&clock) as _);
        let acme = TenantId::parse("acme").expect("tenant");
        // Nothing listens on the discard port: each attempt is refused at once, and kept.
        let endpoint = Endpoint {
            url: "http://127.0.0.1:9/hooks".into(),
            max_per_second: 2,
            ..fixtures::endpoint(start)
        };
        store.create_endpoint(&acme, &endpoint).await.expect("endpoint");
        let delivery = |event: &str| NewDelivery {
            id: uuid::Uuid::now_v7(),
            rule: uuid::Uuid::now_v7(),
            endpoint: endpoint.id,
            event_id: event.into(),
            event_type: "crm.pipeline.v1.DealWon".into(),
            body: "{}".into(),
            create_time: start,
        };
        let matched = Matched {
            deliveries: vec![delivery("e1"), delivery("e2"), delivery("e3")],
            ..Matched::default()
        };
        assert!(store.record("c", 0, 1, &[(acme, matched)]).await.expect("record"));
        let config = DeliveryConfig {
            policy: AddressPolicy::parse("127.0.0.0/8").expect("policy"),
            timeout: Duration::from_secs(2),
            ..DeliveryConfig::default()
        };
        let webhooks = Webhooks {
            app,
            client: client(&config).expect("client"),
            policy: config.policy.clone(),
            timeout: config.timeout,
        };
        let half = chrono::Duration::milliseconds(500);
        // 2 a second: the first goes, the next two wait for the slots half a second apart.
        assert_eq!(
            work(&webhooks).await,
            [
                (true, None),
                (false, Some(start + half)),
                (false, Some(start + half * 2))
            ]
        );
        // At its slot, the second goes without taking another.
        clock.advance(half);
        assert_eq!(work(&webhooks).await, [(true, None)]);
        // The third, claimed three seconds after its slot (past the grace; the failed first
        // two are retried only after about 5 s), takes a new one: free by now, so it goes.
        let now = start + chrono::Duration::seconds(4);
        clock.advance(now - (start + half));
        assert_eq!(work(&webhooks).await, [(true, None)]);
        // The next one waits half a second from it.
        assert_eq!(
            store
                .take_slot(&TenantId::parse("acme").expect("tenant"), endpoint.id, 2, now)
                .await
                .expect("slot"),
            Some(now + half)
        );
    }
}
