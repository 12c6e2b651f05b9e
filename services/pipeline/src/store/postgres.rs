//! The PostgreSQL store: every transaction pinned to its tenant (row-level security).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::{begin_all_tenants, begin_tenant};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{
    Bind, BoardStage, Doc, Kind, ListQuery, Listed, PipelineStore, StoreError, Write, board_stages, list_sql,
    scrub_payload,
};
use crate::domain::{Money, Transition, TransitionKind};

#[derive(Clone)]
pub struct PgPipelineStore {
    pool: PgPool,
}

impl PgPipelineStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn doc(row: &PgRow) -> Result<Doc, sqlx::Error> {
    Ok(Doc {
        id: row.try_get("id")?,
        revision: row.try_get("revision")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        body: row.try_get("body")?,
    })
}

/// Maps a unique violation to the rule it broke.
fn write_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        return match db.constraint() {
            Some("products_sku") => StoreError::Taken("sku"),
            Some("quotas_owner_period") => StoreError::Taken("owner and period"),
            Some("deals_external_id" | "leads_external_id") => StoreError::Taken("external_id"),
            Some("idempotency_keys_pkey") => StoreError::RequestIdUsed,
            _ => StoreError::Stale,
        };
    }
    StoreError::Database(err)
}

/// Everything of a [`Write`], in the caller's transaction.
async fn write_in(tx: &mut PgConnection, tenant: &TenantId, write: &Write) -> Result<(), StoreError> {
    if let Some(key) = &write.request {
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, kind, request_id, fingerprint, resource_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.as_str())
        .bind(key.kind.table())
        .bind(&key.request_id)
        .bind(&key.fingerprint)
        .bind(key.resource)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    }
    for put in &write.puts {
        let table = put.kind.table();
        let written = match put.expected {
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (tenant_id, id, revision, create_time, update_time, body) VALUES ($1, $2, $3, $4, $5, $6)"
            ))),
            Some(_) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET revision = $3, create_time = $4, update_time = $5, body = $6 \
                 WHERE tenant_id = $1 AND id = $2 AND revision = $7"
            ))),
        }
        .bind(tenant.as_str())
        .bind(put.doc.id)
        .bind(put.doc.revision)
        .bind(put.doc.create_time)
        .bind(put.doc.update_time)
        .bind(&put.doc.body)
        .bind(put.expected.unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(write_error)?
        .rows_affected();
        if written != 1 {
            return Err(StoreError::Stale);
        }
    }
    for t in &write.transitions {
        sqlx::query(
            "INSERT INTO deal_transitions (tenant_id, deal_id, seq, kind, from_stage, to_stage, from_stage_name, \
             to_stage_name, amount_minor, currency, actor, time, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(tenant.as_str())
        .bind(t.deal)
        .bind(t.seq)
        .bind(t.kind.as_str())
        .bind(t.from_stage)
        .bind(t.to_stage)
        .bind(&t.from_stage_name)
        .bind(&t.to_stage_name)
        .bind(t.amount.minor)
        .bind(&t.amount.currency)
        .bind(&t.actor)
        .bind(t.time)
        .bind(&t.reason)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    }
    for (merged, survivor) in &write.merges {
        sqlx::query("UPDATE contact_merges SET survivor_id = $3 WHERE tenant_id = $1 AND survivor_id = $2")
            .bind(tenant.as_str())
            .bind(merged)
            .bind(survivor)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO contact_merges (tenant_id, merged_id, survivor_id) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, merged_id) DO UPDATE SET survivor_id = excluded.survivor_id",
        )
        .bind(tenant.as_str())
        .bind(merged)
        .bind(survivor)
        .execute(&mut *tx)
        .await?;
    }
    crm_platform::outbox::append_pg(&mut *tx, &write.events).await?;
    for id in &write.scrub {
        for table in ["outbox_events", "audit_log"] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, payload FROM {table} WHERE tenant_id = $1 AND strpos(payload::text, $2) > 0"
            )))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let event: Uuid = row.try_get("id")?;
                let mut payload: serde_json::Value = row.try_get("payload")?;
                if scrub_payload(&mut payload, id) {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET payload = $3 WHERE tenant_id = $1 AND id = $2"
                    )))
                    .bind(tenant.as_str())
                    .bind(event)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
    }
    Ok(())
}

fn transition(row: &PgRow) -> Result<Transition, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Transition {
        deal: row.try_get("deal_id")?,
        seq: row.try_get("seq")?,
        kind: TransitionKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("transition kind {kind}")))?,
        from_stage: row.try_get("from_stage")?,
        to_stage: row.try_get("to_stage")?,
        from_stage_name: row.try_get("from_stage_name")?,
        to_stage_name: row.try_get("to_stage_name")?,
        amount: Money {
            minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
        },
        actor: row.try_get("actor")?,
        time: row.try_get("time")?,
        reason: row.try_get("reason")?,
    })
}

