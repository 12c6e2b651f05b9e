//! Storage of the analytics service: one trait, a PostgreSQL and an SQLite implementation, and
//! one conformance suite both must pass.
//!
//! Ingest writes a batch of events' fact changes, the skipped and parked events, the feed's
//! watermark and the consumer's checkpoint in one transaction (exactly-once effect); in the
//! same transaction it keeps the deals' closes and their sums per day (`close_cells`, see the
//! closes migration), and their stays in stages with sums per month (see the stays migration),
//! which a period's deal figures read instead of its transitions. Queries hand rows of facts,
//! or those sums, to the formulas in `domain::metrics`, which are the same for both. Medians
//! are read from durations counted per bucket (`domain::durations`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Utc};
use crm_platform::outbox::{NewEvent, Outbox};
use crm_platform::{ApiError, TenantId};
use sqlx::migrate::Migrator;

use uuid::Uuid;

use crate::domain::derived::{Changes, DerivedState, QuietDeal};
use crate::domain::{
    CloseCell, CustomerChange, CustomerKind, CycleTimes, Cycles, DealFact, DealRow, DealVersion, ExchangeRate,
    FactChange, ForecastFact, Goal, Gone, Grouping, InteractionFact, LastChange, LeadFact, LeadRow, LeftBehind,
    LifecycleFact, OpenDeal, Outcome, Parked, ProfileCounts, QuotaFact, Record, Settings, Skipped, StageFact, StayCell,
    StayTimes, Stays, StaysOf, TransferFact, TransitionFact, TransitionKind, UsageFact, Watermark, Window, WonDeal,
};

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgAnalyticsStore;
pub use sqlite::SqliteAnalyticsStore;

/// Migrations of each backend, embedded in the binary.
pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| {
    crm_platform::outbox::migrations::postgres(&sqlx::migrate!("./migrations/postgres"), POSTGRES_APP_ROLE)
});
pub static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| crm_platform::outbox::migrations::sqlite(&sqlx::migrate!("./migrations/sqlite")));

/// The PostgreSQL role the service serves as; row-level security applies to it.
pub const POSTGRES_APP_ROLE: &str = "crm_analytics_app";

/// Largest number of goals a list answers.
pub const GOALS_LISTED: i64 = 1000;

/// A stored document of `value`.
pub(crate) fn document<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A value from its stored document.
pub(crate) fn from_document<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(corrupt)
}

/// Largest number of exchange rates a tenant keeps.
pub const RATES_LISTED: i64 = 10_000;

/// Largest number of parked events a status answer lists.
pub const PARKED_LISTED: i64 = 100;

/// Which interactions a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interactions {
    /// Those of a campaign.
    OfCampaigns,
    /// Those of a kind (`support_ticket`).
    OfKind(&'static str),
}

/// What a batch of a feed's events comes to, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// The producing service.
    pub source: String,
    /// The fact changes, in event order, each under its event's tenant.
    pub changes: Vec<(TenantId, FactChange)>,
    /// Events of a type ingest does not know: (tenant, type).
    pub skipped: Vec<(TenantId, String)>,
    /// Events that could not be decoded: (tenant as given, the parked event).
    pub parked: Vec<(String, Parked)>,
    /// The last event's sequence and commit time: the feed's new watermark.
    pub last: Option<(u64, DateTime<Utc>)>,
    /// How many events the batch holds (applied, ignored, skipped or parked).
    pub events: i64,
}

