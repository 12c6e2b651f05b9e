//! One suite both stores must pass: it drives the store (not the app) with batches of fact
//! changes and reads back what the formulas are given.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use crm_platform::TenantId;
use crm_platform::testing::TestDatabase;
use uuid::Uuid;

use super::*;
use crate::domain::*;

mod closes;
mod stays;
use closes::{closes_follow_reopenings_owners_and_lead_sources, cycle_days_have_their_median_per_group};
use stays::stays_follow_moves_closes_reopenings_and_owners;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).single().expect("time")
}

fn november() -> Window {
    Window::parse("2026-11").expect("window")
}

fn deal_fact(id: Uuid, owner: &str, lead: Option<Uuid>, outcome: Outcome, created: DateTime<Utc>) -> DealFact {
    DealFact {
        id,
        pipeline: Uuid::from_u128(7),
        owner: owner.into(),
        lead,
        amount_minor: 125_000,
        currency: "EUR".into(),
        create_time: created,
        outcome,
        close_time: (outcome != Outcome::Open).then_some(at(20, 9)),
        customer: None,
    }
}

fn transition(deal: Uuid, sequence: i64, kind: TransitionKind, time: DateTime<Utc>) -> TransitionFact {
    TransitionFact {
        deal,
        sequence,
        kind,
        from_stage: Some(Uuid::from_u128(1)),
        to_stage: Some(Uuid::from_u128(2)),
        time,
    }
}

fn batch(seq: u64, changes: Vec<(TenantId, FactChange)>) -> IngestBatch {
    IngestBatch {
        source: "crm.pipeline.v1".into(),
        events: i64::try_from(changes.len()).expect("events"),
        changes,
        last: Some((seq, at(28, 12))),
        ..IngestBatch::default()
    }
}

async fn ingest_moves_the_checkpoint_once(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let deal = Uuid::now_v7();
    assert_eq!(store.checkpoint("c").await.expect("checkpoint"), 0);
    let first = batch(
        3,
        vec![(
            acme.clone(),
            FactChange::Deal(deal_fact(deal, "alice", None, Outcome::Open, at(2, 9))),
        )],
    );
    assert!(store.ingest("c", 0, &first).await.expect("ingest"));
    assert_eq!(store.checkpoint("c").await.expect("checkpoint"), 3);
    // A second instance that read the checkpoint before the first moved it applies nothing.
    let late = batch(
        3,
        vec![(
            acme.clone(),
            FactChange::Deal(deal_fact(deal, "bob", None, Outcome::Open, at(2, 9))),
        )],
    );
    assert!(!store.ingest("c", 0, &late).await.expect("ingest"));
    let deals = store.deals_created(&acme, november()).await.expect("deals");
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].deal.owner, "alice", "the refused batch changed nothing");
    let marks = store.watermarks().await.expect("watermarks");
    assert_eq!(marks.len(), 1);
    assert_eq!(
        (marks[0].source.as_str(), marks[0].sequence, marks[0].commit_time),
        ("crm.pipeline.v1", 3, at(28, 12))
    );
    // Kept per consumer, with the events it applied (the refused batch not counted).
    assert_eq!((marks[0].consumer.as_str(), marks[0].events), ("c", 1));
}

