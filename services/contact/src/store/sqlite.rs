//! SQLite store, the embedded backend of `crm serve`. Write transactions take the write lock
//! up front (BEGIN IMMEDIATE); times are unix microseconds; lists and maps are JSON text.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::db::begin_sqlite_write;
use crm_platform::outbox::SqliteOutbox;
use crm_platform::{TenantId, UserId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};
use uuid::Uuid;

use super::{
    Batch, CompanyMerge, ContactStore, Created, KIND_COMPANY, KIND_CONTACT, KIND_INTERACTION, MAX_CANDIDATES, Merge,
    Owned, RequestKey, StoreError, TimelineOf, WriteBatch, corrupt, fts5_query, qualified, round_robin, stored_user,
    stored_word,
};
use crate::domain::*;

const CONTACT_COLUMNS: &str = "id, given_name, family_name, emails, phones, title, company_id, lifecycle_stage, source, \
                               owner, tags, attributes, consent, create_time, update_time, revision, erase_time, merged_into, \
                               external_id";
const COMPANY_COLUMNS: &str = "id, display_name, domain, industry, size_band, owner, tags, attributes, create_time, update_time, revision, merged_into";
const INTERACTION_COLUMNS: &str = "id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, subject, \
                                   body, outcome, campaign_id, actor, create_time";

/// How many matching contacts a search ranks together (deeper pages rank the next as many), as
/// on PostgreSQL: search finds someone by what one remembers, listing is the exhaustive query.
const SEARCH_CANDIDATES: usize = 200;

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

