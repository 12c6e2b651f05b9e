//! The notification service's types: endpoints, rules, deliveries and their attempts,
//! in-app notifications, and what decides them (conditions, signatures, the retry schedule,
//! the addresses a webhook may reach, matching an event against the rules).

pub mod address;
pub mod condition;
pub mod fatigue;
pub mod matching;
pub mod members;
pub mod reach;
pub mod schedule;
pub mod signature;
pub mod template;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use template::EmailTemplate;

crm_platform::resource_id!(
    /// Id of a webhook endpoint; name `webhookEndpoints/{id}`.
    EndpointId, "webhookEndpoints"
);
crm_platform::resource_id!(
    /// Id of a rule; name `rules/{id}`.
    RuleId, "rules"
);
crm_platform::resource_id!(
    /// Id of a delivery; name `deliveries/{id}`.
    DeliveryId, "deliveries"
);
crm_platform::resource_id!(
    /// Id of an in-app notification; name `notifications/{id}`.
    NotificationId, "notifications"
);
crm_platform::resource_id!(
    /// Id of an email; name `emails/{id}`.
    EmailId, "emails"
);

/// Endpoints a tenant may have.
pub const MAX_ENDPOINTS: usize = 100;
/// Rules a tenant may have.
pub const MAX_RULES: usize = 500;

/// A receiver of webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    /// Only these event types reach it (every type when empty).
    pub event_types: Vec<String>,
    pub description: String,
    pub secret: String,
    pub create_time: DateTime<Utc>,
    /// The secret before the last rotation, signing beside `secret` until `previous_until`.
    pub previous_secret: String,
    pub previous_until: Option<DateTime<Utc>>,
    /// Who made it: told in their inbox when it is disabled.
    pub created_by: String,
    /// Deliveries a second it takes at most, across every replica (0: no limit).
    pub max_per_second: u32,
    /// Since when its attempts have failed without a success.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was disabled (after failing for [`DISABLE_AFTER`]); its deliveries wait.
    pub disable_time: Option<DateTime<Utc>>,
    pub disable_reason: String,
}

/// The type of the inbox notification telling an endpoint's maker it was disabled.
pub const ENDPOINT_DISABLED: &str = "crm.notification.v1.WebhookEndpointDisabled";

/// How long an endpoint fails without a success before it is disabled.
pub const DISABLE_AFTER: chrono::Duration = chrono::Duration::days(5);
/// How late past its slot a delivery may still be claimed and go on it: later (replicas down
/// for a while, a lease that ran out), it takes a new slot, so that a backlog of old slots
/// never goes all at once.
pub const SLOT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The earliest slot a claim at `now` still lets a delivery go on ([`SLOT_GRACE`] before it).
pub fn slot_honoured_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(SLOT_GRACE).unwrap_or_default()
}

/// The time between two slots of a throttle allowing `per_second` deliveries a second (at
/// least 1).
pub fn slot_interval(per_second: u32) -> chrono::Duration {
    chrono::Duration::microseconds(1_000_000 / i64::from(per_second.max(1)))
}

/// Most deliveries a second an endpoint's throttle may allow.
pub const MAX_PER_SECOND: u32 = 10_000;

/// How long a rotated secret keeps signing by default.
pub const DEFAULT_OVERLAP: chrono::Duration = chrono::Duration::days(1);
/// How long a rotated secret may keep signing at most.
pub const MAX_OVERLAP_SECONDS: i64 = 7 * 24 * 3600;

/// The secrets that sign a delivery at `now`: the current one, and the previous one while its
/// overlap lasts.
pub fn signing_secrets(
    secret: String,
    previous: String,
    previous_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut secrets = vec![secret];
    if !previous.is_empty() && previous_until.is_some_and(|until| until > now) {
        secrets.push(previous);
    }
    secrets
}

