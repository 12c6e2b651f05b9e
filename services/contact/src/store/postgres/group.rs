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

use super::PgContactStore;
use super::duplicates::{Probe, candidates};
use super::write::write_rows;
use crate::domain::{AuditRecord, Contact};
use crate::store::{Created, StoreError, WriteBatch};

/// Creates of one tenant written in one transaction at most.
pub(super) const GROUP_MAX: usize = 64;

/// Group transactions running at once for a pool of `connections`: enough to keep the
/// database busy while a group commits, few enough to leave connections for reads. They
/// write different tenants' groups: one tenant's creates are written by one writer at a
/// time (see [`Queue::busy`]).
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
    /// Writer tasks running; each takes groups until none is left it may take.
    writers: usize,
    /// The tenants whose group a writer is writing. A tenant's next group waits for that
    /// writer: two writers of one tenant only split its creates into smaller groups, whose
    /// transactions then contend for the same index pages and commit (measured on 2 cores:
    /// 1 writer 1464-1741 creates/s, 2 writers 1187-1405/s, 3 writers 1133/s).
    busy: Vec<TenantId>,
}

impl Queue {
    /// A writer is done with `tenant`.
    fn release(&mut self, tenant: Option<TenantId>) {
        if let Some(done) = tenant {
            self.busy.retain(|t| *t != done);
        }
    }
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

/// Takes the next group off the queue: the first create of a tenant no writer is busy with,
/// and those after it of the same tenant and email rule, in arrival order, up to
/// [`GROUP_MAX`]; marks the tenant busy. None when every waiting create's tenant is busy.
fn take_group(queue: &mut Queue) -> Option<Vec<Pending>> {
    let Queue { pending, busy, .. } = queue;
    let first = pending.iter().position(|p| !busy.contains(&p.tenant))?;
    let first = pending.remove(first)?;
    busy.push(first.tenant.clone());
    let mut group = vec![first];
    let mut i = 0;
    while i < pending.len() && group.len() < GROUP_MAX {
        if pending[i].tenant == group[0].tenant && pending[i].unique_email == group[0].unique_email {
            group.extend(pending.remove(i));
        } else {
            i += 1;
        }
    }
    Some(group)
}

/// A writer's place, and the tenant it is writing: given back when it ends, whether it ends
/// normally or by a panic.
struct WriterSlot {
    groups: Groups,
    tenant: Option<TenantId>,
    released: bool,
}

impl WriterSlot {
    /// The writer's next group, or None (its place given back) when there is none it may
    /// take; decided under the queue's lock, so a create queued meanwhile is either taken
    /// here or starts a writer.
    fn next_group(&mut self) -> Option<Vec<Pending>> {
        let mut queue = self.groups.lock();
        queue.release(self.tenant.take());
        let Some(group) = take_group(&mut queue) else {
            queue.writers -= 1;
            self.released = true;
            return None;
        };
        self.tenant = group.first().map(|p| p.tenant.clone());
        Some(group)
    }
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        if !self.released {
            let mut queue = self.groups.lock();
            queue.release(self.tenant.take());
            queue.writers -= 1;
        }
    }
}

impl PgContactStore {
    /// Queues a create for the next group and waits for its outcome; starts a writer when
    /// fewer than the maximum are running and none is busy with the tenant.
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
            let start = queue.writers < self.groups.max_writers && !queue.busy.contains(tenant);
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

    /// A writer: writes groups until none is left that it may take, then ends.
    async fn write_groups(self) {
        let mut slot = WriterSlot {
            groups: self.groups.clone(),
            tenant: None,
            released: false,
        };
        while let Some(group) = slot.next_group() {
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

    use crate::store::conformance::{audit, contact, fields, tenant};

    fn queued(queue: &mut Queue, of: &str) -> oneshot::Receiver<Result<Created<Contact>, StoreError>> {
        let (reply, outcome) = oneshot::channel();
        queue.pending.push_back(Pending {
            tenant: tenant(of),
            unique_email: false,
            contact: contact(fields("A", "B", "a@example.com")),
            audit: audit(),
            span: tracing::Span::none(),
            reply,
        });
        outcome
    }

    fn tenants(group: &[Pending]) -> Vec<&str> {
        group.iter().map(|p| p.tenant.as_str()).collect()
    }

    /// A tenant's creates wait for the writer busy with it; other tenants' are taken.
    #[test]
    fn one_writer_at_a_time_per_tenant() {
        let mut queue = Queue::default();
        let _waiting: Vec<_> = ["a", "a", "b", "a", "b"]
            .iter()
            .map(|t| queued(&mut queue, t))
            .collect();
        let first = take_group(&mut queue).expect("a's group");
        assert_eq!(tenants(&first), ["a", "a", "a"]);
        let second = take_group(&mut queue).expect("b's group");
        assert_eq!(tenants(&second), ["b", "b"]);
        let _more = queued(&mut queue, "a");
        assert!(take_group(&mut queue).is_none(), "a is being written");
        queue.release(Some(tenant("a")));
        assert_eq!(tenants(&take_group(&mut queue).expect("a again")), ["a"]);
        assert_eq!(queue.busy, [tenant("b"), tenant("a")]);
    }

    #[test]
    fn writers_grow_with_the_pool_within_bounds() {
        assert_eq!(writers_for(1), 1);
        assert_eq!(writers_for(16), 2);
        assert_eq!(writers_for(64), 8);
        assert_eq!(writers_for(400), 8);
    }
}
