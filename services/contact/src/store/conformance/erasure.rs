//! Erasure: nothing personal left anywhere the store keeps it.

use super::*;

pub(super) async fn erase_leaves_nothing_personal(store: &dyn ContactStore) {
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
    store
        .create_interaction(&t, &call, None, &logged(&t))
        .await
        .expect("call");

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
