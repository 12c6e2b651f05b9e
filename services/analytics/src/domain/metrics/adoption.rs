//! The formula of CRM adoption (see the catalogue): breadth (active users among the users
//! seen), frequency (requests and changes per active user) and depth (areas per active user),
//! from the usage the services report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};

use super::{Figure, Grouping, figures, ratio};
use crate::domain::facts::UsageFact;

/// The first day of the month after `day`'s.
fn next_month(day: NaiveDate) -> NaiveDate {
    let (year, month) = if day.month() == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), day.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(day)
}

/// Adoption over the days from `start` to `end` (excluded): `usage` is theirs, `first_use` each
/// user's first day of use before `end`.
#[allow(clippy::cast_precision_loss)]
pub fn adoption(
    usage: &[UsageFact],
    first_use: &[(String, NaiveDate)],
    start: NaiveDate,
    end: NaiveDate,
    grouping: Grouping,
) -> Vec<Figure> {
    #[derive(Default)]
    struct Group<'a> {
        /// The day after the group's last.
        until: Option<NaiveDate>,
        requests: i64,
        changes: i64,
        areas: BTreeMap<&'a str, BTreeSet<&'a str>>,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for u in usage.iter().filter(|u| start <= u.day && u.day < end) {
        let (key, until) = match grouping {
            Grouping::Month => (u.day.format("%Y-%m").to_string(), next_month(u.day).min(end)),
            _ => (String::new(), end),
        };
        let group = groups.entry(key).or_default();
        group.until = Some(until);
        group.requests = group.requests.saturating_add(u.requests);
        group.changes = group.changes.saturating_add(u.changes);
        group.areas.entry(u.user.as_str()).or_default().insert(u.area.as_str());
    }
    figures(grouping, groups, |group| {
        let until = group.until.unwrap_or(end);
        let seen = first_use.iter().filter(|(_, first)| *first < until).count();
        let active = group.areas.len();
        let (seen, active_i) = (
            i64::try_from(seen).unwrap_or(i64::MAX),
            i64::try_from(active).unwrap_or(i64::MAX),
        );
        let mut parts: BTreeMap<&'static str, f64> = [("active_users", active as f64), ("users_seen", seen as f64)]
            .into_iter()
            .collect();
        if active > 0 {
            let areas: usize = group.areas.values().map(BTreeSet::len).sum();
            parts.insert("requests_per_active_user", group.requests as f64 / active as f64);
            parts.insert("changes_per_active_user", group.changes as f64 / active as f64);
            parts.insert("areas_per_active_user", areas as f64 / active as f64);
        }
        Figure {
            group: String::new(),
            value: ratio(active_i, seen),
            count: active_i,
            parts,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(month: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, month, d).expect("day")
    }

    fn used(user: &str, area: &str, at: NaiveDate, requests: i64, changes: i64) -> UsageFact {
        UsageFact {
            user: user.into(),
            area: area.into(),
            day: at,
            requests,
            changes,
        }
    }

    #[test]
    fn breadth_frequency_and_depth() {
        let usage = vec![
            used("ann", "contacts", day(11, 2), 10, 2),
            used("ann", "deals", day(11, 3), 5, 5),
            used("ben", "contacts", day(11, 20), 3, 0),
            // Outside the period.
            used("cat", "contacts", day(10, 20), 7, 1),
        ];
        let first_use = vec![
            ("ann".to_owned(), day(9, 1)),
            ("ben".to_owned(), day(11, 20)),
            ("cat".to_owned(), day(10, 20)),
            ("dan".to_owned(), day(12, 5)),
        ];
        let (start, end) = (day(11, 1), day(12, 1));
        let tenant = &adoption(&usage, &first_use, start, end, Grouping::Tenant)[0];
        // Active: ann, ben; seen before December: ann, ben, cat.
        assert_eq!(tenant.value, Some(2.0 / 3.0));
        let parts: Vec<f64> = [
            "requests_per_active_user",
            "changes_per_active_user",
            "areas_per_active_user",
        ]
        .iter()
        .map(|k| tenant.parts[k])
        .collect();
        assert_eq!(parts, [9.0, 3.5, 1.5]);
        let by_month = adoption(&usage, &first_use, day(10, 1), end, Grouping::Month);
        let summary: Vec<(&str, Option<f64>)> = by_month.iter().map(|f| (f.group.as_str(), f.value)).collect();
        // October: cat of ann and cat; November: ann and ben of three.
        assert_eq!(summary, [("2026-10", Some(0.5)), ("2026-11", Some(2.0 / 3.0))]);
    }
}
