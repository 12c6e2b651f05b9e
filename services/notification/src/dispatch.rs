//! Work taken from a queue of every tenant, the same way for each channel (webhooks, email):
//! due items are claimed a batch ahead of the attempts (a lease in the database, `FOR UPDATE
//! SKIP LOCKED` on PostgreSQL, so replicas add capacity and a replica killed mid-attempt loses
//! nothing: its claims return to the queue when their lease ends), a bounded number of attempts
//! run at once, and their outcomes are kept in batches. What an attempt is, is the channel's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::schedule::{MAX_ATTEMPTS, next_delay};
use crate::store::StoreError;

/// A channel's queue and its attempts.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// A claimed item, with what its attempt needs.
    type Due: Send + 'static;
    /// An attempt made, to keep.
    type Done: Send + 'static;

    /// What it delivers, for logs.
    fn name(&self) -> &'static str;
    /// Claims up to `limit` items of any tenant due at `now`, holding them for `lease`.
    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: usize) -> Result<Vec<Self::Due>, StoreError>;
    /// One attempt at `due`; None for an item that cannot be kept (no valid tenant).
    async fn attempt(&self, due: Self::Due) -> Option<Self::Done>;
    /// Keeps attempts, releasing their items, in one transaction.
    async fn keep(&self, done: &[Self::Done]) -> Result<(), StoreError>;
    /// Rung when items become due.
    fn due(&self) -> &Notify;
    /// The time now.
    fn now(&self) -> DateTime<Utc>;
}

/// How a queue is worked.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// How long a claim holds an item: past it, another worker may attempt it.
    pub lease: Duration,
    /// Items claimed at once.
    pub batch: usize,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long one attempt may take: a claimed item is attempted only while at least this
    /// much of its lease remains, so that it is never attempted by two workers at once.
    pub timeout: Duration,
}

/// How often due retries are looked for when nothing rings.
const POLL: Duration = Duration::from_secs(1);
/// Claims made at once: a claim takes as long as its writes, so while one commits another
/// keeps the attempts fed (each skips what the other holds).
const CLAIMERS: usize = 2;
/// Attempts kept in one transaction at most.
const MAX_KEPT: usize = 512;

/// Works `channel`'s queue until `shutdown`: due items are claimed as the attempts in flight
/// drain, up to `concurrency` attempts run at once, and their outcomes are kept in batches
/// (whatever has finished while the previous batch was being written), so that one slow
/// target holds up only its own attempt.
pub async fn run<C: Channel>(channel: Arc<C>, config: QueueConfig, shutdown: CancellationToken) {
    let (results, finished) = tokio::sync::mpsc::channel::<C::Done>(MAX_KEPT * 2);
    let finisher = tokio::spawn(keep(Arc::clone(&channel), finished));
    // Claims run a batch ahead of the attempts, so that a claim's commit never leaves the
    // attempts waiting.
    let (claims, claimed) = tokio::sync::mpsc::channel::<Claimed<C::Due>>(config.batch * (CLAIMERS + 1));
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|_| {
            tokio::spawn(claim_ahead(
                Arc::clone(&channel),
                config,
                shutdown.clone(),
                claims.clone(),
            ))
        })
        .collect();
    drop(claims);
    futures::stream::unfold(claimed, |mut claimed| async move {
        claimed.recv().await.map(|due| (due, claimed))
    })
    .map(|claimed| {
        let channel = Arc::clone(&channel);
        async move {
            // An item that waited here past its lease may be another worker's by now: left
            // for the queue, where it is due again.
            if claimed.at.elapsed() + config.timeout >= config.lease {
                tracing::debug!(
                    channel = channel.name(),
                    "a claim waited past its lease; left to the queue"
                );
                return None;
            }
            channel.attempt(claimed.due).await
        }
    })
    .buffer_unordered(config.concurrency)
    .for_each(|done| {
        let results = results.clone();
        async move {
            if let Some(done) = done {
                let _ = results.send(done).await;
            }
        }
    })
    .await;
    drop(results);
    futures::future::join_all(claimers).await;
    let _ = finisher.await;
}

/// A claimed item and when it was claimed.
struct Claimed<D> {
    due: D,
    at: Instant,
}

