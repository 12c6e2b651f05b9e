//! Portfolio reassignment: every contact and company of one user moved to others, round-robin,
//! in audited batches.

use crm_platform::error::Violations;
use crm_platform::{ApiError, Principal, UserId};

use super::ContactApp;
use super::events::owner_changed;
use crate::store::{Batch, Moved, Owned};

/// Most users one reassignment may spread a portfolio over.
pub(crate) const MAX_REASSIGN_TARGETS: usize = 100;
/// Records moved per transaction by a reassignment.
const REASSIGN_BATCH: usize = 500;

/// What a portfolio reassignment moved (or would move, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub dry_run: bool,
    /// Per receiving user: contacts and companies.
    pub shares: Vec<(UserId, u64, u64)>,
}

impl Reassignment {
    pub fn contacts(&self) -> u64 {
        self.shares.iter().map(|s| s.1).sum()
    }

    pub fn companies(&self) -> u64 {
        self.shares.iter().map(|s| s.2).sum()
    }
}

/// How `count` records split round-robin over `targets` users, the first ones taking the
/// remainder, as a real run starting at offset 0 would.
fn round_robin_shares(count: u64, targets: usize) -> Vec<u64> {
    let n = u64::try_from(targets).unwrap_or(1).max(1);
    (0..n).map(|i| count / n + u64::from(i < count % n)).collect()
}

impl ContactApp {
    /// Moves every contact and company `from` owns to `to` (round-robin over several), in
    /// batches committed with their audit entries. An interrupted run leaves every record
    /// owned by exactly one user; running it again moves the rest.
    pub async fn reassign_owner(
        &self,
        who: &Principal,
        from: &UserId,
        to: &[UserId],
        dry_run: bool,
    ) -> Result<Reassignment, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "only admins and managers reassign portfolios",
            ));
        }
        let mut violations = Violations::new("");
        if to.is_empty() {
            violations.add("to_users", "name at least one user");
        }
        if to.len() > MAX_REASSIGN_TARGETS {
            violations.add("to_users", format!("at most {MAX_REASSIGN_TARGETS} users"));
        }
        if to.contains(from) {
            violations.add("to_users", "must not contain from_user");
        }
        if to.iter().enumerate().any(|(i, u)| to[..i].contains(u)) {
            violations.add("to_users", "lists a user twice");
        }
        violations.finish()?;
        let mut shares: Vec<(UserId, u64, u64)> = to.iter().map(|u| (u.clone(), 0, 0)).collect();
        for what in [Owned::Contacts, Owned::Companies] {
            let moved = if dry_run {
                let count = self
                    .store
                    .count_owned(&who.tenant, what, from)
                    .await
                    .map_err(|err| err.into_api("records"))?;
                round_robin_shares(count, to.len())
            } else {
                self.move_all(who, what, from, to).await?
            };
            for (share, n) in shares.iter_mut().zip(moved) {
                match what {
                    Owned::Contacts => share.1 += n,
                    Owned::Companies => share.2 += n,
                }
            }
        }
        tracing::info!(tenant = %who.tenant, actor = %who.user, from = %from, targets = to.len(), dry_run, "portfolio reassigned");
        Ok(Reassignment { dry_run, shares })
    }

    async fn move_all(&self, who: &Principal, what: Owned, from: &UserId, to: &[UserId]) -> Result<Vec<u64>, ApiError> {
        let mut totals = vec![0_u64; to.len()];
        let publish = |moved: &Moved| owner_changed(&who.tenant, moved.of, from, &moved.to, &who.user, self.now());
        let mut offset = 0;
        loop {
            let batch = self
                .store
                .reassign_batch(
                    &who.tenant,
                    &Batch {
                        what,
                        from,
                        to,
                        offset,
                        limit: REASSIGN_BATCH,
                        actor: &who.user,
                        publish: &publish,
                    },
                )
                .await
                .map_err(|err| err.into_api("records"))?;
            let moved: u64 = batch.iter().sum();
            if moved == 0 {
                return Ok(totals);
            }
            for (total, n) in totals.iter_mut().zip(batch) {
                *total += n;
            }
            offset += usize::try_from(moved).unwrap_or(usize::MAX);
        }
    }
}