#[async_trait]
impl PipelineStore for PgPipelineStore {
    async fn get(&self, tenant: &TenantId, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, revision, create_time, update_time, body FROM {} WHERE tenant_id = $1 AND id = $2",
            kind.table()
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(doc).transpose()?)
    }

    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<Vec<Listed>, StoreError> {
        let (sql, binds) = list_sql(tenant, query, |n| format!("${n}"), |p| format!("{p}::uuid"));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            q = match bind {
                Bind::Text(text) => q.bind(text),
                Bind::Int(int) => q.bind(int),
            };
        }
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(Listed {
                    order: row.try_get::<i64, _>("ord")?,
                    doc: doc(row)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn write(&self, tenant: &TenantId, write: &Write) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        write_in(&mut tx, tenant, write).await?;
        tx.commit().await.map_err(write_error)?;
        Ok(())
    }

    async fn request(
        &self,
        tenant: &TenantId,
        kind: Kind,
        request_id: &str,
    ) -> Result<Option<(String, Uuid)>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row: Option<(String, Uuid)> = sqlx::query_as(
            "SELECT fingerprint, resource_id FROM idempotency_keys WHERE tenant_id = $1 AND kind = $2 AND request_id = $3",
        )
        .bind(tenant.as_str())
        .bind(kind.table())
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn board(
        &self,
        tenant: &TenantId,
        pipeline: Uuid,
        owner: Option<&str>,
        per_stage: usize,
    ) -> Result<Vec<BoardStage>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let pipeline = pipeline.to_string();
        let sums = sqlx::query(
            // numeric sums (board_counts.amount is numeric, see migration 0003): a total past
            // the bigint range saturates instead of failing the board.
            "SELECT stage_id, currency, sum(deals)::bigint AS n, \
             least(sum(amount), 9223372036854775807)::bigint AS total FROM board_counts \
             WHERE tenant_id = $1 AND pipeline_id = $2 AND ($3::text IS NULL OR owner = $3) \
             GROUP BY stage_id, currency HAVING sum(deals) > 0 ORDER BY stage_id, currency",
        )
        .bind(tenant.as_str())
        .bind(&pipeline)
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let mut stages = board_stages(
            sums.iter()
                .map(|row| {
                    let stage: String = row.try_get("stage_id")?;
                    let money = Money {
                        minor: row.try_get("total")?,
                        currency: row.try_get("currency")?,
                    };
                    Ok((
                        Uuid::parse_str(&stage).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        row.try_get::<i64, _>("n")?,
                        money,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?,
        );
        if per_stage > 0 && !stages.is_empty() {
            let ids: Vec<String> = stages.iter().map(|s| s.stage.to_string()).collect();
            let rows = sqlx::query(
                "SELECT d.stage_id, d.id, d.revision, d.create_time, d.update_time, d.body FROM unnest($3::text[]) AS s(stage_id) \
                 CROSS JOIN LATERAL (SELECT stage_id, id, revision, create_time, update_time, body FROM deals \
                   WHERE tenant_id = $1 AND pipeline_id = $2 AND status = 'open' AND stage_id = s.stage_id \
                   AND ($4::text IS NULL OR owner = $4) ORDER BY close_date NULLS LAST, id LIMIT $5) AS d",
            )
            .bind(tenant.as_str())
            .bind(&pipeline)
            .bind(&ids)
            .bind(owner)
            .bind(i64::try_from(per_stage).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let stage: String = row.try_get("stage_id")?;
                if let Some(column) = stages.iter_mut().find(|s| s.stage.to_string() == stage) {
                    column.deals.push(doc(row)?);
                }
            }
        }
        tx.commit().await?;
        Ok(stages)
    }

    async fn transitions(
        &self,
        tenant: &TenantId,
        deal: Uuid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM deal_transitions WHERE tenant_id = $1 AND deal_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(deal)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(transition).collect()
    }

    async fn owed_due_tasks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<(TenantId, Doc)>, Option<DateTime<Utc>>), StoreError> {
        let mut tx = begin_all_tenants(&self.pool).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, id, revision, create_time, update_time, body FROM tasks \
             WHERE pending_due IS NOT NULL AND pending_due <= $1 ORDER BY pending_due LIMIT $2",
        )
        .bind(now.timestamp_micros())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let next: Option<i64> =
            sqlx::query_scalar("SELECT min(pending_due) FROM tasks WHERE pending_due IS NOT NULL AND pending_due > $1")
                .bind(now.timestamp_micros())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        let owed = rows
            .iter()
            .map(|row| {
                let tenant: String = row.try_get("tenant_id")?;
                let tenant = TenantId::parse(&tenant).map_err(StoreError::Corrupt)?;
                Ok((tenant, doc(row)?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((owed, next.and_then(DateTime::from_timestamp_micros)))
    }

    async fn referencing(
        &self,
        tenant: &TenantId,
        kind: Kind,
        field: &'static str,
        id: Uuid,
    ) -> Result<Vec<Doc>, StoreError> {
        let column = if field == "company" { "company_id" } else { "contact_id" };
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, revision, create_time, update_time, body FROM {} WHERE tenant_id = $1 AND {column} = $2 ORDER BY id",
            kind.table()
        )))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(doc).collect::<Result<_, _>>()?)
    }

    async fn merged_into(&self, tenant: &TenantId, survivor: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT merged_id FROM contact_merges WHERE tenant_id = $1 AND survivor_id = $2")
                .bind(tenant.as_str())
                .bind(survivor)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::pg_checkpoint(&self.pool, consumer).await?)
    }

    async fn follow(
        &self,
        consumer: &str,
        previous: u64,
        to: u64,
        writes: &[(TenantId, Write)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !crm_platform::consumer::pg_claim(&mut tx, consumer, previous).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        for (tenant, write) in writes {
            sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            write_in(&mut tx, tenant, write).await?;
        }
        crm_platform::consumer::pg_advance(&mut tx, consumer, to).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn purge_erased(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
