//! The SQLite store (`crm serve`): writers serialised by SQLite, events numbered as written.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::begin_sqlite_write;
use crm_platform::outbox::{Outbox, SqliteOutbox};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    Bind, BoardStage, Doc, Kind, ListQuery, Listed, PipelineStore, StoreError, Write, board_stages, list_sql,
    scrub_payload,
};
use crate::domain::{Money, Transition, TransitionKind};

#[derive(Clone)]
pub struct SqlitePipelineStore {
    pool: SqlitePool,
    outbox: Arc<SqliteOutbox>,
}

impl SqlitePipelineStore {
    pub fn new(pool: SqlitePool) -> Self {
        let outbox = SqliteOutbox::new(pool.clone());
        Self { pool, outbox }
    }

    /// The outbox this store's writes fill.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox) as Arc<dyn Outbox>
    }
}

fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

fn uuid(raw: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(raw).map_err(corrupt)
}

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(format!("time {micros}")))
}

fn doc(row: &SqliteRow) -> Result<Doc, StoreError> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    Ok(Doc {
        id: uuid(&id)?,
        revision: row.try_get("revision")?,
        create_time: time(row.try_get("create_time")?)?,
        update_time: time(row.try_get("update_time")?)?,
        body: serde_json::from_str(&body).map_err(corrupt)?,
    })
}

/// Maps a unique violation to the rule it broke (SQLite names the columns, not the index).
fn write_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        let message = db.message();
        return if message.contains("products.sku") {
            StoreError::Taken("sku")
        } else if message.contains("quotas.owner") {
            StoreError::Taken("owner and period")
        } else if message.contains(".external_id") {
            StoreError::Taken("external_id")
        } else if message.contains("idempotency_keys") {
            StoreError::RequestIdUsed
        } else {
            StoreError::Stale
        };
    }
    StoreError::Database(err)
}

async fn write_in(tx: &mut SqliteConnection, tenant: &TenantId, write: &Write) -> Result<(), StoreError> {
    if let Some(key) = &write.request {
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, kind, request_id, fingerprint, resource_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(tenant.as_str())
        .bind(key.kind.table())
        .bind(&key.request_id)
        .bind(&key.fingerprint)
        .bind(key.resource.to_string())
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    }
    for put in &write.puts {
        let table = put.kind.table();
        let written = match put.expected {
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (tenant_id, id, revision, create_time, update_time, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))),
            Some(_) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET revision = ?3, create_time = ?4, update_time = ?5, body = ?6 \
                 WHERE tenant_id = ?1 AND id = ?2 AND revision = ?7"
            ))),
        }
        .bind(tenant.as_str())
        .bind(put.doc.id.to_string())
        .bind(put.doc.revision)
        .bind(put.doc.create_time.timestamp_micros())
        .bind(put.doc.update_time.timestamp_micros())
        .bind(put.doc.body.to_string())
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .bind(tenant.as_str())
        .bind(t.deal.to_string())
        .bind(t.seq)
        .bind(t.kind.as_str())
        .bind(t.from_stage.map(|s| s.to_string()))
        .bind(t.to_stage.to_string())
        .bind(&t.from_stage_name)
        .bind(&t.to_stage_name)
        .bind(t.amount.minor)
        .bind(&t.amount.currency)
        .bind(&t.actor)
        .bind(t.time.timestamp_micros())
        .bind(&t.reason)
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
    }
    for (merged, survivor) in &write.merges {
        sqlx::query("UPDATE contact_merges SET survivor_id = ?3 WHERE tenant_id = ?1 AND survivor_id = ?2")
            .bind(tenant.as_str())
            .bind(merged.to_string())
            .bind(survivor.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO contact_merges (tenant_id, merged_id, survivor_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id, merged_id) DO UPDATE SET survivor_id = excluded.survivor_id",
        )
        .bind(tenant.as_str())
        .bind(merged.to_string())
        .bind(survivor.to_string())
        .execute(&mut *tx)
        .await?;
    }
    crm_platform::outbox::append_sqlite(&mut *tx, &write.events).await?;
    for id in &write.scrub {
        for table in ["outbox_events", "audit_log"] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id, payload FROM {table} WHERE tenant_id = ?1 AND instr(payload, ?2) > 0"
            )))
            .bind(tenant.as_str())
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let event: String = row.try_get("id")?;
                let payload: String = row.try_get("payload")?;
                let mut payload: serde_json::Value = serde_json::from_str(&payload).map_err(corrupt)?;
                if scrub_payload(&mut payload, id) {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET payload = ?3 WHERE tenant_id = ?1 AND id = ?2"
                    )))
                    .bind(tenant.as_str())
                    .bind(event)
                    .bind(payload.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
    }
    Ok(())
}

fn transition(row: &SqliteRow) -> Result<Transition, StoreError> {
    let kind: String = row.try_get("kind")?;
    let deal: String = row.try_get("deal_id")?;
    let from: Option<String> = row.try_get("from_stage")?;
    let to: String = row.try_get("to_stage")?;
    Ok(Transition {
        deal: uuid(&deal)?,
        seq: row.try_get("seq")?,
        kind: TransitionKind::parse(&kind).ok_or_else(|| corrupt(format!("transition kind {kind}")))?,
        from_stage: from.as_deref().map(uuid).transpose()?,
        to_stage: uuid(&to)?,
        from_stage_name: row.try_get("from_stage_name")?,
        to_stage_name: row.try_get("to_stage_name")?,
        amount: Money {
            minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
        },
        actor: row.try_get("actor")?,
        time: time(row.try_get("time")?)?,
        reason: row.try_get("reason")?,
    })
}