/// Claims due items a batch at a time whenever `claims` has room for a batch, until
/// `shutdown`.
async fn claim_ahead<C: Channel>(
    channel: Arc<C>,
    config: QueueConfig,
    shutdown: CancellationToken,
    claims: tokio::sync::mpsc::Sender<Claimed<C::Due>>,
) {
    loop {
        let permits = tokio::select! {
            () = shutdown.cancelled() => return,
            permits = claims.reserve_many(config.batch) => match permits {
                Ok(permits) => permits,
                Err(_) => return,
            },
        };
        let at = Instant::now();
        match channel.claim(channel.now(), config.lease, config.batch).await {
            Ok(claimed) if !claimed.is_empty() => {
                for (permit, due) in permits.zip(claimed) {
                    permit.send(Claimed { due, at });
                }
            }
            outcome => {
                drop(permits);
                if let Err(e) = outcome {
                    tracing::warn!(channel = channel.name(), error = %e, "claiming due items failed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = channel.due().notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
}

/// Keeps finished attempts, a batch at a time, until every sender is gone. A batch that
/// cannot be kept is attempted again once its claims' lease ends: at least once.
async fn keep<C: Channel>(channel: Arc<C>, mut finished: tokio::sync::mpsc::Receiver<C::Done>) {
    let mut batch = Vec::with_capacity(MAX_KEPT);
    while let Some(first) = finished.recv().await {
        batch.push(first);
        while batch.len() < MAX_KEPT {
            match finished.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        if let Err(e) = channel.keep(&batch).await {
            tracing::warn!(channel = channel.name(), attempts = batch.len(), error = %e, "attempts could not be kept");
        }
        batch.clear();
    }
}

/// When attempt `number` (from 1), which failed, is followed by another: None once the
/// schedule is spent.
pub fn retry_time(number: i32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_delay(number, jitter())
        .filter(|_| number < MAX_ATTEMPTS)
        .and_then(|delay| chrono::Duration::from_std(delay).ok())
        .map(|delay| now + delay)
}

/// A random spread of a retry's delay, 0 to 1.
fn jitter() -> f64 {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).map_or(0.5, |()| f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX))
}

/// The error and its causes, for the attempt's record.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A queue of `items` claimed all at once, each attempt taking `takes`.
    struct Slow {
        items: Mutex<Vec<u32>>,
        takes: Duration,
        attempted: Mutex<Vec<u32>>,
        kept: Mutex<Vec<u32>>,
        due: Notify,
    }

    #[async_trait]
    impl Channel for Slow {
        type Due = u32;
        type Done = u32;

        fn name(&self) -> &'static str {
            "slow"
        }

        async fn claim(&self, _: DateTime<Utc>, _: Duration, limit: usize) -> Result<Vec<u32>, StoreError> {
            let mut items = self.items.lock().expect("lock");
            let n = items.len().min(limit);
            Ok(items.drain(..n).collect())
        }

        async fn attempt(&self, due: u32) -> Option<u32> {
            self.attempted.lock().expect("lock").push(due);
            tokio::time::sleep(self.takes).await;
            Some(due)
        }

        async fn keep(&self, done: &[u32]) -> Result<(), StoreError> {
            self.kept.lock().expect("lock").extend_from_slice(done);
            Ok(())
        }

        fn due(&self) -> &Notify {
            &self.due
        }

        fn now(&self) -> DateTime<Utc> {
            Utc::now()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_is_attempted_only_while_an_attempts_worth_of_its_lease_remains() {
        let channel = Arc::new(Slow {
            items: Mutex::new(vec![1, 2, 3, 4]),
            takes: Duration::from_secs(25),
            attempted: Mutex::default(),
            kept: Mutex::default(),
            due: Notify::new(),
        });
        let config = QueueConfig {
            lease: Duration::from_secs(60),
            batch: 4,
            concurrency: 1,
            timeout: Duration::from_secs(30),
        };
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run(Arc::clone(&channel), config, shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(120)).await;
        shutdown.cancel();
        worker.await.expect("the worker ends");
        // 1 starts at once, 2 after 25 s (35 s of its lease left), 3 after 50 s (10 s left,
        // less than an attempt may take): it and 4 are left to the queue, never attempted.
        assert_eq!(*channel.attempted.lock().expect("lock"), vec![1, 2]);
        assert_eq!(*channel.kept.lock().expect("lock"), vec![1, 2]);
    }
}
