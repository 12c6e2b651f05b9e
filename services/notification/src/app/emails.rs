//! Emails and where they go: admins and managers read the tenant's emails; each user sets
//! the address of their own (admins anyone's).

use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal, Role, UserId};
use uuid::Uuid;

use crm_platform::error::Violations;

use super::{NotificationApp, ensure_manager};
use crate::domain::fatigue::{self, Fatigue, MAX_HOURLY_CAP, MAX_MUTED, Mute, QuietHours};
use crate::domain::{Channel, Email, Preferences, email_address};

/// What a request asks of a user's preferences (every field replaced).
#[derive(Debug, Clone, Default)]
pub struct PreferencesSpec {
    pub email_address: String,
    /// Empty: UTC.
    pub time_zone: String,
    /// (start, end), `HH:MM`.
    pub quiet_hours: Option<(String, String)>,
    pub daily_digest: bool,
    /// Empty: 08:00.
    pub digest_time: String,
    /// (category, channel: None when the request's is not one).
    pub muted: Vec<(String, Option<Channel>)>,
    pub hourly_email_cap: i32,
}

/// The collection of users, and the singleton of a user's preferences under it.
const USERS: &str = "users/";
const PREFERENCES: &str = "/notificationPreferences";

/// The user `name` (`users/{user}/notificationPreferences`, `users/me` for the caller) names.
pub fn preferences_user(who: &Principal, name: &str) -> Result<String, ApiError> {
    let user = name
        .strip_prefix(USERS)
        .and_then(|rest| rest.strip_suffix(PREFERENCES))
        .ok_or_else(|| ApiError::invalid_field("name", "must be `users/{user}/notificationPreferences`"))?;
    if user == "me" {
        return Ok(who.user.as_str().to_owned());
    }
    UserId::parse(user)
        .map(|u| u.as_str().to_owned())
        .map_err(|reason| ApiError::invalid_field("name", reason))
}

/// The name of `user`'s preferences.
pub fn preferences_name(user: &str) -> String {
    format!("{USERS}{user}{PREFERENCES}")
}

/// Fails unless the caller is `user` or an admin.
fn ensure_self_or_admin(who: &Principal, user: &str) -> Result<(), ApiError> {
    if who.user.as_str() == user || who.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::permission_denied(
            "a user's notification preferences are theirs and their admins'",
        ))
    }
}

impl NotificationApp {
    pub async fn emails(&self, who: &Principal, page: &PageRequest<Uuid>) -> Result<Page<Email>, ApiError> {
        ensure_manager(who, "emails")?;
        let listed = self.store.emails(&who.tenant, page.after, page.fetch()).await?;
        Ok(page.page(listed, |e| e.id))
    }

    pub async fn preferences(&self, who: &Principal, user: &str) -> Result<Preferences, ApiError> {
        ensure_self_or_admin(who, user)?;
        Ok(self.store.preferences(&who.tenant, user).await?.unwrap_or_default())
    }

    /// Replaces `user`'s preferences, checked whole (every problem named, nothing kept).
    pub async fn set_preferences(
        &self,
        who: &Principal,
        user: &str,
        asked: PreferencesSpec,
    ) -> Result<Preferences, ApiError> {
        ensure_self_or_admin(who, user)?;
        let mut v = Violations::new("notification_preferences.");
        let email_address = if asked.email_address.trim().is_empty() {
            String::new()
        } else {
            v.check("email_address", email_address(&asked.email_address))
                .unwrap_or_default()
        };
        let defaults = Fatigue::default();
        let time_zone = if asked.time_zone.trim().is_empty() {
            Some(defaults.time_zone)
        } else {
            v.check("time_zone", fatigue::time_zone(&asked.time_zone))
        };
        let quiet_hours = asked.quiet_hours.as_ref().and_then(|(start, end)| {
            let start = v.check("quiet_hours.start", fatigue::time_of_day(start));
            let end = v.check("quiet_hours.end", fatigue::time_of_day(end));
            match (start, end) {
                (Some(start), Some(end)) if start == end => {
                    v.add("quiet_hours.end", "must differ from its start");
                    None
                }
                (Some(start), Some(end)) => Some(QuietHours { start, end }),
                _ => None,
            }
        });
        let digest_time = if asked.digest_time.trim().is_empty() {
            Some(defaults.digest_time)
        } else {
            v.check("digest_time", fatigue::time_of_day(&asked.digest_time))
        };
        let mut muted = Vec::new();
        for (i, (category, channel)) in v.bounded("muted", &asked.muted, MAX_MUTED).iter().enumerate() {
            let category = v.check(format!("muted[{i}].category"), fatigue::category(category));
            if channel.is_none() {
                v.add(format!("muted[{i}].channel"), "must be CHANNEL_IN_APP or CHANNEL_EMAIL");
            }
            if let (Some(category), Some(channel)) = (category, *channel) {
                let mute = Mute { category, channel };
                if !muted.contains(&mute) {
                    muted.push(mute);
                }
            }
        }
        let cap = u32::try_from(asked.hourly_email_cap)
            .ok()
            .filter(|cap| *cap <= MAX_HOURLY_CAP);
        if cap.is_none() {
            v.add("hourly_email_cap", format!("must be 0 (no cap) to {MAX_HOURLY_CAP}"));
        }
        v.finish()?;
        let kept = Preferences {
            email_address,
            fatigue: Fatigue {
                time_zone: time_zone.unwrap_or(defaults.time_zone),
                quiet_hours,
                daily_digest: asked.daily_digest,
                digest_time: digest_time.unwrap_or(defaults.digest_time),
                muted,
                hourly_email_cap: cap.unwrap_or(0),
            },
            update_time: Some(self.clock.now()),
        };
        self.store.set_preferences(&who.tenant, user, &kept).await?;
        Ok(kept)
    }
}
