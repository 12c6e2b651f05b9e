//! Group commit of contact creates. A create is mostly fixed cost: the round trips of its
//! transaction, the planning of its statements and the commit; its rows are a small part.
//! Creates that arrive while a transaction is running are therefore queued and written
//! together by the next one (up to [`GROUP_MAX`] of one tenant): their unique keys locked
//! and checked, their rows, keys, audit entries and events written, and the holders of their
//! match keys found, in one call of contact_write, as a single create makes. The duplicate
//! candidates among those holders are read, and the creates answered, in a task of their own
//! while the writer takes the next group.
//!
//! Every caller still gets its own outcome: a group that cannot be written as a whole (one
//! of its creates claims an email address another contact holds, names an unknown company,
//! ...) rolls back and its creates are written one by one, so each fails or succeeds on its
//! own. A create is answered after its transaction commits. The writing runs in a task of its
//! own, so a caller that goes away does not take the others' writes with it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crm_platform::TenantId;
use crm_platform::telemetry::current_traceparent;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::{PgContactStore, Probe, candidates, write_rows};
use crate::domain::{AuditRecord, Contact};
use crate::store::{Created, StoreError, WriteBatch};

/// Creates of one tenant written in one transaction at most.
pub(super) const GROUP_MAX: usize = 64;

/// Group transactions running at once for a pool of `connections`: enough to keep the
/// database busy while a group commits, few enough to leave connections for reads.
pub(super) fn writers_for(connections: u32) -> usize {
    usize::try_from(connections / 8).unwrap_or(1).clamp(1, 8)
}

type Reply = oneshot::Sender<Result<Created<Contact>, StoreError>>;

/// A create waiting for its group.
struct Pending {
    tenant: TenantId,
    unique_email: bool,
    contact: Contact,
    audit: AuditRecord,
    /// The request's span: its trace goes with the create's event.
    span: tracing::Span,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Pending>,
    /// Writer tasks running; each takes groups until the queue is empty.
    writers: usize,
}

/// The queue of creates waiting for a group, shared by the clones of a store.
#[derive(Clone)]
pub(super) struct Groups {
    queue: Arc<Mutex<Queue>>,
    max_writers: usize,
}

