//! The conformance suite: every store implementation must pass every case, on SQLite and on
//! PostgreSQL (a fresh database per test). The cases drive the application over the store, so
//! the service's rules are proven on both backends; the contact service is stood in for by a
//! directory that knows a fixed set of contacts and companies.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use crm_platform::outbox::{Outbox, PgOutbox, Scope};
use crm_platform::testing::TestDatabase;
use crm_platform::{ApiError, ErrorCode, Principal, Role, TenantId, UserId};
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Name;
use uuid::Uuid;

mod history;

use history::{
    deals_and_leads_are_imported_with_their_original_times,
    history_rows_are_checked_and_nothing_is_written_for_a_bad_one,
};

use super::*;
use crate::app::{Caller, DealInput, LeadPatch, LineInput, PipelineApp, ProductPatch, StageInput, TaskPatch};
use crate::directory::Directory;
use crate::domain::*;

/// Contacts and companies the stand-in contact service knows (of any tenant but "other").
struct KnownDirectory {
    contacts: HashSet<Uuid>,
    companies: HashSet<Uuid>,
}

#[async_trait]
impl Directory for KnownDirectory {
    async fn contact(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError> {
        Ok((caller.who.tenant.as_str() != "other" && self.contacts.contains(&id)).then_some(id))
    }
    async fn company(&self, caller: &Caller, id: Uuid) -> Result<Option<Uuid>, ApiError> {
        Ok((caller.who.tenant.as_str() != "other" && self.companies.contains(&id)).then_some(id))
    }
}

const CONTACT_A: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00a1);
const CONTACT_B: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_00b2);
const COMPANY_A: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c01);
const COMPANY_B: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0c02);

/// A store under test, its app and a way to read the events its writes published.
struct Fixture {
    app: PipelineApp,
    outbox: Arc<dyn Outbox>,
    sequencer: Option<Arc<PgOutbox>>,
}

impl Fixture {
    fn new(store: Arc<dyn PipelineStore>, outbox: Arc<dyn Outbox>, sequencer: Option<Arc<PgOutbox>>) -> Self {
        let directory = Arc::new(KnownDirectory {
            contacts: [CONTACT_A, CONTACT_B].into(),
            companies: [COMPANY_A, COMPANY_B].into(),
        });
        Fixture {
            app: PipelineApp::new(store, directory),
            outbox,
            sequencer,
        }
    }

    fn store(&self) -> &Arc<dyn PipelineStore> {
        self.app.store()
    }

    /// The types and subjects of a tenant's events, in sequence order.
    async fn events(&self, tenant: &str) -> Vec<(String, String)> {
        if let Some(sequencer) = &self.sequencer {
            sequencer.sequence().await.expect("sequence");
        }
        self.outbox
            .read(&Scope::Tenant(tenant_id(tenant)), 0, &[], None, 10_000)
            .await
            .expect("read")
            .into_iter()
            .map(|e| (e.kind, e.subject))
            .collect()
    }

    /// The type and time of each event of a tenant about `subject`, in sequence order.
    async fn times_of(&self, tenant: &str, subject: &str) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
        if let Some(sequencer) = &self.sequencer {
            sequencer.sequence().await.expect("sequence");
        }
        self.outbox
            .read(&Scope::Tenant(tenant_id(tenant)), 0, &[], None, 10_000)
            .await
            .expect("read")
            .into_iter()
            .filter(|e| e.subject == subject)
            .map(|e| (e.kind, e.time))
            .collect()
    }

    async fn payloads(&self, tenant: &str) -> Vec<serde_json::Value> {
        if let Some(sequencer) = &self.sequencer {
            sequencer.sequence().await.expect("sequence");
        }
        self.outbox
            .read(&Scope::Tenant(tenant_id(tenant)), 0, &[], None, 10_000)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.payload)
            .collect()
    }
}

