//! Work taken from a queue of every tenant, the same way for each channel (webhooks, email):
//! due items are claimed a batch ahead of the attempts, a bounded number of attempts run at
//! once, and their outcomes are kept in batches. What an attempt is, is the channel's.
//!
//! A claim is held one of two ways (see [`Claim`]), so that replicas add capacity and a
//! replica killed mid-attempt loses nothing:
//! - by the open transaction that locked its items (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL): nothing is written to claim them, and their outcomes are kept in that
//!   transaction once the last attempt ends or [`HOLD`] has passed (the attempts then still in
//!   flight are leased and kept later); a dead worker's transaction ends, and its items are
//!   due again at once;
//! - by a lease written in the database: its items are due again when the lease ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::schedule::{MAX_ATTEMPTS, next_delay};
use crate::store::{Claim, Hold, StoreError};

/// A channel's queue and its attempts.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// A claimed item, with what its attempt needs.
    type Due: Send + 'static;
    /// An attempt made, to keep.
    type Done: Send + 'static;

    /// What it delivers, for logs.
    fn name(&self) -> &'static str;
    /// Claims up to `limit` items of any tenant due at `now`, holding them for `lease` at most.
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Claim<Self::Due, Self::Done>, StoreError>;
    /// One attempt at `due`; None for an item that cannot be kept (no valid tenant).
    async fn attempt(&self, due: Self::Due) -> Option<Self::Done>;
    /// Keeps attempts at leased items, releasing them, in one transaction.
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
/// How long a claim held by a transaction stays open for its attempts: a second holds a
/// batch's attempts to a receiver answering in tens of milliseconds many times over, and
/// keeps a slow one from holding a connection and its row locks for long.
pub const HOLD: Duration = Duration::from_secs(1);

/// Works `channel`'s queue until `shutdown`: due items are claimed as the attempts in flight
/// drain, up to `concurrency` attempts run at once, and their outcomes are kept in batches
/// (whatever has finished while the previous batch was being written), so that one slow
/// target holds up only its own attempt.
pub async fn run<C: Channel>(channel: Arc<C>, config: QueueConfig, shutdown: CancellationToken) {
    let (results, finished) = tokio::sync::mpsc::channel::<C::Done>(MAX_KEPT * 2);
    // Held claims are released each on its own connection, at once.
    let releases = TaskTracker::new();
    let finisher = tokio::spawn(keep(Arc::clone(&channel), finished));
    // Claims run a batch ahead of the attempts, so that a claim's commit never leaves the
    // attempts waiting.
    let (claims, claimed) = tokio::sync::mpsc::channel::<Claimed<C::Due, C::Done>>(config.batch * (CLAIMERS + 1));
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|_| {
            tokio::spawn(claim_ahead(
                Arc::clone(&channel),
                config,
                shutdown.clone(),
                claims.clone(),
                releases.clone(),
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
            let Claimed { due, at, held } = claimed;
            // An item that waited here past its lease may be another worker's by now: left
            // for the queue, where it is due again.
            let done = if at.elapsed() + config.timeout >= config.lease {
                tracing::debug!(
                    channel = channel.name(),
                    "a claim waited past its lease; left to the queue"
                );
                None
            } else {
                channel.attempt(due).await
            };
            match held {
                Some((held, index)) => held.end(index, done),
                None => done.map(Kept::Done),
            }
        }
    })
    .buffer_unordered(config.concurrency)
    .for_each(|kept| {
        let results = results.clone();
        let releases = releases.clone();
        let name = channel.name();
        async move {
            match kept {
                Some(Kept::Done(done)) => {
                    let _ = results.send(done).await;
                }
                Some(Kept::Release(release)) => {
                    releases.spawn(release.run(name));
                }
                None => {}
            }
        }
    })
    .await;
    drop(results);
    futures::future::join_all(claimers).await;
    releases.close();
    releases.wait().await;
    let _ = finisher.await;
}

/// A claimed item, when it was claimed, and its claim (with the item's index in it) when a
/// transaction holds the claim.
struct Claimed<D, F> {
    due: D,
    at: Instant,
    held: Option<(Arc<Held<F>>, usize)>,
}

/// What an ended item leaves to keep: an attempt at a leased item, or a held claim to
/// release.
enum Kept<F> {
    Done(F),
    Release(Release<F>),
}

/// A held claim to release: its attempts kept, its `open` items leased.
struct Release<F> {
    hold: Box<dyn Hold<F>>,
    done: Vec<F>,
    open: Vec<usize>,
}

impl<F> Release<F> {
    /// Releases it; if that fails its items are due again at once: at least once.
    async fn run(self, channel: &'static str) {
        if let Err(e) = self.hold.release(&self.done, &self.open).await {
            tracing::warn!(channel, attempts = self.done.len(), error = %e, "a held claim could not be released");
        }
    }
}

/// A claim held by a transaction, while it is: the attempts made and the items still open.
struct Held<F> {
    state: Mutex<Option<Open<F>>>,
}

struct Open<F> {
    hold: Box<dyn Hold<F>>,
    done: Vec<F>,
    open: BTreeSet<usize>,
}

impl<F> Held<F> {
    fn new(hold: Box<dyn Hold<F>>, items: usize) -> Self {
        Self {
            state: Mutex::new(Some(Open {
                hold,
                done: Vec::new(),
                open: (0..items).collect(),
            })),
        }
    }

