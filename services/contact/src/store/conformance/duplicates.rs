//! Unique email addresses when asked, and the candidates match keys find.

use std::collections::HashSet;

use super::*;

pub(super) async fn email_is_unique_when_asked_and_keys_find_candidates(store: &dyn ContactStore) {
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