fn tenant_id(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn caller(tenant: &str, user: &str, role: Role) -> Caller {
    Caller {
        who: Principal {
            tenant: tenant_id(tenant),
            user: UserId::parse(user).expect("user"),
            roles: vec![role],
        },
        credentials: String::new(),
    }
}

fn admin() -> Caller {
    caller("acme", "alice", Role::Admin)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR").expect("money")
}

fn stage(name: &str, kind: StageKind) -> StageInput {
    StageInput {
        id: None,
        name: name.into(),
        probability: 50,
        kind,
    }
}

async fn pipeline(fx: &Fixture, who: &Caller) -> crate::app::Rec<Pipeline> {
    fx.app
        .create_pipeline(
            who,
            "New business".into(),
            vec![
                stage("Qualify", StageKind::Open),
                stage("Proposal", StageKind::Open),
                stage("Negotiate", StageKind::Open),
                stage("Won", StageKind::Won),
                stage("Lost", StageKind::Lost),
            ],
            None,
        )
        .await
        .expect("pipeline")
}

fn deal_input(pipeline: Uuid, name: &str, amount: Money) -> DealInput {
    DealInput {
        name: name.into(),
        pipeline: PipelineId(pipeline),
        stage: None,
        amount: Some(amount),
        close_date: None,
        owner: None,
        contact: None,
        company: None,
        forecast: None,
        lines: vec![],
    }
}

fn code(result: Result<impl std::fmt::Debug, ApiError>) -> (ErrorCode, String) {
    let err = result.expect_err("must fail");
    (err.code, err.reason.to_string())
}

fn field_of(result: Result<impl std::fmt::Debug, ApiError>) -> String {
    let err = result.expect_err("must fail");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    err.violations.first().map(|v| v.field.clone()).unwrap_or_default()
}

async fn lead_becomes_a_won_deal_and_every_step_is_recorded(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let lead = fx
        .app
        .create_lead(
            &who,
            LeadPatch {
                title: Some("Pro plan".into()),
                contact: Some(Some(ContactRef(CONTACT_A))),
                source: Some("web".into()),
                score: Some(40),
                ..LeadPatch::default()
            },
            None,
        )
        .await
        .expect("lead");
    let lead = fx
        .app
        .update_lead(
            &who,
            LeadId(lead.id),
            Some(lead.revision),
            LeadPatch {
                status: Some(LeadStatus::Qualified),
                ..LeadPatch::default()
            },
        )
        .await
        .expect("qualify");
    let mut input = deal_input(p.id, "", eur(500_000));
    input.close_date = Some(values::date("2026-12-31").expect("date"));
    let (lead, deal) = fx
        .app
        .convert_lead(&who, LeadId(lead.id), input.clone(), Some(lead.revision))
        .await
        .expect("convert");
    assert_eq!(lead.body.status, LeadStatus::Converted);
    assert_eq!(lead.body.converted_deal, Some(deal.id));
    assert_eq!(deal.body.name, "Pro plan", "the deal is named after the lead");
    assert_eq!(deal.body.contact, Some(CONTACT_A), "and inherits its contact");
    assert_eq!(deal.body.lead, Some(lead.id));
    let again = fx.app.convert_lead(&who, LeadId(lead.id), input, None).await;
    assert_eq!(
        code(again),
        (ErrorCode::FailedPrecondition, "LEAD_CONVERTED".into()),
        "a lead converts once"
    );

    let proposal = p.body.stages[1].id;
    let (moved, transition) = fx
        .app
        .move_deal(&who, DealId(deal.id), proposal, Some(deal.revision))
        .await
        .expect("move");
    assert_eq!(transition.from_stage_name, "Qualify");
    assert_eq!(transition.to_stage_name, "Proposal");
    assert_eq!(transition.seq, 2);
    let (won, closing) = fx
        .app
        .close_deal(&who, DealId(deal.id), true, "best fit".into(), Some(moved.revision))
        .await
        .expect("close");
    assert_eq!(won.body.status, DealStatus::Won);
    assert_eq!(won.body.forecast, ForecastCategory::Closed);
    assert_eq!(closing.kind, TransitionKind::Won);
    assert_eq!(closing.reason, "best fit");

    let page = fx
        .app
        .deal_history(&who, DealId(deal.id), 50, "")
        .await
        .expect("history");
    assert!(page.next_page_token.is_empty(), "one page");
    let history = page.items;
    let kinds: Vec<_> = history
        .iter()
        .map(|t| (t.seq, t.kind, t.to_stage_name.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, TransitionKind::Created, "Qualify".to_owned()),
            (2, TransitionKind::Moved, "Proposal".to_owned()),
            (3, TransitionKind::Won, "Won".to_owned()),
        ]
    );
    let types: Vec<String> = fx.events("acme").await.into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(
        types,
        [
            pb::PipelineCreated::full_name(),
            pb::LeadCreated::full_name(),
            pb::LeadQualified::full_name(),
            pb::DealCreated::full_name(),
            pb::LeadConverted::full_name(),
            pb::DealStageChanged::full_name(),
            pb::DealWon::full_name(),
        ]
    );
    // Renaming a stage later does not rewrite the history.
    let mut stages: Vec<StageInput> = p
        .body
        .stages
        .iter()
        .map(|s| StageInput {
            id: Some(s.id),
            name: s.name.clone(),
            probability: s.probability,
            kind: s.kind,
        })
        .collect();
    stages[1].name = "Proposal sent".into();
    fx.app
        .update_pipeline(&who, PipelineId(p.id), None, None, Some(stages))
        .await
        .expect("rename");
    let history = fx
        .app
        .deal_history(&who, DealId(deal.id), 50, "")
        .await
        .expect("history")
        .items;
    assert_eq!(
        history[1].to_stage_name, "Proposal",
        "history keeps the name the stage had"
    );
    assert_eq!(history[1].to_stage, proposal);
}

