//! Duplicate detection on create, FindDuplicates and MergeContacts, over REST.

use crm_platform::Role;
use serde_json::json;

use crate::support::{Rest, Suite, id_of};

#[tokio::test]
async fn duplicates_are_caught_found_and_merged() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Manager);
    let (_, company) = api.post("/v1/companies", json!({"displayName": "Initech"})).await;
    let (status, first) = api
        .post("/v1/contacts", json!({"givenName": "Jonathan", "familyName": "Smith", "emails": [{"address": "jon.smith@initech.example"}], "company": company["name"], "tags": ["a"]}))
        .await;
    assert_eq!(status, 201, "{first}");

    // The same address in other case is a conflict naming the existing contact.
    let same = json!({"givenName": "J.", "familyName": "Smith", "emails": [{"address": "Jon.Smith@INITECH.example"}], "title": "Engineer", "tags": ["b"]});
    let (status, problem) = api.post("/v1/contacts", same.clone()).await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (409, Some("DUPLICATE_EMAIL")),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(first["name"].as_str().expect("name"))
    );
    let (_, listed) = api.get("/v1/contacts").await;
    assert_eq!(
        listed["contacts"].as_array().map(Vec::len),
        Some(1),
        "the refused create wrote nothing"
    );

    // Created anyway when asked; the response links to the likely duplicates.
    let forced = api
        .request(reqwest::Method::POST, "/v1/contacts?allowDuplicate=true")
        .json(&same)
        .send()
        .await
        .expect("create");
    assert_eq!(forced.status(), 201);
    let link = forced
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(link.contains("rel=\"duplicates\""), "{link}");
    let second: serde_json::Value = forced.json().await.expect("json");
    let (_, third) = api
        .post("/v1/contacts", json!({"givenName": "Jonathon", "familyName": "Smith", "emails": [{"address": "jsmith@home.example"}], "company": company["name"]}))
        .await;
    let (_, stranger) = api
        .post(
            "/v1/contacts",
            json!({"givenName": "Maria", "familyName": "Garcia", "emails": [{"address": "maria@else.example"}]}),
        )
        .await;

    let (status, page) = api.get("/v1/contacts:findDuplicates").await;
    assert_eq!(status, 200, "{page}");
    let groups = page["groups"].as_array().expect("groups");
    let names = |v: &serde_json::Value| v["name"].as_str().expect("name").to_owned();
    let by_email = groups
        .iter()
        .find(|g| {
            g["reasons"]
                .as_array()
                .is_some_and(|r| r.contains(&json!("MATCH_REASON_EMAIL")))
        })
        .expect("email group");
    let members: Vec<&str> = by_email["contacts"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(
        members.contains(&names(&first).as_str()) && members.contains(&names(&second).as_str()),
        "{by_email}"
    );
    assert!(by_email["score"].as_f64().unwrap_or_default() > 0.9);
    assert!(
        groups.iter().any(|g| g["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("MATCH_REASON_NAME_AND_COMPANY")))),
        "{page}"
    );
    assert!(
        !page.to_string().contains(&names(&stranger)),
        "unrelated contacts are not grouped"
    );

    let (_, candidates) = api
        .get(&format!("/v1/contacts:findDuplicates?contact={}", names(&first)))
        .await;
    assert_eq!(candidates["groups"].as_array().map(Vec::len), Some(2), "{candidates}");

    let (_, call) = api
        .post(
            &format!("/v1/contacts/{}/interactions", id_of(&second["name"])),
            json!({"type": "CALL", "occurTime": "2026-11-01T09:00:00Z", "subject": "on the second record"}),
        )
        .await;

    // Merge both into the first, taking the title from the second.
    let survivor = id_of(&first["name"]);
    let body = json!({"merged": [second["name"], third["name"]], "fieldSources": {"title": second["name"]}});
    let (status, merged) = api.post(&format!("/v1/contacts/{survivor}:merge"), body.clone()).await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["name"], first["name"]);
    assert_eq!(merged["title"], "Engineer", "the caller's choice");
    assert_eq!(merged["givenName"], "Jonathon", "most recent non-empty");
    let emails: Vec<&str> = merged["emails"]
        .as_array()
        .expect("emails")
        .iter()
        .filter_map(|e| e["address"].as_str())
        .collect();
    assert_eq!(
        emails,
        ["jon.smith@initech.example", "jsmith@home.example"],
        "united, no duplicates"
    );
    assert_eq!(merged["tags"], json!(["a", "b"]));

    let (status, resolved) = api.get(&format!("/v1/contacts/{}", id_of(&second["name"]))).await;
    assert_eq!(
        (status, &resolved["name"]),
        (200, &first["name"]),
        "a merged id resolves to its survivor"
    );
    let (_, timeline) = api.get(&format!("/v1/contacts/{survivor}/interactions")).await;
    assert_eq!(
        timeline["interactions"][0]["subject"], call["subject"],
        "interactions moved"
    );
    let (_, listed) = api.get("/v1/contacts").await;
    let listed: Vec<String> = listed["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(names)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (_, none_left) = api.get("/v1/contacts:findDuplicates").await;
    assert_eq!(none_left["groups"].as_array().map(Vec::len), Some(0), "{none_left}");
    let (_, history) = api.get(&format!("/v1/contacts/{survivor}/history")).await;
    assert_eq!(history["entries"][0]["action"], "CHANGE_ACTION_MERGED");

    // Refusals: into itself, again, an erased contact, another tenant's, a rep's without rights.
    let (status, _) = api
        .post(
            &format!("/v1/contacts/{survivor}:merge"),
            json!({"merged": [first["name"]]}),
        )
        .await;
    assert_eq!(status, 400, "into itself");
    let (status, problem) = api
        .post(
            &format!("/v1/contacts/{survivor}:merge"),
            json!({"merged": [second["name"]]}),
        )
        .await;
    assert_eq!((status, problem["reason"].as_str()), (412, Some("ALREADY_MERGED")));
    let (_, erased) = api
        .post(
            "/v1/contacts",
            json!({"givenName": "Gone", "emails": [{"address": "gone@x.example"}]}),
        )
        .await;
    api.post(&format!("/v1/contacts/{}:erase", id_of(&erased["name"])), json!({}))
        .await;
    let (status, problem) = api
        .post(
            &format!("/v1/contacts/{survivor}:merge"),
            json!({"merged": [erased["name"]]}),
        )
        .await;
    assert_eq!((status, problem["reason"].as_str()), (412, Some("CONTACT_ERASED")));
    let other = Rest::as_user(&suite.rest, "elsewhere", "eve", Role::Admin);
    let (_, theirs) = other.post("/v1/contacts", json!({"givenName": "Theirs"})).await;
    assert_eq!(
        api.post(
            &format!("/v1/contacts/{survivor}:merge"),
            json!({"merged": [theirs["name"]]})
        )
        .await
        .0,
        404,
        "across tenants"
    );
    assert_eq!(
        other
            .post(
                &format!("/v1/contacts/{survivor}:merge"),
                json!({"merged": [theirs["name"]]})
            )
            .await
            .0,
        404
    );
    let rep = Rest::as_user(&suite.rest, "acme", "bob", Role::Rep);
    let (_, bobs) = rep.post("/v1/contacts", json!({"givenName": "Bob's"})).await;
    assert_eq!(
        rep.post(
            &format!("/v1/contacts/{}:merge", id_of(&bobs["name"])),
            json!({"merged": [stranger["name"]]})
        )
        .await
        .0,
        403
    );
    let (status, problem) = api.post(&format!("/v1/contacts/{survivor}:merge"), json!({"merged": [stranger["name"]], "fieldSources": {"title": "contacts/0190c0de-0000-7000-8000-000000000000"}})).await;
    assert_eq!(status, 400, "{problem}");
}

#[tokio::test]
async fn companies_are_deduplicated_and_merged_too() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "meg", Role::Manager);
    let (status, acme) = api
        .post(
            "/v1/companies",
            json!({"displayName": "Acme Inc.", "domain": "acme.example", "tags": ["a"]}),
        )
        .await;
    assert_eq!(status, 201, "{acme}");
    let (status, problem) = api
        .post(
            "/v1/companies",
            json!({"displayName": "Acme Corporation", "domain": "ACME.example"}),
        )
        .await;
    assert_eq!(
        (status, problem["reason"].as_str()),
        (409, Some("DUPLICATE_DOMAIN")),
        "{problem}"
    );
    let forced = api
        .request(reqwest::Method::POST, "/v1/companies?allowDuplicate=true")
        .json(
            &json!({"displayName": "Acme Corporation", "domain": "acme.example", "industry": "Anvils", "tags": ["b"]}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(forced.status(), 201);
    assert!(
        forced
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .contains("rel=\"duplicates\"")
    );
    let corp: serde_json::Value = forced.json().await.expect("json");
    let (_, short) = api.post("/v1/companies", json!({"displayName": "ACME"})).await;
    let (_, other) = api
        .post(
            "/v1/companies",
            json!({"displayName": "Globex", "domain": "globex.example"}),
        )
        .await;

    let (status, page) = api.get("/v1/companies:findDuplicates").await;
    assert_eq!(status, 200, "{page}");
    let groups = page["groups"].as_array().expect("groups");
    assert!(
        groups.iter().any(|g| g["reasons"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("MATCH_REASON_DOMAIN")))),
        "{page}"
    );
    assert!(
        !page.to_string().contains(other["name"].as_str().expect("name")),
        "unrelated companies are not grouped"
    );

    let (_, contact) = api
        .post(
            "/v1/contacts",
            json!({"givenName": "Wile", "familyName": "Coyote", "company": corp["name"]}),
        )
        .await;
    let survivor = id_of(&acme["name"]);
    let (status, merged) = api
        .post(
            &format!("/v1/companies/{survivor}:merge"),
            json!({"merged": [corp["name"], short["name"]], "fieldSources": {"displayName": corp["name"]}}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["displayName"], "Acme Corporation", "the caller's choice");
    assert_eq!(merged["industry"], "Anvils", "most recent non-empty");
    assert_eq!(merged["tags"], json!(["a", "b"]));
    let (_, moved) = api.get(&format!("/v1/contacts/{}", id_of(&contact["name"]))).await;
    assert_eq!(moved["company"], acme["name"], "contacts follow the merge");
    let (status, resolved) = api.get(&format!("/v1/companies/{}", id_of(&corp["name"]))).await;
    assert_eq!(
        (status, &resolved["name"]),
        (200, &acme["name"]),
        "a merged company resolves to its survivor"
    );
    let (_, found) = api.get("/v1/contacts:search?query=coyote%20corporation").await;
    assert_eq!(
        found["contacts"].as_array().map(Vec::len),
        Some(1),
        "search follows the merged name"
    );
    let (status, problem) = api
        .post(
            &format!("/v1/companies/{survivor}:merge"),
            json!({"merged": [corp["name"]]}),
        )
        .await;
    assert_eq!((status, problem["reason"].as_str()), (412, Some("ALREADY_MERGED")));
    assert_eq!(
        api.post(
            &format!("/v1/companies/{survivor}:merge"),
            json!({"merged": [acme["name"]]})
        )
        .await
        .0,
        400,
        "into itself"
    );
    let rep = Rest::as_user(&suite.rest, "acme", "bob", Role::Rep);
    assert_eq!(
        rep.post(
            &format!("/v1/companies/{}:merge", id_of(&other["name"])),
            json!({"merged": [acme["name"]]})
        )
        .await
        .0,
        403
    );
    let elsewhere = Rest::as_user(&suite.rest, "elsewhere", "eve", Role::Admin);
    assert_eq!(
        elsewhere
            .post(
                &format!("/v1/companies/{survivor}:merge"),
                json!({"merged": [other["name"]]})
            )
            .await
            .0,
        404
    );
}

/// On PostgreSQL, creates arriving at once are written together (group commit); each still
/// gets its own answer over gRPC: of four concurrent creates of one address exactly one is
/// created and the three others are refused naming it, and nothing else is stored. Another
/// tenant creating the same addresses at the same time gets the same, with its own contacts.
#[tokio::test]
async fn postgres_concurrent_creates_of_one_address_make_one_contact() {
    use crm_platform::testing::TestDatabase;
    use crm_proto::crm::contact::v1 as pb;

    use crate::events::{contact, migrate};
    use crate::support::{Process, grpc_client, token};

    let Some(db) = TestDatabase::create("concurrent_creates_one_address").await else {
        return;
    };
    migrate(&db.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let (process, grpc) = Process::contact_on_postgres(&db.url, &[], dir.path());
    let client = grpc_client(&grpc, Some(token("acme", "alice", Role::Admin))).await;
    let other = grpc_client(&grpc, Some(token("globex", "bob", Role::Admin))).await;
    // Four creates of each of six addresses, all 24 in flight at once, and as many of the
    // same addresses in another tenant at the same time (its groups are written in parallel).
    let calls: Vec<_> = (0..48)
        .map(|n| {
            let tenant = if n < 24 { "acme" } else { "globex" };
            let mut client = if n < 24 { client.clone() } else { other.clone() };
            let address = format!("burst{}@example.com", n % 6);
            tokio::spawn(async move {
                let answer = client
                    .create_contact(pb::CreateContactRequest {
                        contact: Some(contact("Burst", &address)),
                        ..Default::default()
                    })
                    .await;
                (
                    tenant,
                    address,
                    answer.map(|r| r.into_inner().contact.expect("contact").name),
                )
            })
        })
        .collect();
    // Per tenant: the contact created per address, and the refusals (address, message).
    type Outcomes = (std::collections::BTreeMap<String, String>, Vec<(String, String)>);
    let mut by_tenant: std::collections::BTreeMap<&str, Outcomes> = std::collections::BTreeMap::new();
    for call in calls {
        let (tenant, address, answer) = call.await.expect("call");
        let (created, refused) = by_tenant.entry(tenant).or_default();
        match answer {
            Ok(name) => assert!(
                created.insert(address.clone(), name).is_none(),
                "{address} created twice in {tenant}"
            ),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
                refused.push((address, status.message().to_owned()));
            }
        }
    }
    for (tenant, (created, refused)) in &by_tenant {
        assert_eq!(created.len(), 6, "one contact per address in {tenant}: {created:?}");
        assert_eq!(refused.len(), 18, "{tenant}");
        for (address, message) in refused {
            assert!(
                message.contains(&created[address]),
                "the refusal names the contact created in {tenant}: {message}"
            );
        }
    }
    let (created, _) = &by_tenant["acme"];
    assert!(
        by_tenant["globex"]
            .0
            .values()
            .all(|name| !created.values().any(|own| own == name)),
        "each tenant has contacts of its own"
    );
    for mut lister in [client.clone(), other.clone()] {
        let listed = lister
            .list_contacts(pb::ListContactsRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.contacts.len(), 6, "nothing but the six was stored");
    }

    // Four more people of the same name (one name block), at new addresses and at once: each
    // is created, and its answer lists the six as likely duplicates, never itself.
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .create_contact(pb::CreateContactRequest {
                        contact: Some(contact("Burst", &format!("namesake{n}@example.com"))),
                        ..Default::default()
                    })
                    .await
                    .expect("a namesake is created")
                    .into_inner()
            })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("call");
        let own = answer.contact.expect("contact").name;
        let listed: std::collections::HashSet<&str> = answer.duplicates.iter().map(|d| d.contact.as_str()).collect();
        assert!(!listed.contains(own.as_str()), "not itself: {listed:?}");
        for name in created.values() {
            assert!(
                listed.contains(name.as_str()),
                "{name} is a likely duplicate of {own}: {listed:?}"
            );
        }
    }
    drop(process);
    db.drop_database().await;
}

