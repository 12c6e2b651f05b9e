//! The tenant's analytics settings: everyone in the tenant reads them, admins change them.

use crm_platform::error::FieldViolation;
use crm_platform::{ApiError, Principal, Role, TenantId};

use super::AnalyticsApp;
use crate::domain::*;

impl AnalyticsApp {
    /// The tenant's settings (the defaults until an admin changes them).
    pub async fn settings(&self, tenant: &TenantId) -> Result<Settings, ApiError> {
        Ok(self.store.settings(tenant).await?.unwrap_or_default())
    }

    /// Applies `change` to the tenant's settings (admins only).
    pub async fn update_settings(&self, who: &Principal, change: &SettingsChange) -> Result<Settings, ApiError> {
        if !who.has_role(Role::Admin) {
            return Err(ApiError::permission_denied(
                "the analytics settings are changed by admins",
            ));
        }
        let mut next = self.settings(&who.tenant).await?.changed(change).map_err(|broken| {
            ApiError::invalid_fields(
                broken
                    .into_iter()
                    .map(|(field, description)| FieldViolation {
                        field: format!("settings.{field}"),
                        description,
                    })
                    .collect(),
            )
        })?;
        next.update_time = Some(self.clock.now());
        next.updated_by = who.user.as_str().to_owned();
        self.store.put_settings(&who.tenant, &next).await?;
        Ok(next)
    }
}
