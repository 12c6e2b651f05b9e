//! PostgreSQL store. Every method runs in one transaction pinned to the tenant (or in one
//! call of a function that pins it for its statement: contact_write, contact_live), so
//! row-level security guards every statement in addition to the explicit tenant_id
//! conditions. Here the store, its transactions and the row mapping; each resource's trait in
//! its file.

mod companies;
mod contacts;
mod duplicates;
mod erasure;
mod group;
mod history;
mod import;
mod interactions;
mod merge;
mod ownership;
mod write;

use crm_platform::TenantId;
use crm_platform::db::begin_tenant;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{RequestKey, StoreError, corrupt, stored_user, stored_word};
use crate::domain::*;

const CONTACT_COLUMNS: &str = "id, given_name, family_name, emails, phones, title, company_id, lifecycle_stage, source, \
                               owner, tags, attributes, consent, create_time, update_time, revision, erase_time, merged_into, \
                               external_id";

const COMPANY_COLUMNS: &str = "id, display_name, domain, industry, size_band, owner, tags, attributes, create_time, update_time, revision, merged_into";

const INTERACTION_COLUMNS: &str = "id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, subject, \
                                   body, outcome, campaign_id, actor, create_time";

/// Contact store on PostgreSQL.
#[derive(Clone)]
pub struct PgContactStore {
    pool: PgPool,
    groups: group::Groups,
}

impl PgContactStore {
    /// Wraps a pool connected as the RLS-bound serving role.
    pub fn new(pool: PgPool) -> Self {
        let writers = group::writers_for(pool.options().get_max_connections());
        Self {
            pool,
            groups: group::Groups::new(writers),
        }
    }

    async fn tx(&self, tenant: &TenantId) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(begin_tenant(&self.pool, tenant).await?)
    }
}

fn tags(raw: Vec<String>) -> Result<Vec<Tag>, StoreError> {
    raw.iter().map(|t| Tag::parse(t).map_err(corrupt)).collect()
}

fn tag_strings(tags: &[Tag]) -> Vec<String> {
    tags.iter().map(|t| t.as_str().to_owned()).collect()
}

fn contact_from_row(row: &PgRow) -> Result<Contact, StoreError> {
    let Json(emails): Json<Vec<ContactEmail>> = row.try_get("emails")?;
    let Json(phones): Json<Vec<ContactPhone>> = row.try_get("phones")?;
    let Json(attributes) = row.try_get("attributes")?;
    let Json(consent): Json<Consent> = row.try_get("consent")?;
    let stage: String = row.try_get("lifecycle_stage")?;
    let source: String = row.try_get("source")?;
    Ok(Contact {
        id: ContactId(row.try_get("id")?),
        fields: ContactFields {
            external_id: row.try_get("external_id")?,
            given_name: row.try_get("given_name")?,
            family_name: row.try_get("family_name")?,
            emails,
            phones,
            title: row.try_get("title")?,
            company: row.try_get::<Option<Uuid>, _>("company_id")?.map(CompanyId),
            lifecycle_stage: stored_word(&stage, LifecycleStage::parse)?,
            source: stored_word(&source, SourceChannel::parse)?,
            owner: stored_user(&row.try_get::<String, _>("owner")?)?,
            tags: tags(row.try_get("tags")?)?,
            attributes,
            consent,
        },
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        revision: Revision(row.try_get("revision")?),
        erase_time: row.try_get("erase_time")?,
        merged_into: row.try_get::<Option<Uuid>, _>("merged_into")?.map(ContactId),
    })
}

fn company_from_row(row: &PgRow) -> Result<Company, StoreError> {
    let Json(attributes) = row.try_get("attributes")?;
    let size_band: Option<String> = row.try_get("size_band")?;
    Ok(Company {
        id: CompanyId(row.try_get("id")?),
        fields: CompanyFields {
            display_name: row.try_get("display_name")?,
            domain: row.try_get("domain")?,
            industry: row.try_get("industry")?,
            size_band: size_band.map(|b| stored_word(&b, SizeBand::parse)).transpose()?,
            owner: stored_user(&row.try_get::<String, _>("owner")?)?,
            tags: tags(row.try_get("tags")?)?,
            attributes,
        },
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        revision: Revision(row.try_get("revision")?),
        merged_into: row.try_get::<Option<Uuid>, _>("merged_into")?.map(CompanyId),
    })
}

