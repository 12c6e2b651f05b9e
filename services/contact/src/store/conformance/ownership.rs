//! Portfolio reassignment: batches round-robin, each move audited and a new revision.

use super::*;

pub(super) async fn reassignment_moves_in_batches_round_robin(store: &dyn ContactStore) {
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
                publish: &moved(&t, &boss),
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
                publish: &moved(&t, &boss),
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
                    actor: &boss,
                    publish: &moved(&t, &boss),
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
