//! Interactions: the customer timeline. Facts, so they are created and deleted, never edited.

use chrono::{DateTime, Utc};
use crm_platform::UserId;

use super::ids::{CompanyId, ContactId, InteractionId};
use super::values::{Direction, InteractionChannel, InteractionType};

/// Longest subject and body.
pub const MAX_SUBJECT: usize = 500;
pub const MAX_BODY: usize = 100_000;
/// Longest duration accepted (a week), to catch unit mistakes.
pub const MAX_DURATION_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub id: InteractionId,
    pub contact: ContactId,
    /// The contact's company when the interaction was logged.
    pub company: Option<CompanyId>,
    pub fields: InteractionFields,
    pub create_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InteractionFields {
    pub kind: InteractionType,
    pub direction: Direction,
    pub channel: Option<InteractionChannel>,
    pub occur_time: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub subject: String,
    pub body: String,
    pub outcome: String,
    pub campaign_id: String,
    pub actor: UserId,
}

impl Interaction {
    pub fn name(&self) -> String {
        self.id.name(self.contact)
    }
}
