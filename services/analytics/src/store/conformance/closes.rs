//! The closes a period counts, and their cells, as deals close, reopen, change owner and their
//! leads change source.

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crm_platform::TenantId;

use super::{at, batch, deal_fact, november, tenant, transition};
use crate::domain::facts::cells_of;
use crate::domain::*;
use crate::store::AnalyticsStore;

/// The largest amount a deal can have, less one: three of them in one cell test that the
/// cells' sums come back exact.
const LARGE: i64 = 999_999_999_999_999;

fn close(deal: &DealFact, outcome: Outcome, time: DateTime<Utc>, lead_source: &str) -> Close {
    Close {
        deal: deal.id,
        outcome,
        time,
        owner: deal.owner.clone(),
        pipeline: deal.pipeline,
        lead_source: lead_source.into(),
        amount_minor: deal.amount_minor,
        currency: deal.currency.clone(),
        create_time: deal.create_time,
    }
}

fn lead(id: Uuid, source: &str) -> LeadFact {
    LeadFact {
        id,
        owner: "alice".into(),
        source: source.into(),
        create_time: at(1, 8),
        converted: None,
    }
}

/// The cycle times `closes` make under `key`, worked out here: the won ones counted per group
/// and bucket of their cycles, sorted.
fn cycles_of(closes: &[Close], key: impl Fn(&Close) -> String) -> Vec<CycleTimes> {
    let mut counts: std::collections::BTreeMap<(String, i32), i64> = std::collections::BTreeMap::new();
    for close in closes.iter().filter(|c| c.outcome == Outcome::Won) {
        let bucket = durations::bucket((close.time - close.create_time).num_milliseconds());
        *counts.entry((key(close), bucket)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((group, bucket), deals)| CycleTimes { group, bucket, deals })
        .collect()
}

async fn cycles(store: &dyn AnalyticsStore, tenant: &TenantId, window: Window, grouping: Grouping) -> Vec<CycleTimes> {
    let mut times = store.cycles(tenant, window, grouping).await.expect("cycles").times;
    times.sort();
    times
}

fn sorted_cells(mut cells: Vec<CloseCell>) -> Vec<CloseCell> {
    cells.sort_by(|a, b| {
        (&a.owner, &a.lead_source, &a.month, a.outcome.as_str(), &a.currency).cmp(&(
            &b.owner,
            &b.lead_source,
            &b.month,
            b.outcome.as_str(),
            &b.currency,
        ))
    });
    cells
}

pub(super) async fn closes_follow_reopenings_owners_and_lead_sources(store: &dyn AnalyticsStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let source = Uuid::now_v7();
    // Won on the 5th, reopened on the 10th, lost on the 20th.
    let a = deal_fact(Uuid::now_v7(), "alice", Some(source), Outcome::Lost, at(2, 8));
    // Won and reopened on the 3rd: open, never counted over whole days.
    let b = deal_fact(Uuid::now_v7(), "bob", None, Outcome::Open, at(1, 8));
    // Created in October, won on the 12th by bob, then given to carol.
    let mut c = deal_fact(
        Uuid::now_v7(),
        "bob",
        None,
        Outcome::Won,
        Utc.with_ymd_and_hms(2026, 10, 30, 17, 30, 0).unwrap(),
    );
    let large: Vec<DealFact> = (0..3)
        .map(|_| {
            let mut d = deal_fact(Uuid::now_v7(), "carol", None, Outcome::Won, at(1, 8));
            d.amount_minor = LARGE;
            d
        })
        .collect();
    let mut changes = vec![
        (acme.clone(), FactChange::Lead(lead(source, "web"))),
        (acme.clone(), FactChange::Deal(a.clone())),
        (acme.clone(), FactChange::Deal(b.clone())),
        (acme.clone(), FactChange::Deal(c.clone())),
    ];
    for (deal, sequence, kind, time) in [
        (&a, 1, TransitionKind::Created, at(2, 8)),
        (&a, 2, TransitionKind::Won, at(5, 9)),
        (&a, 3, TransitionKind::Reopened, at(10, 9)),
        (&a, 4, TransitionKind::Lost, at(20, 9)),
        (&b, 1, TransitionKind::Created, at(1, 8)),
        (&b, 2, TransitionKind::Won, at(3, 9)),
        (&b, 3, TransitionKind::Reopened, at(3, 15)),
        (&c, 2, TransitionKind::Won, at(12, 10)),
    ] {
        changes.push((
            acme.clone(),
            FactChange::Transition(transition(deal.id, sequence, kind, time)),
        ));
    }
    for deal in &large {
        changes.push((acme.clone(), FactChange::Deal(deal.clone())));
        changes.push((
            acme.clone(),
            FactChange::Transition(transition(deal.id, 2, TransitionKind::Won, at(12, 11))),
        ));
    }
    let g = deal_fact(Uuid::now_v7(), "gus", None, Outcome::Won, at(1, 8));
    changes.push((globex.clone(), FactChange::Deal(g.clone())));
    changes.push((
        globex.clone(),
        FactChange::Transition(transition(g.id, 2, TransitionKind::Won, at(12, 10))),
    ));
    assert!(store.ingest("c", 0, &batch(10, changes)).await.expect("ingest"));

    let mut expected = vec![
        close(&a, Outcome::Lost, at(20, 9), "web"),
        close(&c, Outcome::Won, at(12, 10), ""),
    ];
    expected.extend(large.iter().map(|d| close(d, Outcome::Won, at(12, 11), "")));
    assert_eq!(
        cycles(store, &acme, november(), Grouping::Owner).await,
        cycles_of(&expected, |c| c.owner.clone())
    );
    let cells = store.close_cells(&acme, november()).await.expect("cells");
    assert_eq!(sorted_cells(cells), sorted_cells(cells_of(&expected)));
    let carol = cells_of(&expected)
        .into_iter()
        .find(|cell| cell.owner == "carol")
        .expect("carol's cell");
    assert_eq!(carol.amount_minor, 3 * i128::from(LARGE), "exact past 10^9 minor units");

    // The first week: a's win counts (its reopening came after the week); b's does not.
    let week = Window::parse("2026-11-01..2026-11-07").expect("window");
    let first_week = vec![close(&a, Outcome::Won, at(5, 9), "web")];
    assert_eq!(
        cycles(store, &acme, week, Grouping::Tenant).await,
        cycles_of(&first_week, |_| String::new())
    );
    assert_eq!(
        store.close_cells(&acme, week).await.expect("cells"),
        cells_of(&first_week)
    );
    // The 3rd alone: b won and reopened within it.
    let third = Window::parse("2026-11-03..2026-11-03").expect("window");
    assert!(store.close_cells(&acme, third).await.expect("cells").is_empty());

    // c goes to carol; the lead of a now says it came from ads.
    let changes = vec![
        (
            acme.clone(),
            FactChange::Owner {
                record: Record::Deal(c.id),
                owner: "carol".into(),
                time: at(25, 9),
            },
        ),
        (acme.clone(), FactChange::Lead(lead(source, "ads"))),
    ];
    assert!(store.ingest("c", 10, &batch(20, changes)).await.expect("ingest"));
    c.owner = "carol".into();
    let mut expected = vec![
        close(&a, Outcome::Lost, at(20, 9), "ads"),
        close(&c, Outcome::Won, at(12, 10), ""),
    ];
    expected.extend(large.iter().map(|d| close(d, Outcome::Won, at(12, 11), "")));
    assert_eq!(
        cycles(store, &acme, november(), Grouping::Owner).await,
        cycles_of(&expected, |c| c.owner.clone())
    );
    assert_eq!(
        cycles(store, &acme, november(), Grouping::LeadSource).await,
        cycles_of(&expected, |c| c.lead_source.clone())
    );
    let cells = sorted_cells(store.close_cells(&acme, november()).await.expect("cells"));
    assert_eq!(cells, sorted_cells(cells_of(&expected)));
    assert!(
        cells.iter().all(|cell| cell.owner != "bob"),
        "bob has nothing left: {cells:?}"
    );

    // Nothing of acme's reaches globex, and the other way round.
    let theirs = store.close_cells(&globex, november()).await.expect("cells");
    assert_eq!(theirs, cells_of(&[close(&g, Outcome::Won, at(12, 10), "")]));
}

pub(super) async fn cycle_days_have_their_median_per_group(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    // Won on the 12th after 1, 2, 4 and 10 days (ann: an even count), and after 3 and 7 days
    // and half a day (ben: odd), one in October; a loss, which has no cycle.
    let won = |owner: &str, days_before: i64, month: u32| {
        let time = Utc.with_ymd_and_hms(2026, month, 12, 15, 0, 0).unwrap();
        let mut deal = deal_fact(
            Uuid::now_v7(),
            owner,
            None,
            Outcome::Won,
            time - chrono::Duration::hours(days_before * 12),
        );
        deal.pipeline = Uuid::from_u128(u128::from(month));
        (deal, time)
    };
    let deals: Vec<(DealFact, DateTime<Utc>)> = vec![
        won("ann", 2, 11),
        won("ann", 4, 11),
        won("ann", 8, 11),
        won("ann", 20, 11),
        won("ben", 6, 11),
        won("ben", 14, 11),
        won("ben", 1, 10),
    ];
    let lost = deal_fact(Uuid::now_v7(), "ann", None, Outcome::Lost, at(1, 8));
    let mut changes = vec![
        (acme.clone(), FactChange::Deal(lost.clone())),
        (
            acme.clone(),
            FactChange::Transition(transition(lost.id, 2, TransitionKind::Lost, at(12, 9))),
        ),
    ];
    for (deal, time) in &deals {
        changes.push((acme.clone(), FactChange::Deal(deal.clone())));
        changes.push((
            acme.clone(),
            FactChange::Transition(transition(deal.id, 2, TransitionKind::Won, *time)),
        ));
    }
    assert!(store.ingest("c", 0, &batch(5, changes)).await.expect("ingest"));
    let closes: Vec<Close> = deals
        .iter()
        .map(|(deal, time)| close(deal, Outcome::Won, *time, ""))
        .chain(std::iter::once(close(&lost, Outcome::Lost, at(12, 9), "")))
        .collect();
    let autumn = Window::parse("2026-10-01..2026-11-30").expect("window");
    for (grouping, key) in [
        (
            Grouping::Tenant,
            Box::new(|_: &Close| String::new()) as Box<dyn Fn(&Close) -> String>,
        ),
        (Grouping::Owner, Box::new(|c: &Close| c.owner.clone())),
        (
            Grouping::Month,
            Box::new(|c: &Close| c.time.format("%Y-%m").to_string()),
        ),
        (
            Grouping::Pipeline,
            Box::new(|c: &Close| format!("pipelines/{}", c.pipeline)),
        ),
    ] {
        assert_eq!(
            cycles(store, &acme, autumn, grouping).await,
            cycles_of(&closes, key),
            "{grouping:?}"
        );
    }
    // Ann's four: 1, 2, 4, 10 days; the median is the mean of 2 and 4 (to within 1/64).
    let read = store.cycles(&acme, november(), Grouping::Owner).await.expect("cycles");
    assert_eq!(read.cells, store.close_cells(&acme, november()).await.expect("cells"));
    let ann = &crate::domain::metrics::sales_cycle_days(&read, Grouping::Owner)[0];
    assert_eq!((ann.group.as_str(), ann.count), ("ann", 4));
    assert!((ann.parts["median"] - 3.0).abs() <= 3.0 / 64.0, "{ann:?}");
    assert!(
        cycles(store, &tenant("globex"), autumn, Grouping::Tenant)
            .await
            .is_empty()
    );
}
