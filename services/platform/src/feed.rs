//! `crm.events.v1.EventFeed` over an [`Outbox`]: the same server for every producing service,
//! which only names its event types (and, while events written in its earlier form are
//! retained, how those render).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crm_proto::crm::events::v1 as pb;
use crm_proto::crm::events::v1::event_feed_server::{EventFeed, EventFeedServer};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::identity::principal;
use crate::outbox::{FeedError, FeedItem, Outbox, Scope, StoredEvent, Until, follow};
use crate::{ApiError, ErrorCode, Role};

/// Renders the payload of a stored event written in a producer's earlier form (see
/// [`StoredEvent::legacy`]) as the protobuf message its type names.
pub type RenderPayload = fn(&StoredEvent) -> Result<prost_types::Any, String>;

/// An event type a feed serves: its name, and how a stored payload of it becomes the message's
/// encoding. The payload is read into the generated type and encoded from there, so equal
/// payloads encode to equal bytes, map fields included (a replay answers byte for byte what
/// the first reading did).
#[derive(Clone)]
pub struct EventType {
    pub name: String,
    encode: fn(&serde_json::Value, &str) -> Result<Vec<u8>, String>,
}

impl EventType {
    pub fn of<M: crm_proto::prost::Name + crm_proto::prost::Message + Default>() -> Self {
        Self {
            name: M::full_name(),
            encode: |json, name| Ok(crm_proto::json::from_json::<M>(json, name)?.encode_to_vec()),
        }
    }
}

/// How much of an unknown type name an error quotes.
const MAX_TYPE_LEN: usize = 200;

/// The EventFeed of one producing service.
#[derive(Clone)]
pub struct EventFeedService {
    outbox: Arc<dyn Outbox>,
    source: &'static str,
    known_types: Arc<[EventType]>,
    legacy: Option<RenderPayload>,
    heartbeat: Duration,
}

impl EventFeedService {
    /// `source` names the producer in every envelope, e.g. "crm.contact.v1"; `known_types` are
    /// the event types it publishes (a filter on any other is refused); `legacy` renders the
    /// events it wrote in an earlier form, if it did.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        source: &'static str,
        known_types: Vec<EventType>,
        legacy: Option<RenderPayload>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            outbox,
            source,
            known_types: known_types.into(),
            legacy,
            heartbeat,
        }
    }

    pub fn into_server(self) -> EventFeedServer<Self> {
        EventFeedServer::new(self)
    }

    /// A stored payload as the message its type names.
    fn render(&self, event: &StoredEvent) -> Result<prost_types::Any, String> {
        let known = self
            .known_types
            .iter()
            .find(|t| t.name == event.kind)
            .ok_or_else(|| format!("{} is not an event type of this feed", event.kind))?;
        Ok(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", event.kind),
            value: (known.encode)(&event.payload, &event.kind)?,
        })
    }

    fn envelope(&self, event: StoredEvent) -> Result<pb::Event, Status> {
        let rendered = match self.legacy {
            Some(legacy) if event.legacy => legacy(&event),
            _ => self.render(&event),
        };
        let payload = rendered.map_err(|reason| {
            tracing::error!(seq = event.seq, kind = %event.kind, %reason, "stored event does not render");
            Status::internal("a stored event could not be rendered")
        })?;
        Ok(pb::Event {
            id: event.id.to_string(),
            tenant: event.tenant,
            source: self.source.to_owned(),
            r#type: event.kind,
            subject: event.subject,
            sequence: event.seq,
            time: Some(crate::time::timestamp(event.time)),
            actor: event.actor,
            traceparent: event.traceparent,
            payload: Some(payload),
        })
    }
}

fn feed_error(err: FeedError) -> Status {
    match err {
        FeedError::OutOfRange { after, oldest } => ApiError::new(
            ErrorCode::OutOfRange,
            "SEQUENCE_NOT_RETAINED",
            format!(
                "events after {after} are past retention; the oldest available sequence is {oldest} \
                 (subscribe with after_sequence {} or later, or 0 for the oldest)",
                oldest.saturating_sub(1)
            ),
        )
        .into(),
        FeedError::Database(err) => {
            tracing::error!(error = %err, "outbox read failed");
            Status::unavailable("the event feed is unavailable")
        }
    }
}