async fn company_name(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    id: Option<CompanyId>,
) -> Result<Option<String>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    let mut names = company_names(tx, tenant, &[id]).await?;
    names.remove(&id).map(Some).ok_or(StoreError::UnknownCompany)
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

    /// A write transaction; the outbox events it writes carry the current request's trace.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        sqlx::query("UPDATE outbox_context SET traceparent = ?1")
            .bind(crm_platform::telemetry::current_traceparent().unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Commits, then wakes the feeds of the outbox.
    async fn commit(&self, tx: Transaction<'static, Sqlite>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }
}

#[async_trait]
impl ContactStore for SqliteContactStore {
    async fn create_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_email: bool,
    ) -> Result<Created<Contact>, StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(key) = key
            && let Some(existing) = replay_of(&mut tx, tenant, KIND_CONTACT, key).await?
        {
            let value = fetch_contact(&mut tx, tenant, ContactId(existing)).await?;
            let similar = keyed_contacts(&mut tx, tenant, &value.fields.match_keys(), Some(value.id)).await?;
            self.commit(tx).await?;
            return Ok(Created {
                similar,
                ..Created::new(value, true)
            });
        }
        insert_contacts(&mut tx, tenant, &[(contact, audit)], unique_email).await?;
        if let Some(key) = key {
            remember(&mut tx, tenant, KIND_CONTACT, key, contact.id.0).await?;
        }
        let similar = keyed_contacts(&mut tx, tenant, &contact.fields.match_keys(), Some(contact.id)).await?;
        self.commit(tx).await?;
        Ok(Created {
            similar,
            ..Created::new(contact.clone(), false)
        })
    }

    async fn get_contact(&self, tenant: &TenantId, id: ContactId) -> Result<Contact, StoreError> {
        let mut tx = self.read_tx().await?;
        let contact = fetch_contact(&mut tx, tenant, id).await?;
        self.commit(tx).await?;
        Ok(contact)
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        write_contact(&mut tx, tenant, contact, expected).await?;
        record(&mut tx, tenant, Audited::Contact(contact.id), audit).await?;
        self.commit(tx).await?;
        Ok(())
    }

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
        // The events the feed still serves are rebuilt from the scrubbed entries.
        sqlx::query(
            "UPDATE outbox_events SET payload = (SELECT json_object('action', h.action, 'changes', json(h.changes)) FROM history AS h \
             WHERE h.tenant_id = outbox_events.tenant_id AND h.id = outbox_events.id) \
             WHERE tenant_id = ?1 AND id IN (SELECT id FROM history WHERE tenant_id = ?1 AND resource_kind = 'contact' \
             AND (resource_id = ?2 OR resource_id IN (SELECT id FROM contacts WHERE tenant_id = ?1 AND merged_into = ?2)))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0.to_string())
        .execute(&mut *tx)
        .await?;
        record(&mut tx, tenant, Audited::Contact(tombstone.id), audit).await?;
        self.commit(tx).await?;
        // The page images of the log still hold the values before the erase.
        crm_platform::db::purge_sqlite_log(&self.pool).await?;
        Ok(())
    }

    async fn delete_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        delete_row(&mut tx, "contacts", tenant, id.0, expected).await?;
        record(&mut tx, tenant, Audited::Contact(id), audit).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ListQuery<ContactFilter>,
    ) -> Result<Vec<Contact>, StoreError> {
        let f = &query.filter;
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = "));
        qb.push_bind(tenant.as_str().to_owned());
        qb.push(" AND erase_time IS NULL AND merged_into IS NULL");
        if let Some(stage) = f.lifecycle_stage {
            qb.push(" AND lifecycle_stage = ").push_bind(stage.as_str());
        }
        if let Some(source) = f.source {
            qb.push(" AND source = ").push_bind(source.as_str());
        }
        if let Some(owner) = &f.owner {
            qb.push(" AND owner = ").push_bind(owner.as_str().to_owned());
        }
        if let Some(tag) = &f.tag {
            push_tag(&mut qb, tag);
        }
        if let Some(company) = f.company {
            qb.push(" AND company_id = ").push_bind(company.0.to_string());
        }
        push_time_bounds(&mut qb, "create_time", &f.create_time);
        push_time_bounds(&mut qb, "update_time", &f.update_time);
        push_page(&mut qb, query.order, query.after.as_ref(), query.limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn search_contacts(
        &self,
        tenant: &TenantId,
        terms: &SearchTerms,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        // Like PostgreSQL, a bounded set of the tenant's matching contacts is ranked: those
        // having every word whole first, then those having every word as a prefix, each taken
        // in index order, and ranked by blocks of SEARCH_CANDIDATES, so that a deeper page
        // neither repeats nor skips a contact of the pages before it. The index is the outer
        // loop (CROSS JOIN): with the contacts of the tenant outside, SQLite evaluated the whole
        // MATCH again for every one of them. Its tenant token keeps other tenants' matches out
        // of the scan; the join still checks.
        let hits = |words: &str| {
            format!(
                "SELECT f.rowid AS hit, bm25(contacts_fts, 0.0, 1.0) AS score FROM contacts_fts AS f \
                 CROSS JOIN contacts AS c ON c.rowid = f.rowid \
                 WHERE contacts_fts MATCH 'tenant : \"t' || hex(?3) || '\" AND doc : (' || {words} || ')' \
                 AND c.tenant_id = ?3 AND c.erase_time IS NULL AND c.merged_into IS NULL"
            )
        };
        // A page token is the client's to send back, so its offset may be anything.
        let candidates = offset
            .saturating_add(limit + 1)
            .div_ceil(SEARCH_CANDIDATES)
            .saturating_mul(SEARCH_CANDIDATES);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH exact AS MATERIALIZED ({exact} LIMIT ?4), \
             prefixed AS MATERIALIZED ({prefixed} AND f.rowid NOT IN (SELECT hit FROM exact) \
               LIMIT ?4 - (SELECT count(*) FROM exact)) \
             SELECT {columns} FROM (SELECT hit, tier, score, (row_number() OVER (ORDER BY tier, hit) - 1) / ?7 AS block \
               FROM (SELECT hit, 0 AS tier, score FROM exact UNION ALL SELECT hit, 1, score FROM prefixed)) AS h \
             CROSS JOIN contacts AS c ON c.rowid = h.hit ORDER BY h.block, h.tier, h.score, c.id LIMIT ?5 OFFSET ?6",
            exact = hits("?1"),
            prefixed = hits("?2"),
            columns = qualified("c", CONTACT_COLUMNS),
        )))
        .bind(fts5_query(terms, false))
        .bind(fts5_query(terms, true))
        .bind(tenant.as_str())
        .bind(i64::try_from(candidates).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(SEARCH_CANDIDATES).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn create_company(
        &self,
        tenant: &TenantId,
        company: &Company,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_domain: bool,
    ) -> Result<Created<Company>, StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(key) = key
            && let Some(existing) = replay_of(&mut tx, tenant, KIND_COMPANY, key).await?
        {
            let value = fetch_company(&mut tx, tenant, CompanyId(existing)).await?;
            self.commit(tx).await?;
            return Ok(Created::new(value, true));
        }
        if unique_domain {
            ensure_unique_domain(&mut tx, tenant, company).await?;
        }
        let f = &company.fields;
        sqlx::query(
            "INSERT INTO companies (tenant_id, id, display_name, domain, industry, size_band, owner, tags, attributes, \
             create_time, update_time, revision, name_block) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .bind(tenant.as_str())
        .bind(company.id.0.to_string())
        .bind(&f.display_name)
        .bind(&f.domain)
        .bind(&f.industry)
        .bind(f.size_band.map(SizeBand::as_str))
        .bind(f.owner.as_str())
        .bind(to_json(&f.tags)?)
        .bind(to_json(&f.attributes)?)
        .bind(micros(company.create_time))
        .bind(micros(company.update_time))
        .bind(company.revision.0)
        .bind(company::name_block(&f.display_name))
        .execute(&mut *tx)
        .await?;
        if let Some(key) = key {
            remember(&mut tx, tenant, KIND_COMPANY, key, company.id.0).await?;
        }
        record(&mut tx, tenant, Audited::Company(company.id), audit).await?;
        self.commit(tx).await?;
        Ok(Created::new(company.clone(), false))
    }

    async fn get_company(&self, tenant: &TenantId, id: CompanyId) -> Result<Company, StoreError> {
        let mut tx = self.read_tx().await?;
        let company = fetch_company(&mut tx, tenant, id).await?;
        self.commit(tx).await?;
        Ok(company)
    }

    async fn update_company(
        &self,
        tenant: &TenantId,
        company: &Company,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        write_company(&mut tx, tenant, company, expected).await?;
        record(&mut tx, tenant, Audited::Company(company.id), audit).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn delete_company(
        &self,
        tenant: &TenantId,
        id: CompanyId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE contacts SET company_id = NULL, company_name = NULL WHERE tenant_id = ?1 AND company_id = ?2",
        )
        .bind(tenant.as_str())
        .bind(id.0.to_string())
        .execute(&mut *tx)
        .await?;
        delete_row(&mut tx, "companies", tenant, id.0, expected).await?;
        record(&mut tx, tenant, Audited::Company(id), audit).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn list_companies(
        &self,
        tenant: &TenantId,
        query: &ListQuery<CompanyFilter>,
    ) -> Result<Vec<Company>, StoreError> {
        let f = &query.filter;
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {COMPANY_COLUMNS} FROM companies WHERE tenant_id = "));
        qb.push_bind(tenant.as_str().to_owned());
        qb.push(" AND merged_into IS NULL");
        if let Some(owner) = &f.owner {
            qb.push(" AND owner = ").push_bind(owner.as_str().to_owned());
        }
        if let Some(tag) = &f.tag {
            push_tag(&mut qb, tag);
        }
        if let Some(industry) = &f.industry {
            qb.push(" AND industry = ").push_bind(industry.clone());
        }
        if let Some(band) = f.size_band {
            qb.push(" AND size_band = ").push_bind(band.as_str());
        }
        if let Some(domain) = &f.domain {
            qb.push(" AND domain = ").push_bind(domain.clone());
        }
        push_time_bounds(&mut qb, "create_time", &f.create_time);
        push_time_bounds(&mut qb, "update_time", &f.update_time);
        push_page(&mut qb, query.order, query.after.as_ref(), query.limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(company_from_row).collect()
    }

    async fn create_interaction(
        &self,
        tenant: &TenantId,
        interaction: &Interaction,
        key: Option<&RequestKey>,
    ) -> Result<Created<Interaction>, StoreError> {
        let mut tx = self.write_tx().await?;
        if let Some(key) = key
            && let Some(existing) = replay_of(&mut tx, tenant, KIND_INTERACTION, key).await?
        {
            let value = fetch_interaction(&mut tx, tenant, InteractionId(existing)).await?;
            self.commit(tx).await?;
            return Ok(Created::new(value, true));
        }
        let f = &interaction.fields;
        let company: Option<Option<String>> = sqlx::query_scalar(
            "INSERT INTO interactions (tenant_id, id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, \
             subject, body, outcome, campaign_id, actor, create_time) \
             SELECT ?1, ?2, c.id, c.company_id, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 \
             FROM contacts c WHERE c.tenant_id = ?1 AND c.id = ?3 RETURNING company_id",
        )
        .bind(tenant.as_str())
        .bind(interaction.id.0.to_string())
        .bind(interaction.contact.0.to_string())
        .bind(f.kind.as_str())
        .bind(f.direction.as_str())
        .bind(f.channel.map(InteractionChannel::as_str))
        .bind(micros(f.occur_time))
        .bind(f.duration_ms)
        .bind(&f.subject)
        .bind(&f.body)
        .bind(&f.outcome)
        .bind(&f.campaign_id)
        .bind(f.actor.as_str())
        .bind(micros(interaction.create_time))
        .fetch_optional(&mut *tx)
        .await?;
        let company = company.ok_or(StoreError::NotFound)?;
        if let Some(key) = key {
            remember(&mut tx, tenant, KIND_INTERACTION, key, interaction.id.0).await?;
        }
        self.commit(tx).await?;
        let mut value = interaction.clone();
        value.company = company
            .map(|c| Uuid::parse_str(&c).map(CompanyId))
            .transpose()
            .map_err(corrupt)?;
        Ok(Created::new(value, false))
    }

    async fn get_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<Interaction, StoreError> {
        let mut tx = self.read_tx().await?;
        let interaction = fetch_interaction(&mut tx, tenant, id).await?;
        self.commit(tx).await?;
        if interaction.contact != contact {
            return Err(StoreError::NotFound);
        }
        Ok(interaction)
    }

    async fn list_interactions(
        &self,
        tenant: &TenantId,
        of: TimelineOf,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Interaction>, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE tenant_id = "
        ));
        qb.push_bind(tenant.as_str().to_owned());
        match of {
            TimelineOf::Contact(id) => qb.push(" AND contact_id = ").push_bind(id.0.to_string()),
            TimelineOf::Company(id) => qb.push(" AND company_id = ").push_bind(id.0.to_string()),
        };
        if let Some(cursor) = after {
            let SortKey::Time(time) = cursor.key else {
                return Ok(Vec::new());
            };
            qb.push(" AND (occur_time, id) < (")
                .push_bind(micros(time))
                .push(", ")
                .push_bind(cursor.id.to_string())
                .push(")");
        }
        qb.push(" ORDER BY occur_time DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(interaction_from_row).collect()
    }

    async fn delete_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let deleted = sqlx::query("DELETE FROM interactions WHERE tenant_id = ?1 AND contact_id = ?2 AND id = ?3")
            .bind(tenant.as_str())
            .bind(contact.0.to_string())
            .bind(id.0.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit(tx).await?;
        Ok(())
    }

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
            shares[target] += 1;
        }
        self.commit(tx).await?;
        Ok(shares)
    }
    async fn find_by_keys(
        &self,
        tenant: &TenantId,
        keys: &[MatchKey],
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found = keyed_contacts(&mut conn, tenant, keys, None).await?;
        Ok(found.into_iter().take(limit).collect())
    }

    async fn get_live_contacts(&self, tenant: &TenantId, ids: &[ContactId]) -> Result<Vec<Contact>, StoreError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable_by_key(|id| id.0);
        ids.dedup();
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SQLITE_MAX_BATCH_VALUES) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts WHERE erase_time IS NULL AND merged_into IS NULL AND tenant_id = "
            ));
            qb.push_bind(tenant.as_str().to_owned()).push(" AND id");
            push_in(&mut qb, chunk.iter().map(|id| id.0.to_string()));
            let rows = qb.build().fetch_all(&self.pool).await?;
            for row in &rows {
                found.push(contact_from_row(row)?);
            }
        }
        Ok(found)
    }

    async fn contacts_by_key(
        &self,
        tenant: &TenantId,
        kind: KeyKind,
        values: &[String],
    ) -> Result<Vec<(String, Contact)>, StoreError> {
        let mut found = Vec::new();
        for chunk in values.chunks(SQLITE_MAX_BATCH_VALUES) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT k.value AS key_value, {} FROM contact_keys AS k JOIN contacts AS c ON c.tenant_id = k.tenant_id \
                 AND c.id = k.contact_id WHERE c.erase_time IS NULL AND c.merged_into IS NULL AND k.tenant_id = ",
                qualified("c", CONTACT_COLUMNS)
            ));
            qb.push_bind(tenant.as_str().to_owned())
                .push(" AND k.kind = ")
                .push_bind(kind.as_str())
                .push(" AND k.value");
            push_in(&mut qb, chunk.iter().cloned());
            for row in qb.build().fetch_all(&self.pool).await? {
                found.push((row.try_get("key_value")?, contact_from_row(&row)?));
            }
        }
        Ok(found)
    }

    async fn write_batch(&self, tenant: &TenantId, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.claims()?;
        let mut tx = self.write_tx().await?;
        let creates: Vec<(&Contact, &AuditRecord)> = batch.creates.iter().map(|(c, a)| (c, a)).collect();
        insert_contacts(&mut tx, tenant, &creates, batch.unique_email).await?;
        for (contact, expected, audit) in &batch.updates {
            write_contact(&mut tx, tenant, contact, *expected).await?;
            record(&mut tx, tenant, Audited::Contact(contact.id), audit).await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn shared_keys(
        &self,
        tenant: &TenantId,
        after: Option<&MatchKey>,
        limit: usize,
    ) -> Result<Vec<(MatchKey, Vec<ContactId>)>, StoreError> {
        // A range of the primary key read in its order, grouped as it goes. SQLite plans the
        // statement once: `?2 IS NULL OR ...` kept the index from bounding the range, and
        // every read scanned the tenant's keys from the start.
        let range = if after.is_some() {
            "AND (kind, value) > (?2, ?3)"
        } else {
            ""
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT kind, value, group_concat(contact_id, ',') AS ids FROM contact_keys \
             WHERE tenant_id = ?1 {range} GROUP BY kind, value HAVING count(*) > 1 ORDER BY kind, value LIMIT ?4"
        )))
        .bind(tenant.as_str())
        .bind(after.map(|k| k.kind.as_str()))
        .bind(after.map(|k| k.value.as_str()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                let ids: String = row.try_get("ids")?;
                let key = MatchKey {
                    kind: stored_word(&kind, KeyKind::parse)?,
                    value: row.try_get("value")?,
                };
                let mut ids = ids
                    .split(',')
                    .map(|id| Uuid::parse_str(id).map(ContactId).map_err(corrupt))
                    .collect::<Result<Vec<_>, _>>()?;
                ids.sort_unstable_by_key(|id| id.0);
                Ok((key, ids))
            })
            .collect()
    }

    async fn merge_contacts(&self, tenant: &TenantId, merge: &Merge<'_>) -> Result<(), StoreError> {
        let survivor = merge.survivor.id.0.to_string();
        let mut tx = self.write_tx().await?;
        write_contact(&mut tx, tenant, merge.survivor, merge.expected).await?;
        for (id, expected) in merge.merged {
            let moved = sqlx::query(
                "UPDATE contacts SET merged_into = ?3, given_name = '', family_name = '', emails = '[]', phones = '[]', \
                 primary_email = NULL, title = '', company_name = NULL, tags = '[]', attributes = '{}', consent = '{}', \
                 search_text = '', revision = revision + 1, update_time = ?4 \
                 WHERE tenant_id = ?1 AND id = ?2 AND revision = ?5 AND merged_into IS NULL AND erase_time IS NULL",
            )
            .bind(tenant.as_str())
            .bind(id.0.to_string())
            .bind(&survivor)
            .bind(micros(merge.survivor.update_time))
            .bind(expected.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                return Err(missing_or_stale(&mut tx, "contacts", tenant, id.0).await);
            }
            for statement in [
                "DELETE FROM contact_keys WHERE tenant_id = ?1 AND contact_id = ?2",
                "UPDATE interactions SET contact_id = ?3 WHERE tenant_id = ?1 AND contact_id = ?2",
                "UPDATE contacts SET merged_into = ?3 WHERE tenant_id = ?1 AND merged_into = ?2",
            ] {
                sqlx::query(statement)
                    .bind(tenant.as_str())
                    .bind(id.0.to_string())
                    .bind(&survivor)
                    .execute(&mut *tx)
                    .await?;
            }
            record(&mut tx, tenant, Audited::Contact(*id), merge.merged_audit).await?;
        }
        record(
            &mut tx,
            tenant,
            Audited::Contact(merge.survivor.id),
            merge.survivor_audit,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
    async fn company_candidates(
        &self,
        tenant: &TenantId,
        domain: Option<&str>,
        name_block: &str,
        limit: usize,
    ) -> Result<Vec<Company>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COMPANY_COLUMNS} FROM companies WHERE tenant_id = ?1 AND merged_into IS NULL \
             AND ((?2 IS NOT NULL AND domain = ?2) OR (?3 <> '' AND name_block = ?3)) ORDER BY update_time DESC, id LIMIT ?4"
        )))
        .bind(tenant.as_str())
        .bind(domain)
        .bind(name_block)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(company_from_row).collect()
    }

    async fn shared_company_keys(
        &self,
        tenant: &TenantId,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Vec<((String, String), Vec<CompanyId>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, value, group_concat(id, ',') AS ids FROM ( \
               SELECT kind, value, id FROM ( \
                 SELECT 'domain' AS kind, domain AS value, id FROM companies WHERE tenant_id = ?1 AND merged_into IS NULL AND domain IS NOT NULL \
                 UNION ALL \
                 SELECT 'name', name_block, id FROM companies WHERE tenant_id = ?1 AND merged_into IS NULL AND name_block <> '') \
               WHERE (?2 IS NULL OR (kind, value) > (?2, ?3)) ORDER BY kind, value, id) \
             GROUP BY kind, value HAVING count(*) > 1 ORDER BY kind, value LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(after.map(|k| k.0.as_str()))
        .bind(after.map(|k| k.1.as_str()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let ids: String = row.try_get("ids")?;
                let ids = ids
                    .split(',')
                    .map(|id| Uuid::parse_str(id).map(CompanyId).map_err(corrupt))
                    .collect::<Result<_, _>>()?;
                Ok(((row.try_get("kind")?, row.try_get("value")?), ids))
            })
            .collect()
    }

    async fn merge_companies(&self, tenant: &TenantId, merge: &CompanyMerge<'_>) -> Result<(), StoreError> {
        let survivor = merge.survivor;
        let survivor_id = survivor.id.0.to_string();
        let mut tx = self.write_tx().await?;
        write_company(&mut tx, tenant, survivor, merge.expected).await?;
        for (id, expected) in merge.merged {
            let moved = sqlx::query(
                "UPDATE companies SET merged_into = ?3, revision = revision + 1, update_time = ?4 \
                 WHERE tenant_id = ?1 AND id = ?2 AND revision = ?5 AND merged_into IS NULL",
            )
            .bind(tenant.as_str())
            .bind(id.0.to_string())
            .bind(&survivor_id)
            .bind(micros(survivor.update_time))
            .bind(expected.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                return Err(missing_or_stale(&mut tx, "companies", tenant, id.0).await);
            }
            sqlx::query(
                "UPDATE contacts SET company_id = ?3, company_name = ?4 WHERE tenant_id = ?1 AND company_id = ?2",
            )
            .bind(tenant.as_str())
            .bind(id.0.to_string())
            .bind(&survivor_id)
            .bind(&survivor.fields.display_name)
            .execute(&mut *tx)
            .await?;
            for statement in [
                "UPDATE interactions SET company_id = ?3 WHERE tenant_id = ?1 AND company_id = ?2",
                "UPDATE companies SET merged_into = ?3 WHERE tenant_id = ?1 AND merged_into = ?2",
            ] {
                sqlx::query(statement)
                    .bind(tenant.as_str())
                    .bind(id.0.to_string())
                    .bind(&survivor_id)
                    .execute(&mut *tx)
                    .await?;
            }
            record(&mut tx, tenant, Audited::Company(*id), merge.merged_audit).await?;
        }
        record(&mut tx, tenant, Audited::Company(survivor.id), merge.survivor_audit).await?;
        self.commit(tx).await?;
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

/// Writes a contact's row if its stored revision is still `expected`.
async fn write_contact(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    contact: &Contact,
    expected: Revision,
) -> Result<(), StoreError> {
    if contact.erase_time.is_none() && contact.merged_into.is_none() {
        ensure_unique_external_id(tx, tenant, contact).await?;
    }
    let company = company_name(tx, tenant, contact.fields.company).await?;
    let f = &contact.fields;
    let updated = sqlx::query(
        "UPDATE contacts SET given_name = ?3, family_name = ?4, emails = ?5, phones = ?6, primary_email = ?7, title = ?8, \
         company_id = ?9, company_name = ?10, lifecycle_stage = ?11, source = ?12, owner = ?13, tags = ?14, attributes = ?15, \
         consent = ?16, search_text = ?17, update_time = ?18, revision = ?19, erase_time = ?21, external_id = ?22 \
         WHERE tenant_id = ?1 AND id = ?2 AND revision = ?20",
    )
    .bind(tenant.as_str())
    .bind(contact.id.0.to_string())
    .bind(&f.given_name)
    .bind(&f.family_name)
    .bind(to_json(&f.emails)?)
    .bind(to_json(&f.phones)?)
    .bind(f.primary_email().map(EmailAddress::as_str))
    .bind(&f.title)
    .bind(f.company.map(|c| c.0.to_string()))
    .bind(company)
    .bind(f.lifecycle_stage.as_str())
    .bind(f.source.as_str())
    .bind(f.owner.as_str())
    .bind(to_json(&f.tags)?)
    .bind(to_json(&f.attributes)?)
    .bind(to_json(&f.consent)?)
    .bind(f.search_text())
    .bind(micros(contact.update_time))
    .bind(contact.revision.0)
    .bind(expected.0)
    .bind(contact.erase_time.map(micros))
    .bind(&f.external_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(missing_or_stale(tx, "contacts", tenant, contact.id.0).await);
    }
    write_keys(tx, tenant, contact).await
}

/// Appends an audit entry in the write's transaction.
async fn record(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    of: Audited,
    audit: &AuditRecord,
) -> Result<(), StoreError> {
    record_all(tx, tenant, &[(of, audit)]).await
}

/// Writes audit entries, many to a statement.
async fn record_all(
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
    Ok(())
}

/// Replaces a contact's match keys; erased and merged contacts have none.
async fn write_keys(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    contact: &Contact,
) -> Result<(), StoreError> {
    let id = contact.id.0.to_string();
    sqlx::query("DELETE FROM contact_keys WHERE tenant_id = ?1 AND contact_id = ?2")
        .bind(tenant.as_str())
        .bind(&id)
        .execute(&mut **tx)
        .await?;
    if contact.erase_time.is_some() || contact.merged_into.is_some() {
        return Ok(());
    }
    for key in contact.fields.match_keys() {
        sqlx::query("INSERT INTO contact_keys (tenant_id, kind, value, contact_id) VALUES (?1, ?2, ?3, ?4)")
            .bind(tenant.as_str())
            .bind(key.kind.as_str())
            .bind(&key.value)
            .bind(&id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes a company's row if its stored revision is still `expected`, and keeps the copy of
/// its name on its contacts (for search) current.
async fn write_company(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    company: &Company,
    expected: Revision,
) -> Result<(), StoreError> {
    let f = &company.fields;
    let updated = sqlx::query(
        "UPDATE companies SET display_name = ?3, domain = ?4, industry = ?5, size_band = ?6, owner = ?7, tags = ?8, \
         attributes = ?9, update_time = ?10, revision = ?11, name_block = ?13 WHERE tenant_id = ?1 AND id = ?2 AND revision = ?12",
    )
    .bind(tenant.as_str())
    .bind(company.id.0.to_string())
    .bind(&f.display_name)
    .bind(&f.domain)
    .bind(&f.industry)
    .bind(f.size_band.map(SizeBand::as_str))
    .bind(f.owner.as_str())
    .bind(to_json(&f.tags)?)
    .bind(to_json(&f.attributes)?)
    .bind(micros(company.update_time))
    .bind(company.revision.0)
    .bind(expected.0)
    .bind(company::name_block(&f.display_name))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(missing_or_stale(tx, "companies", tenant, company.id.0).await);
    }
    sqlx::query(
        "UPDATE contacts SET company_name = ?3 WHERE tenant_id = ?1 AND company_id = ?2 AND company_name IS NOT ?3",
    )
    .bind(tenant.as_str())
    .bind(company.id.0.to_string())
    .bind(&f.display_name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Another live record holding one of `values`, found by `holder` (?1 tenant, ?2 a value, ?3
/// the record's own id). Write transactions are serialised (BEGIN IMMEDIATE), so the check
/// cannot race a write of the same value.
async fn other_holder(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    values: Vec<String>,
    own: Uuid,
    holder: &'static str,
) -> Result<Option<Uuid>, StoreError> {
    for value in values {
        let found: Option<String> = sqlx::query_scalar(holder)
            .bind(tenant.as_str())
            .bind(&value)
            .bind(own.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(id) = found {
            return Ok(Some(Uuid::parse_str(&id).map_err(corrupt)?));
        }
    }
    Ok(None)
}

/// Fails with `DuplicateExternalId` when another live contact has `contact`'s external id.
async fn ensure_unique_external_id(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    contact: &Contact,
) -> Result<(), StoreError> {
    let Some(id) = &contact.fields.external_id else {
        return Ok(());
    };
    let holders = key_holders(tx, tenant, KeyKind::External, std::slice::from_ref(id)).await?;
    match held_by_another(&holders, id, contact.id) {
        Some(holder) => Err(StoreError::DuplicateExternalId(holder)),
        None => Ok(()),
    }
}

/// Fails with `DuplicateDomain` when another live company of the tenant has this domain.
async fn ensure_unique_domain(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    company: &Company,
) -> Result<(), StoreError> {
    let holder =
        "SELECT id FROM companies WHERE tenant_id = ?1 AND domain = ?2 AND merged_into IS NULL AND id <> ?3 LIMIT 1";
    match other_holder(
        tx,
        tenant,
        company.fields.domain.iter().cloned().collect(),
        company.id.0,
        holder,
    )
    .await?
    {
        Some(id) => Err(StoreError::DuplicateDomain(CompanyId(id))),
        None => Ok(()),
    }
}

/// Inserts a new contact and its match keys, refusing an external id (and with
/// `unique_email`, an email address) another live contact holds.
/// Inserts new contacts with their match keys and audit entries in a few statements of many
/// rows each: every statement is a round trip to SQLite's worker thread, and a statement per
/// row and key made an import batch of 1000 rows some 9000 of them (about 1000 rows/s, the
/// time going to thread switches). Each contact is refused as a single create is, the first
/// refusal in order winning: its external id held by another contact, one of its addresses
/// held (with `unique_email`), or a company the tenant does not have. Claims among the new
/// contacts themselves are the caller's to check ([`WriteBatch::claims`]).
async fn insert_contacts(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    creates: &[(&Contact, &AuditRecord)],
    unique_email: bool,
) -> Result<(), StoreError> {
    let external: Vec<String> = creates
        .iter()
        .filter_map(|(c, _)| c.fields.external_id.clone())
        .collect();
    let external = key_holders(tx, tenant, KeyKind::External, &external).await?;
    let emails: Vec<String> = if unique_email {
        creates
            .iter()
            .flat_map(|(c, _)| c.fields.emails.iter().map(|e| e.address.key()))
            .collect()
    } else {
        Vec::new()
    };
    let emails = key_holders(tx, tenant, KeyKind::Email, &emails).await?;
    let companies: Vec<CompanyId> = creates.iter().filter_map(|(c, _)| c.fields.company).collect();
    let companies = company_names(tx, tenant, &companies).await?;
    for (contact, _) in creates {
        let external_id = contact.fields.external_id.as_deref();
        if let Some(holder) = external_id.and_then(|id| held_by_another(&external, id, contact.id)) {
            return Err(StoreError::DuplicateExternalId(holder));
        }
        let mut addresses = contact.fields.emails.iter().map(|e| e.address.key());
        if let Some(holder) = addresses.find_map(|address| held_by_another(&emails, &address, contact.id)) {
            return Err(StoreError::DuplicateEmail(holder));
        }
        if contact.fields.company.is_some_and(|id| !companies.contains_key(&id)) {
            return Err(StoreError::UnknownCompany);
        }
    }

    for chunk in creates.chunks(SQLITE_MAX_BATCH_VALUES / 21) {
        let mut rows = Vec::with_capacity(chunk.len());
        for (contact, _) in chunk {
            let f = &contact.fields;
            rows.push((
                contact,
                [
                    to_json(&f.emails)?,
                    to_json(&f.phones)?,
                    to_json(&f.tags)?,
                    to_json(&f.attributes)?,
                    to_json(&f.consent)?,
                ],
            ));
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO contacts (tenant_id, id, given_name, family_name, emails, phones, primary_email, title, company_id, \
             company_name, lifecycle_stage, source, owner, tags, attributes, consent, search_text, create_time, update_time, \
             revision, external_id) ",
        );
        qb.push_values(
            rows,
            |mut row, (contact, [emails, phones, tags, attributes, consent])| {
                let f = &contact.fields;
                row.push_bind(tenant.as_str().to_owned())
                    .push_bind(contact.id.0.to_string())
                    .push_bind(f.given_name.clone())
                    .push_bind(f.family_name.clone())
                    .push_bind(emails)
                    .push_bind(phones)
                    .push_bind(f.primary_email().map(|e| e.as_str().to_owned()))
                    .push_bind(f.title.clone())
                    .push_bind(f.company.map(|c| c.0.to_string()))
                    .push_bind(f.company.and_then(|id| companies.get(&id).cloned()))
                    .push_bind(f.lifecycle_stage.as_str())
                    .push_bind(f.source.as_str())
                    .push_bind(f.owner.as_str().to_owned())
                    .push_bind(tags)
                    .push_bind(attributes)
                    .push_bind(consent)
                    .push_bind(f.search_text())
                    .push_bind(micros(contact.create_time))
                    .push_bind(micros(contact.update_time))
                    .push_bind(contact.revision.0)
                    .push_bind(f.external_id.clone());
            },
        );
        qb.build().execute(&mut **tx).await?;
    }

    let keys: Vec<(ContactId, MatchKey)> = creates
        .iter()
        .flat_map(|(c, _)| c.fields.match_keys().into_iter().map(|k| (c.id, k)))
        .collect();
    for chunk in keys.chunks(SQLITE_MAX_BATCH_VALUES / 4) {
        let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO contact_keys (tenant_id, kind, value, contact_id) ");
        qb.push_values(chunk, |mut row, (id, key)| {
            row.push_bind(tenant.as_str().to_owned())
                .push_bind(key.kind.as_str())
                .push_bind(key.value.clone())
                .push_bind(id.0.to_string());
        });
        qb.build().execute(&mut **tx).await?;
    }

    let audits: Vec<(Audited, &AuditRecord)> = creates.iter().map(|(c, a)| (Audited::Contact(c.id), *a)).collect();
    record_all(tx, tenant, &audits).await
}

/// The holders of each of `values` as a key of `kind`.
async fn key_holders(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    kind: KeyKind,
    values: &[String],
) -> Result<HashMap<String, Vec<ContactId>>, StoreError> {
    let mut holders: HashMap<String, Vec<ContactId>> = HashMap::new();
    for chunk in values.chunks(SQLITE_MAX_BATCH_VALUES) {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT value, contact_id FROM contact_keys WHERE tenant_id = ");
        qb.push_bind(tenant.as_str().to_owned())
            .push(" AND kind = ")
            .push_bind(kind.as_str())
            .push(" AND value");
        push_in(&mut qb, chunk.iter().cloned());
        let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&mut **tx).await?;
        for (value, id) in rows {
            holders
                .entry(value)
                .or_default()
                .push(ContactId(Uuid::parse_str(&id).map_err(corrupt)?));
        }
    }
    Ok(holders)
}

/// A holder of `value` other than `own`, among `holders` (from [`key_holders`]).
fn held_by_another(holders: &HashMap<String, Vec<ContactId>>, value: &str, own: ContactId) -> Option<ContactId> {
    holders.get(value)?.iter().copied().find(|holder| *holder != own)
}

/// The display names of those of `ids` the tenant has.
async fn company_names(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    ids: &[CompanyId],
) -> Result<HashMap<CompanyId, String>, StoreError> {
    let mut names = HashMap::new();
    for chunk in ids.chunks(SQLITE_MAX_BATCH_VALUES) {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, display_name FROM companies WHERE tenant_id = ");
        qb.push_bind(tenant.as_str().to_owned()).push(" AND id");
        push_in(&mut qb, chunk.iter().map(|id| id.0.to_string()));
        let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&mut **tx).await?;
        for (id, name) in rows {
            names.insert(CompanyId(Uuid::parse_str(&id).map_err(corrupt)?), name);
        }
    }
    Ok(names)
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

/// Live contacts having any of `keys` (but `except`), most recently updated first, up to
/// [`MAX_CANDIDATES`].
async fn keyed_contacts(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    keys: &[MatchKey],
    except: Option<ContactId>,
) -> Result<Vec<Contact>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE erase_time IS NULL AND merged_into IS NULL AND id IS NOT "
    ));
    qb.push_bind(except.map(|id| id.0.to_string()));
    qb.push(" AND tenant_id = ").push_bind(tenant.as_str().to_owned());
    qb.push(" AND id IN (SELECT contact_id FROM contact_keys WHERE tenant_id = ")
        .push_bind(tenant.as_str().to_owned());
    qb.push(" AND (");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push("(kind = ")
            .push_bind(key.kind.as_str())
            .push(" AND value = ")
            .push_bind(key.value.clone())
            .push(")");
    }
    qb.push(")) ORDER BY update_time DESC, id LIMIT ")
        .push_bind(i64::try_from(MAX_CANDIDATES).unwrap_or(i64::MAX));
    let rows = qb.build().fetch_all(&mut *conn).await?;
    rows.iter().map(contact_from_row).collect()
}
