//! One suite both stores must pass: it drives the store (not the app).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crm_platform::TenantId;
use crm_platform::testing::TestDatabase;
use uuid::Uuid;

use super::*;
use crate::domain::fatigue::{Fatigue, Held, Mute, Pacing, QuietHours};
use crate::domain::matching::Matched;
use crate::domain::template::Rendered;
use crate::domain::{
    Attempt, Channel, DeliveryState, EmailState, EmailTemplate, Endpoint, NewDelivery, NewEmail, Notification,
    Preferences, Recipient, Rule,
};

/// Claims as a leased claim: a claim held by a transaction is released at once with all of
/// its items open, which leases them.
async fn claim(
    store: &dyn NotificationStore,
    now: DateTime<Utc>,
    lease: Duration,
    n: usize,
) -> Result<Vec<Due>, StoreError> {
    let claim = store.claim_due(now, lease, n).await?;
    if let Some(hold) = claim.hold {
        hold.release(&[], &(0..claim.due.len()).collect::<Vec<_>>()).await?;
    }
    Ok(claim.due)
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 9, minute, 0).single().expect("time")
}

fn endpoint() -> Endpoint {
    crate::domain::matching::fixtures::endpoint(at(0))
}

fn rule() -> Rule {
    Rule {
        id: Uuid::now_v7(),
        display_name: "Big wins".into(),
        event_types: vec!["crm.pipeline.v1.DealWon".into()],
        condition: "deal.amount.amount_minor >= 100".into(),
        recipients: vec![
            Recipient::Owner,
            Recipient::User("carol".into()),
            Recipient::Email("cfo@example.com".into()),
        ],
        channels: vec![Channel::InApp, Channel::Email],
        email_template: EmailTemplate {
            subject: "Won {{ subject }}".into(),
            text: String::new(),
            html: "<p>{{ data.deal.title }}</p>".into(),
        },
        category: "deals".into(),
        critical: true,
        pacing: Pacing::default(),
        created_by: "admin".into(),
        create_time: at(0),
    }
}

fn made(rule: Uuid, endpoint: Uuid, event: &str, user: &str) -> Matched {
    Matched {
        deliveries: vec![NewDelivery {
            id: Uuid::now_v7(),
            rule,
            endpoint,
            event_id: event.into(),
            event_type: "crm.pipeline.v1.DealWon".into(),
            body: format!(r#"{{"eventId":"{event}"}}"#),
            create_time: at(1),
        }],
        notifications: vec![Notification {
            id: Uuid::now_v7(),
            user: user.into(),
            rule,
            event_id: event.into(),
            event_type: "crm.pipeline.v1.DealWon".into(),
            subject: "deals/1".into(),
            title: "Big wins: DealWon deals/1".into(),
            read: false,
            seen: false,
            archived: false,
            create_time: at(1),
        }],
        emails: Vec::new(),
        reach: Vec::new(),
        members: Vec::new(),
    }
}

async fn resources_are_kept_per_tenant(store: &dyn NotificationStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let e = endpoint();
    let r = rule();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    store.create_rule(&acme, &r).await.expect("rule");
    assert_eq!(store.endpoint(&acme, e.id).await.expect("read"), Some(e.clone()));
    assert_eq!(store.rule(&acme, r.id).await.expect("read"), Some(r.clone()));
    assert_eq!(store.endpoint(&globex, e.id).await.expect("read"), None);
    assert_eq!(store.rule(&globex, r.id).await.expect("read"), None);
    assert!(store.rules(&globex, None, 10).await.expect("list").is_empty());
    let second = rule();
    store.create_rule(&acme, &second).await.expect("rule");
    let first_page = store.rules(&acme, None, 1).await.expect("list");
    assert_eq!(first_page.as_slice(), std::slice::from_ref(&r));
    assert_eq!(store.rules(&acme, Some(r.id), 5).await.expect("list"), [second]);
    assert!(!store.delete_rule(&globex, r.id).await.expect("delete"));
    assert!(store.delete_rule(&acme, r.id).await.expect("delete"));
    assert_eq!(store.rule(&acme, r.id).await.expect("read"), None);
    assert_eq!(store.endpoints(&acme, None, 10).await.expect("list"), [e]);
}

async fn each_rule_event_and_recipient_is_kept_once(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let e = endpoint();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let rule = Uuid::now_v7();
    let first = made(rule, e.id, "event-1", "bob");
    assert!(store.record("c", 0, 5, &[(acme.clone(), first)]).await.expect("record"));
    assert_eq!(store.checkpoint("c").await.expect("checkpoint"), 5);
    // A stale checkpoint changes nothing.
    assert!(
        !store
            .record("c", 0, 6, &[(acme.clone(), made(rule, e.id, "event-2", "bob"))])
            .await
            .expect("stale")
    );
    // The same event again (a replay) makes nothing new.
    assert!(
        store
            .record("c", 5, 6, &[(acme.clone(), made(rule, e.id, "event-1", "bob"))])
            .await
            .expect("again")
    );
    let deliveries = store.deliveries(&acme, None, 10).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (deliveries[0].state, deliveries[0].attempts),
        (DeliveryState::Pending, 0)
    );
    assert_eq!(
        store
            .notifications(&acme, "bob", View::Inbox, None, 10)
            .await
            .expect("inbox")
            .len(),
        1
    );
    assert_eq!(store.counts(&acme, "bob").await.expect("unread").unread, 1);
    assert!(
        store
            .deliveries(&tenant("globex"), None, 10)
            .await
            .expect("other")
            .is_empty()
    );
    assert_eq!(store.counts(&tenant("globex"), "bob").await.expect("other").unread, 0);
}