async fn moves_and_closes_follow_the_rules(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let other = pipeline(fx, &who).await;
    let deal = fx
        .app
        .create_deal(&who, deal_input(p.id, "Big one", eur(100)), None)
        .await
        .expect("deal");
    let id = DealId(deal.id);
    assert_eq!(
        field_of(fx.app.move_deal(&who, id, other.body.stages[1].id, None).await),
        "stage",
        "a stage of another pipeline is refused"
    );
    assert_eq!(
        field_of(fx.app.move_deal(&who, id, p.body.stages[3].id, None).await),
        "stage",
        "a closing stage is reached by CloseDeal only"
    );
    assert_eq!(
        field_of(fx.app.close_deal(&who, id, false, String::new(), None).await),
        "reason",
        "a lost deal needs a reason"
    );
    fx.app
        .close_deal(&who, id, false, "price".into(), None)
        .await
        .expect("lost");
    assert_eq!(
        code(fx.app.close_deal(&who, id, true, "late".into(), None).await),
        (ErrorCode::FailedPrecondition, "DEAL_CLOSED".into()),
        "closing a closed deal is refused"
    );
    assert_eq!(
        code(fx.app.move_deal(&who, id, p.body.stages[1].id, None).await).0,
        ErrorCode::FailedPrecondition
    );
    let (reopened, t) = fx.app.reopen_deal(&who, id, None, None).await.expect("reopen");
    assert_eq!(reopened.body.status, DealStatus::Open);
    assert_eq!(t.kind, TransitionKind::Reopened);
    assert_eq!(reopened.body.stage, p.body.stages[0].id);
    assert_eq!(
        code(fx.app.move_deal(&who, id, p.body.stages[1].id, Some(1)).await),
        (ErrorCode::FailedPrecondition, "ETAG_MISMATCH".into()),
        "a stale etag is refused"
    );
    let unknown = fx
        .app
        .create_deal(
            &caller("other", "alice", Role::Admin),
            DealInput {
                contact: Some(ContactRef(CONTACT_A)),
                ..deal_input(p.id, "x", eur(1))
            },
            None,
        )
        .await;
    assert_eq!(
        field_of(unknown),
        "deal.pipeline",
        "another tenant's pipeline does not exist for it"
    );
    let stranger = fx
        .app
        .create_deal(
            &who,
            DealInput {
                contact: Some(ContactRef(Uuid::now_v7())),
                ..deal_input(p.id, "x", eur(1))
            },
            None,
        )
        .await;
    assert_eq!(field_of(stranger), "deal.contact", "an unknown contact is refused");
    let history = fx.app.deal_history(&who, id, 50, "").await.expect("history").items;
    assert_eq!(
        history.len(),
        3,
        "refused changes wrote nothing: created, lost, reopened"
    );
}

async fn concurrent_moves_with_one_etag_one_wins(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let deal = fx
        .app
        .create_deal(&who, deal_input(p.id, "Race", eur(100)), None)
        .await
        .expect("deal");
    let id = DealId(deal.id);
    for round in 0..5 {
        let current = fx.app.get_deal(&who, id).await.expect("get");
        let targets: Vec<Uuid> = p
            .body
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Open && s.id != current.body.stage)
            .map(|s| s.id)
            .collect();
        let (a, b) = tokio::join!(
            fx.app.move_deal(&who, id, targets[0], Some(current.revision)),
            fx.app.move_deal(&who, id, targets[1], Some(current.revision)),
        );
        let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(wins, 1, "round {round}: exactly one move wins");
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(code(loser), (ErrorCode::FailedPrecondition, "ETAG_MISMATCH".into()));
    }
    let history = fx.app.deal_history(&who, id, 50, "").await.expect("history").items;
    assert_eq!(history.len(), 6, "created + one move per round");
    assert!(
        history
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].from_stage == Some(w[0].to_stage))
    );
}

