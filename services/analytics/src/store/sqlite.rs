//! The SQLite store (`crm serve`): times in microseconds since the epoch, ids as text; ingest
//! in one write transaction per batch.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::TenantId;
use crm_platform::db::begin_sqlite_write;
use crm_platform::outbox::{NewEvent, Outbox, SqliteOutbox};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    AMOUNT_UNIT, AnalyticsStore, CYCLE_UNIT, IngestBatch, Interactions, MonthSplit, PARKED_LISTED, RATES_LISTED,
    Refresh, StaysRead, StoreError, UsageReport, close_group_sql, corrupt, cycle_times, document, from_document,
    outcome, stay_cell, stay_times, whole_and_rest,
};
use crate::domain::derived::{Changes, DerivedState, GoalStatus, QuietDeal};
use crate::domain::*;

#[derive(Clone)]
pub struct SqliteAnalyticsStore {
    pool: SqlitePool,
    outbox: Arc<SqliteOutbox>,
}

impl SqliteAnalyticsStore {
    pub fn new(pool: SqlitePool) -> Self {
        let outbox = SqliteOutbox::new(pool.clone());
        Self { pool, outbox }
    }
}

fn time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt(format!("time {micros}")))
}

fn day(raw: String) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(&raw, "%Y-%m-%d").map_err(|_| corrupt(format!("day {raw}")))
}

fn uuid(raw: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(raw).map_err(|_| corrupt(format!("id {raw}")))
}

fn text(id: Option<Uuid>) -> Option<String> {
    id.map(|id| id.to_string())
}

/// The closes and cells of `refresh`'s deals, computed again from the facts: their old closes
/// are taken out of the cells, replaced, and the new ones added in (as the PostgreSQL store's
/// analytics_refresh_closes).
async fn refresh_closes(tx: &mut SqliteConnection, tenant: &TenantId, refresh: &Refresh) -> Result<(), sqlx::Error> {
    if refresh.closes.is_empty() && refresh.leads.is_empty() {
        return Ok(());
    }
    let t = tenant.as_str();
    let ids = |ids: &mut dyn Iterator<Item = String>| serde_json::Value::from(ids.collect::<Vec<_>>()).to_string();
    let leads = ids(&mut refresh.leads.iter().map(Uuid::to_string));
    let mut deals: Vec<String> = refresh.closes.iter().map(Uuid::to_string).collect();
    deals.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT deal_id FROM deal_facts WHERE tenant_id = ?1 AND lead_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(t)
        .bind(&leads)
        .fetch_all(&mut *tx)
        .await?,
    );
    let deals = ids(&mut deals.into_iter());
    let add_cells = |factor: i64| {
        sqlx::query(
            "INSERT INTO close_cells (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency, \
             deals, amount_giga, amount_rest, cycle_days, cycle_rest_ms) \
             SELECT tenant_id, date(close_time / 1000000.0, 'unixepoch'), owner, pipeline_id, lead_source, outcome, \
             currency, ?3 * count(*), ?3 * sum(amount_minor / 1000000000), ?3 * sum(amount_minor % 1000000000), \
             ?3 * sum(cycle_ms / 86400000), ?3 * sum(cycle_ms % 86400000) FROM deal_closes \
             WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2)) AND superseded_time IS NULL \
             GROUP BY 1, 2, 3, 4, 5, 6, 7 \
             ON CONFLICT (tenant_id, close_day, owner, pipeline_id, lead_source, outcome, currency) DO UPDATE SET \
             deals = deals + excluded.deals, amount_giga = amount_giga + excluded.amount_giga, \
             amount_rest = amount_rest + excluded.amount_rest, cycle_days = cycle_days + excluded.cycle_days, \
             cycle_rest_ms = cycle_rest_ms + excluded.cycle_rest_ms",
        )
        .bind(t)
        .bind(&deals)
        .bind(factor)
    };
    let add_cycle_times = |factor: i64| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cycle_times (tenant_id, month, owner, pipeline_id, lead_source, bucket, deals) \
             SELECT tenant_id, date(close_time / 1000000.0, 'unixepoch', 'start of month'), owner, pipeline_id, \
             lead_source, {bucket}, ?3 * count(*) FROM deal_closes \
             WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2)) AND superseded_time IS NULL \
             AND outcome = 'won' GROUP BY 1, 2, 3, 4, 5, 6 \
             ON CONFLICT (tenant_id, month, owner, pipeline_id, lead_source, bucket) DO UPDATE SET \
             deals = deals + excluded.deals",
            bucket = duration_bucket("max(cycle_ms, 0) / 1000")
        )))
        .bind(t)
        .bind(&deals)
        .bind(factor)
    };
    add_cells(-1).execute(&mut *tx).await?;
    add_cycle_times(-1).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM deal_closes WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2))")
        .bind(t)
        .bind(&deals)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO deal_closes (tenant_id, deal_id, sequence, outcome, close_time, superseded_time, owner, \
         pipeline_id, lead_source, amount_minor, currency, create_time, cycle_ms) \
         SELECT t.tenant_id, t.deal_id, t.sequence, t.kind, t.time, t.next_time, d.owner, d.pipeline_id, \
         coalesce(l.source, ''), d.amount_minor, d.currency, d.create_time, (t.time - d.create_time) / 1000 \
         FROM (SELECT tenant_id, deal_id, sequence, kind, time, \
               lead(time) OVER (PARTITION BY deal_id ORDER BY sequence) AS next_time FROM deal_transitions \
               WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2)) \
               AND kind IN ('won', 'lost', 'reopened')) t \
         JOIN deal_facts d ON d.tenant_id = t.tenant_id AND d.deal_id = t.deal_id \
         LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
         WHERE t.kind IN ('won', 'lost')",
    )
    .bind(t)
    .bind(&deals)
    .execute(&mut *tx)
    .await?;
    add_cells(1).execute(&mut *tx).await?;
    add_cycle_times(1).execute(&mut *tx).await?;
    Ok(())
}

/// The bucket of a duration of `seconds` whole seconds (an SQL expression, at least 0), as
/// analytics_duration_bucket in the PostgreSQL store (see domain::durations): the number of
/// powers of two from 32 up to it gives the doubling it falls in.
fn duration_bucket(seconds: &str) -> String {
    format!(
        "(SELECT CASE WHEN s < 64 THEN s ELSE (e - 5) * 32 + (s >> (e - 5)) END FROM (SELECT s, \
         (SELECT count(*) FROM json_each('[{POWERS}]') WHERE value <= s) + 4 AS e FROM (SELECT {seconds} AS s)))"
    )
}

/// 2^5 to 2^53: the lower ends of the doublings of whole seconds a duration can fall in.
const POWERS: &str = "32,64,128,256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296,8589934592,17179869184,34359738368,68719476736,137438953472,274877906944,549755813888,1099511627776,2199023255552,4398046511104,8796093022208,17592186044416,35184372088832,70368744177664,140737488355328,281474976710656,562949953421312,1125899906842624,2251799813685248,4503599627370496,9007199254740992";