async fn due_deliveries_are_claimed_once_per_lease(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let e = endpoint();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let rule = Uuid::now_v7();
    store
        .record("c", 0, 1, &[(acme.clone(), made(rule, e.id, "event-1", "bob"))])
        .await
        .expect("record");
    let lease = Duration::from_secs(30);
    // Not due before it was made.
    assert!(claim(store, at(0), lease, 10).await.expect("claim").is_empty());
    let claimed = claim(store, at(2), lease, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].url.as_str(), claimed[0].attempts), (e.url.as_str(), 0));
    assert_eq!(claimed[0].secrets, std::slice::from_ref(&e.secret));
    assert_eq!(claimed[0].body, r#"{"eventId":"event-1"}"#);
    // Held: no second worker takes it until the lease ends.
    assert!(claim(store, at(2), lease, 10).await.expect("held").is_empty());
    assert_eq!(claim(store, at(3), lease, 10).await.expect("lease over").len(), 1);
    let failed = Attempt {
        attempt: 1,
        time: at(3),
        status_code: 500,
        error: String::new(),
        latency_ms: 12,
        response_head: "oops".into(),
    };
    let retry = Outcome {
        state: DeliveryState::Pending,
        next_attempt_time: Some(at(10)),
        slotted: false,
    };
    store
        .finish_attempts(&[Finished {
            tenant: acme.clone(),
            delivery: claimed[0].id,
            endpoint: e.id,
            attempt: Some(failed.clone()),
            outcome: retry,
        }])
        .await
        .expect("finish");
    assert!(claim(store, at(9), lease, 10).await.expect("not yet").is_empty());
    // A rotated secret signs beside the new one until its overlap ends.
    let rotated = store
        .rotate_secret(&acme, e.id, "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldw==", at(15))
        .await
        .expect("rotate")
        .expect("endpoint");
    assert_eq!(
        (rotated.previous_secret.as_str(), rotated.previous_until),
        (e.secret.as_str(), Some(at(15)))
    );
    assert!(
        store
            .rotate_secret(&tenant("globex"), e.id, "whsec_x", at(15))
            .await
            .expect("other")
            .is_none()
    );
    let again = claim(store, at(10), lease, 10).await.expect("retry");
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].secrets, [rotated.secret.clone(), e.secret.clone()]);
    let ok = Attempt {
        attempt: 2,
        status_code: 204,
        time: at(10),
        ..failed.clone()
    };
    let done = Outcome {
        state: DeliveryState::Delivered,
        next_attempt_time: None,
        slotted: false,
    };
    store
        .finish_attempts(&[Finished {
            tenant: acme.clone(),
            delivery: claimed[0].id,
            endpoint: e.id,
            attempt: Some(ok.clone()),
            outcome: done,
        }])
        .await
        .expect("finish");
    assert!(claim(store, at(59), lease, 10).await.expect("delivered").is_empty());
    assert_eq!(
        store.attempts(&acme, claimed[0].id).await.expect("attempts"),
        [failed, ok]
    );
    let delivered = store
        .delivery(&acme, claimed[0].id)
        .await
        .expect("read")
        .expect("delivery");
    assert_eq!((delivered.state, delivered.attempts), (DeliveryState::Delivered, 2));
    // Sent again on demand: pending and due, its attempts kept.
    let again = store
        .redeliver(&acme, claimed[0].id, at(20))
        .await
        .expect("redeliver")
        .expect("found");
    assert_eq!((again.state, again.attempts), (DeliveryState::Pending, 2));
    assert_eq!(claim(store, at(20), lease, 10).await.expect("claim").len(), 1);
    assert!(
        store
            .redeliver(&tenant("globex"), claimed[0].id, at(20))
            .await
            .expect("other")
            .is_none()
    );
    // A deleted endpoint's pending deliveries are not sent.
    store.redeliver(&acme, claimed[0].id, at(30)).await.expect("redeliver");
    assert!(store.delete_endpoint(&acme, e.id).await.expect("delete"));
    assert!(claim(store, at(59), lease, 10).await.expect("gone").is_empty());
}

/// A delivery matched against an endpoint deleted since (or sent again as it was deleted)
/// fails when claimed, and does not stand in the way of what is due after it.
async fn a_delivery_whose_endpoint_is_gone_fails_and_does_not_block_the_queue(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let e = endpoint();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let rule = Uuid::now_v7();
    let gone = Uuid::now_v7();
    // More deliveries to no endpoint than two batches hold, due before one to a live endpoint.
    let orphans: Vec<(TenantId, Matched)> = (0..25)
        .map(|i| (acme.clone(), made(rule, gone, &format!("orphan-{i}"), "bob")))
        .collect();
    assert!(store.record("c", 0, 1, &orphans).await.expect("record"));
    let live = made(rule, e.id, "live", "bob");
    let live_id = live.deliveries[0].id;
    assert!(store.record("c", 1, 2, &[(acme.clone(), live)]).await.expect("record"));
    let lease = Duration::from_secs(30);
    // One claim goes past them: batches of them alone do not read as an empty queue.
    let claimed = claim(store, at(2), lease, 10).await.expect("claim");
    assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), [live_id]);
    for (_, orphan) in &orphans {
        let id = orphan.deliveries[0].id;
        let failed = store.delivery(&acme, id).await.expect("read").expect("delivery");
        assert_eq!((failed.state, failed.next_attempt_time), (DeliveryState::Failed, None));
        // Nor can it be sent again: it has nowhere to go.
        assert!(store.redeliver(&acme, id, at(3)).await.expect("redeliver").is_none());
    }
    // Once its endpoint is deleted, a delivery is not sent again either.
    assert!(store.delete_endpoint(&acme, e.id).await.expect("delete"));
    assert!(
        store
            .redeliver(&acme, live_id, at(50))
            .await
            .expect("redeliver")
            .is_none()
    );
    assert_eq!(
        store
            .redeliver_since(&acme, e.id, at(0), at(50))
            .await
            .expect("recover"),
        0
    );
    assert!(claim(store, at(51), lease, 10).await.expect("claim").is_empty());
}

