//! The audit trail: an entry with every change, none for a failed one, outliving the record.

use super::*;

pub(super) async fn history_is_written_with_every_change(store: &dyn ContactStore) {
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
