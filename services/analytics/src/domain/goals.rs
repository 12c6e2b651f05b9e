//! Goals: a target on a metric, measured against a baseline frozen when the goal was set, and
//! where the goal stands now.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Window;
use super::facts::Watermark;
use super::metrics::{MetricId, MetricInfo};

/// How a goal's target is stated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Target {
    /// The value the metric should reach.
    Absolute(f64),
    /// The change against the baseline, as a fraction (-0.25: reduce by 25%).
    Relative(f64),
}

impl Target {
    /// The value the target asks of a metric whose baseline is `baseline`.
    pub fn value(self, baseline: Option<f64>) -> Option<f64> {
        match self {
            Target::Absolute(v) => Some(v),
            Target::Relative(r) => baseline.map(|b| b * (1.0 + r)).filter(|v| v.is_finite()),
        }
    }

    /// Why no progress toward the target can be measured from `baseline`, if so: a relative
    /// target of a baseline with no value or of 0, or a target the baseline already is.
    pub fn unreachable_from(self, baseline: Option<f64>) -> Option<String> {
        match (self, baseline) {
            (Target::Relative(_), None | Some(0.0)) => Some(
                "a relative target needs a baseline value other than 0, and the baseline period has none: \
                 give an absolute target"
                    .to_owned(),
            ),
            (target, Some(b)) if target.value(Some(b)).is_none_or(|v| v == b) => Some(format!(
                "is the baseline's value ({b}) already: no progress could be measured"
            )),
            _ => None,
        }
    }
}

/// What a manager asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalSpec {
    pub display_name: String,
    /// The metric's key (`win-rate`).
    pub metric: String,
    /// The salesperson it is about; None for the tenant.
    pub owner: Option<String>,
    /// The baseline period, first day and the day after the last.
    pub baseline_start: NaiveDate,
    pub baseline_end: NaiveDate,
    pub target: Target,
    pub due: NaiveDate,
}

/// A figure frozen when the goal was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub value: Option<f64>,
    pub count: i64,
    pub formula_version: i32,
    /// The data it was computed from.
    pub watermarks: Vec<Watermark>,
    pub freeze_time: DateTime<Utc>,
}

/// A goal as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub id: Uuid,
    pub spec: GoalSpec,
    pub baseline: Baseline,
    pub created_by: String,
    pub create_time: DateTime<Utc>,
}

/// Where a goal stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub window: Window,
    pub value: Option<f64>,
    pub count: i64,
    pub target_value: Option<f64>,
    pub change: Option<f64>,
    pub share_reached: Option<f64>,
    pub share_elapsed: f64,
    pub on_track: bool,
}

impl GoalSpec {
    pub fn metric(&self) -> Result<MetricId, String> {
        MetricId::parse(&self.metric)
    }

    pub fn baseline_window(&self) -> Window {
        Window {
            start: self.baseline_start,
            end: self.baseline_end,
        }
    }

    /// The rules a goal keeps when it is set `today`: each broken one as (field, reason).
    pub fn check(&self, info: &MetricInfo, today: NaiveDate) -> Vec<(&'static str, String)> {
        rules(
            Some(info),
            Some(self.baseline_end),
            Some(self.due),
            Some(self.target),
            today,
        )
    }
}

impl Goal {
    /// The window progress is measured over on `today`: as long as the baseline's, ending
    /// with `today`.
    pub fn current_window(&self, today: NaiveDate) -> Window {
        let days = self.spec.baseline_end - self.spec.baseline_start;
        let end = today.succ_opt().unwrap_or(today);
        Window { start: end - days, end }
    }

    /// Where the goal stands with the metric at `value` (over `count` records) at `now`.
    pub fn progress(&self, value: Option<f64>, count: i64, now: DateTime<Utc>) -> Progress {
        let baseline = self.baseline.value;
        let target_value = self.spec.target.value(baseline);
        let change = value.zip(baseline).map(|(v, b)| v - b);
        let share_reached = match (change, target_value, baseline) {
            (Some(change), Some(target), Some(b)) if target != b => {
                Some(change / (target - b)).filter(|s| s.is_finite())
            }
            _ => None,
        };
        let due = self.spec.due.and_time(chrono::NaiveTime::MIN).and_utc();
        let span = (due - self.create_time).num_seconds().max(1);
        #[allow(clippy::cast_precision_loss)]
        let share_elapsed = ((now - self.create_time).num_seconds() as f64 / span as f64).clamp(0.0, 1.0);
        Progress {
            window: self.current_window(now.date_naive()),
            value,
            count,
            target_value,
            change,
            share_reached,
            share_elapsed,
            on_track: share_reached.is_some_and(|s| s >= share_elapsed),
        }
    }
}

