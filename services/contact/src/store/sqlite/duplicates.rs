//! Duplicates on SQLite: contacts found by their match keys, the keys several contacts or
//! companies share, and company candidates by domain or name block.

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::{
    COMPANY_COLUMNS, CONTACT_COLUMNS, SQLITE_MAX_BATCH_VALUES, SqliteContactStore, company_from_row, contact_from_row,
    push_in,
};
use crate::domain::*;
use crate::store::{Duplicates, MAX_CANDIDATES, StoreError, corrupt, stored_word};

#[async_trait]
impl Duplicates for SqliteContactStore {
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
}

/// Live contacts having any of `keys` (but `except`), most recently updated first, up to
/// [`MAX_CANDIDATES`].
pub(super) async fn keyed_contacts(
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
