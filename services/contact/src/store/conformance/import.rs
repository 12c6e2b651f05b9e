//! Import batches: written all or nothing.

use super::*;

pub(super) async fn batches_write_all_or_nothing(store: &dyn ContactStore) {
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
