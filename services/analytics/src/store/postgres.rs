//! The PostgreSQL store: queries pinned to their tenant (row-level security); ingest pins each
//! change's tenant in turn inside its one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::begin_tenant;
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{AnalyticsStore, Folded, IngestBatch, PARKED_LISTED, StoreError, corrupt, goal_body, goal_of};
use crate::domain::*;

#[derive(Clone)]
pub struct PgAnalyticsStore {
    pool: PgPool,
}

impl PgAnalyticsStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The rows `query` reads in a transaction pinned to `tenant`.
    async fn read(&self, tenant: &TenantId, query: Query<'_, Postgres, PgArguments>) -> Result<Vec<PgRow>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
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
        sqlx::query(
            "INSERT INTO deal_facts (tenant_id, deal_id, pipeline_id, owner, lead_id, amount_minor, currency, \
             create_time, outcome, close_time) \
             SELECT $1, * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::bigint[], $7::text[], \
                                      $8::timestamptz[], $9::text[], $10::timestamptz[]) \
             ON CONFLICT (tenant_id, deal_id) DO UPDATE SET pipeline_id = excluded.pipeline_id, \
             owner = excluded.owner, lead_id = excluded.lead_id, amount_minor = excluded.amount_minor, \
             currency = excluded.currency, create_time = excluded.create_time, outcome = excluded.outcome, \
             close_time = excluded.close_time",
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
    Ok(())
}

fn deal(row: &PgRow) -> Result<DealFact, StoreError> {
    let outcome: String = row.try_get("outcome")?;
    Ok(DealFact {
        id: row.try_get("deal_id")?,
        pipeline: row.try_get("pipeline_id")?,
        owner: row.try_get("owner")?,
        lead: row.try_get("lead_id")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        create_time: row.try_get("create_time")?,
        outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt(format!("deal outcome {outcome}")))?,
        close_time: row.try_get("close_time")?,
    })
}

/// The columns [`deal`] reads, of `deal_facts d`, and the lead's source.
const DEAL_COLUMNS: &str = "d.deal_id, d.pipeline_id, d.owner, d.lead_id, d.amount_minor, d.currency, d.create_time, \
                            d.outcome, d.close_time, coalesce(l.source, '') AS lead_source";

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
            pin(&mut tx, tenant.as_str()).await?;
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
            "INSERT INTO ingest_watermarks (source, sequence, commit_time) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET sequence = excluded.sequence, commit_time = excluded.commit_time",
        )
        .bind(&batch.source)
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(commit_time)
        .execute(&mut *tx)
        .await?;
        crm_platform::consumer::pg_advance(&mut tx, consumer, to).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn closes(&self, tenant: &TenantId, window: Window) -> Result<Vec<Close>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {DEAL_COLUMNS}, t.sequence, t.kind, t.time FROM deal_transitions t \
             JOIN deal_facts d ON d.tenant_id = t.tenant_id AND d.deal_id = t.deal_id \
             LEFT JOIN lead_facts l ON l.tenant_id = d.tenant_id AND l.lead_id = d.lead_id \
             WHERE t.tenant_id = $1 AND t.time >= $2 AND t.time < $3 AND t.kind IN ('won', 'lost', 'reopened')"
                )))
                .bind(tenant.as_str())
                .bind(window.start_time())
                .bind(window.end_time()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(Close {
                    deal: deal(row)?,
                    lead_source: row.try_get("lead_source")?,
                    sequence: row.try_get("sequence")?,
                    kind: TransitionKind::parse(&kind).ok_or_else(|| corrupt(format!("transition kind {kind}")))?,
                    time: row.try_get("time")?,
                })
            })
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

    async fn stage_visits(&self, tenant: &TenantId, window: Window) -> Result<Vec<StageVisit>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT e.deal_id, d.pipeline_id, d.owner, e.to_stage, e.time, n.kind AS exit_kind, \
                     n.to_stage AS exit_stage, n.time AS exit_time FROM deal_transitions e \
                     JOIN deal_facts d ON d.tenant_id = e.tenant_id AND d.deal_id = e.deal_id \
                     LEFT JOIN deal_transitions n ON n.tenant_id = e.tenant_id AND n.deal_id = e.deal_id \
                     AND n.sequence = e.sequence + 1 \
                     WHERE e.tenant_id = $1 AND e.time >= $2 AND e.time < $3 \
                     AND e.kind IN ('created', 'moved', 'reopened')",
                )
                .bind(tenant.as_str())
                .bind(window.start_time())
                .bind(window.end_time()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: Option<String> = row.try_get("exit_kind")?;
                let exit = match kind {
                    Some(kind) => Some((
                        TransitionKind::parse(&kind).ok_or_else(|| corrupt(format!("transition kind {kind}")))?,
                        row.try_get("exit_stage")?,
                        row.try_get("exit_time")?,
                    )),
                    None => None,
                };
                Ok(StageVisit {
                    deal: row.try_get("deal_id")?,
                    pipeline: row.try_get("pipeline_id")?,
                    owner: row.try_get("owner")?,
                    stage: row.try_get("to_stage")?,
                    entered: row.try_get("time")?,
                    exit,
                })
            })
            .collect()
    }

    async fn stages(&self, tenant: &TenantId) -> Result<Vec<StageFact>, StoreError> {
        let rows = self
            .read(
                tenant,
                sqlx::query(
                    "SELECT pipeline_id, stage_id, position, kind FROM stage_facts WHERE tenant_id = $1 \
                     ORDER BY pipeline_id, position",
                )
                .bind(tenant.as_str()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(StageFact {
                    pipeline: row.try_get("pipeline_id")?,
                    stage: row.try_get("stage_id")?,
                    position: row.try_get("position")?,
                    kind: StageKind::parse(&kind).ok_or_else(|| corrupt(format!("stage kind {kind}")))?,
                })
            })
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

    async fn create_goal(&self, tenant: &TenantId, goal: &Goal) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        sqlx::query("INSERT INTO goals (tenant_id, goal_id, create_time, body) VALUES ($1, $2, $3, $4::jsonb)")
            .bind(tenant.as_str())
            .bind(goal.id)
            .bind(goal.create_time)
            .bind(goal_body(goal)?)
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
        body.as_deref().map(goal_of).transpose()
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
        bodies.iter().map(|b| goal_of(b)).collect()
    }

    async fn watermarks(&self) -> Result<Vec<Watermark>, StoreError> {
        let rows = sqlx::query("SELECT source, sequence, commit_time FROM ingest_watermarks ORDER BY source")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Watermark {
                    source: row.try_get("source")?,
                    sequence: row.try_get("sequence")?,
                    commit_time: row.try_get("commit_time")?,
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
}