async fn a_held_claim_keeps_its_attempts_and_leases_what_is_still_open(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let e = endpoint();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let rule = Uuid::now_v7();
    for (seq, event) in (1..=3u64).zip(["a", "b", "c"]) {
        store
            .record("c", seq - 1, seq, &[(acme.clone(), made(rule, e.id, event, "bob"))])
            .await
            .expect("record");
    }
    let lease = Duration::from_secs(30);
    let held = store.claim_due(at(2), lease, 10).await.expect("claim");
    assert_eq!(held.due.len(), 3);
    // While it is held, no other worker takes any of it.
    assert!(claim(store, at(2), lease, 10).await.expect("held").is_empty());
    let delivered = Finished {
        tenant: acme.clone(),
        delivery: held.due[0].id,
        endpoint: e.id,
        attempt: Some(Attempt {
            attempt: 1,
            time: at(2),
            status_code: 204,
            error: String::new(),
            latency_ms: 3,
            response_head: String::new(),
        }),
        outcome: Outcome {
            state: DeliveryState::Delivered,
            next_attempt_time: None,
            slotted: false,
        },
    };
    let first = held.due[0].id;
    match held.hold {
        Some(hold) => hold.release(std::slice::from_ref(&delivered), &[1, 2]).await,
        None => store.finish_attempts(std::slice::from_ref(&delivered)).await,
    }
    .expect("release");
    let kept = store.delivery(&acme, first).await.expect("read").expect("delivery");
    assert_eq!((kept.state, kept.attempts), (DeliveryState::Delivered, 1));
    assert_eq!(store.attempts(&acme, first).await.expect("attempts").len(), 1);
    // The two still open are leased for the rest of the claim's lease.
    assert!(claim(store, at(2), lease, 10).await.expect("leased").is_empty());
    let again = store.claim_due(at(3), lease, 10).await.expect("lease over");
    assert_eq!(again.due.len(), 2);
    assert!(again.due.iter().all(|d| d.id != first));
    // An attempt in flight when its endpoint was deleted leaves its delivery failed: it is
    // not put back in the queue.
    let e2 = endpoint();
    store.create_endpoint(&acme, &e2).await.expect("endpoint");
    store
        .record("c", 3, 4, &[(acme.clone(), made(rule, e2.id, "d", "bob"))])
        .await
        .expect("record");
    let in_flight: Vec<Due> = claim(store, at(2), lease, 10)
        .await
        .expect("claim")
        .into_iter()
        .filter(|d| d.endpoint == e2.id)
        .collect();
    assert_eq!(in_flight.len(), 1);
    assert!(store.delete_endpoint(&acme, e2.id).await.expect("delete"));
    store
        .finish_attempts(&[Finished {
            tenant: acme.clone(),
            delivery: in_flight[0].id,
            endpoint: e2.id,
            attempt: Some(Attempt {
                status_code: 500,
                ..delivered.attempt.clone().expect("attempt")
            }),
            outcome: Outcome {
                state: DeliveryState::Pending,
                next_attempt_time: Some(at(2)),
                slotted: false,
            },
        }])
        .await
        .expect("finish");
    let gone = store
        .delivery(&acme, in_flight[0].id)
        .await
        .expect("read")
        .expect("delivery");
    assert_eq!(gone.state, DeliveryState::Failed);
    // A held claim dropped unreleased (its worker died) is due again at once; a leased one
    // when its lease ends.
    // (The pool rolls a dropped transaction back on its connection's return: moments later.)
    let by_transaction = again.hold.is_some();
    drop(again);
    let mut after = claim(store, at(3), lease, 10).await.expect("claim");
    for _ in 0..100 {
        if !by_transaction || !after.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = claim(store, at(3), lease, 10).await.expect("claim");
    }
    assert_eq!(after.len(), if by_transaction { 2 } else { 0 });
}

async fn an_inbox_lists_newest_first_and_marks_read(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let rule = Uuid::now_v7();
    let endpoint = Uuid::now_v7();
    for (seq, event) in (1..=3u64).zip(["a", "b", "c"]) {
        store
            .record("c", seq - 1, seq, &[(acme.clone(), made(rule, endpoint, event, "bob"))])
            .await
            .expect("record");
    }
    let inbox = store
        .notifications(&acme, "bob", View::Inbox, None, 2)
        .await
        .expect("inbox");
    let events: Vec<&str> = inbox.iter().map(|n| n.event_id.as_str()).collect();
    assert_eq!(events, ["c", "b"]);
    let rest = store
        .notifications(&acme, "bob", View::Inbox, Some(inbox[1].id), 2)
        .await
        .expect("next");
    assert_eq!(rest.len(), 1);
    // Another user's, or another tenant's, ids mark nothing.
    assert_eq!(store.mark_read(&acme, "carol", &[inbox[0].id]).await.expect("mark"), 0);
    assert_eq!(
        store
            .mark_read(&tenant("globex"), "bob", &[inbox[0].id])
            .await
            .expect("mark"),
        0
    );
    assert_eq!(
        store
            .mark_read(&acme, "bob", &[inbox[0].id, inbox[1].id])
            .await
            .expect("mark"),
        2
    );
    assert_eq!(store.mark_read(&acme, "bob", &[inbox[0].id]).await.expect("again"), 0);
    assert_eq!(store.counts(&acme, "bob").await.expect("unread").unread, 1);
    let unread = store
        .notifications(&acme, "bob", View::Unread, None, 10)
        .await
        .expect("unread");
    assert_eq!(unread.len(), 1);
    assert_eq!(unread[0].event_id, "a");
    // Seen: every one, the unseen count to zero, the unread one still unread.
    assert_eq!(
        store.counts(&acme, "bob").await.expect("counts"),
        InboxCounts { unread: 1, unseen: 3 }
    );
    assert_eq!(store.mark_seen(&acme, "bob").await.expect("seen"), 3);
    assert_eq!(store.mark_seen(&acme, "bob").await.expect("again"), 0);
    assert_eq!(
        store.counts(&acme, "bob").await.expect("counts"),
        InboxCounts { unread: 1, unseen: 0 }
    );
    // Archived: out of the inbox, into the archive, read; another's ids archive nothing.
    assert_eq!(store.archive(&acme, "carol", &[unread[0].id]).await.expect("other"), 0);
    assert_eq!(
        store
            .archive(&acme, "bob", &[unread[0].id, inbox[0].id])
            .await
            .expect("archive"),
        2
    );
    assert_eq!(store.archive(&acme, "bob", &[unread[0].id]).await.expect("again"), 0);
    assert_eq!(
        store.counts(&acme, "bob").await.expect("counts"),
        InboxCounts { unread: 0, unseen: 0 }
    );
    let kept = store
        .notifications(&acme, "bob", View::Inbox, None, 10)
        .await
        .expect("inbox");
    assert_eq!(kept.iter().map(|n| n.event_id.as_str()).collect::<Vec<_>>(), ["b"]);
    let archived = store
        .notifications(&acme, "bob", View::Archived, None, 10)
        .await
        .expect("archive");
    assert_eq!(
        archived.iter().map(|n| n.event_id.as_str()).collect::<Vec<_>>(),
        ["c", "a"]
    );
    assert!(archived.iter().all(|n| n.archived && n.read && n.seen));
    // A new one is unread and unseen; a watcher reads what came after the last it had.
    store
        .record("c", 3, 4, &[(acme.clone(), made(rule, endpoint, "d", "bob"))])
        .await
        .expect("record");
    assert_eq!(
        store.counts(&acme, "bob").await.expect("counts"),
        InboxCounts { unread: 1, unseen: 1 }
    );
    let since = store
        .notifications_since(&acme, "bob", inbox[0].id, 10)
        .await
        .expect("since");
    assert_eq!(since.iter().map(|n| n.event_id.as_str()).collect::<Vec<_>>(), ["d"]);
    assert!(
        store
            .notifications_since(&tenant("globex"), "bob", Uuid::nil(), 10)
            .await
            .expect("other")
            .is_empty()
    );
}