async fn reps_change_only_their_own_records(fx: &Fixture) {
    let p = pipeline(fx, &admin()).await;
    let alice = caller("acme", "alice", Role::Rep);
    let bob = caller("acme", "bob", Role::Rep);
    let deal = fx
        .app
        .create_deal(&alice, deal_input(p.id, "Alice's", eur(1)), None)
        .await
        .expect("deal");
    assert_eq!(deal.body.owner, "alice");
    assert_eq!(
        code(fx.app.move_deal(&bob, DealId(deal.id), p.body.stages[1].id, None).await).0,
        ErrorCode::PermissionDenied
    );
    let mut for_alice = deal_input(p.id, "Bob for Alice", eur(1));
    for_alice.owner = Some("alice".into());
    assert_eq!(
        code(fx.app.create_deal(&bob, for_alice, None).await).0,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(
            fx.app
                .create_pipeline(&bob, "Mine".into(), vec![stage("a", StageKind::Open)], None)
                .await
        )
        .0,
        ErrorCode::PermissionDenied
    );
    let viewer = caller("acme", "vic", Role::Viewer);
    assert_eq!(
        code(fx.app.create_deal(&viewer, deal_input(p.id, "v", eur(1)), None).await).0,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(fx.app.reassign_owner(&alice, "bob", &["alice".into()], false).await).0,
        ErrorCode::PermissionDenied,
        "reps do not transfer portfolios"
    );
    fx.app
        .move_deal(&alice, DealId(deal.id), p.body.stages[1].id, None)
        .await
        .expect("own deal");
}

async fn board_groups_open_deals_by_stage(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let stages: Vec<Uuid> = p.body.stages.iter().map(|s| s.id).collect();
    for i in 0..7 {
        let mut input = deal_input(p.id, &format!("d{i}"), eur(100 * (i + 1)));
        input.stage = Some(stages[usize::try_from(i % 2).expect("index")]);
        input.close_date = Some(values::date(&format!("2027-01-0{}", 9 - i)).expect("date"));
        input.owner = Some(if i < 5 { "alice" } else { "bob" }.into());
        fx.app.create_deal(&who, input, None).await.expect("deal");
    }
    let mut usd = deal_input(p.id, "usd", Money::new(999, "USD").expect("usd"));
    usd.stage = Some(stages[0]);
    fx.app.create_deal(&who, usd, None).await.expect("usd");
    let lost = fx
        .app
        .create_deal(&who, deal_input(p.id, "lost", eur(1_000_000)), None)
        .await
        .expect("lost");
    fx.app
        .close_deal(&who, DealId(lost.id), false, "gone".into(), None)
        .await
        .expect("close");
    let (_, columns) = fx.app.board(&who, PipelineId(p.id), None, 2).await.expect("board");
    assert_eq!(columns.len(), 3, "the open stages, in order");
    assert_eq!(columns[0].stage.name, "Qualify");
    assert_eq!(
        columns[0].count, 5,
        "d0 d2 d4 d6 and the USD deal; closed deals are not on the board"
    );
    assert_eq!(
        columns[0].totals,
        vec![eur(100 + 300 + 500 + 700), Money::new(999, "USD").expect("usd")]
    );
    assert_eq!(columns[1].count, 3);
    assert_eq!(columns[1].totals, vec![eur(200 + 400 + 600)]);
    assert_eq!(columns[2].count, 0);
    assert_eq!(columns[0].deals.len(), 2, "deals per stage are capped");
    assert_eq!(
        columns[1]
            .deals
            .iter()
            .map(|d| d.body.name.as_str())
            .collect::<Vec<_>>(),
        ["d5", "d3"],
        "earliest expected close first"
    );
    let (_, bobs) = fx
        .app
        .board(&who, PipelineId(p.id), Some("bob".into()), 10)
        .await
        .expect("bob's board");
    assert_eq!(bobs.iter().map(|c| c.count).sum::<i64>(), 2);
    let (_, other) = fx
        .app
        .board(&caller("intruder", "eve", Role::Admin), PipelineId(p.id), None, 10)
        .await
        .map(|_| ((), ()))
        .map_err(|e| e.code)
        .map_or_else(|code| ((), code), |_| ((), ErrorCode::Internal));
    assert_eq!(other, ErrorCode::NotFound, "another tenant's pipeline is not found");
}

