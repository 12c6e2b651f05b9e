//! The retained events of the followed feeds, read as a tenant's user (with their own
//! credentials, so a feed gives them their tenant's events only) from a time up to the head:
//! what a rule's backtest evaluates the rule against.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::ApiError;
use crm_platform::consumer::ConsumerConfig;
use crm_proto::crm::events::v1 as events;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use tonic::transport::{Channel, Endpoint};

/// Whether a visit goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    More,
    Stop,
}

/// A reader of the retained events.
#[async_trait]
pub trait History: Send + Sync {
    /// Hands `visit` each retained event of `types` the caller (`credentials`, an
    /// `authorization` header value) may read, committed at or after `since` (and some before
    /// it: `visit` checks each event's time), feed by feed, until it says stop; whether it
    /// stopped early.
    async fn read(
        &self,
        credentials: &str,
        types: &[String],
        since: DateTime<Utc>,
        visit: &mut (dyn FnMut(events::Event) -> Visit + Send),
    ) -> Result<bool, ApiError>;
}

/// The followed feeds over gRPC.
pub struct FeedHistory {
    feeds: Vec<(Channel, Option<String>)>,
}

impl FeedHistory {
    /// The feeds `feeds` follows (their endpoints and sources), connected lazily.
    pub fn new(feeds: &[ConsumerConfig]) -> Result<Self, String> {
        let feeds = feeds
            .iter()
            .map(|f| {
                Endpoint::from_shared(f.endpoint.clone())
                    .map(|e| (e.tcp_nodelay(true).connect_lazy(), f.source.clone()))
                    .map_err(|e| format!("feed endpoint {}: {e}", f.endpoint))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { feeds })
    }
}

/// The types of `types` a feed of `source` carries (`crm.pipeline.v1.DealWon` is the
/// `crm.pipeline.v1` feed's).
fn of_source(types: &[String], source: Option<&str>) -> Vec<String> {
    types
        .iter()
        .filter(|t| source.is_none_or(|s| t.strip_prefix(s).is_some_and(|rest| rest.starts_with('.'))))
        .cloned()
        .collect()
}

fn unavailable(status: &tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            ApiError::permission_denied(format!("a feed refused the caller: {}", status.message()))
        }
        _ => ApiError::unavailable(format!("a feed cannot be read now; retry ({})", status.message())),
    }
}

#[async_trait]
impl History for FeedHistory {
    async fn read(
        &self,
        credentials: &str,
        types: &[String],
        since: DateTime<Utc>,
        visit: &mut (dyn FnMut(events::Event) -> Visit + Send),
    ) -> Result<bool, ApiError> {
        let authorization: tonic::metadata::MetadataValue<_> = credentials
            .parse()
            .map_err(|_| ApiError::permission_denied("the caller's credentials cannot be passed on"))?;
        for (channel, source) in &self.feeds {
            let types = of_source(types, source.as_deref());
            if types.is_empty() {
                continue;
            }
            let mut request = tonic::Request::new(events::SubscribeRequest {
                after_sequence: 0,
                types,
                partition: None,
                until_head: true,
                since: Some(crm_platform::time::timestamp(since)),
            });
            request.metadata_mut().insert("authorization", authorization.clone());
            if let Some(source) = source.as_deref().and_then(|s| s.parse().ok()) {
                request.metadata_mut().insert(crm_platform::feed::SOURCE_HEADER, source);
            }
            let mut stream = EventFeedClient::new(channel.clone())
                .subscribe(request)
                .await
                .map_err(|s| unavailable(&s))?
                .into_inner();
            while let Some(message) = stream.message().await.map_err(|s| unavailable(&s))? {
                if let Some(events::subscribe_response::Kind::Event(event)) = message.kind
                    && visit(event) == Visit::Stop
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_feed_is_asked_for_its_own_types_only() {
        let types = vec![
            "crm.pipeline.v1.DealWon".to_owned(),
            "crm.contact.v1.ContactCreated".to_owned(),
            "crm.pipeline.v1x.Odd".to_owned(),
        ];
        assert_eq!(of_source(&types, Some("crm.pipeline.v1")), ["crm.pipeline.v1.DealWon"]);
        assert_eq!(of_source(&types, Some("crm.analytics.v1")), Vec::<String>::new());
        assert_eq!(of_source(&types, None).len(), 3);
    }
}
