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

/// The stays the store gives, in the shape of `expected` (durations by their buckets).
async fn read(
    store: &dyn AnalyticsStore,
    window: Window,
) -> (
    Cells,
    BTreeMap<(String, String, i32), i64>,
    BTreeMap<(String, String, i32), i64>,
) {
    let acme = tenant("acme");
    let by_stage = store.stays(&acme, window, false).await.expect("stays");
    let by_owner = store.stays(&acme, window, true).await.expect("stays");
    assert_eq!(by_stage.stages, by_owner.stages);
    let cells: Cells = by_owner
        .cells
        .iter()
        .cloned()
        .map(|c| ((c.month, c.stage, c.owner, c.end), c.stays))
        .collect();
    // By stage, every owner's stays together.
    let mut together = Cells::new();
    for ((month, stage, _, end), n) in &cells {
        *together
            .entry((month.clone(), *stage, String::new(), *end))
            .or_default() += n;
    }
    let by_stage_cells: Cells = by_stage
        .cells
        .iter()
        .cloned()
        .map(|c| ((c.month, c.stage, c.owner, c.end), c.stays))
        .collect();
    assert_eq!(by_stage_cells, together, "{window:?}");
    let times = |stays: Stays| {
        stays
            .times
            .into_iter()
            .map(|t| {
                let of = match t.of {
                    StaysOf::Stage { stage, .. } => format!("{stage:?}"),
                    StaysOf::Owner(owner) => owner,
                };
                ((t.month, of, t.bucket), t.stays)
            })
            .fold(BTreeMap::new(), |mut all, (key, n)| {
                *all.entry(key).or_insert(0) += n;
                all
            })
    };
    (cells, times(by_stage), times(by_owner))
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
    let (cells, by_stage, by_owner) = read(store, november()).await;
    let (want, want_stage, want_owner) = expected(&first, november().start_time(), november().end_time());
    assert_eq!(cells, want, "after the first batch");
    assert_eq!((by_stage, by_owner), (bucketed(want_stage), bucketed(want_owner)));
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
        let (cells, by_stage, by_owner) = read(store, window).await;
        let (want, want_stage, want_owner) = expected(&histories, window.start_time(), window.end_time());
        assert_eq!(cells, want, "{window:?}");
        assert_eq!(by_stage, bucketed(want_stage), "{window:?}");
        assert_eq!(by_owner, bucketed(want_owner), "{window:?}");
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
    let (cells, by_stage, by_owner) = read(store, Window::parse("2026").expect("year")).await;
    let year = Window::parse("2026").expect("year");
    let (want, want_stage, want_owner) = expected(&histories, year.start_time(), year.end_time());
    assert_eq!(cells, want, "after the transfer");
    assert_eq!((by_stage, by_owner), (bucketed(want_stage), bucketed(want_owner)));
    // Each tenant's stays are its own.
    let theirs = store.stays(&globex, november(), true).await.expect("stays").cells;
    assert_eq!(
        theirs.iter().map(|c| (c.owner.as_str(), c.stays)).collect::<Vec<_>>(),
        [("gus", 1)]
    );
}