fn new_email(rule: Uuid, recipient: Recipient, event: &str, rendered: Result<Rendered, String>) -> NewEmail {
    NewEmail {
        id: Uuid::now_v7(),
        rule,
        contact: None,
        category: "deals".into(),
        critical: false,
        pacing: Pacing::default(),
        recipient,
        event_id: event.into(),
        event_type: "crm.pipeline.v1.DealWon".into(),
        rendered,
        create_time: at(1),
    }
}

async fn emails_go_once_to_their_address_and_keep_every_outcome(store: &dyn NotificationStore) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    // A rule keeps its pacing, and its emails keep it as they were made.
    let paced = Rule {
        pacing: Pacing {
            digest_window_minutes: 15,
            max_emails_per_hour: 3,
        },
        ..rule()
    };
    assert!(store.create_rule(&acme, &paced).await.expect("rule"));
    assert_eq!(store.rule(&acme, paced.id).await.expect("read"), Some(paced.clone()));
    let rule = paced.id;
    let new_email = |rule, recipient, event: &str, rendered| NewEmail {
        pacing: paced.pacing,
        ..new_email(rule, recipient, event, rendered)
    };
    let rendered = Rendered {
        subject: "Won deals/1".into(),
        text: "text".into(),
        html: "<p>html</p>".into(),
    };
    let emails = |event: &str| Matched {
        emails: vec![
            new_email(
                rule,
                Recipient::Email("cfo@example.com".into()),
                event,
                Ok(rendered.clone()),
            ),
            new_email(rule, Recipient::User("bob".into()), event, Ok(rendered.clone())),
            new_email(
                rule,
                Recipient::User("ann@example.com".into()),
                event,
                Ok(rendered.clone()),
            ),
            new_email(
                rule,
                Recipient::User("dan".into()),
                event,
                Err("subject: undefined".into()),
            ),
        ],
        ..Matched::default()
    };
    assert!(
        store
            .record("c", 0, 1, &[(acme.clone(), emails("event-1"))])
            .await
            .expect("record")
    );
    // A replay makes nothing new.
    assert!(
        store
            .record("c", 1, 2, &[(acme.clone(), emails("event-1"))])
            .await
            .expect("again")
    );
    store
        .set_preferences(
            &acme,
            "bob",
            &Preferences {
                email_address: "bob@example.com".into(),
                fatigue: Fatigue {
                    time_zone: chrono_tz::Europe::Berlin,
                    quiet_hours: Some(QuietHours {
                        start: chrono::NaiveTime::from_hms_opt(22, 0, 0).expect("time"),
                        end: chrono::NaiveTime::from_hms_opt(7, 30, 0).expect("time"),
                    }),
                    daily_digest: true,
                    digest_time: chrono::NaiveTime::from_hms_opt(9, 15, 0).expect("time"),
                    muted: vec![Mute {
                        category: "deals".into(),
                        channel: Channel::InApp,
                    }],
                    hourly_email_cap: 20,
                },
                update_time: Some(at(0)),
            },
        )
        .await
        .expect("preferences");
    assert_eq!(
        store
            .preferences(&acme, "bob")
            .await
            .expect("read")
            .map(|p| p.email_address),
        Some("bob@example.com".into())
    );
    assert_eq!(store.preferences(&globex, "bob").await.expect("other"), None);
    let lease = Duration::from_secs(30);
    let mut claimed = store.claim_emails(at(2), lease, 10).await.expect("claim");
    claimed.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    let to: Vec<(&str, &str)> = claimed
        .iter()
        .map(|d| (d.recipient.as_str(), d.address.as_str()))
        .collect();
    // The failed template is never claimed; a user's address is their preference's, else
    // their id when it is one.
    assert_eq!(
        to,
        [
            ("mailto:cfo@example.com", "cfo@example.com"),
            ("users/ann@example.com", "ann@example.com"),
            ("users/bob", "bob@example.com"),
        ]
    );
    assert_eq!(claimed[0].rendered, rendered);
    // A user's email comes with their preferences, an address's with the defaults.
    assert_eq!(claimed[2].user.as_deref(), Some("bob"));
    assert!(claimed[2].fatigue.daily_digest);
    assert_eq!(
        (claimed[0].user.as_deref(), claimed[0].fatigue.daily_digest),
        (None, false)
    );
    assert_eq!((claimed[0].category.as_str(), claimed[0].critical), ("deals", false));
    assert!(claimed.iter().all(|d| (d.rule, d.pacing) == (rule, paced.pacing)));
    assert!(store.claim_emails(at(2), lease, 10).await.expect("held").is_empty());
    let sent = |d: &DueEmail, state: EmailState, error: &str, next: Option<DateTime<Utc>>| Sent {
        tenant: acme.clone(),
        email: d.id,
        attempt: d.attempts + 1,
        address: d.address.clone(),
        state,
        held: None,
        error: error.into(),
        time: at(3),
        next_attempt_time: next,
    };
    store
        .finish_emails(&[
            sent(&claimed[0], EmailState::Sent, "", None),
            sent(&claimed[1], EmailState::Pending, "421 try later", Some(at(10))),
            sent(&claimed[2], EmailState::Failed, "550 no such user", None),
        ])
        .await
        .expect("finish");
    assert!(store.claim_emails(at(9), lease, 10).await.expect("not yet").is_empty());
    let retried = store.claim_emails(at(10), lease, 10).await.expect("retry");
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].recipient.as_str(), retried[0].attempts),
        ("users/ann@example.com", 1)
    );
    let listed = store.emails(&acme, None, 10).await.expect("list");
    assert_eq!(listed.len(), 4);
    let by = |recipient: &str| listed.iter().find(|e| e.recipient == recipient).expect("listed");
    let cfo = by("mailto:cfo@example.com");
    assert_eq!(
        (cfo.state, cfo.attempts, cfo.send_time),
        (EmailState::Sent, 1, Some(at(3)))
    );
    assert_eq!(cfo.subject, "Won deals/1");
    let bob = by("users/bob");
    assert_eq!(
        (bob.state, bob.last_error.as_str()),
        (EmailState::Failed, "550 no such user")
    );
    assert_eq!(bob.address, "bob@example.com");
    let dan = by("users/dan");
    assert_eq!(dan.state, EmailState::Failed);
    assert!(dan.last_error.contains("subject: undefined"), "{}", dan.last_error);
    assert!(store.emails(&globex, None, 10).await.expect("other").is_empty());
    let page = store.emails(&acme, None, 3).await.expect("page");
    assert_eq!(store.emails(&acme, Some(page[2].id), 3).await.expect("next").len(), 1);
    assert_eq!(store.sent_since(&acme, "bob", None, at(0)).await.expect("sent"), 0);
    assert_eq!(
        store
            .sent_since(&acme, "ann@example.com", None, at(0))
            .await
            .expect("sent"),
        0,
        "not sent yet"
    );
    // Sent, it counts for the user, and for its rule alone.
    store
        .finish_emails(&[Sent {
            time: at(11),
            ..sent(&retried[0], EmailState::Sent, "", None)
        }])
        .await
        .expect("finish");
    let ann = |rule| store.sent_since(&acme, "ann@example.com", rule, at(0));
    assert_eq!(ann(None).await.expect("sent"), 1);
    assert_eq!(ann(Some(rule)).await.expect("sent"), 1);
    assert_eq!(ann(Some(Uuid::now_v7())).await.expect("sent"), 0);
}

