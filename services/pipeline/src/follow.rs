//! Following the contact service's feed: a merge re-points this service's references to the
//! survivor, an erase removes the person from it (references, the text of records about them,
//! and the payloads of stored events). Each event's changes and the checkpoint commit
//! together, so every change is applied exactly once.

use async_trait::async_trait;
use crm_platform::TenantId;
use crm_platform::consumer::{Sink, payload};
use crm_proto::crm::contact::v1 as contact;
use crm_proto::crm::events::v1 as pb;
use crm_proto::prost::Name;
use uuid::Uuid;

use crate::app::PipelineApp;
use crate::store::{ContactChange, StoreError};

/// The contact events this service follows.
pub fn followed_types() -> Vec<String> {
    vec![
        contact::ContactsMerged::full_name(),
        contact::CompaniesMerged::full_name(),
        contact::ContactErased::full_name(),
    ]
}

/// The checkpoint name of this service's subscription to the contact feed.
pub const CONSUMER: &str = "pipeline<-contact";

/// Attempts at one event when records change under it.
const ATTEMPTS: usize = 10;

fn id(name: &str) -> Option<Uuid> {
    name.rsplit('/').next().and_then(|id| Uuid::parse_str(id).ok())
}

/// What a contact event asks of this service (None: nothing, or a payload that does not
/// decode).
pub fn change_of(event: &pb::Event) -> Option<ContactChange> {
    event.payload.as_ref()?;
    if let Some(merged) = payload::<contact::ContactsMerged>(event) {
        let merged = merged.ok()?;
        return Some(ContactChange::ContactsMerged {
            survivor: id(&merged.survivor)?,
            merged: merged.merged.iter().filter_map(|m| id(m)).collect(),
        });
    }
    if let Some(merged) = payload::<contact::CompaniesMerged>(event) {
        let merged = merged.ok()?;
        return Some(ContactChange::CompaniesMerged {
            survivor: id(&merged.survivor)?,
            merged: merged.merged.iter().filter_map(|m| id(m)).collect(),
        });
    }
    // An erasure names the person by its subject (its payload is not needed).
    if payload::<contact::ContactErased>(event).is_some() {
        return Some(ContactChange::ContactErased {
            contact: id(&event.subject)?,
        });
    }
    None
}

/// The consumer's sink: the pipeline store.
pub struct ContactFeed {
    app: PipelineApp,
}

impl ContactFeed {
    pub fn new(app: PipelineApp) -> Self {
        Self { app }
    }
}

impl ContactFeed {
    /// Applies one event and moves the checkpoint past it; false when the checkpoint moved.
    async fn apply_one(&self, consumer: &str, previous: u64, event: &pb::Event) -> anyhow::Result<bool> {
        let tenant = TenantId::parse(&event.tenant).map_err(|e| anyhow::anyhow!("event tenant: {e}"))?;
        let change = change_of(event);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let writes = match &change {
                Some(change) => self
                    .app
                    .follow_contact_change(&tenant, &event.actor, change)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                None => Vec::new(),
            };
            match self
                .app
                .store()
                .follow(consumer, previous, event.sequence, &writes)
                .await
            {
                Ok(true) if matches!(change, Some(ContactChange::ContactErased { .. })) => {
                    self.app.store().purge_erased().await?;
                    return Ok(true);
                }
                Ok(moved) => return Ok(moved),
                Err(StoreError::Stale) if attempt < ATTEMPTS => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

#[async_trait]
impl Sink for ContactFeed {
    async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64> {
        Ok(self.app.store().checkpoint(consumer).await?)
    }

    async fn apply(&self, consumer: &str, previous: u64, events: &[pb::Event]) -> anyhow::Result<bool> {
        use tracing::Instrument;
        let mut previous = previous;
        for event in events {
            // Every effect of the event (the decision and its writes) sits in its trace.
            let span = crm_platform::consumer::event_span(event);
            if !self.apply_one(consumer, previous, event).instrument(span).await? {
                return Ok(false);
            }
            previous = event.sequence;
        }
        Ok(true)
    }
}
