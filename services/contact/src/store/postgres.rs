//! PostgreSQL store. Every method runs in one transaction pinned to the tenant (or in one
//! call of a function that pins it for its statement: contact_write, contact_live), so
//! row-level security guards every statement in addition to the explicit tenant_id
//! conditions.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::db::{begin_tenant, is_unique_violation};
use crm_platform::telemetry::current_traceparent;
use crm_platform::{TenantId, UserId};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{
    Batch, CompanyMerge, ContactStore, Created, KIND_COMPANY, KIND_CONTACT, KIND_INTERACTION, MAX_CANDIDATES, Merge,
    Owned, RequestKey, StoreError, TimelineOf, WriteBatch, claim_conflict, corrupt, round_robin, stored_user,
    stored_word, tsquery,
};
use crate::domain::*;

mod group;

const CONTACT_COLUMNS: &str = "id, given_name, family_name, emails, phones, title, company_id, lifecycle_stage, source, \
                               owner, tags, attributes, consent, create_time, update_time, revision, erase_time, merged_into, \
                               external_id";
const COMPANY_COLUMNS: &str = "id, display_name, domain, industry, size_band, owner, tags, attributes, create_time, update_time, revision, merged_into";
const INTERACTION_COLUMNS: &str = "id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, subject, \
                                   body, outcome, campaign_id, actor, create_time";

/// How far the terms starting with a query word are counted when picking the rarest word.
const SEARCH_COUNT_BOUND: i64 = 2_000;
/// How many contacts having every word a search ranks (at least; deeper pages rank more).
/// Search is for finding someone by what one remembers, best matches first; listing with
/// filters is the exhaustive query.
const SEARCH_CANDIDATES: usize = 200;

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