async fn held_emails_are_released_by_quiet_hours_or_carried_by_one_digest(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let rule = Uuid::now_v7();
    let rendered = |subject: &str| {
        Ok(Rendered {
            subject: subject.into(),
            text: String::new(),
            html: String::new(),
        })
    };
    let emails = Matched {
        emails: vec![
            new_email(rule, Recipient::User("bob".into()), "quiet", rendered("quiet")),
            new_email(rule, Recipient::User("bob".into()), "digest-1", rendered("first")),
            new_email(rule, Recipient::User("bob".into()), "digest-2", rendered("second")),
            new_email(rule, Recipient::User("carol".into()), "capped", rendered("capped")),
        ],
        ..Matched::default()
    };
    assert!(
        store
            .record("c", 0, 1, &[(acme.clone(), emails)])
            .await
            .expect("record")
    );
    let lease = Duration::from_secs(30);
    let claimed = store.claim_emails(at(2), lease, 10).await.expect("claim");
    let by = |subject: &str| claimed.iter().find(|d| d.rendered.subject == subject).expect("claimed");
    let hold = |d: &DueEmail, held: Held, until: DateTime<Utc>| Sent {
        tenant: acme.clone(),
        email: d.id,
        attempt: 0,
        address: d.address.clone(),
        state: EmailState::Held,
        held: Some(held),
        error: format!("held for {}", held.as_str()),
        time: at(2),
        next_attempt_time: Some(until),
    };
    store
        .finish_emails(&[
            hold(by("quiet"), Held::QuietHours, at(30)),
            hold(by("first"), Held::Digest, at(40)),
            hold(by("second"), Held::Digest, at(40)),
            hold(by("capped"), Held::Cap, at(50)),
        ])
        .await
        .expect("hold");
    let listed = store.emails(&acme, None, 10).await.expect("list");
    assert!(listed.iter().all(|e| e.state == EmailState::Held), "{listed:?}");
    // Quiet hours: claimed again when they end; digests and caps: never claimed alone.
    assert!(store.claim_emails(at(29), lease, 10).await.expect("quiet").is_empty());
    let released = store.claim_emails(at(59), lease, 10).await.expect("released");
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].rendered.subject, "quiet");
    assert!(store.due_digests(at(39), 10).await.expect("not yet").is_empty());
    let due = store.due_digests(at(45), 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].user.as_str(), due[0].held.len()), ("bob", 2));
    assert_eq!(due[0].held[0].subject, "first");
    let digest = NewEmail {
        critical: true,
        ..new_email(
            crate::domain::matching::DIGEST_RULE,
            Recipient::User("bob".into()),
            "digest:1",
            rendered("2 held"),
        )
    };
    let ids: Vec<Uuid> = due[0].held.iter().map(|e| e.id).collect();
    assert!(store.bundle_digest(&acme, &ids, &digest).await.expect("bundle"));
    // A second worker's bundle of the same emails keeps nothing.
    let again = NewEmail {
        id: Uuid::now_v7(),
        event_id: "digest:2".into(),
        ..digest.clone()
    };
    assert!(!store.bundle_digest(&acme, &ids, &again).await.expect("raced"));
    let listed = store.emails(&acme, None, 10).await.expect("list");
    let digested: Vec<&Email> = listed.iter().filter(|e| e.state == EmailState::Digested).collect();
    assert_eq!(digested.len(), 2);
    assert!(digested.iter().all(|e| e.digest == Some(digest.id)));
    assert_eq!(listed.len(), 5, "the digest is an email too, not the raced one");
    let sent = store.claim_emails(at(45), lease, 10).await.expect("digest due");
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].rendered.subject.as_str(), sent[0].critical), ("2 held", true));
    // Carol's capped email is due with the hour.
    let capped = store.due_digests(at(50), 10).await.expect("capped");
    assert_eq!(capped.len(), 1);
    assert_eq!(capped[0].user, "carol");
}

fn day(n: i64) -> DateTime<Utc> {
    at(0) + chrono::Duration::days(n)
}