    /// Item `index` ended, with `done` when an attempt was made: what is to be kept now
    /// (the whole claim once its last item ended, the attempt alone once it was released).
    fn end(&self, index: usize, done: Option<F>) -> Option<Kept<F>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(claim) = state.as_mut() else {
            return done.map(Kept::Done);
        };
        claim.open.remove(&index);
        claim.done.extend(done);
        if claim.open.is_empty() {
            drop(state);
            return self.release();
        }
        None
    }

    /// The claim to release now, its open items leased; None when it already was.
    fn release(&self) -> Option<Kept<F>> {
        let claim = self.state.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        Some(Kept::Release(Release {
            hold: claim.hold,
            done: claim.done,
            open: claim.open.into_iter().collect(),
        }))
    }
}

/// Claims due items a batch at a time whenever `claims` has room for a batch, until
/// `shutdown`. A claim held by a transaction is released at the latest [`HOLD`] after it was
/// made.
async fn claim_ahead<C: Channel>(
    channel: Arc<C>,
    config: QueueConfig,
    shutdown: CancellationToken,
    claims: Sender<Claimed<C::Due, C::Done>>,
    releases: TaskTracker,
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
            Ok(claim) if !claim.due.is_empty() => {
                let held = claim.hold.map(|hold| {
                    let held = Arc::new(Held::new(hold, claim.due.len()));
                    let (deadline, name) = (Arc::clone(&held), channel.name());
                    releases.spawn(async move {
                        tokio::time::sleep_until(at + HOLD).await;
                        if let Some(Kept::Release(release)) = deadline.release() {
                            release.run(name).await;
                        }
                    });
                    held
                });
                for (index, (permit, due)) in permits.zip(claim.due).enumerate() {
                    let held = held.as_ref().map(|held| (Arc::clone(held), index));
                    permit.send(Claimed { due, at, held });
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

/// Keeps finished attempts at leased items, a batch at a time, until every sender is gone.
/// A batch that cannot be kept is attempted again once its claims' lease ends: at least once.
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

/// Claims what `channel` has due at its time (a leased claim, up to 10), attempts each in turn
/// and keeps the outcomes: what was kept, in the claim's order. For tests of a channel.
#[cfg(test)]
pub(crate) async fn work_once<C: Channel>(channel: &C) -> Vec<C::Done> {
    let claim = channel
        .claim(channel.now(), Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert!(claim.hold.is_none(), "work_once takes leased claims only");
    let mut done = Vec::new();
    for due in claim.due {
        done.push(channel.attempt(due).await.expect("kept"));
    }
    channel.keep(&done).await.expect("keep");
    done
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

    /// A queue of `items` claimed all at once, each attempt taking `takes`; with `held`, its
    /// claims are held, and each release's attempts and open items recorded.
    #[derive(Default)]
    struct Slow {
        items: Mutex<Vec<u32>>,
        takes: Duration,
        attempted: Mutex<Vec<u32>>,
        kept: Mutex<Vec<u32>>,
        held: bool,
        released: Arc<Mutex<Vec<Released>>>,
        due: Notify,
    }

    /// A release's attempts and open items.
    type Released = (Vec<u32>, Vec<usize>);

    struct Recorded(Arc<Mutex<Vec<Released>>>);

    #[async_trait]
    impl Hold<u32> for Recorded {
        async fn release(self: Box<Self>, done: &[u32], open: &[usize]) -> Result<(), StoreError> {
            self.0.lock().expect("lock").push((done.to_vec(), open.to_vec()));
            Ok(())
        }
    }

    #[async_trait]
    impl Channel for Slow {
        type Due = u32;
        type Done = u32;

        fn name(&self) -> &'static str {
            "slow"
        }

        async fn claim(&self, _: DateTime<Utc>, _: Duration, limit: usize) -> Result<Claim<u32, u32>, StoreError> {
            let mut items = self.items.lock().expect("lock");
            let n = items.len().min(limit);
            let due = items.drain(..n).collect();
            Ok(Claim {
                due,
                hold: self
                    .held
                    .then(|| Box::new(Recorded(Arc::clone(&self.released))) as Box<dyn Hold<u32>>),
            })
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
            ..Slow::default()
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

    /// Works `items` as held claims of `batch`, each attempt taking `takes`, one at a time,
    /// for `secs`: the releases, and what was kept as leased.
    async fn held(items: Vec<u32>, batch: usize, takes: Duration, secs: u64) -> (Vec<Released>, Vec<u32>) {
        let channel = Arc::new(Slow {
            items: Mutex::new(items),
            takes,
            held: true,
            ..Slow::default()
        });
        let config = QueueConfig {
            lease: Duration::from_secs(60),
            batch,
            concurrency: 1,
            timeout: Duration::from_secs(10),
        };
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(run(Arc::clone(&channel), config, shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        shutdown.cancel();
        worker.await.expect("the worker ends");
        let released = channel.released.lock().expect("lock").clone();
        let kept = channel.kept.lock().expect("lock").clone();
        (released, kept)
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_claim_is_released_once_with_all_its_attempts_when_the_last_ends() {
        let (released, kept) = held(vec![1, 2, 3, 4, 5], 3, Duration::from_millis(100), 5).await;
        assert_eq!(released, [(vec![1, 2, 3], vec![]), (vec![4, 5], vec![])]);
        assert!(kept.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_claim_still_in_flight_at_its_deadline_leases_the_rest() {
        // 400 ms an attempt: at the one-second deadline, 1 and 2 are done, 3 is in flight
        // and 4 waits; both are leased, and their attempts are kept as leased ones.
        let (released, kept) = held(vec![1, 2, 3, 4], 4, Duration::from_millis(400), 5).await;
        assert_eq!(released, [(vec![1, 2], vec![2, 3])]);
        assert_eq!(kept, [3, 4]);
    }
}