/// The name of a company, or `UnknownCompany`.
async fn company_name(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    id: Option<CompanyId>,
) -> Result<Option<String>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    sqlx::query_scalar("SELECT display_name FROM companies WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.as_str())
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await?
        .map(Some)
        .ok_or(StoreError::UnknownCompany)
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

impl PgContactStore {
    /// Creates one contact in a transaction of its own (see [`group`] for creates written
    /// together).
    async fn create_one(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_email: bool,
    ) -> Result<Created<Contact>, StoreError> {
        with_create_retry!(self, tenant, key, |tx| {
            async {
                if let Some(key) = key
                    && let Some(existing) = replay_of(&mut tx, tenant, KIND_CONTACT, key).await?
                {
                    let value = fetch_contact(&mut tx, tenant, ContactId(existing)).await?;
                    let similar = keyed_contacts(&mut tx, tenant, &value.fields.match_keys(), Some(value.id)).await?;
                    return Ok(Created {
                        similar,
                        ..Created::new(value, true)
                    });
                }
                let batch = WriteBatch {
                    unique_email,
                    creates: vec![(contact.clone(), audit.clone())],
                    updates: Vec::new(),
                };
                let keys = contact.fields.match_keys();
                let probes = [Probe {
                    except: Some(contact.id),
                    keys: &keys,
                }];
                let held = write_rows(&mut tx, tenant, &batch, &[], &probes).await?;
                if let Some(key) = key {
                    remember(&mut tx, tenant, KIND_CONTACT, key, contact.id.0).await?;
                }
                let similar = candidates(&mut tx, tenant, held).await?.pop().unwrap_or_default();
                Ok(Created {
                    similar,
                    ..Created::new(contact.clone(), false)
                })
            }
            .await
        })
    }
}

#[async_trait]
impl ContactStore for PgContactStore {
    /// A create with a request key runs on its own (its replay and its key are its
    /// transaction's); the others are written together with the creates arriving meanwhile.
    async fn create_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_email: bool,
    ) -> Result<Created<Contact>, StoreError> {
        match key {
            Some(_) => self.create_one(tenant, contact, key, audit, unique_email).await,
            None => self.create_grouped(tenant, contact, audit, unique_email).await,
        }
    }

    async fn get_contact(&self, tenant: &TenantId, id: ContactId) -> Result<Contact, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let contact = fetch_contact(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(contact)
    }

    async fn update_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        write_contact(&mut tx, tenant, contact, expected).await?;
        record(&mut tx, tenant, Audited::Contact(contact.id), audit).await?;
        tx.commit().await?;
        Ok(())
    }

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
        // The events the feed still serves are rebuilt from the scrubbed entries.
        sqlx::query(
            "UPDATE outbox_events AS e SET payload = jsonb_build_object('action', h.action, 'changes', h.changes) FROM history AS h \
             WHERE e.tenant_id = $1 AND h.tenant_id = $1 AND h.id = e.id AND h.resource_kind = 'contact' \
             AND (h.resource_id = $2 OR h.resource_id IN (SELECT id FROM contacts WHERE tenant_id = $1 AND merged_into = $2))",
        )
        .bind(tenant.as_str())
        .bind(tombstone.id.0)
        .execute(&mut *tx)
        .await?;
        record(&mut tx, tenant, Audited::Contact(tombstone.id), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        delete_row(&mut tx, "contacts", tenant, id.0, expected).await?;
        record(&mut tx, tenant, Audited::Contact(id), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ListQuery<ContactFilter>,
    ) -> Result<Vec<Contact>, StoreError> {
        let f = &query.filter;
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = "));
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
            qb.push(" AND tags @> ARRAY[")
                .push_bind(tag.as_str().to_owned())
                .push("]::text[]");
        }
        if let Some(company) = f.company {
            qb.push(" AND company_id = ").push_bind(company.0);
        }
        push_time_bounds(&mut qb, "create_time", &f.create_time);
        push_time_bounds(&mut qb, "update_time", &f.update_time);
        push_page(&mut qb, query.order, query.after.as_ref(), query.limit);
        let mut tx = self.tx(tenant).await?;
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(contact_from_row).collect()
    }

    async fn search_contacts(
        &self,
        tenant: &TenantId,
        terms: &SearchTerms,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        // Each lexeme of the query (as the document's parser splits it) with how many terms
        // start with it, counted up to a bound: the rarest one drives the candidate scan.
        let words: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT w.lexeme, w.high, (SELECT count(*) FROM (SELECT 1 FROM contact_terms t \
             WHERE t.tenant_id = $1 AND t.term >= w.lexeme AND t.term < w.high LIMIT $3) AS s) \
             FROM (SELECT lexeme, lexeme || chr(1114111) AS high FROM unnest(to_tsvector('simple', $2)) OFFSET 0) AS w",
        )
        .bind(tenant.as_str())
        .bind(terms.words().join(" "))
        .bind(SEARCH_COUNT_BOUND)
        .fetch_all(&mut *tx)
        .await?;
        let Some(drive) = words
            .iter()
            .min_by_key(|(lexeme, _, count)| (*count, std::cmp::Reverse(lexeme.len())))
        else {
            return Ok(Vec::new());
        };
        if drive.2 == 0 {
            return Ok(Vec::new());
        }
        // Contacts having the drive word, from its exact term onwards, checked against the
        // whole query, up to a bound; those are ranked and paged.
        let candidates = (offset + limit + 1).max(SEARCH_CANDIDATES);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH candidates AS MATERIALIZED ( \
               SELECT c.id FROM contact_terms AS t JOIN contacts AS c ON c.tenant_id = t.tenant_id AND c.id = t.contact_id \
               WHERE t.tenant_id = $1 AND t.term >= $2 AND t.term < $3 AND c.erase_time IS NULL AND c.merged_into IS NULL \
               AND c.search_doc @@ to_tsquery('simple', $4) LIMIT $7) \
             SELECT {CONTACT_COLUMNS} FROM contacts, to_tsquery('simple', $4) AS q \
             WHERE tenant_id = $1 AND id IN (SELECT id FROM candidates) AND search_doc @@ q \
             ORDER BY ts_rank(search_doc, q) DESC, id LIMIT $5 OFFSET $6"
        )))
        .bind(tenant.as_str())
        .bind(&drive.0)
        .bind(&drive.1)
        .bind(tsquery(terms))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(candidates).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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
        with_create_retry!(self, tenant, key, |tx| {
            async {
            if let Some(key) = key
                && let Some(existing) = replay_of(&mut tx, tenant, KIND_COMPANY, key).await?
            {
                let value = fetch_company(&mut tx, tenant, CompanyId(existing)).await?;
                return Ok(Created::new(value, true));
            }
            if unique_domain {
                ensure_unique_domain(&mut tx, tenant, company).await?;
            }
            let f = &company.fields;
            sqlx::query(
                "INSERT INTO companies (tenant_id, id, display_name, domain, industry, size_band, owner, tags, attributes, \
                 create_time, update_time, revision, name_block) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(tenant.as_str())
            .bind(company.id.0)
            .bind(&f.display_name)
            .bind(&f.domain)
            .bind(&f.industry)
            .bind(f.size_band.map(SizeBand::as_str))
            .bind(f.owner.as_str())
            .bind(tag_strings(&f.tags))
            .bind(Json(&f.attributes))
            .bind(company.create_time)
            .bind(company.update_time)
            .bind(company.revision.0)
            .bind(company::name_block(&f.display_name))
            .execute(&mut *tx)
            .await?;
            if let Some(key) = key {
                remember(&mut tx, tenant, KIND_COMPANY, key, company.id.0).await?;
            }
            record(&mut tx, tenant, Audited::Company(company.id), audit).await?;
            Ok(Created::new(company.clone(), false))
        }
        .await
        })
    }

    async fn get_company(&self, tenant: &TenantId, id: CompanyId) -> Result<Company, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let company = fetch_company(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(company)
    }

    async fn update_company(
        &self,
        tenant: &TenantId,
        company: &Company,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        write_company(&mut tx, tenant, company, expected).await?;
        record(&mut tx, tenant, Audited::Company(company.id), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_company(
        &self,
        tenant: &TenantId,
        id: CompanyId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        sqlx::query(
            "UPDATE contacts SET company_id = NULL, company_name = NULL WHERE tenant_id = $1 AND company_id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        delete_row(&mut tx, "companies", tenant, id.0, expected).await?;
        record(&mut tx, tenant, Audited::Company(id), audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_companies(
        &self,
        tenant: &TenantId,
        query: &ListQuery<CompanyFilter>,
    ) -> Result<Vec<Company>, StoreError> {
        let f = &query.filter;
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("SELECT {COMPANY_COLUMNS} FROM companies WHERE tenant_id = "));
        qb.push_bind(tenant.as_str().to_owned());
        qb.push(" AND merged_into IS NULL");
        if let Some(owner) = &f.owner {
            qb.push(" AND owner = ").push_bind(owner.as_str().to_owned());
        }
        if let Some(tag) = &f.tag {
            qb.push(" AND tags @> ARRAY[")
                .push_bind(tag.as_str().to_owned())
                .push("]::text[]");
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
        let mut tx = self.tx(tenant).await?;
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(company_from_row).collect()
    }

    async fn create_interaction(
        &self,
        tenant: &TenantId,
        interaction: &Interaction,
        key: Option<&RequestKey>,
    ) -> Result<Created<Interaction>, StoreError> {
        with_create_retry!(self, tenant, key, |tx| {
            async {
            if let Some(key) = key
                && let Some(existing) = replay_of(&mut tx, tenant, KIND_INTERACTION, key).await?
            {
                let value = fetch_interaction(&mut tx, tenant, InteractionId(existing)).await?;
                return Ok(Created::new(value, true));
            }
            let f = &interaction.fields;
            let company: Option<Option<Uuid>> = sqlx::query_scalar(
                "INSERT INTO interactions (tenant_id, id, contact_id, company_id, kind, direction, channel, occur_time, duration_ms, \
                 subject, body, outcome, campaign_id, actor, create_time) \
                 SELECT $1, $2, c.id, c.company_id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
                 FROM contacts c WHERE c.tenant_id = $1 AND c.id = $3 RETURNING company_id",
            )
            .bind(tenant.as_str())
            .bind(interaction.id.0)
            .bind(interaction.contact.0)
            .bind(f.kind.as_str())
            .bind(f.direction.as_str())
            .bind(f.channel.map(InteractionChannel::as_str))
            .bind(f.occur_time)
            .bind(f.duration_ms)
            .bind(&f.subject)
            .bind(&f.body)
            .bind(&f.outcome)
            .bind(&f.campaign_id)
            .bind(f.actor.as_str())
            .bind(interaction.create_time)
            .fetch_optional(&mut *tx)
            .await?;
            let company = company.ok_or(StoreError::NotFound)?;
            if let Some(key) = key {
                remember(&mut tx, tenant, KIND_INTERACTION, key, interaction.id.0).await?;
            }
            let mut value = interaction.clone();
            value.company = company.map(CompanyId);
            Ok(Created::new(value, false))
        }
        .await
        })
    }

    async fn get_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<Interaction, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let interaction = fetch_interaction(&mut tx, tenant, id).await?;
        tx.commit().await?;
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
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE tenant_id = "
        ));
        qb.push_bind(tenant.as_str().to_owned());
        match of {
            TimelineOf::Contact(id) => qb.push(" AND contact_id = ").push_bind(id.0),
            TimelineOf::Company(id) => qb.push(" AND company_id = ").push_bind(id.0),
        };
        if let Some(cursor) = after {
            let SortKey::Time(time) = cursor.key else {
                return Ok(Vec::new());
            };
            qb.push(" AND (occur_time, id) < (")
                .push_bind(time)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        qb.push(" ORDER BY occur_time DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(i64::MAX));
        let mut tx = self.tx(tenant).await?;
        let rows = qb.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(interaction_from_row).collect()
    }

    async fn delete_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx(tenant).await?;
        let deleted = sqlx::query("DELETE FROM interactions WHERE tenant_id = $1 AND contact_id = $2 AND id = $3")
            .bind(tenant.as_str())
            .bind(contact.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

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
        tx.commit().await?;
        let mut shares = vec![0_u64; to.len()];
        for target in targets {
            shares[target] += 1;
        }
        Ok(shares)
    }
    async fn find_by_keys(
        &self,
        tenant: &TenantId,
        keys: &[MatchKey],
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let found = keyed_contacts(&mut tx, tenant, keys, None).await?;
        tx.commit().await?;
        Ok(found.into_iter().take(limit).collect())
    }

    async fn get_live_contacts(&self, tenant: &TenantId, ids: &[ContactId]) -> Result<Vec<Contact>, StoreError> {
        // contact_live pins the tenant for its own statement.
        let mut conn = self.pool.acquire().await?;
        let found = live_contacts(&mut conn, tenant, ids.iter().map(|id| id.0)).await?;
        Ok(found.into_values().collect())
    }

    async fn contacts_by_key(
        &self,
        tenant: &TenantId,
        kind: KeyKind,
        values: &[String],
    ) -> Result<Vec<(String, Contact)>, StoreError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.tx(tenant).await?;
        let kinds = vec![kind.as_str(); values.len()];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let holders = key_holders(&mut tx, tenant, &kinds, &values, None).await?;
        let contacts = live_contacts(&mut tx, tenant, holders.iter().map(|(_, id)| *id)).await?;
        tx.commit().await?;
        Ok(holders
            .into_iter()
            .filter_map(|(key, id)| Some((values[key].to_owned(), contacts.get(&id)?.clone())))
            .collect())
    }

    async fn write_batch(&self, tenant: &TenantId, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // contact_write pins the tenant and is a transaction of its own.
        let mut conn = self.pool.acquire().await?;
        write_rows(&mut conn, tenant, batch, &[], &[]).await?;
        Ok(())
    }

    async fn shared_keys(
        &self,
        tenant: &TenantId,
        after: Option<&MatchKey>,
        limit: usize,
    ) -> Result<Vec<(MatchKey, Vec<ContactId>)>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        // Serving connections plan each call for its parameters (force_custom_plan), so the
        // `$2 IS NULL OR` below becomes a range of the primary key, or no bound at all.
        let rows = sqlx::query(
            "SELECT kind, value, array_agg(contact_id ORDER BY contact_id) AS ids FROM contact_keys \
             WHERE tenant_id = $1 AND ($2::text IS NULL OR (kind, value) > ($2, $3)) \
             GROUP BY kind, value HAVING count(*) > 1 ORDER BY kind, value LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(after.map(|k| k.kind.as_str()))
        .bind(after.map(|k| k.value.as_str()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                let ids: Vec<Uuid> = row.try_get("ids")?;
                let key = MatchKey {
                    kind: stored_word(&kind, KeyKind::parse)?,
                    value: row.try_get("value")?,
                };
                Ok((key, ids.into_iter().map(ContactId).collect()))
            })
            .collect()
    }

    async fn merge_contacts(&self, tenant: &TenantId, merge: &Merge<'_>) -> Result<(), StoreError> {
        let survivor = merge.survivor.id;
        let mut tx = self.tx(tenant).await?;
        write_contact(&mut tx, tenant, merge.survivor, merge.expected).await?;
        for (id, expected) in merge.merged {
            let moved = sqlx::query(
                "UPDATE contacts SET merged_into = $3, given_name = '', family_name = '', emails = '[]', phones = '[]', \
                 primary_email = NULL, title = '', company_name = NULL, tags = '{}', attributes = '{}', consent = '{}', \
                 search_text = '', revision = revision + 1, update_time = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND revision = $5 AND merged_into IS NULL AND erase_time IS NULL",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .bind(survivor.0)
            .bind(merge.survivor.update_time)
            .bind(expected.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                return Err(missing_or_stale(&mut tx, "contacts", tenant, id.0).await);
            }
            sqlx::query("DELETE FROM contact_keys WHERE tenant_id = $1 AND contact_id = $2")
                .bind(tenant.as_str())
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            for statement in [
                "UPDATE interactions SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
                "UPDATE contacts SET merged_into = $3 WHERE tenant_id = $1 AND merged_into = $2",
            ] {
                sqlx::query(statement)
                    .bind(tenant.as_str())
                    .bind(id.0)
                    .bind(survivor.0)
                    .execute(&mut *tx)
                    .await?;
            }
            record(&mut tx, tenant, Audited::Contact(*id), merge.merged_audit).await?;
        }
        record(&mut tx, tenant, Audited::Contact(survivor), merge.survivor_audit).await?;
        tx.commit().await?;
        Ok(())
    }
    async fn company_candidates(
        &self,
        tenant: &TenantId,
        domain: Option<&str>,
        name_block: &str,
        limit: usize,
    ) -> Result<Vec<Company>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COMPANY_COLUMNS} FROM companies WHERE tenant_id = $1 AND merged_into IS NULL \
             AND (($2::text IS NOT NULL AND domain = $2) OR ($3 <> '' AND name_block = $3)) ORDER BY update_time DESC, id LIMIT $4"
        )))
        .bind(tenant.as_str())
        .bind(domain)
        .bind(name_block)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(company_from_row).collect()
    }

    async fn shared_company_keys(
        &self,
        tenant: &TenantId,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Vec<((String, String), Vec<CompanyId>)>, StoreError> {
        let mut tx = self.tx(tenant).await?;
        let rows = sqlx::query(
            "SELECT kind, value, array_agg(id ORDER BY id) AS ids FROM ( \
               SELECT 'domain' AS kind, domain AS value, id FROM companies WHERE tenant_id = $1 AND merged_into IS NULL AND domain IS NOT NULL \
               UNION ALL \
               SELECT 'name', name_block, id FROM companies WHERE tenant_id = $1 AND merged_into IS NULL AND name_block <> '') AS k \
             WHERE ($2::text IS NULL OR (kind, value) > ($2, $3)) GROUP BY kind, value HAVING count(*) > 1 ORDER BY kind, value LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(after.map(|k| k.0.as_str()))
        .bind(after.map(|k| k.1.as_str()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let ids: Vec<Uuid> = row.try_get("ids")?;
                Ok((
                    (row.try_get("kind")?, row.try_get("value")?),
                    ids.into_iter().map(CompanyId).collect(),
                ))
            })
            .collect()
    }

    async fn merge_companies(&self, tenant: &TenantId, merge: &CompanyMerge<'_>) -> Result<(), StoreError> {
        let survivor = merge.survivor;
        let mut tx = self.tx(tenant).await?;
        write_company(&mut tx, tenant, survivor, merge.expected).await?;
        for (id, expected) in merge.merged {
            let moved = sqlx::query(
                "UPDATE companies SET merged_into = $3, revision = revision + 1, update_time = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND revision = $5 AND merged_into IS NULL",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .bind(survivor.id.0)
            .bind(survivor.update_time)
            .bind(expected.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                return Err(missing_or_stale(&mut tx, "companies", tenant, id.0).await);
            }
            sqlx::query(
                "UPDATE contacts SET company_id = $3, company_name = $4 WHERE tenant_id = $1 AND company_id = $2",
            )
            .bind(tenant.as_str())
            .bind(id.0)
            .bind(survivor.id.0)
            .bind(&survivor.fields.display_name)
            .execute(&mut *tx)
            .await?;
            for statement in [
                "UPDATE interactions SET company_id = $3 WHERE tenant_id = $1 AND company_id = $2",
                "UPDATE companies SET merged_into = $3 WHERE tenant_id = $1 AND merged_into = $2",
            ] {
                sqlx::query(statement)
                    .bind(tenant.as_str())
                    .bind(id.0)
                    .bind(survivor.id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            record(&mut tx, tenant, Audited::Company(*id), merge.merged_audit).await?;
        }
        record(&mut tx, tenant, Audited::Company(survivor.id), merge.survivor_audit).await?;
        tx.commit().await?;
        Ok(())
    }
}

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

/// Writes a contact's row if its stored revision is still `expected`.
async fn write_contact(
    tx: &mut Transaction<'static, Postgres>,
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
        "UPDATE contacts SET given_name = $3, family_name = $4, emails = $5, phones = $6, primary_email = $7, title = $8, \
         company_id = $9, company_name = $10, lifecycle_stage = $11, source = $12, owner = $13, tags = $14, attributes = $15, \
         consent = $16, search_text = $17, update_time = $18, revision = $19, erase_time = $21, external_id = $22 \
         WHERE tenant_id = $1 AND id = $2 AND revision = $20",
    )
    .bind(tenant.as_str())
    .bind(contact.id.0)
    .bind(&f.given_name)
    .bind(&f.family_name)
    .bind(Json(&f.emails))
    .bind(Json(&f.phones))
    .bind(f.primary_email().map(EmailAddress::as_str))
    .bind(&f.title)
    .bind(f.company.map(|c| c.0))
    .bind(company)
    .bind(f.lifecycle_stage.as_str())
    .bind(f.source.as_str())
    .bind(f.owner.as_str())
    .bind(tag_strings(&f.tags))
    .bind(Json(&f.attributes))
    .bind(Json(&f.consent))
    .bind(f.search_text())
    .bind(contact.update_time)
    .bind(contact.revision.0)
    .bind(expected.0)
    .bind(contact.erase_time)
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
    Ok(())
}

/// Replaces a contact's match keys; erased and merged contacts have none.
async fn write_keys(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    contact: &Contact,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM contact_keys WHERE tenant_id = $1 AND contact_id = $2")
        .bind(tenant.as_str())
        .bind(contact.id.0)
        .execute(&mut **tx)
        .await?;
    if contact.erase_time.is_some() || contact.merged_into.is_some() {
        return Ok(());
    }
    let keys = contact.fields.match_keys();
    let kinds: Vec<&str> = keys.iter().map(|k| k.kind.as_str()).collect();
    let values: Vec<&str> = keys.iter().map(|k| k.value.as_str()).collect();
    sqlx::query(
        "INSERT INTO contact_keys (tenant_id, kind, value, contact_id) \
         SELECT $1, k.kind, k.value, $2 FROM unnest($3::text[], $4::text[]) AS k(kind, value)",
    )
    .bind(tenant.as_str())
    .bind(contact.id.0)
    .bind(&kinds)
    .bind(&values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a company's row if its stored revision is still `expected`, and keeps the copy of
/// its name on its contacts (for search) current.
async fn write_company(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    company: &Company,
    expected: Revision,
) -> Result<(), StoreError> {
    let f = &company.fields;
    let updated = sqlx::query(
        "UPDATE companies SET display_name = $3, domain = $4, industry = $5, size_band = $6, owner = $7, tags = $8, \
         attributes = $9, update_time = $10, revision = $11, name_block = $13 WHERE tenant_id = $1 AND id = $2 AND revision = $12",
    )
    .bind(tenant.as_str())
    .bind(company.id.0)
    .bind(&f.display_name)
    .bind(&f.domain)
    .bind(&f.industry)
    .bind(f.size_band.map(SizeBand::as_str))
    .bind(f.owner.as_str())
    .bind(tag_strings(&f.tags))
    .bind(Json(&f.attributes))
    .bind(company.update_time)
    .bind(company.revision.0)
    .bind(expected.0)
    .bind(company::name_block(&f.display_name))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(missing_or_stale(tx, "companies", tenant, company.id.0).await);
    }
    sqlx::query("UPDATE contacts SET company_name = $3 WHERE tenant_id = $1 AND company_id = $2 AND company_name IS DISTINCT FROM $3")
        .bind(tenant.as_str())
        .bind(company.id.0)
        .bind(&f.display_name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks each of `values` (a fixed order, so two transactions never wait on each other) for
/// the rest of the transaction, then returns another live record holding one of them, found
/// by `holder` ($1 tenant, $2 the values, $3 the record's own id). Two concurrent writes of
/// the same value are thereby serialised, and the second sees the first.
async fn other_holder(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    kind: &str,
    mut values: Vec<String>,
    own: Uuid,
    holder: &'static str,
) -> Result<Option<Uuid>, StoreError> {
    if values.is_empty() {
        return Ok(None);
    }
    values.sort();
    lock_values(tx, tenant, &vec![kind; values.len()], &values).await?;
    Ok(sqlx::query_scalar(holder)
        .bind(tenant.as_str())
        .bind(&values)
        .bind(own)
        .fetch_optional(&mut **tx)
        .await?)
}

/// Fails with `DuplicateExternalId` when another live contact has `contact`'s external id.
async fn ensure_unique_external_id(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    contact: &Contact,
) -> Result<(), StoreError> {
    let claims: Vec<_> = contact
        .fields
        .external_id
        .iter()
        .map(|id| (KeyKind::External.as_str(), id.clone(), contact.id))
        .collect();
    check_claims(tx, tenant, &claims).await
}

/// Locks each claimed (kind, value) (sorted by the caller: see [`WriteBatch::claims`]), then
/// fails when a live contact other than its claimant holds one of them.
async fn check_claims(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    claims: &[(&'static str, String, ContactId)],
) -> Result<(), StoreError> {
    if claims.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = claims.iter().map(|c| c.0).collect();
    let values: Vec<&str> = claims.iter().map(|c| c.1.as_str()).collect();
    let claimants: Vec<Uuid> = claims.iter().map(|c| c.2.0).collect();
    // contact_claim_holder (migration 0008): the locks, then the lookup, in one round trip.
    let held: Option<(String, Uuid)> =
        sqlx::query_as("SELECT claim_kind, claim_holder FROM contact_claim_holder($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(&kinds)
            .bind(&values)
            .bind(&claimants)
            .fetch_optional(&mut **tx)
            .await?;
    match held {
        Some((kind, holder)) => Err(claim_conflict(&kind, ContactId(holder))),
        None => Ok(()),
    }
}

/// Fails with `DuplicateDomain` when another live company of the tenant has this domain.
async fn ensure_unique_domain(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    company: &Company,
) -> Result<(), StoreError> {
    let domains = company.fields.domain.iter().cloned().collect();
    let holder = "SELECT id FROM companies WHERE tenant_id = $1 AND domain = ANY($2) AND merged_into IS NULL AND id <> $3 LIMIT 1";
    match other_holder(tx, tenant, "domain", domains, company.id.0, holder).await? {
        Some(id) => Err(StoreError::DuplicateDomain(CompanyId(id))),
        None => Ok(()),
    }
}

/// Takes the transaction-scoped lock of each (kind, value), in the order given, in one
/// statement. Callers pass them sorted, so two transactions never wait on each other.
async fn lock_values(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    kinds: &[&str],
    values: &[String],
) -> Result<(), StoreError> {
    if values.is_empty() {
        return Ok(());
    }
    // lock_key_values (migration 0009) is the one definition of the lock, shared with the
    // claim check.
    sqlx::query("SELECT lock_key_values($1, $2, $3)")
        .bind(tenant.as_str())
        .bind(kinds)
        .bind(values)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The columns of many contacts, one array per column, as contact_write takes them: creates
/// (no expected revision) and updates (the revision they were read at) together.
struct ContactArrays {
    ids: Vec<Uuid>,
    given_names: Vec<String>,
    family_names: Vec<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    primary_emails: Vec<Option<String>>,
    titles: Vec<String>,
    companies: Vec<Option<Uuid>>,
    stages: Vec<&'static str>,
    sources: Vec<&'static str>,
    owners: Vec<String>,
    tags: Vec<String>,
    attributes: Vec<String>,
    consents: Vec<String>,
    search_texts: Vec<String>,
    create_times: Vec<DateTime<Utc>>,
    update_times: Vec<DateTime<Utc>>,
    revisions: Vec<i64>,
    external_ids: Vec<Option<String>>,
    expected: Vec<Option<i64>>,
}

impl ContactArrays {
    fn new<'a>(contacts: impl Iterator<Item = (&'a Contact, Option<Revision>)>) -> Result<Self, StoreError> {
        let mut a = ContactArrays {
            ids: Vec::new(),
            given_names: Vec::new(),
            family_names: Vec::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            primary_emails: Vec::new(),
            titles: Vec::new(),
            companies: Vec::new(),
            stages: Vec::new(),
            sources: Vec::new(),
            owners: Vec::new(),
            tags: Vec::new(),
            attributes: Vec::new(),
            consents: Vec::new(),
            search_texts: Vec::new(),
            create_times: Vec::new(),
            update_times: Vec::new(),
            revisions: Vec::new(),
            external_ids: Vec::new(),
            expected: Vec::new(),
        };
        for (contact, expected) in contacts {
            let f = &contact.fields;
            a.ids.push(contact.id.0);
            a.given_names.push(f.given_name.clone());
            a.family_names.push(f.family_name.clone());
            a.emails.push(to_json(&f.emails)?);
            a.phones.push(to_json(&f.phones)?);
            a.primary_emails.push(f.primary_email().map(|e| e.as_str().to_owned()));
            a.titles.push(f.title.clone());
            a.companies.push(f.company.map(|c| c.0));
            a.stages.push(f.lifecycle_stage.as_str());
            a.sources.push(f.source.as_str());
            a.owners.push(f.owner.as_str().to_owned());
            a.tags.push(to_json(&tag_strings(&f.tags))?);
            a.attributes.push(to_json(&f.attributes)?);
            a.consents.push(to_json(&f.consent)?);
            a.search_texts.push(f.search_text());
            a.create_times.push(contact.create_time);
            a.update_times.push(contact.update_time);
            a.revisions.push(contact.revision.0);
            a.external_ids.push(f.external_id.clone());
            a.expected.push(expected.map(|r| r.0));
        }
        Ok(a)
    }
}

/// The match keys of many contacts, as arrays.
struct KeyArrays {
    kinds: Vec<&'static str>,
    values: Vec<String>,
    owners: Vec<Uuid>,
}

impl KeyArrays {
    fn new<'a>(contacts: impl Iterator<Item = &'a Contact>) -> Self {
        let (mut kinds, mut values, mut owners) = (Vec::new(), Vec::new(), Vec::new());
        for contact in contacts {
            for key in contact.fields.match_keys() {
                kinds.push(key.kind.as_str());
                values.push(key.value);
                owners.push(contact.id.0);
            }
        }
        Self { kinds, values, owners }
    }
}

/// The audit entries of many contacts, as arrays aligned with their [`ContactArrays`].
struct AuditArrays {
    ids: Vec<Uuid>,
    actions: Vec<&'static str>,
    actors: Vec<String>,
    changes: Vec<String>,
    traces: Vec<String>,
}

impl AuditArrays {
    /// `traces` holds each entry's trace when they came from different requests; when empty,
    /// every entry takes the current request's.
    fn new<'a>(entries: impl Iterator<Item = &'a AuditRecord>, traces: &[String]) -> Result<Self, StoreError> {
        let mut a = AuditArrays {
            ids: Vec::new(),
            actions: Vec::new(),
            actors: Vec::new(),
            changes: Vec::new(),
            traces: traces.to_vec(),
        };
        for audit in entries {
            a.ids.push(Uuid::now_v7());
            a.actions.push(audit.action.as_str());
            a.actors.push(audit.actor.as_str().to_owned());
            a.changes.push(to_json(&audit.changes)?);
        }
        if traces.is_empty() {
            let current = current_traceparent().unwrap_or_default();
            a.traces = vec![current; a.ids.len()];
        }
        Ok(a)
    }
}

/// The JSON text of a value bound as `jsonb`.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A row of contact_write's outcome: (outcome, claimed kind, probe key index, holder).
type WriteOutcome = (String, Option<String>, Option<i64>, Option<Uuid>);

/// The SQLSTATE contact_write raises when an update's revision moved.
const STALE_WRITE: &str = "CRM01";

/// Writes the creates and updates of `batch` in one call of contact_write (migration 0012):
/// the unique keys it claims locked and checked, then every row, match key and audit entry;
/// then the holders of each probe's keys are looked up. On a connection without a
/// transaction the call is a transaction of its own. `traces`: see [`AuditArrays::new`].
/// Returns, for each probe, the contacts holding its keys (merged and erased included: see
/// [`candidates`]).
async fn write_rows(
    conn: &mut PgConnection,
    tenant: &TenantId,
    batch: &WriteBatch,
    traces: &[String],
    probes: &[Probe<'_>],
) -> Result<Vec<Vec<Uuid>>, StoreError> {
    let claims = batch.claims()?;
    let claim_kinds: Vec<&str> = claims.iter().map(|c| c.0).collect();
    let claim_values: Vec<&str> = claims.iter().map(|c| c.1.as_str()).collect();
    let claimants: Vec<Uuid> = claims.iter().map(|c| c.2.0).collect();
    let contacts = || {
        batch
            .creates
            .iter()
            .map(|(c, _)| (c, None))
            .chain(batch.updates.iter().map(|(c, r, _)| (c, Some(*r))))
    };
    let rows = ContactArrays::new(contacts())?;
    let keys = KeyArrays::new(contacts().map(|(c, _)| c));
    let audits = AuditArrays::new(
        batch
            .creates
            .iter()
            .map(|(_, a)| a)
            .chain(batch.updates.iter().map(|(_, _, a)| a)),
        traces,
    )?;
    let probe_keys = ProbeKeys::new(probes);
    let outcomes: Vec<WriteOutcome> = sqlx::query_as(
        "SELECT outcome, kind, key_index, holder FROM contact_write($1, $2, $3, $4, $5, $6, $7, $8::jsonb[], $9::jsonb[], \
         $10, $11, $12, $13, $14, $15, $16::jsonb[], $17::jsonb[], $18::jsonb[], $19, $20, $21, $22, $23, $24, $25, $26, \
         $27, $28, $29, $30, $31::jsonb[], $32, $33, $34, $35, $36)",
    )
    .bind(tenant.as_str())
    .bind(&claim_kinds)
    .bind(&claim_values)
    .bind(&claimants)
    .bind(&rows.ids)
    .bind(&rows.given_names)
    .bind(&rows.family_names)
    .bind(&rows.emails)
    .bind(&rows.phones)
    .bind(&rows.primary_emails)
    .bind(&rows.titles)
    .bind(&rows.companies)
    .bind(&rows.stages)
    .bind(&rows.sources)
    .bind(&rows.owners)
    .bind(&rows.tags)
    .bind(&rows.attributes)
    .bind(&rows.consents)
    .bind(&rows.search_texts)
    .bind(&rows.create_times)
    .bind(&rows.update_times)
    .bind(&rows.revisions)
    .bind(&rows.external_ids)
    .bind(&rows.expected)
    .bind(&keys.kinds)
    .bind(&keys.values)
    .bind(&keys.owners)
    .bind(&audits.ids)
    .bind(&audits.actions)
    .bind(&audits.actors)
    .bind(&audits.changes)
    .bind(&audits.traces)
    .bind(now())
    .bind(&probe_keys.kinds)
    .bind(&probe_keys.values)
    .bind(PROBE_PER_KEY)
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(STALE_WRITE) => StoreError::RevisionMismatch,
        _ => err.into(),
    })?;
    let mut holders = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            (outcome, Some(kind), _, Some(holder)) if outcome == "claimed" => {
                return Err(claim_conflict(&kind, ContactId(holder)));
            }
            (outcome, ..) if outcome == "unknown_company" => return Err(StoreError::UnknownCompany),
            (outcome, _, Some(key), Some(holder)) if outcome == "held" => {
                holders.push((probe_keys.index(key)?, holder))
            }
            (outcome, ..) => return Err(corrupt(format!("contact_write outcome {outcome}"))),
        }
    }
    Ok(probe_keys.held(probes, holders))
}

/// Live contacts having any of `keys` (but `except`), most recently updated first, up to
/// [`MAX_CANDIDATES`].
async fn keyed_contacts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    keys: &[MatchKey],
    except: Option<ContactId>,
) -> Result<Vec<Contact>, StoreError> {
    let probes = [Probe { except, keys }];
    let probe_keys = ProbeKeys::new(&probes);
    let holders = key_holders(conn, tenant, &probe_keys.kinds, &probe_keys.values, Some(PROBE_PER_KEY)).await?;
    Ok(candidates(conn, tenant, probe_keys.held(&probes, holders))
        .await?
        .pop()
        .unwrap_or_default())
}

/// One lookup of duplicate candidates: contacts having any of `keys`, but `except`.
struct Probe<'a> {
    except: Option<ContactId>,
    keys: &'a [MatchKey],
}

/// Holders looked up per probe key: one more than the candidates kept, as a probe's own
/// contact may hold its keys.
const PROBE_PER_KEY: i64 = MAX_CANDIDATES as i64 + 1;

/// The keys of many probes as arrays, and the probe each belongs to.
struct ProbeKeys<'a> {
    probes: Vec<usize>,
    kinds: Vec<&'static str>,
    values: Vec<&'a str>,
}