async fn facts_come_back_as_the_formulas_need_them(store: &dyn AnalyticsStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (lead, won, lost, later) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let changes = vec![
        (
            acme.clone(),
            FactChange::Lead(LeadFact {
                id: lead,
                owner: "alice".into(),
                source: "web".into(),
                create_time: at(1, 8),
                converted: Some((won, at(3, 8))),
            }),
        ),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(won, "alice", Some(lead), Outcome::Won, at(3, 8))),
        ),
        (
            acme.clone(),
            FactChange::Transition(transition(won, 1, TransitionKind::Created, at(3, 8))),
        ),
        (
            acme.clone(),
            FactChange::Transition(transition(won, 2, TransitionKind::Won, at(20, 9))),
        ),
        // A replayed entry of the history is kept once.
        (
            acme.clone(),
            FactChange::Transition(transition(won, 2, TransitionKind::Won, at(20, 9))),
        ),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(lost, "bob", None, Outcome::Lost, at(4, 8))),
        ),
        (
            acme.clone(),
            FactChange::Transition(transition(lost, 2, TransitionKind::Lost, at(20, 9))),
        ),
        // Closed after the window: not among its closes.
        (
            acme.clone(),
            FactChange::Deal(deal_fact(later, "bob", None, Outcome::Won, at(5, 8))),
        ),
        (
            acme.clone(),
            FactChange::Transition(transition(
                later,
                2,
                TransitionKind::Won,
                Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            )),
        ),
        (
            acme.clone(),
            FactChange::Owner {
                record: Record::Deal(lost),
                owner: "carol".into(),
                time: at(21, 9),
            },
        ),
        // Another tenant's deal, closed in the same window.
        (
            globex.clone(),
            FactChange::Deal(deal_fact(Uuid::now_v7(), "gus", None, Outcome::Won, at(3, 8))),
        ),
    ];
    assert!(store.ingest("c", 0, &batch(11, changes)).await.expect("ingest"));

    let mut cells = store.close_cells(&acme, november()).await.expect("cells");
    cells.sort_by(|a, b| a.owner.cmp(&b.owner));
    let summary: Vec<(&str, Outcome, &str, i64, i128, i128)> = cells
        .iter()
        .map(|c| {
            (
                c.owner.as_str(),
                c.outcome,
                c.lead_source.as_str(),
                c.deals,
                c.amount_minor,
                c.cycle_ms,
            )
        })
        .collect();
    // Won on the 20th at 9:00, created on the 3rd at 8:00; the lost deal is carol's now.
    let won_cycle = i128::from((at(20, 9) - at(3, 8)).num_milliseconds());
    let lost_cycle = i128::from((at(20, 9) - at(4, 8)).num_milliseconds());
    assert_eq!(
        summary,
        [
            ("alice", Outcome::Won, "web", 1, 125_000, won_cycle),
            ("carol", Outcome::Lost, "", 1, 125_000, lost_cycle)
        ]
    );
    assert_eq!(cells[0].month, "2026-11");

    let created = store.deals_created(&acme, november()).await.expect("deals");
    assert_eq!(created.len(), 3, "{created:?}");
    let leads = store.leads_created(&acme, november()).await.expect("leads");
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].lead.converted, Some((won, at(3, 8))));
    assert_eq!(leads[0].deal_outcome, Some(Outcome::Won));
    // Nothing of acme's reaches globex.
    assert_eq!(store.close_cells(&globex, november()).await.expect("cells").len(), 0);
    assert_eq!(store.deals_created(&globex, november()).await.expect("deals").len(), 1);
}

async fn skipped_and_parked_events_are_kept_per_tenant(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let parked = |sequence: i64| Parked {
        source: "crm.pipeline.v1".into(),
        sequence,
        kind: "crm.pipeline.v1.DealWon".into(),
        reason: "the payload does not decode".into(),
        park_time: at(10, sequence as u32),
    };
    let mut first = batch(2, Vec::new());
    first.skipped = vec![(acme.clone(), "crm.pipeline.v1.Future".into())];
    first.parked = vec![("acme".into(), parked(1))];
    assert!(store.ingest("c", 0, &first).await.expect("ingest"));
    let mut second = batch(4, Vec::new());
    second.skipped = vec![(acme.clone(), "crm.pipeline.v1.Future".into())];
    second.parked = vec![("acme".into(), parked(3))];
    assert!(store.ingest("c", 2, &second).await.expect("ingest"));
    let (skipped, parked_events) = store.ingest_problems(&acme).await.expect("problems");
    assert_eq!(
        skipped,
        vec![Skipped {
            source: "crm.pipeline.v1".into(),
            kind: "crm.pipeline.v1.Future".into(),
            count: 2
        }]
    );
    assert_eq!(parked_events, vec![parked(3), parked(1)], "newest first");
    let (skipped, parked_events) = store.ingest_problems(&tenant("globex")).await.expect("problems");
    assert!(skipped.is_empty() && parked_events.is_empty());
}

