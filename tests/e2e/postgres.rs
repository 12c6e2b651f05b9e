//! The Kubernetes shape on PostgreSQL: `crm migrate`, then `crm contact` and `crm gateway` as
//! separate processes talking gRPC, with row-level security underneath.

use crm_platform::Role;
use crm_platform::testing::TestDatabase;
use serde_json::json;
use sqlx::Connection;

use crate::support::{Process, Rest};

#[tokio::test]
async fn separate_roles_on_postgres() {
    let Some(db) = TestDatabase::create("separate_roles_on_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["migrate"])
        .env("CRM_DATABASE_URL", &db.url)
        .env("CRM_LOG", "warn")
        .output()
        .expect("migrate");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["migrate"])
        .env("CRM_DATABASE_URL", &db.url)
        .output()
        .expect("migrate again");
    assert!(again.status.success(), "migrations are idempotent");

    let contact = Process::start(
        &["contact", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
        &[("CRM_DATABASE_URL", &db.url)],
        dir.path(),
        "crm contact is up",
    );
    let grpc = format!("http://{}", contact.address_after("gRPC on "));
    let gateway = Process::start(
        &["gateway", "--http-addr", "127.0.0.1:0"],
        &[("CRM_CONTACT_ENDPOINT", &grpc)],
        dir.path(),
        "crm gateway is up",
    );
    let rest = format!("http://{}", gateway.address_after("REST on http://"));

    let alice = Rest::as_user(&rest, "pg-a", "alice", Role::Rep);
    let (status, created) = alice
        .post(
            "/v1/contacts",
            json!({"givenName": "Postgres", "familyName": "Person", "emails": [{"address": "pg@example.com"}]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let name = created["name"].as_str().expect("name").to_owned();
    let (status, found) = alice.get("/v1/contacts:search?query=postgres").await;
    assert_eq!(
        (status, found["contacts"][0]["name"].as_str()),
        (200, Some(name.as_str()))
    );
    let other = Rest::as_user(&rest, "pg-b", "eve", Role::Admin);
    assert_eq!(other.get(&format!("/v1/{name}")).await.0, 404);
    assert_eq!(
        other.get("/v1/contacts").await.1["contacts"].as_array().map(Vec::len),
        Some(0)
    );
    let (status, ready) = Rest::new(&rest, None).get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));

    // A database failure is a plain internal error: no SQL, table or driver text leaks.
    let mut owner = sqlx::PgConnection::connect(&db.url).await.expect("owner connection");
    sqlx::Executor::execute(&mut owner, "DROP TABLE history CASCADE")
        .await
        .expect("break the schema");
    let (status, problem) = alice.post("/v1/contacts", json!({"givenName": "Broken"})).await;
    assert_eq!(
        (status, problem["detail"].as_str(), problem["reason"].as_str()),
        (500, Some("internal error"), Some("INTERNAL")),
        "{problem}"
    );
    let text = problem.to_string().to_lowercase();
    for leak in ["history", "relation", "does not exist", "sqlx", "postgres", "42p01"] {
        assert!(!text.contains(leak), "`{leak}` reached the client: {problem}");
    }
    let mut grpc_client =
        crate::support::grpc_client(&grpc, Some(crate::support::token("pg-a", "alice", Role::Rep))).await;
    let status = grpc_client
        .create_contact(crm_proto::crm::contact::v1::CreateContactRequest {
            contact: Some(crm_proto::crm::contact::v1::Contact {
                given_name: "Broken".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("broken schema");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Internal, "internal error")
    );

    drop(gateway);
    drop(contact);
    db.drop_database().await;
}

#[test]
fn a_bad_configuration_is_refused_before_binding() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["contact", "--grpc-addr", "127.0.0.1:0"])
        .env("CRM_DATABASE_URL", "mysql://nope")
        .env("CRM_JWT_SECRET", "short")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CRM_DATABASE_URL"), "{stderr}");
}
