//! Following the other services' feeds (`pipeline`, `contact`): each event becomes fact
//! changes, and a batch of events, the skipped and parked among them, the feed's watermark and
//! the checkpoint commit in one transaction (exactly-once effect; a replay from sequence 0 into
//! an empty database gives the same facts).
//!
//! An event of a type this service does not know is skipped and counted; one it knows but
//! cannot decode (or whose ids do not parse) is parked with the reason, and the feed goes on:
//! never a crash loop.

pub mod contact;
pub mod pipeline;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::consumer::{Sink, payload};
use crm_platform::partition::Partition;
use crm_proto::crm::events::v1 as events;
use crm_proto::prost::Name;
use uuid::Uuid;

use crate::domain::*;
use crate::store::{AnalyticsStore, IngestBatch};

/// What an event comes to.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Apply(Vec<FactChange>),
    /// A type this service knows and keeps nothing of.
    Ignore,
    /// A type this service does not know.
    Skip,
    /// A known type that cannot be applied, and why.
    Park(String),
}

impl Decision {
    /// The decision of what a feed's parser made of an event: None when the type is not one it
    /// applies, which `unused` tells apart from one it does not know.
    pub(crate) fn of(
        changes: Option<Result<Vec<FactChange>, String>>,
        event: &events::Event,
        unused: &[String],
    ) -> Self {
        match changes {
            Some(Ok(changes)) => Decision::Apply(changes),
            Some(Err(reason)) => Decision::Park(reason),
            None if unused.contains(&event.r#type) => Decision::Ignore,
            None => Decision::Skip,
        }
    }
}

/// A feed this service follows: its checkpoint, its producer and what its events ask.
#[derive(Clone, Copy)]
pub struct Feed {
    /// The checkpoint name of the subscription.
    pub consumer: &'static str,
    /// The producer name in the feed's envelopes: the package of its messages.
    pub source: &'static str,
    pub decide: fn(&events::Event) -> Decision,
}

/// The pipeline service's feed.
pub const PIPELINE: Feed = Feed {
    consumer: pipeline::CONSUMER,
    source: pipeline::SOURCE,
    decide: pipeline::decide,
};

/// The contact service's feed.
pub const CONTACT: Feed = Feed {
    consumer: contact::CONSUMER,
    source: contact::SOURCE,
    decide: contact::decide,
};

/// The checkpoint name of `partition` of a feed followed under `consumer`
/// (`analytics<-pipeline@3/8`).
pub fn partition_consumer(consumer: &str, partition: Partition) -> String {
    format!("{consumer}@{partition}")
}

/// Whether the consumer named `consumer` applies `tenant`'s events: a whole feed's does, a
/// partition's when the tenant is in it.
pub fn covers(consumer: &str, tenant: &str) -> bool {
    let Some((_, partition)) = consumer.rsplit_once('@') else {
        return true;
    };
    let parsed = partition
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
    match parsed {
        Some((index, count)) => crm_platform::partition::partition_of(tenant, count) == index,
        None => true,
    }
}

/// The id of `name` if it is a resource of `collection` (`deals/{id}`).
pub(crate) fn id_of(name: &str, collection: &str) -> Result<Uuid, String> {
    name.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| format!("`{name}` is not a {collection} resource name"))
}

/// As [`id_of`], None for an empty name.
pub(crate) fn optional_id(name: &str, collection: &str) -> Result<Option<Uuid>, String> {
    if name.is_empty() {
        Ok(None)
    } else {
        id_of(name, collection).map(Some)
    }
}

pub(crate) fn time(stamp: Option<&prost_types::Timestamp>, field: &str) -> Result<DateTime<Utc>, String> {
    let stamp = stamp.ok_or_else(|| format!("{field} is missing"))?;
    crm_platform::time::from_timestamp(stamp).map_err(|reason| format!("{field} {reason}"))
}