fn interaction_from_row(row: &PgRow) -> Result<Interaction, StoreError> {
    let kind: String = row.try_get("kind")?;
    let direction: String = row.try_get("direction")?;
    let channel: Option<String> = row.try_get("channel")?;
    Ok(Interaction {
        id: InteractionId(row.try_get("id")?),
        contact: ContactId(row.try_get("contact_id")?),
        company: row.try_get::<Option<Uuid>, _>("company_id")?.map(CompanyId),
        fields: InteractionFields {
            kind: stored_word(&kind, InteractionType::parse)?,
            direction: stored_word(&direction, Direction::parse)?,
            channel: channel
                .map(|c| stored_word(&c, InteractionChannel::parse))
                .transpose()?,
            occur_time: row.try_get("occur_time")?,
            duration_ms: row.try_get("duration_ms")?,
            subject: row.try_get("subject")?,
            body: row.try_get("body")?,
            outcome: row.try_get("outcome")?,
            campaign_id: row.try_get("campaign_id")?,
            actor: stored_user(&row.try_get::<String, _>("actor")?)?,
        },
        create_time: row.try_get("create_time")?,
    })
}

/// Looks up an idempotency key: the resource it created, or a refusal if reused differently.
async fn replay_of(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    kind: &str,
    key: &RequestKey,
) -> Result<Option<Uuid>, StoreError> {
    let row = sqlx::query(
        "SELECT fingerprint, resource_id FROM idempotency_keys WHERE tenant_id = $1 AND kind = $2 AND request_id = $3",
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
            Ok(Some(row.try_get("resource_id")?))
        }
    }
}

async fn remember(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    kind: &str,
    key: &RequestKey,
    resource: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO idempotency_keys (tenant_id, kind, request_id, fingerprint, resource_id, create_time) VALUES ($1, $2, $3, $4, $5, now())")
        .bind(tenant.as_str())
        .bind(kind)
        .bind(&key.key)
        .bind(key.fingerprint.as_slice())
        .bind(resource)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn push_time_bounds(qb: &mut QueryBuilder<Postgres>, column: &str, bounds: &[TimeBound]) {
    for bound in bounds {
        qb.push(format_args!(" AND {column} {} ", bound.op.as_str()))
            .push_bind(bound.time);
    }
}

fn push_page(qb: &mut QueryBuilder<Postgres>, order: Order, after: Option<&Cursor>, limit: usize) {
    let column = order.field.column();
    let direction = if order.descending { "DESC" } else { "ASC" };
    if let Some(cursor) = after {
        qb.push(format_args!(
            " AND ({column}, id) {} (",
            if order.descending { "<" } else { ">" }
        ));
        match &cursor.key {
            SortKey::Time(time) => qb.push_bind(*time),
            SortKey::Text(text) => qb.push_bind(text.clone()),
        };
        qb.push(", ").push_bind(cursor.id).push(")");
    }
    qb.push(format_args!(" ORDER BY {column} {direction}, id {direction} LIMIT "))
        .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
}

/// Runs `f` in a tenant transaction, retrying once when a concurrent create with the same
/// request id won the race (the retry then replays its result).
macro_rules! with_create_retry {
    ($self:ident, $tenant:ident, $key:ident, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let mut $tx = $self.tx($tenant).await?;
            let result: Result<_, StoreError> = $body;
            match result {
                Ok(value) => match $tx.commit().await {
                    Ok(()) => break Ok(value),
                    Err(err) if attempt == 0 && $key.is_some() && is_unique_violation(&err) => attempt += 1,
                    Err(err) => break Err(err.into()),
                },
                Err(StoreError::Database(err)) if attempt == 0 && $key.is_some() && is_unique_violation(&err) => {
                    attempt += 1
                }
                Err(err) => break Err(err),
            }
        }
    }};
}

// Imported by path in the files of the resources it creates.
use with_create_retry;

/// One row of `table` by id, decoded by `decode`.
async fn fetch<T>(
    tx: &mut Transaction<'static, Postgres>,
    columns: &str,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    decode(&row)
}

async fn fetch_contact(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    id: ContactId,
) -> Result<Contact, StoreError> {
    fetch(tx, CONTACT_COLUMNS, "contacts", tenant, id.0, contact_from_row).await
}

async fn fetch_company(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    id: CompanyId,
) -> Result<Company, StoreError> {
    fetch(tx, COMPANY_COLUMNS, "companies", tenant, id.0, company_from_row).await
}

async fn fetch_interaction(
    tx: &mut Transaction<'static, Postgres>,
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
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
) -> StoreError {
    let exists = sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant.as_str())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await;
    match exists {
        Ok(Some(_)) => StoreError::RevisionMismatch,
        Ok(None) => StoreError::NotFound,
        Err(err) => err.into(),
    }
}

async fn delete_row(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
    tenant: &TenantId,
    id: Uuid,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE tenant_id = $1 AND id = $2 AND ($3::bigint IS NULL OR revision = $3)"
    )))
    .bind(tenant.as_str())
    .bind(id)
    .bind(expected.map(|r| r.0))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(missing_or_stale(tx, table, tenant, id).await);
    }
    Ok(())
}
