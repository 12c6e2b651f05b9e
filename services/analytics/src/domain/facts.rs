//! The facts the analytics service keeps of the other services' events: ids, amounts, times
//! and categories, never a name, an email or a phone number.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a deal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Open,
    Won,
    Lost,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Won => "won",
            Outcome::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(Outcome::Open),
            "won" => Some(Outcome::Won),
            "lost" => Some(Outcome::Lost),
            _ => None,
        }
    }
}

/// A deal as its latest event left it.
#[derive(Debug, Clone, PartialEq)]
pub struct DealFact {
    pub id: Uuid,
    pub pipeline: Uuid,
    pub owner: String,
    /// The lead it was converted from.
    pub lead: Option<Uuid>,
    pub amount_minor: i64,
    pub currency: String,
    pub create_time: DateTime<Utc>,
    pub outcome: Outcome,
    /// When it was closed (won or lost); None while open.
    pub close_time: Option<DateTime<Utc>>,
    /// The customer it is with: its company, else its contact (re-pointed by merges).
    pub customer: Option<Uuid>,
}

/// How a deal's stage changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransitionKind {
    Created,
    Moved,
    Won,
    Lost,
    Reopened,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Created => "created",
            TransitionKind::Moved => "moved",
            TransitionKind::Won => "won",
            TransitionKind::Lost => "lost",
            TransitionKind::Reopened => "reopened",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "created" => Some(TransitionKind::Created),
            "moved" => Some(TransitionKind::Moved),
            "won" => Some(TransitionKind::Won),
            "lost" => Some(TransitionKind::Lost),
            "reopened" => Some(TransitionKind::Reopened),
            _ => None,
        }
    }
}

/// One entry of a deal's stage history (append-only: numbered per deal).
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionFact {
    pub deal: Uuid,
    /// Its number in the deal's history.
    pub sequence: i64,
    pub kind: TransitionKind,
    pub from_stage: Option<Uuid>,
    pub to_stage: Option<Uuid>,
    pub time: DateTime<Utc>,
}

/// A deal's owner and amount from one of its events on (its history: what it was on a past
/// date is its version of that date).
#[derive(Debug, Clone, PartialEq)]
pub struct DealVersion {
    pub deal: Uuid,
    /// The deal's update time in the event.
    pub time: DateTime<Utc>,
    pub owner: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// What a stage is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Open => "open",
            StageKind::Won => "won",
            StageKind::Lost => "lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(StageKind::Open),
            "won" => Some(StageKind::Won),
            "lost" => Some(StageKind::Lost),
            _ => None,
        }
    }
}

/// A stage of a pipeline as the pipeline's latest event orders it (ids and order only, not
/// its name).
#[derive(Debug, Clone, PartialEq)]
pub struct StageFact {
    pub pipeline: Uuid,
    pub stage: Uuid,
    /// Its place on the board, from 0.
    pub position: i32,
    pub kind: StageKind,
}

/// What the stage funnel reads of a period, from one snapshot: the stays that began in it by
/// what ended them, the durations of the ended ones (by stage, or by owner), and every
/// pipeline's stages in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stays {
    pub cells: Vec<StayCell>,
    pub times: Vec<StayTimes>,
    pub stages: Vec<StageFact>,
}

/// Stays of deals in a stage that began in one UTC month, added up by what ended them.
#[derive(Debug, Clone, PartialEq)]
pub struct StayCell {
    /// The month of entry, `YYYY-MM`.
    pub month: String,
    pub pipeline: Uuid,
    /// The stage entered (None when the event did not say).
    pub stage: Option<Uuid>,
    /// The deals' owner now.
    pub owner: String,
    /// What ended the stays, if anything did: the deal's next transition and the stage it led
    /// to.
    pub end: Option<(TransitionKind, Option<Uuid>)>,
    pub stays: i64,
}

/// Ended stays that began in one UTC month, in a stage or of an owner's deals, counted in one
/// bucket of their durations (see `durations`).
#[derive(Debug, Clone, PartialEq)]
pub struct StayTimes {
    /// The month of entry, `YYYY-MM`.
    pub month: String,
    pub of: StaysOf,
    pub bucket: i32,
    pub stays: i64,
}

