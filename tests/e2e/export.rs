//! Streaming export over REST (CSV and NDJSON) and gRPC.

use crm_platform::Role;
use crm_proto::crm::contact::v1 as pb;
use serde_json::json;

use crate::support::{Rest, Suite, grpc_client, token};

#[tokio::test]
async fn exports_stream_every_matching_contact() {
    let suite = Suite::start();
    let admin = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let mut grpc = grpc_client(&suite.grpc, Some(token("acme", "ada", Role::Admin))).await;
    // More than one export batch (500), so paging across batches is exercised.
    for i in 0..520 {
        let contact = pb::Contact {
            given_name: format!("Bulk{i}"),
            family_name: "Export".into(),
            emails: vec![pb::EmailAddress {
                address: format!("bulk{i}@example.com"),
                primary: true,
            }],
            tags: if i % 2 == 0 { vec!["even".into()] } else { vec![] },
            ..Default::default()
        };
        grpc.create_contact(pb::CreateContactRequest {
            contact: Some(contact),
            ..Default::default()
        })
        .await
        .expect("create");
    }
    admin
        .post(
            "/v1/contacts",
            json!({"givenName": "Quote \"me\", please", "familyName": "Comma,Person", "tags": ["even"]}),
        )
        .await;

    let response = admin
        .request(reqwest::Method::GET, "/v1/contacts:export?format=csv")
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let text = response.text().await.expect("body");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("headers").clone();
    assert_eq!(&headers[2], "given_name");
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid csv");
    assert_eq!(records.len(), 521);
    let names: std::collections::HashSet<&str> = records.iter().map(|r| &r[0]).collect();
    assert_eq!(names.len(), 521, "every contact exactly once");
    assert!(
        records
            .iter()
            .any(|r| &r[2] == "Quote \"me\", please" && &r[3] == "Comma,Person"),
        "quoting round-trips"
    );

    let ndjson = admin
        .request(reqwest::Method::GET, "/v1/contacts:export?filter=tag%20%3D%20even")
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 261);
    assert!(lines.iter().all(|c| c["tags"] == json!(["even"])));

    let mut stream = grpc
        .export_contacts(pb::ExportContactsRequest::default())
        .await
        .expect("grpc export")
        .into_inner();
    let mut batches = Vec::new();
    while let Some(batch) = stream.message().await.expect("batch") {
        batches.push(batch.contacts.len());
    }
    assert_eq!(batches, vec![500, 21]);

    let rep = Rest::as_user(&suite.rest, "acme", "rob", Role::Rep);
    assert_eq!(
        rep.get("/v1/contacts:export").await.0,
        403,
        "reps cannot take the customer base with them"
    );
    assert_eq!(admin.get("/v1/contacts:export?format=xml").await.0, 400);
    assert_eq!(admin.get("/v1/contacts:export?filter=shoe%3D1").await.0, 400);
    let other = Rest::as_user(&suite.rest, "elsewhere", "eve", Role::Admin);
    let theirs = other
        .request(reqwest::Method::GET, "/v1/contacts:export")
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    assert!(theirs.is_empty(), "another tenant exports nothing of this one");
}
