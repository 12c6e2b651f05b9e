//! What a black-box attack on the running suite found, each case through a real socket on
//! `crm serve` (SQLite) and, where the backend matters, on the PostgreSQL roles: oversized
//! lists, roles checked before bodies, violations that fit a response, money that cannot
//! overflow a sum, service tokens kept off the public API, one ownership rule, idempotency
//! keys per caller, erased data gone from the embedded files, and the response hygiene.

use crm_platform::Role;
use crm_proto::crm::contact::v1 as contact;
use serde_json::{Value, json};
use tonic_types::StatusExt;

use crate::support::{BACKENDS, Deployment, Rest, Suite, grpc_client, token, violation_fields};

#[tokio::test(flavor = "multi_thread")]
async fn oversized_lists_are_counted_first_and_roles_checked_before_bodies() {
    for postgres in BACKENDS {
        let Some(suite) = Deployment::start(postgres, "oversized_lists").await else {
            continue;
        };
        let rep = Rest::as_user(suite.rest(), "lists", "rita", Role::Rep);

        // 20,000 addresses that are not addresses: one violation for the list, not 20,000
        // (which did not fit in a response and came back as a 500).
        let junk: Vec<Value> = (0..20_000)
            .map(|i| json!({"address": format!("not-an-email-{i}")}))
            .collect();
        let body = json!({"givenName": "Big", "emails": junk});
        let (status, problem) = rep.post("/v1/contacts", body.clone()).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(violation_fields(&problem), ["contact.emails"], "{problem}");
        assert!(
            problem["violations"][0]["description"]
                .as_str()
                .is_some_and(|d| d.contains("at most 20")),
            "{problem}"
        );

        // A viewer's or a service token's write is refused on its role alone.
        let viewer = Rest::as_user(suite.rest(), "lists", "vera", Role::Viewer);
        let (status, problem) = viewer.post("/v1/contacts", body.clone()).await;
        assert_eq!(
            (status, problem["reason"].as_str()),
            (403, Some("PERMISSION_DENIED")),
            "{problem}"
        );
        let (status, _) = viewer.post("/v1/deals", json!({"anything": ["at", "all"]})).await;
        assert_eq!(status, 403, "a viewer's body is not even parsed");
        let mut service = grpc_client(suite.contact_grpc(), Some(token("lists", "svc", Role::Service))).await;
        let oversized = contact::Contact {
            given_name: "Big".into(),
            emails: (0..20_000)
                .map(|i| contact::EmailAddress {
                    address: format!("junk-{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let status = service
            .create_contact(contact::CreateContactRequest {
                contact: Some(oversized.clone()),
                ..Default::default()
            })
            .await
            .expect_err("a service token does not write");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // 100 invalid tags (within the limit): 100 violations, of which the first 20 are
        // carried with a count of the rest.
        let tags: Vec<String> = (0..100).map(|i| format!("bad tag {i} {}", "!".repeat(300))).collect();
        let (status, problem) = rep
            .post("/v1/contacts", json!({"givenName": "Tagged", "tags": tags}))
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["violations"].as_array().map(Vec::len), Some(20), "{problem}");
        assert_eq!(problem["omittedViolations"], 80, "{problem}");

        // Over gRPC, 5,000 copies of one address: a whole INVALID_ARGUMENT with its fields,
        // not a protocol error.
        let mut client = grpc_client(suite.contact_grpc(), Some(token("lists", "rita", Role::Rep))).await;
        let copies = contact::Contact {
            given_name: "Copies".into(),
            emails: vec![
                contact::EmailAddress {
                    address: "same@example.com".into(),
                    ..Default::default()
                };
                5_000
            ],
            ..Default::default()
        };
        let status = client
            .create_contact(contact::CreateContactRequest {
                contact: Some(copies),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["contact.emails"]);

        // Nothing was created by any of it.
        let (status, listed) = rep.get("/v1/contacts").await;
        assert_eq!(
            (status, listed["contacts"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{listed}"
        );
        suite.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn amounts_are_bounded_and_board_totals_exact() {
    const MAX: i64 = 1_000_000_000_000_000;
    for postgres in BACKENDS {
        let Some(suite) = Deployment::start(postgres, "bounded_money").await else {
            continue;
        };
        let manager = Rest::as_user(suite.rest(), "money", "mia", Role::Manager);
        let rep = Rest::as_user(suite.rest(), "money", "rex", Role::Rep);
        let pipeline = crate::pipeline::pipeline(&manager).await;
        let deal = |amount: String| {
            json!({"displayName": "Big", "pipeline": pipeline["name"],
                   "amount": {"amountMinor": amount, "currencyCode": "EUR"}})
        };
        let (status, problem) = rep.post("/v1/deals", deal(i64::MAX.to_string())).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(violation_fields(&problem), ["deal.amount.amountMinor"], "{problem}");
        let (status, problem) = rep.post("/v1/deals", deal((MAX + 1).to_string())).await;
        assert_eq!(status, 400, "{problem}");

        // Deals at the maximum are accepted and the board adds them up exactly.
        let amounts = [MAX, MAX, MAX, 7];
        for amount in amounts {
            let (status, created) = rep.post("/v1/deals", deal(amount.to_string())).await;
            assert_eq!(status, 201, "{created}");
        }
        let expected: i128 = amounts.iter().map(|a| i128::from(*a)).sum();
        let board_path = format!("/v1/{}/board", pipeline["name"].as_str().expect("name"));
        let (status, board) = manager.get(&board_path).await;
        assert_eq!(status, 200, "{board}");
        let first = &board["columns"][0];
        assert_eq!(first["totals"][0]["amountMinor"], expected.to_string(), "{board}");

        // A line item cannot take a deal past the maximum either.
        let (status, product) = manager
            .post(
                "/v1/products",
                json!({"sku": "BIG-1", "displayName": "Big", "listPrice": {"amountMinor": MAX.to_string(), "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        let (status, problem) = rep
            .post(
                "/v1/deals",
                json!({"displayName": "Lines", "pipeline": pipeline["name"],
                       "lineItems": [{"product": product["name"], "quantity": "2"}]}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(violation_fields(&problem), ["deal.lineItems"], "{problem}");
        let (status, after) = manager.get(&board_path).await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(after, board, "the refused deal changed nothing");
        suite.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_refuses_service_tokens() {
    let suite = Suite::start();
    let service = Rest::as_user(&suite.rest, "acme", "svc", Role::Service);
    for path in ["/v1/events:stream?after=0", "/v1/contacts", "/v1/deals"] {
        let (status, problem) = service.get(path).await;
        assert_eq!(status, 403, "{path}: {problem}");
    }
    let (status, _) = service.post("/v1/contacts", json!({"givenName": "X"})).await;
    assert_eq!(status, 403);
    // `crm token` mints one only when asked for it explicitly.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(["token", "--tenant", "acme", "--user", "svc", "--role", "service"])
        .env("CRM_JWT_SECRET", crate::support::SECRET)
        .output()
        .expect("crm token");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--internal-service-token"));
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .args([
            "token",
            "--tenant",
            "acme",
            "--user",
            "svc",
            "--role",
            "service",
            "--internal-service-token",
        ])
        .env("CRM_JWT_SECRET", crate::support::SECRET)
        .output()
        .expect("crm token");
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn who_owns_or_is_assigned_follows_one_rule() {
    for postgres in BACKENDS {
        let Some(suite) = Deployment::start(postgres, "one_owner_rule").await else {
            continue;
        };
        let rep = Rest::as_user(suite.rest(), "owners", "rita", Role::Rep);
        let manager = Rest::as_user(suite.rest(), "owners", "mia", Role::Manager);
        let (status, problem) = rep
            .post(
                "/v1/tasks",
                json!({"title": "Call", "assignee": "bob", "dueTime": "2030-01-01T09:00:00Z"}),
            )
            .await;
        assert_eq!(status, 403, "{problem}");
        let (status, task) = rep
            .post("/v1/tasks", json!({"title": "Call", "dueTime": "2030-01-01T09:00:00Z"}))
            .await;
        assert_eq!(status, 201, "{task}");
        let path = format!("/v1/{}", task["name"].as_str().expect("task"));
        let (status, problem) = rep.patch(&path, json!({"assignee": "bob"})).await;
        assert_eq!(status, 403, "a rep hands a task to someone else: {problem}");
        assert_eq!(rep.get(&path).await.1["assignee"], "rita", "nothing changed");
        let (status, moved) = manager.patch(&path, json!({"assignee": "bob"})).await;
        assert_eq!((status, moved["assignee"].as_str()), (200, Some("bob")), "{moved}");

        // Contacts: a rep can neither create for nor give away to another owner.
        let (status, _) = rep
            .post("/v1/contacts", json!({"givenName": "X", "owner": "bob"}))
            .await;
        assert_eq!(status, 403);
        let (status, mine) = rep.post("/v1/contacts", json!({"givenName": "Mine"})).await;
        assert_eq!(status, 201, "{mine}");
        let contact_path = format!("/v1/{}", mine["name"].as_str().expect("name"));
        let (status, _) = rep.patch(&contact_path, json!({"owner": "bob"})).await;
        assert_eq!(status, 403);
        suite.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_belong_to_the_caller() {
    for postgres in BACKENDS {
        let Some(suite) = Deployment::start(postgres, "keys_per_caller").await else {
            continue;
        };
        let alice = Rest::as_user(suite.rest(), "keys", "alice", Role::Rep);
        let bob = Rest::as_user(suite.rest(), "keys", "bob", Role::Rep);
        let body = json!({"givenName": "Secret", "familyName": "Lead", "title": "Alice's find"});
        let (status, first) = create_with_key(&alice, "/v1/contacts", &body).await;
        assert_eq!(status, 201, "{first}");
        let (_, again) = create_with_key(&alice, "/v1/contacts", &body).await;
        assert_eq!(first["name"], again["name"], "alice's retry returns her contact");
        let (status, bobs) = create_with_key(&bob, "/v1/contacts", &body).await;
        assert_eq!(status, 201, "{bobs}");
        assert_ne!(bobs["name"], first["name"], "bob's request with alice's key is his own");
        assert_eq!(bobs["owner"], "bob");

        // The pipeline's creates too.
        let lead = json!({"title": "Pro plan"});
        let (_, a) = create_with_key(&alice, "/v1/leads", &lead).await;
        let (_, b) = create_with_key(&bob, "/v1/leads", &lead).await;
        assert_ne!(a["name"], b["name"], "{a} {b}");
        assert_eq!(b["owner"], "bob");
        suite.stop().await;
    }
}

/// POSTs `body` with the same `Idempotency-Key` every time.
async fn create_with_key(api: &Rest, path: &str, body: &Value) -> (u16, Value) {
    let response = api
        .request(reqwest::Method::POST, path)
        .header("Idempotency-Key", "signup-7")
        .json(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erase_leaves_no_copy_in_the_embedded_files() {
    use std::os::unix::fs::PermissionsExt;
    let suite = Suite::start();
    let admin = Rest::as_user(&suite.rest, "gdpr", "ada", Role::Admin);
    let marker = "Zyxwvutsrqp";
    let email = "zyxwvutsrqp@erase-me.example";
    let (status, person) = admin
        .post(
            "/v1/contacts",
            json!({"givenName": marker, "familyName": "Erasable", "emails": [{"address": email}],
                   "phones": [{"number": "+44 20 7946 0123"}]}),
        )
        .await;
    assert_eq!(status, 201, "{person}");
    let name = person["name"].as_str().expect("name").to_owned();
    let (status, updated) = admin
        .patch(&format!("/v1/{name}"), json!({"title": format!("{marker} the second")}))
        .await;
    assert_eq!(status, 200, "{updated}");
    let (status, lead) = admin
        .post(
            "/v1/leads",
            json!({"title": format!("{marker} wants a demo"), "contact": name}),
        )
        .await;
    assert_eq!(status, 201, "{lead}");
    let (status, _) = admin.post(&format!("/v1/{name}:erase"), json!({})).await;
    assert_eq!(status, 200);
    let lead_path = format!("/v1/{}", lead["name"].as_str().expect("lead"));
    crate::pipeline::eventually(
        "the erase reaching the lead",
        || async { admin.get(&lead_path).await.1 },
        |l| l["contact"] == "",
    )
    .await;

    // The pipeline truncates its log just after it commits the erase: scan until then.
    let needles = [
        marker.as_bytes().to_vec(),
        marker.to_lowercase().into_bytes(),
        b"erase-me.example".to_vec(),
    ];
    let holding = |file: &std::path::Path| {
        let bytes = std::fs::read(file).expect("read");
        needles
            .iter()
            .filter(|needle| bytes.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|needle| format!("{} holds `{}`", file.display(), String::from_utf8_lossy(needle)))
            .collect::<Vec<_>>()
    };
    let data = suite.data.path();
    let leftovers = crate::pipeline::eventually(
        "no copy of the erased values in the data files",
        || async { files_under(data).iter().flat_map(|f| holding(f)).collect::<Vec<_>>() },
        Vec::is_empty,
    )
    .await;
    assert_eq!(leftovers, Vec::<String>::new());
    let files = files_under(data);
    assert!(files.iter().any(|f| f.ends_with("contact.db")), "{files:?}");
    for file in &files {
        let mode = std::fs::metadata(file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_not_cached_or_sniffed_and_speak_the_clients_language() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "hygiene", "hal", Role::Admin);
    let response = api
        .request(reqwest::Method::GET, "/v1/deals")
        .send()
        .await
        .expect("send");
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["deals"], json!([]), "an empty list is an empty array: {body}");
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    assert_eq!(
        headers.get("x-content-type-options").and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let (status, tasks) = api.get("/v1/tasks").await;
    assert_eq!((status, &tasks["tasks"]), (200, &json!([])));
    let problem = api
        .request(reqwest::Method::GET, "/v1/nowhere")
        .send()
        .await
        .expect("send");
    assert_eq!(
        problem.headers().get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );

    let (status, problem) = api.post("/v1/contacts", json!({"givenName": "X", "emails": [5]})).await;
    assert_eq!(status, 400, "{problem}");
    let text = problem.to_string();
    assert!(!text.contains("Dto") && !text.contains("struct "), "{text}");
    assert!(text.contains("JSON object"), "{text}");
}
