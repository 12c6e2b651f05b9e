//! The Kubernetes shape on PostgreSQL: `crm migrate`, then `crm contact`, `crm pipeline` and
//! `crm gateway` as separate processes talking gRPC, each service on its own database, with
//! row-level security underneath.

use crm_platform::Role;
use crm_platform::testing::TestDatabase;
use serde_json::json;
use sqlx::Connection;

use crate::support::{Process, Rest, migrate};

#[tokio::test]
async fn separate_roles_on_postgres() {
    let Some(db) = TestDatabase::create("separate_roles_on_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    migrate("contact", &db.url);
    // Migrations are idempotent.
    migrate("contact", &db.url);

    let Some(pipeline_db) = TestDatabase::create("separate_roles_on_postgres_pipeline").await else {
        return;
    };
    migrate("pipeline", &pipeline_db.url);

    let (contact, grpc) = Process::contact_on_postgres(&db.url, &[], dir.path());
    let pipeline = Process::start(
        &[
            "pipeline",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[("CRM_DATABASE_URL", &pipeline_db.url), ("CRM_CONTACT_ENDPOINT", &grpc)],
        dir.path(),
        "crm pipeline is up",
    );
    let pipeline_grpc = format!("http://{}", pipeline.address_after("gRPC on "));
    let gateway = Process::start(
        &["gateway", "--http-addr", "127.0.0.1:0"],
        &[
            ("CRM_CONTACT_ENDPOINT", &grpc),
            ("CRM_PIPELINE_ENDPOINT", &pipeline_grpc),
        ],
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

    // The pipeline service checks references against the contact service and follows its
    // feed, across processes and databases.
    let manager = Rest::as_user(&rest, "pg-a", "mia", Role::Manager);
    let pipeline_resource = crate::pipeline::pipeline(&manager).await;
    let (status, deal) = manager
        .post(
            "/v1/deals",
            json!({"displayName": "PG deal", "pipeline": pipeline_resource["name"], "contact": name,
            "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    let (status, problem) = other
        .post(
            "/v1/deals",
            json!({"displayName": "Stolen", "pipeline": pipeline_resource["name"],
            "amount": {"amountMinor": "1", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 400, "another tenant's pipeline: {problem}");
    let survivor = crate::pipeline::contact(&manager, "Survivor", "survivor@example.com").await;
    let (status, merged) = manager
        .post(
            &format!("/v1/{}:merge", survivor["name"].as_str().expect("name")),
            json!({"merged": [name]}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    let deal_path = format!("/v1/{}", deal["name"].as_str().expect("deal"));
    crate::pipeline::eventually(
        "the merge reaching the deal",
        || async { manager.get(&deal_path).await.1 },
        |d| d["contact"] == survivor["name"],
    )
    .await;
    let (status, _) = manager
        .post(
            &format!("/v1/{}:erase", survivor["name"].as_str().expect("name")),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    crate::pipeline::eventually(
        "the erase reaching the deal",
        || async { manager.get(&deal_path).await.1 },
        |d| d["contact"] == "",
    )
    .await;

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
    drop(pipeline);
    drop(contact);
    db.drop_database().await;
    pipeline_db.drop_database().await;
}

/// Runs `crm <args>` with only `envs` for its credentials, expects it to refuse to start,
/// and returns what it said.
fn refusal(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crm"));
    command
        .args(args)
        .env_remove("CRM_JWT_SECRET")
        .env_remove("CRM_JWKS_URL");
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("run");
    assert!(!output.status.success(), "crm {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_configuration_is_refused_before_binding() {
    let stderr = refusal(
        &["contact", "--grpc-addr", "127.0.0.1:0"],
        &[("CRM_DATABASE_URL", "mysql://nope"), ("CRM_JWT_SECRET", "short")],
    );
    assert!(stderr.contains("CRM_DATABASE_URL"), "{stderr}");
}

#[test]
fn the_pipeline_refuses_a_bad_configuration_before_binding() {
    let pipeline = [
        "pipeline",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let stderr = refusal(
        &pipeline,
        &[
            ("CRM_DATABASE_URL", "postgres://127.0.0.1:1/none"),
            ("CRM_JWT_SECRET", crate::support::SECRET),
            ("CRM_CONTACT_ENDPOINT", "contact:50051"),
        ],
    );
    assert!(stderr.contains("CRM_CONTACT_ENDPOINT"), "{stderr}");
    let stderr = refusal(
        &pipeline,
        &[
            ("CRM_DATABASE_URL", "postgres://127.0.0.1:1/none"),
            ("CRM_JWKS_URL", "https://idp.example/jwks"),
            ("CRM_JWT_ISSUER", "https://idp.example"),
            ("CRM_JWT_AUDIENCE", "crm"),
        ],
    );
    assert!(
        stderr.contains("CRM_SERVICE_TOKEN"),
        "with a JWKS the feed needs a service token: {stderr}"
    );
}
