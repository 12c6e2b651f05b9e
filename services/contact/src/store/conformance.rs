//! The conformance suite: every store implementation must pass every case, on SQLite and on
//! PostgreSQL (a fresh database per test; row-level security checked separately below).

use std::collections::{BTreeMap, HashSet};

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

pub(crate) fn audit() -> AuditRecord {
    AuditRecord {
        action: ChangeAction::Updated,
        actor: user("alice"),
        changes: vec![],
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

async fn round_trip(store: &dyn ContactStore) {
    let t = tenant("t1");
    let mut f = fields("Ann", "Lee", "Ann.Lee@Example.com");
    f.phones = vec![ContactPhone {
        number: PhoneNumber::parse("+49 30 1234567").expect("phone"),
        primary: true,
    }];
    f.tags = vec![Tag::parse("vip").expect("tag"), Tag::parse("emea").expect("tag")];
    f.normalise();
    f.attributes
        .insert(AttributeKey::parse("score").expect("key"), AttributeValue::Int(42));
    f.attributes
        .insert(AttributeKey::parse("ratio").expect("key"), AttributeValue::Double(0.5));
    f.attributes
        .insert(AttributeKey::parse("vip").expect("key"), AttributeValue::Bool(true));
    f.attributes.insert(
        AttributeKey::parse("note").expect("key"),
        AttributeValue::String("likes golf".into()),
    );
    f.attributes.insert(
        AttributeKey::parse("renewal").expect("key"),
        AttributeValue::Time(now()),
    );
    f.consent.email = Some(ChannelConsent {
        status: ConsentStatus::OptedIn,
        time: now(),
        source: "web-form".into(),
    });
    let c = contact(f);
    let created = store
        .create_contact(&t, &c, None, &audit(), false)
        .await
        .expect("create");
    assert!(!created.replayed);
    assert_eq!(store.get_contact(&t, c.id).await.expect("get"), c);
}

async fn updates_need_the_current_revision(store: &dyn ContactStore) {
    let t = tenant("t1");
    let c = contact(fields("Bo", "Berg", "bo@example.com"));
    store
        .create_contact(&t, &c, None, &audit(), false)
        .await
        .expect("create");
    let mut next = c.clone();
    next.fields.title = "CFO".into();
    next.revision = c.revision.next();
    store
        .update_contact(&t, &next, c.revision, &audit())
        .await
        .expect("update");
    assert_eq!(store.get_contact(&t, c.id).await.expect("get").fields.title, "CFO");
    assert!(matches!(
        store.update_contact(&t, &next, c.revision, &audit()).await,
        Err(StoreError::RevisionMismatch)
    ));
    let ghost = contact(fields("No", "One", "no@example.com"));
    assert!(matches!(
        store.update_contact(&t, &ghost, Revision::FIRST, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_contact(&t, c.id, Some(c.revision), &audit()).await,
        Err(StoreError::RevisionMismatch)
    ));
    store
        .delete_contact(&t, c.id, Some(next.revision), &audit())
        .await
        .expect("delete");
    assert!(matches!(store.get_contact(&t, c.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.delete_contact(&t, c.id, None, &audit()).await,
        Err(StoreError::NotFound)
    ));
}

async fn tenants_never_see_each_other(store: &dyn ContactStore) {
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let co = company("Acme");
    store
        .create_company(&a, &co, None, &audit(), false)
        .await
        .expect("company");
    let mut f = fields("Secret", "Person", "secret@acme.example");
    f.company = Some(co.id);
    let c = contact(f);
    store
        .create_contact(&a, &c, None, &audit(), false)
        .await
        .expect("create");
    let i = interaction(c.id, 1);
    store.create_interaction(&a, &i, None).await.expect("interaction");

    assert!(matches!(store.get_contact(&b, c.id).await, Err(StoreError::NotFound)));
    assert!(
        store.get_live_contacts(&b, &[c.id]).await.expect("live").is_empty(),
        "another tenant's id reads nothing"
    );
    assert_eq!(store.get_live_contacts(&a, &[c.id]).await.expect("live").len(), 1);
    assert_eq!(
        store.get_live_contacts(&a, &[c.id, c.id]).await.expect("live").len(),
        1,
        "ids may repeat; a contact comes once"
    );
    assert!(matches!(store.get_company(&b, co.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.get_interaction(&b, c.id, i.id).await,
        Err(StoreError::NotFound)
    ));
    let all = ListQuery {
        filter: ContactFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 100,
    };
    assert!(store.list_contacts(&b, &all).await.expect("list").is_empty());
    let companies = ListQuery {
        filter: CompanyFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 100,
    };
    assert!(store.list_companies(&b, &companies).await.expect("list").is_empty());
    let terms = SearchTerms::parse("secret").expect("terms");
    assert!(
        store
            .search_contacts(&b, &terms, 0, 10)
            .await
            .expect("search")
            .is_empty()
    );
    assert_eq!(store.search_contacts(&a, &terms, 0, 10).await.expect("search").len(), 1);
    assert!(
        store
            .list_interactions(&b, TimelineOf::Contact(c.id), None, 10)
            .await
            .expect("timeline")
            .is_empty()
    );
    assert!(
        store
            .list_interactions(&b, TimelineOf::Company(co.id), None, 10)
            .await
            .expect("timeline")
            .is_empty()
    );

    let mut hijack = c.clone();
    hijack.revision = c.revision.next();
    hijack.fields.company = None;
    assert!(matches!(
        store.update_contact(&b, &hijack, c.revision, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_contact(&b, c.id, None, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_company(&b, co.id, None, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_interaction(&b, c.id, i.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.create_interaction(&b, &interaction(c.id, 2), None).await,
        Err(StoreError::NotFound)
    ));
    let mut linked = fields("Sneaky", "Link", "sneaky@b.example");
    linked.company = Some(co.id);
    assert!(matches!(
        store.create_contact(&b, &contact(linked), None, &audit(), false).await,
        Err(StoreError::UnknownCompany)
    ));
    assert_eq!(store.get_contact(&a, c.id).await.expect("still there"), c);
}

async fn creates_are_idempotent(store: &dyn ContactStore) {
    let t = tenant("t1");
    let key = RequestKey {
        key: "req-1".into(),
        fingerprint: [1; 32],
    };
    let first = contact(fields("Idem", "Potent", "idem@example.com"));
    let created = store
        .create_contact(&t, &first, Some(&key), &audit(), false)
        .await
        .expect("first");
    assert!(!created.replayed);
    let retry = contact(fields("Idem", "Potent", "idem@example.com"));
    let replayed = store
        .create_contact(&t, &retry, Some(&key), &audit(), false)
        .await
        .expect("retry");
    assert!(replayed.replayed);
    assert_eq!(replayed.value.id, first.id);
    let other = RequestKey {
        key: "req-1".into(),
        fingerprint: [9; 32],
    };
    assert!(matches!(
        store.create_contact(&t, &retry, Some(&other), &audit(), false).await,
        Err(StoreError::RequestIdReused)
    ));
    // The same request id in another tenant is another request.
    let elsewhere = store
        .create_contact(&tenant("t2"), &retry, Some(&key), &audit(), false)
        .await
        .expect("other tenant");
    assert!(!elsewhere.replayed);
    let all = ListQuery {
        filter: ContactFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 100,
    };
    assert_eq!(store.list_contacts(&t, &all).await.expect("list").len(), 1);

    let co = company("Idem Co");
    let ckey = RequestKey {
        key: "req-c".into(),
        fingerprint: [4; 32],
    };
    store
        .create_company(&t, &co, Some(&ckey), &audit(), false)
        .await
        .expect("company");
    assert_eq!(
        store
            .create_company(&t, &company("Idem Co"), Some(&ckey), &audit(), false)
            .await
            .expect("replay")
            .value
            .id,
        co.id
    );
    let ikey = RequestKey {
        key: "req-i".into(),
        fingerprint: [5; 32],
    };
    let i = interaction(first.id, 3);
    store
        .create_interaction(&t, &i, Some(&ikey))
        .await
        .expect("interaction");
    assert_eq!(
        store
            .create_interaction(&t, &interaction(first.id, 3), Some(&ikey))
            .await
            .expect("replay")
            .value
            .id,
        i.id
    );
}

/// Pages through every order with a small page size: each contact appears exactly once, in order.
async fn paging_misses_and_repeats_nothing(store: &dyn ContactStore) {
    let t = tenant("pager");
    let base = Utc::now() - Duration::hours(1);
    let mut ids = HashSet::new();
    for i in 0..130 {
        // Duplicate names and shared timestamps exercise the id tie-break.
        let f = fields(
            &format!("G{}", i % 7),
            &format!("F{}", i % 11),
            &format!("p{i}@example.com"),
        );
        let c = contact_at(f, base + Duration::seconds(i / 3));
        store
            .create_contact(&t, &c, None, &audit(), false)
            .await
            .expect("create");
        ids.insert(c.id);
    }
    for (field, descending) in [
        (SortField::CreateTime, true),
        (SortField::CreateTime, false),
        (SortField::FamilyName, false),
        (SortField::GivenName, true),
        (SortField::UpdateTime, false),
    ] {
        let order = Order { field, descending };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let query = ListQuery {
                filter: ContactFilter::default(),
                order,
                after: after.clone(),
                limit: 17,
            };
            let mut rows = store.list_contacts(&t, &query).await.expect("page");
            let more = rows.len() > 17;
            rows.truncate(17);
            after = rows.last().map(|c| contact_cursor(c, field));
            seen.extend(rows);
            if !more {
                break;
            }
        }
        assert_eq!(seen.len(), ids.len(), "{order:?}");
        assert_eq!(seen.iter().map(|c| c.id).collect::<HashSet<_>>(), ids, "{order:?}");
        let keys: Vec<_> = seen.iter().map(|c| (sort_value(c, field), c.id)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if descending {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{order:?}");
    }
}

fn sort_value(c: &Contact, field: SortField) -> String {
    match contact_cursor(c, field).key {
        SortKey::Time(t) => format!("{:020}", t.timestamp_micros()),
        SortKey::Text(s) => s,
    }
}

async fn filters_select_exactly(store: &dyn ContactStore) {
    let t = tenant("filters");
    let co = company("Filter Co");
    store
        .create_company(&t, &co, None, &audit(), false)
        .await
        .expect("company");
    let old = Utc::now() - Duration::days(30);
    let mut vip = fields("Vera", "Vip", "vera@example.com");
    vip.tags = vec![Tag::parse("vip").expect("tag")];
    vip.lifecycle_stage = LifecycleStage::Customer;
    vip.company = Some(co.id);
    vip.owner = user("bob");
    vip.source = SourceChannel::Referral;
    let vip = contact_at(vip, old);
    store
        .create_contact(&t, &vip, None, &audit(), false)
        .await
        .expect("vip");
    let plain = contact(fields("Paul", "Plain", "paul@example.com"));
    store
        .create_contact(&t, &plain, None, &audit(), false)
        .await
        .expect("plain");

    let t = &t;
    let check = |filter: &str, expected: Vec<ContactId>| {
        let filter = ContactFilter::parse(filter).expect("filter");
        async move {
            let query = ListQuery {
                filter,
                order: Order {
                    field: SortField::CreateTime,
                    descending: true,
                },
                after: None,
                limit: 100,
            };
            let found: Vec<ContactId> = store
                .list_contacts(t, &query)
                .await
                .expect("list")
                .iter()
                .map(|c| c.id)
                .collect();
            assert_eq!(found, expected);
        }
    };
    check("tag = vip", vec![vip.id]).await;
    check("lifecycle_stage = CUSTOMER", vec![vip.id]).await;
    check("lifecycle_stage = LEAD", vec![plain.id]).await;
    check("owner = bob", vec![vip.id]).await;
    check(&format!("company = \"{}\"", co.id.name()), vec![vip.id]).await;
    check("source = REFERRAL", vec![vip.id]).await;
    let cutoff = (Utc::now() - Duration::days(1)).to_rfc3339();
    check(&format!("create_time < \"{cutoff}\""), vec![vip.id]).await;
    check(&format!("create_time >= \"{cutoff}\""), vec![plain.id]).await;
    check(&format!("tag = vip AND create_time >= \"{cutoff}\""), vec![]).await;
    check("", vec![plain.id, vip.id]).await;

    let companies = |filter: &str| {
        let filter = CompanyFilter::parse(filter).expect("filter");
        async move {
            let query = ListQuery {
                filter,
                order: Order {
                    field: SortField::DisplayName,
                    descending: false,
                },
                after: None,
                limit: 100,
            };
            store.list_companies(t, &query).await.expect("list").len()
        }
    };
    assert_eq!(
        companies("tag = key-account AND size_band = LARGE AND domain = \"ACME.example\"").await,
        1
    );
    assert_eq!(companies("industry = retail").await, 0);
}

async fn search_ranks_and_follows_company_names(store: &dyn ContactStore) {
    let t = tenant("search");
    let co = company("Globex Industries");
    store
        .create_company(&t, &co, None, &audit(), false)
        .await
        .expect("company");
    let mut with_company = fields("Hank", "Scorpio", "hank@globex.example");
    with_company.company = Some(co.id);
    with_company.phones = vec![ContactPhone {
        number: PhoneNumber::parse("+1 415 555 2671").expect("phone"),
        primary: true,
    }];
    let hank = contact(with_company);
    store
        .create_contact(&t, &hank, None, &audit(), false)
        .await
        .expect("hank");
    let homer = contact(fields("Homer", "Simpson", "homer@springfield.example"));
    store
        .create_contact(&t, &homer, None, &audit(), false)
        .await
        .expect("homer");

    let t = &t;
    let search = |q: &str| {
        let terms = SearchTerms::parse(q).expect("terms");
        async move {
            store
                .search_contacts(t, &terms, 0, 10)
                .await
                .expect("search")
                .iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("scorp").await, vec![hank.id], "prefix of a family name");
    assert_eq!(search("homer@springfield.example").await, vec![homer.id], "whole email");
    assert_eq!(search("springfield").await, vec![homer.id], "email domain");
    assert_eq!(search("14155552671").await, vec![hank.id], "phone digits");
    assert_eq!(search("globex").await, vec![hank.id], "company name");
    assert_eq!(search("hank globex").await, vec![hank.id], "all words must match");
    assert!(search("hank springfield").await.is_empty());
    let both = search("h").await;
    assert_eq!(both.len(), 2);

    let mut renamed = co.clone();
    renamed.fields.display_name = "Initech".into();
    renamed.revision = co.revision.next();
    store
        .update_company(t, &renamed, co.revision, &audit())
        .await
        .expect("rename");
    assert_eq!(
        search("initech").await,
        vec![hank.id],
        "search follows a company rename"
    );
    assert!(search("globex industries").await.is_empty());
}

async fn companies_and_timelines(store: &dyn ContactStore) {
    let t = tenant("timeline");
    let co = company("Umbrella");
    store
        .create_company(&t, &co, None, &audit(), false)
        .await
        .expect("company");
    assert_eq!(store.get_company(&t, co.id).await.expect("get"), co);
    let mut f = fields("Jill", "Valentine", "jill@umbrella.example");
    f.company = Some(co.id);
    let jill = contact(f);
    store
        .create_contact(&t, &jill, None, &audit(), false)
        .await
        .expect("jill");
    let mut ghost = fields("Ghost", "Co", "g@example.com");
    ghost.company = Some(CompanyId::generate());
    assert!(matches!(
        store.create_contact(&t, &contact(ghost), None, &audit(), false).await,
        Err(StoreError::UnknownCompany)
    ));

    let mut logged = Vec::new();
    for minutes in [30, 10, 20, 40, 5] {
        let created = store
            .create_interaction(&t, &interaction(jill.id, minutes), None)
            .await
            .expect("log");
        assert_eq!(created.value.company, Some(co.id), "the contact's company is noted");
        logged.push(created.value);
    }
    assert!(matches!(
        store
            .create_interaction(&t, &interaction(ContactId::generate(), 1), None)
            .await,
        Err(StoreError::NotFound)
    ));
    let fetched = store.get_interaction(&t, jill.id, logged[0].id).await.expect("get");
    assert_eq!(fetched, logged[0]);
    assert!(matches!(
        store.get_interaction(&t, ContactId::generate(), logged[0].id).await,
        Err(StoreError::NotFound)
    ));

    for of in [TimelineOf::Contact(jill.id), TimelineOf::Company(co.id)] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let mut page = store.list_interactions(&t, of, after.as_ref(), 2).await.expect("page");
            let more = page.len() > 2;
            page.truncate(2);
            after = page.last().map(interaction_cursor);
            seen.extend(page.into_iter().map(|i| i.fields.occur_time));
            if !more {
                break;
            }
        }
        let mut newest_first = seen.clone();
        newest_first.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen.len(), 5);
        assert_eq!(seen, newest_first);
    }

    store
        .delete_interaction(&t, jill.id, logged[0].id)
        .await
        .expect("delete interaction");
    assert_eq!(
        store
            .list_interactions(&t, TimelineOf::Contact(jill.id), None, 10)
            .await
            .expect("list")
            .len(),
        4
    );

    assert!(matches!(
        store
            .delete_company(&t, co.id, Some(co.revision.next()), &audit())
            .await,
        Err(StoreError::RevisionMismatch)
    ));
    store
        .delete_company(&t, co.id, Some(co.revision), &audit())
        .await
        .expect("delete company");
    let unlinked = store.get_contact(&t, jill.id).await.expect("contact stays");
    assert_eq!(unlinked.fields.company, None);
    store
        .delete_contact(&t, jill.id, None, &audit())
        .await
        .expect("delete contact");
    assert!(
        store
            .list_interactions(&t, TimelineOf::Contact(jill.id), None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

fn record(action: ChangeAction, actor: &str, changes: Vec<FieldChange>) -> AuditRecord {
    AuditRecord {
        action,
        actor: user(actor),
        changes,
    }
}

async fn history_is_written_with_every_change(store: &dyn ContactStore) {
    let t = tenant("audit");
    let c = contact(fields("Ann", "Lee", "ann@example.com"));
    let created = record(ChangeAction::Created, "alice", changes(None, Some(&c.fields)));
    store
        .create_contact(&t, &c, None, &created, false)
        .await
        .expect("create");
    let mut next = c.clone();
    next.fields.title = "CFO".into();
    next.revision = c.revision.next();
    let updated = record(
        ChangeAction::Updated,
        "bob",
        changes(Some(&c.fields), Some(&next.fields)),
    );
    store
        .update_contact(&t, &next, c.revision, &updated)
        .await
        .expect("update");
    // A write that fails writes no history either.
    assert!(matches!(
        store.update_contact(&t, &next, c.revision, &updated).await,
        Err(StoreError::RevisionMismatch)
    ));

    let of = Audited::Contact(c.id);
    let entries = store.list_history(&t, of, None, 10).await.expect("history");
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0].action, entries[0].actor.as_str()),
        (ChangeAction::Updated, "bob"),
        "newest first"
    );
    assert_eq!(
        entries[0].changes,
        vec![FieldChange {
            field: "title".into(),
            old: serde_json::Value::Null,
            new: "CFO".into()
        }]
    );
    assert_eq!(entries[1].action, ChangeAction::Created);
    let page = store
        .list_history(&t, of, Some(entries[0].id), 10)
        .await
        .expect("older");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![entries[1].id]);
    assert!(
        store
            .list_history(&tenant("elsewhere"), of, None, 10)
            .await
            .expect("other tenant")
            .is_empty()
    );

    store
        .delete_contact(
            &t,
            c.id,
            None,
            &record(ChangeAction::Deleted, "alice", changes(Some(&next.fields), None)),
        )
        .await
        .expect("delete");
    let after = store
        .list_history(&t, of, None, 10)
        .await
        .expect("history outlives the record");
    assert_eq!(after.len(), 3);
    assert!(
        after[0].changes.iter().any(|ch| ch.field == "title" && ch.old == "CFO"),
        "a delete keeps the last values"
    );

    let co = company("Audited Co");
    store
        .create_company(&t, &co, None, &record(ChangeAction::Created, "alice", vec![]), false)
        .await
        .expect("company");
    assert_eq!(
        store
            .list_history(&t, Audited::Company(co.id), None, 10)
            .await
            .expect("company history")
            .len(),
        1
    );
}

async fn reassignment_moves_in_batches_round_robin(store: &dyn ContactStore) {
    let t = tenant("reassign");
    for i in 0..7 {
        store
            .create_contact(
                &t,
                &contact(fields(&format!("C{i}"), "Leaver", &format!("c{i}@example.com"))),
                None,
                &audit(),
                false,
            )
            .await
            .expect("create");
    }
    let mut kept = fields("Stay", "Put", "stay@example.com");
    kept.owner = user("carol");
    let kept = contact(kept);
    store
        .create_contact(&t, &kept, None, &audit(), false)
        .await
        .expect("other owner");
    store
        .create_contact(
            &tenant("other"),
            &contact(fields("Not", "Mine", "x@example.com")),
            None,
            &audit(),
            false,
        )
        .await
        .expect("other tenant");
    let alice = user("alice");
    assert_eq!(store.count_owned(&t, Owned::Contacts, &alice).await.expect("count"), 7);

    let to = [user("bob"), user("dan")];
    let boss = user("boss");
    let first = store
        .reassign_batch(
            &t,
            &Batch {
                what: Owned::Contacts,
                from: &alice,
                to: &to,
                offset: 0,
                limit: 5,
                actor: &boss,
            },
        )
        .await
        .expect("batch 1");
    assert_eq!(first, vec![3, 2]);
    let second = store
        .reassign_batch(
            &t,
            &Batch {
                what: Owned::Contacts,
                from: &alice,
                to: &to,
                offset: 5,
                limit: 5,
                actor: &boss,
            },
        )
        .await
        .expect("batch 2");
    assert_eq!(second, vec![1, 1]);
    assert_eq!(
        store
            .reassign_batch(
                &t,
                &Batch {
                    what: Owned::Contacts,
                    from: &alice,
                    to: &to,
                    offset: 7,
                    limit: 5,
                    actor: &boss
                }
            )
            .await
            .expect("done"),
        vec![0, 0]
    );
    assert_eq!(
        store.count_owned(&t, Owned::Contacts, &alice).await.expect("none left"),
        0
    );
    assert_eq!(
        store.count_owned(&t, Owned::Contacts, &user("bob")).await.expect("bob"),
        4
    );
    assert_eq!(
        store.count_owned(&t, Owned::Contacts, &user("dan")).await.expect("dan"),
        3
    );
    assert_eq!(
        store
            .get_contact(&t, kept.id)
            .await
            .expect("kept")
            .fields
            .owner
            .as_str(),
        "carol"
    );
    assert_eq!(
        store
            .count_owned(&tenant("other"), Owned::Contacts, &alice)
            .await
            .expect("other tenant untouched"),
        1
    );

    let query = ListQuery {
        filter: ContactFilter::parse("owner = bob").expect("filter"),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 10,
    };
    let moved = store.list_contacts(&t, &query).await.expect("list");
    let entry = &store
        .list_history(&t, Audited::Contact(moved[0].id), None, 10)
        .await
        .expect("history")[0];
    assert_eq!((entry.action, entry.actor.as_str()), (ChangeAction::Reassigned, "boss"));
    assert_eq!(
        entry.changes,
        vec![FieldChange {
            field: "owner".into(),
            old: "alice".into(),
            new: "bob".into()
        }]
    );
    assert_eq!(
        moved[0].revision,
        Revision(2),
        "a move is a new revision, so stale etags fail"
    );
}

async fn erase_leaves_nothing_personal(store: &dyn ContactStore) {
    let t = tenant("gdpr");
    let mut f = fields("Erin", "Quixotically", "erin@private.example");
    f.phones = vec![ContactPhone {
        number: PhoneNumber::parse("+49 30 1234567").expect("phone"),
        primary: true,
    }];
    f.attributes.insert(
        AttributeKey::parse("shoe_size").expect("key"),
        AttributeValue::Int(987_654),
    );
    let c = contact(f);
    store
        .create_contact(
            &t,
            &c,
            None,
            &record(ChangeAction::Created, "alice", changes(None, Some(&c.fields))),
            false,
        )
        .await
        .expect("create");
    let mut call = interaction(c.id, 5);
    call.fields.body = "Erin said her new address is 1 Secret Lane".into();
    store.create_interaction(&t, &call, None).await.expect("call");

    let tombstone = c.erased(now());
    store
        .erase_contact(&t, &tombstone, c.revision, &record(ChangeAction::Erased, "dpo", vec![]))
        .await
        .expect("erase");
    assert!(matches!(
        store.erase_contact(&t, &tombstone, c.revision, &audit()).await,
        Err(StoreError::RevisionMismatch)
    ));

    let stored = store.get_contact(&t, c.id).await.expect("tombstone");
    assert_eq!(stored, tombstone);
    assert!(stored.erase_time.is_some());
    let everything = format!(
        "{stored:?} {:?} {:?}",
        store
            .list_interactions(&t, TimelineOf::Contact(c.id), None, 10)
            .await
            .expect("timeline"),
        store
            .list_history(&t, Audited::Contact(c.id), None, 10)
            .await
            .expect("history")
    );
    for secret in [
        "Erin",
        "Quixotically",
        "erin@private.example",
        "301234567",
        "Secret Lane",
        "987654",
        "shoe_size",
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} survived the erase: {everything}"
        );
    }
    for q in ["erin", "quixotically", "private"] {
        assert!(
            store
                .search_contacts(&t, &SearchTerms::parse(q).expect("terms"), 0, 10)
                .await
                .expect("search")
                .is_empty(),
            "{q}"
        );
    }
    let all = ListQuery {
        filter: ContactFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 10,
    };
    assert!(
        store.list_contacts(&t, &all).await.expect("list").is_empty(),
        "tombstones are not listed"
    );
}

async fn email_is_unique_when_asked_and_keys_find_candidates(store: &dyn ContactStore) {
    let t = tenant("dupes");
    let mut first = fields("Jonathan", "Smith", "Jon.Smith@Example.com");
    first.phones = vec![ContactPhone {
        number: PhoneNumber::parse("+44 20 7946 0958").expect("phone"),
        primary: true,
    }];
    let first = contact(first);
    store
        .create_contact(&t, &first, None, &audit(), true)
        .await
        .expect("first");
    let same_email = contact(fields("J", "S", "jon.smith@example.COM"));
    match store.create_contact(&t, &same_email, None, &audit(), true).await {
        Err(StoreError::DuplicateEmail(existing)) => assert_eq!(existing, first.id),
        other => panic!("expected a duplicate email, got {other:?}"),
    }
    assert!(
        matches!(store.get_contact(&t, same_email.id).await, Err(StoreError::NotFound)),
        "nothing was written"
    );
    store
        .create_contact(&tenant("dupes-elsewhere"), &same_email, None, &audit(), true)
        .await
        .expect("another tenant may");
    store
        .create_contact(&t, &same_email, None, &audit(), false)
        .await
        .expect("created anyway when asked");

    let typo = contact(fields("Jonathon", "Smith", "jsmith@other.example"));
    let created = store
        .create_contact(&t, &typo, None, &audit(), true)
        .await
        .expect("typo");
    assert_eq!(
        created.similar.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![first.id],
        "a create returns the contacts sharing a key with it (here the name block), not itself"
    );
    let found = store
        .find_by_keys(&t, &first.fields.match_keys(), 10)
        .await
        .expect("find");
    let ids: HashSet<ContactId> = found.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        HashSet::from([first.id, same_email.id, typo.id]),
        "by email, and by name block"
    );

    let shared = store.shared_keys(&t, None, 10).await.expect("shared");
    let kinds: Vec<KeyKind> = shared.iter().map(|(k, _)| k.kind).collect();
    assert_eq!(kinds, vec![KeyKind::Email, KeyKind::Name]);
    assert_eq!(
        shared[1].1,
        vec![first.id, typo.id],
        "\"J S\" is too short a name for a block"
    );
    let rest = store.shared_keys(&t, Some(&shared[0].0), 10).await.expect("after");
    assert_eq!(rest.len(), 1);

    // Changing the email away frees it; an erased contact's keys are gone.
    let tombstone = typo.erased(now());
    store
        .erase_contact(&t, &tombstone, typo.revision, &audit())
        .await
        .expect("erase");
    assert!(
        store
            .find_by_keys(&t, &typo.fields.match_keys(), 10)
            .await
            .expect("find")
            .iter()
            .all(|c| c.id != typo.id)
    );
    let live: HashSet<ContactId> = store
        .get_live_contacts(&t, &[first.id, same_email.id, typo.id])
        .await
        .expect("live")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        live,
        HashSet::from([first.id, same_email.id]),
        "an erased contact is not live"
    );
    let last = &rest.last().expect("a shared key").0;
    assert!(
        store
            .shared_keys(&t, Some(last), 10)
            .await
            .expect("past the end")
            .is_empty(),
        "nothing after the last shared key"
    );
}

async fn merge_moves_everything_to_the_survivor(store: &dyn ContactStore) {
    let t = tenant("merge");
    let survivor = contact(fields("Ann", "Lee", "ann@a.example"));
    let other = contact(fields("Anne", "Lee", "anne@b.example"));
    let older = contact(fields("A", "Lee", "a@c.example"));
    for c in [&survivor, &other, &older] {
        store.create_contact(&t, c, None, &audit(), true).await.expect("create");
    }
    // `older` was merged into `other` earlier; merging `other` must carry that lineage along.
    let mut other_state = other.clone();
    other_state.revision = other.revision.next();
    let step = Merge {
        survivor: &other_state,
        expected: other.revision,
        merged: &[(older.id, older.revision)],
        survivor_audit: &audit(),
        merged_audit: &audit(),
    };
    store.merge_contacts(&t, &step).await.expect("first merge");
    let call = interaction(other.id, 3);
    store.create_interaction(&t, &call, None).await.expect("call");

    let mut merged_state = survivor.clone();
    merged_state.fields.emails.push(ContactEmail {
        address: EmailAddress::parse("anne@b.example").expect("email"),
        primary: false,
    });
    merged_state.revision = survivor.revision.next();
    let merged_audit = AuditRecord {
        action: ChangeAction::Merged,
        actor: user("alice"),
        changes: vec![],
    };
    let merge = Merge {
        survivor: &merged_state,
        expected: survivor.revision,
        merged: &[(other.id, other_state.revision)],
        survivor_audit: &audit(),
        merged_audit: &merged_audit,
    };
    store.merge_contacts(&t, &merge).await.expect("merge");
    assert!(
        matches!(
            store.merge_contacts(&t, &merge).await,
            Err(StoreError::RevisionMismatch)
        ),
        "a replay is refused"
    );

    assert_eq!(
        store
            .get_contact(&t, survivor.id)
            .await
            .expect("survivor")
            .fields
            .emails
            .len(),
        2
    );
    let lineage = store.get_contact(&t, other.id).await.expect("lineage");
    assert_eq!(lineage.merged_into, Some(survivor.id));
    assert!(
        lineage.fields.given_name.is_empty() && lineage.fields.emails.is_empty(),
        "data lives on the survivor only"
    );
    assert_eq!(
        store.get_contact(&t, older.id).await.expect("older").merged_into,
        Some(survivor.id),
        "chains are flattened"
    );
    let timeline = store
        .list_interactions(&t, TimelineOf::Contact(survivor.id), None, 10)
        .await
        .expect("timeline");
    assert_eq!(
        timeline.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![call.id],
        "interactions moved"
    );
    let all = ListQuery {
        filter: ContactFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 10,
    };
    assert_eq!(
        store
            .list_contacts(&t, &all)
            .await
            .expect("list")
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![survivor.id]
    );
    assert_eq!(
        store
            .get_live_contacts(&t, &[survivor.id, other.id, older.id])
            .await
            .expect("live")
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![survivor.id],
        "merged contacts are not live"
    );
    let found = store
        .find_by_keys(&t, &other.fields.match_keys(), 10)
        .await
        .expect("keys");
    assert_eq!(
        found.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![survivor.id],
        "the survivor now answers for the merged email"
    );
    assert_eq!(
        store
            .list_history(&t, Audited::Contact(other.id), None, 10)
            .await
            .expect("history")[0]
            .action,
        ChangeAction::Merged
    );
}

async fn companies_dedupe_and_merge(store: &dyn ContactStore) {
    let t = tenant("co-merge");
    let named = |name: &str, domain: Option<&str>| {
        let mut c = company(name);
        c.fields.domain = domain.map(str::to_owned);
        c
    };
    let acme = named("Acme Inc.", Some("acme.example"));
    let acme_short = named("ACME", None);
    let acme_corp = named("Acme Corporation", Some("acme.example"));
    let globex = named("Globex", Some("globex.example"));
    store
        .create_company(&t, &acme, None, &audit(), true)
        .await
        .expect("acme");
    store
        .create_company(&t, &acme_short, None, &audit(), true)
        .await
        .expect("no domain, no conflict");
    match store.create_company(&t, &acme_corp, None, &audit(), true).await {
        Err(StoreError::DuplicateDomain(existing)) => assert_eq!(existing, acme.id),
        other => panic!("expected a duplicate domain, got {other:?}"),
    }
    store
        .create_company(&t, &acme_corp, None, &audit(), false)
        .await
        .expect("created anyway when asked");
    store
        .create_company(&t, &globex, None, &audit(), true)
        .await
        .expect("globex");
    store
        .create_company(
            &tenant("co-elsewhere"),
            &named("Acme", Some("acme.example")),
            None,
            &audit(),
            true,
        )
        .await
        .expect("another tenant");

    let found = store
        .company_candidates(
            &t,
            Some("acme.example"),
            &crate::domain::company::name_block("Acme Inc."),
            10,
        )
        .await
        .expect("candidates");
    let ids: HashSet<CompanyId> = found.iter().map(|c| c.id).collect();
    assert_eq!(ids, HashSet::from([acme.id, acme_short.id, acme_corp.id]));
    let shared = store.shared_company_keys(&t, None, 10).await.expect("shared");
    assert_eq!(
        shared
            .iter()
            .map(|(k, _)| (k.0.as_str(), k.1.as_str()))
            .collect::<Vec<_>>(),
        vec![("domain", "acme.example"), ("name", "acme")]
    );
    assert_eq!(shared[1].1.len(), 3);

    let mut f = fields("Wile", "Coyote", "wile@acme.example");
    f.company = Some(acme_corp.id);
    let wile = contact(f);
    store
        .create_contact(&t, &wile, None, &audit(), true)
        .await
        .expect("contact");
    let call = store
        .create_interaction(&t, &interaction(wile.id, 1), None)
        .await
        .expect("call")
        .value;

    let mut survivor = acme.clone();
    survivor.revision = acme.revision.next();
    survivor.update_time = now();
    let merge = CompanyMerge {
        survivor: &survivor,
        expected: acme.revision,
        merged: &[(acme_short.id, acme_short.revision), (acme_corp.id, acme_corp.revision)],
        survivor_audit: &audit(),
        merged_audit: &audit(),
    };
    store.merge_companies(&t, &merge).await.expect("merge");
    assert!(
        matches!(
            store.merge_companies(&t, &merge).await,
            Err(StoreError::RevisionMismatch)
        ),
        "a replay is refused"
    );
    assert_eq!(
        store.get_company(&t, acme_corp.id).await.expect("lineage").merged_into,
        Some(acme.id)
    );
    assert_eq!(
        store.get_contact(&t, wile.id).await.expect("contact").fields.company,
        Some(acme.id),
        "contacts moved"
    );
    let timeline = store
        .list_interactions(&t, TimelineOf::Company(acme.id), None, 10)
        .await
        .expect("timeline");
    assert_eq!(
        timeline.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![call.id],
        "interactions moved"
    );
    let all = ListQuery {
        filter: CompanyFilter::default(),
        order: Order {
            field: SortField::DisplayName,
            descending: false,
        },
        after: None,
        limit: 10,
    };
    let listed: Vec<CompanyId> = store
        .list_companies(&t, &all)
        .await
        .expect("list")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, vec![acme.id, globex.id]);
    let search = SearchTerms::parse("coyote acme").expect("terms");
    assert_eq!(
        store.search_contacts(&t, &search, 0, 10).await.expect("search").len(),
        1,
        "the contact is found by its new company's name"
    );
    assert!(
        store
            .shared_company_keys(&t, None, 10)
            .await
            .expect("shared")
            .is_empty()
    );
}

/// Creates arriving together (written in one transaction where the backend groups them)
/// each get their own outcome: one contact per claimed email address wins and the others are
/// refused naming it, a create naming an unknown company fails alone, another tenant's
/// creates of the same addresses are independent, and every success is stored with its
/// audit entry while no refusal leaves anything behind.
async fn concurrent_creates_each_get_their_own_outcome(store: &dyn ContactStore) {
    let (t, other) = (tenant("burst"), tenant("burst-elsewhere"));
    let mut creates = Vec::new();
    for round in 0..3 {
        for n in 0..8 {
            creates.push((
                t.clone(),
                contact(fields(
                    &format!("G{round}"),
                    &format!("Family{n}"),
                    &format!("p{n}@example.com"),
                )),
            ));
        }
    }
    for n in 0..8 {
        creates.push((
            other.clone(),
            contact(fields("G", &format!("Family{n}"), &format!("p{n}@example.com"))),
        ));
    }
    let record = audit();
    let outcomes = futures::future::join_all(
        creates
            .iter()
            .map(|(tenant, c)| store.create_contact(tenant, c, None, &record, true)),
    )
    .await;
    let mut winners: BTreeMap<(String, String), ContactId> = BTreeMap::new();
    let mut refused = Vec::new();
    for ((tenant, c), outcome) in creates.iter().zip(outcomes) {
        let email = c.fields.emails[0].address.key();
        match outcome {
            Ok(created) => {
                assert_eq!(created.value.id, c.id);
                let previous = winners.insert((tenant.as_str().to_owned(), email.clone()), c.id);
                assert!(previous.is_none(), "two contacts of {tenant:?} won {email}");
            }
            Err(StoreError::DuplicateEmail(holder)) => refused.push((tenant.clone(), c.id, email, holder)),
            Err(err) => panic!("unexpected outcome for {email}: {err:?}"),
        }
    }
    assert_eq!(winners.len(), 16, "one winner per address and tenant: {winners:?}");
    assert_eq!(
        refused.len(),
        16,
        "the two other creates of each address of the first tenant"
    );
    for (tenant, id, email, holder) in refused {
        assert_eq!(
            holder,
            winners[&(tenant.as_str().to_owned(), email)],
            "the refusal names the winner"
        );
        assert!(
            matches!(store.get_contact(&tenant, id).await, Err(StoreError::NotFound)),
            "nothing written"
        );
    }
    for ((tenant, _), id) in &winners {
        let tenant = TenantId::parse(tenant).expect("tenant");
        store.get_contact(&tenant, *id).await.expect("a winner is stored");
        let history = store
            .list_history(&tenant, Audited::Contact(*id), None, 10)
            .await
            .expect("history");
        assert_eq!(history.len(), 1, "its creation is audited once");
    }

    // A create naming an unknown company among valid ones fails alone.
    let mut orphan = fields("Orphan", "Contact", "orphan@example.com");
    orphan.company = Some(CompanyId::generate());
    let orphan = contact(orphan);
    let valid: Vec<Contact> = (0..4)
        .map(|n| contact(fields("V", "Valid", &format!("v{n}@example.com"))))
        .collect();
    let outcomes = futures::future::join_all(
        std::iter::once(&orphan)
            .chain(&valid)
            .map(|c| store.create_contact(&t, c, None, &record, true)),
    )
    .await;
    assert!(
        matches!(outcomes[0], Err(StoreError::UnknownCompany)),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1..].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(matches!(
        store.get_contact(&t, orphan.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn batches_write_all_or_nothing(store: &dyn ContactStore) {
    let t = tenant("batches");
    let mut held = fields("Held", "Here", "held@example.com");
    held.external_id = Some("ext-held".into());
    let held = contact(held);
    store
        .create_contact(&t, &held, None, &audit(), true)
        .await
        .expect("held");

    // Creates and an update in one batch, all found again by their keys.
    let mut new_one = fields("New", "One", "new1@example.com");
    new_one.external_id = Some("ext-1".into());
    let new_one = contact(new_one);
    let mut new_two = fields("New", "Two", "new2@example.com");
    new_two.external_id = Some("ext-2".into());
    let new_two = contact(new_two);
    let mut changed = held.clone();
    changed.fields.title = "Director".into();
    changed.revision = held.revision.next();
    let batch = WriteBatch {
        unique_email: true,
        creates: vec![(new_one.clone(), audit()), (new_two.clone(), audit())],
        updates: vec![(changed.clone(), held.revision, audit())],
    };
    store.write_batch(&t, &batch).await.expect("batch");
    let values = vec![
        "ext-1".to_owned(),
        "ext-2".to_owned(),
        "ext-held".to_owned(),
        "ext-none".to_owned(),
    ];
    let mut found: Vec<(String, ContactId)> = store
        .contacts_by_key(&t, KeyKind::External, &values)
        .await
        .expect("by key")
        .into_iter()
        .map(|(value, c)| (value, c.id))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("ext-1".into(), new_one.id),
            ("ext-2".into(), new_two.id),
            ("ext-held".into(), held.id)
        ]
    );
    assert!(
        store
            .contacts_by_key(&tenant("other"), KeyKind::External, &values)
            .await
            .expect("other")
            .is_empty()
    );
    let read = store.get_contact(&t, held.id).await.expect("updated");
    assert_eq!(
        (read.fields.title.as_str(), read.revision),
        ("Director", changed.revision)
    );
    assert_eq!(
        store
            .list_history(&t, Audited::Contact(new_two.id), None, 10)
            .await
            .expect("history")
            .len(),
        1
    );
    let terms = SearchTerms::parse("new two").expect("terms");
    assert_eq!(
        store
            .search_contacts(&t, &terms, 0, 10)
            .await
            .expect("search")
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![new_two.id]
    );

    // Each refusal leaves everything as it was: an email another contact holds, an external
    // id claimed twice in the batch, a stale revision, an unknown company.
    let fresh = || {
        let mut f = fields("Fresh", "Row", "fresh@example.com");
        f.external_id = Some("ext-fresh".into());
        contact(f)
    };
    let taken = contact(fields("Taken", "Mail", "held@example.com"));
    let mut twin = fields("Twin", "Row", "twin@example.com");
    twin.external_id = Some("ext-fresh".into());
    let mut stale = changed.clone();
    stale.fields.title = "Stale".into();
    let mut orphan = fresh();
    orphan.fields.company = Some(CompanyId::generate());
    type IsExpected = fn(&StoreError) -> bool;
    let refusals: Vec<(WriteBatch, IsExpected)> = vec![
        (
            WriteBatch {
                unique_email: true,
                creates: vec![(fresh(), audit()), (taken, audit())],
                updates: vec![],
            },
            |e| matches!(e, StoreError::DuplicateEmail(_)),
        ),
        (
            WriteBatch {
                unique_email: true,
                creates: vec![(fresh(), audit()), (contact(twin), audit())],
                updates: vec![],
            },
            |e| matches!(e, StoreError::DuplicateExternalId(_)),
        ),
        (
            WriteBatch {
                unique_email: true,
                creates: vec![(fresh(), audit())],
                updates: vec![(stale, held.revision, audit())],
            },
            |e| matches!(e, StoreError::RevisionMismatch),
        ),
        (
            WriteBatch {
                unique_email: true,
                creates: vec![(orphan, audit())],
                updates: vec![],
            },
            |e| matches!(e, StoreError::UnknownCompany),
        ),
    ];
    for (batch, expected) in refusals {
        let err = store.write_batch(&t, &batch).await.expect_err("refused");
        assert!(expected(&err), "unexpected refusal {err:?}");
        assert!(
            store
                .contacts_by_key(&t, KeyKind::External, &["ext-fresh".to_owned()])
                .await
                .expect("by key")
                .is_empty(),
            "nothing of a refused batch is written ({err:?})"
        );
    }
    assert_eq!(
        store.get_contact(&t, held.id).await.expect("held").fields.title,
        "Director"
    );
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let pool = crm_platform::db::open_sqlite(&dir.path().join("contact.db"), &super::SQLITE_MIGRATIONS).await.expect("sqlite");
                    let store = super::SqliteContactStore::new(pool);
                    super::$case(&store).await;
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
                    super::$case(&store).await;
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
    round_trip,
    updates_need_the_current_revision,
    tenants_never_see_each_other,
    creates_are_idempotent,
    paging_misses_and_repeats_nothing,
    filters_select_exactly,
    search_ranks_and_follows_company_names,
    companies_and_timelines,
    history_is_written_with_every_change,
    reassignment_moves_in_batches_round_robin,
    erase_leaves_nothing_personal,
    email_is_unique_when_asked_and_keys_find_candidates,
    merge_moves_everything_to_the_survivor,
    companies_dedupe_and_merge,
    batches_write_all_or_nothing,
    concurrent_creates_each_get_their_own_outcome,
);

/// Row-level security is the second wall: even SQL without a tenant condition, run as the
/// serving role, sees and writes only the pinned tenant's rows.
#[tokio::test]
async fn postgres_row_level_security_is_forced() {
    use sqlx::Row;
    let Some(db) = TestDatabase::create("postgres_row_level_security_is_forced").await else {
        return;
    };
    migrate_test_db(&db.url).await;
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
        .await
        .expect("connect");
    let store = PgContactStore::new(pool.clone());
    let a = store
        .create_contact(
            &tenant("a"),
            &contact(fields("A", "A", "a@example.com")),
            None,
            &audit(),
            false,
        )
        .await
        .expect("a")
        .value;
    store
        .create_contact(
            &tenant("b"),
            &contact(fields("B", "B", "b@example.com")),
            None,
            &audit(),
            false,
        )
        .await
        .expect("b");

    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("a")).await.expect("tx");
    let visible: i64 = sqlx::query("SELECT count(*) AS n FROM contacts")
        .fetch_one(&mut *tx)
        .await
        .expect("count")
        .get("n");
    assert_eq!(visible, 1, "tenant a sees only its own row");
    let sneaky = sqlx::query("UPDATE contacts SET tenant_id = 'a' WHERE tenant_id = 'b'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(
        sneaky.rows_affected(),
        0,
        "other tenants' rows cannot even be addressed"
    );
    let forged = sqlx::query(
        "INSERT INTO companies (tenant_id, id, display_name, owner, create_time, update_time, revision) VALUES ('b', gen_random_uuid(), 'x', 'u', now(), now(), 1)",
    )
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "rows of another tenant cannot be written");
    drop(tx);

    // The functions that pin the tenant for their own statement (contact_write,
    // contact_live) refuse to re-pin a transaction pinned to another tenant, and leave
    // nothing pinned after their statement.
    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("a")).await.expect("tx");
    let repinned = sqlx::query("SELECT count(*) FROM contact_live('b', ARRAY[gen_random_uuid()])")
        .execute(&mut *tx)
        .await
        .expect_err("re-pinned to b");
    assert!(
        matches!(&repinned, sqlx::Error::Database(e) if e.code().as_deref() == Some("42501")),
        "{repinned}"
    );
    drop(tx);
    let mut conn = pool.acquire().await.expect("conn");
    let live: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM contact_live('a', $1)")
        .bind(vec![a.id.0])
        .fetch_all(&mut *conn)
        .await
        .expect("live");
    assert_eq!(live, [a.id.0]);
    let crossed: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM contact_live('b', $1)")
        .bind(vec![a.id.0])
        .fetch_all(&mut *conn)
        .await
        .expect("live");
    assert!(crossed.is_empty(), "pinned to b, a's contact is not there");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(after, 0, "the function's pin ends with its statement");
    drop(conn);

    let mut conn = pool.acquire().await.expect("conn");
    let unpinned: i64 = sqlx::query("SELECT count(*) AS n FROM contacts")
        .fetch_one(&mut *conn)
        .await
        .expect("count")
        .get("n");
    assert_eq!(unpinned, 0, "without a pinned tenant nothing is visible");
    let bypass: bool = sqlx::query("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *conn)
        .await
        .expect("role")
        .get(0);
    assert!(!bypass, "the serving role cannot bypass RLS");
    drop(conn);
    pool.close().await;
    db.drop_database().await;
}

/// The sequencer finds unnumbered events by a plain index scan of the partial index made for
/// them: numbering leaves each event's old, unnumbered version behind until vacuum, and only
/// a plain index scan marks those dead as it passes. A bitmap scan (what the planner chose
/// on its own) read the heap page of every event numbered since the last vacuum, on every
/// pass. And no JIT: a disabled scan's penalty cost would have the counter compiled.
#[tokio::test]
async fn postgres_sequencer_reads_only_unnumbered_events() {
    use crm_platform::outbox::{NUMBER_EVENTS, NewEvent, Outbox, PgOutbox, append_pg};
    let Some(db) = TestDatabase::create("postgres_sequencer_reads_only_unnumbered_events").await else {
        return;
    };
    migrate_test_db(&db.url).await;
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 4)
        .await
        .expect("connect");
    let outbox = PgOutbox::start(pool.clone()).await.expect("outbox");
    for round in 0..3 {
        let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("seq")).await.expect("tx");
        let events: Vec<NewEvent> = (0..200)
            .map(|i| NewEvent {
                id: uuid::Uuid::now_v7(),
                tenant: "seq".to_owned(),
                kind: "crm.contact.v1.ContactCreated",
                subject: format!("contacts/{round}-{i}"),
                time: Utc::now(),
                actor: "tester".to_owned(),
                payload: serde_json::json!({}),
            })
            .collect();
        append_pg(&mut tx, &events).await.expect("append");
        tx.commit().await.expect("commit");
        outbox.sequence().await.expect("sequence");
    }
    let bounds = outbox.bounds().await.expect("bounds");
    assert_eq!(bounds.head, 600, "every event numbered, once");

    let mut tx = crm_platform::db::begin_sequencer(&pool).await.expect("sequencer tx");
    let plan: serde_json::Value =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {NUMBER_EVENTS}")))
            .bind(600_i64)
            .bind(10_000_i64)
            .fetch_one(&mut *tx)
            .await
            .expect("explain");
    let plan = plan.to_string();
    assert!(
        plan.contains(r#""Node Type":"Index Scan""#) && plan.contains(r#""Index Name":"outbox_events_unsequenced""#),
        "unnumbered events are read by an index scan of outbox_events_unsequenced: {plan}"
    );
    assert!(!plan.contains("Bitmap"), "no bitmap scan: {plan}");
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&mut *tx).await.expect("jit");
    assert_eq!(jit, "off");
    drop(tx);
    // The outbox's listener keeps a connection of the pool for its lifetime (closing the pool
    // would wait for it); dropping the database ends it.
    db.drop_database().await;
}
