//! The conformance suite: every store implementation must pass every case, on SQLite and on
//! PostgreSQL (a fresh database per test; row-level security checked separately, in `tenancy`).
//! Here the fixtures and the harness; the cases in a file per resource.

mod companies;
mod contacts;
mod duplicates;
mod erasure;
mod events;
mod history;
mod import;
mod merge;
mod outbox;
mod ownership;
mod tenancy;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use crm_platform::testing::TestDatabase;
use crm_platform::{TenantId, UserId};

use super::*;
use crate::domain::*;

pub(crate) fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("user")
}

/// How the application publishes a logged interaction of tenant `t`.
pub(crate) fn logged(
    t: &TenantId,
) -> impl Fn(&Interaction) -> Result<crm_platform::outbox::NewEvent, crm_platform::outbox::EventError> + Send + Sync + '_
{
    move |i| crate::app::events::interaction_logged(t, i)
}

/// How the application publishes a record of tenant `t` moved from its owner by `actor`.
pub(crate) fn moved<'a>(
    t: &'a TenantId,
    actor: &'a UserId,
) -> impl Fn(&Moved) -> Result<crm_platform::outbox::NewEvent, crm_platform::outbox::EventError> + Send + Sync + 'a {
    move |m| crate::app::events::owner_changed(t, m.of, &user("previous"), &m.to, actor, Utc::now())
}

pub(crate) fn audit() -> AuditRecord {
    AuditRecord {
        action: ChangeAction::Updated,
        actor: user("alice"),
        changes: vec![],
        events: vec![],
    }
}

pub(crate) fn fields(given: &str, family: &str, email: &str) -> ContactFields {
    let mut fields = ContactFields {
        external_id: None,
        given_name: given.into(),
        family_name: family.into(),
        emails: vec![ContactEmail {
            address: EmailAddress::parse(email).expect("email"),
            primary: false,
        }],
        phones: vec![],
        title: String::new(),
        company: None,
        lifecycle_stage: LifecycleStage::Lead,
        source: SourceChannel::Web,
        owner: user("alice"),
        tags: vec![],
        attributes: BTreeMap::new(),
        consent: Consent::default(),
    };
    fields.normalise();
    fields
}

fn contact_at(fields: ContactFields, at: chrono::DateTime<Utc>) -> Contact {
    let at = to_micros(at);
    Contact {
        id: ContactId::generate(),
        fields,
        create_time: at,
        update_time: at,
        revision: Revision::FIRST,
        erase_time: None,
        merged_into: None,
    }
}

pub(crate) fn contact(fields: ContactFields) -> Contact {
    contact_at(fields, Utc::now())
}

fn company(name: &str) -> Company {
    let now = now();
    Company {
        id: CompanyId::generate(),
        fields: CompanyFields {
            display_name: name.into(),
            domain: Some("acme.example".into()),
            industry: "manufacturing".into(),
            size_band: Some(SizeBand::Large),
            owner: user("alice"),
            tags: vec![Tag::parse("key-account").expect("tag")],
            attributes: BTreeMap::new(),
        },
        create_time: now,
        update_time: now,
        revision: Revision::FIRST,
        merged_into: None,
    }
}

fn interaction(contact: ContactId, minutes_ago: i64) -> Interaction {
    Interaction {
        id: InteractionId::generate(),
        contact,
        company: None,
        fields: InteractionFields {
            kind: InteractionType::Call,
            direction: Direction::Outbound,
            channel: Some(InteractionChannel::Phone),
            occur_time: to_micros(Utc::now() - Duration::minutes(minutes_ago)),
            duration_ms: Some(90_000),
            subject: format!("call {minutes_ago}"),
            body: "discussed renewal\nnext steps".into(),
            outcome: "connected".into(),
            campaign_id: String::new(),
            actor: user("alice"),
        },
        create_time: now(),
    }
}

fn record(action: ChangeAction, actor: &str, changes: Vec<FieldChange>) -> AuditRecord {
    AuditRecord {
        action,
        actor: user(actor),
        changes,
        events: vec![],
    }
}

macro_rules! conformance {
    ($($module:ident::$case:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let pool = crm_platform::db::open_sqlite(&dir.path().join("contact.db"), &super::SQLITE_MIGRATIONS).await.expect("sqlite");
                    let store = super::SqliteContactStore::new(pool);
                    super::$module::$case(&store).await;
                }
            )+
        }

        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(db) = super::TestDatabase::create(stringify!($case)).await else { return };
                    super::migrate_test_db(&db.url).await;
                    let pool = crm_platform::db::connect_postgres(&db.url, super::POSTGRES_APP_ROLE, 4).await.expect("connect");
                    let store = super::PgContactStore::new(pool.clone());
                    super::$module::$case(&store).await;
                    pool.close().await;
                    db.drop_database().await;
                }
            )+
        }
    };
}

async fn migrate_test_db(url: &str) {
    crm_platform::db::migrate_postgres(url, &POSTGRES_MIGRATIONS)
        .await
        .expect("migrate");
}

conformance!(
    contacts::round_trip,
    contacts::updates_need_the_current_revision,
    tenancy::tenants_never_see_each_other,
    contacts::creates_are_idempotent,
    contacts::paging_misses_and_repeats_nothing,
    contacts::filters_select_exactly,
    contacts::search_ranks_and_follows_company_names,
    companies::companies_and_timelines,
    history::history_is_written_with_every_change,
    ownership::reassignment_moves_in_batches_round_robin,
    erasure::erase_leaves_nothing_personal,
    duplicates::email_is_unique_when_asked_and_keys_find_candidates,
    merge::merge_moves_everything_to_the_survivor,
    companies::companies_dedupe_and_merge,
    import::batches_write_all_or_nothing,
    contacts::concurrent_creates_each_get_their_own_outcome,
);
