//! Authentication, tenant isolation on every route and RPC, and the role rules.

use crm_platform::Role;
use crm_proto::crm::contact::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::support::{Rest, SECRET, Suite, grpc_client, id_of, token};

/// A JWT assembled by hand, so that the tests can forge what no library would sign.
fn forged(alg: &str, claims: &serde_json::Value, signature: &str) -> String {
    use base64::Engine;
    let encode = |value: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.{signature}",
        encode(&json!({"alg": alg, "typ": "JWT"})),
        encode(claims)
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_on_rest_and_grpc() {
    let suite = Suite::start();
    let claims = json!({"sub": "mallory", "tenant": "acme", "roles": ["admin"], "exp": now() + 600});
    // Expired two minutes ago, beyond the 30 s leeway.
    let expired = forged_hs256(&json!({"sub": "mallory", "tenant": "acme", "roles": ["admin"], "exp": now() - 120}));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("unsigned alg none", Some(forged("none", &claims, ""))),
        ("wrong signature", Some(forged("HS256", &claims, "c2lnbmF0dXJl"))),
        ("wrong algorithm", Some(forged_with("HS384", &claims))),
        ("expired", Some(expired)),
        (
            "signed with another secret",
            Some(signed_with(b"another-secret-another-secret-xxxx", &claims)),
        ),
        (
            "no known role",
            Some(forged_hs256(
                &json!({"sub": "mallory", "tenant": "acme", "roles": ["superuser"], "exp": now() + 600}),
            )),
        ),
    ];
    for (what, token) in cases {
        let rest = Rest::new(&suite.rest, token.clone());
        let (status, problem) = rest.get("/v1/contacts").await;
        assert_eq!(status, 401, "{what}: {problem}");
        let (status, _) = rest.post("/v1/contacts", json!({"givenName": "x"})).await;
        assert_eq!(status, 401, "{what}");
        let mut client = grpc_client(&suite.grpc, token).await;
        let err = client
            .list_contacts(pb::ListContactsRequest::default())
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}");
    }
    let admin = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let (_, list) = admin.get("/v1/contacts").await;
    assert_eq!(
        list["contacts"].as_array().map(Vec::len),
        Some(0),
        "nothing got written"
    );
}

fn signed_with(secret: &[u8], claims: &serde_json::Value) -> String {
    hmac_token("HS256", secret, claims)
}

fn forged_hs256(claims: &serde_json::Value) -> String {
    hmac_token("HS256", SECRET.as_bytes(), claims)
}

fn forged_with(alg: &str, claims: &serde_json::Value) -> String {
    hmac_token(alg, SECRET.as_bytes(), claims)
}