async fn an_endpoint_failing_for_five_days_is_disabled_and_its_deliveries_wait(store: &dyn NotificationStore) {
    let acme = tenant("acme");
    let e = endpoint();
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let rule = Uuid::now_v7();
    for (seq, event) in (1..=3u64).zip(["a", "b", "c"]) {
        let mut made = made(rule, e.id, event, "bob");
        made.deliveries[0].create_time = day(i64::try_from(seq).expect("day"));
        made.notifications.clear();
        store
            .record("c", seq - 1, seq, &[(acme.clone(), made)])
            .await
            .expect("record");
    }
    let lease = Duration::from_secs(30);
    let failure = |day_of: i64, number: i32, status_code: i32| Attempt {
        attempt: number,
        time: day(day_of),
        status_code,
        error: String::new(),
        latency_ms: 5,
        response_head: String::new(),
    };
    let finish = |d: &crate::domain::Due, attempt: Option<Attempt>, next: Option<DateTime<Utc>>| Finished {
        tenant: acme.clone(),
        delivery: d.id,
        endpoint: d.endpoint,
        attempt,
        outcome: Outcome {
            state: DeliveryState::Pending,
            next_attempt_time: next,
            slotted: false,
        },
    };
    // Failing from day 4: not yet disabled on day 8, disabled on day 9.
    let due = claim(store, day(4), lease, 1).await.expect("claim");
    assert_eq!((due[0].endpoint, due[0].disabled), (e.id, false));
    store
        .finish_attempts(&[finish(&due[0], Some(failure(4, 1, 500)), Some(day(8)))])
        .await
        .expect("fail");
    let failing = store.endpoint(&acme, e.id).await.expect("read").expect("endpoint");
    assert_eq!((failing.failing_since, failing.disable_time), (Some(day(4)), None));
    let due = claim(store, day(8), lease, 1).await.expect("claim");
    store
        .finish_attempts(&[finish(&due[0], Some(failure(8, 2, 500)), Some(day(9)))])
        .await
        .expect("fail");
    assert_eq!(
        store
            .endpoint(&acme, e.id)
            .await
            .expect("read")
            .expect("endpoint")
            .disable_time,
        None
    );
    let due = claim(store, day(9), lease, 3).await.expect("claim");
    let first = due.iter().find(|d| d.attempts == 2).expect("retried").clone();
    store
        .finish_attempts(&[finish(&first, Some(failure(9, 3, 503)), Some(day(10)))])
        .await
        .expect("fail");
    let disabled = store.endpoint(&acme, e.id).await.expect("read").expect("endpoint");
    assert_eq!(disabled.disable_time, Some(day(9)));
    assert!(
        disabled.disable_reason.contains("every attempt failed since"),
        "{}",
        disabled.disable_reason
    );
    // Its maker is told in their inbox.
    let told = store
        .notifications(&acme, "alice", View::Inbox, None, 10)
        .await
        .expect("inbox");
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].event_type, crate::domain::ENDPOINT_DISABLED);
    assert_eq!(store.counts(&acme, "alice").await.expect("unread").unread, 1);
    // And an event on the service's feed says so, once (numbered once committed).
    let scope = crm_platform::outbox::Scope::Tenant(acme.clone());
    let mut published = Vec::new();
    for _ in 0..100 {
        published = store.outbox().read(&scope, 0, &[], None, 10).await.expect("outbox");
        if !published.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].subject, crate::domain::EndpointId(e.id).name());
    let said: crm_proto::crm::notification::v1::WebhookEndpointDisabled =
        published[0].decode().expect("a WebhookEndpointDisabled");
    assert_eq!(said.endpoint, crate::domain::EndpointId(e.id).name());
    assert_eq!(said.reason, disabled.disable_reason);
    assert_eq!(said.created_by, "alice");
    assert!(
        !published[0].payload.to_string().contains(&e.url),
        "the URL, which may hold a secret, stays out of the feed: {:?}",
        published[0].payload
    );
    assert_eq!(said.failing_since.as_ref().map(|t| t.seconds), Some(day(4).timestamp()));
    assert_eq!(said.disable_time.as_ref().map(|t| t.seconds), Some(day(9).timestamp()));
    let other = crm_platform::outbox::Scope::Tenant(tenant("globex"));
    assert!(
        store
            .outbox()
            .read(&other, 0, &[], None, 10)
            .await
            .expect("outbox")
            .is_empty()
    );
    // Its deliveries come back marked disabled and are put back due at no time: they wait.
    let waiting = claim(store, day(10), lease, 10).await.expect("claim");
    assert!(waiting.iter().all(|d| d.disabled) && !waiting.is_empty());
    let parked: Vec<Finished> = waiting.iter().map(|d| finish(d, None, None)).collect();
    store.finish_attempts(&parked).await.expect("park");
    assert!(claim(store, day(20), lease, 10).await.expect("waiting").is_empty());
    // Enabled: they are due again, and the endpoint is healthy.
    let enabled = store
        .enable_endpoint(&acme, e.id, day(21))
        .await
        .expect("enable")
        .expect("endpoint");
    assert_eq!((enabled.disable_time, enabled.failing_since), (None, None));
    let again = claim(store, day(21), lease, 10).await.expect("claim");
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| !d.disabled));
    assert!(
        store
            .enable_endpoint(&tenant("globex"), e.id, day(21))
            .await
            .expect("other")
            .is_none()
    );
    let ok = |d: &crate::domain::Due| Finished {
        attempt: Some(Attempt {
            status_code: 204,
            ..failure(21, d.attempts + 1, 204)
        }),
        outcome: Outcome {
            state: DeliveryState::Delivered,
            next_attempt_time: None,
            slotted: false,
        },
        ..finish(d, None, None)
    };
    store
        .finish_attempts(&again.iter().map(ok).collect::<Vec<_>>())
        .await
        .expect("delivered");
    // Every delivery since day 2 is sent again; those before it are not.
    assert_eq!(
        store
            .redeliver_since(&acme, e.id, day(2), day(22))
            .await
            .expect("since"),
        2
    );
    assert_eq!(claim(store, day(22), lease, 10).await.expect("claim").len(), 2);
    assert_eq!(
        store
            .redeliver_since(&tenant("globex"), e.id, day(0), day(22))
            .await
            .expect("other"),
        0
    );
}