async fn line_items_keep_their_price(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let product = fx
        .app
        .create_product(
            &who,
            ProductPatch {
                sku: Some("PRO-1".into()),
                name: Some("Pro".into()),
                price: Some(eur(1_000)),
                ..ProductPatch::default()
            },
            None,
        )
        .await
        .expect("product");
    let dup = fx
        .app
        .create_product(
            &who,
            ProductPatch {
                sku: Some("PRO-1".into()),
                name: Some("Other".into()),
                price: Some(eur(1)),
                ..ProductPatch::default()
            },
            None,
        )
        .await;
    assert_eq!(code(dup).0, ErrorCode::AlreadyExists, "SKUs are unique");
    let mut input = deal_input(p.id, "With lines", eur(0));
    input.lines = vec![LineInput {
        product: ProductId(product.id),
        quantity: 3,
        unit_price: None,
        discount_bps: 1_000,
    }];
    let deal = fx.app.create_deal(&who, input, None).await.expect("deal");
    assert_eq!(deal.body.amount, eur(2_700), "3 x 10.00 less 10%");
    fx.app
        .update_product(
            &who,
            ProductId(product.id),
            None,
            ProductPatch {
                price: Some(eur(5_000)),
                ..ProductPatch::default()
            },
        )
        .await
        .expect("price change");
    let read = fx.app.get_deal(&who, DealId(deal.id)).await.expect("deal");
    assert_eq!(read.body.lines[0].unit_price, eur(1_000), "the line keeps its price");
    assert_eq!(read.body.amount, eur(2_700));
    let mut usd_line = deal_input(p.id, "mixed", Money::new(5, "USD").expect("usd"));
    usd_line.lines = vec![LineInput {
        product: ProductId(product.id),
        quantity: 1,
        unit_price: None,
        discount_bps: 0,
    }];
    assert_eq!(
        field_of(fx.app.create_deal(&who, usd_line, None).await),
        "deal.amount.currency_code",
        "a deal has one currency"
    );
}

async fn creates_are_idempotent(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let key = crm_platform::idempotency::RequestKey {
        key: "req-1".to_owned(),
        fingerprint: [0xa; 32],
    };
    let first = fx
        .app
        .create_deal(&who, deal_input(p.id, "Once", eur(1)), Some(&key))
        .await
        .expect("first");
    let second = fx
        .app
        .create_deal(&who, deal_input(p.id, "Once", eur(1)), Some(&key))
        .await
        .expect("retry");
    assert_eq!(first.id, second.id, "a retry returns the first result");
    let other = crm_platform::idempotency::RequestKey {
        key: "req-1".to_owned(),
        fingerprint: [0xb; 32],
    };
    assert_eq!(
        code(
            fx.app
                .create_deal(&who, deal_input(p.id, "Else", eur(1)), Some(&other))
                .await
        )
        .1,
        "REQUEST_ID_REUSED"
    );
    let page = fx.app.list_deals(&who, vec![], 100, "").await.expect("list");
    assert_eq!(page.items.len(), 1);
}

async fn lists_page_and_filter(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    for i in 0..9 {
        let mut input = deal_input(p.id, &format!("d{i}"), eur(i));
        input.owner = Some(if i % 3 == 0 { "carol" } else { "alice" }.into());
        fx.app.create_deal(&who, input, None).await.expect("deal");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = fx
            .app
            .list_deals(&who, vec![Filter::Owner("alice".into())], 4, &token)
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|d| d.body.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["d1", "d2", "d4", "d5", "d7", "d8"]);
    let now = fx.app.now();
    for (title, due) in [("later", 2), ("sooner", -2), ("none", 0), ("soonest", -3)] {
        let task = fx
            .app
            .create_task(
                &who,
                TaskPatch {
                    title: Some(title.into()),
                    due: Some((due != 0).then(|| now + Duration::hours(due))),
                    ..TaskPatch::default()
                },
                None,
            )
            .await
            .expect("task");
        if title == "sooner" {
            fx.app
                .complete_task(&who, TaskId(task.id), None)
                .await
                .expect("complete");
        }
    }
    let all = fx.app.list_tasks(&who, vec![], 10, "").await.expect("tasks");
    assert_eq!(
        all.items.iter().map(|t| t.body.title.as_str()).collect::<Vec<_>>(),
        ["soonest", "sooner", "later", "none"],
        "earliest due first, no due time last"
    );
    let overdue = fx
        .app
        .list_tasks(&who, vec![Filter::DueBefore(fx.app.now())], 10, "")
        .await
        .expect("overdue");
    assert_eq!(
        overdue.items.iter().map(|t| t.body.title.as_str()).collect::<Vec<_>>(),
        ["soonest"]
    );
    let theirs = fx
        .app
        .list_deals(&caller("other", "alice", Role::Admin), vec![], 100, "")
        .await
        .expect("other tenant");
    assert!(theirs.items.is_empty(), "no tenant sees another's records");
}

