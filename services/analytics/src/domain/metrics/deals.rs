//! The formulas of the deal metrics (see the catalogue): win rates, cycle days, the stage
//! funnel, the open pipeline and its velocity, lead conversion, forecast accuracy and quota
//! attainment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Figure, Grouping, MS_PER_DAY, figures, month, one_currency_sum, rate_figure, ratio};
use crate::domain::durations;
use crate::domain::facts::{
    CALL_CATEGORY, CloseCell, Cycles, DealRow, ForecastFact, LeadRow, OpenDeal, Outcome, QuotaFact, Stays, StaysOf,
    TransitionKind,
};

/// The group of a deal (in `pipeline`, from a lead of `lead_source`) under `grouping`; `month`
/// is that of the instant the metric counts it at.
fn deal_group(grouping: Grouping, owner: &str, pipeline: uuid::Uuid, lead_source: &str, month: &str) -> String {
    match grouping {
        Grouping::Tenant | Grouping::Stage | Grouping::Campaign => String::new(),
        Grouping::Owner => owner.to_owned(),
        Grouping::Pipeline => format!("pipelines/{pipeline}"),
        Grouping::Month => month.to_owned(),
        Grouping::LeadSource => lead_source.to_owned(),
    }
}

/// The group of a cell of closes under `grouping`.
fn cell_group(grouping: Grouping, cell: &CloseCell) -> String {
    deal_group(grouping, &cell.owner, cell.pipeline, &cell.lead_source, &cell.month)
}

/// Win rate: see the catalogue.
pub fn win_rate(cells: &[CloseCell], grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for cell in cells {
        let (won, lost) = groups.entry(cell_group(grouping, cell)).or_default();
        match cell.outcome {
            Outcome::Won => *won = won.saturating_add(cell.deals),
            _ => *lost = lost.saturating_add(cell.deals),
        }
    }
    figures(grouping, groups, |(won, lost)| {
        rate_figure(won, lost, [("won", won), ("lost", lost)].into_iter().collect())
    })
}

/// Cohort win rate: see the catalogue.
pub fn cohort_win_rate(deals: &[DealRow], grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for row in deals {
        let (won, lost, open) = groups
            .entry(deal_group(
                grouping,
                &row.deal.owner,
                row.deal.pipeline,
                &row.lead_source,
                &month(row.deal.create_time),
            ))
            .or_default();
        match row.deal.outcome {
            Outcome::Won => *won += 1,
            Outcome::Lost => *lost += 1,
            Outcome::Open => *open += 1,
        }
    }
    figures(grouping, groups, |(won, lost, open)| {
        let mut figure = rate_figure(
            won,
            lost,
            [("won", won), ("lost", lost), ("open", open)].into_iter().collect(),
        );
        figure.count += open;
        figure
    })
}

/// Sales-cycle days: see the catalogue. `cycles` are the period's, per group of `grouping`.
#[allow(clippy::cast_precision_loss)]
pub fn sales_cycle_days(cycles: &Cycles, grouping: Grouping) -> Vec<Figure> {
    let Cycles { cells, times } = cycles;
    #[derive(Default)]
    struct Won {
        deals: i64,
        cycle_ms: i128,
        times: BTreeMap<i32, i64>,
    }
    let mut groups: BTreeMap<String, Option<Won>> = BTreeMap::new();
    for cell in cells.iter().filter(|c| c.outcome == Outcome::Won) {
        let won = groups
            .entry(cell_group(grouping, cell))
            .or_default()
            .get_or_insert_default();
        won.deals = won.deals.saturating_add(cell.deals);
        won.cycle_ms = won.cycle_ms.saturating_add(cell.cycle_ms);
    }
    for time in times {
        if let Some(Some(won)) = groups.get_mut(&time.group) {
            let n = won.times.entry(time.bucket).or_default();
            *n = n.saturating_add(time.deals);
        }
    }
    figures(grouping, groups, |won| {
        let mut parts = BTreeMap::new();
        let Some(won) = won.filter(|w| w.deals > 0) else {
            return Figure {
                group: String::new(),
                value: None,
                count: 0,
                parts,
            };
        };
        let mean = won.cycle_ms as f64 / won.deals as f64 / MS_PER_DAY;
        parts.insert("mean", mean);
        if let Some(median) = durations::median(&won.times) {
            parts.insert("median", median * 1000.0 / MS_PER_DAY);
        }
        Figure {
            group: String::new(),
            value: Some(mean),
            count: won.deals,
            parts,
        }
    })
}

