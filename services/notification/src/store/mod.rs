//! Storage of the notification service: one trait, a PostgreSQL and an SQLite implementation,
//! and one conformance suite both must pass.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::{ApiError, TenantId};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::domain::fatigue::{Fatigue, Mute, Muted, QuietHours};
use crate::domain::matching::Matched;
use crate::domain::members::Members;
use crate::domain::{
    Attempt, Channel, Delivery, DeliveryState, Due, DueDigest, DueEmail, Email, EmailState, EmailTemplate, Endpoint,
    NewEmail, Notification, Preferences, Recipient, Rule,
};
use crm_platform::identity::Role;

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgNotificationStore;
pub use sqlite::SqliteNotificationStore;

/// Migrations of each backend, embedded in the binary.
pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| {
    crm_platform::outbox::migrations::postgres(&sqlx::migrate!("./migrations/postgres"), POSTGRES_APP_ROLE)
});
pub static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| crm_platform::outbox::migrations::sqlite(&sqlx::migrate!("./migrations/sqlite")));

/// The PostgreSQL role the service serves as; row-level security applies to it.
pub const POSTGRES_APP_ROLE: &str = "crm_notification_app";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        ApiError::internal(&err)
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// What an attempt leaves a delivery in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub state: DeliveryState,
    /// When the next attempt is due (pending only).
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// Whether `next_attempt_time` is the slot its endpoint's throttle gave it: claimed then,
    /// it goes without taking another (see [`NotificationStore::take_slot`]).
    pub slotted: bool,
}

/// An attempt made (or a delivery put back without one: its endpoint throttled or disabled),
/// to keep with what it leaves its delivery in.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub tenant: TenantId,
    pub delivery: Uuid,
    pub endpoint: Uuid,
    pub attempt: Option<Attempt>,
    pub outcome: Outcome,
}

/// Items claimed from a queue. Where the backend can, the claim is held by the open
/// transaction that locked them: nothing is written to claim them, their outcomes are kept
/// in that transaction when they are released, and if the worker dies the transaction ends
/// and they are due again at once. Otherwise (no `hold`) they are leased.
pub struct Claim<D, F> {
    pub due: Vec<D>,
    pub hold: Option<Box<dyn Hold<F>>>,
}

impl<D, F> Claim<D, F> {
    /// Items claimed under a lease.
    pub fn leased(due: Vec<D>) -> Self {
        Self { due, hold: None }
    }
}

/// The open transaction holding a claim. Dropped unreleased, it rolls back: the items are
/// due again at once, as if never claimed.
#[async_trait]
pub trait Hold<F>: Send {
    /// Keeps `done` (attempts at the claim's items) and ends the claim: the items at
    /// `open` (indexes into the claim, still in flight) are leased for the rest of the claim's
    /// lease and kept later like leased ones, one transaction.
    async fn release(self: Box<Self>, done: &[F], open: &[usize]) -> Result<(), StoreError>;
}

/// What a batch of attempts says of its endpoints' health, the same on both backends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Health<'a> {
    /// The latest attempt's time.
    pub now: DateTime<Utc>,
    /// The (tenant, endpoint) pairs an attempt reached: no longer failing.
    pub ok: Vec<(&'a str, Uuid)>,
    /// The pairs every attempt of which failed, each once.
    pub failed: Vec<(&'a str, Uuid)>,
}

/// The health `finished` shows; None when no attempt was made (parked deliveries).
pub(crate) fn health<'a>(finished: impl IntoIterator<Item = &'a Finished>) -> Option<Health<'a>> {
    let attempted: Vec<(&Finished, &Attempt)> = finished
        .into_iter()
        .filter_map(|f| f.attempt.as_ref().map(|a| (f, a)))
        .collect();
    let now = attempted.iter().map(|(_, a)| a.time).max()?;
    let pairs = |succeeded: bool| {
        let mut pairs: Vec<(&str, Uuid)> = attempted
            .iter()
            .filter(|(_, a)| a.succeeded() == succeeded)
            .map(|(f, _)| (f.tenant.as_str(), f.endpoint))
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs
    };
    let ok = pairs(true);
    let failed = pairs(false).into_iter().filter(|p| !ok.contains(p)).collect();
    Some(Health { now, ok, failed })
}

