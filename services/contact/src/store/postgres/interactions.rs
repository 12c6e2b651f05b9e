//! Interactions on PostgreSQL: logged on a contact (noting its company), read, deleted, and
//! paged as timelines.

use async_trait::async_trait;
use crm_platform::TenantId;
use crm_platform::db::is_unique_violation;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{
    INTERACTION_COLUMNS, PgContactStore, fetch_interaction, interaction_from_row, remember, replay_of,
    with_create_retry,
};
use crate::domain::*;
use crate::store::{Created, Interactions, KIND_INTERACTION, Publish, RequestKey, StoreError, TimelineOf};

#[async_trait]
impl Interactions for PgContactStore {
    async fn create_interaction(
        &self,
        tenant: &TenantId,
        interaction: &Interaction,
        key: Option<&RequestKey>,
        publish: Publish<'_, Interaction>,
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
            crm_platform::outbox::append_pg(&mut tx, &[publish(&value)?]).await?;
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
}
