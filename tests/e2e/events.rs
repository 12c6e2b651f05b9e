//! The change feed (crm.events.v1.EventFeed) of the contact service, through the real binary:
//! every change in order, tenant scoping, filters, heartbeats, erasure, retention, and the
//! PostgreSQL sequencer across a kill -9.

use std::time::Duration;

use crm_platform::Role;
use crm_platform::testing::TestDatabase;
use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::events::v1 as events;
use crm_proto::crm::events::v1::event_feed_client::EventFeedClient;
use crm_proto::prost::Message;
use crm_proto::prost_types::FieldMask;
use sqlx::Connection;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::{Bearer, Process, Suite, grpc_client, token};

type FeedClient = EventFeedClient<InterceptedService<Channel, Bearer>>;

async fn feed_client(endpoint: &str, token: String) -> FeedClient {
    let channel = Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    EventFeedClient::with_interceptor(channel, Bearer(Some(token)))
}

/// Runs `crm migrate` on a PostgreSQL database, as the Kubernetes Job does.
pub(crate) fn migrate(url: &str) {
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["migrate"])
        .env("CRM_DATABASE_URL", url)
        .env("CRM_LOG", "warn")
        .output()
        .expect("migrate");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
}

/// The refusal of a subscription after `after`, once the pruner (which runs at start) has
/// removed what it asks for.
async fn refused_after(feed: &mut FeedClient, after: u64) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match feed
            .subscribe(events::SubscribeRequest {
                after_sequence: after,
                types: vec![],
                ..Default::default()
            })
            .await
        {
            Err(status) => return status,
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => panic!("events past retention are still served"),
        }
    }
}

/// Reads events from a subscription until `count` have arrived (heartbeats skipped).
pub(crate) async fn take(stream: &mut tonic::Streaming<events::SubscribeResponse>, count: usize) -> Vec<events::Event> {
    let mut got = Vec::new();
    while got.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the feed delivers in time")
            .expect("stream")
            .expect("open");
        if let Some(events::subscribe_response::Kind::Event(event)) = message.kind {
            got.push(event);
        }
    }
    got
}