async fn forecasts_and_quotas_come_back_by_period(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let forecast = |owner: &str, period: &str, amount: i64, day: u32| ForecastFact {
        id: Uuid::now_v7(),
        owner: owner.into(),
        period: period.into(),
        amount_minor: amount,
        currency: "EUR".into(),
        category: CALL_CATEGORY.into(),
        submit_time: at(day, 9),
    };
    let quota = |owner: &str, amount: i64| QuotaFact {
        owner: owner.into(),
        period: "2026-Q4".into(),
        amount_minor: amount,
        currency: "EUR".into(),
    };
    let (first, second, other) = (
        forecast("ann", "2026-Q4", 500, 1),
        forecast("ann", "2026-Q4", 700, 2),
        forecast("ann", "2027-Q1", 9, 3),
    );
    let changes = vec![
        (acme.clone(), FactChange::Forecast(first.clone())),
        (acme.clone(), FactChange::Forecast(second.clone())),
        // A replayed submission is kept once.
        (acme.clone(), FactChange::Forecast(second.clone())),
        (acme.clone(), FactChange::Forecast(other)),
        (acme.clone(), FactChange::Quota(quota("ann", 1000))),
        // The quota set again replaces the first.
        (acme.clone(), FactChange::Quota(quota("ann", 1200))),
        (acme.clone(), FactChange::Quota(quota("ben", 800))),
        (tenant("globex"), FactChange::Quota(quota("gus", 5))),
    ];
    assert!(store.ingest("c", 0, &batch(8, changes)).await.expect("ingest"));
    let mut forecasts = store.forecasts(&acme, "2026-Q4").await.expect("forecasts");
    forecasts.sort_by_key(|f| f.submit_time);
    assert_eq!(forecasts, vec![first, second]);
    assert_eq!(
        store.quotas(&acme, "2026-Q4").await.expect("quotas"),
        vec![quota("ann", 1200), quota("ben", 800)]
    );
    assert!(store.quotas(&acme, "2027-Q1").await.expect("quotas").is_empty());
}

async fn goals_are_kept_as_set(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let goal = |n: u32| Goal {
        id: Uuid::now_v7(),
        spec: GoalSpec {
            display_name: format!("goal {n}"),
            metric: "win-rate".into(),
            owner: n.is_multiple_of(2).then(|| "ann".to_owned()),
            baseline_start: november().start,
            baseline_end: november().end,
            target: Target::Relative(-0.25),
            due: november().end + chrono::Days::new(90),
        },
        baseline: Baseline {
            value: Some(0.25),
            count: 12,
            formula_version: 1,
            watermarks: vec![Watermark {
                source: "crm.pipeline.v1".into(),
                sequence: 42,
                commit_time: at(28, 12),
                consumer: "analytics<-pipeline".into(),
                events: 40,
            }],
            freeze_time: at(30, n),
        },
        created_by: "alice".into(),
        create_time: at(30, n),
    };
    let (first, second) = (goal(1), goal(2));
    store.create_goal(&acme, &first).await.expect("create");
    store.create_goal(&acme, &second).await.expect("create");
    assert_eq!(store.goal(&acme, first.id).await.expect("goal"), Some(first.clone()));
    assert_eq!(
        store.goals(&acme, 10).await.expect("goals"),
        vec![second.clone(), first.clone()],
        "newest first"
    );
    assert_eq!(store.goals(&acme, 1).await.expect("goals"), vec![second]);
    assert_eq!(store.goal(&tenant("globex"), first.id).await.expect("goal"), None);
    assert!(store.goals(&tenant("globex"), 10).await.expect("goals").is_empty());
}

