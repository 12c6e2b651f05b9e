//! Ownership on PostgreSQL: the records a user owns counted, and moved in audited batches.

use async_trait::async_trait;
use crm_platform::{TenantId, UserId};
use uuid::Uuid;

use super::PgContactStore;
use crate::domain::*;
use crate::store::{Batch, Moved, Owned, Ownership, StoreError, round_robin};

#[async_trait]
impl Ownership for PgContactStore {
    async fn count_owned(&self, tenant: &TenantId, what: Owned, owner: &UserId) -> Result<u64, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE tenant_id = $1 AND owner = $2 AND merged_into IS NULL",
            what.table()
        )))
        .bind(tenant.as_str())
        .bind(owner.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut tx = self.tx(tenant).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table} WHERE tenant_id = $1 AND owner = $2 AND merged_into IS NULL ORDER BY id LIMIT $3 FOR UPDATE"
        )))
        .bind(tenant.as_str())
        .bind(from.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let targets = round_robin(to, offset, ids.len());
        let owners: Vec<String> = targets.iter().map(|t| to[*t].as_str().to_owned()).collect();
        let entry_ids: Vec<Uuid> = ids.iter().map(|_| Uuid::now_v7()).collect();
        let now = now();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} AS r SET owner = v.owner, revision = r.revision + 1, update_time = $3 \
             FROM unnest($2::uuid[], $4::text[]) AS v(id, owner) WHERE r.tenant_id = $1 AND r.id = v.id"
        )))
        .bind(tenant.as_str())
        .bind(&ids)
        .bind(now)
        .bind(&owners)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO history (tenant_id, id, resource_kind, resource_id, action, actor, create_time, changes) \
             SELECT $1, v.entry, $2, v.id, 'reassigned', $3, $4, \
                    jsonb_build_array(jsonb_build_object('field', 'owner', 'old', $5::text, 'new', v.owner)) \
             FROM unnest($6::uuid[], $7::uuid[], $8::text[]) AS v(entry, id, owner)",
        )
        .bind(tenant.as_str())
        .bind(what.kind())
        .bind(actor.as_str())
        .bind(now)
        .bind(from.as_str())
        .bind(&entry_ids)
        .bind(&ids)
        .bind(&owners)
        .execute(&mut *tx)
        .await?;
        let events = ids
            .iter()
            .zip(&targets)
            .map(|(id, target)| {
                publish(&Moved {
                    of: what.record(*id),
                    to: to[*target].clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        crm_platform::outbox::append_pg(&mut tx, &events).await?;
        tx.commit().await?;
        let mut shares = vec![0_u64; to.len()];
        for target in targets {
            shares[target] += 1;
        }
        Ok(shares)
    }
}