/// The group of a deal in a stage under `grouping` (stage, owner and pipeline only).
fn stage_group(grouping: Grouping, pipeline: uuid::Uuid, stage: Option<uuid::Uuid>, owner: &str) -> String {
    match grouping {
        Grouping::Stage => match stage {
            Some(stage) => format!("pipelines/{pipeline}/stages/{stage}"),
            None => format!("pipelines/{pipeline}/stages/-"),
        },
        Grouping::Owner => owner.to_owned(),
        Grouping::Pipeline => format!("pipelines/{pipeline}"),
        _ => String::new(),
    }
}

/// What became of the stays in each group of the funnel.
#[derive(Default)]
struct StageGroup {
    entered: i64,
    advanced: i64,
    moved_back: i64,
    lost: i64,
    ended: i64,
    /// The ended stays per bucket of their durations.
    times: BTreeMap<i32, i64>,
    position: Option<i32>,
}

/// The group of stays of `of` that began in `month` under `grouping`.
fn stays_group(grouping: Grouping, month: &str, of: &StaysOf) -> String {
    match (grouping, of) {
        (Grouping::Month, _) => month.to_owned(),
        (_, StaysOf::Stage { pipeline, stage }) => stage_group(grouping, *pipeline, *stage, ""),
        (_, StaysOf::Owner(owner)) => owner.clone(),
    }
}

/// Stage funnel: see the catalogue. `stays` are the period's, with the durations of the ended
/// ones by stage (by owner for the owner grouping).
#[allow(clippy::cast_precision_loss)]
pub fn stage_funnel(stays: &Stays, grouping: Grouping) -> Vec<Figure> {
    let Stays { cells, times, stages } = stays;
    let position =
        |stage: Option<uuid::Uuid>| stage.and_then(|id| stages.iter().find(|s| s.stage == id).map(|s| s.position));
    let mut groups: BTreeMap<String, StageGroup> = BTreeMap::new();
    for cell in cells {
        let group = match grouping {
            Grouping::Month => cell.month.clone(),
            _ => stage_group(grouping, cell.pipeline, cell.stage, &cell.owner),
        };
        let here = position(cell.stage);
        let stays = groups.entry(group).or_default();
        if grouping == Grouping::Stage {
            stays.position = here;
        }
        stays.entered = stays.entered.saturating_add(cell.stays);
        let Some((kind, to)) = cell.end else {
            continue;
        };
        stays.ended = stays.ended.saturating_add(cell.stays);
        let outcome = match kind {
            TransitionKind::Lost => &mut stays.lost,
            TransitionKind::Moved | TransitionKind::Reopened if matches!((here, position(to)), (Some(here), Some(to)) if to < here) => {
                &mut stays.moved_back
            }
            _ => &mut stays.advanced,
        };
        *outcome = outcome.saturating_add(cell.stays);
    }
    for time in times {
        if let Some(stays) = groups.get_mut(&stays_group(grouping, &time.month, &time.of)) {
            let n = stays.times.entry(time.bucket).or_default();
            *n = n.saturating_add(time.stays);
        }
    }
    figures(grouping, groups, |stays| {
        let mut parts: BTreeMap<&'static str, f64> = [
            ("entered", stays.entered as f64),
            ("advanced", stays.advanced as f64),
            ("moved_back", stays.moved_back as f64),
            ("lost", stays.lost as f64),
            ("still_in", (stays.entered - stays.ended) as f64),
        ]
        .into_iter()
        .collect();
        if let Some(median) = durations::median(&stays.times) {
            parts.insert("median_days", median * 1000.0 / MS_PER_DAY);
        }
        if let Some(position) = stays.position {
            parts.insert("position", f64::from(position));
        }
        Figure {
            group: String::new(),
            value: ratio(stays.advanced, stays.entered),
            count: stays.entered,
            parts,
        }
    })
}

/// Open pipeline: see the catalogue. `open` are the deals open at the end of the period.
#[allow(clippy::cast_precision_loss)]
pub fn open_pipeline(open: &[OpenDeal], grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, Vec<&OpenDeal>> = BTreeMap::new();
    for deal in open {
        groups
            .entry(stage_group(grouping, deal.pipeline, deal.stage, &deal.owner))
            .or_default()
            .push(deal);
    }
    figures(grouping, groups, |deals| {
        let (amount, currencies) = one_currency_sum(deals.iter().map(|d| (d.currency.as_str(), d.amount_minor)));
        let mut parts: BTreeMap<&'static str, f64> = [("currencies", currencies as f64)].into_iter().collect();
        if let Some(amount) = amount {
            parts.insert("amount", amount as f64);
        }
        let count = i64::try_from(deals.len()).unwrap_or(i64::MAX);
        Figure {
            group: String::new(),
            value: Some(count as f64),
            count,
            parts,
        }
    })
}