impl<'a> ProbeKeys<'a> {
    fn new(probes: &[Probe<'a>]) -> Self {
        let mut keys = ProbeKeys {
            probes: Vec::new(),
            kinds: Vec::new(),
            values: Vec::new(),
        };
        for (n, probe) in probes.iter().enumerate() {
            for key in probe.keys {
                keys.probes.push(n);
                keys.kinds.push(key.kind.as_str());
                keys.values.push(key.value.as_str());
            }
        }
        keys
    }

    fn index(&self, key: i64) -> Result<usize, StoreError> {
        key_position(key, self.values.len())
    }

    /// For each probe, the distinct holders of its keys but its `except`, given (key, holder).
    fn held(&self, probes: &[Probe<'_>], holders: Vec<(usize, Uuid)>) -> Vec<Vec<Uuid>> {
        let mut held: Vec<Vec<Uuid>> = vec![Vec::new(); probes.len()];
        for (key, id) in holders {
            let probe = self.probes[key];
            if probes[probe].except != Some(ContactId(id)) && !held[probe].contains(&id) {
                held[probe].push(id);
            }
        }
        held
    }
}

/// For each probe's holders, the live ones, most recently updated first, up to
/// [`MAX_CANDIDATES`]: one read of them all, only when any is held.
async fn candidates(
    conn: &mut PgConnection,
    tenant: &TenantId,
    held: Vec<Vec<Uuid>>,
) -> Result<Vec<Vec<Contact>>, StoreError> {
    let contacts = live_contacts(conn, tenant, held.iter().flatten().copied()).await?;
    Ok(held
        .into_iter()
        .map(|ids| {
            let mut found: Vec<Contact> = ids.iter().filter_map(|id| contacts.get(id).cloned()).collect();
            found.sort_by(Contact::most_recent_first);
            found.truncate(MAX_CANDIDATES);
            found
        })
        .collect())
}

/// The holders of each key (`kinds[i]`, `values[i]`), at most `per_key` each (None: all), as
/// (i, contact id), merged and erased contacts included. contact_key_matches (migration 0011)
/// keeps one plan per connection: a primary-key probe per key.
async fn key_holders(
    conn: &mut PgConnection,
    tenant: &TenantId,
    kinds: &[&str],
    values: &[&str],
    per_key: Option<i64>,
) -> Result<Vec<(usize, Uuid)>, StoreError> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, Uuid)> = sqlx::query_as("SELECT key_index, holder FROM contact_key_matches($1, $2, $3, $4)")
        .bind(tenant.as_str())
        .bind(kinds)
        .bind(values)
        .bind(per_key)
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|(n, id)| Ok((key_position(n, values.len())?, id)))
        .collect()
}

/// The array index of a key index as the database returns it (1-based) among `len` keys.
fn key_position(key: i64, len: usize) -> Result<usize, StoreError> {
    usize::try_from(key - 1)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| corrupt("key index out of range"))
}

/// The live contacts (neither erased nor merged away) among `ids` (repeats allowed) by id,
/// one primary-key read each (contact_live, migration 0012: it pins the tenant, so it needs
/// no transaction); no statement when there are none.
async fn live_contacts(
    conn: &mut PgConnection,
    tenant: &TenantId,
    ids: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, Contact>, StoreError> {
    let mut ids: Vec<Uuid> = ids.collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contact_live($1, $2)"
    )))
    .bind(tenant.as_str())
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| contact_from_row(row).map(|c| (c.id.0, c)))
        .collect()
}
