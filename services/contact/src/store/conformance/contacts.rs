//! Contacts: stored as written, revisions, idempotent creates (of every record), paging,
//! filters, search, and creates arriving together.

use std::collections::HashSet;

use super::*;

pub(super) async fn round_trip(store: &dyn ContactStore) {
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

pub(super) async fn updates_need_the_current_revision(store: &dyn ContactStore) {
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

pub(super) async fn creates_are_idempotent(store: &dyn ContactStore) {
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
        .create_interaction(&t, &i, Some(&ikey), &logged(&t))
        .await
        .expect("interaction");
    assert_eq!(
        store
            .create_interaction(&t, &interaction(first.id, 3), Some(&ikey), &logged(&t))
            .await
            .expect("replay")
            .value
            .id,
        i.id
    );
}

/// Pages through every order with a small page size: each contact appears exactly once, in order.
pub(super) async fn paging_misses_and_repeats_nothing(store: &dyn ContactStore) {
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

pub(super) async fn filters_select_exactly(store: &dyn ContactStore) {
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

pub(super) async fn search_ranks_and_follows_company_names(store: &dyn ContactStore) {
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

/// Creates arriving together (written in one transaction where the backend groups them)
/// each get their own outcome: one contact per claimed email address wins and the others are
/// refused naming it, a create naming an unknown company fails alone, another tenant's
/// creates of the same addresses are independent, and every success is stored with its
/// audit entry while no refusal leaves anything behind.
pub(super) async fn concurrent_creates_each_get_their_own_outcome(store: &dyn ContactStore) {
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
