//! `GET /v1/notifications:watch`: the caller's in-app inbox as Server-Sent Events, for a web
//! app's notification bell.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use crm_proto::crm::notification::v1 as pb;
use crm_proto::crm::notification::v1::inbox_service_client::InboxServiceClient;
use futures::{Stream, StreamExt};

use crate::Gateway;
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// How long one stream may stay open; the client then reconnects (and is sent the counts
/// again).
const STREAM_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The caller's inbox as Server-Sent Events: a `counts` event at once (`{"unread", "unseen"}`),
/// then a `notification` event (the notification in proto3 JSON) for each new one and a
/// `counts` event after each change of the inbox, made on any replica; `counts` again every
/// 30 s, which keeps an idle stream open through proxies. When the stream ends early, an
/// `error` event says why (a problem JSON: `reason` TOKEN_EXPIRED when the caller's token
/// expired: the client reconnects with a fresh token).
#[utoipa::path(get, path = "/v1/notifications:watch", tag = "notifications",
    responses((status = 200, description = "text/event-stream"), (status = 401, body = ProblemBody)))]
pub async fn watch(
    State(gw): State<Gateway>,
    call: Call,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let channel = gw.channel_for("crm.notification.v1.InboxService").ok_or_else(|| {
        Problem(crm_platform::ApiError::unavailable(
            "the notification service is not configured",
        ))
    })?;
    let request = call.request(pb::WatchNotificationsRequest {}, STREAM_DEADLINE);
    let watched = InboxServiceClient::new(channel)
        .watch_notifications(request)
        .await?
        .into_inner();
    let events = watched
        .map(|message| match message {
            Ok(pb::WatchNotificationsResponse {
                kind: Some(pb::watch_notifications_response::Kind::Notification(n)),
            }) => Some(
                SseEvent::default()
                    .id(n.name.clone())
                    .event("notification")
                    .data(json_of(&n, "crm.notification.v1.Notification")),
            ),
            Ok(pb::WatchNotificationsResponse {
                kind: Some(pb::watch_notifications_response::Kind::Counts(c)),
            }) => Some(
                SseEvent::default()
                    .event("counts")
                    .data(json_of(&c, "crm.notification.v1.InboxCounts")),
            ),
            Ok(_) => None,
            Err(status) => {
                // A token's expiry ends every watch in time: routine, not a warning.
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::debug!("an inbox stream ended with its token");
                } else {
                    tracing::warn!(code = ?status.code(), "inbox stream ended by the service");
                }
                let problem = Problem::from(status).body();
                Some(
                    SseEvent::default()
                        .event("error")
                        .data(serde_json::to_string(&problem).unwrap_or_default()),
                )
            }
        })
        .filter_map(|event| async move { event.map(Ok) });
    Ok(Sse::new(events))
}

/// `message` (of `type_name`) as proto3 JSON text.
fn json_of<M: crm_proto::prost::Message>(message: &M, type_name: &str) -> String {
    crm_proto::json::to_json(message, type_name)
        .map(|json| json.to_string())
        .unwrap_or_else(|reason| serde_json::json!({ "error": reason }).to_string())
}