/// The changes of one batch land as if applied one by one, in order, whatever the store
/// groups: a record's last state wins, an owner change applies to the state before it.
async fn changes_in_one_batch_apply_in_order(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let (earlier, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let first = batch(
        1,
        vec![(
            acme.clone(),
            FactChange::Deal(deal_fact(earlier, "ann", None, Outcome::Open, at(2, 9))),
        )],
    );
    assert!(store.ingest("c", 0, &first).await.expect("ingest"));
    let owner = |record, owner: &str| FactChange::Owner {
        record,
        owner: owner.into(),
        time: at(5, 9),
    };
    let changes = vec![
        // An owner change of a deal of an earlier batch.
        (acme.clone(), owner(Record::Deal(earlier), "ben")),
        // A deal created, moved to another owner, then updated (its update carries the owner).
        (
            acme.clone(),
            FactChange::Deal(deal_fact(a, "ann", None, Outcome::Open, at(3, 9))),
        ),
        (acme.clone(), owner(Record::Deal(a), "cat")),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(a, "cat", None, Outcome::Won, at(3, 9))),
        ),
        // A deal moved before its state arrives again in the same batch: the state wins.
        (acme.clone(), owner(Record::Deal(b), "dan")),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(b, "eve", None, Outcome::Open, at(4, 9))),
        ),
        (acme.clone(), owner(Record::Deal(a), "fay")),
    ];
    assert!(store.ingest("c", 1, &batch(8, changes)).await.expect("ingest"));
    let mut deals: Vec<(Uuid, String, Outcome)> = store
        .deals_created(&acme, november())
        .await
        .expect("deals")
        .into_iter()
        .map(|r| (r.deal.id, r.deal.owner, r.deal.outcome))
        .collect();
    deals.sort_by_key(|d| d.0);
    let mut expected = vec![
        (earlier, "ben".to_owned(), Outcome::Open),
        (a, "fay".to_owned(), Outcome::Won),
        (b, "eve".to_owned(), Outcome::Open),
    ];
    expected.sort_by_key(|d| d.0);
    assert_eq!(deals, expected);
}

