//! Moving a user's portfolio (leads not yet converted, open deals, open tasks) to one user or
//! round-robin over several, in batches, each change audited (OwnerChanged).

use crm_platform::{ApiError, UserId};

use crm_proto::crm::pipeline::v1 as pb;

use super::{Caller, Owned, PipelineApp, Rec};
use crate::domain::{Deal, Lead, LeadStatus, Task};
use crate::store::{Filter, ListQuery, StoreError, Write};

/// Most users one portfolio may be shared between.
const MAX_REASSIGN_TARGETS: usize = 100;

/// Records moved per transaction.
const BATCH: usize = 200;
/// Times a batch is read again because records in it changed meanwhile, before giving up
/// (what moved so far stays moved; calling again moves the rest).
const MAX_STALE: usize = 20;

/// What one receiving user got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    pub user: String,
    pub leads: i64,
    pub deals: i64,
    pub tasks: i64,
}

/// What a reassignment moved (or would move).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub leads: i64,
    pub deals: i64,
    pub tasks: i64,
    pub shares: Vec<Share>,
    pub dry_run: bool,
}

/// A kind of record a portfolio holds: which of them move, and where they are counted.
trait Portfolio: Owned {
    fn moves(&self) -> bool;
    fn count(share: &mut Share) -> &mut i64;
}

impl Portfolio for Lead {
    fn moves(&self) -> bool {
        self.status != LeadStatus::Converted
    }
    fn count(share: &mut Share) -> &mut i64 {
        &mut share.leads
    }
}

impl Portfolio for Deal {
    fn moves(&self) -> bool {
        self.status == crate::domain::DealStatus::Open
    }
    fn count(share: &mut Share) -> &mut i64 {
        &mut share.deals
    }
}

impl Portfolio for Task {
    fn moves(&self) -> bool {
        self.status == crate::domain::TaskStatus::Open
    }
    fn count(share: &mut Share) -> &mut i64 {
        &mut share.tasks
    }
}

impl PipelineApp {
    /// Moves every lead (not converted), open deal and open task `from` owns. Resumable: a
    /// run cut off after some batches leaves the rest with `from`, and running it again
    /// moves the rest. A dry run changes nothing and reports what would move.
    pub async fn reassign_owner(
        &self,
        caller: &Caller,
        from: &str,
        to: &[String],
        dry_run: bool,
    ) -> Result<Moved, ApiError> {
        if !caller.who.writes_all() {
            return Err(ApiError::permission_denied(
                "only managers and admins reassign portfolios",
            ));
        }
        UserId::parse(from).map_err(|r| ApiError::invalid_field("from_user", r))?;
        if to.is_empty() {
            return Err(ApiError::invalid_field("to_users", "name at least one user"));
        }
        if to.len() > MAX_REASSIGN_TARGETS {
            return Err(ApiError::invalid_field(
                "to_users",
                format!("at most {MAX_REASSIGN_TARGETS} items, not {}", to.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, user) in to.iter().enumerate() {
            UserId::parse(user).map_err(|r| ApiError::invalid_field(format!("to_users[{i}]"), r))?;
            if !seen.insert(user) {
                return Err(ApiError::invalid_field(format!("to_users[{i}]"), "lists a user twice"));
            }
            if user == from {
                return Err(ApiError::invalid_field(
                    format!("to_users[{i}]"),
                    "is the user records move from",
                ));
            }
        }
        let mut moved = Moved {
            shares: to
                .iter()
                .map(|user| Share {
                    user: user.clone(),
                    ..Share::default()
                })
                .collect(),
            dry_run,
            ..Moved::default()
        };
        let mut turn = 0;
        moved.leads = self
            .move_kind::<Lead>(caller, from, dry_run, &mut moved.shares, &mut turn)
            .await?;
        moved.deals = self
            .move_kind::<Deal>(caller, from, dry_run, &mut moved.shares, &mut turn)
            .await?;
        moved.tasks = self
            .move_kind::<Task>(caller, from, dry_run, &mut moved.shares, &mut turn)
            .await?;
        Ok(moved)
    }

    async fn move_kind<T: Portfolio>(
        &self,
        caller: &Caller,
        from: &str,
        dry_run: bool,
        shares: &mut [Share],
        turn: &mut usize,
    ) -> Result<i64, ApiError> {
        let mut total = 0;
        let mut after = None;
        let mut stale = 0;
        loop {
            let query = ListQuery {
                kind: T::KIND,
                filters: vec![Filter::Owner(from.to_owned())],
                after,
                limit: BATCH,
            };
            let batch: Vec<(i64, Rec<T>)> = self.list_records(caller.tenant(), &query).await?;
            let Some(last) = batch.last() else {
                return Ok(total);
            };
            let next_after = Some((last.0, last.1.id));
            let mut write = Write::default();
            let mut receivers = Vec::new();
            for (_, current) in batch.iter().filter(|(_, r)| r.body.moves()) {
                let share = &mut shares[*turn % shares.len()];
                *turn += 1;
                receivers.push(share.user.clone());
                let mut body = current.body.clone();
                *body.owner_mut() = share.user.clone();
                let moved = pb::OwnerChanged {
                    resource: format!("{}/{}", T::KIND.table(), current.id),
                    old_owner: from.to_owned(),
                    new_owner: share.user.clone(),
                };
                write.absorb(self.revise(caller, T::KIND, current, body, |_| moved)?.1);
            }
            let count = i64::try_from(write.puts.len()).unwrap_or(i64::MAX);
            if !dry_run && count > 0 {
                match self.store.write(caller.tenant(), &write).await {
                    Ok(()) => {}
                    // A record of the batch changed meanwhile: read the batch again.
                    Err(StoreError::Stale) if stale < MAX_STALE => {
                        stale += 1;
                        *turn -= receivers.len();
                        continue;
                    }
                    Err(err) => return Err(super::store_error(err)),
                }
            }
            for user in receivers {
                if let Some(share) = shares.iter_mut().find(|s| s.user == user) {
                    *T::count(share) += 1;
                }
            }
            total += count;
            // Moved records no longer match the owner filter; the cursor skips the ones that
            // stay (closed deals, completed tasks, converted leads), and on a dry run all.
            after = next_after;
        }
    }
}