/// Whose stays a count of durations is.
#[derive(Debug, Clone, PartialEq)]
pub enum StaysOf {
    /// A stage's (None when the events did not say).
    Stage { pipeline: Uuid, stage: Option<Uuid> },
    /// The stays of an owner's deals, in every stage.
    Owner(String),
}

/// An open deal as it stood at an instant: its stage then, and its owner and amount then.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenDeal {
    pub deal: Uuid,
    pub pipeline: Uuid,
    pub stage: Option<Uuid>,
    pub owner: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// A lead as its latest event left it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadFact {
    pub id: Uuid,
    pub owner: String,
    /// Where it came from (a category such as `web` or `referral`).
    pub source: String,
    pub create_time: DateTime<Utc>,
    /// The deal it became, and when.
    pub converted: Option<(Uuid, DateTime<Utc>)>,
}

/// A salesperson's forecast submission for a period (submissions are never changed).
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastFact {
    pub id: Uuid,
    pub owner: String,
    /// The forecast period (`2026-Q4`, `2026-11`).
    pub period: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Its category (`commit`, `best_case`, `pipeline`, ...): the call is the `commit`.
    pub category: String,
    pub submit_time: DateTime<Utc>,
}

/// The category of the forecast that is a salesperson's call.
pub const CALL_CATEGORY: &str = "commit";

/// A salesperson's quota for a period, as last set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaFact {
    pub owner: String,
    pub period: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// A contact or a company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerKind {
    Contact,
    Company,
}

impl CustomerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerKind::Contact => "contact",
            CustomerKind::Company => "company",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "contact" => Some(CustomerKind::Contact),
            "company" => Some(CustomerKind::Company),
            _ => None,
        }
    }

    /// The collection of its resource names.
    pub fn collection(self) -> &'static str {
        match self {
            CustomerKind::Contact => "contacts",
            CustomerKind::Company => "companies",
        }
    }
}

/// What an event changed of a contact or company: None leaves a field as it was. Only
/// categories and whether a field is filled are kept, never a value that names a person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileChange {
    pub owner: Option<String>,
    /// The lifecycle stage (`customer`, `churned`, ...; empty for none).
    pub lifecycle: Option<String>,
    /// The first-touch channel (`web`, ...; empty for none).
    pub source: Option<String>,
    /// The contact's company (Some(None): none).
    pub company: Option<Option<Uuid>>,
    pub has_email: Option<bool>,
    pub has_phone: Option<bool>,
    /// Whether any channel's consent was answered.
    pub has_consent: Option<bool>,
}

impl ProfileChange {
    /// `later` applied on top of this change.
    pub fn then(&mut self, later: ProfileChange) {
        fn take<T>(field: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *field = later;
            }
        }
        take(&mut self.owner, later.owner);
        take(&mut self.lifecycle, later.lifecycle);
        take(&mut self.source, later.source);
        take(&mut self.company, later.company);
        take(&mut self.has_email, later.has_email);
        take(&mut self.has_phone, later.has_phone);
        take(&mut self.has_consent, later.has_consent);
    }
}

/// A change of a contact or company at `time` (its creation when `created`).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerChange {
    pub id: Uuid,
    pub kind: CustomerKind,
    pub time: DateTime<Utc>,
    pub created: bool,
    pub change: ProfileChange,
}

/// How a contact or company stopped being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    /// Its personal data was erased (the facts held nothing personal of it).
    Erased,
    /// Merged into the survivor.
    Merged(Uuid),
}

impl Gone {
    pub fn as_str(self) -> &'static str {
        match self {
            Gone::Deleted => "deleted",
            Gone::Erased => "erased",
            Gone::Merged(_) => "merged",
        }
    }
}

/// A contact's or company's state now.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFact {
    pub id: Uuid,
    pub kind: CustomerKind,
    pub owner: String,
    pub lifecycle: String,
    pub source: String,
    pub company: Option<Uuid>,
    pub has_email: bool,
    pub has_phone: bool,
    pub has_consent: bool,
    pub create_time: DateTime<Utc>,
    /// Its last change.
    pub update_time: DateTime<Utc>,
    pub gone: Option<Gone>,
}

/// A contact's or company's change, with its owner after it (its history: the freshness of a
/// portfolio on a past date is read from it).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerVersion {
    pub customer: Uuid,
    pub time: DateTime<Utc>,
    pub owner: String,
}