#[async_trait]
impl PipelineStore for SqlitePipelineStore {
    async fn get(&self, tenant: &TenantId, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, revision, create_time, update_time, body FROM {} WHERE tenant_id = ?1 AND id = ?2",
            kind.table()
        )))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(doc).transpose()
    }

    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<Vec<Listed>, StoreError> {
        let (sql, binds) = list_sql(tenant, query, |n| format!("?{n}"), |p| p);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            q = match bind {
                Bind::Text(text) => q.bind(text),
                Bind::Int(int) => q.bind(int),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Listed {
                    order: row.try_get::<i64, _>("ord")?,
                    doc: doc(row)?,
                })
            })
            .collect()
    }

    async fn write(&self, tenant: &TenantId, write: &Write) -> Result<(), StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        write_in(&mut tx, tenant, write).await?;
        tx.commit().await.map_err(write_error)?;
        self.outbox.committed();
        Ok(())
    }

    async fn request(
        &self,
        tenant: &TenantId,
        kind: Kind,
        request_id: &str,
    ) -> Result<Option<(String, Uuid)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT fingerprint, resource_id FROM idempotency_keys WHERE tenant_id = ?1 AND kind = ?2 AND request_id = ?3",
        )
        .bind(tenant.as_str())
        .bind(kind.table())
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(fingerprint, id)| Ok((fingerprint, uuid(&id)?))).transpose()
    }

    async fn board(
        &self,
        tenant: &TenantId,
        pipeline: Uuid,
        owner: Option<&str>,
        per_stage: usize,
    ) -> Result<Vec<BoardStage>, StoreError> {
        let pipeline = pipeline.to_string();
        let mut conn = self.pool.acquire().await?;
        // One snapshot for the sums and the deals listed.
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        // SQLite's sum() fails on a 64-bit overflow: the amounts are summed as their high and
        // low 32 bits (neither sum can overflow) and put together in 128 bits.
        let sums = sqlx::query(
            "SELECT stage_id, currency, sum(deals) AS n, sum(amount >> 32) AS high, sum(amount & 4294967295) AS low \
             FROM board_counts \
             WHERE tenant_id = ?1 AND pipeline_id = ?2 AND (?3 IS NULL OR owner = ?3) \
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
                    let high: i64 = row.try_get("high")?;
                    let low: i64 = row.try_get("low")?;
                    let money = Money {
                        minor: crm_platform::money::saturate((i128::from(high) << 32) + i128::from(low)),
                        currency: row.try_get("currency")?,
                    };
                    Ok((uuid(&stage)?, row.try_get::<i64, _>("n")?, money))
                })
                .collect::<Result<Vec<_>, StoreError>>()?,
        );
        for column in &mut stages {
            if per_stage == 0 {
                break;
            }
            let rows = sqlx::query(
                "SELECT id, revision, create_time, update_time, body FROM deals \
                 WHERE tenant_id = ?1 AND pipeline_id = ?2 AND status = 'open' AND stage_id = ?3 \
                 AND (?4 IS NULL OR owner = ?4) ORDER BY close_date IS NULL, close_date, id LIMIT ?5",
            )
            .bind(tenant.as_str())
            .bind(&pipeline)
            .bind(column.stage.to_string())
            .bind(owner)
            .bind(i64::try_from(per_stage).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            column.deals = rows.iter().map(doc).collect::<Result<_, _>>()?;
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
        let rows = sqlx::query(
            "SELECT * FROM deal_transitions WHERE tenant_id = ?1 AND deal_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(deal.to_string())
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(transition).collect()
    }

    async fn owed_due_tasks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<(TenantId, Doc)>, Option<DateTime<Utc>>), StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, revision, create_time, update_time, body FROM tasks \
             WHERE pending_due IS NOT NULL AND pending_due <= ?1 ORDER BY pending_due LIMIT ?2",
        )
        .bind(now.timestamp_micros())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let next: Option<i64> =
            sqlx::query_scalar("SELECT min(pending_due) FROM tasks WHERE pending_due IS NOT NULL AND pending_due > ?1")
                .bind(now.timestamp_micros())
                .fetch_one(&self.pool)
                .await?;
        let owed = rows
            .iter()
            .map(|row| {
                let tenant: String = row.try_get("tenant_id")?;
                Ok((TenantId::parse(&tenant).map_err(corrupt)?, doc(row)?))
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, revision, create_time, update_time, body FROM {} WHERE tenant_id = ?1 AND {column} = ?2 ORDER BY id",
            kind.table()
        )))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(doc).collect()
    }

    async fn merged_into(&self, tenant: &TenantId, survivor: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT merged_id FROM contact_merges WHERE tenant_id = ?1 AND survivor_id = ?2")
                .bind(tenant.as_str())
                .bind(survivor.to_string())
                .fetch_all(&self.pool)
                .await?;
        ids.iter().map(|id| uuid(id)).collect()
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::sqlite_checkpoint(&self.pool, consumer).await?)
    }

    async fn follow(
        &self,
        consumer: &str,
        previous: u64,
        to: u64,
        writes: &[(TenantId, Write)],
    ) -> Result<bool, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        if !crm_platform::consumer::sqlite_claim(&mut tx, consumer, previous).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        for (tenant, write) in writes {
            write_in(&mut tx, tenant, write).await?;
        }
        crm_platform::consumer::sqlite_advance(&mut tx, consumer, to).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(true)
    }

    async fn purge_erased(&self) -> Result<(), StoreError> {
        Ok(crm_platform::db::purge_sqlite_log(&self.pool).await?)
    }
}
