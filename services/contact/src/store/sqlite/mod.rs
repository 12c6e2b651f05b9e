//! SQLite store, the embedded backend of `crm serve`. Write transactions take the write lock
//! up front (BEGIN IMMEDIATE); times are unix microseconds; lists and maps are JSON text.
//! Here the store, its transactions and the row mapping; each resource's trait in its file.

mod companies;
mod contacts;
mod duplicates;
mod erasure;
mod history;
mod import;
mod interactions;
mod merge;
mod ownership;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::begin_sqlite_write;
use crm_platform::outbox::SqliteOutbox;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{RequestKey, StoreError, corrupt, stored_user, stored_word};
use crate::domain::*;

const CONTACT_COLUMNS: &str = "id, given_name, family_name, emails, phones, title, company_id, lifecycle_stage, source, \
                               owner, tags, attributes, consent, create_time, update_time, revision, erase_time, merged_into, \
                               external_id";

const COMPANY_COLUMNS: &str = "id, display_name, domain, industry, size_band, owner, tags, attributes, create_time, update_time, revision, merged_into";

const INTERACTION_COLUMNS: &str = "id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, subject, \
                                   body, outcome, campaign_id, actor, create_time";

/// Contact store on SQLite.
#[derive(Clone)]
pub struct SqliteContactStore {
    pool: SqlitePool,
    outbox: Arc<SqliteOutbox>,
}

impl SqliteContactStore {
    pub fn new(pool: SqlitePool) -> Self {
        let outbox = SqliteOutbox::new(pool.clone());
        Self { pool, outbox }
    }

    /// The outbox this store's writes fill.
    pub fn outbox(&self) -> Arc<SqliteOutbox> {
        Arc::clone(&self.outbox)
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

fn time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    let value: i64 = row.try_get(column)?;
    DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt(format!("{column} out of range")))
}

fn opt_time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(format!("{column} out of range"))))
        .transpose()
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let value: String = row.try_get(column)?;
    Uuid::parse_str(&value).map_err(corrupt)
}

fn opt_uuid(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, StoreError> {
    let value: Option<String> = row.try_get(column)?;
    value.map(|v| Uuid::parse_str(&v).map_err(corrupt)).transpose()
}

fn json<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, StoreError> {
    let value: String = row.try_get(column)?;
    serde_json::from_str(&value).map_err(corrupt)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

fn contact_from_row(row: &SqliteRow) -> Result<Contact, StoreError> {
    let stage: String = row.try_get("lifecycle_stage")?;
    let source: String = row.try_get("source")?;
    Ok(Contact {
        id: ContactId(uuid(row, "id")?),
        fields: ContactFields {
            external_id: row.try_get("external_id")?,
            given_name: row.try_get("given_name")?,
            family_name: row.try_get("family_name")?,
            emails: json(row, "emails")?,
            phones: json(row, "phones")?,
            title: row.try_get("title")?,
            company: opt_uuid(row, "company_id")?.map(CompanyId),
            lifecycle_stage: stored_word(&stage, LifecycleStage::parse)?,
            source: stored_word(&source, SourceChannel::parse)?,
            owner: stored_user(&row.try_get::<String, _>("owner")?)?,
            tags: json(row, "tags")?,
            attributes: json(row, "attributes")?,
            consent: json(row, "consent")?,
        },
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        revision: Revision(row.try_get("revision")?),
        erase_time: opt_time(row, "erase_time")?,
        merged_into: opt_uuid(row, "merged_into")?.map(ContactId),
    })
}

fn company_from_row(row: &SqliteRow) -> Result<Company, StoreError> {
    let size_band: Option<String> = row.try_get("size_band")?;
    Ok(Company {
        id: CompanyId(uuid(row, "id")?),
        fields: CompanyFields {
            display_name: row.try_get("display_name")?,
            domain: row.try_get("domain")?,
            industry: row.try_get("industry")?,
            size_band: size_band.map(|b| stored_word(&b, SizeBand::parse)).transpose()?,
            owner: stored_user(&row.try_get::<String, _>("owner")?)?,
            tags: json(row, "tags")?,
            attributes: json(row, "attributes")?,
        },
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        revision: Revision(row.try_get("revision")?),
        merged_into: opt_uuid(row, "merged_into")?.map(CompanyId),
    })
}

fn interaction_from_row(row: &SqliteRow) -> Result<Interaction, StoreError> {
    let kind: String = row.try_get("kind")?;
    let direction: String = row.try_get("direction")?;
    let channel: Option<String> = row.try_get("channel")?;
    Ok(Interaction {
        id: InteractionId(uuid(row, "id")?),
        contact: ContactId(uuid(row, "contact_id")?),
        company: opt_uuid(row, "company_id")?.map(CompanyId),
        fields: InteractionFields {
            kind: stored_word(&kind, InteractionType::parse)?,
            direction: stored_word(&direction, Direction::parse)?,
            channel: channel
                .map(|c| stored_word(&c, InteractionChannel::parse))
                .transpose()?,
            occur_time: time(row, "occur_time")?,
            duration_ms: row.try_get("duration_ms")?,
            subject: row.try_get("subject")?,
            body: row.try_get("body")?,
            outcome: row.try_get("outcome")?,
            campaign_id: row.try_get("campaign_id")?,
            actor: stored_user(&row.try_get::<String, _>("actor")?)?,
        },
        create_time: time(row, "create_time")?,
    })
}

async fn replay_of(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    kind: &str,
    key: &RequestKey,
) -> Result<Option<Uuid>, StoreError> {
    let row = sqlx::query(
        "SELECT fingerprint, resource_id FROM idempotency_keys WHERE tenant_id = ?1 AND kind = ?2 AND request_id = ?3",
    )
    .bind(tenant.as_str())
    .bind(kind)
    .bind(&key.key)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
            if fingerprint != key.fingerprint {
                return Err(StoreError::RequestIdReused);
            }
            Ok(Some(uuid(&row, "resource_id")?))
        }
    }
}

