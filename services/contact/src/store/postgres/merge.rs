//! Merges on PostgreSQL: the survivor written, the merged records turned into lineage, their
//! interactions, contacts and earlier lineage moved, in one transaction.

use async_trait::async_trait;
use crm_platform::TenantId;

use super::companies::write_company;
use super::contacts::write_contact;
use super::history::record;
use super::{PgContactStore, missing_or_stale};
use crate::domain::*;
use crate::store::{CompanyMerge, Merge, Merges, StoreError};

#[async_trait]
impl Merges for PgContactStore {
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
