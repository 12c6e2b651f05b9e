//! The audit trail on PostgreSQL: entries appended in each write's transaction, read newest
//! first.

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::PgContactStore;
use crate::domain::*;
use crate::store::{History, StoreError, stored_user, stored_word};

#[async_trait]
impl History for PgContactStore {
    async fn list_history(
        &self,
        tenant: &TenantId,
        of: Audited,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let rows = sqlx::query(
            "SELECT id, action, actor, create_time, changes FROM history \
             WHERE tenant_id = $1 AND resource_kind = $2 AND resource_id = $3 AND ($4::uuid IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(tenant.as_str())
        .bind(of.kind())
        .bind(of.id())
        .bind(before)
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                let Json(changes) = row.try_get("changes")?;
                Ok(HistoryEntry {
                    id: row.try_get("id")?,
                    of,
                    action: stored_word(&action, ChangeAction::parse)?,
                    actor: stored_user(&row.try_get::<String, _>("actor")?)?,
                    time: row.try_get("create_time")?,
                    changes,
                })
            })
            .collect()
    }
}

/// Appends an audit entry, and the events it publishes, in the write's transaction.
pub(super) async fn record(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    of: Audited,
    audit: &AuditRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant.as_str())
    .bind(Uuid::now_v7())
    .bind(of.kind())
    .bind(of.id())
    .bind(audit.action.as_str())
    .bind(audit.actor.as_str())
    .bind(now())
    .bind(Json(&audit.changes))
    .execute(&mut **tx)
    .await?;
    crm_platform::outbox::append_pg(tx, &audit.events).await?;
    Ok(())
}
