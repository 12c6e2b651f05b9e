//! Companies on PostgreSQL: their rows, a domain unique when asked (under a lock), and the copy
//! of a company's name its contacts keep for search.

use async_trait::async_trait;
use crm_platform::TenantId;
use crm_platform::db::is_unique_violation;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::history::record;
use super::{
    COMPANY_COLUMNS, PgContactStore, company_from_row, delete_row, fetch_company, missing_or_stale, push_page,
    push_time_bounds, remember, replay_of, tag_strings, with_create_retry,
};
use crate::domain::*;
use crate::store::{Companies, Created, KIND_COMPANY, RequestKey, StoreError};

#[async_trait]
impl Companies for PgContactStore {
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
}

/// Writes a company's row if its stored revision is still `expected`, and keeps the copy of
/// its name on its contacts (for search) current.
pub(super) async fn write_company(
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
