//! Webhook endpoints: admins add, read (with their secrets), list and remove them.

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::{NotificationApp, ensure_admin};
use crate::domain::condition::event_type;
use crate::domain::signature::new_secret;
use crate::domain::{DEFAULT_OVERLAP, Endpoint, MAX_ENDPOINTS, MAX_OVERLAP_SECONDS, MAX_PER_SECOND};

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;
/// Most event types of an endpoint's filter.
pub const MAX_ENDPOINT_TYPES: usize = 100;

/// What a request asks of a new endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointSpec {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    /// Deliveries a second at most (0: no limit).
    pub max_per_second: i32,
}

/// Why `url` cannot receive webhooks, if it cannot: an absolute http(s) URL with a host and
/// no credentials.
fn url_problem(url: &str) -> Option<String> {
    if let Err(reason) = crm_platform::text::check(url, MAX_URL, false) {
        return Some(reason);
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("`{url}` is not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some("must be an http or https URL".to_owned());
    }
    if parsed.host().is_none() {
        return Some("must name a host".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("must not carry credentials: the signature authenticates the sender".to_owned());
    }
    None
}

/// How far back an endpoint's deliveries are sent again at once: a call re-queues what was
/// made since, in one transaction, so its reach is bounded (an earlier time asked for is
/// taken as the window's start, and the answer says so).
pub const REDELIVER_WINDOW: chrono::Duration = chrono::Duration::days(30);

impl NotificationApp {
    pub async fn create_endpoint(&self, who: &Principal, spec: EndpointSpec) -> Result<Endpoint, ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        let mut v = Violations::new("webhook_endpoint.");
        if spec.url.trim().is_empty() {
            v.add("url", "is required");
        } else if let Some(problem) = url_problem(&spec.url) {
            v.add("url", problem);
        }
        for (i, t) in v
            .bounded("event_types", &spec.event_types, MAX_ENDPOINT_TYPES)
            .iter()
            .enumerate()
        {
            if let Err(reason) = event_type(t) {
                v.add(format!("event_types[{i}]"), reason);
            }
        }
        v.check("description", crm_platform::text::check(&spec.description, 500, false));
        let max_per_second = u32::try_from(spec.max_per_second).ok().filter(|n| *n <= MAX_PER_SECOND);
        if max_per_second.is_none() {
            v.add("max_per_second", format!("must be 0 (no limit) to {MAX_PER_SECOND}"));
        }
        v.finish()?;
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            url: spec.url,
            event_types: spec.event_types,
            description: spec.description,
            secret: new_secret().map_err(|e| ApiError::internal(&e))?,
            create_time: self.clock.now(),
            previous_secret: String::new(),
            previous_until: None,
            created_by: who.user.as_str().to_owned(),
            max_per_second: max_per_second.unwrap_or(0),
            failing_since: None,
            disable_time: None,
            disable_reason: String::new(),
        };
        if !self.store.create_endpoint(&who.tenant, &endpoint).await? {
            return Err(ApiError::invalid_field(
                "webhook_endpoint",
                format!("a tenant has at most {MAX_ENDPOINTS} endpoints"),
            ));
        }
        Ok(endpoint)
    }

    pub async fn endpoint(&self, who: &Principal, id: Uuid) -> Result<Endpoint, ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        self.store
            .endpoint(&who.tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))
    }

    pub async fn endpoints(&self, who: &Principal, page: &PageRequest<Uuid>) -> Result<Page<Endpoint>, ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        let listed = self.store.endpoints(&who.tenant, page.after, page.fetch()).await?;
        Ok(page.page(listed, |e| e.id))
    }

    /// Gives an endpoint a new secret; the current one signs beside it for `overlap_seconds`
    /// (0: a day; at most a week).
    pub async fn rotate_secret(&self, who: &Principal, id: Uuid, overlap_seconds: i64) -> Result<Endpoint, ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        let overlap = match overlap_seconds {
            0 => DEFAULT_OVERLAP,
            s if (1..=MAX_OVERLAP_SECONDS).contains(&s) => chrono::Duration::seconds(s),
            s => {
                return Err(ApiError::invalid_field(
                    "overlap_seconds",
                    format!("{s} is not an overlap: 0 to {MAX_OVERLAP_SECONDS} seconds"),
                ));
            }
        };
        let secret = new_secret().map_err(|e| ApiError::internal(&e))?;
        self.store
            .rotate_secret(&who.tenant, id, &secret, self.clock.now() + overlap)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))
    }

    /// Enables an endpoint disabled after failing: its waiting deliveries are sent.
    pub async fn enable_endpoint(&self, who: &Principal, id: Uuid) -> Result<Endpoint, ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        let enabled = self
            .store
            .enable_endpoint(&who.tenant, id, self.clock.now())
            .await?
            .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
        self.due.notify_one();
        Ok(enabled)
    }

    /// Sends again every delivery to an endpoint made since `since`, [`REDELIVER_WINDOW`] back
    /// at most: how many (none since a time to come), and since when (`since`, or the start
    /// of the window when it was earlier).
    pub async fn redeliver_since(
        &self,
        who: &Principal,
        id: Uuid,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(u64, chrono::DateTime<chrono::Utc>), ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        let now = self.clock.now();
        let since = since
            .ok_or_else(|| ApiError::invalid_field("since", "is required"))?
            .max(now - REDELIVER_WINDOW);
        if self.store.endpoint(&who.tenant, id).await?.is_none() {
            return Err(ApiError::not_found("webhook endpoint"));
        }
        let again = self.store.redeliver_since(&who.tenant, id, since, now).await?;
        if again > 0 {
            self.due.notify_one();
        }
        Ok((again, since))
    }

    pub async fn delete_endpoint(&self, who: &Principal, id: Uuid) -> Result<(), ApiError> {
        ensure_admin(who, "webhook endpoints")?;
        if self.store.delete_endpoint(&who.tenant, id).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("webhook endpoint"))
        }
    }
}