/// The rules a goal keeps when it is set `today`, over the parts of it a request gave validly
/// (None: a part that was missing or malformed, whose rules are not checked): each broken one as
/// (field, reason), so a request learns of every problem at once.
pub fn rules(
    info: Option<&MetricInfo>,
    baseline_end: Option<NaiveDate>,
    due: Option<NaiveDate>,
    target: Option<Target>,
    today: NaiveDate,
) -> Vec<(&'static str, String)> {
    let mut broken = Vec::new();
    if let Some(info) = info.filter(|i| !i.any_window()) {
        broken.push((
            "metric",
            format!(
                "{} is over forecast periods; a goal needs a metric over any period",
                info.key
            ),
        ));
    }
    if baseline_end.is_some_and(|end| end > today) {
        broken.push((
            "baseline_period",
            "must end before today: a baseline is measured, not forecast".to_owned(),
        ));
    }
    if due.is_some_and(|due| due <= today) {
        broken.push(("due_date", "must be after today".to_owned()));
    }
    let ratio = info.is_some_and(|i| i.unit == "ratio");
    match target {
        Some(Target::Absolute(v)) if !v.is_finite() || v < 0.0 => {
            broken.push((
                "target",
                "an absolute target is a value the metric can take (0 or more)".to_owned(),
            ));
        }
        Some(Target::Absolute(v)) if ratio && v > 1.0 => {
            broken.push((
                "target",
                format!(
                    "{} is a ratio: an absolute target is from 0 to 1",
                    info.map_or("the metric", |i| i.key)
                ),
            ));
        }
        Some(Target::Relative(v)) if !v.is_finite() || v <= -1.0 || v == 0.0 => {
            broken.push((
                "target",
                "a relative target is a change other than 0, above -1 (-0.25: reduce by 25%)".to_owned(),
            ));
        }
        _ => {}
    }
    broken
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(raw: &str) -> NaiveDate {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").expect("day")
    }

    fn goal(target: Target) -> Goal {
        Goal {
            id: Uuid::nil(),
            spec: GoalSpec {
                display_name: "Win more".into(),
                metric: "win-rate".into(),
                owner: None,
                baseline_start: day("2026-01-01"),
                baseline_end: day("2026-04-01"),
                target,
                due: day("2026-12-31"),
            },
            baseline: Baseline {
                value: Some(0.4),
                count: 50,
                formula_version: 1,
                watermarks: Vec::new(),
                freeze_time: Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
            },
            created_by: "alice".into(),
            create_time: Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn progress_is_measured_against_the_frozen_baseline() {
        // Raise the win rate by 25% (0.4 to 0.5); halfway through the time, at 0.45.
        let g = goal(Target::Relative(0.25));
        let halfway = g.create_time + (g.spec.due.and_time(chrono::NaiveTime::MIN).and_utc() - g.create_time) / 2;
        let p = g.progress(Some(0.45), 10, halfway);
        assert!((p.target_value.expect("target") - 0.5).abs() < 1e-12);
        assert!((p.share_reached.expect("share") - 0.5).abs() < 1e-9);
        assert!((p.share_elapsed - 0.5).abs() < 1e-6);
        assert!(p.on_track || (p.share_reached.expect("share") - p.share_elapsed).abs() < 1e-6);
        let behind = g.progress(Some(0.42), 10, halfway);
        assert!(!behind.on_track);
        // The window is as long as the baseline's (90 days), ending today.
        assert_eq!(
            p.window.end - p.window.start,
            g.spec.baseline_end - g.spec.baseline_start
        );
        assert_eq!(p.window.end, halfway.date_naive().succ_opt().expect("day"));
    }

    #[test]
    fn a_goal_breaks_its_rules_by_name() {
        let info = MetricId::WinRate.info();
        let mut spec = goal(Target::Absolute(1.5)).spec;
        spec.baseline_end = day("2026-06-01");
        spec.due = day("2026-05-01");
        let broken: Vec<&str> = spec
            .check(info, day("2026-05-15"))
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(broken, ["baseline_period", "due_date", "target"]);
        spec.target = Target::Relative(-1.0);
        assert!(spec.check(info, day("2026-05-15")).iter().any(|(f, _)| *f == "target"));
        assert!(Target::Relative(0.25).unreachable_from(Some(0.0)).is_some());
        assert!(Target::Relative(0.25).unreachable_from(None).is_some());
        assert!(Target::Absolute(0.4).unreachable_from(Some(0.4)).is_some());
        assert!(Target::Relative(f64::MAX).unreachable_from(Some(2.0)).is_some());
        assert!(Target::Absolute(0.9).unreachable_from(None).is_none());
        assert!(Target::Relative(-0.25).unreachable_from(Some(0.4)).is_none());
        let ok = goal(Target::Relative(-0.25)).spec;
        assert!(ok.check(info, day("2026-05-15")).is_empty());
        assert_eq!(
            ok.check(MetricId::ForecastAccuracy.info(), day("2026-05-15"))[0].0,
            "metric"
        );
    }
}