/// A correctly signed HMAC token with any claims (the suite's own minting refuses bad ones).
fn hmac_token(alg: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let algorithm = match alg {
        "HS384" => jsonwebtoken::Algorithm::HS384,
        _ => jsonwebtoken::Algorithm::HS256,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

#[tokio::test]
async fn another_tenant_sees_nothing_on_any_route_or_rpc() {
    let suite = Suite::start();
    let owner = Rest::as_user(&suite.rest, "tenant-a", "alice", Role::Admin);
    let (_, company) = owner.post("/v1/companies", json!({"displayName": "Secret Co"})).await;
    let (_, contact) = owner.post("/v1/contacts", json!({"givenName": "Secret", "familyName": "Person", "emails": [{"address": "secret@a.example"}], "company": company["name"]})).await;
    let (_, call) = owner
        .post(
            &format!("/v1/contacts/{}/interactions", id_of(&contact["name"])),
            json!({"type": "CALL", "occurTime": "2026-11-01T09:00:00Z", "body": "confidential"}),
        )
        .await;
    let (cid, coid) = (id_of(&contact["name"]), id_of(&company["name"]));
    let iid = id_of(&call["name"]);

    // An admin of tenant B, who knows every id, tries every route.
    let other = Rest::as_user(&suite.rest, "tenant-b", "eve", Role::Admin);
    let not_found = [
        other.get(&format!("/v1/contacts/{cid}")).await,
        other
            .patch(&format!("/v1/contacts/{cid}"), json!({"title": "pwned"}))
            .await,
        other.delete(&format!("/v1/contacts/{cid}")).await,
        other.get(&format!("/v1/contacts/{cid}/interactions")).await,
        other
            .post(
                &format!("/v1/contacts/{cid}/interactions"),
                json!({"type": "NOTE", "occurTime": "2026-11-01T09:00:00Z"}),
            )
            .await,
        other.get(&format!("/v1/contacts/{cid}/interactions/{iid}")).await,
        other.delete(&format!("/v1/contacts/{cid}/interactions/{iid}")).await,
        other.get(&format!("/v1/companies/{coid}")).await,
        other
            .patch(&format!("/v1/companies/{coid}"), json!({"displayName": "pwned"}))
            .await,
        other.delete(&format!("/v1/companies/{coid}")).await,
        other.get(&format!("/v1/companies/{coid}/interactions")).await,
        other.get(&format!("/v1/contacts/{cid}/history")).await,
        other.get(&format!("/v1/companies/{coid}/history")).await,
        other.post(&format!("/v1/contacts/{cid}:erase"), json!({})).await,
    ];
    for (status, body) in &not_found {
        assert_eq!(*status, 404, "{body}");
        assert!(
            !body.to_string().contains("Secret") && !body.to_string().contains("confidential"),
            "{body}"
        );
    }
    for path in [
        "/v1/contacts",
        "/v1/companies",
        "/v1/contacts:search?query=secret",
        "/v1/contacts?filter=owner%3Dalice",
        "/v1/contacts:findDuplicates",
        "/v1/companies:findDuplicates",
    ] {
        let (status, page) = other.get(path).await;
        assert_eq!(status, 200);
        assert!(!page.to_string().contains("Secret"), "{path}: {page}");
    }
    let (status, _) = other
        .post("/v1/contacts", json!({"givenName": "Link", "company": company["name"]}))
        .await;
    assert_eq!(status, 400, "cannot link to another tenant's company");

    // The same over gRPC, RPC by RPC.
    let mut grpc = grpc_client(&suite.grpc, Some(token("tenant-b", "eve", Role::Admin))).await;
    let contact_name = format!("contacts/{cid}");
    let company_name = format!("companies/{coid}");
    let interaction_name = format!("contacts/{cid}/interactions/{iid}");
    let codes = vec![
        (
            "GetContact",
            grpc.get_contact(pb::GetContactRequest {
                name: contact_name.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "UpdateContact",
            grpc.update_contact(pb::UpdateContactRequest {
                contact: Some(pb::Contact {
                    name: contact_name.clone(),
                    title: "pwned".into(),
                    ..Default::default()
                }),
                update_mask: Some(crm_proto::prost_types::FieldMask {
                    paths: vec!["title".into()],
                }),
            })
            .await
            .map(drop),
        ),
        (
            "DeleteContact",
            grpc.delete_contact(pb::DeleteContactRequest {
                name: contact_name.clone(),
                etag: String::new(),
            })
            .await
            .map(drop),
        ),
        (
            "GetCompany",
            grpc.get_company(pb::GetCompanyRequest {
                name: company_name.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "UpdateCompany",
            grpc.update_company(pb::UpdateCompanyRequest {
                company: Some(pb::Company {
                    name: company_name.clone(),
                    display_name: "pwned".into(),
                    ..Default::default()
                }),
                update_mask: Some(crm_proto::prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            })
            .await
            .map(drop),
        ),
        (
            "DeleteCompany",
            grpc.delete_company(pb::DeleteCompanyRequest {
                name: company_name.clone(),
                etag: String::new(),
            })
            .await
            .map(drop),
        ),
        (
            "GetInteraction",
            grpc.get_interaction(pb::GetInteractionRequest {
                name: interaction_name.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "DeleteInteraction",
            grpc.delete_interaction(pb::DeleteInteractionRequest {
                name: interaction_name.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "ListHistory(contact)",
            grpc.list_history(pb::ListHistoryRequest {
                parent: contact_name.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "ListHistory(company)",
            grpc.list_history(pb::ListHistoryRequest {
                parent: company_name.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "EraseContact",
            grpc.erase_contact(pb::EraseContactRequest {
                name: contact_name.clone(),
            })
            .await
            .map(drop),
        ),
        (
            "ListInteractions(contact)",
            grpc.list_interactions(pb::ListInteractionsRequest {
                parent: contact_name.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "ListInteractions(company)",
            grpc.list_interactions(pb::ListInteractionsRequest {
                parent: company_name.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "CreateInteraction",
            grpc.create_interaction(pb::CreateInteractionRequest {
                parent: contact_name.clone(),
                interaction: Some(pb::Interaction {
                    r#type: pb::InteractionType::Note as i32,
                    occur_time: Some(crm_proto::prost_types::Timestamp {
                        seconds: 1_800_000_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .map(drop),
        ),
    ];
    for (rpc, result) in codes {
        assert_eq!(result.expect_err(rpc).code(), Code::NotFound, "{rpc}");
    }
    let listed = grpc
        .list_contacts(pb::ListContactsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.contacts.is_empty());
    let companies = grpc
        .list_companies(pb::ListCompaniesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(companies.companies.is_empty());
    let found = grpc
        .search_contacts(pb::SearchContactsRequest {
            query: "secret".into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(found.contacts.is_empty());
    let moved = grpc
        .reassign_owner(pb::ReassignOwnerRequest {
            from_user: "alice".into(),
            to_users: vec!["eve".into()],
            dry_run: false,
        })
        .await
        .expect("reassign")
        .into_inner();
    assert_eq!(
        (moved.contacts, moved.companies),
        (0, 0),
        "a reassignment never reaches another tenant"
    );
    let (status, moved) = other
        .post(
            "/v1/contacts:reassignOwner",
            json!({"fromUser": "alice", "toUsers": ["eve"]}),
        )
        .await;
    assert_eq!(
        (status, moved["contacts"].as_str(), moved["companies"].as_str()),
        (200, Some("0"), Some("0")),
        "{moved}"
    );

    // And tenant A's data is exactly as it was.
    let (_, still) = owner.get(&format!("/v1/contacts/{cid}")).await;
    assert_eq!(still, contact);
    let (_, timeline) = owner.get(&format!("/v1/contacts/{cid}/interactions")).await;
    assert_eq!(timeline["interactions"].as_array().map(Vec::len), Some(1));
    let (_, still_company) = owner.get(&format!("/v1/companies/{coid}")).await;
    assert_eq!(still_company, company);
}

#[tokio::test]
async fn roles_decide_who_writes_what() {
    let suite = Suite::start();
    let alice = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);
    let bob = Rest::as_user(&suite.rest, "acme", "bob", Role::Rep);
    let manager = Rest::as_user(&suite.rest, "acme", "meg", Role::Manager);
    let viewer = Rest::as_user(&suite.rest, "acme", "vic", Role::Viewer);

    let (status, mine) = alice.post("/v1/contacts", json!({"givenName": "Alice's"})).await;
    assert_eq!((status, mine["owner"].as_str()), (201, Some("alice")));
    let id = id_of(&mine["name"]);

    assert_eq!(viewer.post("/v1/contacts", json!({"givenName": "V"})).await.0, 403);
    assert_eq!(viewer.get(&format!("/v1/contacts/{id}")).await.0, 200, "viewers read");
    assert_eq!(
        viewer
            .patch(&format!("/v1/contacts/{id}"), json!({"title": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(
        viewer
            .post(
                &format!("/v1/contacts/{id}/interactions"),
                json!({"type": "NOTE", "occurTime": "2026-11-01T09:00:00Z"})
            )
            .await
            .0,
        403
    );

    assert_eq!(
        bob.get(&format!("/v1/contacts/{id}")).await.0,
        200,
        "reps read shared records"
    );
    assert_eq!(
        bob.patch(&format!("/v1/contacts/{id}"), json!({"title": "x"})).await.0,
        403
    );
    assert_eq!(bob.delete(&format!("/v1/contacts/{id}")).await.0, 403);
    assert_eq!(
        bob.post("/v1/contacts", json!({"givenName": "For alice", "owner": "alice"}))
            .await
            .0,
        403,
        "a rep cannot create for someone else"
    );
    assert_eq!(
        alice
            .patch(&format!("/v1/contacts/{id}"), json!({"owner": "bob"}))
            .await
            .0,
        403,
        "a rep cannot give records away"
    );
    assert_eq!(
        bob.post(
            &format!("/v1/contacts/{id}/interactions"),
            json!({"type": "CALL", "occurTime": "2026-11-01T09:00:00Z", "actor": "alice"})
        )
        .await
        .0,
        403,
        "a rep logs only as themselves"
    );
    let (status, logged) = bob
        .post(
            &format!("/v1/contacts/{id}/interactions"),
            json!({"type": "CALL", "occurTime": "2026-11-01T09:00:00Z"}),
        )
        .await;
    assert_eq!((status, logged["actor"].as_str()), (201, Some("bob")));
    assert_eq!(
        alice
            .delete(&format!("/v1/contacts/{id}/interactions/{}", id_of(&logged["name"])))
            .await
            .0,
        403
    );

    let (status, updated) = alice
        .patch(&format!("/v1/contacts/{id}"), json!({"title": "Own"}))
        .await;
    assert_eq!((status, updated["title"].as_str()), (200, Some("Own")));
    let (status, reassigned) = manager
        .patch(&format!("/v1/contacts/{id}"), json!({"owner": "bob"}))
        .await;
    assert_eq!(
        (status, reassigned["owner"].as_str()),
        (200, Some("bob")),
        "managers write every record"
    );
    assert_eq!(
        alice
            .patch(&format!("/v1/contacts/{id}"), json!({"title": "x"}))
            .await
            .0,
        403,
        "no longer alice's"
    );
    assert_eq!(bob.delete(&format!("/v1/contacts/{id}")).await.0, 204);
}
