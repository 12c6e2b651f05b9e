//! Contacts on SQLite: their rows and match keys, written with the checks of their unique
//! keys, listed and searched (FTS5).

use std::collections::HashMap;

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::{QueryBuilder, Sqlite, Transaction};
use uuid::Uuid;

use super::duplicates::keyed_contacts;
use super::history::{record, record_all};
use super::{
    CONTACT_COLUMNS, SQLITE_MAX_BATCH_VALUES, SqliteContactStore, contact_from_row, delete_row, fetch_contact, micros,
    missing_or_stale, push_in, push_page, push_tag, push_time_bounds, remember, replay_of, to_json,
};
use crate::domain::*;
use crate::store::{Contacts, Created, KIND_CONTACT, RequestKey, StoreError, corrupt, fts5_query, qualified};

/// How many matching contacts a search ranks together (deeper pages rank the next as many), as
/// on PostgreSQL: search finds someone by what one remembers, listing is the exhaustive query.
const SEARCH_CANDIDATES: usize = 200;

#[async_trait]
impl Contacts for SqliteContactStore {
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

/// Writes a contact's row if its stored revision is still `expected`.
pub(super) async fn write_contact(
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

/// Inserts a new contact and its match keys, refusing an external id (and with
/// `unique_email`, an email address) another live contact holds.
/// Inserts new contacts with their match keys and audit entries in a few statements of many
/// rows each: every statement is a round trip to SQLite's worker thread, and a statement per
/// row and key made an import batch of 1000 rows some 9000 of them (about 1000 rows/s, the
/// time going to thread switches). Each contact is refused as a single create is, the first
/// refusal in order winning: its external id held by another contact, one of its addresses
/// held (with `unique_email`), or a company the tenant does not have. Claims among the new
/// contacts themselves are the caller's to check ([`WriteBatch::claims`](crate::store::WriteBatch::claims)).
pub(super) async fn insert_contacts(
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