async fn an_email_to_a_contact_comes_with_their_address_and_consent(store: &dyn NotificationStore) {
    use crate::domain::reach::ReachChange;
    let acme = tenant("acme");
    let set = |contact: &str, address: Option<&str>, consent: Option<bool>| ReachChange::Set {
        contact: contact.into(),
        email_address: address.map(str::to_owned),
        email_consent: consent,
    };
    let to = |contact: &str, event: &str| NewEmail {
        contact: Some(contact.into()),
        ..new_email(
            Uuid::now_v7(),
            Recipient::Contact,
            event,
            Ok(Rendered {
                subject: "Hello".into(),
                text: String::new(),
                html: String::new(),
            }),
        )
    };
    let first = Matched {
        reach: vec![
            set("contacts/ann", Some("ann@acme.test"), Some(true)),
            set("contacts/ben", Some("ben@acme.test"), None),
            set("contacts/dee", Some("dee@acme.test"), Some(true)),
            // A later change of one field keeps the other.
            set("contacts/ann", None, Some(true)),
            ReachChange::Remove {
                contact: "contacts/dee".into(),
            },
        ],
        emails: vec![
            to("contacts/ann", "e1"),
            to("contacts/ben", "e1"),
            to("contacts/dee", "e1"),
        ],
        ..Matched::default()
    };
    assert!(store.record("c", 0, 1, &[(acme.clone(), first)]).await.expect("record"));
    let mut claimed = store
        .claim_emails(at(2), Duration::from_secs(30), 10)
        .await
        .expect("claim");
    claimed.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    let seen: Vec<(&str, &str, Option<bool>)> = claimed
        .iter()
        .map(|d| (d.recipient.as_str(), d.address.as_str(), d.contact_consent))
        .collect();
    assert_eq!(
        seen,
        [
            ("contacts/ann", "ann@acme.test", Some(true)),
            ("contacts/ben", "ben@acme.test", Some(false)),
            ("contacts/dee", "", None),
        ]
    );
    // Another tenant's contact of the same name is another contact.
    let other = Matched {
        reach: vec![set("contacts/ann", Some("x@globex.test"), Some(false))],
        ..Matched::default()
    };
    assert!(
        store
            .record("c", 1, 2, &[(tenant("globex"), other)])
            .await
            .expect("record")
    );
    let again = Matched {
        emails: vec![to("contacts/ann", "e2")],
        ..Matched::default()
    };
    assert!(store.record("c", 2, 3, &[(acme.clone(), again)]).await.expect("record"));
    let claimed = store
        .claim_emails(at(2), Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(
        claimed
            .iter()
            .map(|d| (d.address.as_str(), d.contact_consent))
            .collect::<Vec<_>>(),
        [("ann@acme.test", Some(true))]
    );
    // Erased: no copy of what reached them is kept, and nothing waiting is sent.
    let endpoint = Uuid::now_v7();
    let mut with_body = made(Uuid::now_v7(), endpoint, "e3", "bob");
    with_body.deliveries[0].body = r#"{"subject":"contacts/ann","data":{"emails":["ann@acme.test"]}}"#.into();
    with_body.notifications.clear();
    assert!(
        store
            .record("c", 3, 4, &[(acme.clone(), with_body)])
            .await
            .expect("record")
    );
    let erase = Matched {
        reach: vec![ReachChange::Erase {
            contact: "contacts/ann".into(),
        }],
        ..Matched::default()
    };
    assert!(store.record("c", 4, 5, &[(acme.clone(), erase)]).await.expect("erase"));
    let listed = store.emails(&acme, None, 10).await.expect("list");
    let to_ann: Vec<&Email> = listed.iter().filter(|e| e.recipient == "contacts/ann").collect();
    assert_eq!(to_ann.len(), 2);
    assert!(
        to_ann.iter().all(|e| e.address.is_empty() && e.subject.is_empty()),
        "{to_ann:?}"
    );
    assert!(to_ann.iter().all(|e| e.state != EmailState::Pending));
    let delivery = &store.deliveries(&acme, None, 10).await.expect("deliveries")[0];
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert!(
        claim(store, at(59), Duration::from_secs(30), 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

async fn members_keep_the_roles_of_their_latest_report_per_tenant(store: &dyn NotificationStore) {
    use crate::domain::members::MemberSeen;
    use crm_platform::identity::Role;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).expect("day");
    let seen = |user: &str, roles: &[Role], d: u32| MemberSeen {
        user: user.into(),
        roles: roles.to_vec(),
        day: day(d),
    };
    let reports = |members: Vec<MemberSeen>| Matched {
        members,
        ..Matched::default()
    };
    let first = reports(vec![
        seen("ann", &[Role::Manager], 10),
        seen("bob", &[Role::Rep], 10),
        // Promoted the same day: the later report wins.
        seen("bob", &[Role::Manager, Role::Rep], 10),
        seen("cy", &[Role::Manager], 2),
        seen("dee", &[], 10),
    ]);
    let elsewhere = reports(vec![seen("eve", &[Role::Manager], 10)]);
    assert!(
        store
            .record("c", 0, 1, &[(acme.clone(), first), (globex.clone(), elsewhere)])
            .await
            .expect("record")
    );
    // A report of an earlier day, replayed or late, does not undo a later one.
    let late = reports(vec![seen("ann", &[Role::Viewer], 9), seen("bob", &[Role::Rep], 11)]);
    assert!(store.record("c", 1, 2, &[(acme.clone(), late)]).await.expect("record"));

    let members = store.members(&acme, day(5)).await.expect("members");
    assert_eq!(
        members.holding(Role::Manager),
        ["ann"],
        "cy was last seen before the 5th"
    );
    assert_eq!(members.holding(Role::Rep), ["bob"]);
    assert!(members.holding(Role::Viewer).is_empty());
    let all = store.members(&acme, day(1)).await.expect("members");
    assert_eq!(all.holding(Role::Manager), ["ann", "cy"]);
    let other = store.members(&globex, day(1)).await.expect("members");
    assert_eq!(other.holding(Role::Manager), ["eve"]);
    assert!(other.holding(Role::Rep).is_empty());
}

/// A tenant's endpoints and rules stay within their bounds when two replicas create them
/// side by side: the count and the insert are one, under a lock.
async fn a_tenants_endpoints_and_rules_stay_bounded_when_created_side_by_side(
    store: &dyn NotificationStore,
    other: &dyn NotificationStore,
) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    for _ in 1..crate::domain::MAX_ENDPOINTS {
        assert!(store.create_endpoint(&acme, &endpoint()).await.expect("endpoint"));
    }
    for _ in 1..crate::domain::MAX_RULES {
        assert!(store.create_rule(&acme, &rule()).await.expect("rule"));
    }
    // One place left of each, asked for eight times at once from both replicas.
    let (endpoints, rules) = futures::join!(
        futures::future::join_all((0..8).map(|i| {
            let by = if i % 2 == 0 { store } else { other };
            let (acme, e) = (acme.clone(), endpoint());
            async move { by.create_endpoint(&acme, &e).await.expect("endpoint") }
        })),
        futures::future::join_all((0..8).map(|i| {
            let by = if i % 2 == 0 { other } else { store };
            let (acme, r) = (acme.clone(), rule());
            async move { by.create_rule(&acme, &r).await.expect("rule") }
        })),
    );
    assert_eq!(endpoints.iter().filter(|kept| **kept).count(), 1, "{endpoints:?}");
    assert_eq!(rules.iter().filter(|kept| **kept).count(), 1, "{rules:?}");
    let all = store.endpoints(&acme, None, 1000).await.expect("endpoints");
    assert_eq!(all.len(), crate::domain::MAX_ENDPOINTS);
    assert_eq!(
        store.rules(&acme, None, 1000).await.expect("rules").len(),
        crate::domain::MAX_RULES
    );
    // Another tenant's bounds are its own.
    assert!(other.create_endpoint(&globex, &endpoint()).await.expect("endpoint"));
    assert!(other.create_rule(&globex, &rule()).await.expect("rule"));
}

/// Two replicas take an endpoint's throttle slots in turn, one interval apart whichever takes
/// them; a delivery put back to its slot by one is claimed by the other at that slot, and goes
/// then without taking another, unless it is claimed past the grace or put back without one.
async fn an_endpoints_throttle_is_shared_by_every_replica(
    store: &dyn NotificationStore,
    other: &dyn NotificationStore,
) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let e = Endpoint {
        max_per_second: 4,
        ..endpoint()
    };
    store.create_endpoint(&acme, &e).await.expect("endpoint");
    let quarter = chrono::Duration::milliseconds(250);
    let now = at(2);
    let mut slots = Vec::new();
    for replica in [store, other, store, other] {
        slots.push(replica.take_slot(&acme, e.id, 4, now).await.expect("slot"));
    }
    let expected: Vec<_> = (0..4).map(|i| Some(now + quarter * i)).collect();
    assert_eq!(slots, expected);
    // Once its slots have passed, the endpoint is free: the next goes at once.
    let later = at(5);
    assert_eq!(other.take_slot(&acme, e.id, 4, later).await.expect("slot"), Some(later));
    assert_eq!(
        store.take_slot(&acme, e.id, 4, later).await.expect("slot"),
        Some(later + quarter)
    );
    assert_eq!(
        other.take_slot(&globex, e.id, 4, later).await.expect("slot"),
        None,
        "another tenant has no such endpoint"
    );

    let rule = Uuid::now_v7();
    store
        .record("c", 0, 1, &[(acme.clone(), made(rule, e.id, "event-1", "bob"))])
        .await
        .expect("record");
    let lease = Duration::from_secs(30);
    let first = claim(store, at(6), lease, 10).await.expect("claim");
    assert_eq!((first.len(), first[0].slotted), (1, false));
    let put_back = |next, slotted| Finished {
        tenant: acme.clone(),
        delivery: first[0].id,
        endpoint: e.id,
        attempt: None,
        outcome: Outcome {
            state: DeliveryState::Pending,
            next_attempt_time: Some(next),
            slotted,
        },
    };
    let slot = at(6) + quarter;
    store.finish_attempts(&[put_back(slot, true)]).await.expect("put back");
    assert!(
        claim(other, at(6), lease, 10).await.expect("claim").is_empty(),
        "not before its slot"
    );
    let at_slot = claim(other, slot, Duration::from_secs(1), 10).await.expect("claim");
    assert_eq!((at_slot.len(), at_slot[0].slotted), (1, true));
    // Its short lease over, claimed again within the grace: still its own slot.
    let again = claim(store, slot + chrono::Duration::milliseconds(1500), lease, 10)
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].slotted), (1, true));
    // Claimed long after its slot (replicas down, a lease run out), it takes a new one: a
    // backlog of old slots never goes at once.
    let late = claim(store, slot + chrono::Duration::seconds(40), lease, 10)
        .await
        .expect("claim");
    assert_eq!((late.len(), late[0].slotted), (1, false));
    // Put back without a slot (its endpoint disabled, say), it takes a new one next time.
    other
        .finish_attempts(&[put_back(at(8), false)])
        .await
        .expect("put back");
    let unslotted = claim(store, at(8), lease, 10).await.expect("claim");
    assert_eq!((unslotted.len(), unslotted[0].slotted), (1, false));
}