/// A batch's fact changes for one tenant, folded so that each can be written as one
/// set-based statement per table: each deal, lead and quota once, in its last state (a later
/// event carries the whole record), every transition and forecast (kept once by the table), and
/// the owner changes of records the batch does not otherwise hold.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    pub deals: Vec<DealFact>,
    pub transitions: Vec<TransitionFact>,
    pub leads: Vec<LeadFact>,
    pub forecasts: Vec<ForecastFact>,
    pub quotas: Vec<QuotaFact>,
    /// Each deal's products, as its last event lists them.
    pub products: Vec<(Uuid, Vec<Uuid>)>,
    /// Each deal's versions, one per (deal, time): the last event's.
    pub versions: Vec<DealVersion>,
    /// The stages of each pipeline the batch orders, as its last event orders them.
    pub stages: Vec<(Uuid, Vec<StageFact>)>,
    /// Each contact's and company's changes, folded into one (the last time; created when
    /// any was a creation).
    pub customers: Vec<CustomerChange>,
    /// Each change's version: (customer, time, its owner after it when the batch says).
    pub customer_versions: Vec<(Uuid, DateTime<Utc>, Option<String>)>,
    /// Contacts and companies gone, in order.
    pub gone: Vec<(Uuid, CustomerKind, DateTime<Utc>, Gone)>,
    /// Lifecycle moves, one per (contact, time).
    pub lifecycles: Vec<LifecycleFact>,
    /// Interactions, one per id.
    pub interactions: Vec<InteractionFact>,
    /// Transfers, one per (record, time).
    pub transfers: Vec<TransferFact>,
    /// Usage, one per (user, area, day): the batch's reports added up.
    pub usage: Vec<UsageFact>,
    /// (record, new owner) of records not among `deals` and `leads`.
    pub owners: Vec<(Record, String)>,
    /// (deal, time, new owner) of each deal's owner change: a version of the deal as of then.
    pub owner_versions: Vec<(Uuid, DateTime<Utc>, String)>,
    /// What the changes make ingest compute again.
    pub refresh: Refresh,
}

/// What a tenant's changes make ingest compute again from the facts, after applying them:
/// - the closes (and their cells) of the deals changed, closed, reopened or given to another
///   owner, and of the deals of the leads changed (a lead's source is part of its deals'
///   closes);
/// - the stays in stages (and their sums) of the deals changed, given to another owner or with
///   a new transition.
#[derive(Debug, Default)]
pub(crate) struct Refresh {
    pub closes: BTreeSet<Uuid>,
    pub leads: BTreeSet<Uuid>,
    pub stays: BTreeSet<Uuid>,
}

impl Refresh {
    pub(crate) fn add(&mut self, change: &FactChange) {
        match change {
            FactChange::Deal(deal) => {
                self.closes.insert(deal.id);
                self.stays.insert(deal.id);
            }
            FactChange::Transition(t) => {
                if t.kind.closes_or_reopens() {
                    self.closes.insert(t.deal);
                }
                self.stays.insert(t.deal);
            }
            FactChange::Owner {
                record: Record::Deal(id),
                ..
            } => {
                self.closes.insert(*id);
                self.stays.insert(*id);
            }
            FactChange::Lead(lead) => {
                self.leads.insert(lead.id);
            }
            _ => {}
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.closes.is_empty() && self.leads.is_empty() && self.stays.is_empty()
    }
}

impl Folded {
    /// The changes of `batch`, by tenant in the order each tenant first appears.
    pub(crate) fn by_tenant(batch: &IngestBatch) -> Vec<(TenantId, Folded)> {
        let mut tenants: Vec<(TenantId, Folded)> = Vec::new();
        for (tenant, change) in &batch.changes {
            let index = match tenants.iter().position(|(t, _)| t == tenant) {
                Some(index) => index,
                None => {
                    tenants.push((tenant.clone(), Folded::default()));
                    tenants.len() - 1
                }
            };
            tenants[index].1.add(change.clone());
        }
        tenants
    }

