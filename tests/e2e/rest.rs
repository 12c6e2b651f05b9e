//! The contact lifecycle over REST through the gateway.

use crm_platform::Role;
use serde_json::json;

use crate::support::{Rest, Suite, id_of};

#[tokio::test]
async fn contact_lifecycle_over_rest() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);

    let (status, company) = api
        .post(
            "/v1/companies",
            json!({"displayName": "Initech", "domain": "Initech.example", "sizeBand": "SIZE_BAND_MEDIUM"}),
        )
        .await;
    assert_eq!(status, 201, "{company}");
    assert_eq!(company["domain"], "initech.example");
    assert_eq!(company["owner"], "alice");

    let created = api
        .request(reqwest::Method::POST, "/v1/contacts")
        .json(&json!({
            "givenName": "Peter",
            "familyName": "Gibbons",
            "emails": [{"address": "Peter.Gibbons@Initech.example"}],
            "phones": [{"number": "+1 (415) 555-2671"}],
            "company": company["name"],
            "lifecycleStage": "PROSPECT",
            "source": "SOURCE_CHANNEL_REFERRAL",
            "tags": ["TPS", "vip"],
            "attributes": {"seats": {"intValue": "250"}, "renewal": {"timeValue": "2027-01-31T00:00:00Z"}},
            "consent": {"email": {"status": "CONSENT_STATUS_OPTED_IN", "source": "web-form"}}
        }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let etag = created.headers()["etag"].to_str().expect("etag").to_owned();
    let location = created.headers()["location"].to_str().expect("location").to_owned();
    let contact: serde_json::Value = created.json().await.expect("json");
    assert_eq!(etag, "\"1\"");
    assert_eq!(location, format!("/v1/{}", contact["name"].as_str().expect("name")));
    assert_eq!(
        contact["emails"][0],
        json!({"address": "Peter.Gibbons@initech.example", "primary": true})
    );
    assert_eq!(contact["phones"][0]["number"], "+14155552671");
    assert_eq!(contact["lifecycleStage"], "LIFECYCLE_STAGE_PROSPECT");
    assert_eq!(contact["tags"], json!(["tps", "vip"]));
    assert_eq!(contact["attributes"]["seats"]["intValue"], "250");
    assert_eq!(contact["consent"]["email"]["status"], "CONSENT_STATUS_OPTED_IN");
    let id = id_of(&contact["name"]);

    let (status, fetched) = api.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!((status, &fetched), (200, &contact));

    // A conditional update with the etag just read succeeds once; a replay is refused.
    let patch = |etag: &'static str| {
        api.request(reqwest::Method::PATCH, &format!("/v1/contacts/{id}"))
            .header("if-match", etag)
            .json(&json!({"title": "Programmer", "lifecycleStage": "CUSTOMER"}))
            .send()
    };
    let first = patch("\"1\"").await.expect("patch");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["etag"], "\"2\"");
    let updated: serde_json::Value = first.json().await.expect("json");
    assert_eq!(updated["title"], "Programmer");
    assert_eq!(
        updated["familyName"], "Gibbons",
        "fields outside the body are untouched"
    );
    assert_eq!(patch("\"1\"").await.expect("patch").status(), 412);
    // Strong comparison (RFC 9110): a weak tag never matches, and a well-formed tag this
    // service never issued is a mismatch like any other; only a malformed one is a 400.
    assert_eq!(patch("W/\"2\"").await.expect("patch").status(), 412);
    assert_eq!(patch("\"not-ours\"").await.expect("patch").status(), 412);
    assert_eq!(patch("\"2").await.expect("patch").status(), 400);

    // An explicit update mask clears a field the body leaves out.
    let (status, cleared) = api
        .patch(&format!("/v1/contacts/{id}?updateMask=title"), json!({}))
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["title"], "");
    // An update mask may name fields by either spelling, with spaces after the commas.
    let (status, renamed) = api
        .patch(
            &format!("/v1/contacts/{id}?updateMask=given_name,%20familyName"),
            json!({"givenName": "Peter", "familyName": "Gibbons"}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (renamed["givenName"].as_str(), renamed["familyName"].as_str()),
        (Some("Peter"), Some("Gibbons"))
    );

    let (status, list) = api
        .get("/v1/contacts?filter=lifecycle_stage%20%3D%20CUSTOMER%20AND%20tag%20%3D%20tps")
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["contacts"].as_array().map(Vec::len), Some(1));
    let (_, found) = api.get("/v1/contacts:search?query=gibb%20initech").await;
    assert_eq!(found["contacts"][0]["name"], contact["name"]);

    let (status, call) = api
        .post(&format!("/v1/contacts/{id}/interactions"), json!({"type": "INTERACTION_TYPE_CALL", "direction": "INBOUND", "channel": "PHONE", "occurTime": "2026-11-02T10:00:00Z", "duration": "95.5s", "subject": "TPS reports", "outcome": "connected"}))
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["company"], company["name"]);
    assert_eq!(
        call["duration"], "95.500s",
        "proto3 JSON: 0, 3, 6 or 9 fractional digits"
    );
    let (status, note) = api
        .post(
            &format!("/v1/contacts/{id}/interactions"),
            json!({"type": "NOTE", "occurTime": "2026-11-03T10:00:00Z", "body": "line one\nline two"}),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["direction"], "DIRECTION_INTERNAL");
    let (_, timeline) = api.get(&format!("/v1/contacts/{id}/interactions")).await;
    assert_eq!(timeline["interactions"][0]["name"], note["name"], "newest first");
    assert_eq!(timeline["interactions"][1]["name"], call["name"]);
    let company_id = id_of(&company["name"]);
    let (_, company_timeline) = api
        .get(&format!("/v1/companies/{company_id}/interactions?pageSize=1"))
        .await;
    assert_eq!(company_timeline["interactions"].as_array().map(Vec::len), Some(1));
    assert!(
        !company_timeline["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    let (status, _) = api.delete(&format!("/v1/companies/{company_id}")).await;
    assert_eq!(status, 204);
    let (_, unlinked) = api.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(unlinked["company"], "");

    let (status, _) = api.delete(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, 204);
    let (status, gone) = api.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!((status, gone["reason"].as_str()), (404, Some("NOT_FOUND")));
    let (status, _) = api.get(&format!("/v1/contacts/{id}/interactions")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_result() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let create = |body: serde_json::Value| {
        api.request(reqwest::Method::POST, "/v1/contacts")
            .header("idempotency-key", "import-42")
            .json(&body)
            .send()
    };
    let first: serde_json::Value = create(json!({"givenName": "Once"}))
        .await
        .expect("first")
        .json()
        .await
        .expect("json");
    let again = create(json!({"givenName": "Once"})).await.expect("retry");
    assert!(again.status().is_success());
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(again["name"], first["name"]);
    let different = create(json!({"givenName": "Twice"})).await.expect("reuse");
    assert_eq!(different.status(), 400);
    let (_, list) = api.get("/v1/contacts").await;
    assert_eq!(
        list["contacts"].as_array().map(Vec::len),
        Some(1),
        "a retry never makes a second record"
    );
}

#[tokio::test]
async fn paging_visits_every_row_once() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let mut created = std::collections::HashSet::new();
    for i in 0..120 {
        let (status, contact) = api
            .post(
                "/v1/contacts",
                json!({"givenName": format!("P{i}"), "familyName": format!("F{}", i % 9)}),
            )
            .await;
        assert_eq!(status, 201);
        created.insert(contact["name"].as_str().expect("name").to_owned());
    }
    for order in ["", "family_name", "given_name%20desc", "update_time"] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (status, page) = api
                .get(&format!("/v1/contacts?pageSize=25&orderBy={order}&pageToken={token}"))
                .await;
            assert_eq!(status, 200, "{page}");
            let names: Vec<String> = page["contacts"]
                .as_array()
                .expect("contacts")
                .iter()
                .map(|c| c["name"].as_str().expect("name").to_owned())
                .collect();
            assert!(names.len() <= 25);
            seen.extend(names);
            token = page["nextPageToken"].as_str().expect("token").to_owned();
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(seen.len(), 120, "order {order}: no row repeated");
        assert_eq!(
            seen.into_iter().collect::<std::collections::HashSet<_>>(),
            created,
            "order {order}: no row missed"
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_and_changes_nothing() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let (_, seed) = api
        .post(
            "/v1/contacts",
            json!({"givenName": "Seed", "emails": [{"address": "seed@example.com"}]}),
        )
        .await;
    let seed_id = id_of(&seed["name"]);

    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"givenName": "X", "emails": [{"address": "not-an-email"}]}),
            "contact.emails[0].address",
        ),
        (
            json!({"givenName": "X", "phones": [{"number": "555-1234"}]}),
            "contact.phones[0].number",
        ),
        (
            json!({"givenName": "X", "lifecycleStage": "BOSS"}),
            "contact.lifecycleStage",
        ),
        (
            json!({"givenName": "X", "favouriteColour": "red"}),
            "contact.favouriteColour",
        ),
        (
            json!({"givenName": "X", "etag": "1", "createTime": "2020-01-01T00:00:00Z"}),
            "contact.etag",
        ),
        (
            json!({"givenName": "X", "company": "companies/not-a-uuid"}),
            "contact.company",
        ),
        (
            json!({"givenName": "X", "company": "companies/0190c0de-0000-7000-8000-000000000000"}),
            "company",
        ),
        (
            json!({"givenName": "X", "tags": ["no spaces allowed"]}),
            "contact.tags[0]",
        ),
        (
            json!({"givenName": "X", "attributes": {"BadKey": {"stringValue": "v"}}}),
            "contact.attributes[BadKey]",
        ),
        (
            json!({"givenName": "X", "attributes": {"k": {"stringValue": "v", "intValue": 1}}}),
            "contact.attributes[k]",
        ),
        (json!({}), "contact.givenName"),
    ];
    for (body, field) in cases {
        let (status, problem) = api.post("/v1/contacts", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {problem}");
        let fields: Vec<&str> = problem["violations"]
            .as_array()
            .expect("violations")
            .iter()
            .filter_map(|v| v["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: expected a violation on {field}, got {problem}"
        );
    }
    for query in [
        "pageSize=-1",
        "pageToken=garbage",
        "filter=colour%3Dred",
        "filter=owner",
        "orderBy=shoe_size",
        "pageSize=abc",
        "bogus=1",
    ] {
        let (status, problem) = api.get(&format!("/v1/contacts?{query}")).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert!(problem["violations"][0]["field"].is_string(), "{query}: {problem}");
    }
    let (status, _) = api
        .patch(
            &format!("/v1/contacts/{seed_id}"),
            json!({"emails": [{"address": "@@"}]}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, problem) = api
        .patch(&format!("/v1/contacts/{seed_id}?updateMask=shoe_size"), json!({}))
        .await;
    assert_eq!(status, 400, "{problem}");
    // The body's name is output only, so ignored: the path names the contact, which a body
    // holding nothing else leaves as it is (AIP-134).
    let (status, same) = api
        .patch(&format!("/v1/contacts/{seed_id}"), json!({"name": "contacts/x"}))
        .await;
    assert_eq!((status, same["name"].as_str()), (200, seed["name"].as_str()), "{same}");

    let big = "x".repeat(2 * 1024 * 1024);
    let (status, problem) = api.post("/v1/contacts", json!({"givenName": big})).await;
    assert_eq!((status, problem["reason"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));

    let (_, list) = api.get("/v1/contacts").await;
    assert_eq!(
        list["contacts"].as_array().map(Vec::len),
        Some(1),
        "nothing was written"
    );
    let (_, seed_now) = api.get(&format!("/v1/contacts/{seed_id}")).await;
    assert_eq!(seed_now, seed, "the refused updates changed nothing");
    // An output only field is ignored (AIP-203): a client may send back a resource as it read
    // it, and the server's own value stands.
    let (status, created) = api
        .post(
            "/v1/contacts",
            json!({"givenName": "Echo", "createTime": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_ne!(created["createTime"], "2020-01-01T00:00:00Z", "{created}");
}

#[tokio::test]
async fn operations_endpoints_and_openapi() {
    let suite = Suite::start();
    let anonymous = Rest::new(&suite.rest, None);
    assert_eq!(anonymous.get("/healthz").await.0, 200);
    let (status, ready) = anonymous.get("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, doc) = anonymous.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/v1/contacts",
        "/v1/contacts/{id}",
        "/v1/contacts:search",
        "/v1/contacts/{id}/interactions",
        "/v1/contacts/{id}/interactions/{interaction}",
        "/v1/companies",
        "/v1/companies/{id}",
        "/v1/companies/{id}/interactions",
        "/v1/contacts/{id}/history",
        "/v1/companies/{id}/history",
        "/v1/contacts:reassignOwner",
        "/v1/contacts/{id}:erase",
        "/v1/contacts:findDuplicates",
        "/v1/contacts/{id}:merge",
        "/v1/contacts:import",
        "/v1/contacts:export",
        "/v1/companies:findDuplicates",
        "/v1/companies/{id}:merge",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["Contact"]["properties"]["lifecycleStage"].is_object());
    let (status, problem) = anonymous.get("/v1/nothing-here").await;
    assert_eq!((status, problem["reason"].as_str()), (404, Some("ROUTE_NOT_FOUND")));

    let response = anonymous
        .request(reqwest::Method::GET, "/healthz")
        .header("x-request-id", "trace-me-1")
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.headers()["x-request-id"], "trace-me-1");
    let metrics = anonymous
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("crm_http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let suite = Suite::start_with(&[("CRM_CORS_ORIGINS", "https://app.example")]);
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{}/v1/contacts", suite.rest))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("preflight");
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .expect("methods")
        .to_owned();
    assert!(methods.contains("POST") && methods.contains("PATCH"), "{methods}");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "an unlisted origin is not allowed"
    );
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let created = api
        .request(reqwest::Method::POST, "/v1/contacts")
        .header("origin", "https://app.example")
        .json(&json!({"givenName": "Cors"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.headers()["access-control-allow-origin"], "https://app.example");
    assert!(
        created.headers()["access-control-expose-headers"]
            .to_str()
            .expect("expose")
            .contains("etag")
    );
}

/// Every transcoded path answers a method it does not take with 405 and its own `Allow` (a
/// custom verb's path is not its resource's), an unknown verb is a 404, and enum values are
/// accepted by their short name on every service's routes.
#[tokio::test]
async fn transcoded_paths_answer_only_their_methods_and_take_short_enums_everywhere() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let (status, contact) = api.post("/v1/contacts", json!({"givenName": "Allow"})).await;
    assert_eq!(status, 201, "{contact}");
    let id = id_of(&contact["name"]);
    let allow = |response: &reqwest::Response| {
        response
            .headers()
            .get(reqwest::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    let put = api
        .request(reqwest::Method::PUT, &format!("/v1/contacts/{id}"))
        .json(&json!({"givenName": "Changed"}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        (put.status().as_u16(), allow(&put).as_str()),
        (405, "DELETE, GET, HEAD, PATCH")
    );
    let problem: serde_json::Value = put.json().await.expect("problem");
    assert_eq!(problem["reason"], "METHOD_NOT_ALLOWED");
    let get_erase = api
        .request(reqwest::Method::GET, &format!("/v1/contacts/{id}:erase"))
        .send()
        .await
        .expect("get");
    assert_eq!((get_erase.status().as_u16(), allow(&get_erase).as_str()), (405, "POST"));
    let (status, problem) = api.post(&format!("/v1/contacts/{id}:nope"), json!({})).await;
    assert_eq!((status, problem["reason"].as_str()), (404, Some("ROUTE_NOT_FOUND")));
    let (_, unchanged) = api.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(unchanged["givenName"], "Allow", "the refused methods changed nothing");

    // The pipeline's enums by their short names, as the contact service's.
    let (status, task) = api
        .post("/v1/tasks", json!({"title": "Call back", "priority": "HIGH"}))
        .await;
    assert_eq!(
        (status, task["priority"].as_str()),
        (201, Some("TASK_PRIORITY_HIGH")),
        "{task}"
    );
    let (status, problem) = api
        .post("/v1/tasks", json!({"title": "Call back", "priority": "UNSPECIFIED"}))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["violations"][0]["field"], "task.priority");
}
