//! Sharing work among the replicas of a service: a fixed set of units (a feed's partitions) is
//! split among the replicas alive, each unit claimed by one replica at a time through a lease
//! in the service's PostgreSQL database, renewed while the replica lives, released when it shuts
//! down, and taken over when it dies (its lease expires).
//!
//! Every replica keeps a membership row alive; each aims at its fair share,
//! ceil(units / members): it releases the units above it (so a replica that joins finds some
//! free) and claims free or expired ones up to it. A unit may briefly run on two replicas (one
//! that lost its lease without knowing yet): the work must be safe under that, as a consumer's
//! checkpoint claim is (only one of them commits a batch).
//!
//! The tables are the service's migration's to create:
//! `feed_members (holder text PRIMARY KEY, expires_at timestamptz NOT NULL)` and
//! `feed_leases (unit text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL)`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How a replica takes part.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This replica's name among the others (unique per process).
    pub holder: String,
    /// How long a lease or a membership lasts without renewal: a dead replica's units are taken
    /// over after it. Renewed every third of it.
    pub ttl: Duration,
}

/// Starts the work of a unit until the token is cancelled.
pub type Start = Arc<dyn Fn(&str, CancellationToken) + Send + Sync>;

/// Shares `units` among the replicas until `shutdown`, starting each unit this replica holds
/// with `start` (and cancelling it when the unit is lost or released); at shutdown releases
/// everything.
pub fn spawn(pool: PgPool, config: LeaseConfig, units: Vec<String>, start: Start, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut running: BTreeMap<String, CancellationToken> = BTreeMap::new();
        let every = config.ttl / 3;
        loop {
            if let Err(err) = round(&pool, &config, &units, &start, &mut running, &shutdown).await {
                tracing::warn!(error = %err, holder = %config.holder, "sharing work among replicas failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        for token in running.values() {
            token.cancel();
        }
        if let Err(err) = release_all(&pool, &config.holder).await {
            tracing::warn!(error = %err, "releasing leases at shutdown failed; they expire");
        }
    });
}

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// One round: membership renewed, leases renewed, the share adjusted.
async fn round(
    pool: &PgPool,
    config: &LeaseConfig,
    units: &[String],
    start: &Start,
    running: &mut BTreeMap<String, CancellationToken>,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let ttl = seconds(config.ttl);
    sqlx::query(
        "INSERT INTO feed_members (holder, expires_at) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
    )
    .bind(&config.holder)
    .bind(ttl)
    .execute(pool)
    .await?;
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_members WHERE expires_at > now()")
        .fetch_one(pool)
        .await?;
    let mut held: Vec<String> = sqlx::query_scalar(
        "UPDATE feed_leases SET expires_at = now() + make_interval(secs => $2) \
         WHERE holder = $1 AND expires_at > now() RETURNING unit",
    )
    .bind(&config.holder)
    .bind(ttl)
    .fetch_all(pool)
    .await?;
    held.retain(|unit| units.contains(unit));
    // Lost (expired and taken, or never confirmed): stop them.
    running.retain(|unit, token| {
        let keep = held.contains(unit);
        if !keep {
            tracing::warn!(unit = %unit, holder = %config.holder, "lease lost; stopping its work");
            token.cancel();
        }
        keep
    });
    let members = usize::try_from(members.max(1)).unwrap_or(1);
    let target = units.len().div_ceil(members);
    // Above the share: release the last ones, for a replica that joined.
    while held.len() > target {
        let Some(unit) = held.pop() else { break };
        if let Some(token) = running.remove(&unit) {
            token.cancel();
        }
        sqlx::query("DELETE FROM feed_leases WHERE unit = $1 AND holder = $2")
            .bind(&unit)
            .bind(&config.holder)
            .execute(pool)
            .await?;
        tracing::info!(unit = %unit, holder = %config.holder, "lease released to share the work");
    }
    // Below it: claim free or expired units, starting at a place of this holder's own so that
    // replicas starting together do not all contend for the same ones.
    if held.len() < target {
        let offset = crate::partition::partition_of(&config.holder, u32::try_from(units.len()).unwrap_or(1));
        let offset = usize::try_from(offset).unwrap_or(0);
        for i in 0..units.len() {
            if held.len() >= target {
                break;
            }
            let unit = &units[(offset + i) % units.len()];
            if held.contains(unit) {
                continue;
            }
            let claimed: Option<String> = sqlx::query_scalar(
                "INSERT INTO feed_leases (unit, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3)) \
                 ON CONFLICT (unit) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE feed_leases.expires_at <= now() OR feed_leases.holder = excluded.holder RETURNING unit",
            )
            .bind(unit)
            .bind(&config.holder)
            .bind(ttl)
            .fetch_optional(pool)
            .await?;
            if claimed.is_some() {
                tracing::info!(unit = %unit, holder = %config.holder, "lease taken");
                held.push(unit.clone());
            }
        }
    }
    for unit in &held {
        if !running.contains_key(unit) {
            let token = shutdown.child_token();
            start(unit, token.clone());
            running.insert(unit.clone(), token);
        }
    }
    metrics::gauge!("crm_leases_held", "holder" => config.holder.clone())
        .set(f64::from(u32::try_from(held.len()).unwrap_or(u32::MAX)));
    Ok(())
}

async fn release_all(pool: &PgPool, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM feed_leases WHERE holder = $1")
        .bind(holder)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM feed_members WHERE holder = $1")
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}
