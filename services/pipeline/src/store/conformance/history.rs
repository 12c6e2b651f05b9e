//! Imported history: records keep their original times, their events tell the same story
//! with the same times, a re-run changes nothing, and a bad row writes nothing.

use chrono::{DateTime, Utc};

use super::*;
use crate::app::{HistoricalDeal, HistoricalLead, Imported, Pipelines, StageEntry};

fn at(day: &str) -> DateTime<Utc> {
    format!("{day}T09:30:00Z").parse().expect("time")
}

fn won_deal(external_id: &str) -> HistoricalDeal {
    HistoricalDeal {
        external_id: external_id.into(),
        name: "Old analytical engine".into(),
        // By name, in another case: what a user exporting from an earlier system knows.
        pipeline: "new BUSINESS".into(),
        owner: Some("bob".into()),
        amount: eur(120_000),
        contact: Some(ContactRef(CONTACT_A)),
        company: Some(CompanyRef(COMPANY_A)),
        create_time: at("2024-01-10"),
        stages: vec![
            StageEntry {
                stage: "qualify".into(),
                time: None,
            },
            StageEntry {
                stage: "Proposal".into(),
                time: Some(at("2024-02-01")),
            },
        ],
        status: DealStatus::Won,
        close_time: Some(at("2024-03-15")),
        close_reason: "price".into(),
        lead: Some(("referral".into(), Some(at("2024-01-02")))),
    }
}

fn created(done: Imported) -> String {
    match done {
        Imported::Created(Some(name)) => name,
        other => panic!("expected a created record, got {other:?}"),
    }
}

pub(super) async fn deals_and_leads_are_imported_with_their_original_times(fx: &Fixture) {
    let who = admin();
    pipeline(fx, &who).await;
    let mut pipelines = Pipelines::default();
    let before = fx.events("acme").await.len();

    let name = created(
        fx.app
            .import_deal(&who, &mut pipelines, won_deal("old-1"), false)
            .await
            .expect("import"),
    );
    let id = DealId::parse_name(&name).expect("deal name");
    let deal = fx.app.get_deal(&who, id).await.expect("deal");
    assert_eq!(deal.create_time, at("2024-01-10"));
    assert_eq!(deal.update_time, at("2024-03-15"));
    assert_eq!(deal.body.status, DealStatus::Won);
    assert_eq!(deal.body.close_time, Some(at("2024-03-15")));
    assert_eq!(deal.body.owner, "bob");
    assert_eq!(deal.body.external_id.as_deref(), Some("old-1"));
    let history: Vec<_> = fx
        .app
        .deal_history(&who, id, 50, "")
        .await
        .expect("history")
        .items
        .into_iter()
        .map(|t| (t.seq, t.kind, t.to_stage_name, t.time))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, TransitionKind::Created, "Qualify".to_owned(), at("2024-01-10")),
            (2, TransitionKind::Moved, "Proposal".to_owned(), at("2024-02-01")),
            (3, TransitionKind::Won, "Won".to_owned(), at("2024-03-15")),
        ]
    );
    assert_eq!(
        fx.times_of("acme", &name).await,
        vec![
            (pb::DealCreated::full_name(), at("2024-01-10")),
            (pb::DealStageChanged::full_name(), at("2024-02-01")),
            (pb::DealWon::full_name(), at("2024-03-15")),
        ],
        "the deal's events tell its story at the original times"
    );
    let lead_id = deal.body.lead.expect("the deal came from a lead");
    let lead_name = LeadId(lead_id).name();
    assert_eq!(
        fx.times_of("acme", &lead_name).await,
        vec![
            (pb::LeadCreated::full_name(), at("2024-01-02")),
            (pb::LeadConverted::full_name(), at("2024-01-10")),
        ]
    );
    let lead = fx.app.get_lead(&who, LeadId(lead_id)).await.expect("lead");
    assert_eq!(
        (lead.body.status, lead.body.source.as_str()),
        (LeadStatus::Converted, "referral")
    );
    assert_eq!(lead.create_time, at("2024-01-02"));
    let wire = crate::convert::deal(&deal);
    assert!(
        wire.imported && wire.external_id == "old-1",
        "the deal says it was imported"
    );

    // Again, also with other values: the external id was imported, nothing changes.
    let mut changed = won_deal("old-1");
    changed.amount = eur(1);
    let again = fx
        .app
        .import_deal(&who, &mut pipelines, changed, false)
        .await
        .expect("again");
    assert_eq!(again, Imported::Unchanged(name.clone()));
    let events = fx.events("acme").await.len();
    assert_eq!(events, before + 5, "two lead events and three deal events, once");

    // A dry run checks and writes nothing.
    let dry = fx
        .app
        .import_deal(&who, &mut pipelines, won_deal("old-2"), true)
        .await
        .expect("dry run");
    assert_eq!(dry, Imported::Created(None));
    assert_eq!(fx.events("acme").await.len(), events);

    // A lead that never became a deal, disqualified later.
    let lead = HistoricalLead {
        external_id: "lead-9".into(),
        title: "Cold inbound".into(),
        owner: Some("carol".into()),
        source: "web".into(),
        contact: None,
        company: None,
        create_time: at("2024-04-01"),
        status: LeadStatus::Disqualified,
        disqualify_reason: "no budget".into(),
        status_time: Some(at("2024-04-20")),
    };
    let name = created(fx.app.import_lead(&who, lead.clone(), false).await.expect("lead"));
    assert_eq!(
        fx.times_of("acme", &name).await,
        vec![
            (pb::LeadCreated::full_name(), at("2024-04-01")),
            (pb::LeadDisqualified::full_name(), at("2024-04-20")),
        ]
    );
    assert_eq!(
        fx.app.import_lead(&who, lead, false).await.expect("again"),
        Imported::Unchanged(name)
    );

    // Only managers and admins import history; another tenant sees none of it.
    let rep = caller("acme", "bob", Role::Rep);
    assert_eq!(
        fx.app.ensure_can_import_history(&rep).map_err(|e| e.code),
        Err(ErrorCode::PermissionDenied)
    );
    let other = caller("other", "alice", Role::Admin);
    assert!(fx.app.get_deal(&other, id).await.is_err());
}

