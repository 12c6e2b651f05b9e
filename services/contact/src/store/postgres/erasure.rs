//! Erasure on PostgreSQL: the tombstone written, personal data scrubbed from interactions,
//! history and the events still served, in one transaction.

use async_trait::async_trait;
use crm_platform::TenantId;
use uuid::Uuid;

use super::PgContactStore;
use super::contacts::write_contact;
use super::history::record;
use crate::domain::*;
use crate::store::{Erasure, StoreError, erase_event_values};

#[async_trait]
impl Erasure for PgContactStore {
    async fn erase_contact(
        &self,
        tenant: &TenantId,
        tombstone: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        write_contact(&mut tx, tenant, tombstone, expected).await?;
        sqlx::query(
            "UPDATE interactions SET subject = '', body = '', outcome = '' WHERE tenant_id = $1 AND contact_id = $2",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE history SET changes = (SELECT coalesce(jsonb_agg(jsonb_build_object('field', c->>'field', 'old', NULL, 'new', NULL)), '[]'::jsonb) \
             FROM jsonb_array_elements(changes) AS c) WHERE tenant_id = $1 AND resource_kind = 'contact' \
             AND (resource_id = $2 OR resource_id IN (SELECT id FROM contacts WHERE tenant_id = $1 AND merged_into = $2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0)
        .execute(&mut *tx)
        .await?;
        // The events the feed still serves lose their values: those the triggers wrote before
        // migration 0013 are rebuilt from the scrubbed entries, the application's are blanked.
        sqlx::query(
            "UPDATE outbox_events AS e SET payload = jsonb_build_object('action', h.action, 'changes', h.changes) FROM history AS h \
             WHERE e.tenant_id = $1 AND e.format = 0 AND h.tenant_id = $1 AND h.id = e.id AND h.resource_kind = 'contact' \
             AND (h.resource_id = $2 OR h.resource_id IN (SELECT id FROM contacts WHERE tenant_id = $1 AND merged_into = $2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0)
        .execute(&mut *tx)
        .await?;
        let events: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
            "SELECT id, payload FROM outbox_events WHERE tenant_id = $1 AND format = 1 AND subject IN \
             (SELECT 'contacts/' || id FROM contacts WHERE tenant_id = $1 AND (id = $2 OR merged_into = $2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0)
        .fetch_all(&mut *tx)
        .await?;
        for (id, mut payload) in events {
            if erase_event_values(&mut payload) {
                sqlx::query("UPDATE outbox_events SET payload = $3 WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(id)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        record(&mut tx, tenant, Audited::Contact(tombstone.id), audit).await?;
        tx.commit().await?;
        Ok(())
    }
}
