//! The stays in stages the funnel reads, and their sums, as deals move, close, reopen and
//! change owner, over whole months and other days.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use super::{at, batch, deal_fact, november, tenant};
use crate::domain::*;
use crate::store::AnalyticsStore;

/// A transition of `deal` into stage `to` (None: the event did not say).
fn step(deal: Uuid, sequence: i64, kind: TransitionKind, to: Option<u128>, time: DateTime<Utc>) -> FactChange {
    FactChange::Transition(TransitionFact {
        deal,
        sequence,
        kind,
        from_stage: None,
        to_stage: to.map(Uuid::from_u128),
        time,
    })
}

/// What the store should say of the stays of `histories` (each deal's owner now and its
/// transitions, in order) that began in [from, to), worked out here: each entry paired with
/// the next transition of its deal.
/// A deal's owner now and its transitions, in order: kind, stage entered, time.
type History = (String, Vec<(TransitionKind, Option<u128>, DateTime<Utc>)>);
type Cells = BTreeMap<(String, Option<Uuid>, String, Option<(TransitionKind, Option<Uuid>)>), i64>;
type Times = BTreeMap<(String, String, i64), i64>;

fn expected(histories: &[History], from: DateTime<Utc>, to: DateTime<Utc>) -> (Cells, Times, Times) {
    let (mut cells, mut by_stage, mut by_owner) = (Cells::new(), Times::new(), Times::new());
    for (owner, steps) in histories {
        for (i, (kind, stage, time)) in steps.iter().enumerate() {
            if *kind == TransitionKind::Won || *kind == TransitionKind::Lost || *time < from || *time >= to {
                continue;
            }
            let month = time.format("%Y-%m").to_string();
            let stage = stage.map(Uuid::from_u128);
            let next = steps.get(i + 1);
            *cells
                .entry((
                    month.clone(),
                    stage,
                    owner.clone(),
                    next.map(|(k, s, _)| (*k, s.map(Uuid::from_u128))),
                ))
                .or_default() += 1;
            if let Some((_, _, end)) = next {
                // Whole seconds, the way the buckets count them.
                let seconds = (*end - *time).num_seconds().max(0);
                *by_stage
                    .entry((month.clone(), format!("{stage:?}"), seconds))
                    .or_default() += 1;
                *by_owner.entry((month, owner.clone(), seconds)).or_default() += 1;
            }
        }
    }
    (cells, by_stage, by_owner)
}

/// Compares what the store gives under each grouping the funnel reads with `expected` of
/// `histories` over `window`, added up over what the grouping does not split by (the month
/// but by month, the owner but by owner; durations by bucket).
async fn check(store: &dyn AnalyticsStore, window: Window, histories: &[History], what: &str) {
    let acme = tenant("acme");
    let (cells, by_stage, by_owner) = expected(histories, window.start_time(), window.end_time());
    for grouping in [Grouping::Month, Grouping::Stage, Grouping::Owner] {
        let (keep_month, keep_owner) = (grouping == Grouping::Month, grouping == Grouping::Owner);
        let month = |m: &String| if keep_month { m.clone() } else { String::new() };
        let read = store.stays(&acme, window, grouping).await.expect("stays");
        let got: Cells = read
            .cells
            .iter()
            .cloned()
            .map(|c| ((c.month, c.stage, c.owner, c.end), c.stays))
            .collect();
        let mut want = Cells::new();
        for ((m, stage, owner, end), n) in &cells {
            let owner = if keep_owner { owner.clone() } else { String::new() };
            *want.entry((month(m), *stage, owner, *end)).or_default() += n;
        }
        assert_eq!(got, want, "{what}: {grouping:?} over {window:?}");
        let got_times = read.times.iter().fold(BTreeMap::new(), |mut all, t| {
            let of = match &t.of {
                StaysOf::Stage { stage, .. } => format!("{stage:?}"),
                StaysOf::Owner(owner) => owner.clone(),
            };
            *all.entry((t.month.clone(), of, t.bucket)).or_insert(0) += t.stays;
            all
        });
        let mut want_times = Times::new();
        for ((m, of, seconds), n) in if keep_owner { &by_owner } else { &by_stage } {
            *want_times.entry((month(m), of.clone(), *seconds)).or_default() += n;
        }
        assert_eq!(got_times, bucketed(want_times), "{what}: {grouping:?} over {window:?}");
        assert_eq!(read.stages, store.stages(&acme).await.expect("stages"));
    }
}