impl Endpoint {
    /// Whether events of `event_type` may reach it.
    pub fn takes(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Who a rule reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recipient {
    /// A webhook endpoint of the tenant.
    Endpoint(Uuid),
    /// A user's inbox.
    User(String),
    /// The user the event names as its record's assignee or owner.
    Owner,
    /// An email address.
    Email(String),
    /// The contact the event is about, by email, with their consent.
    Contact,
    /// Every member of the tenant holding the role (see [`members`]).
    Role(crm_platform::identity::Role),
}

/// The prefix of a user as a recipient.
pub const USERS: &str = "users/";
/// The prefix of an email address as a recipient.
pub const MAILTO: &str = "mailto:";
/// The prefix of a role as a recipient.
pub const ROLES: &str = "roles/";

impl Recipient {
    /// A recipient as a rule names it: `webhookEndpoints/{id}`, `users/{id}`, `roles/{role}`,
    /// `owner`, `contact` or `mailto:{address}`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "owner" {
            return Ok(Recipient::Owner);
        }
        if raw == "contact" {
            return Ok(Recipient::Contact);
        }
        if raw.starts_with(EndpointId::COLLECTION) {
            return EndpointId::parse_name(raw)
                .map(|id| Recipient::Endpoint(id.0))
                .map_err(|reason| format!("`{raw}` {reason}"));
        }
        if let Some(user) = raw.strip_prefix(USERS) {
            return crm_platform::UserId::parse(user)
                .map(|u| Recipient::User(u.as_str().to_owned()))
                .map_err(|reason| format!("`{raw}`: {reason}"));
        }
        if let Some(role) = raw.strip_prefix(ROLES) {
            return members::parse_role(role)
                .map(Recipient::Role)
                .map_err(|reason| format!("`{raw}`: {reason}"));
        }
        if let Some(address) = raw.strip_prefix(MAILTO) {
            return email_address(address)
                .map(Recipient::Email)
                .map_err(|reason| format!("`{raw}`: {reason}"));
        }
        Err(format!(
            "`{raw}` is not a recipient: `webhookEndpoints/{{id}}`, `users/{{id}}`, `roles/{{role}}`, `owner`, `contact` or `mailto:{{address}}`"
        ))
    }

    pub fn name(&self) -> String {
        match self {
            Recipient::Endpoint(id) => EndpointId(*id).name(),
            Recipient::User(user) => format!("{USERS}{user}"),
            Recipient::Owner => "owner".to_owned(),
            Recipient::Email(address) => format!("{MAILTO}{address}"),
            Recipient::Contact => "contact".to_owned(),
            Recipient::Role(role) => format!("{ROLES}{}", role.as_str()),
        }
    }
}

/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_ADDRESS: usize = 254;

/// `raw` as an email address one mail can go to: trimmed, checked by the mail library's
/// parser, one address without a display name.
pub fn email_address(raw: &str) -> Result<String, String> {
    let address = raw.trim();
    if address.is_empty() {
        return Err("is empty".to_owned());
    }
    if address.len() > MAX_EMAIL_ADDRESS {
        return Err(format!("is longer than {MAX_EMAIL_ADDRESS} bytes"));
    }
    address
        .parse::<lettre::Address>()
        .map(|a| a.to_string())
        .map_err(|e| format!("`{address}` is not an email address: {e}"))
}

/// How a rule reaches the users among its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    /// The user's in-app inbox.
    InApp,
    /// An email to the user's address.
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::InApp, Self::Email].into_iter().find(|c| c.as_str() == raw)
    }
}

/// A rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: Uuid,
    pub display_name: String,
    pub event_types: Vec<String>,
    /// In the filter language; checked against the event types when saved.
    pub condition: String,
    pub recipients: Vec<Recipient>,
    /// How its users hear of it (webhook endpoints and email addresses have their own).
    pub channels: Vec<Channel>,
    /// Its emails.
    pub email_template: EmailTemplate,
    /// What a user may mute it by (a slug: `deals`, `tasks`).
    pub category: String,
    /// Sent whatever its users' quiet hours, digest, cap or mutes.
    pub critical: bool,
    /// Its own digest window and hourly cap for each user's emails.
    pub pacing: fatigue::Pacing,
    pub created_by: String,
    pub create_time: DateTime<Utc>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One event to one endpoint by one rule. Its id is the `webhook-id` of every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub rule: Uuid,
    pub endpoint: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
}

/// A delivery as matching makes it: its body is the webhook's, fixed once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub id: Uuid,
    pub rule: Uuid,
    pub endpoint: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub create_time: DateTime<Utc>,
}

/// A delivery claimed for an attempt, with what the attempt needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub tenant: String,
    pub id: Uuid,
    pub endpoint: Uuid,
    /// The endpoint's throttle (0: none).
    pub max_per_second: u32,
    /// Whether the endpoint is disabled: the delivery waits until it is enabled.
    pub disabled: bool,
    pub url: String,
    /// The secrets that sign it: the current one first.
    pub secrets: Vec<String>,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Whether it is due at the slot its endpoint's throttle gave it, claimed within
    /// [`SLOT_GRACE`] of it: it goes without taking another.
    pub slotted: bool,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// From 1.
    pub attempt: i32,
    pub time: DateTime<Utc>,
    /// 0 without an answer.
    pub status_code: i32,
    /// Why it failed without an answer.
    pub error: String,
    pub latency_ms: i64,
    /// The first bytes of the answer.
    pub response_head: String,
}

