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
}

/// How a deal's stage changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A deal's stay in a stage: its entry (a creation, move or reopening into the stage) and the
/// transition that ended it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct StageVisit {
    pub deal: Uuid,
    pub pipeline: Uuid,
    pub owner: String,
    /// The stage entered (None when the event did not say).
    pub stage: Option<Uuid>,
    pub entered: DateTime<Utc>,
    /// The next transition of the deal: its kind, the stage it led to and when.
    pub exit: Option<(TransitionKind, Option<Uuid>, DateTime<Utc>)>,
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
    /// A pipeline's stages, in board order (replacing what was known of the pipeline).
    Stages { pipeline: Uuid, stages: Vec<StageFact> },
    /// A deal or lead moved to another owner.
    Owner { record: Record, owner: String },
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

/// A close or reopening of a deal, with what a figure groups it by: the rows win rates and
/// cycle times are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Close {
    pub deal: DealFact,
    /// The source of the lead the deal came from (empty without one).
    pub lead_source: String,
    pub sequence: i64,
    pub kind: TransitionKind,
    pub time: DateTime<Utc>,
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
