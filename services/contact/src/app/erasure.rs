//! Erasure: a contact's personal data removed everywhere in the service, a tombstone left.

use crm_platform::{ApiError, Principal};

use super::{ContactApp, UPDATE_ATTEMPTS, audit};
use crate::domain::*;
use crate::store::StoreError;

impl ContactApp {
    /// Erases a contact's personal data everywhere in this service and leaves a tombstone.
    /// Erasing twice is harmless: the second call returns the tombstone.
    pub async fn erase_contact(&self, who: &Principal, id: ContactId) -> Result<Contact, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "only admins and managers erase personal data",
            ));
        }
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get_contact(who, id).await?;
            if current.erase_time.is_some() {
                return Ok(current);
            }
            let tombstone = current.erased(self.now());
            // The erase entry names the fields that were cleared, never their values.
            let cleared = changes(Some(&current.fields), Some(&tombstone.fields))
                .into_iter()
                .map(|c| FieldChange {
                    old: serde_json::Value::Null,
                    new: serde_json::Value::Null,
                    ..c
                })
                .collect();
            let audit = audit(
                who,
                Audited::Contact(id),
                ChangeAction::Erased,
                cleared,
                tombstone.update_time,
            )?;
            match self
                .store
                .erase_contact(&who.tenant, &tombstone, current.revision, &audit)
                .await
            {
                Ok(()) => {
                    tracing::info!(tenant = %who.tenant, actor = %who.user, contact = %id, "contact erased");
                    return Ok(tombstone);
                }
                Err(StoreError::RevisionMismatch) => continue,
                Err(err) => return Err(err.into_api("contact")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contact kept changing; retry",
        ))
    }
}
