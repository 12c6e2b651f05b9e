//! The audit trail on SQLite: entries appended in each write's transaction, read newest first.

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::{SQLITE_MAX_BATCH_VALUES, SqliteContactStore, json, micros, time, to_json, uuid};
use crate::domain::*;
use crate::store::{History, StoreError, stored_user, stored_word};

#[async_trait]
impl History for SqliteContactStore {
    async fn list_history(
        &self,
        tenant: &TenantId,
        of: Audited,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, action, actor, create_time, changes FROM history \
             WHERE tenant_id = ?1 AND resource_kind = ?2 AND resource_id = ?3 AND (?4 IS NULL OR id < ?4) \
             ORDER BY id DESC LIMIT ?5",
        )
        .bind(tenant.as_str())
        .bind(of.kind())
        .bind(of.id().to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                Ok(HistoryEntry {
                    id: uuid(row, "id")?,
                    of,
                    action: stored_word(&action, ChangeAction::parse)?,
                    actor: stored_user(&row.try_get::<String, _>("actor")?)?,
                    time: time(row, "create_time")?,
                    changes: json(row, "changes")?,
                })
            })
            .collect()
    }
}

/// Appends an audit entry in the write's transaction.
pub(super) async fn record(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    of: Audited,
    audit: &AuditRecord,
) -> Result<(), StoreError> {
    record_all(tx, tenant, &[(of, audit)]).await
}

/// Writes audit entries, many to a statement.
pub(super) async fn record_all(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    entries: &[(Audited, &AuditRecord)],
) -> Result<(), StoreError> {
    let time = micros(now());
    for chunk in entries.chunks(SQLITE_MAX_BATCH_VALUES / 8) {
        let mut rows = Vec::with_capacity(chunk.len());
        for (of, audit) in chunk {
            rows.push((of, audit, to_json(&audit.changes)?));
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes) ",
        );
        qb.push_values(rows, |mut row, (of, audit, changes)| {
            row.push_bind(tenant.as_str().to_owned())
                .push_bind(Uuid::now_v7().to_string())
                .push_bind(of.kind())
                .push_bind(of.id().to_string())
                .push_bind(audit.action.as_str())
                .push_bind(audit.actor.as_str().to_owned())
                .push_bind(time)
                .push_bind(changes);
        });
        qb.build().execute(&mut **tx).await?;
    }
    let events: Vec<&crm_platform::outbox::NewEvent> = entries.iter().flat_map(|(_, audit)| &audit.events).collect();
    crm_platform::outbox::append_sqlite(tx, &events).await?;
    Ok(())
}
