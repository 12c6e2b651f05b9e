//! Imports on PostgreSQL: contacts looked up by a key, and batches of creates and updates
//! written in one call of contact_write.

use async_trait::async_trait;
use crm_platform::TenantId;

use super::PgContactStore;
use super::duplicates::{key_holders, live_contacts};
use super::write::write_rows;
use crate::domain::*;
use crate::store::{Imports, StoreError, WriteBatch};

#[async_trait]
impl Imports for PgContactStore {
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
}
