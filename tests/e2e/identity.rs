//! The production identity path through the real binary: tokens verified against a JWKS the
//! test serves over HTTP, with issuer and audience pinned and `nbf` honoured; an identity
//! provider that hangs costs one short fetch and shows in readiness; the credential a service
//! follows another's feed with is read from a file again on every connection, and a refused one
//! shows in readiness and a metric until it is renewed.

use std::time::{Duration, Instant};

use crm_platform::Role;
use crm_platform::testing::jwks::{JwksServer, KEY_ID, Mode, now, sign};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{BACKENDS, Deployment, Rest, SECRET, Suite};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "crm-api";

fn claims(user: &str, roles: &[&str]) -> Value {
    json!({"sub": user, "tenant": "idp", "roles": roles, "exp": now() + 3600, "iss": ISSUER, "aud": AUDIENCE})
}

/// `crm serve` verifying tokens with the JWKS at `jwks`, following its own contact feed with the
/// service token in a file of its data directory.
fn suite_with_jwks(jwks: &str) -> Suite {
    let data = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let token_file = data.path().join("service-token");
    std::fs::write(&token_file, sign(KEY_ID, &claims("pipeline", &["service"]))).expect("token file");
    let token_file = token_file.to_str().expect("path").to_owned();
    Suite::start_in_with(
        data,
        &[
            ("CRM_JWKS_URL", jwks),
            ("CRM_JWT_ISSUER", ISSUER),
            ("CRM_JWT_AUDIENCE", AUDIENCE),
            ("CRM_SERVICE_TOKEN_FILE", &token_file),
        ],
    )
}

async fn status_with(rest: &str, token: &str) -> (u16, Value) {
    Rest::new(rest, Some(token.to_owned())).get("/v1/contacts").await
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_claims_and_not_before_are_enforced_with_a_jwks() {
    let jwks = JwksServer::start().await;
    let suite = suite_with_jwks(&jwks.url);
    let good = claims("alice", &["rep"]);
    assert_eq!(status_with(&suite.rest, &sign(KEY_ID, &good)).await.0, 200);

    let mut listed = good.clone();
    listed["aud"] = json!(["other", AUDIENCE]);
    assert_eq!(
        status_with(&suite.rest, &sign(KEY_ID, &listed)).await.0,
        200,
        "an aud list is accepted"
    );
    listed["aud"] = json!(["other", "another"]);
    assert_eq!(status_with(&suite.rest, &sign(KEY_ID, &listed)).await.0, 401);

    for claim in ["iss", "aud"] {
        let mut missing = good.clone();
        missing.as_object_mut().expect("object").remove(claim);
        let (status, problem) = status_with(&suite.rest, &sign(KEY_ID, &missing)).await;
        assert_eq!(
            (status, problem["reason"].as_str()),
            (401, Some("MISSING_CLAIM")),
            "{claim}: {problem}"
        );
    }
    let mut early = good.clone();
    early["nbf"] = json!(now() + 3600);
    let (status, problem) = status_with(&suite.rest, &sign(KEY_ID, &early)).await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (401, Some("TOKEN_NOT_YET_VALID")),
        "{problem}"
    );

    // The same rules over gRPC.
    let mut client = crate::support::grpc_client(&suite.grpc, Some(sign(KEY_ID, &early))).await;
    let status = client
        .list_contacts(crm_proto::crm::contact::v1::ListContactsRequest::default())
        .await
        .expect_err("not yet valid");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_before_is_enforced_with_the_shared_secret() {
    let suite = Suite::start();
    let token =
        hs256(&json!({"sub": "alice", "tenant": "t", "roles": ["rep"], "exp": now() + 7200, "nbf": now() + 3600}));
    let (status, problem) = status_with(&suite.rest, &token).await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (401, Some("TOKEN_NOT_YET_VALID")),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_identity_provider_costs_one_short_fetch_and_shows_in_readiness() {
    let jwks = JwksServer::start().await;
    jwks.set_mode(Mode::Hang);
    let suite = suite_with_jwks(&jwks.url);
    let anonymous = Rest::new(&suite.rest, None);
    let (status, ready) = anonymous.get("/readyz").await;
    assert_eq!(
        (status, ready["signingKeys"].as_str()),
        (503, Some("unavailable")),
        "{ready}"
    );

    // The services say so over gRPC health too: every call would fail.
    assert_eq!(contact_health(&suite.grpc).await, ServingStatus::NotServing);

    // Four requests at once while the provider hangs get 503 together, after at most one
    // short fetch between them, not four long ones in a row.
    let token = sign(KEY_ID, &claims("alice", &["rep"]));
    let before = jwks.fetches();
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (rest, token) = (suite.rest.clone(), token.clone());
        requests.spawn(async move { status_with(&rest, &token).await.0 });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.expect("task"), 503);
    }
    let took = started.elapsed();
    // At most one fetch (3 s) in flight is waited for; four in a row would take 12 s.
    assert!(took < Duration::from_secs(6), "four requests took {took:?}");
    assert!(
        jwks.fetches() - before <= 1,
        "one fetch at most for every waiting request"
    );
    let (status, metrics) = anonymous.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("crm_auth_jwks_fetch_failures_total")),
        "{metrics}"
    );

    // Ready, and serving, once the provider answers.
    jwks.set_mode(Mode::Serve);
    crate::pipeline::eventually(
        "readiness once the provider answers",
        || async { anonymous.get("/readyz").await.1 },
        |ready| ready["status"] == "ready",
    )
    .await;
    assert_eq!(status_with(&suite.rest, &token).await.0, 200);
    assert_eq!(contact_health(&suite.grpc).await, ServingStatus::Serving);
}

