//! The contact lifecycle over gRPC directly, health, reflection and graceful shutdown.

use crm_platform::Role;
use crm_proto::crm::contact::v1 as pb;
use crm_proto::prost_types::{FieldMask, Timestamp};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Suite, grpc_client, token};

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn contact_lifecycle_over_grpc() {
    let suite = Suite::start();
    let mut client = grpc_client(&suite.grpc, Some(token("acme", "alice", Role::Rep))).await;

    let new = pb::Contact {
        given_name: "Milton".into(),
        family_name: "Waddams".into(),
        emails: vec![pb::EmailAddress {
            address: "milton@initech.example".into(),
            primary: true,
        }],
        lifecycle_stage: pb::LifecycleStage::Customer as i32,
        tags: vec!["stapler".into()],
        ..Default::default()
    };
    let create = pb::CreateContactRequest {
        contact: Some(new.clone()),
        request_id: "req-7".into(),
        allow_duplicate: false,
    };
    let created = client
        .create_contact(create.clone())
        .await
        .expect("create")
        .into_inner()
        .contact
        .expect("contact");
    let replay = client
        .create_contact(create)
        .await
        .expect("retry")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(replay.name, created.name, "request_id makes create idempotent");
    assert_eq!(created.owner, "alice");

    // A field-mask update changes only the masked field, whatever else the message carries.
    let update = pb::UpdateContactRequest {
        contact: Some(pb::Contact {
            name: created.name.clone(),
            title: "Collator".into(),
            family_name: "IGNORED".into(),
            etag: created.etag.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["title"]),
    };
    let updated = client
        .update_contact(update.clone())
        .await
        .expect("update")
        .into_inner()
        .contact
        .expect("contact");
    assert_eq!(
        (updated.title.as_str(), updated.family_name.as_str()),
        ("Collator", "Waddams")
    );
    assert_ne!(updated.etag, created.etag);
    let stale = client.update_contact(update).await.expect_err("stale etag");
    assert_eq!(stale.code(), Code::FailedPrecondition);

    let bad_mask = client
        .update_contact(pb::UpdateContactRequest {
            contact: Some(pb::Contact {
                name: created.name.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["create_time"]),
        })
        .await
        .expect_err("output only");
    assert_eq!(bad_mask.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&bad_mask);
    assert_eq!(
        details.bad_request().expect("bad request").field_violations[0].field,
        "update_mask.paths[create_time]"
    );
    assert_eq!(details.error_info().expect("error info").reason, "INVALID_FIELD");

    for i in 0..30 {
        let contact = pb::Contact {
            given_name: format!("Bulk{i}"),
            family_name: "Waddams".into(),
            ..Default::default()
        };
        client
            .create_contact(pb::CreateContactRequest {
                contact: Some(contact),
                request_id: String::new(),
                allow_duplicate: false,
            })
            .await
            .expect("bulk");
    }
    let mut token = String::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = client
            .list_contacts(pb::ListContactsRequest {
                page_size: 7,
                page_token: token,
                filter: "owner = \"alice\"".into(),
                order_by: "family_name".into(),
            })
            .await
            .expect("page")
            .into_inner();
        for contact in page.contacts {
            assert!(seen.insert(contact.name), "no repeats");
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 31);

    let found = client
        .search_contacts(pb::SearchContactsRequest {
            query: "milt waddams".into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(
        found.contacts.first().map(|c| c.name.clone()),
        Some(created.name.clone())
    );

    let logged = client
        .create_interaction(pb::CreateInteractionRequest {
            parent: created.name.clone(),
            interaction: Some(pb::Interaction {
                r#type: pb::InteractionType::Meeting as i32,
                occur_time: Some(Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                subject: "red stapler".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("log")
        .into_inner()
        .interaction
        .expect("interaction");
    let fetched = client
        .get_interaction(pb::GetInteractionRequest {
            name: logged.name.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .interaction
        .expect("interaction");
    assert_eq!(fetched, logged);

    client
        .delete_contact(pb::DeleteContactRequest {
            name: created.name.clone(),
            etag: updated.etag,
        })
        .await
        .expect("delete");
    let gone = client
        .get_contact(pb::GetContactRequest { name: created.name })
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn health_is_public_and_reflection_lists_the_services() {
    let suite = Suite::start();
    let channel = tonic::transport::Channel::from_shared(suite.grpc.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "crm.contact.v1.ContactService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "crm.nothing.v1.NoService".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.message().await.expect("message").expect("response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"crm.contact.v1.ContactService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
}

#[tokio::test]
async fn sigterm_drains_exits_cleanly_and_loses_nothing() {
    let suite = Suite::start();
    let admin = Some(token("acme", "alice", Role::Admin));
    let mut client = grpc_client(&suite.grpc, admin.clone()).await;
    let contact = pb::Contact {
        given_name: "Durable".into(),
        ..Default::default()
    };
    let created = client
        .create_contact(pb::CreateContactRequest {
            contact: Some(contact),
            request_id: String::new(),
            allow_duplicate: false,
        })
        .await
        .expect("create")
        .into_inner()
        .contact
        .expect("contact");
    let data = std::sync::Arc::clone(&suite.data);
    let (status, took) = suite.process.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < std::time::Duration::from_secs(8),
        "drained in {took:?}, well inside the 10 s grace period"
    );
    drop(client);

    let restarted = Suite::start_in(data);
    let mut client = grpc_client(&restarted.grpc, admin).await;
    let after = client
        .get_contact(pb::GetContactRequest {
            name: created.name.clone(),
        })
        .await
        .expect("still there")
        .into_inner()
        .contact;
    assert_eq!(after, Some(created), "an acknowledged write survives a restart");
}