/// A move of a contact's lifecycle stage (append-only).
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleFact {
    pub customer: Uuid,
    pub time: DateTime<Utc>,
    pub from: String,
    pub to: String,
}

/// An interaction on a contact's timeline: its categories, time and length, never its words.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionFact {
    pub id: Uuid,
    pub contact: Uuid,
    pub company: Option<Uuid>,
    /// `call`, `email`, `meeting`, `note`, `support_ticket`, `chat`, `visit`.
    pub kind: String,
    /// `inbound` or `outbound` (empty when not said).
    pub direction: String,
    pub channel: String,
    pub time: DateTime<Utc>,
    pub duration_ms: i64,
    pub campaign: String,
    /// The user who had it.
    pub actor: String,
}

/// A record moved from one owner to another by a portfolio reassignment (both services move
/// records only so: the user moved from is leaving), from every feed.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferFact {
    /// The record's resource name (`contacts/{id}`, `deals/{id}`).
    pub resource: String,
    pub time: DateTime<Utc>,
    pub from: String,
    pub to: String,
}

/// A contact or company as it stood at an instant: its owner then and its last change before.
#[derive(Debug, Clone, PartialEq)]
pub struct LastChange {
    pub customer: Uuid,
    pub owner: String,
    pub time: DateTime<Utc>,
}

/// How many of an owner's contacts have each profile field filled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileCounts {
    pub owner: String,
    pub contacts: i64,
    pub email: i64,
    pub phone: i64,
    pub company: i64,
    pub consent: i64,
}

/// Records of a kind (`contacts`, `companies`, `deals`, `leads`) a user who has left still
/// owns.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftBehind {
    pub owner: String,
    /// Empty (with a count of 0) for a user who left and owns nothing.
    pub kind: String,
    pub count: i64,
}

/// A user's requests to an area on a day (a report adds to what earlier ones counted).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageFact {
    pub user: String,
    /// The gRPC service called (`crm.contact.v1.ContactService`).
    pub area: String,
    pub day: chrono::NaiveDate,
    pub requests: i64,
    pub changes: i64,
}

/// What one event asks of the facts.
#[derive(Debug, Clone, PartialEq)]
pub enum FactChange {
    /// The deal's latest state (inserted or replacing the earlier one).
    Deal(DealFact),
    /// An entry of a deal's history (kept once, whatever the replays).
    Transition(TransitionFact),
    /// The lead's latest state.
    Lead(LeadFact),
    /// The deal's owner and amount as of an event (kept once per deal and time).
    Version(DealVersion),
    /// The products of a deal's line items (replacing what was known of the deal's).
    Products { deal: Uuid, products: Vec<Uuid> },
    /// A pipeline's stages, in board order (replacing what was known of the pipeline).
    Stages { pipeline: Uuid, stages: Vec<StageFact> },
    /// A deal or lead moved to another owner at `time` (a deal's owner as of then is a version
    /// of it, with the amount it had).
    Owner {
        record: Record,
        owner: String,
        time: DateTime<Utc>,
    },
    /// A contact or company created or changed.
    Customer(CustomerChange),
    /// A contact or company deleted, erased or merged away at `time`; a merge re-points the
    /// facts of the merged records (deals, interactions, contacts' companies) to the survivor.
    CustomerGone {
        id: Uuid,
        kind: CustomerKind,
        time: DateTime<Utc>,
        gone: Gone,
    },
    /// A contact's lifecycle stage moved (kept once per contact and time).
    Lifecycle(LifecycleFact),
    /// An interaction logged (kept once).
    Interaction(InteractionFact),
    /// A record moved to another owner (kept once per record and time).
    Transfer(TransferFact),
    /// Requests counted since the last report (added to the day's).
    Usage(UsageFact),
    /// A forecast submission (kept once, whatever the replays).
    Forecast(ForecastFact),
    /// A quota set (replacing the owner's quota of that period).
    Quota(QuotaFact),
}

/// A record whose owner can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Deal(Uuid),
    Lead(Uuid),
}

/// A close of a deal as a period's figures count it: the deal's last close in the period (a
/// transition to a won or lost stage) that no reopening later in the period undid, with the
/// deal as it stands now. The stores keep these and hand out their sums ([`CloseCell`],
/// [`CycleGroup`]); tests spell out what they expect with them.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    pub deal: Uuid,
    /// Won or lost.
    pub outcome: Outcome,
    pub time: DateTime<Utc>,
    pub owner: String,
    pub pipeline: Uuid,
    /// The source of the lead the deal came from (empty without one).
    pub lead_source: String,
    pub amount_minor: i64,
    pub currency: String,
    pub create_time: DateTime<Utc>,
}