/// A tenant with many shared match keys and few duplicates (common family names) is searched
/// a bounded stretch of keys per page: a page may come back with no groups and a token, and
/// paging on finds the duplicates further along. Before, the first request read the whole
/// tenant, and a 100k-contact tenant outlasted the gateway's timeout.
#[tokio::test]
async fn find_duplicates_pages_through_many_shared_keys_in_bounded_steps() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "alice", Role::Manager);
    // 2100 name blocks held by two people each who are not alike (different given names, no
    // company), then one real pair whose block sorts last.
    let mut file = String::from("external_id,given_name,family_name,emails\n");
    for block in 0..2100 {
        for (n, given) in ["Anna", "Arthur"].iter().enumerate() {
            file.push_str(&format!(
                "b{block}-{n},{given},Fam{block:04},b{block}-{n}@example.com\n"
            ));
        }
    }
    file.push_str("z-1,Zed,Zulu,zed@example.com\nz-2,Zed,Zulu,zed.zulu@example.com\n");
    let response = api
        .request(reqwest::Method::POST, "/v1/contacts:import")
        .body(file)
        .send()
        .await
        .expect("import");
    let report = response.text().await.expect("report");
    assert!(
        report.contains("\"created\":\"4202\""),
        "{}",
        &report[report.len().saturating_sub(300)..]
    );

    let (status, first) = api.get("/v1/contacts:findDuplicates?pageSize=10").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["groups"].as_array().map(Vec::len), Some(0), "{first}");
    let mut token = first["nextPageToken"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "a page stops after a bounded stretch of keys");

    let mut groups = Vec::new();
    let mut pages = 1;
    while !token.is_empty() {
        let (status, page) = api
            .get(&format!("/v1/contacts:findDuplicates?pageSize=10&pageToken={token}"))
            .await;
        assert_eq!(status, 200, "{page}");
        groups.extend(page["groups"].as_array().cloned().unwrap_or_default());
        token = page["nextPageToken"].as_str().unwrap_or_default().to_owned();
        pages += 1;
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["contacts"].as_array().map(Vec::len), Some(2), "{groups:?}");
}