/// The stays of `deals` (ids as a JSON array) added to the sums with the sign `factor`.
async fn add_stays(tx: &mut SqliteConnection, t: &str, deals: &str, factor: i64) -> Result<(), sqlx::Error> {
    let month = "date(entry_time / 1000000.0, 'unixepoch', 'start of month')";
    let stays = "FROM deal_stays WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2))";
    for sql in [
        format!(
            "INSERT INTO stay_ends (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage, stays) \
             SELECT tenant_id, {month}, pipeline_id, stage_id, owner, end_kind, end_stage, ?3 * count(*) {stays} \
             GROUP BY 1, 2, 3, 4, 5, 6, 7 \
             ON CONFLICT (tenant_id, month, pipeline_id, stage_id, owner, end_kind, end_stage) DO UPDATE SET \
             stays = stays + excluded.stays"
        ),
        format!(
            "INSERT INTO stay_times (tenant_id, month, pipeline_id, stage_id, bucket, stays) \
             SELECT tenant_id, {month}, pipeline_id, stage_id, bucket, ?3 * count(*) {stays} AND bucket IS NOT NULL \
             GROUP BY 1, 2, 3, 4, 5 \
             ON CONFLICT (tenant_id, month, pipeline_id, stage_id, bucket) DO UPDATE SET stays = stays + excluded.stays"
        ),
        format!(
            "INSERT INTO owner_stay_times (tenant_id, month, owner, bucket, stays) \
             SELECT tenant_id, {month}, owner, bucket, ?3 * count(*) {stays} AND bucket IS NOT NULL \
             GROUP BY 1, 2, 3, 4 \
             ON CONFLICT (tenant_id, month, owner, bucket) DO UPDATE SET stays = stays + excluded.stays"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(t)
            .bind(deals)
            .bind(factor)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The stays and their sums of `deals`, computed again from the facts: their old stays are
/// taken out of the sums, replaced, and the new ones added in (as the PostgreSQL store's
/// analytics_refresh_stays).
async fn refresh_stays(
    tx: &mut SqliteConnection,
    tenant: &TenantId,
    deals: &BTreeSet<Uuid>,
) -> Result<(), sqlx::Error> {
    if deals.is_empty() {
        return Ok(());
    }
    let t = tenant.as_str();
    let deals = serde_json::Value::from(deals.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string();
    add_stays(tx, t, &deals, -1).await?;
    sqlx::query("DELETE FROM deal_stays WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2))")
        .bind(t)
        .bind(&deals)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deal_stays (tenant_id, deal_id, sequence, entry_time, pipeline_id, stage_id, owner, end_kind, \
         end_stage, end_time, bucket) \
         SELECT t.tenant_id, t.deal_id, t.sequence, t.time, d.pipeline_id, coalesce(t.to_stage, '{NIL}'), d.owner, \
         coalesce(t.end_kind, ''), coalesce(t.end_stage, '{NIL}'), t.end_time, \
         CASE WHEN t.end_time IS NOT NULL THEN {bucket} END \
         FROM (SELECT tenant_id, deal_id, sequence, kind, to_stage, time, \
               lead(kind) OVER w AS end_kind, lead(to_stage) OVER w AS end_stage, lead(time) OVER w AS end_time \
               FROM deal_transitions WHERE tenant_id = ?1 AND deal_id IN (SELECT value FROM json_each(?2)) \
               WINDOW w AS (PARTITION BY deal_id ORDER BY sequence)) t \
         JOIN deal_facts d ON d.tenant_id = t.tenant_id AND d.deal_id = t.deal_id \
         WHERE t.kind IN ('created', 'moved', 'reopened')",
        NIL = Uuid::nil(),
        bucket = duration_bucket("max(t.end_time - t.time, 0) / 1000000"),
    )))
    .bind(t)
    .bind(&deals)
    .execute(&mut *tx)
    .await?;
    add_stays(tx, t, &deals, 1).await
}

async fn apply(tx: &mut SqliteConnection, tenant: &TenantId, change: &FactChange) -> Result<(), sqlx::Error> {
    let t = tenant.as_str();
    match change {
        FactChange::Deal(d) => {
            sqlx::query(
                // A deal's customer merged away is its survivor.
                "INSERT INTO deal_facts (tenant_id, deal_id, pipeline_id, owner, lead_id, amount_minor, currency, \
                 create_time, outcome, close_time, customer_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                 coalesce((SELECT merged_into FROM customer_facts WHERE tenant_id = ?1 AND customer_id = ?11), ?11)) \
                 ON CONFLICT (tenant_id, deal_id) DO UPDATE SET pipeline_id = excluded.pipeline_id, \
                 owner = excluded.owner, lead_id = excluded.lead_id, amount_minor = excluded.amount_minor, \
                 currency = excluded.currency, create_time = excluded.create_time, outcome = excluded.outcome, \
                 close_time = excluded.close_time, customer_id = excluded.customer_id",
            )
            .bind(t)
            .bind(d.id.to_string())
            .bind(d.pipeline.to_string())
            .bind(&d.owner)
            .bind(text(d.lead))
            .bind(d.amount_minor)
            .bind(&d.currency)
            .bind(d.create_time.timestamp_micros())
            .bind(d.outcome.as_str())
            .bind(d.close_time.map(|t| t.timestamp_micros()))
            .bind(text(d.customer))
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Customer(c) => {
            // Its version first: the owner before this change where the change does not say.
            sqlx::query(
                "INSERT INTO customer_versions (tenant_id, customer_id, version_time, owner) VALUES (?1, ?2, ?3, \
                 coalesce(?4, (SELECT owner FROM customer_facts WHERE tenant_id = ?1 AND customer_id = ?2), '')) \
                 ON CONFLICT (tenant_id, customer_id, version_time) DO UPDATE SET owner = excluded.owner",
            )
            .bind(t)
            .bind(c.id.to_string())
            .bind(c.time.timestamp_micros())
            .bind(c.change.owner.as_deref())
            .execute(&mut *tx)
            .await?;
            let p = &c.change;
            // NULL: unchanged; for the company, '' is none.
            let company = p.company.map(|co| co.map(|id| id.to_string()).unwrap_or_default());
            sqlx::query(
                "INSERT INTO customer_facts (tenant_id, customer_id, kind, owner, lifecycle, source, company_id, \
                 has_email, has_phone, has_consent, create_time, update_time) VALUES (?1, ?2, ?3, coalesce(?5, ''), \
                 coalesce(?6, ''), coalesce(?7, ''), nullif(?8, ''), coalesce(?9, 0), coalesce(?10, 0), \
                 coalesce(?11, 0), ?4, ?4) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET owner = coalesce(?5, owner), \
                 lifecycle = coalesce(?6, lifecycle), source = coalesce(?7, source), \
                 company_id = CASE WHEN ?8 IS NULL THEN company_id ELSE nullif(?8, '') END, \
                 has_email = coalesce(?9, has_email), has_phone = coalesce(?10, has_phone), \
                 has_consent = coalesce(?11, has_consent), \
                 create_time = CASE WHEN ?12 THEN ?4 ELSE create_time END, update_time = ?4",
            )
            .bind(t)
            .bind(c.id.to_string())
            .bind(c.kind.as_str())
            .bind(c.time.timestamp_micros())
            .bind(p.owner.as_deref())
            .bind(p.lifecycle.as_deref())
            .bind(p.source.as_deref())
            .bind(company)
            .bind(p.has_email)
            .bind(p.has_phone)
            .bind(p.has_consent)
            .bind(c.created)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::CustomerGone { id, kind, time, gone } => {
            let into = match gone {
                Gone::Merged(into) => Some(into.to_string()),
                Gone::Deleted | Gone::Erased => None,
            };
            sqlx::query(
                "UPDATE customer_facts SET gone = ?3, merged_into = ?4, update_time = ?5 \
                 WHERE tenant_id = ?1 AND customer_id = ?2",
            )
            .bind(t)
            .bind(id.to_string())
            .bind(gone.as_str())
            .bind(&into)
            .bind(time.timestamp_micros())
            .execute(&mut *tx)
            .await?;
            if let Some(into) = into {
                // Re-point the merged record's facts to its survivor.
                let mut repoint = vec![
                    "UPDATE customer_facts SET merged_into = ?3 WHERE tenant_id = ?1 AND merged_into = ?2",
                    "UPDATE deal_facts SET customer_id = ?3 WHERE tenant_id = ?1 AND customer_id = ?2",
                ];
                repoint.extend(match kind {
                    CustomerKind::Contact => {
                        &["UPDATE interaction_facts SET contact_id = ?3 WHERE tenant_id = ?1 AND contact_id = ?2"][..]
                    }
                    CustomerKind::Company => &[
                        "UPDATE interaction_facts SET company_id = ?3 WHERE tenant_id = ?1 AND company_id = ?2",
                        "UPDATE customer_facts SET company_id = ?3 WHERE tenant_id = ?1 AND company_id = ?2",
                    ][..],
                });
                for sql in repoint {
                    sqlx::query(sql)
                        .bind(t)
                        .bind(id.to_string())
                        .bind(&into)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        FactChange::Lifecycle(l) => {
            sqlx::query(
                "INSERT INTO lifecycle_facts (tenant_id, customer_id, time, from_stage, to_stage) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, customer_id, time) DO UPDATE SET \
                 from_stage = excluded.from_stage, to_stage = excluded.to_stage",
            )
            .bind(t)
            .bind(l.customer.to_string())
            .bind(l.time.timestamp_micros())
            .bind(&l.from)
            .bind(&l.to)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Interaction(i) => {
            sqlx::query(
                "INSERT INTO interaction_facts (tenant_id, interaction_id, contact_id, company_id, kind, direction, \
                 channel, time, duration_ms, campaign, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(t)
            .bind(i.id.to_string())
            .bind(i.contact.to_string())
            .bind(text(i.company))
            .bind(&i.kind)
            .bind(&i.direction)
            .bind(&i.channel)
            .bind(i.time.timestamp_micros())
            .bind(i.duration_ms)
            .bind(&i.campaign)
            .bind(&i.actor)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Usage(u) => {
            sqlx::query(
                "INSERT INTO usage_facts (tenant_id, user_id, area, day, requests, changes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant_id, day, user_id, area) DO UPDATE SET \
                 requests = CAST(min(requests + 0.0 + excluded.requests, 9223372036854775807.0) AS INTEGER), \
                 changes = CAST(min(changes + 0.0 + excluded.changes, 9223372036854775807.0) AS INTEGER)",
            )
            .bind(t)
            .bind(&u.user)
            .bind(&u.area)
            .bind(u.day.to_string())
            .bind(u.requests)
            .bind(u.changes)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Transfer(x) => {
            sqlx::query(
                "INSERT INTO transfer_facts (tenant_id, resource, time, from_owner, to_owner) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )
            .bind(t)
            .bind(&x.resource)
            .bind(x.time.timestamp_micros())
            .bind(&x.from)
            .bind(&x.to)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Transition(s) => {
            sqlx::query(
                "INSERT INTO deal_transitions (tenant_id, deal_id, sequence, kind, from_stage, to_stage, time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            )
            .bind(t)
            .bind(s.deal.to_string())
            .bind(s.sequence)
            .bind(s.kind.as_str())
            .bind(text(s.from_stage))
            .bind(text(s.to_stage))
            .bind(s.time.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Products { deal, products } => {
            sqlx::query("DELETE FROM deal_products WHERE tenant_id = ?1 AND deal_id = ?2")
                .bind(t)
                .bind(deal.to_string())
                .execute(&mut *tx)
                .await?;
            for product in products {
                sqlx::query(
                    "INSERT INTO deal_products (tenant_id, deal_id, product_id) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(t)
                .bind(deal.to_string())
                .bind(product.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        FactChange::Version(v) => {
            sqlx::query(
                "INSERT INTO deal_versions (tenant_id, deal_id, version_time, owner, amount_minor, currency) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant_id, deal_id, version_time) DO UPDATE SET \
                 owner = excluded.owner, amount_minor = excluded.amount_minor, currency = excluded.currency",
            )
            .bind(t)
            .bind(v.deal.to_string())
            .bind(v.time.timestamp_micros())
            .bind(&v.owner)
            .bind(v.amount_minor)
            .bind(&v.currency)
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Stages { pipeline, stages } => {
            sqlx::query("DELETE FROM stage_facts WHERE tenant_id = ?1 AND pipeline_id = ?2")
                .bind(t)
                .bind(pipeline.to_string())
                .execute(&mut *tx)
                .await?;
            for s in stages {
                sqlx::query(
                    "INSERT INTO stage_facts (tenant_id, pipeline_id, stage_id, position, kind) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )
                .bind(t)
                .bind(s.pipeline.to_string())
                .bind(s.stage.to_string())
                .bind(s.position)
                .bind(s.kind.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        FactChange::Lead(l) => {
            sqlx::query(
                "INSERT INTO lead_facts (tenant_id, lead_id, owner, source, create_time, deal_id, convert_time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant_id, lead_id) DO UPDATE SET \
                 owner = excluded.owner, source = excluded.source, create_time = excluded.create_time, \
                 deal_id = excluded.deal_id, convert_time = excluded.convert_time",
            )
            .bind(t)
            .bind(l.id.to_string())
            .bind(&l.owner)
            .bind(&l.source)
            .bind(l.create_time.timestamp_micros())
            .bind(l.converted.map(|(deal, _)| deal.to_string()))
            .bind(l.converted.map(|(_, time)| time.timestamp_micros()))
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Owner { record, owner, time } => {
            if let Record::Deal(deal) = record {
                // Its version as of then, with the amount its latest version before then had
                // (a deal not known yet gets its versions from its own events).
                sqlx::query(
                    "INSERT INTO deal_versions (tenant_id, deal_id, version_time, owner, amount_minor, currency) \
                     SELECT tenant_id, deal_id, ?3, ?4, amount_minor, currency FROM deal_versions \
                     WHERE tenant_id = ?1 AND deal_id = ?2 AND version_time <= ?3 \
                     ORDER BY version_time DESC LIMIT 1 \
                     ON CONFLICT (tenant_id, deal_id, version_time) DO UPDATE SET owner = excluded.owner",
                )
                .bind(t)
                .bind(deal.to_string())
                .bind(time.timestamp_micros())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            let (sql, id) = match record {
                Record::Deal(id) => (
                    "UPDATE deal_facts SET owner = ?3 WHERE tenant_id = ?1 AND deal_id = ?2",
                    id,
                ),
                Record::Lead(id) => (
                    "UPDATE lead_facts SET owner = ?3 WHERE tenant_id = ?1 AND lead_id = ?2",
                    id,
                ),
            };
            sqlx::query(sql)
                .bind(t)
                .bind(id.to_string())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        FactChange::Forecast(f) => {
            sqlx::query(
                "INSERT INTO forecast_facts (tenant_id, forecast_id, owner, period, amount_minor, currency, category, \
                 submit_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )
            .bind(t)
            .bind(f.id.to_string())
            .bind(&f.owner)
            .bind(&f.period)
            .bind(f.amount_minor)
            .bind(&f.currency)
            .bind(&f.category)
            .bind(f.submit_time.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        FactChange::Quota(q) => {
            sqlx::query(
                "INSERT INTO quota_facts (tenant_id, owner, period, amount_minor, currency) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (tenant_id, period, owner) DO UPDATE SET amount_minor = excluded.amount_minor, \
                 currency = excluded.currency",
            )
            .bind(t)
            .bind(&q.owner)
            .bind(&q.period)
            .bind(q.amount_minor)
            .bind(&q.currency)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

fn deal(row: &SqliteRow) -> Result<DealFact, StoreError> {
    let lead: Option<String> = row.try_get("lead_id")?;
    let close: Option<i64> = row.try_get("close_time")?;
    let customer: Option<String> = row.try_get("customer_id")?;
    Ok(DealFact {
        id: uuid(row.try_get("deal_id")?)?,
        pipeline: uuid(row.try_get("pipeline_id")?)?,
        owner: row.try_get("owner")?,
        lead: lead.as_deref().map(uuid).transpose()?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        create_time: time(row.try_get("create_time")?)?,
        outcome: outcome(&row.try_get::<String, _>("outcome")?)?,
        close_time: close.map(time).transpose()?,
        customer: customer.as_deref().map(uuid).transpose()?,
    })
}

/// The columns [`deal`] reads, of `deal_facts d`, and the lead's source.
const DEAL_COLUMNS: &str = "d.deal_id, d.pipeline_id, d.owner, d.lead_id, d.amount_minor, d.currency, d.create_time, \
                            d.outcome, d.close_time, d.customer_id, coalesce(l.source, '') AS lead_source";

#[async_trait]
impl AnalyticsStore for SqliteAnalyticsStore {
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::sqlite_checkpoint(&self.pool, consumer).await?)
    }

    async fn ingest(&self, consumer: &str, previous: u64, batch: &IngestBatch) -> Result<bool, StoreError> {
        let Some((to, commit_time)) = batch.last else {
            return Ok(true);
        };
        let mut tx = begin_sqlite_write(&self.pool).await?;
        if !crm_platform::consumer::sqlite_claim(&mut tx, consumer, previous).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut refresh: std::collections::BTreeMap<&TenantId, Refresh> = std::collections::BTreeMap::new();
        for (tenant, change) in &batch.changes {
            if !refresh.contains_key(tenant) {
                sqlx::query("INSERT OR IGNORE INTO analytics_tenants (tenant_id) VALUES (?1)")
                    .bind(tenant.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            apply(&mut tx, tenant, change).await?;
            refresh.entry(tenant).or_default().add(change);
        }
        // Last: the closes and stays read the deals, transitions, leads and owners applied above.
        for (tenant, refresh) in &refresh {
            refresh_closes(&mut tx, tenant, refresh).await?;
            refresh_stays(&mut tx, tenant, &refresh.stays).await?;
        }
        for (tenant, kind) in &batch.skipped {
            sqlx::query(
                "INSERT INTO ingest_skipped (tenant_id, source, type, count) VALUES (?1, ?2, ?3, 1) \
                 ON CONFLICT (tenant_id, source, type) DO UPDATE SET count = count + 1",
            )
            .bind(tenant.as_str())
            .bind(&batch.source)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        }
        for (tenant, parked) in &batch.parked {
            sqlx::query(
                "INSERT INTO ingest_parked (tenant_id, source, sequence, type, reason, park_time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(&parked.source)
            .bind(parked.sequence)
            .bind(&parked.kind)
            .bind(&parked.reason)
            .bind(parked.park_time.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO ingest_watermarks (consumer, source, sequence, commit_time, events) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (consumer) DO UPDATE SET source = excluded.source, \
             sequence = excluded.sequence, commit_time = excluded.commit_time, \
             events = ingest_watermarks.events + excluded.events",
        )
        .bind(consumer)
        .bind(&batch.source)
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(commit_time.timestamp_micros())
        .bind(batch.events)
        .execute(&mut *tx)
        .await?;
        crm_platform::consumer::sqlite_advance(&mut tx, consumer, to).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cycles(&self, tenant: &TenantId, window: Window, grouping: Grouping) -> Result<Cycles, StoreError> {
        // One read transaction: one snapshot for both.
        let mut tx = self.pool.begin().await?;
        let cells = close_cells_query(tenant, window).fetch_all(&mut *tx).await?;
        let times = cycle_times_query(tenant, window, grouping).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(Cycles {
            cells: cells.iter().map(close_cell).collect::<Result<_, _>>()?,
            times: times.iter().map(cycle_times).collect::<Result<_, _>>()?,
        })
    }

    async fn close_cells(&self, tenant: &TenantId, window: Window) -> Result<Vec<CloseCell>, StoreError> {
        let rows = close_cells_query(tenant, window).fetch_all(&self.pool).await?;
        rows.iter().map(close_cell).collect()
    }

    async fn deals_created(&self, tenant: &TenantId, window: Window) -> Result<Vec<DealRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEAL_COLUMNS} FROM deal_facts d \
             LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
             WHERE d.tenant_id = ?1 AND d.create_time >= ?2 AND d.create_time < ?3"
        )))
        .bind(tenant.as_str())
        .bind(window.start_time().timestamp_micros())
        .bind(window.end_time().timestamp_micros())
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(
            "SELECT l.lead_id, l.owner, l.source, l.create_time, l.deal_id, l.convert_time, d.outcome \
             FROM lead_facts l LEFT JOIN deal_facts d ON d.tenant_id = l.tenant_id AND d.deal_id = l.deal_id \
             WHERE l.tenant_id = ?1 AND l.create_time >= ?2 AND l.create_time < ?3",
        )
        .bind(tenant.as_str())
        .bind(window.start_time().timestamp_micros())
        .bind(window.end_time().timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let deal: Option<String> = row.try_get("deal_id")?;
                let converted: Option<i64> = row.try_get("convert_time")?;
                let outcome: Option<String> = row.try_get("outcome")?;
                let converted = match (deal, converted) {
                    (Some(deal), Some(at)) => Some((uuid(&deal)?, time(at)?)),
                    _ => None,
                };
                Ok(LeadRow {
                    lead: LeadFact {
                        id: uuid(row.try_get("lead_id")?)?,
                        owner: row.try_get("owner")?,
                        source: row.try_get("source")?,
                        create_time: time(row.try_get("create_time")?)?,
                        converted,
                    },
                    deal_outcome: outcome.as_deref().and_then(Outcome::parse),
                })
            })
            .collect()
    }

    async fn forecasts(&self, tenant: &TenantId, period: &str) -> Result<Vec<ForecastFact>, StoreError> {
        let rows = sqlx::query(
            "SELECT forecast_id, owner, period, amount_minor, currency, category, submit_time FROM forecast_facts \
             WHERE tenant_id = ?1 AND period = ?2",
        )
        .bind(tenant.as_str())
        .bind(period)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ForecastFact {
                    id: uuid(row.try_get("forecast_id")?)?,
                    owner: row.try_get("owner")?,
                    period: row.try_get("period")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                    category: row.try_get("category")?,
                    submit_time: time(row.try_get("submit_time")?)?,
                })
            })
            .collect()
    }

    async fn quotas(&self, tenant: &TenantId, period: &str) -> Result<Vec<QuotaFact>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, period, amount_minor, currency FROM quota_facts WHERE tenant_id = ?1 AND period = ?2 ORDER BY owner",
        )
        .bind(tenant.as_str())
        .bind(period)
        .fetch_all(&self.pool)
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
        // One read transaction: one snapshot for all three.
        let mut tx = self.pool.begin().await?;
        let cells = stays_query(&ends, by_month, "stay_ends", "", tenant, window)
            .fetch_all(&mut *tx)
            .await?;
        let times = stays_query(&times, by_month, sums, "AND bucket IS NOT NULL", tenant, window)
            .fetch_all(&mut *tx)
            .await?;
        let stages = stages_query(tenant).fetch_all(&mut *tx).await?;
        tx.commit().await?;
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
        let rows = stages_query(tenant).fetch_all(&self.pool).await?;
        rows.iter().map(stage_fact).collect()
    }

    async fn open_at(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<OpenDeal>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.deal_id, d.pipeline_id, t.to_stage, coalesce(v.owner, d.owner) AS owner, \
             coalesce(v.amount_minor, d.amount_minor) AS amount_minor, coalesce(v.currency, d.currency) AS currency \
             FROM (SELECT deal_id, kind, to_stage, row_number() OVER (PARTITION BY deal_id ORDER BY sequence DESC) AS r \
                   FROM deal_transitions WHERE tenant_id = ?1 AND time < ?2) t \
             JOIN deal_facts d ON d.tenant_id = ?1 AND d.deal_id = t.deal_id \
             LEFT JOIN deal_versions v ON v.tenant_id = ?1 AND v.deal_id = t.deal_id AND v.version_time = \
                   (SELECT max(version_time) FROM deal_versions WHERE tenant_id = ?1 AND deal_id = t.deal_id \
                    AND version_time < ?2) \
             WHERE t.r = 1 AND t.kind IN ('created', 'moved', 'reopened')",
        )
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let stage: Option<String> = row.try_get("to_stage")?;
                Ok(OpenDeal {
                    deal: uuid(row.try_get("deal_id")?)?,
                    pipeline: uuid(row.try_get("pipeline_id")?)?,
                    stage: stage.as_deref().map(uuid).transpose()?,
                    owner: row.try_get("owner")?,
                    amount_minor: row.try_get("amount_minor")?,
                    currency: row.try_get("currency")?,
                })
            })
            .collect()
    }

    async fn interactions(
        &self,
        tenant: &TenantId,
        which: Interactions,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<InteractionFact>, StoreError> {
        let (filter, kind) = match which {
            Interactions::OfCampaigns => ("campaign <> '' AND ?4 IS NULL", None),
            Interactions::OfKind(kind) => ("kind = ?4", Some(kind)),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT interaction_id, contact_id, company_id, kind, direction, channel, time, duration_ms, campaign, \
             actor FROM interaction_facts WHERE tenant_id = ?1 AND time >= ?2 AND time < ?3 AND {filter}"
        )))
        .bind(tenant.as_str())
        .bind(start.timestamp_micros())
        .bind(end.timestamp_micros())
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let company: Option<String> = row.try_get("company_id")?;
                Ok(InteractionFact {
                    id: uuid(row.try_get("interaction_id")?)?,
                    contact: uuid(row.try_get("contact_id")?)?,
                    company: company.as_deref().map(uuid).transpose()?,
                    kind: row.try_get("kind")?,
                    direction: row.try_get("direction")?,
                    channel: row.try_get("channel")?,
                    time: time(row.try_get("time")?)?,
                    duration_ms: row.try_get("duration_ms")?,
                    campaign: row.try_get("campaign")?,
                    actor: row.try_get("actor")?,
                })
            })
            .collect()
    }

    async fn last_changes(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LastChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT customer_id, owner, version_time FROM (SELECT v.customer_id, v.owner, v.version_time, \
                 row_number() OVER (PARTITION BY v.customer_id ORDER BY v.version_time DESC) AS r \
                 FROM customer_versions v \
                 JOIN customer_facts c ON c.tenant_id = v.tenant_id AND c.customer_id = v.customer_id \
                 WHERE v.tenant_id = ?1 AND v.version_time < ?2 \
                 AND NOT (c.gone IS NOT NULL AND c.update_time < ?2)) WHERE r = 1",
        )
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LastChange {
                    customer: uuid(row.try_get("customer_id")?)?,
                    owner: row.try_get("owner")?,
                    time: time(row.try_get("version_time")?)?,
                })
            })
            .collect()
    }

    async fn profile_counts(
        &self,
        tenant: &TenantId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<ProfileCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, count(*) AS contacts, sum(has_email) AS email, sum(has_phone) AS phone, \
             count(company_id) AS company, sum(has_consent) AS consent FROM customer_facts \
             WHERE tenant_id = ?1 AND kind = 'contact' AND gone IS NULL AND create_time < ?2 \
             GROUP BY owner ORDER BY owner",
        )
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(
            "SELECT resource, time, from_owner, to_owner FROM transfer_facts \
             WHERE tenant_id = ?1 AND time >= ?2 AND time < ?3",
        )
        .bind(tenant.as_str())
        .bind(window.start_time().timestamp_micros())
        .bind(window.end_time().timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TransferFact {
                    resource: row.try_get("resource")?,
                    time: time(row.try_get("time")?)?,
                    from: row.try_get("from_owner")?,
                    to: row.try_get("to_owner")?,
                })
            })
            .collect()
    }

    async fn left_behind(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LeftBehind>, StoreError> {
        let rows = sqlx::query(
            "WITH moves AS (SELECT from_owner AS owner, time, 1 AS away FROM transfer_facts \
                 WHERE tenant_id = ?1 AND time < ?2 \
                 UNION ALL SELECT to_owner, time, 0 FROM transfer_facts WHERE tenant_id = ?1 AND time < ?2), \
             gone AS (SELECT owner FROM moves GROUP BY owner \
                 HAVING max(CASE WHEN away = 1 THEN time END) > coalesce(max(CASE WHEN away = 0 THEN time END), \
                 -9223372036854775808)) \
             SELECT owner, '' AS kind, 0 AS count FROM gone \
             UNION ALL SELECT owner, CASE kind WHEN 'contact' THEN 'contacts' ELSE 'companies' END, count(*) \
                 FROM customer_facts WHERE tenant_id = ?1 AND gone IS NULL AND owner IN (SELECT owner FROM gone) \
                 GROUP BY owner, kind \
             UNION ALL SELECT owner, 'deals', count(*) FROM deal_facts \
                 WHERE tenant_id = ?1 AND outcome = 'open' AND owner IN (SELECT owner FROM gone) GROUP BY owner \
             UNION ALL SELECT owner, 'leads', count(*) FROM lead_facts \
                 WHERE tenant_id = ?1 AND deal_id IS NULL AND owner IN (SELECT owner FROM gone) GROUP BY owner",
        )
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEAL_COLUMNS} FROM deal_facts d \
             LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
             WHERE d.tenant_id = ?1 AND d.outcome = 'won' AND d.customer_id IS NOT NULL AND d.close_time < ?2"
        )))
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deal).collect()
    }

    async fn lifecycles(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LifecycleFact>, StoreError> {
        let rows = sqlx::query(
            "SELECT customer_id, time, from_stage, to_stage FROM lifecycle_facts WHERE tenant_id = ?1 AND time < ?2",
        )
        .bind(tenant.as_str())
        .bind(instant.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LifecycleFact {
                    customer: uuid(row.try_get("customer_id")?)?,
                    time: time(row.try_get("time")?)?,
                    from: row.try_get("from_stage")?,
                    to: row.try_get("to_stage")?,
                })
            })
            .collect()
    }

    async fn settings(&self, tenant: &TenantId) -> Result<Option<Settings>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM settings WHERE tenant_id = ?1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(from_document).transpose()
    }

    async fn put_settings(&self, tenant: &TenantId, settings: &Settings) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (tenant_id, body) VALUES (?1, ?2) \
             ON CONFLICT (tenant_id) DO UPDATE SET body = excluded.body",
        )
        .bind(tenant.as_str())
        .bind(document(settings)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn exchange_rates(&self, tenant: &TenantId) -> Result<Vec<ExchangeRate>, StoreError> {
        let rows = sqlx::query(
            "SELECT currency, month, rate, update_time, updated_by FROM exchange_rates \
             WHERE tenant_id = ?1 ORDER BY currency, month LIMIT ?2",
        )
        .bind(tenant.as_str())
        .bind(RATES_LISTED)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ExchangeRate {
                    currency: row.try_get("currency")?,
                    month: row.try_get("month")?,
                    rate: row.try_get("rate")?,
                    update_time: time(row.try_get("update_time")?)?,
                    updated_by: row.try_get("updated_by")?,
                })
            })
            .collect()
    }

    async fn put_exchange_rate(&self, tenant: &TenantId, rate: &ExchangeRate) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO exchange_rates (tenant_id, currency, month, rate, update_time, updated_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tenant_id, currency, month) DO UPDATE SET \
             rate = excluded.rate, update_time = excluded.update_time, updated_by = excluded.updated_by",
        )
        .bind(tenant.as_str())
        .bind(&rate.currency)
        .bind(&rate.month)
        .bind(rate.rate)
        .bind(rate.update_time.timestamp_micros())
        .bind(&rate.updated_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn won_deals(&self, tenant: &TenantId) -> Result<Vec<WonDeal>, StoreError> {
        let rows = sqlx::query(
            "SELECT customer_id, currency, amount_minor, close_time FROM deal_facts \
             WHERE tenant_id = ?1 AND outcome = 'won' AND customer_id IS NOT NULL AND close_time IS NOT NULL",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WonDeal {
                    customer: uuid(row.try_get("customer_id")?)?,
                    currency: row.try_get("currency")?,
                    amount_minor: row.try_get("amount_minor")?,
                    close_time: time(row.try_get("close_time")?)?,
                })
            })
            .collect()
    }

    async fn customer_products(&self, tenant: &TenantId) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT d.customer_id, p.product_id FROM deal_products p \
             JOIN deal_facts d ON d.tenant_id = p.tenant_id AND d.deal_id = p.deal_id \
             WHERE p.tenant_id = ?1 AND d.outcome = 'won' AND d.customer_id IS NOT NULL",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((uuid(row.try_get("customer_id")?)?, uuid(row.try_get("product_id")?)?)))
            .collect()
    }

    async fn usage(&self, tenant: &TenantId, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageFact>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, area, day, requests, changes FROM usage_facts \
             WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3",
        )
        .bind(tenant.as_str())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageFact {
                    user: row.try_get("user_id")?,
                    area: row.try_get("area")?,
                    day: day(row.try_get("day")?)?,
                    requests: row.try_get("requests")?,
                    changes: row.try_get("changes")?,
                })
            })
            .collect()
    }

    async fn first_use(&self, tenant: &TenantId, to: NaiveDate) -> Result<Vec<(String, NaiveDate)>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, min(day) AS first FROM usage_facts WHERE tenant_id = ?1 AND day < ?2 GROUP BY user_id",
        )
        .bind(tenant.as_str())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("user_id")?, day(row.try_get("first")?)?)))
            .collect()
    }

    async fn owned_customers(&self, tenant: &TenantId, owner: &str) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_facts WHERE tenant_id = ?1 AND owner = ?2 AND gone IS NULL",
        )
        .bind(tenant.as_str())
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|id| uuid(id)).collect()
    }

    async fn customer_owner(&self, tenant: &TenantId, customer: Uuid) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT owner FROM customer_facts WHERE tenant_id = ?1 AND customer_id = ?2 AND gone IS NULL",
        )
        .bind(tenant.as_str())
        .bind(customer.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn create_goal(&self, tenant: &TenantId, goal: &Goal) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO goals (tenant_id, goal_id, create_time, body) VALUES (?1, ?2, ?3, ?4)")
            .bind(tenant.as_str())
            .bind(goal.id.to_string())
            .bind(goal.create_time.timestamp_micros())
            .bind(document(goal)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn goal(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Goal>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM goals WHERE tenant_id = ?1 AND goal_id = ?2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        body.as_deref().map(from_document).transpose()
    }

    async fn goals(&self, tenant: &TenantId, limit: i64) -> Result<Vec<Goal>, StoreError> {
        let bodies: Vec<String> = sqlx::query_scalar(
            "SELECT body FROM goals WHERE tenant_id = ?1 ORDER BY create_time DESC, goal_id DESC LIMIT ?2",
        )
        .bind(tenant.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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
                    commit_time: time(row.try_get("commit_time")?)?,
                    consumer: row.try_get("consumer")?,
                    events: row.try_get("events")?,
                })
            })
            .collect()
    }

    async fn ingest_problems(&self, tenant: &TenantId) -> Result<(Vec<Skipped>, Vec<Parked>), StoreError> {
        let skipped =
            sqlx::query("SELECT source, type, count FROM ingest_skipped WHERE tenant_id = ?1 ORDER BY source, type")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
        let parked = sqlx::query(
            "SELECT source, sequence, type, reason, park_time FROM ingest_parked WHERE tenant_id = ?1 \
             ORDER BY park_time DESC, source, sequence DESC LIMIT ?2",
        )
        .bind(tenant.as_str())
        .bind(PARKED_LISTED)
        .fetch_all(&self.pool)
        .await?;
        let skipped = skipped
            .iter()
            .map(|row| {
                Ok(Skipped {
                    source: row.try_get("source")?,
                    kind: row.try_get("type")?,
                    count: row.try_get("count")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let parked = parked
            .iter()
            .map(|row| {
                Ok(Parked {
                    source: row.try_get("source")?,
                    sequence: row.try_get("sequence")?,
                    kind: row.try_get("type")?,
                    reason: row.try_get("reason")?,
                    park_time: time(row.try_get("park_time")?)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
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
        let mut state = DerivedState::default();
        let segments: Vec<(String, String)> =
            sqlx::query_as("SELECT customer_id, segment FROM customer_segments WHERE tenant_id = ?1")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
        for (customer, segment) in segments {
            state.segments.insert(uuid(&customer)?, segment);
        }
        let goals: Vec<(String, String)> =
            sqlx::query_as("SELECT goal_id, status FROM goal_statuses WHERE tenant_id = ?1")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
        for (goal, status) in goals {
            let status = GoalStatus::parse(&status).ok_or_else(|| corrupt(format!("goal status {status}")))?;
            state.goals.insert(uuid(&goal)?, status);
        }
        let stalled: Vec<String> = sqlx::query_scalar("SELECT deal_id FROM stalled_deals WHERE tenant_id = ?1")
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await?;
        for deal in stalled {
            state.stalled.insert(uuid(&deal)?);
        }
        Ok(state)
    }

    async fn quiet_deals(&self, tenant: &TenantId, before: DateTime<Utc>) -> Result<Vec<QuietDeal>, StoreError> {
        let rows = sqlx::query(
            "SELECT deal_id, owner, pipeline_id, stage, last FROM ( \
               SELECT d.deal_id, d.owner, d.pipeline_id, \
                 (SELECT t.to_stage FROM deal_transitions t WHERE t.tenant_id = d.tenant_id AND t.deal_id = d.deal_id \
                  ORDER BY t.sequence DESC LIMIT 1) AS stage, \
                 max(d.create_time, \
                   coalesce((SELECT max(t.time) FROM deal_transitions t WHERE t.tenant_id = d.tenant_id AND t.deal_id = d.deal_id), 0), \
                   coalesce((SELECT max(v.version_time) FROM deal_versions v WHERE v.tenant_id = d.tenant_id AND v.deal_id = d.deal_id), 0), \
                   coalesce((SELECT max(i.time) FROM interaction_facts i WHERE i.tenant_id = d.tenant_id AND i.contact_id = d.customer_id), 0), \
                   coalesce((SELECT max(i.time) FROM interaction_facts i WHERE i.tenant_id = d.tenant_id AND i.company_id = d.customer_id), 0)) AS last \
               FROM deal_facts d WHERE d.tenant_id = ?1 AND d.outcome = 'open') \
             WHERE last < ?2 ORDER BY deal_id",
        )
        .bind(tenant.as_str())
        .bind(before.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let stage: Option<String> = row.try_get("stage")?;
                Ok(QuietDeal {
                    deal: uuid(row.try_get("deal_id")?)?,
                    owner: row.try_get("owner")?,
                    pipeline: uuid(row.try_get("pipeline_id")?)?,
                    stage: stage.as_deref().map(uuid).transpose()?,
                    last_activity: time(row.try_get("last")?)?,
                })
            })
            .collect()
    }

    async fn customer_owners(&self, tenant: &TenantId) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT customer_id, owner FROM customer_facts WHERE tenant_id = ?1 AND gone IS NULL")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(id, owner)| Ok((uuid(&id)?, owner))).collect()
    }

    async fn publish_derived(
        &self,
        tenant: &TenantId,
        changes: &Changes,
        events: &[NewEvent],
    ) -> Result<(), StoreError> {
        let t = tenant.as_str();
        let mut tx = begin_sqlite_write(&self.pool).await?;
        for (customer, _, segment) in &changes.segments {
            sqlx::query(
                "INSERT INTO customer_segments (tenant_id, customer_id, segment) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET segment = excluded.segment",
            )
            .bind(t)
            .bind(customer.to_string())
            .bind(segment)
            .execute(&mut *tx)
            .await?;
        }
        for (goal, _, status) in &changes.goals {
            sqlx::query(
                "INSERT INTO goal_statuses (tenant_id, goal_id, status) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id, goal_id) DO UPDATE SET status = excluded.status",
            )
            .bind(t)
            .bind(goal.to_string())
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        }
        for deal in &changes.stalled {
            sqlx::query("INSERT OR REPLACE INTO stalled_deals (tenant_id, deal_id, last_activity) VALUES (?1, ?2, ?3)")
                .bind(t)
                .bind(deal.deal.to_string())
                .bind(deal.last_activity.timestamp_micros())
                .execute(&mut *tx)
                .await?;
        }
        for deal in &changes.resumed {
            sqlx::query("DELETE FROM stalled_deals WHERE tenant_id = ?1 AND deal_id = ?2")
                .bind(t)
                .bind(deal.to_string())
                .execute(&mut *tx)
                .await?;
        }
        crm_platform::outbox::append_sqlite(&mut tx, events).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    async fn publish_usage(&self, reports: &[UsageReport]) -> Result<(), StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        for report in reports {
            sqlx::query("INSERT OR IGNORE INTO analytics_tenants (tenant_id) VALUES (?1)")
                .bind(report.tenant.as_str())
                .execute(&mut *tx)
                .await?;
            for usage in &report.usage {
                apply(&mut tx, &report.tenant, &FactChange::Usage(usage.clone())).await?;
            }
            crm_platform::outbox::append_sqlite(&mut tx, &report.events).await?;
        }
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox) as Arc<dyn Outbox>
    }
}

/// The closes `window` counts, as `close_cells` gives them: the cells of the window's days
/// (closes nothing superseded), and the closes a reopening superseded only after the window.
fn close_cells_query(
    tenant: &TenantId,
    window: Window,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(
        "SELECT owner, pipeline_id, lead_source, substr(close_day, 1, 7) AS month, outcome, currency, \
                 sum(deals) AS deals, sum(amount_giga) AS amount_giga, sum(amount_rest) AS amount_rest, \
                 sum(cycle_days) AS cycle_days, sum(cycle_rest_ms) AS cycle_rest_ms FROM ( \
                   SELECT owner, pipeline_id, lead_source, close_day, outcome, currency, deals, amount_giga, \
                   amount_rest, cycle_days, cycle_rest_ms FROM close_cells \
                   WHERE tenant_id = ?1 AND close_day >= ?2 AND close_day < ?3 \
                 UNION ALL \
                   SELECT owner, pipeline_id, lead_source, date(close_time / 1000000.0, 'unixepoch'), outcome, \
                   currency, 1, amount_minor / 1000000000, amount_minor % 1000000000, cycle_ms / 86400000, \
                   cycle_ms % 86400000 FROM deal_closes \
                   WHERE tenant_id = ?1 AND close_time >= ?4 AND close_time < ?5 AND superseded_time IS NOT NULL \
                   AND superseded_time >= ?5) c \
                 GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(deals) <> 0",
    )
    .bind(tenant.as_str())
    .bind(window.start.to_string())
    .bind(window.end.to_string())
    .bind(window.start_time().timestamp_micros())
    .bind(window.end_time().timestamp_micros())
}

fn close_cell(row: &SqliteRow) -> Result<CloseCell, StoreError> {
    Ok(CloseCell {
        owner: row.try_get("owner")?,
        pipeline: uuid(&row.try_get::<String, _>("pipeline_id")?)?,
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
/// cycles (as the PostgreSQL store's).
fn cycle_times_query(
    tenant: &TenantId,
    window: Window,
    grouping: Grouping,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let split = MonthSplit::of(window);
    let kept = close_group_sql(grouping, "substr(month, 1, 7)");
    let closed = close_group_sql(grouping, "strftime('%Y-%m', close_time / 1000000.0, 'unixepoch')");
    let bucket = duration_bucket("max(cycle_ms, 0) / 1000");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT grp, bucket, sum(deals) AS deals FROM ( \
                   SELECT {kept} AS grp, bucket, deals FROM cycle_times \
                   WHERE tenant_id = ?1 AND month >= ?2 AND month < ?3 \
                 UNION ALL \
                   SELECT {closed}, {bucket}, 1 FROM deal_closes \
                   WHERE tenant_id = ?1 AND outcome = 'won' \
                   AND (close_time >= ?4 AND close_time < ?5 OR close_time >= ?6 AND close_time < ?7) \
                   AND (superseded_time IS NULL OR superseded_time >= ?7) \
                 UNION ALL \
                   SELECT {closed}, {bucket}, 1 FROM deal_closes \
                   WHERE tenant_id = ?1 AND superseded_time IS NOT NULL AND close_time >= ?5 AND close_time < ?6 \
                   AND outcome = 'won' AND superseded_time >= ?7) c \
                 GROUP BY 1, 2 HAVING sum(deals) <> 0"
    )))
    .bind(tenant.as_str())
    .bind(split.months.0.format("%Y-%m-%d").to_string())
    .bind(split.months.1.format("%Y-%m-%d").to_string())
    .bind(split.days[0].0.timestamp_micros())
    .bind(split.days[0].1.timestamp_micros())
    .bind(split.days[1].0.timestamp_micros())
    .bind(window.end_time().timestamp_micros())
}

fn stages_query(tenant: &TenantId) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(
        "SELECT pipeline_id, stage_id, position, kind FROM stage_facts WHERE tenant_id = ?1 \
                 ORDER BY pipeline_id, position",
    )
    .bind(tenant.as_str())
}

fn stage_fact(row: &SqliteRow) -> Result<StageFact, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(StageFact {
        pipeline: uuid(row.try_get("pipeline_id")?)?,
        stage: uuid(row.try_get("stage_id")?)?,
        position: row.try_get("position")?,
        kind: StageKind::parse(&kind).ok_or_else(|| corrupt(format!("stage kind {kind}")))?,
    })
}

/// The stays that began in `window` added up by `columns` (each an SQL expression of a stay
/// and the name it is read by) and by month of entry when `by_month`, from the sums table
/// `sums` for its whole months and from the stays themselves (those `filter` keeps) for its
/// other days (as the PostgreSQL store's, in SQLite's dialect).
fn stays_query<'q>(
    columns: &[(&str, &str)],
    by_month: bool,
    sums: &str,
    filter: &str,
    tenant: &'q TenantId,
    window: Window,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let split = MonthSplit::of(window);
    let day = |day: chrono::NaiveDate| day.format("%Y-%m-%d").to_string();
    let inner = columns
        .iter()
        .map(|(expr, name)| format!("{expr} AS {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = columns.iter().map(|(_, name)| *name).collect::<Vec<_>>().join(", ");
    let (month, by) = if by_month {
        ("substr(month, 1, 7)", "1, ")
    } else {
        ("''", "")
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {month} AS month, {names}, sum(stays) AS stays FROM ( \
           SELECT month, {inner}, stays FROM {sums} WHERE tenant_id = ?1 AND month >= ?2 AND month < ?3 \
         UNION ALL \
           SELECT date(entry_time / 1000000.0, 'unixepoch', 'start of month'), {inner}, 1 FROM deal_stays \
           WHERE tenant_id = ?1 AND (entry_time >= ?4 AND entry_time < ?5 OR entry_time >= ?6 AND entry_time < ?7) \
           {filter}) s \
         GROUP BY {by}{names} HAVING sum(stays) <> 0"
    )))
    .bind(tenant.as_str())
    .bind(day(split.months.0))
    .bind(day(split.months.1))
    .bind(split.days[0].0.timestamp_micros())
    .bind(split.days[0].1.timestamp_micros())
    .bind(split.days[1].0.timestamp_micros())
    .bind(split.days[1].1.timestamp_micros())
}