    fn add(&mut self, change: FactChange) {
        self.refresh.add(&change);
        match change {
            FactChange::Deal(deal) => {
                self.owners.retain(|(r, _)| *r != Record::Deal(deal.id));
                match self.deals.iter_mut().find(|d| d.id == deal.id) {
                    Some(known) => *known = deal,
                    None => self.deals.push(deal),
                }
            }
            FactChange::Lead(lead) => {
                self.owners.retain(|(r, _)| *r != Record::Lead(lead.id));
                match self.leads.iter_mut().find(|l| l.id == lead.id) {
                    Some(known) => *known = lead,
                    None => self.leads.push(lead),
                }
            }
            FactChange::Transition(t) => self.transitions.push(t),
            FactChange::Products { deal, products } => replace(&mut self.products, (deal, products), |a, b| a.0 == b.0),
            FactChange::Version(v) => replace(&mut self.versions, v, |a, b| a.deal == b.deal && a.time == b.time),
            FactChange::Stages { pipeline, stages } => replace(&mut self.stages, (pipeline, stages), |a, b| a.0 == b.0),
            FactChange::Forecast(f) => self.forecasts.push(f),
            FactChange::Quota(q) => replace(&mut self.quotas, q, |a, b| a.owner == b.owner && a.period == b.period),
            FactChange::Customer(change) => {
                let owner = match self.customers.iter_mut().find(|c| c.id == change.id) {
                    Some(known) => {
                        known.time = change.time;
                        known.created |= change.created;
                        known.change.then(change.change);
                        known.change.owner.clone()
                    }
                    None => {
                        let owner = change.change.owner.clone();
                        self.customers.push(change.clone());
                        owner
                    }
                };
                replace(&mut self.customer_versions, (change.id, change.time, owner), |a, b| {
                    a.0 == b.0 && a.1 == b.1
                });
            }
            FactChange::CustomerGone { id, kind, time, gone } => self.gone.push((id, kind, time, gone)),
            FactChange::Lifecycle(l) => replace(&mut self.lifecycles, l, |a, b| {
                a.customer == b.customer && a.time == b.time
            }),
            FactChange::Interaction(i) => replace(&mut self.interactions, i, |a, b| a.id == b.id),
            FactChange::Transfer(t) => replace(&mut self.transfers, t, |a, b| {
                a.resource == b.resource && a.time == b.time
            }),
            FactChange::Usage(u) => {
                match self
                    .usage
                    .iter_mut()
                    .find(|k| k.user == u.user && k.area == u.area && k.day == u.day)
                {
                    Some(known) => {
                        known.requests = known.requests.saturating_add(u.requests);
                        known.changes = known.changes.saturating_add(u.changes);
                    }
                    None => self.usage.push(u),
                }
            }
            FactChange::Owner { record, owner, time } => {
                if let Record::Deal(deal) = record {
                    replace(&mut self.owner_versions, (deal, time, owner.clone()), |a, b| {
                        a.0 == b.0 && a.1 == b.1
                    });
                }
                let held = match record {
                    Record::Deal(id) => self.deals.iter_mut().find(|d| d.id == id).map(|d| &mut d.owner),
                    Record::Lead(id) => self.leads.iter_mut().find(|l| l.id == id).map(|l| &mut l.owner),
                };
                match held {
                    Some(held) => *held = owner,
                    None => {
                        self.owners.retain(|(r, _)| *r != record);
                        self.owners.push((record, owner));
                    }
                }
            }
        }
    }
}

/// Puts `item` in `items`, in place of the one `same` says it replaces.
fn replace<T>(items: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
    match items.iter_mut().find(|known| same(known, &item)) {
        Some(known) => *known = item,
        None => items.push(item),
    }
}

/// The unit of the whole part of a cell's amounts (minor units) and of its cycles (ms): the
/// cells keep each sum as a whole part and a rest, so that no sum can overflow.
pub(crate) const AMOUNT_UNIT: i64 = 1_000_000_000;
pub(crate) const CYCLE_UNIT: i64 = 86_400_000;

/// A sum kept as `whole` parts of `unit` and a `rest`.
pub(crate) fn whole_and_rest(whole: i64, rest: i64, unit: i64) -> i128 {
    i128::from(whole) * i128::from(unit) + i128::from(rest)
}

/// A row of cycle times (the same text and integer columns on both backends): `grp`,
/// `bucket`, `deals`.
pub(crate) fn cycle_times<R: sqlx::Row>(row: &R) -> Result<CycleTimes, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let bucket: i64 = row.try_get("bucket")?;
    Ok(CycleTimes {
        group: row.try_get("grp")?,
        bucket: i32::try_from(bucket).map_err(|_| corrupt(format!("duration bucket {bucket}")))?,
        deals: row.try_get("deals")?,
    })
}

/// The SQL of the group of a close (or of a row of cycle times) under `grouping`, as the
/// metric names it; `month` is the SQL of its month, `YYYY-MM`.
pub(crate) fn close_group_sql(grouping: Grouping, month: &str) -> String {
    match grouping {
        Grouping::Owner => "owner".into(),
        Grouping::Pipeline => "'pipelines/' || pipeline_id".into(),
        Grouping::LeadSource => "lead_source".into(),
        Grouping::Month => month.into(),
        Grouping::Tenant | Grouping::Stage | Grouping::Campaign => "''".into(),
    }
}

