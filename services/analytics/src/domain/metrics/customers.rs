//! The formulas of the customer metrics (see the catalogue): campaign response, service
//! handling time, data freshness, profile completeness, portfolio continuity, and retention
//! and churn by cohort.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{Figure, Grouping, days, figures, mean, median, month, ratio};
use crate::domain::facts::{
    DealFact, InteractionFact, LastChange, LeftBehind, LifecycleFact, ProfileCounts, TransferFact,
};

/// Lifecycle stage of a customer.
const CUSTOMER: &str = "customer";
/// Lifecycle stage of a churned customer.
const CHURNED: &str = "churned";

/// Days within which a record counts as fresh.
const FRESH_DAYS: i64 = 90;

/// Campaign response: see the catalogue. `interactions` are the campaigns' from the period's
/// start to its end plus `window`; `start` and `end` bound the period.
#[allow(clippy::cast_precision_loss)]
pub fn campaign_response(
    interactions: &[InteractionFact],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    window: Duration,
    grouping: Grouping,
) -> Vec<Figure> {
    // Each (campaign, contact) reached in the period, at its first outbound interaction.
    let mut reached: BTreeMap<(&str, Uuid), DateTime<Utc>> = BTreeMap::new();
    for i in interactions
        .iter()
        .filter(|i| i.direction == "outbound" && start <= i.time && i.time < end)
    {
        let first = reached.entry((i.campaign.as_str(), i.contact)).or_insert(i.time);
        *first = (*first).min(i.time);
    }
    let answered = |campaign: &str, contact: Uuid, at: DateTime<Utc>| {
        interactions.iter().any(|i| {
            i.direction == "inbound"
                && i.campaign == campaign
                && i.contact == contact
                && at <= i.time
                && i.time <= at + window
        })
    };
    let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for ((campaign, contact), at) in &reached {
        let group = match grouping {
            Grouping::Campaign => (*campaign).to_owned(),
            _ => String::new(),
        };
        let (reach, responded) = groups.entry(group).or_default();
        *reach += 1;
        if answered(campaign, *contact, *at) {
            *responded += 1;
        }
    }
    figures(grouping, groups, |(reach, responded)| Figure {
        group: String::new(),
        value: ratio(responded, reach),
        count: reach,
        parts: [("reached", reach as f64), ("responded", responded as f64)]
            .into_iter()
            .collect(),
    })
}

/// The `q` quantile (0 to 1) of sorted `values` by nearest rank: the smallest value with at
/// least `q` of the values at or below it.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Service handling time: see the catalogue. `tickets` are the support tickets of the period.
#[allow(clippy::cast_precision_loss)]
pub fn handling_time(tickets: &[InteractionFact], grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ticket in tickets.iter().filter(|t| t.duration_ms > 0) {
        let group = match grouping {
            Grouping::Owner => ticket.actor.clone(),
            Grouping::Month => month(ticket.time),
            _ => String::new(),
        };
        groups
            .entry(group)
            .or_default()
            .push(ticket.duration_ms as f64 / 60_000.0);
    }
    figures(grouping, groups, |mut minutes| {
        let average = mean(&minutes);
        let middle = median(&mut minutes);
        let mut parts = BTreeMap::new();
        if let (Some(middle), Some(p90)) = (middle, nearest_rank(&minutes, 0.9)) {
            parts.insert("median", middle);
            parts.insert("p90", p90);
        }
        Figure {
            group: String::new(),
            value: average,
            count: i64::try_from(minutes.len()).unwrap_or(i64::MAX),
            parts,
        }
    })
}

/// Data freshness: see the catalogue. `changes` are each record's last change before
/// `as_of`.
#[allow(clippy::cast_precision_loss)]
pub fn data_freshness(changes: &[LastChange], as_of: DateTime<Utc>, grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for change in changes {
        let group = match grouping {
            Grouping::Owner => change.owner.clone(),
            _ => String::new(),
        };
        groups.entry(group).or_default().push(days(change.time, as_of));
    }
    figures(grouping, groups, |mut ages| {
        let fresh = ages.iter().filter(|d| **d < FRESH_DAYS as f64).count();
        let records = ages.len();
        let mut parts: BTreeMap<&'static str, f64> = [("fresh", fresh as f64)].into_iter().collect();
        if let (Some(average), Some(middle)) = (mean(&ages), median(&mut ages)) {
            parts.insert("mean_days", average);
            parts.insert("median_days", middle);
        }
        let records = i64::try_from(records).unwrap_or(i64::MAX);
        Figure {
            group: String::new(),
            value: ratio(i64::try_from(fresh).unwrap_or(i64::MAX), records),
            count: records,
            parts,
        }
    })
}

