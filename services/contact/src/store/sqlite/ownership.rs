//! Ownership on SQLite: the records a user owns counted, and moved in audited batches.

use async_trait::async_trait;
use crm_platform::{TenantId, UserId};
use uuid::Uuid;

use super::{SqliteContactStore, micros, to_json};
use crate::domain::*;
use crate::store::{Batch, Moved, Owned, Ownership, StoreError, corrupt, round_robin};

#[async_trait]
impl Ownership for SqliteContactStore {
    async fn count_owned(&self, tenant: &TenantId, what: Owned, owner: &UserId) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE tenant_id = ?1 AND owner = ?2 AND merged_into IS NULL",
            what.table()
        )))
        .bind(tenant.as_str())
        .bind(owner.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn reassign_batch(&self, tenant: &TenantId, batch: &Batch<'_>) -> Result<Vec<u64>, StoreError> {
        let Batch {
            what,
            from,
            to,
            offset,
            limit,
            actor,
            publish,
        } = *batch;
        let table = what.table();
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table} WHERE tenant_id = ?1 AND owner = ?2 AND merged_into IS NULL ORDER BY id LIMIT ?3"
        )))
        .bind(tenant.as_str())
        .bind(from.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let targets = round_robin(to, offset, ids.len());
        let now = micros(now());
        let mut shares = vec![0_u64; to.len()];
        let mut events = Vec::with_capacity(ids.len());
        for (id, target) in ids.iter().zip(targets) {
            let owner = to[target].as_str();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET owner = ?3, revision = revision + 1, update_time = ?4 WHERE tenant_id = ?1 AND id = ?2"
            )))
            .bind(tenant.as_str())
            .bind(id)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let change = [FieldChange {
                field: "owner".into(),
                old: from.as_str().into(),
                new: owner.into(),
            }];
            sqlx::query(
                "INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes) \
                 VALUES (?1, ?2, ?3, ?4, 'reassigned', ?5, ?6, ?7)",
            )
            .bind(tenant.as_str())
            .bind(Uuid::now_v7().to_string())
            .bind(what.kind())
            .bind(id)
            .bind(actor.as_str())
            .bind(now)
            .bind(to_json(&change)?)
            .execute(&mut *tx)
            .await?;
            let record = Uuid::parse_str(id).map_err(corrupt)?;
            events.push(publish(&Moved {
                of: what.record(record),
                to: to[target].clone(),
            })?);
            shares[target] += 1;
        }
        crm_platform::outbox::append_sqlite(&mut tx, &events).await?;
        self.commit(tx).await?;
        Ok(shares)
    }
}