/// Pipeline velocity: see the catalogue. `open` are the deals open at the end of the period,
/// `cells` the closes of the period.
#[allow(clippy::cast_precision_loss)]
pub fn pipeline_velocity(open: &[OpenDeal], cells: &[CloseCell], grouping: Grouping) -> Vec<Figure> {
    #[derive(Default)]
    struct Group<'a> {
        open: i64,
        won: Vec<&'a CloseCell>,
        lost: i64,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for deal in open {
        groups
            .entry(stage_group(grouping, deal.pipeline, deal.stage, &deal.owner))
            .or_default()
            .open += 1;
    }
    for cell in cells {
        let group = groups
            .entry(stage_group(grouping, cell.pipeline, None, &cell.owner))
            .or_default();
        match cell.outcome {
            Outcome::Won => group.won.push(cell),
            _ => group.lost = group.lost.saturating_add(cell.deals),
        }
    }
    figures(grouping, groups, |group| {
        let won = group.won.iter().fold(0i64, |n, c| n.saturating_add(c.deals));
        let (sum, _) = one_currency_sum(group.won.iter().map(|c| (c.currency.as_str(), c.amount())));
        let average = sum.and_then(|sum| ratio(sum, won));
        let win_rate = ratio(won, won.saturating_add(group.lost));
        let cycle_ms: i128 = group.won.iter().map(|c| c.cycle_ms).sum();
        let cycle = (won > 0).then(|| cycle_ms as f64 / won as f64 / MS_PER_DAY);
        let mut parts: BTreeMap<&'static str, f64> = [
            ("open", group.open as f64),
            ("won", won as f64),
            ("lost", group.lost as f64),
        ]
        .into_iter()
        .collect();
        for (key, value) in [
            ("avg_won_amount", average),
            ("win_rate", win_rate),
            ("cycle_days", cycle),
        ] {
            if let Some(value) = value {
                parts.insert(key, value);
            }
        }
        let value = match (average, win_rate, cycle) {
            (Some(average), Some(rate), Some(cycle)) if cycle > 0.0 => Some(group.open as f64 * average * rate / cycle),
            _ => None,
        };
        Figure {
            group: String::new(),
            value,
            count: group.open.saturating_add(won).saturating_add(group.lost),
            parts,
        }
    })
}

/// Lead conversion: see the catalogue.
pub fn lead_conversion(leads: &[LeadRow], grouping: Grouping) -> Vec<Figure> {
    let mut groups: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for row in leads {
        let group = match grouping {
            Grouping::Tenant | Grouping::Pipeline | Grouping::Stage | Grouping::Campaign => String::new(),
            Grouping::Owner => row.lead.owner.clone(),
            Grouping::Month => month(row.lead.create_time),
            Grouping::LeadSource => row.lead.source.clone(),
        };
        let (created, converted, customers) = groups.entry(group).or_default();
        *created += 1;
        if row.lead.converted.is_some() {
            *converted += 1;
        }
        if row.deal_outcome == Some(Outcome::Won) {
            *customers += 1;
        }
    }
    figures(grouping, groups, |(created, converted, customers)| {
        #[allow(clippy::cast_precision_loss)]
        let parts = [
            ("created", created as f64),
            ("converted", converted as f64),
            ("to_customer", ratio(customers, created).unwrap_or(0.0)),
        ];
        Figure {
            group: String::new(),
            value: ratio(converted, created),
            count: created,
            parts: parts.into_iter().collect(),
        }
    })
}

/// What each salesperson won in the period: (currency, amount, deals) of their cells of won
/// deals.
fn won_by_owner(cells: &[CloseCell]) -> BTreeMap<&str, Vec<(&str, i64, i64)>> {
    let mut won: BTreeMap<&str, Vec<(&str, i64, i64)>> = BTreeMap::new();
    for cell in cells.iter().filter(|c| c.outcome == Outcome::Won) {
        won.entry(cell.owner.as_str())
            .or_default()
            .push((cell.currency.as_str(), cell.amount(), cell.deals));
    }
    won
}