/// An attempt at a claimed email, to keep with what it leaves the email in.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub tenant: TenantId,
    pub email: Uuid,
    /// The attempt's number, from 1.
    pub attempt: i32,
    /// The address it went to (empty when there was none).
    pub address: String,
    pub state: EmailState,
    /// Why it is held (held only).
    pub held: Option<Held>,
    /// Why it failed, was refused or is held; empty when sent.
    pub error: String,
    pub time: DateTime<Utc>,
    /// When the next attempt is due (pending only).
    pub next_attempt_time: Option<DateTime<Utc>>,
}

/// An email held back by its user's preferences.
pub use crate::domain::fatigue::Held;

/// A list's position: after this id (lists are keyed by time-ordered ids).
pub type After = Option<Uuid>;

/// A store on a fresh SQLite file (kept while the directory lives), for unit tests.
#[cfg(test)]
pub(crate) async fn sqlite_for_test() -> (tempfile::TempDir, std::sync::Arc<dyn NotificationStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = crm_platform::db::open_sqlite(&dir.path().join("n.db"), &SQLITE_MIGRATIONS)
        .await
        .expect("sqlite");
    (dir, std::sync::Arc::new(SqliteNotificationStore::new(pool)))
}

/// Batches a claim goes on past when every delivery it locked was dropped (no longer
/// pending, or its endpoint gone), before it reports nothing due.
pub(crate) const DROPPED_BATCHES: usize = 8;

