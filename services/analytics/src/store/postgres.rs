//! The PostgreSQL store: queries pinned to their tenant (row-level security); ingest pins each
//! change's tenant in turn inside its one transaction.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::TenantId;
use crm_platform::db::{begin_tenant, begin_tenant_snapshot};
use crm_platform::outbox::{NewEvent, Outbox, PgOutbox};
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{
    AMOUNT_UNIT, AnalyticsStore, CYCLE_UNIT, Folded, IngestBatch, Interactions, MonthSplit, PARKED_LISTED,
    RATES_LISTED, StaysRead, StoreError, UsageReport, close_group_sql, corrupt, cycle_times, document, from_document,
    outcome, stay_cell, stay_times, whole_and_rest,
};
use crate::domain::derived::{Changes, DerivedState, GoalStatus, QuietDeal};
use crate::domain::*;

#[derive(Clone)]
pub struct PgAnalyticsStore {
    pool: PgPool,
    outbox: Arc<PgOutbox>,
}

impl PgAnalyticsStore {
    /// The store over `pool`, with its outbox's sequencer started.
    pub async fn start(pool: PgPool) -> Result<Self, sqlx::Error> {
        let outbox = PgOutbox::start(pool.clone()).await?;
        Ok(Self { pool, outbox })
    }

    /// The rows `query` reads in a transaction pinned to `tenant`.
    async fn read(&self, tenant: &TenantId, query: Query<'_, Postgres, PgArguments>) -> Result<Vec<PgRow>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The rows of each of `queries`, read with `tenant` pinned from one snapshot.
    async fn read_each<const N: usize>(
        &self,
        tenant: &TenantId,
        queries: [Query<'_, Postgres, PgArguments>; N],
    ) -> Result<[Vec<PgRow>; N], StoreError> {
        let mut tx = begin_tenant_snapshot(&self.pool, tenant).await?;
        let mut all = Vec::with_capacity(N);
        for query in queries {
            all.push(query.fetch_all(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(all
            .try_into()
            .unwrap_or_else(|_| unreachable!("one set of rows per query")))
    }
}

/// Pins `tenant` for the rest of the transaction.
async fn pin(tx: &mut PgConnection, tenant: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One tenant's folded changes, one statement per table (the tenant pinned).
async fn write(tx: &mut PgConnection, tenant: &TenantId, f: &Folded) -> Result<(), sqlx::Error> {
    let t = tenant.as_str();
    if !f.deals.is_empty() {
        let d = &f.deals;
        // A deal's customer merged away is its survivor.
        sqlx::query(
            "INSERT INTO deal_facts (tenant_id, deal_id, pipeline_id, owner, lead_id, amount_minor, currency, \
             create_time, outcome, close_time, customer_id) \
             SELECT $1, d.deal_id, d.pipeline_id, d.owner, d.lead_id, d.amount_minor, d.currency, d.create_time, \
                 d.outcome, d.close_time, coalesce(m.merged_into, d.customer) FROM unnest($2::uuid[], $3::uuid[], $4::text[], \
                 $5::uuid[], $6::bigint[], $7::text[], $8::timestamptz[], $9::text[], $10::timestamptz[], \
                 $11::uuid[]) AS d(deal_id, pipeline_id, owner, lead_id, amount_minor, currency, create_time, \
                 outcome, close_time, customer) \
             LEFT JOIN customer_facts m ON m.tenant_id = $1 AND m.customer_id = d.customer \
             ON CONFLICT (tenant_id, deal_id) DO UPDATE SET pipeline_id = excluded.pipeline_id, \
             owner = excluded.owner, lead_id = excluded.lead_id, amount_minor = excluded.amount_minor, \
             currency = excluded.currency, create_time = excluded.create_time, outcome = excluded.outcome, \
             close_time = excluded.close_time, customer_id = excluded.customer_id",
        )
        .bind(t)
        .bind(d.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.pipeline).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.owner.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.lead).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.amount_minor).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.currency.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.create_time).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.outcome.as_str()).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.close_time).collect::<Vec<_>>())
        .bind(d.iter().map(|d| d.customer).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.transitions.is_empty() {
        let s = &f.transitions;
        sqlx::query(
            "INSERT INTO deal_transitions (tenant_id, deal_id, sequence, kind, from_stage, to_stage, time) \
             SELECT $1, * FROM unnest($2::uuid[], $3::bigint[], $4::text[], $5::uuid[], $6::uuid[], $7::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(t)
        .bind(s.iter().map(|s| s.deal).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.sequence).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.from_stage).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.to_stage).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.time).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.products.is_empty() {
        sqlx::query("DELETE FROM deal_products WHERE tenant_id = $1 AND deal_id = ANY($2)")
            .bind(t)
            .bind(f.products.iter().map(|(deal, _)| *deal).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        let (deals, products): (Vec<Uuid>, Vec<Uuid>) = f
            .products
            .iter()
            .flat_map(|(deal, products)| products.iter().map(move |p| (*deal, *p)))
            .unzip();
        if !deals.is_empty() {
            sqlx::query(
                "INSERT INTO deal_products (tenant_id, deal_id, product_id) \
                 SELECT $1, * FROM unnest($2::uuid[], $3::uuid[]) ON CONFLICT DO NOTHING",
            )
            .bind(t)
            .bind(deals)
            .bind(products)
            .execute(&mut *tx)
            .await?;
        }
    }
    if !f.versions.is_empty() {
        let v = &f.versions;
        sqlx::query(
            "INSERT INTO deal_versions (tenant_id, deal_id, version_time, owner, amount_minor, currency) \
             SELECT $1, * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::bigint[], $6::text[]) \
             ON CONFLICT (tenant_id, deal_id, version_time) DO UPDATE SET owner = excluded.owner, \
             amount_minor = excluded.amount_minor, currency = excluded.currency",
        )
        .bind(t)
        .bind(v.iter().map(|v| v.deal).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.time).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.owner.as_str()).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.amount_minor).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.currency.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.owner_versions.is_empty() {
        // A deal given to another owner: its version as of then, with the amount its latest
        // version before then had (a deal not known yet gets its versions from its own events).
        let o = &f.owner_versions;
        sqlx::query(
            "INSERT INTO deal_versions (tenant_id, deal_id, version_time, owner, amount_minor, currency) \
             SELECT $1, o.deal_id, o.time, o.owner, v.amount_minor, v.currency \
             FROM unnest($2::uuid[], $3::timestamptz[], $4::text[]) AS o(deal_id, time, owner) \
             CROSS JOIN LATERAL (SELECT amount_minor, currency FROM deal_versions \
                 WHERE tenant_id = $1 AND deal_id = o.deal_id AND version_time <= o.time \
                 ORDER BY version_time DESC LIMIT 1) v \
             ON CONFLICT (tenant_id, deal_id, version_time) DO UPDATE SET owner = excluded.owner",
        )
        .bind(t)
        .bind(o.iter().map(|o| o.0).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.1).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.2.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.stages.is_empty() {
        sqlx::query("DELETE FROM stage_facts WHERE tenant_id = $1 AND pipeline_id = ANY($2)")
            .bind(t)
            .bind(f.stages.iter().map(|(p, _)| *p).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        let s: Vec<&StageFact> = f.stages.iter().flat_map(|(_, stages)| stages).collect();
        sqlx::query(
            "INSERT INTO stage_facts (tenant_id, pipeline_id, stage_id, position, kind) \
             SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::int[], $5::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(t)
        .bind(s.iter().map(|s| s.pipeline).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.stage).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.position).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.leads.is_empty() {
        let l = &f.leads;
        sqlx::query(
            "INSERT INTO lead_facts (tenant_id, lead_id, owner, source, create_time, deal_id, convert_time) \
             SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::uuid[], $7::timestamptz[]) \
             ON CONFLICT (tenant_id, lead_id) DO UPDATE SET owner = excluded.owner, source = excluded.source, \
             create_time = excluded.create_time, deal_id = excluded.deal_id, convert_time = excluded.convert_time",
        )
        .bind(t)
        .bind(l.iter().map(|l| l.id).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.owner.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.source.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.create_time).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.converted.map(|(deal, _)| deal)).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.converted.map(|(_, time)| time)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.forecasts.is_empty() {
        let x = &f.forecasts;
        sqlx::query(
            "INSERT INTO forecast_facts (tenant_id, forecast_id, owner, period, amount_minor, currency, category, \
             submit_time) \
             SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], \
                                      $8::timestamptz[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(t)
        .bind(x.iter().map(|x| x.id).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.owner.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.period.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.amount_minor).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.currency.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.category.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.submit_time).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.quotas.is_empty() {
        let q = &f.quotas;
        sqlx::query(
            "INSERT INTO quota_facts (tenant_id, owner, period, amount_minor, currency) \
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[]) \
             ON CONFLICT (tenant_id, period, owner) DO UPDATE SET amount_minor = excluded.amount_minor, \
             currency = excluded.currency",
        )
        .bind(t)
        .bind(q.iter().map(|q| q.owner.as_str()).collect::<Vec<_>>())
        .bind(q.iter().map(|q| q.period.as_str()).collect::<Vec<_>>())
        .bind(q.iter().map(|q| q.amount_minor).collect::<Vec<_>>())
        .bind(q.iter().map(|q| q.currency.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    write_customers(tx, t, f).await?;
    for (table, key, kind) in [("deal_facts", "deal_id", 0), ("lead_facts", "lead_id", 1)] {
        let (ids, owners): (Vec<Uuid>, Vec<&str>) = f
            .owners
            .iter()
            .filter_map(|(record, owner)| match (record, kind) {
                (Record::Deal(id), 0) | (Record::Lead(id), 1) => Some((*id, owner.as_str())),
                _ => None,
            })
            .unzip();
        if ids.is_empty() {
            continue;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} AS f SET owner = c.owner FROM unnest($2::uuid[], $3::text[]) AS c(id, owner) \
             WHERE f.tenant_id = $1 AND f.{key} = c.id"
        )))
        .bind(t)
        .bind(ids)
        .bind(owners)
        .execute(&mut *tx)
        .await?;
    }
    // Last, in one round trip: the closes and stays read the deals, transitions, leads and
    // owners written above.
    if !f.refresh.is_empty() {
        let ids = |ids: &BTreeSet<Uuid>| ids.iter().copied().collect::<Vec<_>>();
        sqlx::query("SELECT analytics_refresh_closes($1, $2), analytics_refresh_stays($3)")
            .bind(ids(&f.refresh.closes))
            .bind(ids(&f.refresh.leads))
            .bind(ids(&f.refresh.stays))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Usage counts of the pinned tenant `t`, added to its usage facts.
async fn write_usage(tx: &mut PgConnection, t: &str, u: &[UsageFact]) -> Result<(), sqlx::Error> {
    if u.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO usage_facts (tenant_id, user_id, area, day, requests, changes) \
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::date[], $5::bigint[], $6::bigint[]) \
         ON CONFLICT (tenant_id, day, user_id, area) DO UPDATE SET \
         requests = least(usage_facts.requests::numeric + excluded.requests, 9223372036854775807)::bigint, \
         changes = least(usage_facts.changes::numeric + excluded.changes, 9223372036854775807)::bigint",
    )
    .bind(t)
    .bind(u.iter().map(|u| u.user.as_str()).collect::<Vec<_>>())
    .bind(u.iter().map(|u| u.area.as_str()).collect::<Vec<_>>())
    .bind(u.iter().map(|u| u.day).collect::<Vec<_>>())
    .bind(u.iter().map(|u| u.requests).collect::<Vec<_>>())
    .bind(u.iter().map(|u| u.changes).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Pins `tenant` for the rest of the transaction and makes it known to the deriving rounds, in
/// one round trip.
async fn pin_known(tx: &mut PgConnection, tenant: &TenantId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH known AS (INSERT INTO analytics_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING) \
         SELECT set_config('crm.tenant_id', $1, true)",
    )
    .bind(tenant.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The contact feed's facts of one tenant: versions (their owner before the batch's changes
/// where the batch does not say), contacts and companies (inserted when new, then changed
/// field by field), lifecycle moves, interactions and transfers, then what is gone (a merge
/// re-points the merged record's facts to its survivor).
async fn write_customers(tx: &mut PgConnection, t: &str, f: &Folded) -> Result<(), sqlx::Error> {
    if !f.customer_versions.is_empty() {
        let v = &f.customer_versions;
        sqlx::query(
            "INSERT INTO customer_versions (tenant_id, customer_id, version_time, owner) \
             SELECT $1, v.id, v.time, coalesce(v.owner, c.owner, '') \
             FROM unnest($2::uuid[], $3::timestamptz[], $4::text[]) AS v(id, time, owner) \
             LEFT JOIN customer_facts c ON c.tenant_id = $1 AND c.customer_id = v.id \
             ON CONFLICT (tenant_id, customer_id, version_time) DO UPDATE SET owner = excluded.owner",
        )
        .bind(t)
        .bind(v.iter().map(|v| v.0).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.1).collect::<Vec<_>>())
        .bind(v.iter().map(|v| v.2.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.customers.is_empty() {
        let c = &f.customers;
        // NULL: unchanged; for the company, '' is none.
        let company = |c: &CustomerChange| {
            c.change
                .company
                .map(|co| co.map(|id| id.to_string()).unwrap_or_default())
        };
        sqlx::query(
            "WITH c AS (SELECT * FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[], \
                 $7::text[], $8::text[], $9::text[], $10::bool[], $11::bool[], $12::bool[]) \
                 AS c(id, kind, time, created, owner, lifecycle, source, company, has_email, has_phone, has_consent)), \
             inserted AS (INSERT INTO customer_facts (tenant_id, customer_id, kind, owner, lifecycle, source, \
                 company_id, has_email, has_phone, has_consent, create_time, update_time) \
                 SELECT $1, id, kind, coalesce(owner, ''), coalesce(lifecycle, ''), coalesce(source, ''), \
                     nullif(company, '')::uuid, coalesce(has_email, false), coalesce(has_phone, false), \
                     coalesce(has_consent, false), time, time FROM c \
                 ON CONFLICT (tenant_id, customer_id) DO NOTHING RETURNING customer_id) \
             UPDATE customer_facts f SET owner = coalesce(c.owner, f.owner), \
                 lifecycle = coalesce(c.lifecycle, f.lifecycle), source = coalesce(c.source, f.source), \
                 company_id = CASE WHEN c.company IS NULL THEN f.company_id ELSE nullif(c.company, '')::uuid END, \
                 has_email = coalesce(c.has_email, f.has_email), has_phone = coalesce(c.has_phone, f.has_phone), \
                 has_consent = coalesce(c.has_consent, f.has_consent), \
                 create_time = CASE WHEN c.created THEN c.time ELSE f.create_time END, update_time = c.time \
             FROM c WHERE f.tenant_id = $1 AND f.customer_id = c.id \
                 AND c.id NOT IN (SELECT customer_id FROM inserted)",
        )
        .bind(t)
        .bind(c.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.time).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.created).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.owner.as_deref()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.lifecycle.as_deref()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.source.as_deref()).collect::<Vec<_>>())
        .bind(c.iter().map(company).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.has_email).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.has_phone).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.change.has_consent).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.lifecycles.is_empty() {
        let l = &f.lifecycles;
        sqlx::query(
            "INSERT INTO lifecycle_facts (tenant_id, customer_id, time, from_stage, to_stage) \
             SELECT $1, * FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::text[]) \
             ON CONFLICT (tenant_id, customer_id, time) DO UPDATE SET from_stage = excluded.from_stage, \
             to_stage = excluded.to_stage",
        )
        .bind(t)
        .bind(l.iter().map(|l| l.customer).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.time).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.from.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.to.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.interactions.is_empty() {
        let i = &f.interactions;
        sqlx::query(
            "INSERT INTO interaction_facts (tenant_id, interaction_id, contact_id, company_id, kind, direction, \
             channel, time, duration_ms, campaign, actor) \
             SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], \
                 $8::timestamptz[], $9::bigint[], $10::text[], $11::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(t)
        .bind(i.iter().map(|i| i.id).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.contact).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.company).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.direction.as_str()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.channel.as_str()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.time).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.duration_ms).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.campaign.as_str()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.actor.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !f.transfers.is_empty() {
        let x = &f.transfers;
        sqlx::query(
            "INSERT INTO transfer_facts (tenant_id, resource, time, from_owner, to_owner) \
             SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(t)
        .bind(x.iter().map(|x| x.resource.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.time).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.from.as_str()).collect::<Vec<_>>())
        .bind(x.iter().map(|x| x.to.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    write_usage(tx, t, &f.usage).await?;
    for (id, kind, time, gone) in &f.gone {
        record_gone(tx, t, *id, *kind, *time, *gone).await?;
    }
    Ok(())
}

/// Records a contact or company gone; a merge re-points its facts to the survivor: records
/// merged into it before, deals with it as customer, interactions, and (a company) contacts.
async fn record_gone(
    tx: &mut PgConnection,
    t: &str,
    id: Uuid,
    kind: CustomerKind,
    time: DateTime<Utc>,
    gone: Gone,
) -> Result<(), sqlx::Error> {
    let into = match gone {
        Gone::Merged(into) => Some(into),
        Gone::Deleted | Gone::Erased => None,
    };
    sqlx::query(
        "UPDATE customer_facts SET gone = $3, merged_into = $4, update_time = $5 \
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(t)
    .bind(id)
    .bind(gone.as_str())
    .bind(into)
    .bind(time)
    .execute(&mut *tx)
    .await?;
    let Some(into) = into else {
        return Ok(());
    };
    let mut repoint = vec![
        "UPDATE customer_facts SET merged_into = $3 WHERE tenant_id = $1 AND merged_into = $2",
        "UPDATE deal_facts SET customer_id = $3 WHERE tenant_id = $1 AND customer_id = $2",
    ];
    repoint.extend(match kind {
        CustomerKind::Contact => {
            &["UPDATE interaction_facts SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2"][..]
        }
        CustomerKind::Company => &[
            "UPDATE interaction_facts SET company_id = $3 WHERE tenant_id = $1 AND company_id = $2",
            "UPDATE customer_facts SET company_id = $3 WHERE tenant_id = $1 AND company_id = $2",
        ][..],
    });
    for sql in repoint {
        sqlx::query(sql).bind(t).bind(id).bind(into).execute(&mut *tx).await?;
    }
    Ok(())
}

fn deal(row: &PgRow) -> Result<DealFact, StoreError> {
    Ok(DealFact {
        id: row.try_get("deal_id")?,
        pipeline: row.try_get("pipeline_id")?,
        owner: row.try_get("owner")?,
        lead: row.try_get("lead_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        create_time: row.try_get("create_time")?,
        outcome: outcome(&row.try_get::<String, _>("outcome")?)?,
        close_time: row.try_get("close_time")?,
        customer: row.try_get("customer_id")?,
    })
}

/// The columns [`deal`] reads, of `deal_facts d`, and the lead's source.
const DEAL_COLUMNS: &str = "d.deal_id, d.pipeline_id, d.owner, d.lead_id, d.amount_minor, d.currency, d.create_time, \
                            d.outcome, d.close_time, d.customer_id, coalesce(l.source, '') AS lead_source";

#[async_trait]
impl AnalyticsStore for PgAnalyticsStore {
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::pg_checkpoint(&self.pool, consumer).await?)
    }

    async fn ingest(&self, consumer: &str, previous: u64, batch: &IngestBatch) -> Result<bool, StoreError> {
        let Some((to, commit_time)) = batch.last else {
            return Ok(true);
        };
        let mut tx = self.pool.begin().await?;
        if !crm_platform::consumer::pg_claim(&mut tx, consumer, previous).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        for (tenant, folded) in Folded::by_tenant(batch) {
            pin_known(&mut tx, &tenant).await?;
            write(&mut tx, &tenant, &folded).await?;
        }
        for (tenant, kind) in &batch.skipped {
            pin(&mut tx, tenant.as_str()).await?;
            sqlx::query(
                "INSERT INTO ingest_skipped (tenant_id, source, type, count) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (tenant_id, source, type) DO UPDATE SET count = ingest_skipped.count + 1",
            )
            .bind(tenant.as_str())
            .bind(&batch.source)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        for (tenant, parked) in &batch.parked {
            pin(&mut tx, tenant).await?;
            sqlx::query(
                "INSERT INTO ingest_parked (tenant_id, source, sequence, type, reason, park_time) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(&parked.source)
            .bind(parked.sequence)
            .bind(&parked.kind)
            .bind(&parked.reason)
            .bind(parked.park_time)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO ingest_watermarks (consumer, source, sequence, commit_time, events) \
             VALUES ($4, $1, $2, $3, $5) ON CONFLICT (consumer) DO UPDATE SET source = excluded.source, \
             sequence = excluded.sequence, commit_time = excluded.commit_time, \
             events = ingest_watermarks.events + excluded.events",
        )
        .bind(&batch.source)
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(commit_time)
        .bind(consumer)
        .bind(batch.events)
        .execute(&mut *tx)
        .await?;
        crm_platform::consumer::pg_advance(&mut tx, consumer, to).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cycles(&self, tenant: &TenantId, window: Window, grouping: Grouping) -> Result<Cycles, StoreError> {
        let [cells, times] = self
            .read_each(
                tenant,
                [
                    close_cells_query(tenant, window),
                    cycle_times_query(tenant, window, grouping),
                ],
            )
            .await?;
        Ok(Cycles {
            cells: cells.iter().map(close_cell).collect::<Result<_, _>>()?,
            times: times.iter().map(cycle_times).collect::<Result<_, _>>()?,
        })
    }

    async fn close_cells(&self, tenant: &TenantId, window: Window) -> Result<Vec<CloseCell>, StoreError> {
        self.read(tenant, close_cells_query(tenant, window))
            .await?
            .iter()
            .map(close_cell)
            .collect()
    }

    async fn deals_created(&self, tenant: &TenantId, window: Window) -> Result<Vec<DealRow>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {DEAL_COLUMNS} FROM deal_facts d \
             LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
             WHERE d.tenant_id = $1 AND d.create_time >= $2 AND d.create_time < $3"
                )))
                .bind(tenant.as_str())
                .bind(window.start_time())
                .bind(window.end_time()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DealRow {
                    deal: deal(row)?,
                    lead_source: row.try_get("lead_source")?,
                })
            })
            .collect()
    }

    async fn leads_created(&self, tenant: &TenantId, window: Window) -> Result<Vec<LeadRow>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT l.lead_id, l.owner, l.source, l.create_time, l.deal_id, l.convert_time, d.outcome \
             FROM lead_facts l LEFT JOIN deal_facts d ON d.tenant_id = l.tenant_id AND d.deal_id = l.deal_id \
             WHERE l.tenant_id = $1 AND l.create_time >= $2 AND l.create_time < $3",
                )
                .bind(tenant.as_str())
                .bind(window.start_time())
                .bind(window.end_time()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let deal: Option<Uuid> = row.try_get("deal_id")?;
                let converted: Option<DateTime<Utc>> = row.try_get("convert_time")?;
                let outcome: Option<String> = row.try_get("outcome")?;
                Ok(LeadRow {
                    lead: LeadFact {
                        id: row.try_get("lead_id")?,
                        owner: row.try_get("owner")?,
                        source: row.try_get("source")?,
                        create_time: row.try_get("create_time")?,
                        converted: deal.zip(converted),
                    },
                    deal_outcome: outcome.as_deref().and_then(Outcome::parse),
                })
            })
            .collect()
    }

    async fn forecasts(&self, tenant: &TenantId, period: &str) -> Result<Vec<ForecastFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
            "SELECT forecast_id, owner, period, amount_minor, currency, category, submit_time FROM forecast_facts \
             WHERE tenant_id = $1 AND period = $2",
        )
        .bind(tenant.as_str())
        .bind(period),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ForecastFact {
                    id: row.try_get("forecast_id")?,
                    owner: row.try_get("owner")?,
                    period: row.try_get("period")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                    category: row.try_get("category")?,
                    submit_time: row.try_get("submit_time")?,
                })
            })
            .collect()
    }

    async fn quotas(&self, tenant: &TenantId, period: &str) -> Result<Vec<QuotaFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
            "SELECT owner, period, amount_minor, currency FROM quota_facts WHERE tenant_id = $1 AND period = $2 ORDER BY owner",
        )
        .bind(tenant.as_str())
        .bind(period),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(QuotaFact {
                    owner: row.try_get("owner")?,
                    period: row.try_get("period")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                })
            })
            .collect()
    }

    async fn stays(&self, tenant: &TenantId, window: Window, grouping: Grouping) -> Result<Stays, StoreError> {
        let StaysRead {
            ends,
            times,
            times_table: sums,
            by_owner,
            by_month,
        } = StaysRead::of(grouping);
        let [cells, times, stages] = self
            .read_each(
                tenant,
                [
                    stays_query(&ends, by_month, "stay_ends", "", tenant, window),
                    stays_query(&times, by_month, sums, "AND bucket IS NOT NULL", tenant, window),
                    stages_query(tenant),
                ],
            )
            .await?;
        Ok(Stays {
            cells: cells.iter().map(stay_cell).collect::<Result<_, _>>()?,
            times: times
                .iter()
                .map(|row| stay_times(row, by_owner))
                .collect::<Result<_, _>>()?,
            stages: stages.iter().map(stage_fact).collect::<Result<_, _>>()?,
        })
    }

    async fn stages(&self, tenant: &TenantId) -> Result<Vec<StageFact>, StoreError> {
        self.read(tenant, stages_query(tenant))
            .await?
            .iter()
            .map(stage_fact)
            .collect()
    }

    async fn open_at(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<OpenDeal>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT t.deal_id, d.pipeline_id, t.to_stage, coalesce(v.owner, d.owner) AS owner, \
                     coalesce(v.amount_minor, d.amount_minor) AS amount_minor, \
                     coalesce(v.currency, d.currency) AS currency \
                     FROM (SELECT DISTINCT ON (deal_id) deal_id, kind, to_stage FROM deal_transitions \
                           WHERE tenant_id = $1 AND time < $2 ORDER BY deal_id, sequence DESC) t \
                     JOIN deal_facts d ON d.tenant_id = $1 AND d.deal_id = t.deal_id \
                     LEFT JOIN LATERAL (SELECT owner, amount_minor, currency FROM deal_versions \
                           WHERE tenant_id = $1 AND deal_id = t.deal_id AND version_time < $2 \
                           ORDER BY version_time DESC LIMIT 1) v ON true \
                     WHERE t.kind IN ('created', 'moved', 'reopened')",
                )
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OpenDeal {
                    deal: row.try_get("deal_id")?,
                    pipeline: row.try_get("pipeline_id")?,
                    stage: row.try_get("to_stage")?,
                    owner: row.try_get("owner")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn interactions(
        &self,
        tenant: &TenantId,
        which: Interactions,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<InteractionFact>, StoreError> {
        let (filter, kind) = match which {
            Interactions::OfCampaigns => ("campaign <> '' AND $4::text IS NULL", None),
            Interactions::OfKind(kind) => ("kind = $4", Some(kind)),
        };
        let rows = self
            .read(
                tenant,
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT interaction_id, contact_id, company_id, kind, direction, channel, time, duration_ms, \
                     campaign, actor FROM interaction_facts \
                     WHERE tenant_id = $1 AND time >= $2 AND time < $3 AND {filter}"
                )))
                .bind(tenant.as_str())
                .bind(start)
                .bind(end)
                .bind(kind),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(InteractionFact {
                    id: row.try_get("interaction_id")?,
                    contact: row.try_get("contact_id")?,
                    company: row.try_get("company_id")?,
                    kind: row.try_get("kind")?,
                    direction: row.try_get("direction")?,
                    channel: row.try_get("channel")?,
                    time: row.try_get("time")?,
                    duration_ms: row.try_get("duration_ms")?,
                    campaign: row.try_get("campaign")?,
                    actor: row.try_get("actor")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn last_changes(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LastChange>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT DISTINCT ON (v.customer_id) v.customer_id, v.owner, v.version_time \
                     FROM customer_versions v \
                     JOIN customer_facts c ON c.tenant_id = v.tenant_id AND c.customer_id = v.customer_id \
                     WHERE v.tenant_id = $1 AND v.version_time < $2 \
                     AND NOT (c.gone IS NOT NULL AND c.update_time < $2) \
                     ORDER BY v.customer_id, v.version_time DESC",
                )
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LastChange {
                    customer: row.try_get("customer_id")?,
                    owner: row.try_get("owner")?,
                    time: row.try_get("version_time")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn profile_counts(
        &self,
        tenant: &TenantId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<ProfileCounts>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT owner, count(*) AS contacts, count(*) FILTER (WHERE has_email) AS email, \
                     count(*) FILTER (WHERE has_phone) AS phone, count(company_id) AS company, \
                     count(*) FILTER (WHERE has_consent) AS consent FROM customer_facts \
                     WHERE tenant_id = $1 AND kind = 'contact' AND gone IS NULL AND create_time < $2 \
                     GROUP BY owner ORDER BY owner",
                )
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ProfileCounts {
                    owner: row.try_get("owner")?,
                    contacts: row.try_get("contacts")?,
                    email: row.try_get("email")?,
                    phone: row.try_get("phone")?,
                    company: row.try_get("company")?,
                    consent: row.try_get("consent")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn transfers(&self, tenant: &TenantId, window: Window) -> Result<Vec<TransferFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT resource, time, from_owner, to_owner FROM transfer_facts \
                     WHERE tenant_id = $1 AND time >= $2 AND time < $3",
                )
                .bind(tenant.as_str())
                .bind(window.start_time())
                .bind(window.end_time()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TransferFact {
                    resource: row.try_get("resource")?,
                    time: row.try_get("time")?,
                    from: row.try_get("from_owner")?,
                    to: row.try_get("to_owner")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn left_behind(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LeftBehind>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "WITH moves AS (SELECT from_owner AS owner, time, true AS away FROM transfer_facts \
                         WHERE tenant_id = $1 AND time < $2 \
                         UNION ALL SELECT to_owner, time, false FROM transfer_facts WHERE tenant_id = $1 AND time < $2), \
                     gone AS (SELECT owner FROM moves GROUP BY owner \
                         HAVING max(time) FILTER (WHERE away) > coalesce(max(time) FILTER (WHERE NOT away), '-infinity')) \
                     SELECT owner, '' AS kind, 0::bigint AS count FROM gone \
                     UNION ALL SELECT owner, CASE kind WHEN 'contact' THEN 'contacts' ELSE 'companies' END, count(*) \
                         FROM customer_facts WHERE tenant_id = $1 AND gone IS NULL AND owner IN (SELECT owner FROM gone) \
                         GROUP BY owner, kind \
                     UNION ALL SELECT owner, 'deals', count(*) FROM deal_facts \
                         WHERE tenant_id = $1 AND outcome = 'open' AND owner IN (SELECT owner FROM gone) GROUP BY owner \
                     UNION ALL SELECT owner, 'leads', count(*) FROM lead_facts \
                         WHERE tenant_id = $1 AND deal_id IS NULL AND owner IN (SELECT owner FROM gone) GROUP BY owner",
                )
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LeftBehind {
                    owner: row.try_get("owner")?,
                    kind: row.try_get("kind")?,
                    count: row.try_get("count")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn customer_wins(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<DealFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {DEAL_COLUMNS} FROM deal_facts d \
                     LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
                     WHERE d.tenant_id = $1 AND d.outcome = 'won' AND d.customer_id IS NOT NULL AND d.close_time < $2"
                )))
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter().map(deal).collect()
    }

    async fn lifecycles(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LifecycleFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT customer_id, time, from_stage, to_stage FROM lifecycle_facts \
                     WHERE tenant_id = $1 AND time < $2",
                )
                .bind(tenant.as_str())
                .bind(instant),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LifecycleFact {
                    customer: row.try_get("customer_id")?,
                    time: row.try_get("time")?,
                    from: row.try_get("from_stage")?,
                    to: row.try_get("to_stage")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn settings(&self, tenant: &TenantId) -> Result<Option<Settings>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query("SELECT body::text AS body FROM settings WHERE tenant_id = $1").bind(tenant.as_str()),
            )
            .await?;
        rows.first()
            .map(|row| from_document(&row.try_get::<String, _>("body")?))
            .transpose()
    }

    async fn put_settings(&self, tenant: &TenantId, settings: &Settings) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        sqlx::query(
            "INSERT INTO settings (tenant_id, body) VALUES ($1, $2::jsonb) \
             ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body",
        )
        .bind(tenant.as_str())
        .bind(document(settings)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn exchange_rates(&self, tenant: &TenantId) -> Result<Vec<ExchangeRate>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT currency, month, rate, update_time, updated_by FROM exchange_rates \
                     WHERE tenant_id = $1 ORDER BY currency, month LIMIT $2",
                )
                .bind(tenant.as_str())
                .bind(RATES_LISTED),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExchangeRate {
                    currency: row.try_get("currency")?,
                    month: row.try_get("month")?,
                    rate: row.try_get("rate")?,
                    update_time: row.try_get("update_time")?,
                    updated_by: row.try_get("updated_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn put_exchange_rate(&self, tenant: &TenantId, rate: &ExchangeRate) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        sqlx::query(
            "INSERT INTO exchange_rates (tenant_id, currency, month, rate, update_time, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, currency, month) DO UPDATE SET \
             rate = excluded.rate, update_time = excluded.update_time, updated_by = excluded.updated_by",
        )
        .bind(tenant.as_str())
        .bind(&rate.currency)
        .bind(&rate.month)
        .bind(rate.rate)
        .bind(rate.update_time)
        .bind(&rate.updated_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn won_deals(&self, tenant: &TenantId) -> Result<Vec<WonDeal>, StoreError> {
        // Not grouped here: grouping a million deals by customer had the planner walk the
        // customer index, reading the table in random order.
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT customer_id, currency, amount_minor, close_time FROM deal_facts \
                     WHERE tenant_id = $1 AND outcome = 'won' AND customer_id IS NOT NULL AND close_time IS NOT NULL",
                )
                .bind(tenant.as_str()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WonDeal {
                    customer: row.try_get("customer_id")?,
                    currency: row.try_get("currency")?,
                    amount_minor: row.try_get("amount_minor")?,
                    close_time: row.try_get("close_time")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn customer_products(&self, tenant: &TenantId) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT DISTINCT d.customer_id, p.product_id FROM deal_products p \
                     JOIN deal_facts d ON d.tenant_id = p.tenant_id AND d.deal_id = p.deal_id \
                     WHERE p.tenant_id = $1 AND d.outcome = 'won' AND d.customer_id IS NOT NULL",
                )
                .bind(tenant.as_str()),
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("customer_id")?, row.try_get("product_id")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn usage(&self, tenant: &TenantId, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT user_id, area, day, requests, changes FROM usage_facts \
                     WHERE tenant_id = $1 AND day >= $2 AND day < $3",
                )
                .bind(tenant.as_str())
                .bind(from)
                .bind(to),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageFact {
                    user: row.try_get("user_id")?,
                    area: row.try_get("area")?,
                    day: row.try_get("day")?,
                    requests: row.try_get("requests")?,
                    changes: row.try_get("changes")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn first_use(&self, tenant: &TenantId, to: NaiveDate) -> Result<Vec<(String, NaiveDate)>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT user_id, min(day) AS first FROM usage_facts WHERE tenant_id = $1 AND day < $2 \
                     GROUP BY user_id",
                )
                .bind(tenant.as_str())
                .bind(to),
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("user_id")?, row.try_get("first")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn owned_customers(&self, tenant: &TenantId, owner: &str) -> Result<Vec<Uuid>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT customer_id FROM customer_facts WHERE tenant_id = $1 AND owner = $2 AND gone IS NULL",
                )
                .bind(tenant.as_str())
                .bind(owner),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("customer_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn customer_owner(&self, tenant: &TenantId, customer: Uuid) -> Result<Option<String>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT owner FROM customer_facts WHERE tenant_id = $1 AND customer_id = $2 AND gone IS NULL",
                )
                .bind(tenant.as_str())
                .bind(customer),
            )
            .await?;
        Ok(rows.first().map(|row| row.try_get("owner")).transpose()?)
    }

    async fn create_goal(&self, tenant: &TenantId, goal: &Goal) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        sqlx::query("INSERT INTO goals (tenant_id, goal_id, create_time, body) VALUES ($1, $2, $3, $4::jsonb)")
            .bind(tenant.as_str())
            .bind(goal.id)
            .bind(goal.create_time)
            .bind(document(goal)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn goal(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Goal>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let body: Option<String> =
            sqlx::query_scalar("SELECT body::text FROM goals WHERE tenant_id = $1 AND goal_id = $2")
                .bind(tenant.as_str())
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        body.as_deref().map(from_document).transpose()
    }

    async fn goals(&self, tenant: &TenantId, limit: i64) -> Result<Vec<Goal>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body::text FROM goals WHERE tenant_id = $1 ORDER BY create_time DESC, goal_id DESC LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        bodies.iter().map(|b| from_document(b)).collect()
    }

    async fn watermarks(&self) -> Result<Vec<Watermark>, StoreError> {
        let rows = sqlx::query(
            "SELECT consumer, source, sequence, commit_time, events FROM ingest_watermarks ORDER BY source, consumer",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Watermark {
                    source: row.try_get("source")?,
                    sequence: row.try_get("sequence")?,
                    commit_time: row.try_get("commit_time")?,
                    consumer: row.try_get("consumer")?,
                    events: row.try_get("events")?,
                })
            })
            .collect()
    }

    async fn ingest_problems(&self, tenant: &TenantId) -> Result<(Vec<Skipped>, Vec<Parked>), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let skipped =
            sqlx::query("SELECT source, type, count FROM ingest_skipped WHERE tenant_id = $1 ORDER BY source, type")
                .bind(tenant.as_str())
                .fetch_all(&mut *tx)
                .await?;
        let parked = sqlx::query(
            "SELECT source, sequence, type, reason, park_time FROM ingest_parked WHERE tenant_id = $1 \
             ORDER BY park_time DESC, source, sequence DESC LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(PARKED_LISTED)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let skipped = skipped
            .iter()
            .map(|row| {
                Ok(Skipped {
                    source: row.try_get("source")?,
                    kind: row.try_get("type")?,
                    count: row.try_get("count")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let parked = parked
            .iter()
            .map(|row| {
                Ok(Parked {
                    source: row.try_get("source")?,
                    sequence: row.try_get("sequence")?,
                    kind: row.try_get("type")?,
                    reason: row.try_get("reason")?,
                    park_time: row.try_get("park_time")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((skipped, parked))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM analytics_tenants ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await?;
        ids.iter()
            .map(|id| TenantId::parse(id).map_err(|_| corrupt(format!("tenant {id}"))))
            .collect()
    }

    async fn derived(&self, tenant: &TenantId) -> Result<DerivedState, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let segments: Vec<(Uuid, String)> = sqlx::query_as("SELECT customer_id, segment FROM customer_segments")
            .fetch_all(&mut *tx)
            .await?;
        let goals: Vec<(Uuid, String)> = sqlx::query_as("SELECT goal_id, status FROM goal_statuses")
            .fetch_all(&mut *tx)
            .await?;
        let stalled: Vec<Uuid> = sqlx::query_scalar("SELECT deal_id FROM stalled_deals")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut state = DerivedState {
            segments: segments.into_iter().collect(),
            stalled: stalled.into_iter().collect(),
            ..DerivedState::default()
        };
        for (goal, status) in goals {
            let status = GoalStatus::parse(&status).ok_or_else(|| corrupt(format!("goal status {status}")))?;
            state.goals.insert(goal, status);
        }
        Ok(state)
    }

    async fn quiet_deals(&self, tenant: &TenantId, before: DateTime<Utc>) -> Result<Vec<QuietDeal>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT deal_id, owner, pipeline_id, stage, last FROM ( \
                       SELECT d.deal_id, d.owner, d.pipeline_id, \
                         (SELECT t.to_stage FROM deal_transitions t WHERE t.tenant_id = d.tenant_id AND t.deal_id = d.deal_id \
                          ORDER BY t.sequence DESC LIMIT 1) AS stage, \
                         greatest(d.create_time, \
                           (SELECT max(t.time) FROM deal_transitions t WHERE t.tenant_id = d.tenant_id AND t.deal_id = d.deal_id), \
                           (SELECT max(v.version_time) FROM deal_versions v WHERE v.tenant_id = d.tenant_id AND v.deal_id = d.deal_id), \
                           (SELECT max(i.time) FROM interaction_facts i WHERE i.tenant_id = d.tenant_id AND i.contact_id = d.customer_id), \
                           (SELECT max(i.time) FROM interaction_facts i WHERE i.tenant_id = d.tenant_id AND i.company_id = d.customer_id)) AS last \
                       FROM deal_facts d WHERE d.tenant_id = $1 AND d.outcome = 'open') quiet \
                     WHERE last < $2 ORDER BY deal_id",
                )
                .bind(tenant.as_str())
                .bind(before),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(QuietDeal {
                    deal: row.try_get("deal_id")?,
                    owner: row.try_get("owner")?,
                    pipeline: row.try_get("pipeline_id")?,
                    stage: row.try_get("stage")?,
                    last_activity: row.try_get("last")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn customer_owners(&self, tenant: &TenantId) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query("SELECT customer_id, owner FROM customer_facts WHERE tenant_id = $1 AND gone IS NULL")
                    .bind(tenant.as_str()),
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("customer_id")?, row.try_get("owner")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn publish_derived(
        &self,
        tenant: &TenantId,
        changes: &Changes,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let t = tenant.as_str();
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        if !changes.segments.is_empty() {
            let customers: Vec<Uuid> = changes.segments.iter().map(|(c, _, _)| *c).collect();
            let segments: Vec<&str> = changes.segments.iter().map(|(_, _, s)| s.as_str()).collect();
            sqlx::query(
                "INSERT INTO customer_segments (tenant_id, customer_id, segment) \
                 SELECT $1, * FROM unnest($2::uuid[], $3::text[]) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET segment = excluded.segment",
            )
            .bind(t)
            .bind(&customers)
            .bind(&segments)
            .execute(&mut *tx)
            .await?;
        }
        for (goal, _, status) in &changes.goals {
            sqlx::query(
                "INSERT INTO goal_statuses (tenant_id, goal_id, status) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, goal_id) DO UPDATE SET status = excluded.status",
            )
            .bind(t)
            .bind(goal)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for deal in &changes.stalled {
            sqlx::query(
                "INSERT INTO stalled_deals (tenant_id, deal_id, last_activity) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, deal_id) DO UPDATE SET last_activity = excluded.last_activity",
            )
            .bind(t)
            .bind(deal.deal)
            .bind(deal.last_activity)
            .execute(&mut *tx)
            .await?;
        }
        if !changes.resumed.is_empty() {
            sqlx::query("DELETE FROM stalled_deals WHERE tenant_id = $1 AND deal_id = ANY($2)")
                .bind(t)
                .bind(&changes.resumed)
                .execute(&mut *tx)
                .await?;
        }
        crm_platform::outbox::append_pg(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publish_usage(&self, reports: &[UsageReport]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for report in reports {
            pin_known(&mut tx, &report.tenant).await?;
            write_usage(&mut tx, report.tenant.as_str(), &report.usage).await?;
            crm_platform::outbox::append_pg(&mut tx, &report.events).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox) as Arc<dyn Outbox>
    }
}

/// The closes `window` counts, as `close_cells` gives them: the cells of the window's days
/// (closes nothing superseded), and the closes a reopening superseded only after the window.
fn close_cells_query(tenant: &TenantId, window: Window) -> Query<'_, Postgres, PgArguments> {
    sqlx::query(
        "SELECT owner, pipeline_id, lead_source, to_char(close_day, 'YYYY-MM') AS month, outcome, \
         currency, sum(deals)::bigint AS deals, sum(amount_giga)::bigint AS amount_giga, \
         sum(amount_rest)::bigint AS amount_rest, sum(cycle_days)::bigint AS cycle_days, \
         sum(cycle_rest_ms)::bigint AS cycle_rest_ms FROM ( \
           SELECT owner, pipeline_id, lead_source, close_day, outcome, currency, deals, amount_giga, \
           amount_rest, cycle_days, cycle_rest_ms FROM close_cells \
           WHERE tenant_id = $1 AND close_day >= $2 AND close_day < $3 \
         UNION ALL \
           SELECT owner, pipeline_id, lead_source, (close_time AT TIME ZONE 'UTC')::date, outcome, \
           currency, 1, amount_minor / 1000000000, amount_minor % 1000000000, cycle_ms / 86400000, \
           cycle_ms % 86400000 FROM deal_closes \
           WHERE tenant_id = $1 AND close_time >= $4 AND close_time < $5 \
           AND superseded_time IS NOT NULL AND superseded_time >= $5) c \
         GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(deals) <> 0",
    )
    .bind(tenant.as_str())
    .bind(window.start)
    .bind(window.end)
    .bind(window.start_time())
    .bind(window.end_time())
}

fn close_cell(row: &PgRow) -> Result<CloseCell, StoreError> {
    Ok(CloseCell {
        owner: row.try_get("owner")?,
        pipeline: row.try_get("pipeline_id")?,
        lead_source: row.try_get("lead_source")?,
        month: row.try_get("month")?,
        outcome: outcome(&row.try_get::<String, _>("outcome")?)?,
        currency: row.try_get("currency")?,
        deals: row.try_get("deals")?,
        amount_minor: whole_and_rest(row.try_get("amount_giga")?, row.try_get("amount_rest")?, AMOUNT_UNIT),
        cycle_ms: whole_and_rest(row.try_get("cycle_days")?, row.try_get("cycle_rest_ms")?, CYCLE_UNIT),
    })
}

/// The won deals among the closes `window` counts per group of `grouping` and bucket of their
/// cycles: the whole months' counts; the won closes of the other days that nothing superseded
/// within the window; those of the whole months that a reopening superseded after it.
fn cycle_times_query(tenant: &TenantId, window: Window, grouping: Grouping) -> Query<'_, Postgres, PgArguments> {
    let split = MonthSplit::of(window);
    let kept = close_group_sql(grouping, "to_char(month, 'YYYY-MM')").replace("pipeline_id", "pipeline_id::text");
    let closed = close_group_sql(grouping, "to_char(close_time AT TIME ZONE 'UTC', 'YYYY-MM')")
        .replace("pipeline_id", "pipeline_id::text");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT grp, bucket::bigint AS bucket, sum(deals)::bigint AS deals FROM ( \
           SELECT {kept} AS grp, bucket, deals FROM cycle_times \
           WHERE tenant_id = $1 AND month >= $2 AND month < $3 \
         UNION ALL \
           SELECT {closed}, analytics_duration_bucket(cycle_ms), 1 FROM deal_closes \
           WHERE tenant_id = $1 AND outcome = 'won' \
           AND (close_time >= $4 AND close_time < $5 OR close_time >= $6 AND close_time < $7) \
           AND (superseded_time IS NULL OR superseded_time >= $7) \
         UNION ALL \
           SELECT {closed}, analytics_duration_bucket(cycle_ms), 1 FROM deal_closes \
           WHERE tenant_id = $1 AND superseded_time IS NOT NULL AND close_time >= $5 AND close_time < $6 \
           AND outcome = 'won' AND superseded_time >= $7) c \
         GROUP BY 1, 2 HAVING sum(deals) <> 0"
    )))
    .bind(tenant.as_str())
    .bind(split.months.0)
    .bind(split.months.1)
    .bind(split.days[0].0)
    .bind(split.days[0].1)
    .bind(split.days[1].0)
    .bind(window.end_time())
}

fn stages_query(tenant: &TenantId) -> Query<'_, Postgres, PgArguments> {
    sqlx::query(
        "SELECT pipeline_id, stage_id, position, kind FROM stage_facts WHERE tenant_id = $1 \
         ORDER BY pipeline_id, position",
    )
    .bind(tenant.as_str())
}

fn stage_fact(row: &PgRow) -> Result<StageFact, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(StageFact {
        pipeline: row.try_get("pipeline_id")?,
        stage: row.try_get("stage_id")?,
        position: row.try_get("position")?,
        kind: StageKind::parse(&kind).ok_or_else(|| corrupt(format!("stage kind {kind}")))?,
    })
}

/// The stays that began in `window` added up by `columns` (each an SQL expression of a stay
/// and the name it is read by; ids are read as text) and by month of entry when `by_month`
/// (else with an empty month), from the sums table `sums` for its whole months and from the
/// stays themselves (those `filter` keeps) for its other days.
fn stays_query<'q>(
    columns: &[(&str, &str)],
    by_month: bool,
    sums: &str,
    filter: &str,
    tenant: &'q TenantId,
    window: Window,
) -> Query<'q, Postgres, PgArguments> {
    let split = MonthSplit::of(window);
    let join = |each: &dyn Fn(&str, &str) -> String| {
        columns
            .iter()
            .map(|(expr, name)| each(expr, name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let inner = join(&|expr, name| format!("{expr} AS {name}"));
    let outer = join(&|_, name| match name {
        "bucket" => "bucket::bigint AS bucket".to_owned(),
        "pipeline_id" | "stage_id" | "end_stage" => format!("{name}::text AS {name}"),
        _ => name.to_owned(),
    });
    let names = join(&|_, name| name.to_owned());
    let (month, by) = if by_month {
        ("to_char(month, 'YYYY-MM')", "month, ")
    } else {
        ("''", "")
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {month} AS month, {outer}, sum(stays)::bigint AS stays FROM ( \
           SELECT month, {inner}, stays FROM {sums} WHERE tenant_id = $1 AND month >= $2 AND month < $3 \
         UNION ALL \
           SELECT date_trunc('month', entry_time AT TIME ZONE 'UTC')::date, {inner}, 1 FROM deal_stays \
           WHERE tenant_id = $1 AND (entry_time >= $4 AND entry_time < $5 OR entry_time >= $6 AND entry_time < $7) \
           {filter}) s \
         GROUP BY {by}{names} HAVING sum(stays) <> 0"
    )))
    .bind(tenant.as_str())
    .bind(split.months.0)
    .bind(split.months.1)
    .bind(split.days[0].0)
    .bind(split.days[0].1)
    .bind(split.days[1].0)
    .bind(split.days[1].1)
}