/// `times` in seconds as the store keys them: by bucket.
fn bucketed(times: Times) -> BTreeMap<(String, String, i32), i64> {
    let mut out = BTreeMap::new();
    for ((month, of, seconds), n) in times {
        *out.entry((month, of, durations::bucket(seconds * 1000))).or_insert(0) += n;
    }
    out
}

pub(super) async fn stays_follow_moves_closes_reopenings_and_owners(store: &dyn AnalyticsStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let late = |day, hour, minute, second| {
        Utc.with_ymd_and_hms(2026, 10, day, hour, minute, second)
            .single()
            .expect("time")
    };
    // a: created in October, moved twice in November, won; b: created, lost, reopened (no
    // stage said), still in; c: another owner's, created on the 28th and left there.
    let mut histories = vec![
        (
            "ann".to_owned(),
            vec![
                (TransitionKind::Created, Some(1), late(30, 9, 0, 0)),
                (TransitionKind::Moved, Some(2), at(2, 9)),
                (TransitionKind::Moved, Some(1), at(2, 9) + chrono::Duration::seconds(40)),
                (TransitionKind::Won, Some(9), at(6, 9)),
            ],
        ),
        (
            "ann".to_owned(),
            vec![
                (TransitionKind::Created, Some(1), at(3, 9)),
                (TransitionKind::Lost, Some(8), at(7, 9)),
                (TransitionKind::Reopened, None, at(8, 10)),
            ],
        ),
        ("cat".to_owned(), vec![(TransitionKind::Created, Some(2), at(28, 9))]),
    ];
    let ids = [a, b, c];
    let changes = |histories: &[History], from: usize| {
        let mut changes = Vec::new();
        for (deal, (owner, steps)) in ids.iter().zip(histories) {
            if from == 0 {
                changes.push((
                    acme.clone(),
                    FactChange::Deal(deal_fact(*deal, owner, None, Outcome::Open, steps[0].2)),
                ));
            }
            for (i, (kind, stage, time)) in steps.iter().enumerate().skip(from) {
                changes.push((
                    acme.clone(),
                    step(*deal, i64::try_from(i).expect("seq") + 1, *kind, *stage, *time),
                ));
            }
        }
        changes
    };
    // The first two transitions of each deal, then the rest in a second batch (the still-open
    // stays of the first batch end in the second).
    let first: Vec<_> = histories
        .iter()
        .map(|(o, s)| (o.clone(), s.iter().take(2).copied().collect::<Vec<_>>()))
        .collect();
    let mut one = changes(&first, 0);
    let theirs = Uuid::now_v7();
    one.push((
        globex.clone(),
        FactChange::Deal(deal_fact(theirs, "gus", None, Outcome::Open, at(2, 9))),
    ));
    one.push((
        globex.clone(),
        step(theirs, 1, TransitionKind::Created, Some(1), at(2, 9)),
    ));
    assert!(store.ingest("c", 0, &batch(1, one)).await.expect("ingest"));
    check(store, november(), &first, "after the first batch").await;
    assert!(
        store
            .ingest("c", 1, &batch(2, changes(&histories, 2)))
            .await
            .expect("ingest")
    );

    // The whole month (from the sums), a range of days inside it (from the stays), and a
    // range across October and November (both).
    for window in ["2026-11", "2026-11-02..2026-11-03", "2026-10-15..2026-11-30", "2026"] {
        let window = Window::parse(window).expect("window");
        check(store, window, &histories, "after the second batch").await;
    }

    // a given to ben (a portfolio transfer): all its stays are his now, none is ann's.
    let transfer = vec![(
        acme.clone(),
        FactChange::Owner {
            record: Record::Deal(a),
            owner: "ben".into(),
            time: at(20, 9),
        },
    )];
    assert!(store.ingest("c", 2, &batch(3, transfer)).await.expect("ingest"));
    histories[0].0 = "ben".into();
    check(
        store,
        Window::parse("2026").expect("year"),
        &histories,
        "after the transfer",
    )
    .await;
    // Each tenant's stays are its own.
    let theirs = store
        .stays(&globex, november(), Grouping::Owner)
        .await
        .expect("stays")
        .cells;
    assert_eq!(
        theirs.iter().map(|c| (c.owner.as_str(), c.stays)).collect::<Vec<_>>(),
        [("gus", 1)]
    );
}
