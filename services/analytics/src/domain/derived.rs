//! Changes the analytics service derives from the facts and publishes on its own feed: a
//! customer's segment, a goal's status, a deal gone quiet. What was last published is kept, so
//! each change is published once: [`changes`] compares what holds now with it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::goals::Progress;

/// What the service last published for a tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DerivedState {
    /// Each scored customer's segment.
    pub segments: BTreeMap<Uuid, String>,
    /// Each evaluated goal's status.
    pub goals: BTreeMap<Uuid, GoalStatus>,
    /// Open deals published as stalled (in their current quiet spell).
    pub stalled: BTreeSet<Uuid>,
}

/// Where a goal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoalStatus {
    OnTrack,
    OffTrack,
    Reached,
}

impl GoalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GoalStatus::OnTrack => "on_track",
            GoalStatus::OffTrack => "off_track",
            GoalStatus::Reached => "reached",
        }
    }

    pub fn parse(raw: &str) -> Option<GoalStatus> {
        [GoalStatus::OnTrack, GoalStatus::OffTrack, GoalStatus::Reached]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    /// A goal's status from its progress: reached once the share of the target reached is 1,
    /// else on or off track; None while there is no figure to judge by.
    pub fn of(progress: &Progress) -> Option<GoalStatus> {
        let reached = progress.share_reached?;
        Some(if reached >= 1.0 {
            GoalStatus::Reached
        } else if progress.on_track {
            GoalStatus::OnTrack
        } else {
            GoalStatus::OffTrack
        })
    }
}

/// An open deal and its last activity (its last stage move or edit, or the last interaction
/// with its customer).
#[derive(Debug, Clone, PartialEq)]
pub struct QuietDeal {
    pub deal: Uuid,
    pub owner: String,
    pub pipeline: Uuid,
    pub stage: Option<Uuid>,
    pub last_activity: DateTime<Utc>,
}

/// What holds now, as the service computed it.
#[derive(Debug, Clone, Default)]
pub struct Current<'a> {
    /// Each customer's segment now.
    pub segments: BTreeMap<Uuid, &'static str>,
    /// Each goal's status now (goals without a figure left out).
    pub goals: BTreeMap<Uuid, GoalStatus>,
    /// Open deals quiet for longer than the stall window.
    pub quiet: Vec<&'a QuietDeal>,
}

/// What changed since the last publication, to store and publish together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// (customer, segment before (None: first scored), segment now).
    pub segments: Vec<(Uuid, Option<String>, String)>,
    /// (goal, status before, status now).
    pub goals: Vec<(Uuid, Option<GoalStatus>, GoalStatus)>,
    /// Deals newly stalled.
    pub stalled: Vec<QuietDeal>,
    /// Deals published as stalled that are stalled no more (active again, or closed).
    pub resumed: Vec<Uuid>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.goals.is_empty() && self.stalled.is_empty() && self.resumed.is_empty()
    }
}

/// What changed between the state last published and what holds now.
pub fn changes(published: &DerivedState, now: &Current) -> Changes {
    let segments = now
        .segments
        .iter()
        .filter_map(|(customer, segment)| {
            let before = published.segments.get(customer);
            (before.map(String::as_str) != Some(*segment)).then(|| (*customer, before.cloned(), (*segment).to_owned()))
        })
        .collect();
    let goals = now
        .goals
        .iter()
        .filter_map(|(goal, status)| {
            let before = published.goals.get(goal).copied();
            (before != Some(*status)).then_some((*goal, before, *status))
        })
        .collect();
    let quiet: BTreeSet<Uuid> = now.quiet.iter().map(|q| q.deal).collect();
    Changes {
        segments,
        goals,
        stalled: now
            .quiet
            .iter()
            .filter(|q| !published.stalled.contains(&q.deal))
            .map(|q| (*q).clone())
            .collect(),
        resumed: published.stalled.difference(&quiet).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_found_once() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let quiet = |deal| QuietDeal {
            deal,
            owner: "ann".into(),
            pipeline: Uuid::from_u128(9),
            stage: None,
            last_activity: DateTime::UNIX_EPOCH,
        };
        let published = DerivedState {
            segments: [(a, "new".to_owned()), (b, "loyal".to_owned())].into(),
            goals: [(a, GoalStatus::OnTrack)].into(),
            stalled: [a, b].into(),
        };
        let (qb, qc) = (quiet(b), quiet(c));
        let now = Current {
            segments: [(a, "promising"), (b, "loyal"), (c, "new")].into(),
            goals: [(a, GoalStatus::OnTrack), (b, GoalStatus::OffTrack)].into(),
            quiet: vec![&qb, &qc],
        };
        let found = changes(&published, &now);
        assert_eq!(
            found.segments,
            vec![
                (a, Some("new".to_owned()), "promising".to_owned()),
                (c, None, "new".to_owned())
            ]
        );
        assert_eq!(found.goals, vec![(b, None, GoalStatus::OffTrack)]);
        assert_eq!(found.stalled, vec![qc.clone()], "b was published before");
        assert_eq!(found.resumed, vec![a], "a is no longer quiet");

        // Once stored, nothing is found again.
        let stored = DerivedState {
            segments: [
                (a, "promising".to_owned()),
                (b, "loyal".to_owned()),
                (c, "new".to_owned()),
            ]
            .into(),
            goals: [(a, GoalStatus::OnTrack), (b, GoalStatus::OffTrack)].into(),
            stalled: [b, c].into(),
        };
        assert!(changes(&stored, &now).is_empty());
    }
}