async fn remember(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    kind: &str,
    key: &RequestKey,
    resource: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO idempotency_keys (tenant_id, kind, request_id, fingerprint, resource_id, create_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .bind(tenant.as_str())
        .bind(kind)
        .bind(&key.key)
        .bind(key.fingerprint.as_slice())
        .bind(resource.to_string())
        .bind(micros(Utc::now()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn push_time_bounds(qb: &mut QueryBuilder<Sqlite>, column: &str, bounds: &[TimeBound]) {
    for bound in bounds {
        qb.push(format_args!(" AND {column} {} ", bound.op.as_str()))
            .push_bind(micros(bound.time));
    }
}

fn push_tag(qb: &mut QueryBuilder<Sqlite>, tag: &Tag) {
    qb.push(" AND EXISTS (SELECT 1 FROM json_each(tags) WHERE json_each.value = ")
        .push_bind(tag.as_str().to_owned())
        .push(")");
}

fn push_page(qb: &mut QueryBuilder<Sqlite>, order: Order, after: Option<&Cursor>, limit: usize) {
    let column = order.field.column();
    let direction = if order.descending { "DESC" } else { "ASC" };
    if let Some(cursor) = after {
        qb.push(format_args!(
            " AND ({column}, id) {} (",
            if order.descending { "<" } else { ">" }
        ));
        match &cursor.key {
            SortKey::Time(time) => qb.push_bind(micros(*time)),
            SortKey::Text(text) => qb.push_bind(text.clone()),
        };
        qb.push(", ").push_bind(cursor.id.to_string()).push(")");
    }
    qb.push(format_args!(" ORDER BY {column} {direction}, id {direction} LIMIT "))
        .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
}

impl SqliteContactStore {
    async fn read_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A write transaction.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(begin_sqlite_write(&self.pool).await?)
    }

    /// Commits, then wakes the feeds of the outbox.
    async fn commit(&self, tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }
}

/// One row of `table` by id, decoded by `decode`.
async fn fetch<T>(
    tx: &mut Transaction<'static, Sqlite>,
    columns: &str,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
    decode: fn(&SqliteRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = ?1 AND id = ?2"
    )))
    .bind(tenant.as_str())
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

async fn fetch_contact(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    id: ContactId,
) -> Result<Contact, StoreError> {
    fetch(tx, CONTACT_COLUMNS, "contacts", tenant, id.0, contact_from_row).await
}

async fn fetch_company(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    id: CompanyId,
) -> Result<Company, StoreError> {
    fetch(tx, COMPANY_COLUMNS, "companies", tenant, id.0, company_from_row).await
}

async fn fetch_interaction(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    id: InteractionId,
) -> Result<Interaction, StoreError> {
    fetch(
        tx,
        INTERACTION_COLUMNS,
        "interactions",
        tenant,
        id.0,
        interaction_from_row,
    )
    .await
}

async fn missing_or_stale(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
) -> StoreError {
    let exists = sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {table} WHERE tenant_id = ?1 AND id = ?2"
    )))
    .bind(tenant.as_str())
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await;
    match exists {
        Ok(Some(_)) => StoreError::RevisionMismatch,
        Ok(None) => StoreError::NotFound,
        Err(err) => err.into(),
    }
}

async fn delete_row(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE tenant_id = ?1 AND id = ?2 AND (?3 IS NULL OR revision = ?3)"
    )))
    .bind(tenant.as_str())
    .bind(id.to_string())
    .bind(expected.map(|r| r.0))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(missing_or_stale(tx, table, tenant, id).await);
    }
    Ok(())
}

/// Appends ` IN (?, ...)` binding `values` (at most [`SQLITE_MAX_BATCH_VALUES`]).
fn push_in(qb: &mut QueryBuilder<Sqlite>, values: impl IntoIterator<Item = String>) {
    qb.push(" IN (");
    let mut list = qb.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    qb.push(")");
}

/// How many values one SQLite statement binds at most (well under its parameter limit).
const SQLITE_MAX_BATCH_VALUES: usize = 500;