pub(super) async fn history_rows_are_checked_and_nothing_is_written_for_a_bad_one(fx: &Fixture) {
    let who = admin();
    pipeline(fx, &who).await;
    let mut pipelines = Pipelines::default();
    let before = fx.events("acme").await.len();
    type Spoil = Box<dyn Fn(&mut HistoricalDeal)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("deal.pipeline", Box::new(|d| d.pipeline = "No such pipeline".into())),
        ("deal.stages[1].stage", Box::new(|d| d.stages[1].stage = "Won".into())),
        (
            "deal.stages[1].stage",
            Box::new(|d| d.stages[1].stage = "Qualify".into()),
        ),
        (
            "deal.stages[1].enter_time",
            Box::new(|d| d.stages[1].time = Some(at("2024-01-01"))),
        ),
        (
            "deal.stages[0].enter_time",
            Box::new(|d| d.stages[0].time = Some(at("2024-01-11"))),
        ),
        ("deal.close_time", Box::new(|d| d.close_time = Some(at("2024-01-20")))),
        ("deal.close_time", Box::new(|d| d.close_time = None)),
        ("deal.close_time", Box::new(|d| d.close_time = Some(at("2999-01-01")))),
        ("deal.create_time", Box::new(|d| d.create_time = at("2999-01-01"))),
        (
            "deal.close_reason",
            Box::new(|d| {
                d.status = DealStatus::Lost;
                d.close_reason = String::new();
            }),
        ),
        ("deal.close_time", Box::new(|d| d.status = DealStatus::Open)),
        (
            "deal.lead_create_time",
            Box::new(|d| d.lead = Some(("web".into(), Some(at("2024-02-01"))))),
        ),
        (
            "deal.contact",
            Box::new(|d| d.contact = Some(ContactRef(Uuid::now_v7()))),
        ),
        ("deal.owner", Box::new(|d| d.owner = Some("not a user!".into()))),
    ];
    for (field, spoil) in cases {
        let mut row = won_deal("bad");
        spoil(&mut row);
        let err = fx
            .app
            .import_deal(&who, &mut pipelines, row.clone(), false)
            .await
            .expect_err(&format!("{row:?} must be refused"));
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
        assert_eq!(err.violations.first().map(|v| v.field.as_str()), Some(field), "{err:?}");
    }
    assert_eq!(fx.events("acme").await.len(), before, "a refused row writes nothing");
}
