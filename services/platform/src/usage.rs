//! Usage, for adoption: every authenticated request is counted in memory per (tenant, user,
//! area, day), never written on its own, and the counts are published every few minutes as
//! `crm.events.v1.UsageReported` events on the feed of the service the area belongs to.
//!
//! The area is the gRPC service called; a request that is not a read (see
//! [`crate::auth::is_read`]) is a change. Service principals (feed followers) are not users and
//! are not counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use crate::identity::{Principal, Role};
use crate::outbox::{NewEvent, Outbox};

/// What is counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub tenant: String,
    pub user: String,
    pub area: String,
    pub day: NaiveDate,
}

/// Requests, and changes among them, and the user's roles at the latest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageCount {
    pub requests: i64,
    pub changes: i64,
    pub roles: Vec<Role>,
}

/// A process's counts since the last report.
#[derive(Debug, Default)]
pub struct Usage {
    counts: Mutex<HashMap<UsageKey, UsageCount>>,
}

impl Usage {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts a request of `principal` to the gRPC method at `path`
    /// (`/crm.contact.v1.ContactService/CreateContact`).
    pub fn record(&self, principal: &Principal, path: &str) {
        if principal.has_role(Role::Service) {
            return;
        }
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (Some(area), Some(method)) = (parts.next(), parts.next()) else {
            return;
        };
        let key = UsageKey {
            tenant: principal.tenant.as_str().to_owned(),
            user: principal.user.as_str().to_owned(),
            area: area.to_owned(),
            day: Utc::now().date_naive(),
        };
        let Ok(mut counts) = self.counts.lock() else { return };
        let count = counts.entry(key).or_default();
        count.requests = count.requests.saturating_add(1);
        if !crate::auth::is_read(method) {
            count.changes = count.changes.saturating_add(1);
        }
        if count.roles != principal.roles {
            count.roles.clone_from(&principal.roles);
        }
    }

    /// Takes the counts (the next report starts from zero).
    pub fn take(&self) -> Vec<(UsageKey, UsageCount)> {
        let Ok(mut counts) = self.counts.lock() else {
            return Vec::new();
        };
        let mut taken: Vec<(UsageKey, UsageCount)> = counts.drain().collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Puts counts back (a report that could not be published is retried with the next).
    fn restore(&self, taken: Vec<(UsageKey, UsageCount)>) {
        let Ok(mut counts) = self.counts.lock() else { return };
        for (key, count) in taken {
            let into = counts.entry(key).or_default();
            into.requests = into.requests.saturating_add(count.requests);
            into.changes = into.changes.saturating_add(count.changes);
            // Roles seen since the report was taken are the latest.
            if into.roles.is_empty() {
                into.roles = count.roles;
            }
        }
    }
}

/// The event of one count.
fn event(key: &UsageKey, count: &UsageCount) -> Option<NewEvent> {
    let tenant = crate::TenantId::parse(&key.tenant).ok()?;
    let message = crm_proto::crm::events::v1::UsageReported {
        user: key.user.clone(),
        area: key.area.clone(),
        day: key.day.to_string(),
        requests: count.requests,
        changes: count.changes,
        roles: count.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    };
    NewEvent::of(&tenant, format!("usage/{}", key.user), &key.user, Utc::now(), &message).ok()
}

/// Publishes `usage` every `every` on the outbox of the service each area belongs to
/// (`outboxes` lists, per outbox, the gRPC service names it serves; counts of an area no outbox
/// serves are dropped), and once more when `stop` is cancelled: cancel it once the server has
/// stopped serving and await the handle, so that no request served is left uncounted.
pub fn spawn_reporter(
    usage: Arc<Usage>,
    outboxes: Vec<(Vec<&'static str>, Arc<dyn Outbox>)>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(every) => false,
            };
            report(&usage, &outboxes).await;
            if stopping {
                return;
            }
        }
    })
}

async fn report(usage: &Usage, outboxes: &[(Vec<&'static str>, Arc<dyn Outbox>)]) {
    let taken = usage.take();
    if taken.is_empty() {
        return;
    }
    for (areas, outbox) in outboxes {
        let mine: Vec<(UsageKey, UsageCount)> = taken
            .iter()
            .filter(|(key, _)| areas.contains(&key.area.as_str()))
            .cloned()
            .collect();
        let events: Vec<NewEvent> = mine.iter().filter_map(|(key, count)| event(key, count)).collect();
        if events.is_empty() {
            continue;
        }
        if let Err(err) = outbox.publish(&events).await {
            tracing::warn!(error = %err, "usage could not be published; kept for the next report");
            usage.restore(mine);
        }
    }
}

/// Counts every request that reaches the services (inside the auth layer: the principal is
/// known).
#[derive(Clone)]
pub struct UsageLayer {
    usage: Arc<Usage>,
}

impl UsageLayer {
    pub fn new(usage: Arc<Usage>) -> Self {
        Self { usage }
    }
}

impl<S> tower::Layer<S> for UsageLayer {
    type Service = UsageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UsageService {
            inner,
            usage: Arc::clone(&self.usage),
        }
    }
}

#[derive(Clone)]
pub struct UsageService<S> {
    inner: S,
    usage: Arc<Usage>,
}

impl<S, B> tower::Service<http::Request<B>> for UsageService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(principal) = request.extensions().get::<Principal>() {
            self.usage.record(principal, request.uri().path());
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tenant: &str, user: &str, role: Role) -> Principal {
        Principal {
            tenant: crate::TenantId::parse(tenant).expect("tenant"),
            user: crate::UserId::parse(user).expect("user"),
            roles: vec![role],
        }
    }

    #[test]
    fn requests_are_counted_per_user_area_and_day_and_changes_apart() {
        let usage = Usage::new();
        let ann = who("acme", "ann", Role::Rep);
        usage.record(&ann, "/crm.contact.v1.ContactService/GetContact");
        usage.record(&ann, "/crm.contact.v1.ContactService/CreateContact");
        usage.record(&ann, "/crm.pipeline.v1.DealService/ListDeals");
        usage.record(
            &who("acme", "feed", Role::Service),
            "/crm.events.v1.EventFeed/Subscribe",
        );
        let taken = usage.take();
        let summary: Vec<(&str, &str, i64, i64)> = taken
            .iter()
            .map(|(k, c)| (k.user.as_str(), k.area.as_str(), c.requests, c.changes))
            .collect();
        assert_eq!(
            summary,
            [
                ("ann", "crm.contact.v1.ContactService", 2, 1),
                ("ann", "crm.pipeline.v1.DealService", 1, 0)
            ]
        );
        assert!(taken.iter().all(|(_, c)| c.roles == [Role::Rep]), "{taken:?}");
        assert!(usage.take().is_empty(), "a report starts from zero");
    }

    #[test]
    fn a_report_carries_the_roles_of_the_users_latest_request() {
        let usage = Usage::new();
        let area = "/crm.contact.v1.ContactService/GetContact";
        usage.record(&who("acme", "ann", Role::Rep), area);
        usage.record(&who("acme", "ann", Role::Manager), area);
        let taken = usage.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.roles, [Role::Manager]);
        let report = event(&taken[0].0, &taken[0].1).expect("an event");
        let json: serde_json::Value = serde_json::from_str(&report.payload).expect("JSON");
        let decoded: crm_proto::crm::events::v1::UsageReported =
            crm_proto::json::from_json(&json, &report.kind).expect("decodes");
        assert_eq!(decoded.roles, ["manager"]);
        assert_eq!(decoded.requests, 2);
        assert!(usage.take().is_empty(), "a report starts from zero");
    }
}
