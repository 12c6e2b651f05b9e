//! Duplicates on PostgreSQL: the holders of match keys and the live contacts among them (the
//! candidates of creates too), the keys several records share, and company candidates.

use std::collections::HashMap;

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{COMPANY_COLUMNS, CONTACT_COLUMNS, PgContactStore, company_from_row, contact_from_row};
use crate::domain::*;
use crate::store::{Duplicates, MAX_CANDIDATES, StoreError, corrupt, stored_word};

#[async_trait]
impl Duplicates for PgContactStore {
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
}

/// Live contacts having any of `keys` (but `except`), most recently updated first, up to
/// [`MAX_CANDIDATES`].
pub(super) async fn keyed_contacts(
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
pub(super) struct Probe<'a> {
    pub(super) except: Option<ContactId>,
    pub(super) keys: &'a [MatchKey],
}

/// Holders looked up per probe key: one more than the candidates kept, as a probe's own
/// contact may hold its keys.
pub(super) const PROBE_PER_KEY: i64 = MAX_CANDIDATES as i64 + 1;

/// The keys of many probes as arrays, and the probe each belongs to.
pub(super) struct ProbeKeys<'a> {
    probes: Vec<usize>,
    pub(super) kinds: Vec<&'static str>,
    pub(super) values: Vec<&'a str>,
}

impl<'a> ProbeKeys<'a> {
    pub(super) fn new(probes: &[Probe<'a>]) -> Self {
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

    pub(super) fn index(&self, key: i64) -> Result<usize, StoreError> {
        key_position(key, self.values.len())
    }

    /// For each probe, the distinct holders of its keys but its `except`, given (key, holder).
    pub(super) fn held(&self, probes: &[Probe<'_>], holders: Vec<(usize, Uuid)>) -> Vec<Vec<Uuid>> {
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
pub(super) async fn candidates(
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
pub(super) async fn key_holders(
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
pub(super) async fn live_contacts(
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