/// A period's closes (as [`Close`] counts them) added up per owner, pipeline, lead source,
/// month of the close, outcome and currency: what the win rate, the cycle days' mean, pipeline
/// velocity, forecast accuracy and quota attainment are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseCell {
    pub owner: String,
    pub pipeline: Uuid,
    pub lead_source: String,
    /// `YYYY-MM`.
    pub month: String,
    pub outcome: Outcome,
    pub currency: String,
    pub deals: i64,
    /// The deals' amounts added up.
    pub amount_minor: i128,
    /// Their cycles (close time - creation time, in whole milliseconds) added up.
    pub cycle_ms: i128,
}

/// What cycle days read of a period, from one snapshot: the closes it counts, and the cycles
/// of its won deals per group and bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cycles {
    pub cells: Vec<CloseCell>,
    pub times: Vec<CycleTimes>,
}

/// Won deals of a group (as the metric names it: an owner, `pipelines/{id}`, a lead source,
/// `YYYY-MM`, or empty for the tenant) whose cycles fall in one bucket (see `durations`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CycleTimes {
    pub group: String,
    pub bucket: i32,
    pub deals: i64,
}

impl CloseCell {
    /// The amount, saturated to the range of an amount.
    pub fn amount(&self) -> i64 {
        i64::try_from(self.amount_minor).unwrap_or(if self.amount_minor < 0 { i64::MIN } else { i64::MAX })
    }
}

/// `closes` added up into cells, the way the stores add them up (a reference for tests).
#[cfg(test)]
pub(crate) fn cells_of(closes: &[Close]) -> Vec<CloseCell> {
    let mut cells: Vec<CloseCell> = Vec::new();
    for close in closes {
        let month = close.time.format("%Y-%m").to_string();
        let cycle = i128::from((close.time - close.create_time).num_milliseconds());
        let same = |c: &&mut CloseCell| {
            c.owner == close.owner
                && c.pipeline == close.pipeline
                && c.lead_source == close.lead_source
                && c.month == month
                && c.outcome == close.outcome
                && c.currency == close.currency
        };
        match cells.iter_mut().find(same) {
            Some(cell) => {
                cell.deals += 1;
                cell.amount_minor += i128::from(close.amount_minor);
                cell.cycle_ms += cycle;
            }
            None => cells.push(CloseCell {
                owner: close.owner.clone(),
                pipeline: close.pipeline,
                lead_source: close.lead_source.clone(),
                month,
                outcome: close.outcome,
                currency: close.currency.clone(),
                deals: 1,
                amount_minor: i128::from(close.amount_minor),
                cycle_ms: cycle,
            }),
        }
    }
    cells
}

impl TransitionKind {
    /// Whether the transition closes or reopens a deal (what a deal's closes depend on).
    pub fn closes_or_reopens(self) -> bool {
        matches!(
            self,
            TransitionKind::Won | TransitionKind::Lost | TransitionKind::Reopened
        )
    }
}

/// A deal with the source of its lead.
#[derive(Debug, Clone, PartialEq)]
pub struct DealRow {
    pub deal: DealFact,
    pub lead_source: String,
}

/// A lead with the outcome of the deal it became, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadRow {
    pub lead: LeadFact,
    pub deal_outcome: Option<Outcome>,
}

/// How far a followed feed has been applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    /// The producing service (`crm.pipeline.v1`).
    pub source: String,
    pub sequence: i64,
    /// When the producer committed that event.
    pub commit_time: DateTime<Utc>,
    /// The consumer that applied it: the feed's, or one partition's (`analytics<-pipeline@3/8`).
    #[serde(default)]
    pub consumer: String,
    /// The events that consumer applied, counted once each.
    #[serde(default)]
    pub events: i64,
}

/// Events of one type ingest skipped (a type it does not know).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub source: String,
    pub kind: String,
    pub count: i64,
}

/// An event ingest could not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub source: String,
    pub sequence: i64,
    pub kind: String,
    pub reason: String,
    pub park_time: DateTime<Utc>,
}