async fn reassignment_moves_open_records_round_robin(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let mut deals = Vec::new();
    for i in 0..5 {
        let mut input = deal_input(p.id, &format!("d{i}"), eur(1));
        input.owner = Some("leaver".into());
        deals.push(fx.app.create_deal(&who, input, None).await.expect("deal"));
    }
    fx.app
        .close_deal(&who, DealId(deals[0].id), true, "won".into(), None)
        .await
        .expect("won");
    for i in 0..3 {
        fx.app
            .create_lead(
                &who,
                LeadPatch {
                    title: Some(format!("l{i}")),
                    owner: Some("leaver".into()),
                    ..LeadPatch::default()
                },
                None,
            )
            .await
            .expect("lead");
        fx.app
            .create_task(
                &who,
                TaskPatch {
                    title: Some(format!("t{i}")),
                    assignee: Some("leaver".into()),
                    ..TaskPatch::default()
                },
                None,
            )
            .await
            .expect("task");
    }
    let to = vec!["ann".to_owned(), "ben".to_owned()];
    let dry = fx.app.reassign_owner(&who, "leaver", &to, true).await.expect("dry run");
    assert_eq!((dry.leads, dry.deals, dry.tasks), (3, 4, 3));
    let still = fx
        .app
        .list_deals(&who, vec![Filter::Owner("leaver".into())], 100, "")
        .await
        .expect("list");
    assert_eq!(still.items.len(), 5, "a dry run moves nothing");
    let moved = fx.app.reassign_owner(&who, "leaver", &to, false).await.expect("move");
    assert_eq!((moved.leads, moved.deals, moved.tasks), (3, 4, 3));
    let shares: Vec<i64> = moved.shares.iter().map(|s| s.leads + s.deals + s.tasks).collect();
    assert_eq!(shares, [5, 5], "round-robin");
    let left = fx
        .app
        .list_deals(&who, vec![Filter::Owner("leaver".into())], 100, "")
        .await
        .expect("list");
    assert_eq!(
        left.items.iter().map(|d| d.body.status).collect::<Vec<_>>(),
        [DealStatus::Won],
        "a closed deal keeps the owner who closed it"
    );
    let (_, leavers) = fx
        .app
        .board(&who, PipelineId(p.id), Some("leaver".into()), 10)
        .await
        .expect("board");
    assert_eq!(
        leavers.iter().map(|c| c.count).sum::<i64>(),
        0,
        "the board follows the owners"
    );
    let (_, anns) = fx
        .app
        .board(&who, PipelineId(p.id), Some("ann".into()), 10)
        .await
        .expect("board");
    assert_eq!(anns.iter().map(|c| c.count).sum::<i64>(), 2);
    let again = fx.app.reassign_owner(&who, "leaver", &to, false).await.expect("again");
    assert_eq!(
        (again.leads, again.deals, again.tasks),
        (0, 0, 0),
        "nothing left behind"
    );
    let owner_changes = fx
        .events("acme")
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == pb::OwnerChanged::full_name())
        .count();
    assert_eq!(owner_changes, 10, "every move is audited");
}

/// Due times are read from the application's clock: a task becomes due when the clock reaches
/// its due time, and the scheduler's next wake-up is that time. No test waits for it: the
/// clock is moved on.
async fn a_task_becomes_due_when_the_clock_reaches_it(fx: &Fixture) {
    let who = admin();
    let clock = Arc::new(crm_platform::time::ManualClock::at(chrono::Utc::now()));
    let app = PipelineApp::new(
        Arc::clone(fx.store()),
        Arc::new(KnownDirectory {
            contacts: HashSet::new(),
            companies: HashSet::new(),
        }),
    )
    .with_clock(Arc::clone(&clock) as Arc<dyn crm_platform::time::Clock>);
    let due_at = app.now() + Duration::hours(1);
    app.create_task(
        &who,
        TaskPatch {
            title: Some("renewal call".into()),
            due: Some(Some(due_at)),
            ..TaskPatch::default()
        },
        None,
    )
    .await
    .expect("task");
    let (published, next) = app.publish_due_tasks(app.now()).await.expect("publish");
    assert_eq!((published, next), (0, Some(due_at)), "not due yet; due at its time");
    clock.advance(Duration::minutes(59));
    assert_eq!(app.publish_due_tasks(app.now()).await.expect("publish").0, 0);
    clock.advance(Duration::minutes(2));
    assert_eq!(app.publish_due_tasks(app.now()).await.expect("publish").0, 1, "due now");
    let overdue = app
        .list_tasks(&who, vec![Filter::DueBefore(app.now())], 10, "")
        .await
        .expect("overdue");
    assert_eq!(overdue.items.len(), 1, "and overdue by the same clock");
    let kinds: Vec<String> = fx.events("acme").await.into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == pb::TaskDue::full_name()).count(), 1);
}

