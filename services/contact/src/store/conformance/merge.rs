//! Contact merges: everything moves to the survivor, the merged ones stay as lineage.

use super::*;

pub(super) async fn merge_moves_everything_to_the_survivor(store: &dyn ContactStore) {
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
    store
        .create_interaction(&t, &call, None, &logged(&t))
        .await
        .expect("call");

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
        events: vec![],
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