/// Profile completeness: see the catalogue. `counts` are per owner.
#[allow(clippy::cast_precision_loss)]
pub fn profile_completeness(counts: &[ProfileCounts], grouping: Grouping) -> Vec<Figure> {
    /// An owner group's counts, and how many of its contacts have an owner.
    #[derive(Default)]
    struct Sum {
        counts: ProfileCounts,
        owned: i64,
    }
    let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
    for c in counts {
        let group = match grouping {
            Grouping::Owner => c.owner.clone(),
            _ => String::new(),
        };
        let sum = groups.entry(group).or_default();
        sum.counts.contacts += c.contacts;
        sum.counts.email += c.email;
        sum.counts.phone += c.phone;
        sum.counts.company += c.company;
        sum.counts.consent += c.consent;
        if !c.owner.is_empty() {
            sum.owned += c.contacts;
        }
    }
    figures(grouping, groups, |Sum { counts: c, owned }| {
        let shares = [
            ("email", ratio(c.email, c.contacts)),
            ("phone", ratio(c.phone, c.contacts)),
            ("company", ratio(c.company, c.contacts)),
            ("owner", ratio(owned, c.contacts)),
            ("consent", ratio(c.consent, c.contacts)),
        ];
        let value = mean(&shares.iter().filter_map(|(_, s)| *s).collect::<Vec<_>>());
        Figure {
            group: String::new(),
            value,
            count: c.contacts,
            parts: shares.into_iter().filter_map(|(k, s)| s.map(|s| (k, s))).collect(),
        }
    })
}

/// Portfolio continuity: see the catalogue. `behind` are the records users who left still
/// own, `transfers` those of the period.
#[allow(clippy::cast_precision_loss)]
pub fn portfolio_continuity(behind: &[LeftBehind], transfers: &[TransferFact], grouping: Grouping) -> Vec<Figure> {
    #[derive(Default)]
    struct Group {
        kinds: BTreeMap<&'static str, i64>,
        users: BTreeSet<String>,
        transfers: i64,
    }
    let group_of = |user: &str| match grouping {
        Grouping::Owner => user.to_owned(),
        _ => String::new(),
    };
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for b in behind {
        let group = groups.entry(group_of(&b.owner)).or_default();
        group.users.insert(b.owner.clone());
        for kind in ["contacts", "companies", "deals", "leads"] {
            if b.kind == kind {
                *group.kinds.entry(kind).or_default() += b.count;
            }
        }
    }
    for t in transfers {
        groups.entry(group_of(&t.from)).or_default().transfers += 1;
    }
    figures(grouping, groups, |group| {
        let left: i64 = group.kinds.values().sum();
        let mut parts: BTreeMap<&'static str, f64> = ["contacts", "companies", "deals", "leads"]
            .into_iter()
            .map(|k| (k, group.kinds.get(k).copied().unwrap_or(0) as f64))
            .collect();
        parts.insert("departed_users", group.users.len() as f64);
        parts.insert("transfers", group.transfers as f64);
        Figure {
            group: String::new(),
            value: Some(left as f64),
            count: left,
            parts,
        }
    })
}

/// What retention reads of the customers: each one's wins, lifecycle moves and first win.
struct Customers<'a> {
    wins: BTreeMap<Uuid, Vec<&'a DealFact>>,
    /// Each customer's first win.
    first: BTreeMap<Uuid, DateTime<Utc>>,
    stages: BTreeMap<Uuid, Vec<&'a LifecycleFact>>,
}

impl<'a> Customers<'a> {
    fn new(wins: &'a [DealFact], lifecycles: &'a [LifecycleFact]) -> Self {
        let mut by_customer: BTreeMap<Uuid, Vec<&DealFact>> = BTreeMap::new();
        for deal in wins {
            if let (Some(customer), Some(_)) = (deal.customer, deal.close_time) {
                by_customer.entry(customer).or_default().push(deal);
            }
        }
        let mut stages: BTreeMap<Uuid, Vec<&LifecycleFact>> = BTreeMap::new();
        for l in lifecycles {
            stages.entry(l.customer).or_default().push(l);
        }
        for moves in stages.values_mut() {
            moves.sort_by_key(|l| l.time);
        }
        let first = by_customer
            .iter()
            .filter_map(|(c, deals)| Some((*c, deals.iter().filter_map(|d| d.close_time).min()?)))
            .collect();
        Customers {
            wins: by_customer,
            first,
            stages,
        }
    }