/// The sum (saturating) of the amounts in `currency`, and the number of deals in another.
fn in_currency(amounts: &[(&str, i64, i64)], currency: &str) -> (i64, i64) {
    amounts.iter().fold((0i64, 0i64), |(sum, other), (c, amount, deals)| {
        if *c == currency {
            (sum.saturating_add(*amount), other)
        } else {
            (sum, other.saturating_add(*deals))
        }
    })
}

/// The latest of `forecasts` submitted before `before`.
fn last_before<'a>(forecasts: &[&'a ForecastFact], before: DateTime<Utc>) -> Option<&'a ForecastFact> {
    forecasts
        .iter()
        .filter(|f| f.submit_time < before)
        .max_by_key(|f| (f.submit_time, f.id))
        .copied()
}

#[allow(clippy::cast_precision_loss)]
fn accuracy(call: i64, actual: i64) -> Option<f64> {
    (actual > 0).then(|| (1.0 - (actual as f64 - call as f64).abs() / actual as f64).max(0.0))
}

/// Forecast accuracy: see the catalogue. `forecasts` are those of the period, `cells` the
/// closes of its window (`start` to `end`).
#[allow(clippy::cast_precision_loss)]
pub fn forecast_accuracy(
    forecasts: &[ForecastFact],
    cells: &[CloseCell],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    grouping: Grouping,
) -> Vec<Figure> {
    let won = won_by_owner(cells);
    let mut calls: BTreeMap<&str, Vec<&ForecastFact>> = BTreeMap::new();
    for forecast in forecasts.iter().filter(|f| f.category == CALL_CATEGORY) {
        calls.entry(forecast.owner.as_str()).or_default().push(forecast);
    }
    let mut people = Vec::new();
    let mut currencies = Vec::new();
    for (owner, submissions) in &calls {
        let Some(call) = last_before(submissions, end) else {
            continue;
        };
        currencies.push(call.currency.as_str());
        let (actual, unconverted) = in_currency(won.get(owner).map(Vec::as_slice).unwrap_or_default(), &call.currency);
        let early = last_before(submissions, start).filter(|e| e.currency == call.currency);
        let error = (actual as f64 - call.amount_minor as f64).abs();
        let mut parts: BTreeMap<&'static str, f64> = [
            ("call", call.amount_minor as f64),
            ("actual", actual as f64),
            ("abs_error", error),
            ("unconverted", unconverted as f64),
        ]
        .into_iter()
        .collect();
        if actual > 0 {
            parts.insert("wape", error / actual as f64);
            parts.insert("bias", (call.amount_minor as f64 - actual as f64) / actual as f64);
        }
        if let Some(early) = early {
            parts.insert("early_call", early.amount_minor as f64);
            if let Some(a) = accuracy(early.amount_minor, actual) {
                parts.insert("early_accuracy", a);
            }
        }
        people.push((
            owner.to_string(),
            Figure {
                group: owner.to_string(),
                value: accuracy(call.amount_minor, actual),
                count: 1,
                parts,
            },
        ));
    }
    if grouping == Grouping::Owner {
        return people.into_iter().map(|(_, figure)| figure).collect();
    }
    let scores: Vec<f64> = people.iter().filter_map(|(_, f)| f.value).collect();
    let (errors, actuals) = people.iter().fold((0.0, 0.0), |(e, a), (_, f)| {
        (e + f.parts["abs_error"], a + f.parts["actual"])
    });
    // Errors and amounts add up only in one currency.
    let one_currency = currencies.windows(2).all(|w| w[0] == w[1]);
    let mut parts: BTreeMap<&'static str, f64> = [("salespeople", people.len() as f64)].into_iter().collect();
    if !scores.is_empty() {
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let spread = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        parts.insert("accuracy_mean", mean);
        parts.insert("accuracy_min", scores.iter().copied().fold(f64::INFINITY, f64::min));
        parts.insert("accuracy_max", scores.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        parts.insert("accuracy_spread", spread);
    }
    vec![Figure {
        group: String::new(),
        value: (one_currency && actuals > 0.0).then(|| (1.0 - errors / actuals).max(0.0)),
        count: i64::try_from(people.len()).unwrap_or(i64::MAX),
        parts,
    }]
}

