//! The analytics service's own usage. Every service publishes the usage it counts on its own
//! feed, and analytics ingests the feeds it follows; it does not follow its own, so the outbox
//! its usage reporter publishes on ([`OwnUsage`]) also adds each report to its usage facts, in
//! the transaction that publishes it (nothing counted twice or lost, whatever fails).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::TenantId;
use crm_platform::outbox::{Bounds, NewEvent, Outbox, Scope, StoredEvent};
use crm_platform::partition::Partition;
use crm_proto::crm::events::v1::UsageReported;
use crm_proto::prost::Name;
use tokio::sync::watch;

use crate::domain::UsageFact;
use crate::store::{AnalyticsStore, StoreError, UsageReport};

/// The service's outbox, publishing usage reports as usage facts too.
pub struct OwnUsage {
    store: Arc<dyn AnalyticsStore>,
    outbox: Arc<dyn Outbox>,
}

impl OwnUsage {
    pub fn new(store: Arc<dyn AnalyticsStore>) -> Arc<Self> {
        let outbox = store.outbox();
        Arc::new(Self { store, outbox })
    }
}

/// The usage an event of the reporter's reports, if it is a usage report.
fn usage_of(event: &NewEvent) -> Option<Result<UsageFact, String>> {
    if event.kind != UsageReported::full_name() {
        return None;
    }
    Some((|| {
        let json: serde_json::Value = serde_json::from_str(&event.payload).map_err(|e| e.to_string())?;
        let report: UsageReported = crm_proto::json::from_json(&json, &event.kind)?;
        let day = NaiveDate::parse_from_str(&report.day, "%Y-%m-%d").map_err(|e| e.to_string())?;
        Ok(UsageFact {
            user: report.user,
            area: report.area,
            day,
            requests: report.requests,
            changes: report.changes,
        })
    })())
}

/// `events` per tenant, with the usage they report.
fn reports(events: &[NewEvent]) -> Result<Vec<UsageReport>, sqlx::Error> {
    let mut reports: Vec<UsageReport> = Vec::new();
    for event in events {
        let tenant = TenantId::parse(&event.tenant).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let index = match reports.iter().position(|r| r.tenant == tenant) {
            Some(index) => index,
            None => {
                reports.push(UsageReport {
                    tenant,
                    usage: Vec::new(),
                    events: Vec::new(),
                });
                reports.len() - 1
            }
        };
        if let Some(usage) = usage_of(event) {
            reports[index]
                .usage
                .push(usage.map_err(|reason| sqlx::Error::Protocol(format!("usage report: {reason}")))?);
        }
        reports[index].events.push(event.clone());
    }
    Ok(reports)
}

#[async_trait]
impl Outbox for OwnUsage {
    async fn read(
        &self,
        scope: &Scope,
        after: u64,
        types: &[String],
        partition: Option<Partition>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        self.outbox.read(scope, after, types, partition, limit).await
    }

    async fn bounds(&self) -> Result<Bounds, sqlx::Error> {
        self.outbox.bounds().await
    }

    async fn head(&self) -> Result<u64, sqlx::Error> {
        self.outbox.head().await
    }

    async fn time_at(&self, seq: u64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        self.outbox.time_at(seq).await
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), sqlx::Error> {
        self.store
            .publish_usage(&reports(events)?)
            .await
            .map_err(|err| match err {
                StoreError::Database(err) => err,
                StoreError::Corrupt(what) => sqlx::Error::Protocol(what),
            })
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        self.outbox.prune(before).await
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.outbox.wakeups()
    }
}
