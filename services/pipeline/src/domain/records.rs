//! The records: pipelines and stages, leads, deals with line items and stage transitions,
//! products, tasks, forecast submissions and quotas.

use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::money::MAX_AMOUNT_MINOR;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::Money;

/// Largest number of stages in a pipeline.
pub const MAX_STAGES: usize = 50;
/// Largest number of line items on a deal.
pub const MAX_LINE_ITEMS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub id: Uuid,
    pub name: String,
    pub probability: u8,
    pub kind: StageKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Checks the stage list: 2..=50 stages, unique names and ids, at least one open stage,
    /// exactly one won and one lost stage.
    pub fn check_stages(stages: &[Stage]) -> Result<(), String> {
        if stages.len() > MAX_STAGES {
            return Err(format!("at most {MAX_STAGES} stages"));
        }
        let count = |kind| stages.iter().filter(|s| s.kind == kind).count();
        if count(StageKind::Open) == 0 {
            return Err("needs at least one open stage".into());
        }
        if count(StageKind::Won) != 1 || count(StageKind::Lost) != 1 {
            return Err("needs exactly one won and one lost stage".into());
        }
        for (i, stage) in stages.iter().enumerate() {
            if stages[..i].iter().any(|s| s.name.eq_ignore_ascii_case(&stage.name)) {
                return Err(format!("stage name `{}` is used twice", stage.name));
            }
            if stages[..i].iter().any(|s| s.id == stage.id) {
                return Err(format!("stage id {} is used twice", stage.id));
            }
        }
        Ok(())
    }

    pub fn stage(&self, id: Uuid) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub fn first_open(&self) -> Option<&Stage> {
        self.stages.iter().find(|s| s.kind == StageKind::Open)
    }

    pub fn closing(&self, kind: StageKind) -> Option<&Stage> {
        self.stages.iter().find(|s| s.kind == kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    Working,
    Qualified,
    Disqualified,
    Converted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    pub title: String,
    pub contact: Option<Uuid>,
    pub company: Option<Uuid>,
    pub source: String,
    pub status: LeadStatus,
    pub disqualify_reason: String,
    pub score: u8,
    pub owner: String,
    pub converted_deal: Option<Uuid>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub convert_time: Option<DateTime<Utc>>,
    pub converted_by: String,
    /// The lead's id in the system it was imported from; only imported leads have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DealStatus {
    Open,
    Won,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastCategory {
    Pipeline,
    BestCase,
    Commit,
    Closed,
    Omitted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub product: Uuid,
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub discount_bps: u16,
}

impl LineItem {
    /// quantity x unit price less the discount, rounded down; None when it overflows.
    pub fn net_minor(&self) -> Option<i64> {
        let gross = i128::from(self.quantity).checked_mul(i128::from(self.unit_price.minor))?;
        let net = gross * i128::from(10_000 - self.discount_bps) / 10_000;
        i64::try_from(net).ok()
    }
}

/// The amount of a set of line items: their sum, all in one currency.
pub fn line_total(lines: &[LineItem]) -> Result<Option<Money>, String> {
    let Some(first) = lines.first() else {
        return Ok(None);
    };
    let mut total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.unit_price.currency != first.unit_price.currency {
            return Err(format!(
                "line {i} is in {}, the others in {}: a deal has one currency",
                line.unit_price.currency, first.unit_price.currency
            ));
        }
        total = line
            .net_minor()
            .and_then(|net| total.checked_add(net))
            .filter(|total| *total <= MAX_AMOUNT_MINOR)
            .ok_or_else(|| {
                format!("line {i} makes the amount larger than the maximum of {MAX_AMOUNT_MINOR} minor units")
            })?;
    }
    Ok(Some(Money::new(total, &first.unit_price.currency)?))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub name: String,
    pub pipeline: Uuid,
    pub stage: Uuid,
    pub status: DealStatus,
    pub amount: Money,
    pub close_date: Option<NaiveDate>,
    pub owner: String,
    pub contact: Option<Uuid>,
    pub company: Option<Uuid>,
    pub forecast: ForecastCategory,
    pub lines: Vec<LineItem>,
    pub close_reason: String,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub close_time: Option<DateTime<Utc>>,
    pub lead: Option<Uuid>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub stage_enter_time: DateTime<Utc>,
    /// Transitions recorded so far (the next one's sequence is this + 1).
    pub transitions: i64,
    /// The deal's id in the system it was imported from; only imported deals have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

    pub fn parse(raw: &str) -> Option<TransitionKind> {
        [
            TransitionKind::Created,
            TransitionKind::Moved,
            TransitionKind::Won,
            TransitionKind::Lost,
            TransitionKind::Reopened,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// One entry of a deal's append-only stage history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub deal: Uuid,
    pub seq: i64,
    pub kind: TransitionKind,
    pub from_stage: Option<Uuid>,
    pub to_stage: Uuid,
    pub from_stage_name: String,
    pub to_stage_name: String,
    pub amount: Money,
    pub actor: String,
    pub time: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub family: String,
    pub price: Money,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPriority {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub title: String,
    pub notes: String,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub due: Option<DateTime<Utc>>,
    pub assignee: String,
    pub priority: TaskPriority,
    pub status: TaskStatus,
    pub deal: Option<Uuid>,
    pub lead: Option<Uuid>,
    pub contact: Option<Uuid>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub complete_time: Option<DateTime<Utc>>,
    /// The due time a TaskDue was published for (so it is published once per due time).
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub due_notified: Option<DateTime<Utc>>,
}

impl Task {
    /// Whether a TaskDue is owed at `now`.
    pub fn due_event_owed(&self, now: DateTime<Utc>) -> bool {
        self.status == TaskStatus::Open && self.due.is_some_and(|due| due <= now) && self.due_notified != self.due
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    pub owner: String,
    pub period: String,
    pub amount: Money,
    pub category: ForecastCategory,
    pub submitted_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub owner: String,
    pub period: String,
    pub amount: Money,
    pub set_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: i64, price: i64, currency: &str, discount_bps: u16) -> LineItem {
        LineItem {
            product: Uuid::now_v7(),
            sku: "S".into(),
            name: "N".into(),
            quantity,
            unit_price: Money {
                minor: price,
                currency: currency.into(),
            },
            discount_bps,
        }
    }

    #[test]
    fn line_totals_round_down_and_refuse_mixed_currencies() {
        let total = line_total(&[line(3, 999, "EUR", 1000), line(1, 1, "EUR", 0)]).expect("total");
        assert_eq!(total.map(|m| m.minor), Some(2697 + 1));
        assert!(line_total(&[line(1, 1, "EUR", 0), line(1, 1, "USD", 0)]).is_err());
        assert!(line_total(&[line(i64::MAX, 2, "EUR", 0)]).is_err());
    }

    #[test]
    fn stage_rules() {
        let stage = |name: &str, kind| Stage {
            id: Uuid::now_v7(),
            name: name.into(),
            probability: 10,
            kind,
        };
        let good = vec![
            stage("Qualify", StageKind::Open),
            stage("Won", StageKind::Won),
            stage("Lost", StageKind::Lost),
        ];
        assert!(Pipeline::check_stages(&good).is_ok());
        assert!(Pipeline::check_stages(&good[..2]).is_err());
        let mut twice = good.clone();
        twice.push(stage("qualify", StageKind::Open));
        assert!(Pipeline::check_stages(&twice).is_err());
    }
}
