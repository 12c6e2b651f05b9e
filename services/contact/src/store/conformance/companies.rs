//! Companies: their lifecycle and the timelines of interactions, their likely duplicates and
//! their merges.

use std::collections::HashSet;

use super::*;

pub(super) async fn companies_and_timelines(store: &dyn ContactStore) {
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
            .create_interaction(&t, &interaction(jill.id, minutes), None, &super::logged(&t))
            .await
            .expect("log");
        assert_eq!(created.value.company, Some(co.id), "the contact's company is noted");
        logged.push(created.value);
    }
    assert!(matches!(
        store
            .create_interaction(&t, &interaction(ContactId::generate(), 1), None, &super::logged(&t))
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

pub(super) async fn companies_dedupe_and_merge(store: &dyn ContactStore) {
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
        .create_interaction(&t, &interaction(wile.id, 1), None, &super::logged(&t))
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
