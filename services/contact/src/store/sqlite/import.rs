//! Imports on SQLite: contacts looked up by a key, and batches of creates and updates written
//! in one transaction.

use async_trait::async_trait;
use crm_platform::TenantId;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::contacts::{insert_contacts, write_contact};
use super::history::record;
use super::{CONTACT_COLUMNS, SQLITE_MAX_BATCH_VALUES, SqliteContactStore, contact_from_row, push_in};
use crate::domain::*;
use crate::store::{Imports, StoreError, WriteBatch, qualified};

#[async_trait]
impl Imports for SqliteContactStore {
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
}