async fn subscribe(client: &mut FeedClient, after: u64, types: &[&str]) -> tonic::Streaming<events::SubscribeResponse> {
    client
        .subscribe(events::SubscribeRequest {
            after_sequence: after,
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

fn kinds(events: &[events::Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.r#type.trim_start_matches("crm.contact.v1."))
        .collect()
}

pub(crate) fn contact(given: &str, email: &str) -> pb::Contact {
    pb::Contact {
        given_name: given.into(),
        family_name: "Feed".into(),
        emails: vec![pb::EmailAddress {
            address: email.into(),
            primary: true,
        }],
        ..Default::default()
    }
}

async fn create(client: &mut crate::support::GrpcClient, c: pb::Contact) -> pb::Contact {
    client
        .create_contact(pb::CreateContactRequest {
            contact: Some(c),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .contact
        .expect("contact")
}

#[tokio::test]
async fn every_change_is_on_the_feed_in_order() {
    let suite = Suite::start_with(&[("CRM_FEED_HEARTBEAT", "300ms")]);
    let mut alice = grpc_client(&suite.grpc, Some(token("acme", "alice", Role::Admin))).await;
    let mut feed = feed_client(&suite.grpc, token("acme", "alice", Role::Viewer)).await;
    let mut live = subscribe(&mut feed, 0, &[]).await;

    let ann = create(&mut alice, contact("Ann", "ann@feed.example")).await;
    alice
        .update_contact(pb::UpdateContactRequest {
            contact: Some(pb::Contact {
                name: ann.name.clone(),
                title: "CTO".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["title".into()],
            }),
        })
        .await
        .expect("update");
    alice
        .create_interaction(pb::CreateInteractionRequest {
            parent: ann.name.clone(),
            interaction: Some(pb::Interaction {
                r#type: pb::InteractionType::Call as i32,
                subject: "private subject".into(),
                body: "private body".into(),
                occur_time: Some(crm_proto::prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("interaction");
    let bob = create(&mut alice, contact("Bob", "bob@feed.example")).await;
    alice
        .delete_contact(pb::DeleteContactRequest {
            name: bob.name.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete");
    alice
        .erase_contact(pb::EraseContactRequest { name: ann.name.clone() })
        .await
        .expect("erase");

    let seen = take(&mut live, 6).await;
    assert_eq!(
        kinds(&seen),
        [
            "ContactCreated",
            "ContactUpdated",
            "InteractionLogged",
            "ContactCreated",
            "ContactDeleted",
            "ContactErased"
        ]
    );
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(event.sequence, i as u64 + 1, "gap-free, in commit order");
        assert_eq!(
            (event.tenant.as_str(), event.source.as_str()),
            ("acme", "crm.contact.v1")
        );
        assert_eq!(event.actor, "alice");
    }
    assert_eq!(seen[0].subject, ann.name);
    let updated =
        pb::ContactUpdated::decode(seen[1].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert_eq!(
        updated
            .changed_fields
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>(),
        ["title"]
    );
    let logged =
        pb::InteractionLogged::decode(seen[2].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert_eq!(
        (logged.contact.as_str(), logged.kind),
        (ann.name.as_str(), pb::InteractionType::Call as i32)
    );
    assert!(
        !seen[2]
            .payload
            .as_ref()
            .expect("payload")
            .value
            .windows(7)
            .any(|w| w == b"private"),
        "an interaction's text is never published"
    );

    // Idle: heartbeats carry the head.
    let beat = tokio::time::timeout(Duration::from_secs(5), live.message())
        .await
        .expect("a heartbeat in time")
        .expect("stream")
        .expect("open");
    match beat.kind {
        Some(events::subscribe_response::Kind::Heartbeat(h)) => assert_eq!(h.head_sequence, 6),
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    // Replay from 0 rebuilds the same history, and nothing of the erased contact survives in
    // the payloads it serves.
    let replay = take(&mut subscribe(&mut feed, 0, &[]).await, 6).await;
    assert_eq!(kinds(&replay), kinds(&seen));
    let created =
        pb::ContactCreated::decode(replay[0].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert!(created.fields.iter().any(|c| c.field == "given_name"));
    let text = format!("{created:?}");
    assert!(
        !text.contains("Ann") && !text.contains("ann@feed"),
        "erased data is gone from old events: {text}"
    );
    let bob_created =
        pb::ContactCreated::decode(replay[3].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert!(
        format!("{bob_created:?}").contains("Bob"),
        "other contacts' events are intact"
    );

    // Resume after a sequence, and filter by type.
    let rest = take(&mut subscribe(&mut feed, 4, &[]).await, 2).await;
    assert_eq!(kinds(&rest), ["ContactDeleted", "ContactErased"]);
    let created_only = take(
        &mut subscribe(&mut feed, 0, &["crm.contact.v1.ContactCreated"]).await,
        2,
    )
    .await;
    assert_eq!(created_only.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 4]);
    let unknown = feed
        .subscribe(events::SubscribeRequest {
            after_sequence: 0,
            types: vec!["crm.contact.v1.Nope".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown type");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    // From a time: every event committed since (here, all six: the seek keeps an hour's
    // margin); a start given twice is refused.
    let since = Some(crm_platform::time::timestamp(
        chrono::Utc::now() - chrono::Duration::minutes(1),
    ));
    let mut recent = feed
        .subscribe(events::SubscribeRequest {
            since,
            until_head: true,
            ..Default::default()
        })
        .await
        .expect("since")
        .into_inner();
    let mut sequences = Vec::new();
    while let Some(message) = recent.message().await.expect("stream") {
        if let Some(events::subscribe_response::Kind::Event(event)) = message.kind {
            sequences.push(event.sequence);
        }
    }
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
    // From two hours on, past the margin: the seek starts after every one of them.
    let mut later = feed
        .subscribe(events::SubscribeRequest {
            since: Some(crm_platform::time::timestamp(
                chrono::Utc::now() + chrono::Duration::hours(2),
            )),
            until_head: true,
            ..Default::default()
        })
        .await
        .expect("since")
        .into_inner();
    while let Some(message) = later.message().await.expect("stream") {
        assert!(
            !matches!(message.kind, Some(events::subscribe_response::Kind::Event(_))),
            "{message:?}"
        );
    }
    let twice = feed
        .subscribe(events::SubscribeRequest {
            after_sequence: 2,
            since,
            ..Default::default()
        })
        .await
        .expect_err("both");
    assert_eq!(twice.code(), Code::InvalidArgument);

    // Another tenant sees none of it; a service principal sees every tenant.
    let mut globex = grpc_client(&suite.grpc, Some(token("globex", "gina", Role::Admin))).await;
    create(&mut globex, contact("Gina", "gina@globex.example")).await;
    let mut other = feed_client(&suite.grpc, token("globex", "gina", Role::Admin)).await;
    let theirs = take(&mut subscribe(&mut other, 0, &[]).await, 1).await;
    assert_eq!((theirs[0].sequence, theirs[0].tenant.as_str()), (7, "globex"));
    let mut service = feed_client(&suite.grpc, token("analytics", "ingest", Role::Service)).await;
    let all = take(&mut subscribe(&mut service, 0, &[]).await, 7).await;
    assert_eq!(
        all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn retention_prunes_and_old_sequences_are_out_of_range() {
    let suite = Suite::start();
    let mut client = grpc_client(&suite.grpc, Some(token("acme", "alice", Role::Admin))).await;
    for i in 0..3 {
        create(&mut client, contact("Old", &format!("old{i}@feed.example"))).await;
    }
    let data = std::sync::Arc::clone(&suite.data);
    drop(client);
    suite.process.terminate().await;
    // The three were written an hour ago, as far as the outbox knows: no waiting for the
    // retention window to pass.
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        data.path().join("data").join("contact.db").display()
    ))
    .await
    .expect("contact.db");
    sqlx::query("UPDATE outbox_events SET time = time - 3600000000")
        .execute(&mut db)
        .await
        .expect("backdate");
    db.close().await.expect("close");

    // Restarted with a one-second retention: the pruner removes the three at start, and the
    // usage report the first run published as it stopped (sequence 4: alice's requests).
    let suite = Suite::start_in_with(data, &[("CRM_EVENT_RETENTION", "1s")]);
    let mut client = grpc_client(&suite.grpc, Some(token("acme", "alice", Role::Admin))).await;
    let mut feed = feed_client(&suite.grpc, token("acme", "alice", Role::Viewer)).await;
    let fresh = create(&mut client, contact("New", "new@feed.example")).await;
    let refused = refused_after(&mut feed, 1).await;
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("oldest available sequence is 5"),
        "{}",
        refused.message()
    );
    let from_start = take(&mut subscribe(&mut feed, 0, &[]).await, 1).await;
    assert_eq!(
        (from_start[0].sequence, from_start[0].subject.as_str()),
        (5, fresh.name.as_str())
    );
    let exact = take(&mut subscribe(&mut feed, 4, &[]).await, 1).await;
    assert_eq!(exact[0].sequence, 5, "the oldest retained event follows sequence 4");
}

/// On PostgreSQL the sequencer numbers events after commit: concurrent writers, then a
/// kill -9 of the service and a restart, leave a gap-free sequence with every change once.
#[tokio::test]
async fn postgres_feed_is_gap_free_across_concurrent_writers_and_a_kill() {
    let Some(db) = TestDatabase::create("postgres_feed_is_gap_free").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    migrate(&db.url);
    let start = || Process::contact_on_postgres(&db.url, &[("CRM_FEED_HEARTBEAT", "300ms")], dir.path());
    let (process, grpc) = start();
    let mut feed = feed_client(&grpc, token("analytics", "ingest", Role::Service)).await;
    let mut live = subscribe(&mut feed, 0, &[]).await;

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let grpc = grpc.clone();
            tokio::spawn(async move {
                let tenant = format!("tenant{}", w % 2);
                let mut client = grpc_client(&grpc, Some(token(&tenant, "alice", Role::Admin))).await;
                for i in 0..25 {
                    create(&mut client, contact("Writer", &format!("w{w}i{i}@feed.example"))).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let first = take(&mut live, 100).await;
    assert_eq!(
        first.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert!(
        first.iter().all(|e| e.traceparent.starts_with("00-")),
        "each event carries the trace of the call that caused it"
    );
    // Concurrent creates are written together in one transaction; each event still carries
    // its own call's trace.
    let traces: std::collections::HashSet<&str> = first
        .iter()
        .map(|e| e.traceparent.split('-').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(traces.len(), 100, "one trace per call");

    // kill -9 right after acknowledged writes, then restart: the committed events are numbered
    // by the new process's sequencer, none lost, none twice.
    let mut client = grpc_client(&grpc, Some(token("tenant0", "alice", Role::Admin))).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(
            create(&mut client, contact("Killed", &format!("k{i}@feed.example")))
                .await
                .name,
        );
    }
    drop(process); // SIGKILL
    let (process, grpc) = start();
    let mut feed = feed_client(&grpc, token("analytics", "ingest", Role::Service)).await;
    let after = take(&mut subscribe(&mut feed, 100, &[]).await, 5).await;
    assert_eq!(
        after.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (101..=105).collect::<Vec<_>>()
    );
    assert_eq!(
        after.iter().map(|e| e.subject.clone()).collect::<Vec<_>>(),
        acknowledged
    );
    let mut idle = subscribe(&mut feed, 105, &[]).await;
    let message = tokio::time::timeout(Duration::from_secs(5), idle.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("open");
    let Some(events::subscribe_response::Kind::Heartbeat(beat)) = message.kind else {
        panic!("nothing follows 105, got {message:?}");
    };
    assert_eq!(beat.head_sequence, 105, "nothing else was numbered");
    drop(process);
    db.drop_database().await;
}

/// The consumer library through `crm mirror`: while a writer creates contacts (retrying with
/// request ids, so each exists once), the mirror is killed -9 mid-apply and restarted, and the
/// contact service is killed -9 mid-stream and restarted on the same port. Afterwards the
/// mirror holds every event exactly once, in sequence, and as many as the producer wrote.
#[tokio::test]
async fn mirror_applies_every_event_once_across_kills() {
    let Some(producer) = TestDatabase::create("mirror_producer").await else {
        return;
    };
    let Some(consumer) = TestDatabase::create("mirror_consumer").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    migrate(&producer.url);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{address}");
    let start_contact = || {
        Process::start(
            &["contact", "--grpc-addr", &address, "--metrics-addr", "127.0.0.1:0"],
            &[("CRM_DATABASE_URL", &producer.url)],
            dir.path(),
            "crm contact is up",
        )
    };
    let service_token = token("mirror", "mirror", Role::Service);
    let start_mirror = || {
        Process::start(
            &["mirror", "--endpoint", &endpoint, "--name", "crash-test"],
            &[
                ("CRM_TOKEN", &service_token),
                ("CRM_MIRROR_DATABASE_URL", &consumer.url),
            ],
            dir.path(),
            "crm mirror is up",
        )
    };
    const CONTACTS: usize = 300;
    let mut contact_process = start_contact();
    let writer = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            for i in 0..CONTACTS {
                let tenant = if i % 3 == 0 { "north" } else { "south" };
                let request = pb::CreateContactRequest {
                    contact: Some(contact("Mirrored", &format!("m{i}@feed.example"))),
                    request_id: format!("mirror-{i}"),
                    allow_duplicate: false,
                };
                // Retried until acknowledged: the service may be down, or die after committing.
                loop {
                    let Ok(channel) = Channel::from_shared(endpoint.clone())
                        .expect("endpoint")
                        .connect()
                        .await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let mut client =
                        crm_proto::crm::contact::v1::contact_service_client::ContactServiceClient::with_interceptor(
                            channel,
                            Bearer(Some(token(tenant, "writer", Role::Admin))),
                        );
                    if client.create_contact(request.clone()).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };
    let mut mirror = start_mirror();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if round == 1 {
            drop(contact_process); // SIGKILL mid-stream
            contact_process = start_contact();
        } else {
            drop(mirror); // SIGKILL, possibly between applying and committing
            mirror = start_mirror();
        }
    }
    writer.await.expect("writer");

    let mut db = sqlx::PgConnection::connect(&consumer.url).await.expect("consumer db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (count, distinct, max): (i64, i64, Option<i64>) = loop {
        let row: (i64, i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), count(DISTINCT seq), max(seq) FROM mirrored_events")
                .fetch_one(&mut db)
                .await
                .expect("count");
        if row.0 >= CONTACTS as i64 || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut source = sqlx::PgConnection::connect(&producer.url).await.expect("producer db");
    let (written, contacts): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM outbox_events), (SELECT count(*) FROM contacts)")
            .fetch_one(&mut source)
            .await
            .expect("producer counts");
    assert_eq!(contacts, CONTACTS as i64, "each acknowledged create exists once");
    assert_eq!(written, CONTACTS as i64, "one event per change");
    assert_eq!(
        (count, distinct, max),
        (written, written, Some(written)),
        "every event mirrored exactly once, gap-free"
    );
    let checkpoint =
        crm_platform::consumer::pg_checkpoint(&sqlx::PgPool::connect(&consumer.url).await.expect("pool"), "crash-test")
            .await
            .expect("checkpoint");
    assert_eq!(checkpoint, CONTACTS as u64);
    drop(mirror);

    // Replay from sequence 0 into a fresh database rebuilds the same state.
    let Some(rebuilt) = TestDatabase::create("mirror_rebuilt").await else {
        return;
    };
    let replay = Process::start(
        &["mirror", "--endpoint", &endpoint, "--name", "rebuild"],
        &[("CRM_TOKEN", &service_token), ("CRM_MIRROR_DATABASE_URL", &rebuilt.url)],
        dir.path(),
        "crm mirror is up",
    );
    let mut copy = sqlx::PgConnection::connect(&rebuilt.url).await.expect("rebuilt db");
    let state = "SELECT coalesce(string_agg(seq || ' ' || id || ' ' || type || ' ' || subject || ' ' || md5(payload), ',' ORDER BY seq), '') FROM mirrored_events";
    let original: String = sqlx::query_scalar(state).fetch_one(&mut db).await.expect("original");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: Option<String> = sqlx::query_scalar(state).fetch_one(&mut copy).await.ok();
        if replayed.as_deref() == Some(original.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay did not rebuild the same state"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(replay);
    drop(contact_process);
    producer.drop_database().await;
    consumer.drop_database().await;
    rebuilt.drop_database().await;
}

/// Reads Server-Sent Events from a streaming HTTP response until `count` named `event` lines
/// (other than heartbeats) have arrived; returns (id, event, data) of each.
pub(crate) async fn sse_events(
    response: &mut reqwest::Response,
    count: usize,
) -> Vec<(String, String, serde_json::Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("SSE in time")
            .expect("chunk")
            .expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !event.is_empty() && event != "heartbeat" {
                events.push((id, event, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    events
}

#[tokio::test]
async fn server_sent_events_through_the_gateway() {
    let suite = Suite::start_with(&[("CRM_FEED_HEARTBEAT", "300ms")]);
    let mut acme = grpc_client(&suite.grpc, Some(token("acme", "alice", Role::Admin))).await;
    let mut globex = grpc_client(&suite.grpc, Some(token("globex", "gina", Role::Admin))).await;
    let http = reqwest::Client::new();
    let open = |tenant: &str, last: Option<&str>, query: &str| {
        let mut request = http
            .get(format!("{}/v1/events:stream{query}", suite.rest))
            .bearer_auth(token(tenant, "reader", Role::Viewer));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send()
    };
    let mut stream = open("acme", None, "").await.expect("open");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream"),
        "an event stream"
    );
    let ann = create(&mut acme, contact("Ann", "ann@sse.example")).await;
    create(&mut globex, contact("Gina", "gina@sse.example")).await;
    let bob = create(&mut acme, contact("Bob", "bob@sse.example")).await;

    let seen = sse_events(&mut stream, 2).await;
    assert_eq!(
        seen.iter()
            .map(|(id, kind, _)| (id.as_str(), kind.as_str()))
            .collect::<Vec<_>>(),
        [
            ("1", "crm.contact.v1.ContactCreated"),
            ("3", "crm.contact.v1.ContactCreated")
        ],
        "the tenant's events only, with their sequence as id"
    );
    let data = &seen[0].2;
    assert_eq!(data["subject"], ann.name.as_str());
    assert_eq!(data["tenant"], "acme");
    assert_eq!(
        data["payload"]["@type"],
        "type.googleapis.com/crm.contact.v1.ContactCreated"
    );
    assert_eq!(data["payload"]["contact"], ann.name.as_str());
    assert!(
        data["payload"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["field"] == "given_name" && f["newValue"] == "Ann"),
        "{data}"
    );
    drop(stream);

    // A browser reconnects with Last-Event-ID: the stream resumes after it.
    let mut resumed = open("acme", Some("1"), "").await.expect("resume");
    let next = sse_events(&mut resumed, 1).await;
    assert_eq!(
        (next[0].0.as_str(), next[0].2["subject"].clone()),
        ("3", bob.name.as_str().into())
    );
    let mut filtered = open("globex", None, "?types=crm.contact.v1.ContactCreated")
        .await
        .expect("filtered");
    assert_eq!(sse_events(&mut filtered, 1).await[0].0, "2");

    let bad = open("acme", Some("soon"), "").await.expect("bad");
    assert_eq!(bad.status(), 400);
    let unknown = open("acme", None, "?types=crm.contact.v1.Nope").await.expect("unknown");
    assert_eq!(unknown.status(), 400);
    let anonymous = http
        .get(format!("{}/v1/events:stream", suite.rest))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status(), 401);
}

/// The trace of the REST request that caused a change travels in its event's envelope.
#[tokio::test]
async fn an_event_carries_the_trace_of_its_request() {
    let suite = Suite::start();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .post(format!("{}/v1/contacts", suite.rest))
        .bearer_auth(token("acme", "alice", Role::Admin))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"givenName": "Traced", "familyName": "Request"}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 201);
    let mut feed = feed_client(&suite.grpc, token("acme", "alice", Role::Viewer)).await;
    let event = take(&mut subscribe(&mut feed, 0, &[]).await, 1).await.remove(0);
    let parts: Vec<&str> = event.traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {}", event.traceparent);
    assert_eq!(parts[1], trace_id, "the request's trace continues into the event");
}

/// Runs one of every kind of change through `grpc` as tenant `tenant` and checks that the
/// feed (read from `after`) shows each one's event type, in order.
async fn every_kind_of_change_has_its_event(grpc: &str, tenant: &str, after: u64) {
    let mut client = grpc_client(grpc, Some(token(tenant, "alice", Role::Admin))).await;
    let ann = create(&mut client, contact("Ann", &format!("ann@{tenant}.example"))).await;
    let consent = pb::Consent {
        email: Some(pb::ChannelConsent {
            status: pb::ConsentStatus::OptedOut as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .update_contact(pb::UpdateContactRequest {
            contact: Some(pb::Contact {
                name: ann.name.clone(),
                consent: Some(consent),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["consent".into()],
            }),
        })
        .await
        .expect("withdraw consent");
    let twin = create(&mut client, contact("Anne", &format!("anne@{tenant}.example"))).await;
    client
        .merge_contacts(pb::MergeContactsRequest {
            survivor: ann.name.clone(),
            merged: vec![twin.name.clone()],
            ..Default::default()
        })
        .await
        .expect("merge");
    client
        .reassign_owner(pb::ReassignOwnerRequest {
            from_user: "alice".into(),
            to_users: vec!["bob".into()],
            dry_run: false,
        })
        .await
        .expect("reassign");
    let company = |name: &str, domain: &str| pb::CreateCompanyRequest {
        company: Some(pb::Company {
            display_name: name.into(),
            domain: domain.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let acme = client
        .create_company(company("Acme", &format!("acme-{tenant}.example")))
        .await
        .expect("company")
        .into_inner()
        .company
        .expect("company");
    client
        .update_company(pb::UpdateCompanyRequest {
            company: Some(pb::Company {
                name: acme.name.clone(),
                industry: "rockets".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["industry".into()],
            }),
        })
        .await
        .expect("update company");
    let dupe = client
        .create_company(company("Acme Inc", &format!("acme-inc-{tenant}.example")))
        .await
        .expect("company")
        .into_inner()
        .company
        .expect("company");
    client
        .merge_companies(pb::MergeCompaniesRequest {
            survivor: acme.name.clone(),
            merged: vec![dupe.name.clone()],
            ..Default::default()
        })
        .await
        .expect("merge companies");
    client
        .delete_company(pb::DeleteCompanyRequest {
            name: acme.name.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete company");

    let mut feed = feed_client(grpc, token(tenant, "alice", Role::Viewer)).await;
    let seen = take(&mut subscribe(&mut feed, after, &[]).await, 10).await;
    assert_eq!(
        kinds(&seen),
        [
            "ContactCreated",
            "ConsentChanged",
            "ContactCreated",
            "ContactsMerged",
            "OwnerChanged",
            "CompanyCreated",
            "CompanyUpdated",
            "CompanyCreated",
            "CompaniesMerged",
            "CompanyDeleted",
        ]
    );
    let merged =
        pb::ContactsMerged::decode(seen[3].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert_eq!(
        (merged.survivor, merged.merged),
        (ann.name.clone(), vec![twin.name.clone()])
    );
    let moved = pb::OwnerChanged::decode(seen[4].payload.as_ref().expect("payload").value.as_slice()).expect("decode");
    assert_eq!(
        (moved.resource, moved.old_owner, moved.new_owner),
        (ann.name, "alice".to_owned(), "bob".to_owned())
    );
}

#[tokio::test]
async fn every_kind_of_change_has_its_event_on_sqlite() {
    let suite = Suite::start();
    every_kind_of_change_has_its_event(&suite.grpc, "kinds", 0).await;
}

#[tokio::test]
async fn every_kind_of_change_has_its_event_on_postgres() {
    let Some(db) = TestDatabase::create("every_kind_of_change").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    migrate(&db.url);
    let (process, grpc) = Process::contact_on_postgres(&db.url, &[], dir.path());
    every_kind_of_change_has_its_event(&grpc, "kinds", 0).await;
    drop(process);

    // Retention on PostgreSQL: restarted with one second of it, the pruner (which runs at
    // start) removes the ten events, and asking for them is OUT_OF_RANGE. They were written
    // an hour ago, as far as the outbox knows: no waiting for the window to pass.
    let mut owner = sqlx::PgConnection::connect(&db.url).await.expect("owner");
    sqlx::query("UPDATE outbox_events SET time = time - interval '1 hour'")
        .execute(&mut owner)
        .await
        .expect("backdate");
    owner.close().await.expect("close");
    let (process, grpc) = Process::contact_on_postgres(&db.url, &[("CRM_EVENT_RETENTION", "1s")], dir.path());
    let mut feed = feed_client(&grpc, token("kinds", "alice", Role::Viewer)).await;
    let refused = refused_after(&mut feed, 1).await;
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(
        refused.message().contains("oldest available sequence is 11"),
        "{}",
        refused.message()
    );
    drop(process);
    db.drop_database().await;
}

/// Two consumers under one name (a deployment scaled to two by mistake) share the work
/// without applying anything twice, and neither fails.
#[tokio::test]
async fn two_consumers_under_one_name_apply_each_event_once() {
    let Some(producer) = TestDatabase::create("twin_producer").await else {
        return;
    };
    let Some(consumer) = TestDatabase::create("twin_consumer").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    migrate(&producer.url);
    let (contact_process, endpoint) = Process::contact_on_postgres(&producer.url, &[], dir.path());
    let service_token = token("mirror", "mirror", Role::Service);
    let mirror = || {
        Process::start(
            &["mirror", "--endpoint", &endpoint, "--name", "twin"],
            &[
                ("CRM_TOKEN", &service_token),
                ("CRM_MIRROR_DATABASE_URL", &consumer.url),
            ],
            dir.path(),
            "crm mirror is up",
        )
    };
    let (mut first, mut second) = (mirror(), mirror());
    const CONTACTS: i64 = 200;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut client = grpc_client(&endpoint, Some(token("twins", "writer", Role::Admin))).await;
                for i in 0..CONTACTS / 4 {
                    create(&mut client, contact("Twin", &format!("t{w}-{i}@feed.example"))).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut db = sqlx::PgConnection::connect(&consumer.url).await.expect("consumer db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (count, distinct, max): (i64, i64, Option<i64>) = loop {
        let row: (i64, i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), count(DISTINCT seq), max(seq) FROM mirrored_events")
                .fetch_one(&mut db)
                .await
                .expect("count");
        if row.0 >= CONTACTS || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((count, distinct, max), (CONTACTS, CONTACTS, Some(CONTACTS)));
    for consumer in [&mut first, &mut second] {
        assert!(consumer.running(), "a consumer failed:\n{}", consumer.output());
    }
    drop((first, second, contact_process));
    producer.drop_database().await;
    consumer.drop_database().await;
}