/// Quota attainment: see the catalogue. `quotas` are those of the period, `cells` the closes
/// of its window.
#[allow(clippy::cast_precision_loss)]
pub fn quota_attainment(quotas: &[QuotaFact], cells: &[CloseCell], grouping: Grouping) -> Vec<Figure> {
    let won = won_by_owner(cells);
    let mut people = Vec::new();
    for quota in quotas {
        let (amount, unconverted) = in_currency(
            won.get(quota.owner.as_str()).map(Vec::as_slice).unwrap_or_default(),
            &quota.currency,
        );
        people.push((quota, amount, unconverted));
    }
    if grouping == Grouping::Owner {
        let mut figures: Vec<Figure> = people
            .iter()
            .map(|(quota, won, unconverted)| Figure {
                group: quota.owner.clone(),
                value: (quota.amount_minor > 0).then(|| *won as f64 / quota.amount_minor as f64),
                count: 1,
                parts: [
                    ("quota", quota.amount_minor as f64),
                    ("won", *won as f64),
                    ("unconverted", *unconverted as f64),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        figures.sort_by(|a, b| a.group.cmp(&b.group));
        return figures;
    }
    let one_currency = people.windows(2).all(|w| w[0].0.currency == w[1].0.currency);
    let (quota, won) = people.iter().fold((0i64, 0i64), |(q, w), (quota, won, _)| {
        (q.saturating_add(quota.amount_minor), w.saturating_add(*won))
    });
    let mut parts: BTreeMap<&'static str, f64> = [("salespeople", people.len() as f64)].into_iter().collect();
    if one_currency {
        parts.insert("quota", quota as f64);
        parts.insert("won", won as f64);
    }
    vec![Figure {
        group: String::new(),
        value: (one_currency && quota > 0).then(|| won as f64 / quota as f64),
        count: i64::try_from(people.len()).unwrap_or(i64::MAX),
        parts,
    }]
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::facts::{Close, CycleTimes, DealFact, StageFact, StayCell, StayTimes, cells_of};

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).single().expect("time")
    }

    fn deal(n: u128, owner: &str, created: u32) -> DealFact {
        DealFact {
            id: Uuid::from_u128(n),
            pipeline: Uuid::from_u128(99),
            owner: owner.into(),
            lead: None,
            amount_minor: 1,
            currency: "EUR".into(),
            create_time: at(created),
            outcome: Outcome::Open,
            close_time: None,
            customer: None,
        }
    }

    fn close(deal: &DealFact, outcome: Outcome, day: u32) -> Close {
        Close {
            deal: deal.id,
            outcome,
            time: at(day),
            owner: deal.owner.clone(),
            pipeline: deal.pipeline,
            lead_source: String::new(),
            amount_minor: deal.amount_minor,
            currency: deal.currency.clone(),
            create_time: deal.create_time,
        }
    }

    #[test]
    fn the_win_rate_and_cycle_days_count_each_close() {
        let (a, b, c, d) = (
            deal(1, "ann", 1),
            deal(2, "ann", 2),
            deal(3, "ben", 1),
            deal(4, "ben", 3),
        );
        let closes = vec![
            close(&a, Outcome::Lost, 20),
            close(&b, Outcome::Won, 12),
            close(&c, Outcome::Lost, 5),
            close(&d, Outcome::Won, 9),
        ];
        let all = win_rate(&cells_of(&closes), Grouping::Tenant);
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].value, all[0].count), (Some(0.5), 4));
        assert_eq!(all[0].parts["won"], 2.0);
        let by_owner = win_rate(&cells_of(&closes), Grouping::Owner);
        let summary: Vec<(&str, Option<f64>)> = by_owner.iter().map(|f| (f.group.as_str(), f.value)).collect();
        assert_eq!(summary, [("ann", Some(0.5)), ("ben", Some(0.5))]);
    }

    #[test]
    fn cycle_days_are_the_mean_and_the_median_of_each_group() {
        // Ann won after 1, 2, 4 and 10 days, ben after half a day; ben also lost one.
        let (a, b) = (deal(1, "ann", 10), deal(2, "ben", 10));
        let won = |owner: &DealFact, days: &[i64]| days.iter().map(|d| (owner.clone(), *d)).collect::<Vec<_>>();
        let mut closes = Vec::new();
        let mut times = Vec::new();
        for (deal, half_days) in won(&a, &[2, 4, 8, 20]).into_iter().chain(won(&b, &[1])) {
            let mut deal = deal;
            deal.create_time = at(20) - chrono::Duration::hours(12 * half_days);
            closes.push(close(&deal, Outcome::Won, 20));
            times.push(CycleTimes {
                group: deal.owner.clone(),
                bucket: durations::bucket(half_days * 43_200_000),
                deals: 1,
            });
        }
        closes.push(close(&b, Outcome::Lost, 21));
        let by_owner = sales_cycle_days(
            &Cycles {
                cells: cells_of(&closes),
                times,
            },
            Grouping::Owner,
        );
        let summary: Vec<(&str, Option<f64>, i64)> =
            by_owner.iter().map(|f| (f.group.as_str(), f.value, f.count)).collect();
        assert_eq!(summary, [("ann", Some(4.25), 4), ("ben", Some(0.5), 1)]);
        // The medians: the mean of 2 and 4 days, and half a day, to within 1/64.
        assert!(about(by_owner[0].parts["median"], 3.0), "{:?}", by_owner[0].parts);
        assert!(about(by_owner[1].parts["median"], 0.5), "{:?}", by_owner[1].parts);
    }

    #[test]
    fn an_empty_period_has_one_figure_without_a_value() {
        for figures in [
            win_rate(&[], Grouping::Tenant),
            sales_cycle_days(&Cycles::default(), Grouping::Tenant),
        ] {
            assert_eq!(figures.len(), 1);
            assert_eq!((figures[0].value, figures[0].count), (None, 0));
        }
        assert!(win_rate(&[], Grouping::Owner).is_empty());
    }

    fn approx(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value");
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    fn forecast(owner: &str, amount: i64, day: u32, category: &str) -> ForecastFact {
        ForecastFact {
            id: Uuid::now_v7(),
            owner: owner.into(),
            period: "2026-11".into(),
            amount_minor: amount,
            currency: "EUR".into(),
            category: category.into(),
            submit_time: at(day),
        }
    }

    fn won(n: u128, owner: &str, amount: i64, currency: &str, day: u32) -> Close {
        let mut d = deal(n, owner, 1);
        d.amount_minor = amount;
        d.currency = currency.into();
        close(&d, Outcome::Won, day)
    }

    #[test]
    fn forecast_accuracy_scores_each_call_against_what_was_won() {
        let (start, end) = (at(1), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        let before = Utc.with_ymd_and_hms(2026, 10, 20, 0, 0, 0).unwrap();
        let mut early = forecast("ann", 900, 1, CALL_CATEGORY);
        early.submit_time = before;
        let forecasts = vec![
            early,
            forecast("ann", 1200, 10, CALL_CATEGORY),
            // Not her call: another category, and one after the period ended.
            forecast("ann", 5000, 12, "best_case"),
            forecast("ben", 1000, 5, CALL_CATEGORY),
        ];
        let mut late = forecast("ann", 1, 1, CALL_CATEGORY);
        late.submit_time = end;
        let forecasts = [forecasts, vec![late]].concat();
        let closes = vec![
            won(1, "ann", 600, "EUR", 3),
            won(2, "ann", 400, "EUR", 20),
            won(3, "ann", 999, "USD", 21),
            won(4, "ben", 1000, "EUR", 4),
        ];
        let people = forecast_accuracy(&forecasts, &cells_of(&closes), start, end, Grouping::Owner);
        assert_eq!(
            people.iter().map(|f| f.group.as_str()).collect::<Vec<_>>(),
            ["ann", "ben"]
        );
        // Ann called 1200 and won 1000 (in EUR): |1000 - 1200| / 1000 = 0.2.
        let ann = &people[0];
        approx(ann.value, 0.8);
        assert_eq!(
            (ann.parts["call"], ann.parts["actual"], ann.parts["unconverted"]),
            (1200.0, 1000.0, 1.0)
        );
        assert!((ann.parts["bias"] - 0.2).abs() < 1e-12 && (ann.parts["wape"] - 0.2).abs() < 1e-12);
        assert_eq!(ann.parts["early_call"], 900.0);
        approx(Some(ann.parts["early_accuracy"]), 0.9);
        assert_eq!(people[1].value, Some(1.0));
        let tenant = forecast_accuracy(&forecasts, &cells_of(&closes), start, end, Grouping::Tenant);
        // Errors 200 + 0 over actuals 1000 + 1000; scores 0.8 and 1.0: spread 0.1.
        approx(tenant[0].value, 0.9);
        approx(Some(tenant[0].parts["accuracy_spread"]), 0.1);
        approx(Some(tenant[0].parts["accuracy_min"]), 0.8);
        approx(Some(tenant[0].parts["accuracy_max"]), 1.0);
    }

    #[test]
    fn calls_in_several_currencies_have_no_tenant_figure() {
        let (start, end) = (at(1), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        let mut usd = forecast("ben", 1000, 5, CALL_CATEGORY);
        usd.currency = "USD".into();
        let forecasts = vec![forecast("ann", 1000, 5, CALL_CATEGORY), usd];
        let closes = vec![won(1, "ann", 1000, "EUR", 3), won(2, "ben", 900, "USD", 4)];
        let tenant = forecast_accuracy(&forecasts, &cells_of(&closes), start, end, Grouping::Tenant);
        assert_eq!((tenant[0].value, tenant[0].count), (None, 2));
        let people = forecast_accuracy(&forecasts, &cells_of(&closes), start, end, Grouping::Owner);
        // Ben called 1000 and won 900 (USD): 1 - 100 / 900.
        approx(people[1].value, 1.0 - 100.0 / 900.0);
    }

    #[test]
    fn quota_attainment_is_won_over_quota() {
        let quotas = vec![
            QuotaFact {
                owner: "ben".into(),
                period: "2026-11".into(),
                amount_minor: 2000,
                currency: "EUR".into(),
            },
            QuotaFact {
                owner: "ann".into(),
                period: "2026-11".into(),
                amount_minor: 1000,
                currency: "EUR".into(),
            },
        ];
        let closes = vec![
            won(1, "ann", 1500, "EUR", 3),
            won(2, "ben", 500, "EUR", 4),
            won(3, "ben", 7, "USD", 4),
        ];
        let people = quota_attainment(&quotas, &cells_of(&closes), Grouping::Owner);
        let summary: Vec<(&str, Option<f64>)> = people.iter().map(|f| (f.group.as_str(), f.value)).collect();
        assert_eq!(summary, [("ann", Some(1.5)), ("ben", Some(0.25))]);
        assert_eq!(people[1].parts["unconverted"], 1.0);
        let tenant = quota_attainment(&quotas, &cells_of(&closes), Grouping::Tenant);
        assert_eq!(tenant[0].value, Some(2000.0 / 3000.0));
    }

    /// A stay in stage `stage` from day `entered`, ended by `end` (its kind, the stage it led
    /// to, its day), as the store adds it up: a cell of one, and its duration's bucket.
    fn stay(stage: u128, entered: u32, end: Option<(TransitionKind, u128, u32)>) -> (StayCell, Option<StayTimes>) {
        let stage = Some(Uuid::from_u128(stage));
        let cell = StayCell {
            month: "2026-11".into(),
            pipeline: Uuid::from_u128(99),
            stage,
            owner: "ann".into(),
            end: end.map(|(kind, to, _)| (kind, Some(Uuid::from_u128(to)))),
            stays: 1,
        };
        let times = end.map(|(_, _, day)| StayTimes {
            month: "2026-11".into(),
            of: StaysOf::Stage {
                pipeline: Uuid::from_u128(99),
                stage,
            },
            bucket: durations::bucket((at(day) - at(entered)).num_milliseconds()),
            stays: 1,
        });
        (cell, times)
    }

    /// Whether `days` is within 1/64 of `exact` (what a median of buckets promises).
    fn about(days: f64, exact: f64) -> bool {
        (days - exact).abs() <= exact / 64.0
    }

    #[test]
    fn the_funnel_follows_each_stay_to_its_end() {
        let stage = |id: u128, position| StageFact {
            pipeline: Uuid::from_u128(99),
            stage: Uuid::from_u128(id),
            position,
            kind: crate::domain::StageKind::Open,
        };
        // Stages 10, 20, 30 in that order (40: no longer on the board).
        let stages = vec![stage(10, 0), stage(20, 1), stage(30, 2)];
        let (cells, times): (Vec<StayCell>, Vec<Option<StayTimes>>) = [
            stay(10, 1, Some((TransitionKind::Moved, 20, 3))),
            stay(10, 2, Some((TransitionKind::Lost, 90, 8))),
            stay(10, 2, None),
            stay(10, 4, Some((TransitionKind::Moved, 40, 5))),
            stay(20, 3, Some((TransitionKind::Moved, 10, 10))),
            stay(20, 5, Some((TransitionKind::Won, 91, 6))),
        ]
        .into_iter()
        .unzip();
        let stays = Stays {
            cells,
            times: times.into_iter().flatten().collect(),
            stages,
        };
        let by_stage = stage_funnel(&stays, Grouping::Stage);
        assert_eq!(by_stage.len(), 2);
        let first = &by_stage[0];
        assert_eq!(
            first.group,
            format!("pipelines/{}/stages/{}", Uuid::from_u128(99), Uuid::from_u128(10))
        );
        // Stage 10: four stays; advanced 2 (to 20, and to 40 which is not earlier), lost 1,
        // still in 1; days to the end: 2, 6, 1: median 2.
        assert_eq!((first.value, first.count), (Some(0.5), 4));
        let parts: Vec<f64> = ["advanced", "moved_back", "lost", "still_in", "position"]
            .iter()
            .map(|k| first.parts[k])
            .collect();
        assert_eq!(parts, [2.0, 0.0, 1.0, 1.0, 0.0]);
        assert!(about(first.parts["median_days"], 2.0), "{}", first.parts["median_days"]);
        // Stage 20: back to 10 (7 days), won (1 day): one advanced of two; median 4.
        let second = &by_stage[1];
        assert_eq!((second.value, second.parts["moved_back"]), (Some(0.5), 1.0));
        assert!(
            about(second.parts["median_days"], 4.0),
            "{}",
            second.parts["median_days"]
        );
        assert_eq!(second.parts["position"], 1.0);
        // The tenant: 3 advanced of 6 stays; days 1, 1, 2, 6, 7: median 2.
        let tenant = stage_funnel(&stays, Grouping::Tenant);
        assert_eq!((tenant[0].value, tenant[0].count), (Some(0.5), 6));
        assert!(about(tenant[0].parts["median_days"], 2.0));
        assert!(!tenant[0].parts.contains_key("position"));
        // By owner, the durations are the owner's.
        let by_owner = Stays {
            times: stays
                .times
                .iter()
                .map(|t| StayTimes {
                    of: StaysOf::Owner("ann".into()),
                    ..t.clone()
                })
                .collect(),
            ..stays.clone()
        };
        let ann = stage_funnel(&by_owner, Grouping::Owner);
        assert_eq!((ann[0].group.as_str(), ann[0].count), ("ann", 6));
        assert!(about(ann[0].parts["median_days"], 2.0));
    }

    fn open_deal(n: u128, owner: &str, amount: i64, currency: &str) -> OpenDeal {
        OpenDeal {
            deal: Uuid::from_u128(n),
            pipeline: Uuid::from_u128(99),
            stage: Some(Uuid::from_u128(10)),
            owner: owner.into(),
            amount_minor: amount,
            currency: currency.into(),
        }
    }

    #[test]
    fn the_open_pipeline_sums_amounts_in_one_currency_only() {
        let open = vec![
            open_deal(1, "ann", 100, "EUR"),
            open_deal(2, "ann", 250, "EUR"),
            open_deal(3, "ben", 70, "USD"),
        ];
        let by_owner = open_pipeline(&open, Grouping::Owner);
        let summary: Vec<(&str, Option<f64>, Option<&f64>)> = by_owner
            .iter()
            .map(|f| (f.group.as_str(), f.value, f.parts.get("amount")))
            .collect();
        assert_eq!(
            summary,
            [("ann", Some(2.0), Some(&350.0)), ("ben", Some(1.0), Some(&70.0))]
        );
        let tenant = open_pipeline(&open, Grouping::Tenant);
        assert_eq!((tenant[0].value, tenant[0].parts.get("amount")), (Some(3.0), None));
        assert_eq!(tenant[0].parts["currencies"], 2.0);
        let empty = open_pipeline(&[], Grouping::Tenant);
        assert_eq!((empty[0].value, empty[0].count), (Some(0.0), 0));
    }

    #[test]
    fn velocity_is_open_times_average_won_times_win_rate_over_cycle_days() {
        let open = vec![open_deal(1, "ann", 1, "EUR"), open_deal(2, "ann", 1, "EUR")];
        // Won: 300 after 9 days (created on the 1st), 500 after 19 days; one lost.
        let closes = vec![
            won(3, "ann", 300, "EUR", 10),
            won(4, "ann", 500, "EUR", 20),
            close(&deal(5, "ann", 1), Outcome::Lost, 12),
        ];
        let tenant = pipeline_velocity(&open, &cells_of(&closes), Grouping::Tenant);
        // 2 x 400 x 2/3 / 14.
        approx(tenant[0].value, 2.0 * 400.0 * (2.0 / 3.0) / 14.0);
        assert_eq!(
            (tenant[0].parts["open"], tenant[0].parts["won"], tenant[0].parts["lost"]),
            (2.0, 2.0, 1.0)
        );
        // Won deals in two currencies: no average, no value.
        let mixed = [closes.clone(), vec![won(6, "ann", 1, "USD", 11)]].concat();
        assert_eq!(
            pipeline_velocity(&open, &cells_of(&mixed), Grouping::Tenant)[0].value,
            None
        );
        // Nothing won: no value.
        assert_eq!(pipeline_velocity(&open, &[], Grouping::Tenant)[0].value, None);
    }
}