/// The gRPC health of the contact service at `grpc` (a public path: no token).
async fn contact_health(grpc: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(grpc.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "crm.contact.v1.ContactService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("status")
}

/// `claims` signed HS256 with the test processes' secret.
fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// An HS256 token for the feed follower, expiring at `exp`.
fn service_token(exp: u64) -> String {
    hs256(&json!({"sub": "pipeline", "tenant": "system", "roles": ["service"], "exp": exp}))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_credential_is_renewed_from_its_file() {
    for postgres in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("feed-token");
        std::fs::write(&token_file, service_token(now() - 3600)).expect("expired token");
        let path = token_file.to_str().expect("path").to_owned();
        let Some(suite) =
            Deployment::start_with(postgres, "feed_credential_file", &[("CRM_SERVICE_TOKEN_FILE", &path)]).await
        else {
            continue;
        };
        let anonymous = Rest::new(suite.rest(), None);
        let ready = crate::pipeline::eventually(
            "readiness naming the refused credential",
            || async { anonymous.get("/readyz").await.1 },
            |ready| ready["feedCredentials"] == "refused",
        )
        .await;
        assert_eq!(ready["status"], "degraded", "{ready}");
        let metrics = reqwest::get(suite.pipeline_metrics())
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("crm_feed_credentials_refused{consumer=\"pipeline<-contact\"} 1"),
            "{metrics}"
        );

        // A merge made meanwhile reaches the pipeline once the file holds a valid token.
        let manager = Rest::as_user(suite.rest(), "renew", "mia", Role::Manager);
        let pipeline = crate::pipeline::pipeline(&manager).await;
        let merged = crate::pipeline::contact(&manager, "Merged", "merged@example.com").await;
        let survivor = crate::pipeline::contact(&manager, "Survivor", "survivor@example.com").await;
        let (status, deal) = manager
            .post(
                "/v1/deals",
                json!({"displayName": "Renewal", "pipeline": pipeline["name"], "contact": merged["name"],
                       "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{deal}");
        let (status, _) = manager
            .post(
                &format!("/v1/{}:merge", survivor["name"].as_str().expect("name")),
                json!({"merged": [merged["name"]]}),
            )
            .await;
        assert_eq!(status, 200);
        std::fs::write(&token_file, service_token(now() + 3600)).expect("renewed token");
        let deal_path = format!("/v1/{}", deal["name"].as_str().expect("deal"));
        crate::pipeline::eventually(
            "the merge reaching the deal after the renewal",
            || async { manager.get(&deal_path).await.1 },
            |d| d["contact"] == survivor["name"],
        )
        .await;
        crate::pipeline::eventually(
            "readiness once the credential is accepted",
            || async { anonymous.get("/readyz").await.1 },
            |ready| ready["status"] == "ready",
        )
        .await;
        suite.stop().await;
    }
}
