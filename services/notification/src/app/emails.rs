//! Emails and where they go: admins and managers read the tenant's emails; each user sets
//! the address of their own (admins anyone's).

use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal, Role, UserId};
use uuid::Uuid;

use super::{NotificationApp, ensure_manager};
use crate::domain::{Email, Preferences, email_address};

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

    /// Replaces `user`'s preferences: a set address must be one an email can go to.
    pub async fn set_preferences(
        &self,
        who: &Principal,
        user: &str,
        asked: Preferences,
    ) -> Result<Preferences, ApiError> {
        ensure_self_or_admin(who, user)?;
        let email_address = if asked.email_address.trim().is_empty() {
            String::new()
        } else {
            email_address(&asked.email_address)
                .map_err(|reason| ApiError::invalid_field("notification_preferences.email_address", reason))?
        };
        let kept = Preferences {
            email_address,
            update_time: Some(self.clock.now()),
        };
        self.store.set_preferences(&who.tenant, user, &kept).await?;
        Ok(kept)
    }
}