/// Runs each case on both backends: a `single` case with one store, a `replicas` case with two
/// over the same database, as two replicas of the service are.
macro_rules! conformance {
    (single: [$($case:ident),+ $(,)?], replicas: [$($replicas:ident),+ $(,)?] $(,)?) => {
        mod sqlite_backend {
            /// Two stores over one SQLite database, in a directory removed when it is dropped.
            async fn stores() -> (tempfile::TempDir, super::SqliteNotificationStore, super::SqliteNotificationStore) {
                let dir = tempfile::tempdir().expect("tempdir");
                let pool = crm_platform::db::open_sqlite(&dir.path().join("notification.db"), &super::SQLITE_MIGRATIONS)
                    .await
                    .expect("sqlite");
                (dir, super::SqliteNotificationStore::new(pool.clone()), super::SqliteNotificationStore::new(pool))
            }
            $(
                #[tokio::test]
                async fn $case() {
                    let (_dir, store, _) = stores().await;
                    super::$case(&store).await;
                }
            )+
            $(
                #[tokio::test]
                async fn $replicas() {
                    let (_dir, store, other) = stores().await;
                    super::$replicas(&store, &other).await;
                }
            )+
        }
        mod postgres_backend {
            /// Two stores over one new PostgreSQL database; None without a server.
            async fn stores(name: &str) -> Option<(super::TestDatabase, super::PgNotificationStore, super::PgNotificationStore)> {
                let db = super::TestDatabase::create(name).await?;
                crm_platform::db::migrate_postgres(&db.url, &super::POSTGRES_MIGRATIONS).await.expect("migrate");
                let pool = crm_platform::db::connect_postgres(&db.url, super::POSTGRES_APP_ROLE, 4).await.expect("connect");
                let store = super::PgNotificationStore::start(pool.clone()).await.expect("store");
                let other = super::PgNotificationStore::start(pool).await.expect("store");
                Some((db, store, other))
            }
            $(
                #[tokio::test]
                async fn $case() {
                    let Some((db, store, _)) = stores(concat!("notification_", stringify!($case))).await else { return };
                    super::$case(&store).await;
                    db.drop_database().await;
                }
            )+
            $(
                #[tokio::test]
                async fn $replicas() {
                    let Some((db, store, other)) = stores(concat!("notification_", stringify!($replicas))).await else { return };
                    super::$replicas(&store, &other).await;
                    db.drop_database().await;
                }
            )+
        }
    };
}

conformance!(
    single: [
    resources_are_kept_per_tenant,
    each_rule_event_and_recipient_is_kept_once,
    due_deliveries_are_claimed_once_per_lease,
    a_delivery_whose_endpoint_is_gone_fails_and_does_not_block_the_queue,
    a_held_claim_keeps_its_attempts_and_leases_what_is_still_open,
    an_inbox_lists_newest_first_and_marks_read,
    emails_go_once_to_their_address_and_keep_every_outcome,
    held_emails_are_released_by_quiet_hours_or_carried_by_one_digest,
    an_endpoint_failing_for_five_days_is_disabled_and_its_deliveries_wait,
    an_email_to_a_contact_comes_with_their_address_and_consent,
    members_keep_the_roles_of_their_latest_report_per_tenant,
    ],
    replicas: [
        an_endpoints_throttle_is_shared_by_every_replica,
        a_tenants_endpoints_and_rules_stay_bounded_when_created_side_by_side,
    ],
);