/// Stays in a stage end at the deal's next transition; the deals open at an instant stand in
/// their stage then, with their owner and amount then; a pipeline's stages are as its last
/// event orders them, per tenant.
async fn stages_stays_and_the_pipeline_as_of_an_instant(store: &dyn AnalyticsStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let pipeline = Uuid::from_u128(7);
    let (s1, s2, won_stage) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let stage = |stage, position, kind| StageFact {
        pipeline,
        stage,
        position,
        kind,
    };
    let step = |deal, sequence, kind, from, to, time| TransitionFact {
        deal,
        sequence,
        kind,
        from_stage: from,
        to_stage: to,
        time,
    };
    let version = |deal, time, owner: &str, amount| {
        FactChange::Version(DealVersion {
            deal,
            time,
            owner: owner.into(),
            amount_minor: amount,
            currency: "EUR".into(),
        })
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let changes = vec![
        (
            acme.clone(),
            FactChange::Stages {
                pipeline,
                stages: vec![stage(s2, 0, StageKind::Open), stage(s1, 1, StageKind::Open)],
            },
        ),
        // The pipeline reordered in the same batch: its last order counts.
        (
            acme.clone(),
            FactChange::Stages {
                pipeline,
                stages: vec![
                    stage(s1, 0, StageKind::Open),
                    stage(s2, 1, StageKind::Open),
                    stage(won_stage, 2, StageKind::Won),
                ],
            },
        ),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(a, "ann", None, Outcome::Won, at(2, 9))),
        ),
        (acme.clone(), version(a, at(2, 9), "ann", 100)),
        (acme.clone(), version(a, at(5, 9), "ann", 300)),
        (acme.clone(), version(a, at(5, 9), "ben", 400)),
        (
            acme.clone(),
            FactChange::Transition(step(a, 1, TransitionKind::Created, None, Some(s1), at(2, 9))),
        ),
        (
            acme.clone(),
            FactChange::Transition(step(a, 2, TransitionKind::Moved, Some(s1), Some(s2), at(4, 9))),
        ),
        (
            acme.clone(),
            FactChange::Transition(step(a, 3, TransitionKind::Won, Some(s2), Some(won_stage), at(20, 9))),
        ),
        (
            acme.clone(),
            FactChange::Deal(deal_fact(b, "cat", None, Outcome::Open, at(10, 9))),
        ),
        (
            acme.clone(),
            FactChange::Transition(step(b, 1, TransitionKind::Created, None, Some(s1), at(10, 9))),
        ),
        (
            globex.clone(),
            FactChange::Stages {
                pipeline,
                stages: vec![stage(s1, 0, StageKind::Open)],
            },
        ),
    ];
    assert!(store.ingest("c", 0, &batch(12, changes)).await.expect("ingest"));

    let stages = store.stages(&acme).await.expect("stages");
    let order: Vec<(Uuid, i32)> = stages.iter().map(|s| (s.stage, s.position)).collect();
    assert_eq!(order, [(s1, 0), (s2, 1), (won_stage, 2)]);
    assert_eq!(store.stages(&globex).await.expect("stages").len(), 1);

    // The stays as the funnel by owner reads them, every month together (see stays.rs for
    // the other groupings, ends and durations).
    let key = |c: &StayCell| (c.owner.clone(), c.stage);
    let mut cells = store
        .stays(&acme, november(), Grouping::Owner)
        .await
        .expect("stays")
        .cells;
    cells.sort_by_key(key);
    let cell = |stage, owner: &str, end| StayCell {
        month: String::new(),
        pipeline,
        stage: Some(stage),
        owner: owner.into(),
        end,
        stays: 1,
    };
    let mut expected = vec![
        cell(s1, "ann", Some((TransitionKind::Moved, Some(s2)))),
        cell(s2, "ann", Some((TransitionKind::Won, Some(won_stage)))),
        cell(s1, "cat", None),
    ];
    expected.sort_by_key(key);
    assert_eq!(cells, expected);
    let early = Window::parse("2026-11-01..2026-11-03").expect("window");
    assert_eq!(
        store
            .stays(&acme, early, Grouping::Stage)
            .await
            .expect("stays")
            .cells
            .len(),
        1
    );
    assert!(
        store
            .stays(&globex, november(), Grouping::Stage)
            .await
            .expect("stays")
            .cells
            .is_empty()
    );

    let open = |instant| async move {
        let mut open = store.open_at(&tenant("acme"), instant).await.expect("open");
        open.sort_by_key(|o| o.deal);
        open.into_iter()
            .map(|o| (o.deal, o.stage, o.owner, o.amount_minor))
            .collect::<Vec<_>>()
    };
    // Before anything: nothing open. On the 3rd: a in its first stage, at its first amount.
    assert!(open(at(1, 0)).await.is_empty());
    assert_eq!(open(at(3, 0)).await, [(a, Some(s1), "ann".to_owned(), 100)]);
    // On the 12th: a moved and re-valued (the last event of a time wins), b created.
    let mut both = vec![
        (a, Some(s2), "ben".to_owned(), 400),
        (b, Some(s1), "cat".to_owned(), 125_000),
    ];
    both.sort_by_key(|o| o.0);
    assert_eq!(open(at(12, 0)).await, both);
    // After a was won: only b.
    assert_eq!(open(at(21, 0)).await, [(b, Some(s1), "cat".to_owned(), 125_000)]);
    assert!(store.open_at(&globex, at(21, 0)).await.expect("open").is_empty());
}

fn customer(id: Uuid, kind: CustomerKind, time: DateTime<Utc>, created: bool, change: ProfileChange) -> FactChange {
    FactChange::Customer(CustomerChange {
        id,
        kind,
        time,
        created,
        change,
    })
}

fn created_profile(owner: &str) -> ProfileChange {
    ProfileChange {
        owner: Some(owner.into()),
        lifecycle: Some(String::new()),
        source: Some("web".into()),
        company: Some(None),
        has_email: Some(false),
        has_phone: Some(false),
        has_consent: Some(false),
    }
}

fn interaction(id: Uuid, contact: Uuid, time: DateTime<Utc>) -> InteractionFact {
    InteractionFact {
        id,
        contact,
        company: None,
        kind: "support_ticket".into(),
        direction: "inbound".into(),
        channel: "email".into(),
        time,
        duration_ms: 60_000,
        campaign: String::new(),
        actor: "ann".into(),
    }
}