#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Keeps a new endpoint; false (nothing kept) when the tenant has [`MAX_ENDPOINTS`](crate::domain::MAX_ENDPOINTS)
    /// already, counted under a lock, so that requests side by side cannot pass the bound.
    async fn create_endpoint(&self, tenant: &TenantId, endpoint: &Endpoint) -> Result<bool, StoreError>;
    async fn endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Endpoint>, StoreError>;
    /// The tenant's endpoints by id (oldest first), after `after`, at most `limit`.
    async fn endpoints(&self, tenant: &TenantId, after: After, limit: usize) -> Result<Vec<Endpoint>, StoreError>;
    /// Gives an endpoint a new secret, the current one signing beside it until `previous_until`;
    /// None when there is no such endpoint.
    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError>;
    /// Removes an endpoint and fails its pending deliveries; false when there was none.
    async fn delete_endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError>;

    /// Keeps a new rule; false (nothing kept) when the tenant has [`MAX_RULES`](crate::domain::MAX_RULES) already,
    /// counted under a lock.
    async fn create_rule(&self, tenant: &TenantId, rule: &Rule) -> Result<bool, StoreError>;
    async fn rule(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Rule>, StoreError>;
    /// The tenant's rules by id (oldest first), after `after`, at most `limit`.
    async fn rules(&self, tenant: &TenantId, after: After, limit: usize) -> Result<Vec<Rule>, StoreError>;
    async fn delete_rule(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError>;

    /// The last sequence applied under `consumer` (0 before the first).
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError>;
    /// Keeps what each tenant's events made (a (rule, event, recipient) kept before is left
    /// as it is) and moves `consumer`'s checkpoint from `previous` to `last`, in one
    /// transaction; false, with nothing kept, when the checkpoint was no longer `previous`.
    async fn record(
        &self,
        consumer: &str,
        previous: u64,
        last: u64,
        matched: &[(TenantId, Matched)],
    ) -> Result<bool, StoreError>;

    /// Claims up to `limit` pending deliveries of any tenant due at `now` and not held by
    /// another worker, holding them for `lease` (or by a transaction, see [`Claim`]).
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Claim<Due, Finished>, StoreError>;
    /// Keeps attempts at claimed deliveries and what each leaves its delivery in, releasing
    /// them, and each endpoint's health, in one transaction: an endpoint whose attempts have
    /// all failed for [`DISABLE_AFTER`](crate::domain::DISABLE_AFTER) is disabled, and who
    /// made it is told in their inbox.
    async fn finish_attempts(&self, finished: &[Finished]) -> Result<(), StoreError>;
    /// Takes the next free slot of `endpoint`'s throttle, `per_second` slots a second, shared
    /// by every replica: the time it may go (`now` when the endpoint is free), the slot after
    /// it left for the next. None when the tenant has no such endpoint.
    async fn take_slot(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        per_second: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Enables a disabled endpoint: its waiting deliveries are due at `now`. None when there
    /// is no such endpoint.
    async fn enable_endpoint(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError>;
    /// Sends again every delivery to an endpoint made since `since` (those not already
    /// waiting), due at `now`; how many (none when the endpoint is gone).
    async fn redeliver_since(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    async fn delivery(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Delivery>, StoreError>;
    /// The tenant's deliveries, newest first, before `after` (an id), at most `limit`.
    async fn deliveries(&self, tenant: &TenantId, after: After, limit: usize) -> Result<Vec<Delivery>, StoreError>;
    async fn attempts(&self, tenant: &TenantId, delivery: Uuid) -> Result<Vec<Attempt>, StoreError>;
    /// Makes a delivery pending and due at `now` (its attempts kept); None when there is none,
    /// or its endpoint is gone.
    async fn redeliver(&self, tenant: &TenantId, id: Uuid, now: DateTime<Utc>) -> Result<Option<Delivery>, StoreError>;

    /// Claims up to `limit` pending emails of any tenant due at `now` and not held by another
    /// worker, holding them for `lease`, each with its address (a user's from their
    /// preferences).
    async fn claim_emails(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueEmail>, StoreError>;
    /// Keeps what attempts left claimed emails in, releasing them, in one transaction.
    async fn finish_emails(&self, sent: &[Sent]) -> Result<(), StoreError>;
    /// The tenant's emails, newest first, before `after`, at most `limit`.
    async fn emails(&self, tenant: &TenantId, after: After, limit: usize) -> Result<Vec<Email>, StoreError>;
    /// Emails sent to `user` since `since` (by `rule` alone, when given).
    async fn sent_since(
        &self,
        tenant: &TenantId,
        user: &str,
        rule: Option<Uuid>,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// The users (of any tenant, at most `limit`) whose emails held for a digest or a cap are
    /// due at `now`, with those emails, oldest first.
    async fn due_digests(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueDigest>, StoreError>;
    /// Keeps `digest` (due now) as carrying the held emails `ids`, in one transaction; false,
    /// with nothing kept, when one of them is no longer held (another worker bundled it).
    async fn bundle_digest(&self, tenant: &TenantId, ids: &[Uuid], digest: &NewEmail) -> Result<bool, StoreError>;
    /// The in-app categories each user of the tenant muted.
    async fn muted(&self, tenant: &TenantId) -> Result<Muted, StoreError>;
    /// The outbox of the events this service publishes (an endpoint disabled, usage).
    fn outbox(&self) -> std::sync::Arc<dyn crm_platform::outbox::Outbox>;
    /// Who holds each role among the tenant's members seen since `since` (see
    /// [`crate::domain::members`]).
    async fn members(&self, tenant: &TenantId, since: chrono::NaiveDate) -> Result<Members, StoreError>;

    /// A user's preferences (None before they set any).
    async fn preferences(&self, tenant: &TenantId, user: &str) -> Result<Option<Preferences>, StoreError>;
    async fn set_preferences(&self, tenant: &TenantId, user: &str, preferences: &Preferences)
    -> Result<(), StoreError>;

    /// A user's notifications in `view`, newest first, before `after`, at most `limit`.
    async fn notifications(
        &self,
        tenant: &TenantId,
        user: &str,
        view: View,
        after: After,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
    /// A user's notifications after `since` (an id), oldest first, at most `limit`.
    async fn notifications_since(
        &self,
        tenant: &TenantId,
        user: &str,
        since: Uuid,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;
    /// A user's unread and unseen notifications, counted.
    async fn counts(&self, tenant: &TenantId, user: &str) -> Result<InboxCounts, StoreError>;
    /// Marks the user's notifications of `ids` read; how many were unread.
    async fn mark_read(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError>;
    /// Marks every notification of the user seen; how many were unseen.
    async fn mark_seen(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError>;
    /// Archives the user's notifications of `ids` (read and seen with it); how many were not.
    async fn archive(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError>;
}

/// Which of a user's notifications a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The inbox: every notification not archived.
    Inbox,
    /// The unread ones of the inbox.
    Unread,
    /// The archived ones.
    Archived,
    /// Every one, archived or not.
    All,
}

/// A user's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounts {
    pub unread: i64,
    pub unseen: i64,
}

/// The channel on which PostgreSQL announces a change of an inbox, `{tenant}/{user}`.
pub const INBOX_CHANNEL: &str = "crm_inbox";

/// A JSON list of strings as stored.
pub(crate) fn strings(raw: &serde_json::Value) -> Result<Vec<String>, StoreError> {
    serde_json::from_value(raw.clone()).map_err(|e| corrupt(format!("a stored list: {e}")))
}

/// A rule's recipients as stored (their names).
pub(crate) fn recipients(raw: &serde_json::Value) -> Result<Vec<Recipient>, StoreError> {
    strings(raw)?
        .iter()
        .map(|r| Recipient::parse(r).map_err(corrupt))
        .collect()
}

pub(crate) fn recipient_names(rule: &Rule) -> serde_json::Value {
    serde_json::Value::from(rule.recipients.iter().map(Recipient::name).collect::<Vec<_>>())
}

pub(crate) fn state(raw: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(raw).ok_or_else(|| corrupt(format!("delivery state `{raw}`")))
}

pub(crate) fn email_state(raw: &str) -> Result<EmailState, StoreError> {
    EmailState::parse(raw).ok_or_else(|| corrupt(format!("email state `{raw}`")))
}

/// A rule's channels as stored (their names).
pub(crate) fn channels(raw: &serde_json::Value) -> Result<Vec<Channel>, StoreError> {
    strings(raw)?
        .iter()
        .map(|c| Channel::parse(c).ok_or_else(|| corrupt(format!("channel `{c}`"))))
        .collect()
}

pub(crate) fn channel_names(rule: &Rule) -> serde_json::Value {
    serde_json::Value::from(rule.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>())
}

/// A rule's email template as stored: `{"subject", "text", "html"}`, a missing part empty.
pub(crate) fn email_template(raw: &serde_json::Value) -> EmailTemplate {
    let part = |name: &str| raw.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    EmailTemplate {
        subject: part("subject"),
        text: part("text"),
        html: part("html"),
    }
}

pub(crate) fn email_template_json(rule: &Rule) -> serde_json::Value {
    let t = &rule.email_template;
    serde_json::json!({ "subject": t.subject, "text": t.text, "html": t.html })
}

/// What a new email is stored as: its user (for `users/` recipients), its address (for
/// `mailto:`), its state, its error, and its rendered parts.
pub(crate) struct EmailRow<'a> {
    pub(crate) recipient: String,
    pub(crate) user: Option<&'a str>,
    pub(crate) contact: Option<&'a str>,
    pub(crate) address: &'a str,
    pub(crate) state: EmailState,
    pub(crate) error: String,
    pub(crate) subject: &'a str,
    pub(crate) text: &'a str,
    pub(crate) html: &'a str,
}

impl<'a> EmailRow<'a> {
    pub(crate) fn of(email: &'a crate::domain::NewEmail) -> Self {
        let (user, address) = match &email.recipient {
            Recipient::User(user) => (Some(user.as_str()), ""),
            Recipient::Email(address) => (None, address.as_str()),
            _ => (None, ""),
        };
        let contact = email.contact.as_deref();
        let (state, error, subject, text, html) = match &email.rendered {
            Ok(r) => (
                EmailState::Pending,
                String::new(),
                r.subject.as_str(),
                r.text.as_str(),
                r.html.as_str(),
            ),
            Err(reason) => (EmailState::Failed, format!("the template: {reason}"), "", "", ""),
        };
        Self {
            // An email to a contact is recipient `contacts/{id}`: one per contact.
            recipient: contact.map_or_else(|| email.recipient.name(), str::to_owned),
            user,
            contact,
            address,
            state,
            error,
            subject,
            text,
            html,
        }
    }
}

/// Where a user's email goes: the address in their preferences, else their user id when it
/// is an email address (as many identity providers make it), else none (empty).
pub(crate) fn user_address(user: &str, preferred: Option<&str>) -> String {
    match preferred.filter(|p| !p.is_empty()) {
        Some(address) => address.to_owned(),
        None => crate::domain::email_address(user).unwrap_or_default(),
    }
}

/// A user's preferences besides their address, as stored: `{"time_zone", "quiet_start",
/// "quiet_end", "daily_digest", "digest_time", "muted": [{"category", "channel"}],
/// "hourly_email_cap"}`, every key optional.
pub(crate) fn fatigue_json(f: &Fatigue) -> serde_json::Value {
    let time = |t: chrono::NaiveTime| t.format("%H:%M").to_string();
    serde_json::json!({
        "time_zone": f.time_zone.name(),
        "quiet_start": f.quiet_hours.map(|q| time(q.start)),
        "quiet_end": f.quiet_hours.map(|q| time(q.end)),
        "daily_digest": f.daily_digest,
        "digest_time": time(f.digest_time),
        "muted": f.muted.iter().map(|m| serde_json::json!({"category": m.category, "channel": m.channel.as_str()})).collect::<Vec<_>>(),
        "hourly_email_cap": f.hourly_email_cap,
    })
}

pub(crate) fn fatigue(raw: &serde_json::Value) -> Result<Fatigue, StoreError> {
    let defaults = Fatigue::default();
    let text = |key: &str| raw.get(key).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    let time = |key: &str| {
        text(key)
            .map(|t| chrono::NaiveTime::parse_from_str(t, "%H:%M").map_err(|e| corrupt(format!("{key} `{t}`: {e}"))))
            .transpose()
    };
    let time_zone = match text("time_zone") {
        Some(tz) => tz.parse().map_err(|_| corrupt(format!("time zone `{tz}`")))?,
        None => defaults.time_zone,
    };
    let quiet_hours = match (time("quiet_start")?, time("quiet_end")?) {
        (Some(start), Some(end)) => Some(QuietHours { start, end }),
        _ => None,
    };
    let mut muted = Vec::new();
    for m in raw.get("muted").and_then(|v| v.as_array()).into_iter().flatten() {
        let category = m
            .get("category")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let channel = m.get("channel").and_then(|v| v.as_str()).unwrap_or_default();
        let channel = Channel::parse(channel).ok_or_else(|| corrupt(format!("muted channel `{channel}`")))?;
        muted.push(Mute { category, channel });
    }
    Ok(Fatigue {
        time_zone,
        quiet_hours,
        daily_digest: raw.get("daily_digest").and_then(|v| v.as_bool()).unwrap_or(false),
        digest_time: time("digest_time")?.unwrap_or(defaults.digest_time),
        muted,
        hourly_email_cap: raw
            .get("hourly_email_cap")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
    })
}

/// A member's roles as kept: their names, comma-separated.
pub(crate) fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
}

/// The members of rows of a user id, their roles as kept and the day they were last seen.
pub(crate) fn members_of(rows: Vec<(String, String, chrono::NaiveDate)>) -> Members {
    Members::new(
        rows.into_iter()
            .map(|(user, roles, day)| (user, roles.split(',').filter_map(Role::parse).collect(), day)),
    )
}

/// The muted categories of each user, from their stored settings.
pub(crate) fn muted_of(rows: Vec<(String, serde_json::Value)>) -> Result<Muted, StoreError> {
    let mut muted = Muted::default();
    for (user, settings) in rows {
        let f = fatigue(&settings)?;
        if !f.muted.is_empty() {
            muted.0.insert(user, f.muted);
        }
    }
    Ok(muted)
}

/// The inbox notification telling who made an endpoint that it was disabled.
pub(crate) fn disabled_notice(endpoint: Uuid, url: &str, user: &str, at: DateTime<Utc>) -> crate::domain::Notification {
    crate::domain::Notification {
        id: Uuid::now_v7(),
        user: user.to_owned(),
        rule: crate::domain::matching::ENDPOINT_DISABLED_RULE,
        event_id: format!("endpoint-disabled:{endpoint}:{}", at.timestamp_micros()),
        event_type: crate::domain::ENDPOINT_DISABLED.to_owned(),
        subject: crate::domain::EndpointId(endpoint).name(),
        title: format!("Webhook endpoint disabled after failing for 5 days: {url}"),
        read: false,
        seen: false,
        archived: false,
        create_time: at,
    }
}

/// The event that says endpoint `endpoint` of `tenant`, failing since `since`, was disabled at
/// `at` (None, and logged, if it cannot be written).
pub(crate) fn disabled_event(
    tenant: &str,
    endpoint: Uuid,
    created_by: &str,
    since: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Option<crm_platform::outbox::NewEvent> {
    let tenant = TenantId::parse(tenant).ok()?;
    let name = crate::domain::EndpointId(endpoint).name();
    let message = crm_proto::crm::notification::v1::WebhookEndpointDisabled {
        endpoint: name.clone(),
        failing_since: Some(crm_platform::time::timestamp(since)),
        disable_time: Some(crm_platform::time::timestamp(at)),
        reason: disable_reason(since),
        created_by: created_by.to_owned(),
    };
    crm_platform::outbox::NewEvent::of(&tenant, name, "notification", at, &message)
        .inspect_err(|e| tracing::error!(error = %e, "an endpoint's disabling has no event"))
        .ok()
}

/// The reason an endpoint failing since `since` is disabled with.
pub(crate) fn disable_reason(since: DateTime<Utc>) -> String {
    format!(
        "every attempt failed since {}: enable it once it receives again",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn an_endpoint_reached_once_in_a_batch_is_healthy_and_each_failing_one_is_named_once() {
        let at = |minute: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minute);
        let (up, down) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let acme = TenantId::parse("acme").expect("tenant");
        let finished = |endpoint: Uuid, status_code: i32, minute: i64| Finished {
            tenant: acme.clone(),
            delivery: Uuid::now_v7(),
            endpoint,
            attempt: Some(Attempt {
                attempt: 1,
                time: at(minute),
                status_code,
                error: String::new(),
                latency_ms: 1,
                response_head: String::new(),
            }),
            outcome: Outcome {
                state: DeliveryState::Pending,
                next_attempt_time: None,
                slotted: false,
            },
        };
        let batch = [
            finished(up, 500, 1),
            finished(up, 204, 2),
            finished(down, 500, 3),
            finished(down, 0, 1),
        ];
        let shown = health(&batch).expect("attempts were made");
        assert_eq!(shown.now, at(3));
        assert_eq!(shown.ok, [("acme", up)]);
        assert_eq!(shown.failed, [("acme", down)]);
        let parked = Finished {
            attempt: None,
            ..finished(up, 0, 0)
        };
        assert_eq!(health(std::slice::from_ref(&parked)), None);
    }
}