/// The payload of `event` as `M` if it is one: Some(Err) when it is but does not decode.
pub(crate) fn decoded<M: Name + Default>(event: &events::Event) -> Option<Result<M, String>> {
    payload::<M>(event).map(|m| m.map_err(|e| format!("the payload does not decode: {e}")))
}

/// A usage report (published on every producer's feed), if `event` is one.
pub(crate) fn usage(event: &events::Event) -> Option<Result<Vec<FactChange>, String>> {
    let report = decoded::<events::UsageReported>(event)?;
    Some(report.and_then(|r| {
        let day =
            chrono::NaiveDate::parse_from_str(&r.day, "%Y-%m-%d").map_err(|_| format!("`{}` is not a day", r.day))?;
        if r.requests < 0 || r.changes < 0 || r.changes > r.requests {
            return Err(format!(
                "{} requests with {} changes is not a count",
                r.requests, r.changes
            ));
        }
        Ok(vec![FactChange::Usage(UsageFact {
            user: r.user,
            area: r.area,
            day,
            requests: r.requests,
            changes: r.changes,
        })])
    }))
}

/// The batch a run of `source`'s events comes to.
pub fn batch_of(
    source: &str,
    decide: fn(&events::Event) -> Decision,
    events: &[events::Event],
    now: DateTime<Utc>,
) -> IngestBatch {
    let mut batch = IngestBatch {
        source: source.to_owned(),
        events: i64::try_from(events.len()).unwrap_or(i64::MAX),
        ..IngestBatch::default()
    };
    for event in events {
        let tenant = TenantId::parse(&event.tenant);
        let park = |reason: String| Parked {
            source: source.to_owned(),
            sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
            kind: event.r#type.clone(),
            reason,
            park_time: now,
        };
        match (tenant, decide(event)) {
            (Err(err), _) => {
                ::metrics::counter!("crm_analytics_events_parked_total", "source" => source.to_owned()).increment(1);
                batch
                    .parked
                    .push((event.tenant.clone(), park(format!("tenant: {err}"))));
            }
            (Ok(tenant), Decision::Apply(changes)) => {
                batch.changes.extend(changes.into_iter().map(|c| (tenant.clone(), c)));
            }
            (Ok(_), Decision::Ignore) => {}
            (Ok(tenant), Decision::Skip) => {
                ::metrics::counter!("crm_analytics_events_skipped_total", "source" => source.to_owned()).increment(1);
                batch.skipped.push((tenant, event.r#type.clone()));
            }
            (Ok(tenant), Decision::Park(reason)) => {
                ::metrics::counter!("crm_analytics_events_parked_total", "source" => source.to_owned()).increment(1);
                tracing::warn!(sequence = event.sequence, kind = %event.r#type, %reason, "event parked");
                batch.parked.push((tenant.as_str().to_owned(), park(reason)));
            }
        }
    }
    batch.last = events.last().map(|e| {
        let committed = e
            .time
            .as_ref()
            .and_then(|t| crm_platform::time::from_timestamp(t).ok())
            .unwrap_or(now);
        (e.sequence, committed)
    });
    batch
}

/// A consumer's sink: the analytics store, fed one feed's events.
pub struct Ingest {
    store: Arc<dyn AnalyticsStore>,
    feed: Feed,
    clock: Arc<dyn crm_platform::time::Clock>,
}

impl Ingest {
    pub fn new(store: Arc<dyn AnalyticsStore>, feed: Feed, clock: Arc<dyn crm_platform::time::Clock>) -> Self {
        Self { store, feed, clock }
    }
}

#[async_trait]
impl Sink for Ingest {
    async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64> {
        Ok(self.store.checkpoint(consumer).await?)
    }

    async fn apply(&self, consumer: &str, previous: u64, events: &[events::Event]) -> anyhow::Result<bool> {
        let batch = batch_of(self.feed.source, self.feed.decide, events, self.clock.now());
        Ok(self.store.ingest(consumer, previous, &batch).await?)
    }
}
