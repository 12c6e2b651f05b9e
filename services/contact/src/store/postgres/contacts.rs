//! Contacts on PostgreSQL: single creates (grouped ones in `group`), their rows and match keys
//! written with the checks of their unique keys, listed and searched.

use async_trait::async_trait;
use crm_platform::TenantId;
use crm_platform::db::is_unique_violation;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::duplicates::{Probe, candidates, keyed_contacts};
use super::history::record;
use super::write::write_rows;
use super::{
    CONTACT_COLUMNS, PgContactStore, contact_from_row, delete_row, fetch_contact, missing_or_stale, push_page,
    push_time_bounds, remember, replay_of, tag_strings, with_create_retry,
};
use crate::domain::*;
use crate::store::{Contacts, Created, KIND_CONTACT, RequestKey, StoreError, WriteBatch, claim_conflict, tsquery};

/// How far the terms starting with a query word are counted when picking the rarest word.
const SEARCH_COUNT_BOUND: i64 = 2_000;

/// How many contacts having every word a search ranks (at least; deeper pages rank more).
/// Search is for finding someone by what one remembers, best matches first; listing with
/// filters is the exhaustive query.
const SEARCH_CANDIDATES: usize = 200;

impl PgContactStore {
    /// Creates one contact in a transaction of its own (see [`group`](super::group) for creates written
    /// together).
    pub(super) async fn create_one(
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
impl Contacts for PgContactStore {
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

/// Writes a contact's row if its stored revision is still `expected`.
pub(super) async fn write_contact(
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