/// The event types of a request, each one `known`.
fn types(raw: Vec<String>, known: &[EventType]) -> Result<Vec<String>, ApiError> {
    if raw.len() > known.len() {
        return Err(ApiError::invalid_field(
            "types",
            format!("at most {} items (the feed's types), not {}", known.len(), raw.len()),
        ));
    }
    if let Some(unknown) = raw.iter().find(|kind| !known.iter().any(|t| &t.name == *kind)) {
        let shown: String = unknown.chars().take(MAX_TYPE_LEN).collect();
        return Err(ApiError::invalid_field(
            "types",
            format!(
                "`{shown}` is not an event type of this feed; it publishes {}",
                known.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(raw)
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// The metadata header a subscriber names the producing service with, e.g. `crm.pipeline.v1`.
pub const SOURCE_HEADER: &str = "crm-source";

/// The EventFeed of a process: the feeds of the services it runs (one on Kubernetes, all in
/// `crm serve`). A subscriber picks one with the [`SOURCE_HEADER`]; without it, the first.
#[derive(Clone)]
pub struct FeedRouter {
    feeds: Vec<EventFeedService>,
}

impl FeedRouter {
    pub fn new(feeds: Vec<EventFeedService>) -> Self {
        Self { feeds }
    }

    pub fn into_server(self) -> EventFeedServer<Self> {
        EventFeedServer::new(self)
    }
}

#[tonic::async_trait]
impl EventFeed for FeedRouter {
    type SubscribeStream = FeedStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<FeedStream>, Status> {
        let feed = match request.metadata().get(SOURCE_HEADER) {
            None => self.feeds.first(),
            Some(value) => {
                let source = value.to_str().unwrap_or_default();
                self.feeds.iter().find(|feed| feed.source == source)
            }
        };
        let Some(feed) = feed else {
            let sources: Vec<&str> = self.feeds.iter().map(|f| f.source).collect();
            return Err(ApiError::invalid_field(
                SOURCE_HEADER,
                format!("this endpoint serves the feeds of {}", sources.join(", ")),
            )
            .into());
        };
        feed.subscribe(request).await
    }
}

#[tonic::async_trait]
impl EventFeed for EventFeedService {
    type SubscribeStream = FeedStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<FeedStream>, Status> {
        let who = principal(&request)?;
        // A service principal reads every tenant's events; anyone else their own tenant's.
        let scope = if who.has_role(Role::Service) {
            Scope::AllTenants
        } else {
            Scope::Tenant(who.tenant)
        };
        let request = request.into_inner();
        let types = types(request.types, &self.known_types)?;
        let partition = match request.partition {
            None => None,
            Some(p) => Some(
                crate::partition::Partition::new(p.index, p.count)
                    .map_err(|reason| ApiError::invalid_field("partition", reason))?,
            ),
        };
        let after = match request.since {
            None => request.after_sequence,
            Some(_) if request.after_sequence != 0 => {
                return Err(ApiError::invalid_field("since", "give after_sequence or since, not both").into());
            }
            Some(since) => {
                let since =
                    crate::time::from_timestamp(&since).map_err(|reason| ApiError::invalid_field("since", reason))?;
                crate::outbox::sequence_before(self.outbox.as_ref(), since)
                    .await
                    .map_err(|e| feed_error(FeedError::Database(e)))?
            }
        };
        let until = if request.until_head { Until::Head } else { Until::Ever };
        let start = |after: u64| {
            follow(
                Arc::clone(&self.outbox),
                scope.clone(),
                after,
                types.clone(),
                partition,
                self.heartbeat,
                until,
            )
        };
        let feed = match start(after).await {
            // The seek landed on an event pruned since: what is retained is all after it.
            Err(FeedError::OutOfRange { .. }) if request.since.is_some() => start(0).await,
            started => started,
        }
        .map_err(feed_error)?;
        let this = self.clone();
        let stream = tokio_stream::wrappers::ReceiverStream::new(feed).map(move |item| {
            let kind = match item.map_err(feed_error)? {
                FeedItem::Event(event) => pb::subscribe_response::Kind::Event(this.envelope(event)?),
                FeedItem::Heartbeat { time, head } => pb::subscribe_response::Kind::Heartbeat(pb::Heartbeat {
                    time: Some(crate::time::timestamp(time)),
                    head_sequence: head,
                }),
            };
            Ok(pb::SubscribeResponse { kind: Some(kind) })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
