//! Audit history, portfolio reassignment and GDPR erase, over REST through the gateway.

use crm_platform::Role;
use serde_json::json;

use crate::support::{Rest, Suite, id_of};

#[tokio::test]
async fn every_change_is_in_the_history() {
    let suite = Suite::start();
    let alice = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);
    let meg = Rest::as_user(&suite.rest, "acme", "meg", Role::Manager);
    let (_, contact) = alice
        .post(
            "/v1/contacts",
            json!({"givenName": "Hist", "familyName": "Ory", "lifecycleStage": "LEAD"}),
        )
        .await;
    let id = id_of(&contact["name"]);
    meg.patch(
        &format!("/v1/contacts/{id}"),
        json!({"lifecycleStage": "CUSTOMER", "title": "CTO"}),
    )
    .await;
    let (status, _) = alice
        .patch(&format!("/v1/contacts/{id}"), json!({"emails": [{"address": "bad"}]}))
        .await;
    assert_eq!(status, 400, "a refused change leaves no history");

    let (status, history) = alice.get(&format!("/v1/contacts/{id}/history")).await;
    assert_eq!(status, 200, "{history}");
    let entries = history["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "CHANGE_ACTION_UPDATED");
    assert_eq!(entries[0]["actor"], "meg");
    assert_eq!(
        entries[0]["changes"],
        json!([
            {"field": "title", "oldValue": null, "newValue": "CTO"},
            {"field": "lifecycle_stage", "oldValue": "lead", "newValue": "customer"}
        ])
    );
    assert_eq!(entries[1]["action"], "CHANGE_ACTION_CREATED");
    assert_eq!(entries[1]["actor"], "alice");

    let (_, page) = alice.get(&format!("/v1/contacts/{id}/history?pageSize=1")).await;
    let token = page["nextPageToken"].as_str().expect("token").to_owned();
    let (_, second) = alice
        .get(&format!("/v1/contacts/{id}/history?pageSize=1&pageToken={token}"))
        .await;
    assert_eq!(second["entries"][0]["action"], "CHANGE_ACTION_CREATED");

    let (_, company) = alice.post("/v1/companies", json!({"displayName": "Audit Co"})).await;
    let (status, company_history) = alice
        .get(&format!("/v1/companies/{}/history", id_of(&company["name"])))
        .await;
    assert_eq!(
        (status, company_history["entries"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    let other = Rest::as_user(&suite.rest, "elsewhere", "eve", Role::Admin);
    assert_eq!(
        other.get(&format!("/v1/contacts/{id}/history")).await.0,
        404,
        "another tenant sees no history"
    );
    assert_eq!(
        alice
            .get("/v1/contacts/0190c0de-0000-7000-8000-000000000000/history")
            .await
            .0,
        404
    );

    assert_eq!(meg.delete(&format!("/v1/contacts/{id}")).await.0, 204);
    let (status, after) = alice.get(&format!("/v1/contacts/{id}/history")).await;
    assert_eq!(status, 200, "the trail outlives the record");
    assert_eq!(after["entries"][0]["action"], "CHANGE_ACTION_DELETED");
}

#[tokio::test]
async fn a_leaving_salespersons_portfolio_moves_in_one_call() {
    let suite = Suite::start();
    let leaver = Rest::as_user(&suite.rest, "acme", "lee", Role::Rep);
    let admin = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let manager = Rest::as_user(&suite.rest, "acme", "meg", Role::Manager);
    for i in 0..5 {
        assert_eq!(
            leaver
                .post("/v1/contacts", json!({"givenName": format!("Client{i}")}))
                .await
                .0,
            201
        );
    }
    for i in 0..2 {
        assert_eq!(
            leaver
                .post("/v1/companies", json!({"displayName": format!("Account{i}")}))
                .await
                .0,
            201
        );
    }
    let (_, kept) = admin.post("/v1/contacts", json!({"givenName": "Not lee's"})).await;

    let body = json!({"fromUser": "lee", "toUsers": ["bob", "dan"]});
    assert_eq!(
        leaver.post("/v1/contacts:reassignOwner", body.clone()).await.0,
        403,
        "reps cannot move portfolios"
    );
    for bad in [
        json!({"fromUser": "lee", "toUsers": []}),
        json!({"fromUser": "lee", "toUsers": ["lee"]}),
        json!({"fromUser": "lee", "toUsers": ["bob", "bob"]}),
        json!({"fromUser": "", "toUsers": ["bob"]}),
        json!({"fromUser": "lee", "toUsers": ["bob"], "everything": true}),
    ] {
        assert_eq!(
            manager.post("/v1/contacts:reassignOwner", bad.clone()).await.0,
            400,
            "{bad}"
        );
    }

    let (status, dry) = manager
        .post(
            "/v1/contacts:reassignOwner",
            json!({"fromUser": "lee", "toUsers": ["bob", "dan"], "dryRun": true}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (
            dry["contacts"].as_str(),
            dry["companies"].as_str(),
            dry["dryRun"].as_bool()
        ),
        (Some("5"), Some("2"), Some(true))
    );
    let (_, still) = admin.get("/v1/contacts?filter=owner%3Dlee").await;
    assert_eq!(
        still["contacts"].as_array().map(Vec::len),
        Some(5),
        "a dry run moves nothing"
    );

    let (status, done) = manager.post("/v1/contacts:reassignOwner", body).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["contacts"], "5");
    assert_eq!(done["companies"], "2");
    assert_eq!(
        done["shares"],
        json!([{"user": "bob", "contacts": "3", "companies": "1"}, {"user": "dan", "contacts": "2", "companies": "1"}])
    );
    for (filter, expected) in [("owner%3Dlee", 0), ("owner%3Dbob", 3), ("owner%3Ddan", 2)] {
        let (_, page) = admin.get(&format!("/v1/contacts?filter={filter}")).await;
        assert_eq!(page["contacts"].as_array().map(Vec::len), Some(expected), "{filter}");
    }
    let (_, companies) = admin.get("/v1/companies?filter=owner%3Dlee").await;
    assert_eq!(companies["companies"].as_array().map(Vec::len), Some(0));
    let (_, unchanged) = admin.get(&format!("/v1/contacts/{}", id_of(&kept["name"]))).await;
    assert_eq!(unchanged["owner"], "ada");

    let (_, moved) = admin.get("/v1/contacts?filter=owner%3Dbob&pageSize=1").await;
    let (_, history) = admin
        .get(&format!(
            "/v1/contacts/{}/history",
            id_of(&moved["contacts"][0]["name"])
        ))
        .await;
    assert_eq!(history["entries"][0]["action"], "CHANGE_ACTION_REASSIGNED");
    assert_eq!(history["entries"][0]["actor"], "meg");
    assert_eq!(
        history["entries"][0]["changes"],
        json!([{"field": "owner", "oldValue": "lee", "newValue": "bob"}])
    );

    let (_, again) = manager
        .post(
            "/v1/contacts:reassignOwner",
            json!({"fromUser": "lee", "toUsers": ["bob"]}),
        )
        .await;
    assert_eq!(
        (again["contacts"].as_str(), again["companies"].as_str()),
        (Some("0"), Some("0")),
        "nothing is left behind"
    );
}

#[tokio::test]
async fn erase_removes_the_person_everywhere() {
    let suite = Suite::start();
    let rep = Rest::as_user(&suite.rest, "acme", "alice", Role::Rep);
    let dpo = Rest::as_user(&suite.rest, "acme", "dpo", Role::Admin);
    let (_, contact) = rep
        .post("/v1/contacts", json!({"givenName": "Zelda", "familyName": "Forgetme", "emails": [{"address": "zelda@private.example"}], "phones": [{"number": "+44 20 7946 0958"}], "attributes": {"secret_code": {"stringValue": "hunter2"}}}))
        .await;
    let id = id_of(&contact["name"]);
    rep.patch(&format!("/v1/contacts/{id}"), json!({"title": "Princess"}))
        .await;
    rep.post(
        &format!("/v1/contacts/{id}/interactions"),
        json!({"type": "NOTE", "occurTime": "2026-11-01T09:00:00Z", "body": "Zelda lives at 7 Hyrule Road"}),
    )
    .await;

    assert_eq!(
        rep.post(&format!("/v1/contacts/{id}:erase"), json!({})).await.0,
        403,
        "reps cannot erase"
    );
    let other = Rest::as_user(&suite.rest, "elsewhere", "eve", Role::Admin);
    assert_eq!(other.post(&format!("/v1/contacts/{id}:erase"), json!({})).await.0, 404);
    assert_eq!(
        dpo.post(&format!("/v1/contacts/{id}:shred"), json!({})).await.0,
        404,
        "unknown custom methods are refused"
    );

    let (status, tombstone) = dpo.post(&format!("/v1/contacts/{id}:erase"), json!({})).await;
    assert_eq!(status, 200, "{tombstone}");
    assert!(tombstone["eraseTime"].is_string());
    assert_eq!(tombstone["name"], contact["name"]);

    let mut everything = String::new();
    for path in [
        format!("/v1/contacts/{id}"),
        format!("/v1/contacts/{id}/interactions"),
        format!("/v1/contacts/{id}/history"),
        "/v1/contacts".to_owned(),
        "/v1/contacts:search?query=zelda".to_owned(),
        "/v1/contacts:search?query=forgetme".to_owned(),
    ] {
        let (status, body) = dpo.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        everything.push_str(&body.to_string());
    }
    for secret in [
        "Zelda",
        "Forgetme",
        "zelda@private",
        "2079460958",
        "hunter2",
        "Hyrule",
        "Princess",
    ] {
        assert!(!everything.contains(secret), "{secret} can still be read: {everything}");
    }
    let (status, problem) = dpo
        .patch(&format!("/v1/contacts/{id}"), json!({"givenName": "Zelda"}))
        .await;
    assert_eq!((status, problem["reason"].as_str()), (412, Some("CONTACT_ERASED")));
    let (status, again) = dpo.post(&format!("/v1/contacts/{id}:erase"), json!({})).await;
    assert_eq!(
        (status, &again["eraseTime"]),
        (200, &tombstone["eraseTime"]),
        "erasing twice is harmless"
    );
    let (_, history) = dpo.get(&format!("/v1/contacts/{id}/history")).await;
    assert_eq!(history["entries"][0]["action"], "CHANGE_ACTION_ERASED");
    assert_eq!(history["entries"][0]["actor"], "dpo");
}

#[tokio::test]
async fn consent_withdrawal_is_recorded_without_erasing() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let (_, contact) = api
        .post("/v1/contacts", json!({"givenName": "Olive", "emails": [{"address": "olive@example.com"}], "consent": {"email": {"status": "OPTED_IN", "source": "web-form"}}}))
        .await;
    let id = id_of(&contact["name"]);
    let (status, withdrawn) = api
        .patch(&format!("/v1/contacts/{id}"), json!({"consent": {"email": {"status": "OPTED_OUT", "updateTime": "2026-11-20T08:00:00Z", "source": "unsubscribe-link"}}}))
        .await;
    assert_eq!(status, 200, "{withdrawn}");
    assert_eq!(withdrawn["consent"]["email"]["status"], "CONSENT_STATUS_OPTED_OUT");
    assert_eq!(withdrawn["consent"]["email"]["updateTime"], "2026-11-20T08:00:00Z");
    assert_eq!(
        (withdrawn["givenName"].as_str(), withdrawn["eraseTime"].is_null()),
        (Some("Olive"), true),
        "nothing is erased"
    );
    let (_, history) = api.get(&format!("/v1/contacts/{id}/history")).await;
    let change = &history["entries"][0]["changes"][0];
    assert_eq!(change["field"], "consent");
    assert_eq!(change["oldValue"]["email"]["status"], "opted_in");
    assert_eq!(change["newValue"]["email"]["status"], "opted_out");
    assert_eq!(change["newValue"]["email"]["source"], "unsubscribe-link");

    // A change to one channel leaves the others as they were.
    let (status, sms) = api
        .patch(
            &format!("/v1/contacts/{id}"),
            json!({"consent": {"sms": {"status": "OPTED_IN", "source": "shop"}}}),
        )
        .await;
    assert_eq!(status, 200, "{sms}");
    assert_eq!(sms["consent"]["sms"]["status"], "CONSENT_STATUS_OPTED_IN");
    assert_eq!(sms["consent"]["email"]["status"], "CONSENT_STATUS_OPTED_OUT", "{sms}");
}