async fn task_due_is_published_once_per_due_time(fx: &Fixture) {
    let who = admin();
    let now = fx.app.now();
    let due = fx
        .app
        .create_task(
            &who,
            TaskPatch {
                title: Some("call back".into()),
                due: Some(Some(now - Duration::minutes(1))),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("task");
    let done = fx
        .app
        .create_task(
            &who,
            TaskPatch {
                title: Some("done already".into()),
                due: Some(Some(now - Duration::minutes(2))),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("task");
    fx.app
        .complete_task(&who, TaskId(done.id), None)
        .await
        .expect("complete");
    fx.app
        .create_task(
            &who,
            TaskPatch {
                title: Some("tomorrow".into()),
                due: Some(Some(now + Duration::days(1))),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("task");
    let (published, next) = fx.app.publish_due_tasks(fx.app.now()).await.expect("publish");
    assert_eq!(published, 1, "only the open task that is due");
    assert!(next.is_some_and(|n| n > now), "the next due time is known");
    let (published, _) = fx.app.publish_due_tasks(fx.app.now()).await.expect("publish");
    assert_eq!(published, 0, "once");
    let moved = fx
        .app
        .update_task(
            &who,
            TaskId(due.id),
            None,
            TaskPatch {
                due: Some(Some(now - Duration::seconds(5))),
                ..TaskPatch::default()
            },
        )
        .await
        .expect("reschedule");
    assert_eq!(moved.body.due, Some(now - Duration::seconds(5)));
    let (published, _) = fx.app.publish_due_tasks(fx.app.now()).await.expect("publish");
    assert_eq!(published, 1, "a new due time is a new reminder");
    // Two schedulers (replicas) over one database publish a due task once between them.
    let replica = PipelineApp::new(
        Arc::clone(fx.store()),
        Arc::new(KnownDirectory {
            contacts: HashSet::new(),
            companies: HashSet::new(),
        }),
    );
    fx.app
        .create_task(
            &who,
            TaskPatch {
                title: Some("raced".into()),
                due: Some(Some(now - Duration::seconds(1))),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("task");
    let at = fx.app.now();
    let (a, b) = tokio::join!(fx.app.publish_due_tasks(at), replica.publish_due_tasks(at));
    assert_eq!(a.expect("a").0 + b.expect("b").0, 1, "one of the replicas publishes it");
    let dues = fx
        .events("acme")
        .await
        .into_iter()
        .filter(|(kind, _)| *kind == pb::TaskDue::full_name())
        .count();
    assert_eq!(dues, 3);
}

async fn contact_merges_and_erases_reach_this_service(fx: &Fixture) {
    let who = admin();
    let p = pipeline(fx, &who).await;
    let mut input = deal_input(p.id, "Analytical engine", eur(1));
    input.contact = Some(ContactRef(CONTACT_A));
    input.company = Some(CompanyRef(COMPANY_A));
    let deal = fx.app.create_deal(&who, input, None).await.expect("deal");
    let lead = fx
        .app
        .create_lead(
            &who,
            LeadPatch {
                title: Some("Ada Lovelace wants Pro".into()),
                contact: Some(Some(ContactRef(CONTACT_A))),
                ..LeadPatch::default()
            },
            None,
        )
        .await
        .expect("lead");
    let task = fx
        .app
        .create_task(
            &who,
            TaskPatch {
                title: Some("Call Ada".into()),
                notes: Some("prefers mornings".into()),
                contact: Some(Some(ContactRef(CONTACT_A))),
                ..TaskPatch::default()
            },
            None,
        )
        .await
        .expect("task");
    let tenant = tenant_id("acme");
    let store = fx.store();
    let merged = fx
        .app
        .follow_contact_change(
            &tenant,
            "merger",
            &ContactChange::ContactsMerged {
                survivor: CONTACT_B,
                merged: vec![CONTACT_A],
            },
        )
        .await
        .expect("merge writes");
    assert!(store.follow("c", 0, 7, &merged).await.expect("follow"), "applied");
    let companies = fx
        .app
        .follow_contact_change(
            &tenant,
            "merger",
            &ContactChange::CompaniesMerged {
                survivor: COMPANY_B,
                merged: vec![COMPANY_A],
            },
        )
        .await
        .expect("company merge writes");
    assert!(
        !store.follow("c", 0, 8, &companies).await.expect("stale"),
        "a moved checkpoint refuses"
    );
    assert!(store.follow("c", 7, 8, &companies).await.expect("follow"));
    assert_eq!(store.checkpoint("c").await.expect("checkpoint"), 8);
    let read = fx.app.get_deal(&who, DealId(deal.id)).await.expect("deal");
    assert_eq!(
        (read.body.contact, read.body.company),
        (Some(CONTACT_B), Some(COMPANY_B))
    );
    assert_eq!(
        fx.app.get_lead(&who, LeadId(lead.id)).await.expect("lead").body.contact,
        Some(CONTACT_B)
    );

    let erased = fx
        .app
        .follow_contact_change(&tenant, "dpo", &ContactChange::ContactErased { contact: CONTACT_B })
        .await
        .expect("erase writes");
    assert!(store.follow("c", 8, 9, &erased).await.expect("follow"));
    let lead = fx.app.get_lead(&who, LeadId(lead.id)).await.expect("lead");
    assert_eq!((lead.body.contact, lead.body.title.as_str()), (None, ""));
    let task = fx.app.get_task(&who, TaskId(task.id)).await.expect("task");
    assert_eq!(
        (task.body.contact, task.body.title.as_str(), task.body.notes.as_str()),
        (None, "", "")
    );
    assert_eq!(
        fx.app.get_deal(&who, DealId(deal.id)).await.expect("deal").body.contact,
        None
    );
    for payload in fx.payloads("acme").await {
        let text = payload.to_string();
        assert!(
            !text.contains(&CONTACT_B.to_string()),
            "no event still names the erased contact: {text}"
        );
        assert!(!text.contains("Ada"), "nor the text about them: {text}");
    }
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let pool = crm_platform::db::open_sqlite(&dir.path().join("pipeline.db"), &super::SQLITE_MIGRATIONS).await.expect("sqlite");
                    let store = super::SqlitePipelineStore::new(pool);
                    let outbox = store.outbox();
                    let fx = super::Fixture::new(std::sync::Arc::new(store), outbox, None);
                    super::$case(&fx).await;
                }
            )+
        }

        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDatabase::create(stringify!($case)).await else { return };
                    crm_platform::db::migrate_postgres(&db.url, &super::POSTGRES_MIGRATIONS).await.expect("migrate");
                    let pool = crm_platform::db::connect_postgres(&db.url, super::POSTGRES_APP_ROLE, 4).await.expect("connect");
                    let sequencer = super::PgOutbox::start(pool.clone()).await.expect("outbox");
                    let outbox: std::sync::Arc<dyn super::Outbox> = std::sync::Arc::clone(&sequencer) as std::sync::Arc<dyn super::Outbox>;
                    let fx = super::Fixture::new(std::sync::Arc::new(super::PgPipelineStore::new(pool.clone())), outbox, Some(sequencer));
                    super::$case(&fx).await;
                    // The outbox's listener holds a connection for the pool's life: dropping
                    // the database ends it.
                    db.drop_database().await;
                }
            )+
        }
    };
}

conformance!(
    lead_becomes_a_won_deal_and_every_step_is_recorded,
    moves_and_closes_follow_the_rules,
    concurrent_moves_with_one_etag_one_wins,
    reps_change_only_their_own_records,
    board_groups_open_deals_by_stage,
    line_items_keep_their_price,
    creates_are_idempotent,
    lists_page_and_filter,
    reassignment_moves_open_records_round_robin,
    task_due_is_published_once_per_due_time,
    a_task_becomes_due_when_the_clock_reaches_it,
    contact_merges_and_erases_reach_this_service,
    deals_and_leads_are_imported_with_their_original_times,
    history_rows_are_checked_and_nothing_is_written_for_a_bad_one,
);

/// Row-level security is the second wall: SQL without a tenant condition, run as the serving
/// role, sees and writes only the pinned tenant's rows.
#[tokio::test]
async fn postgres_row_level_security_is_forced() {
    let Some(db) = TestDatabase::create("pipeline_row_level_security_is_forced").await else {
        return;
    };
    crm_platform::db::migrate_postgres(&db.url, &POSTGRES_MIGRATIONS)
        .await
        .expect("migrate");
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
        .await
        .expect("connect");
    let store: Arc<dyn PipelineStore> = Arc::new(PgPipelineStore::new(pool.clone()));
    let sequencer = PgOutbox::start(pool.clone()).await.expect("outbox");
    let outbox: Arc<dyn Outbox> = Arc::clone(&sequencer) as Arc<dyn Outbox>;
    let fx = Fixture::new(store, outbox, Some(sequencer));
    pipeline(&fx, &admin()).await;
    pipeline(&fx, &caller("globex", "gus", Role::Admin)).await;
    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant_id("acme"))
        .await
        .expect("tx");
    for table in ["pipelines", "outbox_events", "audit_log"] {
        let visible: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(visible, 1, "{table}: tenant acme sees only its own row");
    }
    let sneaky = sqlx::query("UPDATE pipelines SET body = '{}' WHERE tenant_id = 'globex'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(sneaky.rows_affected(), 0, "other tenants' rows cannot be addressed");
    drop(tx);
    db.drop_database().await;
}