/// The contact feed's facts: changes field by field (in one batch or across batches), each
/// change's owner after it, merges re-pointing deals and interactions to the survivor, what
/// a user who left still owns, and every tenant apart.
async fn contacts_and_companies_come_back_as_the_formulas_need_them(store: &dyn AnalyticsStore) {
    use CustomerKind::{Company, Contact};
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (ann_c, ben_c, dup, firm) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let first = vec![
        (
            acme.clone(),
            customer(firm, Company, at(1, 8), true, created_profile("ann")),
        ),
        (
            acme.clone(),
            customer(ann_c, Contact, at(1, 9), true, created_profile("ann")),
        ),
        // Changed in the same batch: an email and the firm, then a phone.
        (
            acme.clone(),
            customer(
                ann_c,
                Contact,
                at(2, 9),
                false,
                ProfileChange {
                    has_email: Some(true),
                    company: Some(Some(firm)),
                    ..ProfileChange::default()
                },
            ),
        ),
        (
            acme.clone(),
            customer(
                ann_c,
                Contact,
                at(3, 9),
                false,
                ProfileChange {
                    has_phone: Some(true),
                    ..ProfileChange::default()
                },
            ),
        ),
        (
            acme.clone(),
            customer(ben_c, Contact, at(1, 10), true, created_profile("ben")),
        ),
        (
            acme.clone(),
            customer(dup, Contact, at(1, 11), true, created_profile("ben")),
        ),
        (
            acme.clone(),
            FactChange::Lifecycle(LifecycleFact {
                customer: ann_c,
                time: at(2, 9),
                from: String::new(),
                to: "customer".into(),
            }),
        ),
        (
            acme.clone(),
            FactChange::Interaction(interaction(Uuid::now_v7(), dup, at(4, 9))),
        ),
        (
            globex.clone(),
            customer(Uuid::now_v7(), Contact, at(1, 9), true, created_profile("gus")),
        ),
    ];
    assert!(store.ingest("c", 0, &batch(5, first)).await.expect("ingest"));
    // A deal with the duplicate, won; then the duplicate merged into Ben's contact, Ben leaves
    // (his contact moves to Cat), and a consent answered in a later batch.
    let mut deal = deal_fact(Uuid::now_v7(), "ben", None, Outcome::Won, at(2, 9));
    deal.customer = Some(dup);
    let second = vec![
        (acme.clone(), FactChange::Deal(deal.clone())),
        (
            acme.clone(),
            FactChange::Lead(LeadFact {
                id: Uuid::now_v7(),
                owner: "ben".into(),
                source: "web".into(),
                create_time: at(2, 9),
                converted: None,
            }),
        ),
        (
            acme.clone(),
            FactChange::CustomerGone {
                id: dup,
                kind: Contact,
                time: at(5, 9),
                gone: Gone::Merged(ben_c),
            },
        ),
        (
            acme.clone(),
            customer(
                ben_c,
                Contact,
                at(6, 9),
                false,
                ProfileChange {
                    owner: Some("cat".into()),
                    ..ProfileChange::default()
                },
            ),
        ),
        (
            acme.clone(),
            FactChange::Transfer(TransferFact {
                resource: format!("contacts/{ben_c}"),
                time: at(6, 9),
                from: "ben".into(),
                to: "cat".into(),
            }),
        ),
        (
            acme.clone(),
            customer(
                ann_c,
                Contact,
                at(7, 9),
                false,
                ProfileChange {
                    has_consent: Some(true),
                    ..ProfileChange::default()
                },
            ),
        ),
    ];
    assert!(store.ingest("c", 5, &batch(9, second)).await.expect("ingest"));

    // Profiles as they are now: Ann's contact has everything; Cat holds Ben's; the merged
    // duplicate is gone.
    let counts = store.profile_counts(&acme, at(28, 0)).await.expect("counts");
    let summary: Vec<(&str, i64, i64, i64, i64, i64)> = counts
        .iter()
        .map(|c| (c.owner.as_str(), c.contacts, c.email, c.phone, c.company, c.consent))
        .collect();
    assert_eq!(summary, [("ann", 1, 1, 1, 1, 1), ("cat", 1, 0, 0, 0, 0)]);
    assert_eq!(store.profile_counts(&globex, at(28, 0)).await.expect("counts").len(), 1);

    // Each record's last change before an instant, with its owner then.
    let changes = |instant| async move {
        let mut changes: Vec<(Uuid, String, DateTime<Utc>)> = store
            .last_changes(&tenant("acme"), instant)
            .await
            .expect("changes")
            .into_iter()
            .map(|c| (c.customer, c.owner, c.time))
            .collect();
        changes.sort();
        changes
    };
    let mut on_the_4th = vec![
        (firm, "ann".to_owned(), at(1, 8)),
        (ann_c, "ann".to_owned(), at(3, 9)),
        (ben_c, "ben".to_owned(), at(1, 10)),
        (dup, "ben".to_owned(), at(1, 11)),
    ];
    on_the_4th.sort();
    assert_eq!(changes(at(4, 0)).await, on_the_4th);
    let mut later = vec![
        (firm, "ann".to_owned(), at(1, 8)),
        (ann_c, "ann".to_owned(), at(7, 9)),
        (ben_c, "cat".to_owned(), at(6, 9)),
    ];
    later.sort();
    assert_eq!(changes(at(28, 0)).await, later, "the merged duplicate is gone");

    // The merge re-pointed the deal and the interaction to the survivor.
    let wins = store.customer_wins(&acme, at(28, 0)).await.expect("wins");
    assert_eq!(wins.iter().map(|d| d.customer).collect::<Vec<_>>(), [Some(ben_c)]);
    let tickets = store
        .interactions(&acme, Interactions::OfKind("support_ticket"), at(1, 0), at(28, 0))
        .await
        .expect("interactions");
    assert_eq!(tickets.iter().map(|i| i.contact).collect::<Vec<_>>(), [ben_c]);
    assert!(
        store
            .interactions(&acme, Interactions::OfCampaigns, at(1, 0), at(28, 0))
            .await
            .expect("interactions")
            .is_empty()
    );
    // A deal event after the merge that still names the duplicate lands on the survivor.
    assert!(
        store
            .ingest("c", 9, &batch(10, vec![(acme.clone(), FactChange::Deal(deal))]))
            .await
            .expect("ingest")
    );
    let wins = store.customer_wins(&acme, at(28, 0)).await.expect("wins");
    assert_eq!(wins.iter().map(|d| d.customer).collect::<Vec<_>>(), [Some(ben_c)]);

    let lifecycles = store.lifecycles(&acme, at(28, 0)).await.expect("lifecycles");
    assert_eq!(lifecycles.len(), 1);
    assert_eq!((lifecycles[0].customer, lifecycles[0].to.as_str()), (ann_c, "customer"));

    // Ben left: his lead is left behind; the transfer is counted in its window.
    let mut behind = store.left_behind(&acme, at(28, 0)).await.expect("left behind");
    behind.sort_by(|a, b| (&a.owner, &a.kind).cmp(&(&b.owner, &b.kind)));
    let behind: Vec<(&str, &str, i64)> = behind
        .iter()
        .map(|b| (b.owner.as_str(), b.kind.as_str(), b.count))
        .collect();
    assert_eq!(
        behind,
        [("ben", "", 0), ("ben", "leads", 1)],
        "the lead the transfer missed"
    );
    assert_eq!(store.transfers(&acme, november()).await.expect("transfers").len(), 1);
    assert!(
        store
            .transfers(&globex, november())
            .await
            .expect("transfers")
            .is_empty()
    );
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let pool = crm_platform::db::open_sqlite(&dir.path().join("analytics.db"), &super::SQLITE_MIGRATIONS).await.expect("sqlite");
                    super::$case(&super::SqliteAnalyticsStore::new(pool)).await;
                }
            )+
        }

        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDatabase::create(concat!("analytics_", stringify!($case))).await else { return };
                    crm_platform::db::migrate_postgres(&db.url, &super::POSTGRES_MIGRATIONS).await.expect("migrate");
                    let pool = crm_platform::db::connect_postgres(&db.url, super::POSTGRES_APP_ROLE, 4).await.expect("connect");
                    super::$case(&super::PgAnalyticsStore::start(pool.clone()).await.expect("outbox")).await;
                    db.drop_database().await;
                }
            )+
        }
    };
}