impl Attempt {
    /// Whether the endpoint took the delivery (a 2xx answer).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// An in-app notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: Uuid,
    pub user: String,
    pub rule: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub title: String,
    pub read: bool,
    /// Whether the user opened their inbox since it came.
    pub seen: bool,
    /// Whether the user put it out of their inbox.
    pub archived: bool,
    pub create_time: DateTime<Utc>,
}

/// Where an email stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailState {
    /// Waiting for its next attempt.
    Pending,
    /// The mail server took it.
    Sent,
    /// It cannot be sent: every attempt failed, the server refused it for good, or its
    /// template failed.
    Failed,
    /// It was not sent on purpose: the reason says why (no address, opted out).
    Refused,
    /// Held back by its user's preferences until `next_attempt_time`: the reason says why.
    Held,
    /// Carried by a digest email (`digest`) instead of sent alone.
    Digested,
}

impl EmailState {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailState::Pending => "pending",
            EmailState::Sent => "sent",
            EmailState::Failed => "failed",
            EmailState::Refused => "refused",
            EmailState::Held => "held",
            EmailState::Digested => "digested",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Sent,
            Self::Failed,
            Self::Refused,
            Self::Held,
            Self::Digested,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// One event's email to one recipient by one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub id: Uuid,
    pub rule: Uuid,
    /// `users/{id}` or `mailto:{address}`.
    pub recipient: String,
    /// Where it went or goes (empty until a user's address is known).
    pub address: String,
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub state: EmailState,
    pub attempts: i32,
    /// Why the last attempt failed, or why it was refused.
    pub last_error: String,
    pub next_attempt_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub send_time: Option<DateTime<Utc>>,
    /// The digest email that carried it.
    pub digest: Option<Uuid>,
}

/// An email as matching makes it: rendered once, or failed with the template's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEmail {
    pub id: Uuid,
    pub rule: Uuid,
    /// The contact of a `contact` recipient (`contacts/{id}`).
    pub contact: Option<String>,
    /// The rule's category, criticality and pacing.
    pub category: String,
    pub critical: bool,
    pub pacing: fatigue::Pacing,
    pub recipient: Recipient,
    pub event_id: String,
    pub event_type: String,
    pub rendered: Result<template::Rendered, String>,
    pub create_time: DateTime<Utc>,
}

/// An email claimed for an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEmail {
    pub tenant: String,
    pub id: Uuid,
    /// `users/{id}` or `mailto:{address}`.
    pub recipient: String,
    /// The address: the recipient's, or the user's from their preferences (empty when they
    /// have none).
    pub address: String,
    pub rendered: template::Rendered,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The user of a `users/` recipient.
    pub user: Option<String>,
    /// The rule that made it, and how it paces its emails to each user.
    pub rule: Uuid,
    pub pacing: fatigue::Pacing,
    pub category: String,
    pub critical: bool,
    /// The user's preferences (the defaults for an address).
    pub fatigue: fatigue::Fatigue,
    /// For an email to a contact: whether they consented to email (None while the contact
    /// is not known from the contact feed).
    pub contact_consent: Option<bool>,
}

/// A user's notification settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preferences {
    /// Where their email goes (empty: their user id when it is an address, else none).
    pub email_address: String,
    pub fatigue: fatigue::Fatigue,
    pub update_time: Option<DateTime<Utc>>,
}

/// An email held back for a digest or a cap, as a digest lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldEmail {
    pub id: Uuid,
    pub subject: String,
    pub event_type: String,
    pub create_time: DateTime<Utc>,
}

/// A user's emails held for a digest or a cap whose time has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDigest {
    pub tenant: String,
    pub user: String,
    pub held: Vec<HeldEmail>,
}

/// A change of one user's inbox, for its watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxChange {
    pub tenant: String,
    pub user: String,
}

impl InboxChange {
    /// A change that may be anyone's (changes were missed): every watcher looks.
    pub fn anyone() -> Self {
        Self {
            tenant: String::new(),
            user: String::new(),
        }
    }

    /// Whether it may be `user`'s of `tenant`.
    pub fn concerns(&self, tenant: &str, user: &str) -> bool {
        self.tenant.is_empty() || (self.tenant == tenant && self.user == user)
    }

    /// As PostgreSQL announces it: `{tenant}/{user}` (a tenant id has no `/`).
    pub fn parse(raw: &str) -> Option<Self> {
        let (tenant, user) = raw.split_once('/')?;
        Some(Self {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
        })
    }
}