impl Groups {
    pub(super) fn new(max_writers: usize) -> Self {
        Self {
            queue: Arc::default(),
            max_writers: max_writers.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent whenever the lock is released, so a poisoned lock is usable.
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes the next group off the queue: the first create and those after it of the same
/// tenant and email rule, in arrival order, up to [`GROUP_MAX`].
fn take_group(pending: &mut VecDeque<Pending>) -> Vec<Pending> {
    let Some(first) = pending.pop_front() else {
        return Vec::new();
    };
    let mut group = vec![first];
    let mut i = 0;
    while i < pending.len() && group.len() < GROUP_MAX {
        if pending[i].tenant == group[0].tenant && pending[i].unique_email == group[0].unique_email {
            group.extend(pending.remove(i));
        } else {
            i += 1;
        }
    }
    group
}

/// Gives a writer's place back if its task ends without emptying the queue (a panic).
struct WriterSlot {
    groups: Groups,
    released: bool,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        if !self.released {
            self.groups.lock().writers -= 1;
        }
    }
}

impl PgContactStore {
    /// Queues a create for the next group and waits for its outcome; starts a writer when
    /// fewer than the maximum are running.
    pub(super) async fn create_grouped(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        audit: &AuditRecord,
        unique_email: bool,
    ) -> Result<Created<Contact>, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let start_writer = {
            let mut queue = self.groups.lock();
            queue.pending.push_back(Pending {
                tenant: tenant.clone(),
                unique_email,
                contact: contact.clone(),
                audit: audit.clone(),
                span: tracing::Span::current(),
                reply,
            });
            let start = queue.writers < self.groups.max_writers;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start_writer {
            let store = self.clone();
            tokio::spawn(async move { store.write_groups().await });
        }
        outcome
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// A writer: writes groups until the queue is empty, then ends (deciding so under the
    /// queue's lock, so a create queued meanwhile either is taken or starts a writer).
    async fn write_groups(self) {
        let mut slot = WriterSlot {
            groups: self.groups.clone(),
            released: false,
        };
        loop {
            let group = {
                let mut queue = self.groups.lock();
                if queue.pending.is_empty() {
                    queue.writers -= 1;
                    slot.released = true;
                    return;
                }
                take_group(&mut queue.pending)
            };
            self.write_group(group).await;
        }
    }

    /// Writes a group in one transaction, or its creates one by one if it cannot be written
    /// as a whole; answers each create.
    async fn write_group(&self, group: Vec<Pending>) {
        let Some(first) = group.first() else { return };
        let (tenant, unique_email) = (first.tenant.clone(), first.unique_email);
        let mut replies = Vec::with_capacity(group.len());
        let mut spans = Vec::with_capacity(group.len());
        let mut batch = WriteBatch {
            unique_email,
            creates: Vec::with_capacity(group.len()),
            updates: Vec::new(),
        };
        for pending in group {
            replies.push(pending.reply);
            spans.push(pending.span);
            batch.creates.push((pending.contact, pending.audit));
        }
        if batch.creates.len() > 1 {
            match self.insert_together(&tenant, &batch, &spans).await {
                Ok(held) => {
                    // The group is written: its candidates are read, and its creates
                    // answered, while this writer takes the next group.
                    let store = self.clone();
                    tokio::spawn(async move { store.answer(&tenant, batch, held, replies).await });
                    return;
                }
                Err(err) => tracing::debug!(error = %err, creates = batch.creates.len(), "group written one by one"),
            }
        }
        for ((reply, span), (contact, audit)) in replies.into_iter().zip(spans).zip(&batch.creates) {
            let outcome = self
                .create_one(&tenant, contact, None, audit, unique_email)
                .instrument(span)
                .await;
            let _ = reply.send(outcome);
        }
    }

    /// Writes the creates of `batch` in one call (contact_write pins the tenant and is a
    /// transaction of its own); returns the holders of each create's match keys.
    async fn insert_together(
        &self,
        tenant: &TenantId,
        batch: &WriteBatch,
        spans: &[tracing::Span],
    ) -> Result<Vec<Vec<Uuid>>, StoreError> {
        let traces: Vec<String> = spans
            .iter()
            .map(|span| span.in_scope(current_traceparent).unwrap_or_default())
            .collect();
        let keys: Vec<_> = batch
            .creates
            .iter()
            .map(|(contact, _)| contact.fields.match_keys())
            .collect();
        let probes: Vec<Probe<'_>> = batch
            .creates
            .iter()
            .zip(&keys)
            .map(|((contact, _), keys)| Probe {
                except: Some(contact.id),
                keys,
            })
            .collect();
        let mut conn = self.pool.acquire().await?;
        write_rows(&mut conn, tenant, batch, &traces, &probes).await
    }

    /// Answers the creates of a written group, with the live contacts among the holders of
    /// their keys as candidates. The creates have committed, so a failed read of the
    /// candidates answers them without candidates (and says so in the log) rather than as
    /// failed: a client retrying a create that succeeded would make a second contact.
    async fn answer(&self, tenant: &TenantId, batch: WriteBatch, held: Vec<Vec<Uuid>>, replies: Vec<Reply>) {
        let read = async {
            let mut conn = self.pool.acquire().await?;
            candidates(&mut conn, tenant, held).await
        };
        let similar = match read.await {
            Ok(similar) => similar,
            Err(err) => {
                tracing::warn!(error = %err, creates = batch.creates.len(), "duplicate candidates not read");
                vec![Vec::new(); batch.creates.len()]
            }
        };
        for ((reply, (contact, _)), similar) in replies.into_iter().zip(batch.creates).zip(similar) {
            let _ = reply.send(Ok(Created {
                similar,
                ..Created::new(contact, false)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_grow_with_the_pool_within_bounds() {
        assert_eq!(writers_for(1), 1);
        assert_eq!(writers_for(16), 2);
        assert_eq!(writers_for(64), 8);
        assert_eq!(writers_for(400), 8);
    }
}