    fn first_win(&self, customer: Uuid) -> Option<DateTime<Utc>> {
        self.first.get(&customer).copied()
    }

    /// The lifecycle stage at `at` (empty for none).
    fn stage(&self, customer: Uuid, at: DateTime<Utc>) -> &str {
        self.stages
            .get(&customer)
            .and_then(|moves| moves.iter().rev().find(|l| l.time < at))
            .map_or("", |l| l.to.as_str())
    }

    /// The customer's wins from `from` to `to`.
    fn won(&self, customer: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> impl Iterator<Item = &&'a DealFact> {
        self.wins
            .get(&customer)
            .into_iter()
            .flatten()
            .filter(move |d| d.close_time.is_some_and(|t| from <= t && t < to))
    }

    /// Active at `at`: won before it, not at lifecycle CHURNED, and a win in the churn window
    /// before it or at lifecycle CUSTOMER.
    fn active(&self, customer: Uuid, at: DateTime<Utc>, window: Duration) -> bool {
        let stage = self.stage(customer, at);
        self.first_win(customer).is_some_and(|first| first < at)
            && stage != CHURNED
            && (stage == CUSTOMER || self.won(customer, at - window, at).next().is_some())
    }
}

/// Customer retention and churn: see the catalogue. `wins` are the won deals with a customer
/// closed before `end`, `lifecycles` the lifecycle moves before it; the period runs from
/// `start` to `end`.
#[allow(clippy::cast_precision_loss)]
pub fn retention(
    wins: &[DealFact],
    lifecycles: &[LifecycleFact],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    window: Duration,
    grouping: Grouping,
    churn: bool,
) -> Vec<Figure> {
    #[derive(Default)]
    struct Cohort<'a> {
        base: i64,
        retained: i64,
        new: i64,
        /// What the base bought in the window before the period's start, in the window before
        /// its end, and (per customer, the lesser of the two) kept.
        before: i64,
        after: i64,
        kept: i64,
        currencies: BTreeSet<&'a str>,
    }
    let customers = Customers::new(wins, lifecycles);
    let mut groups: BTreeMap<String, Cohort> = BTreeMap::new();
    for &customer in customers.wins.keys() {
        let Some(first) = customers.first_win(customer) else {
            continue;
        };
        let group = match grouping {
            Grouping::Month => month(first),
            _ => String::new(),
        };
        let cohort = groups.entry(group).or_default();
        if start <= first && first < end {
            cohort.new += 1;
        }
        if !customers.active(customer, start, window) {
            continue;
        }
        cohort.base += 1;
        if customers.active(customer, end, window) {
            cohort.retained += 1;
        }
        let bought = |from, to| {
            customers
                .won(customer, from, to)
                .fold(0i64, |sum, d| sum.saturating_add(d.amount_minor))
        };
        let (before, after) = (bought(start - window, start), bought(end - window, end));
        for d in customers
            .won(customer, start - window, start)
            .chain(customers.won(customer, end - window, end))
        {
            cohort.currencies.insert(d.currency.as_str());
        }
        cohort.before = cohort.before.saturating_add(before);
        cohort.after = cohort.after.saturating_add(after);
        cohort.kept = cohort.kept.saturating_add(before.min(after));
    }
    figures(grouping, groups, |cohort| {
        let churned = cohort.base - cohort.retained;
        let mut parts: BTreeMap<&'static str, f64> = [
            ("base", cohort.base as f64),
            ("retained", cohort.retained as f64),
            ("churned", churned as f64),
            ("new", cohort.new as f64),
        ]
        .into_iter()
        .collect();
        // Amounts add up only in one currency.
        if cohort.currencies.len() == 1 && cohort.before > 0 {
            parts.insert("net_revenue_retention", cohort.after as f64 / cohort.before as f64);
            parts.insert("gross_revenue_retention", cohort.kept as f64 / cohort.before as f64);
        }
        let value = if churn {
            ratio(churned, cohort.base)
        } else {
            ratio(cohort.retained, cohort.base)
        };
        Figure {
            group: String::new(),
            value,
            count: cohort.base,
            parts,
        }
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::facts::Outcome;

    fn day(year: i32, month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, 12, 0, 0).single().expect("time")
    }

    fn approx(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value");
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    fn touch(contact: u128, campaign: &str, direction: &str, time: DateTime<Utc>) -> InteractionFact {
        InteractionFact {
            id: Uuid::now_v7(),
            contact: Uuid::from_u128(contact),
            company: None,
            kind: "email".into(),
            direction: direction.into(),
            channel: "email".into(),
            time,
            duration_ms: 0,
            campaign: campaign.into(),
            actor: "ann".into(),
        }
    }

    #[test]
    fn a_campaign_response_is_an_answer_within_the_window_of_the_first_reach() {
        let (start, end) = (day(2026, 11, 1), day(2026, 12, 1));
        let interactions = vec![
            touch(1, "spring", "outbound", day(2026, 11, 2)),
            touch(1, "spring", "outbound", day(2026, 11, 8)),
            touch(1, "spring", "inbound", day(2026, 11, 10)),
            // B answered another campaign, and this one too late.
            touch(2, "spring", "outbound", day(2026, 11, 3)),
            touch(2, "autumn", "inbound", day(2026, 11, 5)),
            touch(2, "spring", "inbound", day(2026, 12, 4)),
            // C was reached at the end of the period and answered after it, in the window.
            touch(3, "spring", "outbound", day(2026, 11, 29)),
            touch(3, "spring", "inbound", day(2026, 12, 2)),
            // D was reached before the period.
            touch(4, "spring", "outbound", day(2026, 10, 30)),
            touch(4, "spring", "inbound", day(2026, 11, 5)),
            // On autumn, B's answer came before the reach.
            touch(2, "autumn", "outbound", day(2026, 11, 6)),
        ];
        let window = Duration::days(30);
        let by_campaign = campaign_response(&interactions, start, end, window, Grouping::Campaign);
        let summary: Vec<(&str, Option<f64>, i64)> = by_campaign
            .iter()
            .map(|f| (f.group.as_str(), f.value, f.count))
            .collect();
        assert_eq!(summary, [("autumn", Some(0.0), 1), ("spring", Some(2.0 / 3.0), 3)]);
        let tenant = campaign_response(&interactions, start, end, window, Grouping::Tenant);
        assert_eq!((tenant[0].value, tenant[0].count), (Some(0.5), 4));
    }

    #[test]
    fn handling_time_is_in_minutes_with_median_and_nearest_rank_p90() {
        let tickets: Vec<InteractionFact> = [10, 20, 30, 40, 100, 0]
            .into_iter()
            .map(|minutes| InteractionFact {
                kind: "support_ticket".into(),
                duration_ms: minutes * 60_000,
                ..touch(1, "", "inbound", day(2026, 11, 3))
            })
            .collect();
        let figure = &handling_time(&tickets, Grouping::Tenant)[0];
        approx(figure.value, 40.0);
        assert_eq!(
            (figure.count, figure.parts["median"], figure.parts["p90"]),
            (5, 30.0, 100.0)
        );
        let by_user = handling_time(&tickets, Grouping::Owner);
        assert_eq!(by_user.iter().map(|f| f.group.as_str()).collect::<Vec<_>>(), ["ann"]);
    }

    #[test]
    fn a_record_is_fresh_when_changed_less_than_ninety_days_before() {
        let as_of = day(2026, 12, 1);
        let change = |owner: &str, time| LastChange {
            customer: Uuid::now_v7(),
            owner: owner.into(),
            time,
        };
        let changes = vec![
            change("ann", day(2026, 11, 20)),
            change("ann", day(2026, 8, 1)),
            change("ben", day(2026, 9, 2)),
        ];
        let tenant = &data_freshness(&changes, as_of, Grouping::Tenant)[0];
        approx(tenant.value, 1.0 / 3.0);
        // Ages 11, 122 and 90 days: median 90.
        assert_eq!(tenant.parts["median_days"], 90.0);
        let by_owner = data_freshness(&changes, as_of, Grouping::Owner);
        assert_eq!((by_owner[0].value, by_owner[1].value), (Some(0.5), Some(0.0)));
    }

    #[test]
    fn completeness_is_the_mean_of_five_shares() {
        let counts = vec![
            ProfileCounts {
                owner: String::new(),
                contacts: 1,
                email: 1,
                phone: 0,
                company: 0,
                consent: 0,
            },
            ProfileCounts {
                owner: "ann".into(),
                contacts: 4,
                email: 2,
                phone: 1,
                company: 4,
                consent: 0,
            },
        ];
        let tenant = &profile_completeness(&counts, Grouping::Tenant)[0];
        approx(tenant.value, (0.6 + 0.2 + 0.8 + 0.8 + 0.0) / 5.0);
        assert_eq!(tenant.count, 5);
    }

    #[test]
    fn continuity_counts_what_users_who_left_still_own() {
        let behind = |owner: &str, kind: &str, count| LeftBehind {
            owner: owner.into(),
            kind: kind.into(),
            count,
        };
        let behind = vec![
            behind("ben", "", 0),
            behind("ben", "leads", 2),
            behind("ben", "contacts", 3),
            behind("dan", "", 0),
        ];
        let transfer = |from: &str| TransferFact {
            resource: format!("contacts/{}", Uuid::now_v7()),
            time: day(2026, 11, 3),
            from: from.into(),
            to: "cat".into(),
        };
        let transfers = vec![transfer("ben"), transfer("ben"), transfer("cat")];
        let tenant = &portfolio_continuity(&behind, &transfers, Grouping::Tenant)[0];
        assert_eq!(tenant.value, Some(5.0));
        assert_eq!((tenant.parts["departed_users"], tenant.parts["transfers"]), (2.0, 3.0));
        let by_owner = portfolio_continuity(&behind, &transfers, Grouping::Owner);
        let summary: Vec<(&str, Option<f64>)> = by_owner.iter().map(|f| (f.group.as_str(), f.value)).collect();
        assert_eq!(summary, [("ben", Some(5.0)), ("cat", Some(0.0)), ("dan", Some(0.0))]);
    }

    fn win(customer: u128, amount: i64, at: DateTime<Utc>) -> DealFact {
        DealFact {
            id: Uuid::now_v7(),
            pipeline: Uuid::from_u128(9),
            owner: "ann".into(),
            lead: None,
            amount_minor: amount,
            currency: "EUR".into(),
            create_time: at,
            outcome: Outcome::Won,
            close_time: Some(at),
            customer: Some(Uuid::from_u128(customer)),
        }
    }

    #[test]
    fn retention_follows_each_customer_from_the_start_of_the_period_to_its_end() {
        let (start, end) = (day(2026, 11, 1), day(2026, 12, 1));
        let wins = vec![
            // X: active throughout (wins within the window), buying more.
            win(1, 100, day(2026, 1, 10)),
            win(1, 50, day(2026, 10, 10)),
            win(1, 30, day(2026, 11, 20)),
            // Y: no win for a year but a CUSTOMER, until churned in the period.
            win(2, 200, day(2025, 2, 10)),
            // Z: new in the period. Q: lapsed long ago.
            win(3, 70, day(2026, 11, 5)),
            win(4, 10, day(2024, 1, 10)),
        ];
        let stage = |to: &str, at| LifecycleFact {
            customer: Uuid::from_u128(2),
            time: at,
            from: String::new(),
            to: to.into(),
        };
        let lifecycles = vec![stage("customer", day(2025, 3, 1)), stage("churned", day(2026, 11, 10))];
        let window = Duration::days(365);
        let tenant = &retention(&wins, &lifecycles, start, end, window, Grouping::Tenant, false)[0];
        approx(tenant.value, 0.5);
        let parts: Vec<f64> = ["base", "retained", "churned", "new"]
            .iter()
            .map(|k| tenant.parts[k])
            .collect();
        assert_eq!(parts, [2.0, 1.0, 1.0, 1.0]);
        // The base bought 150 (X) in the year before the start and 180 in the year before
        // the end; X kept its 150.
        approx(tenant.parts.get("net_revenue_retention").copied(), 180.0 / 150.0);
        approx(tenant.parts.get("gross_revenue_retention").copied(), 1.0);
        let churn = &retention(&wins, &lifecycles, start, end, window, Grouping::Tenant, true)[0];
        approx(churn.value, 0.5);
        let cohorts = retention(&wins, &lifecycles, start, end, window, Grouping::Month, false);
        let summary: Vec<(&str, Option<f64>)> = cohorts.iter().map(|f| (f.group.as_str(), f.value)).collect();
        assert_eq!(
            summary,
            [
                ("2024-01", None),
                ("2025-02", Some(0.0)),
                ("2026-01", Some(1.0)),
                ("2026-11", None)
            ]
        );
    }
}