conformance!(
    ingest_moves_the_checkpoint_once,
    facts_come_back_as_the_formulas_need_them,
    skipped_and_parked_events_are_kept_per_tenant,
    forecasts_and_quotas_come_back_by_period,
    goals_are_kept_as_set,
    changes_in_one_batch_apply_in_order,
    stages_stays_and_the_pipeline_as_of_an_instant,
    contacts_and_companies_come_back_as_the_formulas_need_them,
    closes_follow_reopenings_owners_and_lead_sources,
    cycle_days_have_their_median_per_group,
    a_deal_given_to_another_owner_is_theirs_from_then,
    stays_follow_moves_closes_reopenings_and_owners,
);

/// A portfolio transfer of a deal (OwnerChanged, no update of the deal) makes the deal the new
/// owner's in the pipeline as of any instant after it, with its amount, and leaves it the old
/// owner's before it.
async fn a_deal_given_to_another_owner_is_theirs_from_then(store: &dyn AnalyticsStore) {
    let acme = tenant("acme");
    let deal = deal_fact(Uuid::now_v7(), "ann", None, Outcome::Open, at(2, 9));
    let changes = vec![
        (acme.clone(), FactChange::Deal(deal.clone())),
        (
            acme.clone(),
            FactChange::Version(DealVersion {
                deal: deal.id,
                time: at(2, 9),
                owner: "ann".into(),
                amount_minor: 125_000,
                currency: "EUR".into(),
            }),
        ),
        (
            acme.clone(),
            FactChange::Transition(transition(deal.id, 1, TransitionKind::Created, at(2, 9))),
        ),
    ];
    assert!(store.ingest("c", 0, &batch(3, changes)).await.expect("ingest"));
    let transfer = vec![(
        acme.clone(),
        FactChange::Owner {
            record: Record::Deal(deal.id),
            owner: "ben".into(),
            time: at(10, 9),
        },
    )];
    assert!(store.ingest("c", 3, &batch(4, transfer)).await.expect("ingest"));
    let owners = |open: Vec<OpenDeal>| -> Vec<(String, i64, String)> {
        open.into_iter()
            .map(|d| (d.owner, d.amount_minor, d.currency))
            .collect()
    };
    assert_eq!(
        owners(store.open_at(&acme, at(5, 0)).await.expect("open")),
        [("ann".to_owned(), 125_000, "EUR".to_owned())]
    );
    assert_eq!(
        owners(store.open_at(&acme, at(12, 0)).await.expect("open")),
        [("ben".to_owned(), 125_000, "EUR".to_owned())]
    );
}