/// A window as its whole UTC months (`months`: the first day of the first, and of the month
/// after the last; empty when it has none) and the instants of its other days (`days`: before
/// and after the months). The funnel reads its whole months from the sums ingest keeps, and its
/// other days from the stays themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MonthSplit {
    pub months: (NaiveDate, NaiveDate),
    pub days: [(DateTime<Utc>, DateTime<Utc>); 2],
}

impl MonthSplit {
    pub(crate) fn of(window: Window) -> MonthSplit {
        let month_of = |day: NaiveDate| day.with_day(1).unwrap_or(day);
        let first = if window.start.day() == 1 {
            window.start
        } else {
            month_of(window.start)
                .checked_add_months(Months::new(1))
                .unwrap_or(window.end)
        };
        let last = month_of(window.end);
        let instant = |day: NaiveDate| day.and_time(NaiveTime::MIN).and_utc();
        let (start, end) = (window.start_time(), window.end_time());
        if first < last {
            MonthSplit {
                months: (first, last),
                days: [(start, instant(first)), (instant(last), end)],
            }
        } else {
            MonthSplit {
                months: (window.start, window.start),
                days: [(start, end), (end, end)],
            }
        }
    }
}

/// What the funnel under a grouping reads of the stays' sums: the columns of the ends and of the
/// durations (each an SQL expression of a stay and the name it is read by), the table of the
/// durations, and what it splits by besides the stage. What it does not split by (the owners,
/// the months) is added up in the database.
pub(crate) struct StaysRead {
    pub ends: [(&'static str, &'static str); 5],
    pub times: Vec<(&'static str, &'static str)>,
    pub times_table: &'static str,
    pub by_owner: bool,
    pub by_month: bool,
}

impl StaysRead {
    pub(crate) fn of(grouping: Grouping) -> StaysRead {
        let by_owner = grouping == Grouping::Owner;
        let (owner, times, times_table): (&str, &[&'static str], &str) = if by_owner {
            ("owner", &["owner", "bucket"], "owner_stay_times")
        } else {
            ("''", &["pipeline_id", "stage_id", "bucket"], "stay_times")
        };
        StaysRead {
            ends: [
                ("pipeline_id", "pipeline_id"),
                ("stage_id", "stage_id"),
                (owner, "owner"),
                ("end_kind", "end_kind"),
                ("end_stage", "end_stage"),
            ],
            times: times.iter().map(|c| (*c, *c)).collect(),
            times_table,
            by_owner,
            by_month: grouping == Grouping::Month,
        }
    }
}

/// An id stored as text (the nil id: none).
fn stored_id(raw: &str) -> Result<Option<Uuid>, StoreError> {
    let id = Uuid::parse_str(raw).map_err(|_| corrupt(format!("id {raw}")))?;
    Ok((!id.is_nil()).then_some(id))
}

/// A row of stays' sums (the same text and integer columns on both backends): `month`,
/// `pipeline_id`, `stage_id`, `owner`, `end_kind`, `end_stage`, `stays`.
pub(crate) fn stay_cell<R: sqlx::Row>(row: &R) -> Result<StayCell, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let kind: String = row.try_get("end_kind")?;
    let end = if kind.is_empty() {
        None
    } else {
        let kind = TransitionKind::parse(&kind).ok_or_else(|| corrupt(format!("transition kind {kind}")))?;
        Some((kind, stored_id(&row.try_get::<String, _>("end_stage")?)?))
    };
    Ok(StayCell {
        month: row.try_get("month")?,
        pipeline: stored_id(&row.try_get::<String, _>("pipeline_id")?)?.unwrap_or_default(),
        stage: stored_id(&row.try_get::<String, _>("stage_id")?)?,
        owner: row.try_get("owner")?,
        end,
        stays: row.try_get("stays")?,
    })
}

/// A row of durations' counts (the same text and integer columns on both backends): `month`,
/// `pipeline_id` and `stage_id` (`owner` when `by_owner`), `bucket`, `stays`.
pub(crate) fn stay_times<R: sqlx::Row>(row: &R, by_owner: bool) -> Result<StayTimes, StoreError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let of = if by_owner {
        StaysOf::Owner(row.try_get("owner")?)
    } else {
        StaysOf::Stage {
            pipeline: stored_id(&row.try_get::<String, _>("pipeline_id")?)?.unwrap_or_default(),
            stage: stored_id(&row.try_get::<String, _>("stage_id")?)?,
        }
    };
    let bucket: i64 = row.try_get("bucket")?;
    Ok(StayTimes {
        month: row.try_get("month")?,
        of,
        bucket: i32::try_from(bucket).map_err(|_| corrupt(format!("duration bucket {bucket}")))?,
        stays: row.try_get("stays")?,
    })
}

