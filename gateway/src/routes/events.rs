//! `GET /v1/events:stream`: the change feed as Server-Sent Events, for integrators.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use crm_proto::crm::events::v1 as pb;
use crm_proto::prost::Message;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::Gateway;
use crate::extract::QueryParams;
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// The producers whose feeds the gateway streams; the first is the default.
const SOURCES: [&str; 4] = [
    "crm.contact.v1",
    "crm.pipeline.v1",
    "crm.analytics.v1",
    "crm.notification.v1",
];

/// How long one stream may stay open; the client reconnects with Last-Event-ID.
const STREAM_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Where a stream starts and what it carries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Deliver events after this sequence (default 0: the oldest retained). A `Last-Event-ID`
    /// header, as browsers send when they reconnect, takes precedence.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Only these event types, comma-separated, e.g. `crm.contact.v1.ContactCreated`.
    pub types: Option<String>,
    /// Whose feed: `crm.contact.v1`, `crm.pipeline.v1`, `crm.analytics.v1` (segment
    /// changes, goal statuses, stalled deals) or `crm.notification.v1` (webhook endpoints
    /// disabled); by default the feed of `types` (their package), or else `crm.contact.v1`.
    /// The types must be the feed's.
    #[param(pattern = "^crm\\.(contact|pipeline|analytics|notification)\\.v1$")]
    pub source: Option<String>,
}

/// The caller's tenant's events as Server-Sent Events: `id` is the sequence, `event` the type,
/// `data` the envelope in proto3 JSON with its payload inline. Catches up from `after` (or
/// `Last-Event-ID`), then follows live; an idle feed sends a `heartbeat` event carrying the
/// head sequence. A sequence past retention is refused with 400 (OUT_OF_RANGE) naming the
/// oldest available.
#[utoipa::path(get, path = "/v1/events:stream", tag = "events", params(StreamParams),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = ProblemBody),
        (status = 401, body = ProblemBody)))]
pub async fn stream(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    QueryParams(q): QueryParams<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| {
                Problem(crm_platform::ApiError::invalid_field(
                    "Last-Event-ID",
                    "must be a sequence number",
                ))
            })?,
        None => u64::try_from(q.after.unwrap_or(0))
            .map_err(|_| Problem(crm_platform::ApiError::invalid_field("after", "must not be negative")))?,
    };
    let types: Vec<String> = q
        .types
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    // Without a source, the types name their feed: a type's package is its feed's.
    let source = q.source.unwrap_or_else(|| {
        let feed = types
            .first()
            .and_then(|t| t.rsplit_once('.'))
            .map(|(package, _)| package);
        SOURCES
            .into_iter()
            .find(|s| Some(*s) == feed)
            .unwrap_or(SOURCES[0])
            .to_owned()
    });
    let mut client = match SOURCES.contains(&source.as_str()) {
        true => gw.events_of(&source),
        false => None,
    }
    .ok_or_else(|| {
        Problem(crm_platform::ApiError::invalid_field(
            "source",
            format!("must be one of {}", SOURCES.join(", ")),
        ))
    })?;
    let mut request = call.request(
        pb::SubscribeRequest {
            after_sequence: after,
            types,
            partition: None,
            until_head: false,
            since: None,
        },
        STREAM_DEADLINE,
    );
    // An endpoint serving several feeds (`crm serve`) picks by this header.
    if let Ok(value) = source.parse() {
        request.metadata_mut().insert(crm_platform::feed::SOURCE_HEADER, value);
    }
    let feed = client.subscribe(request).await?.into_inner();
    let events = feed
        .map(|message| match message {
            Ok(pb::SubscribeResponse {
                kind: Some(pb::subscribe_response::Kind::Event(event)),
            }) => Some(
                SseEvent::default()
                    .id(event.sequence.to_string())
                    .event(event.r#type.clone())
                    .data(envelope_json(&event)),
            ),
            Ok(pb::SubscribeResponse {
                kind: Some(pb::subscribe_response::Kind::Heartbeat(beat)),
            }) => Some(
                SseEvent::default()
                    .event("heartbeat")
                    .data(format!("{{\"headSequence\":\"{}\"}}", beat.head_sequence)),
            ),
            Ok(_) => None,
            Err(status) => {
                tracing::warn!(code = ?status.code(), "event stream ended by the feed");
                Some(SseEvent::default().event("error").data(status.message()))
            }
        })
        .filter_map(|event| async move { event.map(Ok) });
    Ok(Sse::new(events))
}

/// The envelope in proto3 JSON (its payload resolved through the suite's descriptors).
fn envelope_json(event: &pb::Event) -> String {
    let rendered = crm_proto::json::encoded_to_json(&event.encode_to_vec(), "crm.events.v1.Event")
        .ok()
        .map(|json| json.to_string());
    rendered.unwrap_or_else(|| {
        // Not expected: the descriptors are compiled in. Say what is known rather than fail.
        serde_json::json!({
            "id": event.id,
            "type": event.r#type,
            "subject": event.subject,
            "sequence": event.sequence.to_string(),
        })
        .to_string()
    })
}
