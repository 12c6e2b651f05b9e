//! Erasure on SQLite: the tombstone written, personal data scrubbed from interactions, history
//! and the events still served, then the write-ahead log purged.

use async_trait::async_trait;
use crm_platform::TenantId;

use super::SqliteContactStore;
use super::contacts::write_contact;
use super::history::record;
use crate::domain::*;
use crate::store::{Erasure, StoreError, corrupt, erase_event_values};

#[async_trait]
impl Erasure for SqliteContactStore {
    async fn erase_contact(
        &self,
        tenant: &TenantId,
        tombstone: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        write_contact(&mut tx, tenant, tombstone, expected).await?;
        sqlx::query(
            "UPDATE interactions SET subject = '', body = '', outcome = '' WHERE tenant_id = ?1 AND contact_id = ?2",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE history SET changes = (SELECT coalesce(json_group_array(json_object('field', json_extract(value, '$.field'), \
             'old', NULL, 'new', NULL)), '[]') FROM json_each(history.changes)) \
             WHERE tenant_id = ?1 AND resource_kind = 'contact' \
             AND (resource_id = ?2 OR resource_id IN (SELECT id FROM contacts WHERE tenant_id = ?1 AND merged_into = ?2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0.to_string())
        .execute(&mut *tx)
        .await?;
        // The events the feed still serves lose their values: those the triggers wrote before
        // migration 0008 are rebuilt from the scrubbed entries, the application's are blanked.
        sqlx::query(
            "UPDATE outbox_events SET payload = (SELECT json_object('action', h.action, 'changes', json(h.changes)) FROM history AS h \
             WHERE h.tenant_id = outbox_events.tenant_id AND h.id = outbox_events.id) \
             WHERE tenant_id = ?1 AND format = 0 AND id IN (SELECT id FROM history WHERE tenant_id = ?1 AND resource_kind = 'contact' \
             AND (resource_id = ?2 OR resource_id IN (SELECT id FROM contacts WHERE tenant_id = ?1 AND merged_into = ?2)))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0.to_string())
        .execute(&mut *tx)
        .await?;
        let events: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, payload FROM outbox_events WHERE tenant_id = ?1 AND format = 1 AND subject IN \
             (SELECT 'contacts/' || id FROM contacts WHERE tenant_id = ?1 AND (id = ?2 OR merged_into = ?2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0.to_string())
        .fetch_all(&mut *tx)
        .await?;
        for (id, payload) in events {
            let mut payload: serde_json::Value = serde_json::from_str(&payload).map_err(corrupt)?;
            if erase_event_values(&mut payload) {
                sqlx::query("UPDATE outbox_events SET payload = ?3 WHERE tenant_id = ?1 AND id = ?2")
                    .bind(tenant.as_str())
                    .bind(id)
                    .bind(payload.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        record(&mut tx, tenant, Audited::Contact(tombstone.id), audit).await?;
        self.commit(tx).await?;
        // The page images of the log still hold the values before the erase.
        crm_platform::db::purge_sqlite_log(&self.pool).await?;
        Ok(())
    }
}