/// The outcome of a stored close.
pub(crate) fn outcome(raw: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(raw).ok_or_else(|| corrupt(format!("outcome {raw}")))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        ApiError::internal(&err)
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

#[async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// The last sequence `consumer` applied (0 before the first).
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError>;

    /// Applies `batch` and moves `consumer`'s checkpoint from `previous` to the batch's last
    /// sequence, in one transaction. False, with nothing applied, when the checkpoint was no
    /// longer `previous`.
    async fn ingest(&self, consumer: &str, previous: u64, batch: &IngestBatch) -> Result<bool, StoreError>;

    /// The closes `window` counts (each deal's last close in it that no reopening in it undid,
    /// with the deal as it stands now), added up per owner, pipeline, lead source, month,
    /// outcome and currency.
    async fn close_cells(&self, tenant: &TenantId, window: Window) -> Result<Vec<CloseCell>, StoreError>;

    /// The closes `window` counts (as `close_cells`), and its won deals per group of `grouping`
    /// (by the month of the close) and bucket of their cycles, from one snapshot: whole months
    /// from the cycle times ingest keeps, other days (and the closes a reopening superseded
    /// after the window) from the closes.
    async fn cycles(&self, tenant: &TenantId, window: Window, grouping: Grouping) -> Result<Cycles, StoreError>;

    /// The deals created in `window`.
    async fn deals_created(&self, tenant: &TenantId, window: Window) -> Result<Vec<DealRow>, StoreError>;

    /// The leads created in `window`, with the outcome of the deal each became.
    async fn leads_created(&self, tenant: &TenantId, window: Window) -> Result<Vec<LeadRow>, StoreError>;

    /// The forecast submissions for `period` (`2026-Q4`).
    async fn forecasts(&self, tenant: &TenantId, period: &str) -> Result<Vec<ForecastFact>, StoreError>;

    /// The quotas of `period`.
    async fn quotas(&self, tenant: &TenantId, period: &str) -> Result<Vec<QuotaFact>, StoreError>;

    /// The stays in a stage that began in `window` (a creation, move or reopening into the
    /// stage) added up per stage and the transition that ended them (whenever that came), and
    /// per what `grouping` needs besides: the month of entry (`YYYY-MM`, by month; else empty,
    /// every month together) and the deals' owner (by owner; else empty, every owner
    /// together); the ended ones counted per bucket of their durations and stage (by owner:
    /// owner instead), and per month by month; and the stages of every pipeline: from one
    /// snapshot.
    async fn stays(&self, tenant: &TenantId, window: Window, grouping: Grouping) -> Result<Stays, StoreError>;

    /// The stages of every pipeline, as the latest events order them.
    async fn stages(&self, tenant: &TenantId) -> Result<Vec<StageFact>, StoreError>;

    /// The deals open at `instant` (their last transition before it created, moved or reopened
    /// them), each in its stage then, with its owner and amount then.
    async fn open_at(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<OpenDeal>, StoreError>;

    /// The interactions from `start` to `end` that `which` selects.
    async fn interactions(
        &self,
        tenant: &TenantId,
        which: Interactions,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<InteractionFact>, StoreError>;

    /// Each contact and company there at `instant` (created before it and not gone before it),
    /// with its owner and time of its last change before it.
    async fn last_changes(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LastChange>, StoreError>;

    /// How many of each owner's contacts (not gone, created before `instant`) have each
    /// profile field filled, as they are now.
    async fn profile_counts(&self, tenant: &TenantId, instant: DateTime<Utc>)
    -> Result<Vec<ProfileCounts>, StoreError>;

    /// The portfolio transfers in `window`.
    async fn transfers(&self, tenant: &TenantId, window: Window) -> Result<Vec<TransferFact>, StoreError>;

    /// The records owned now by users who have left (whose last transfer before `instant` moved
    /// records away from them), per user and kind of record.
    async fn left_behind(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LeftBehind>, StoreError>;

    /// The won deals with a customer, closed before `instant`.
    async fn customer_wins(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<DealFact>, StoreError>;

    /// The lifecycle moves before `instant`.
    async fn lifecycles(&self, tenant: &TenantId, instant: DateTime<Utc>) -> Result<Vec<LifecycleFact>, StoreError>;

    /// The tenant's settings, if an admin ever set them.
    async fn settings(&self, tenant: &TenantId) -> Result<Option<Settings>, StoreError>;

    /// Stores the tenant's settings.
    async fn put_settings(&self, tenant: &TenantId, settings: &Settings) -> Result<(), StoreError>;

    /// The tenant's exchange rates, by currency and month (at most [`RATES_LISTED`]).
    async fn exchange_rates(&self, tenant: &TenantId) -> Result<Vec<ExchangeRate>, StoreError>;

    /// Stores a rate (replacing the currency's rate of that month).
    async fn put_exchange_rate(&self, tenant: &TenantId, rate: &ExchangeRate) -> Result<(), StoreError>;

    /// Every won deal of a customer, in no order.
    async fn won_deals(&self, tenant: &TenantId) -> Result<Vec<WonDeal>, StoreError>;

    /// Each customer's products: (customer, product) of its won deals' line items.
    async fn customer_products(&self, tenant: &TenantId) -> Result<Vec<(Uuid, Uuid)>, StoreError>;

    /// The usage of the days from `from` (included) to `to` (excluded).
    async fn usage(&self, tenant: &TenantId, from: NaiveDate, to: NaiveDate) -> Result<Vec<UsageFact>, StoreError>;

    /// Each user's first day of use before `to`.
    async fn first_use(&self, tenant: &TenantId, to: NaiveDate) -> Result<Vec<(String, NaiveDate)>, StoreError>;

    /// The contacts and companies `owner` owns now (not gone).
    async fn owned_customers(&self, tenant: &TenantId, owner: &str) -> Result<Vec<Uuid>, StoreError>;

    /// Who owns a contact or company now (None: not known, or gone).
    async fn customer_owner(&self, tenant: &TenantId, customer: Uuid) -> Result<Option<String>, StoreError>;

    /// Stores a goal (its baseline frozen: goals are never changed).
    async fn create_goal(&self, tenant: &TenantId, goal: &Goal) -> Result<(), StoreError>;

    /// A goal of the tenant.
    async fn goal(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Goal>, StoreError>;

    /// The tenant's goals, newest first, at most `limit`.
    async fn goals(&self, tenant: &TenantId, limit: i64) -> Result<Vec<Goal>, StoreError>;

    /// How far each consumer (a followed feed, or a partition of it) has applied its feed.
    async fn watermarks(&self) -> Result<Vec<Watermark>, StoreError>;

    /// The tenant's skipped events by type, and its parked events, newest first (at most
    /// [`PARKED_LISTED`]).
    async fn ingest_problems(&self, tenant: &TenantId) -> Result<(Vec<Skipped>, Vec<Parked>), StoreError>;

    /// Every tenant ingest has applied events of.
    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError>;

    /// What the service last published of the tenant's derived state.
    async fn derived(&self, tenant: &TenantId) -> Result<DerivedState, StoreError>;

    /// The tenant's open deals whose last activity is before `before`.
    async fn quiet_deals(&self, tenant: &TenantId, before: DateTime<Utc>) -> Result<Vec<QuietDeal>, StoreError>;

    /// Each live customer's owner.
    async fn customer_owners(&self, tenant: &TenantId) -> Result<Vec<(Uuid, String)>, StoreError>;

    /// Records `changes` as published, with their `events` in the outbox, in one transaction.
    async fn publish_derived(
        &self,
        tenant: &TenantId,
        changes: &Changes,
        events: &[NewEvent],
    ) -> Result<(), StoreError>;

    /// Publishes the service's own usage `reports` on its feed and adds them to its usage
    /// facts, in one transaction (it does not follow its own feed).
    async fn publish_usage(&self, reports: &[UsageReport]) -> Result<(), StoreError>;

    /// The outbox of the service's own feed.
    fn outbox(&self) -> std::sync::Arc<dyn Outbox>;
}

/// A tenant's usage of the analytics service itself: the counts, and the events that report
/// them.
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub tenant: TenantId,
    pub usage: Vec<UsageFact>,
    pub events: Vec<NewEvent>,
}