/// Row-level security is the second wall: SQL without a tenant condition, run as the serving
/// role, sees only the pinned tenant's facts.
#[tokio::test]
async fn postgres_row_level_security_is_forced() {
    let Some(db) = TestDatabase::create("analytics_row_level_security_is_forced").await else {
        return;
    };
    crm_platform::db::migrate_postgres(&db.url, &POSTGRES_MIGRATIONS)
        .await
        .expect("migrate");
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
        .await
        .expect("connect");
    let store = Arc::new(PgAnalyticsStore::start(pool.clone()).await.expect("outbox"));
    let changes = ["acme", "globex"]
        .into_iter()
        .map(|t| {
            (
                tenant(t),
                FactChange::Deal(deal_fact(Uuid::now_v7(), "x", None, Outcome::Open, at(2, 9))),
            )
        })
        .collect();
    assert!(store.ingest("c", 0, &batch(2, changes)).await.expect("ingest"));
    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("acme"))
        .await
        .expect("tx");
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM deal_facts")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(visible, 1, "tenant acme sees only its own deal");
    let sneaky = sqlx::query("UPDATE deal_facts SET owner = 'mallory' WHERE tenant_id = 'globex'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(sneaky.rows_affected(), 0, "other tenants' rows cannot be addressed");
    drop(tx);
    db.drop_database().await;
}
