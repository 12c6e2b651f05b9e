//! The analytics service's customer figures through the real binary, on both backends:
//! contacts, companies, interactions and a portfolio transfer made over REST reach it through
//! the contact feed, and its figures equal what this test computes from what it made.

use crm_platform::Role;
use serde_json::{Value, json};

use crate::analytics::{close_to, eventually, figures, settled};
use crate::support::{BACKENDS, Deployment, Rest, id_of};

#[tokio::test]
async fn customer_figures_follow_the_contacts_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) = Deployment::start(postgres, "analytics_customers").await else {
            continue;
        };
        customer_figures(deployment.rest()).await;
        deployment.stop().await;
    }
}

/// A contact this test made: its owner and which profile fields it filled.
struct Made {
    owner: &'static str,
    email: bool,
    phone: bool,
    company: bool,
}

async fn create(api: &Rest, body: Value) -> Value {
    let (status, made) = api.post("/v1/contacts", body).await;
    assert_eq!(status, 201, "{made}");
    made
}

async fn log(api: &Rest, contact: &Value, body: Value) {
    let (status, logged) = api
        .post(&format!("/v1/contacts/{}/interactions", id_of(&contact["name"])), body)
        .await;
    assert_eq!(status, 201, "{logged}");
}

async fn customer_figures(base: &str) {
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    let (ann, ben) = (
        Rest::as_user(base, "acme", "ann", Role::Rep),
        Rest::as_user(base, "acme", "ben", Role::Rep),
    );

    // The settings: the defaults, changed by an admin only, every wrong field named at once.
    let (status, settings) = ben.get("/v1/settings").await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(
        (
            settings["responseWindowDays"].as_i64(),
            settings["churnWindowDays"].as_i64()
        ),
        (Some(30), Some(365))
    );
    let (status, _) = ben.patch("/v1/settings", json!({"responseWindowDays": 7})).await;
    assert_eq!(status, 403, "reps do not change the settings");
    let (status, problem) = admin
        .patch(
            "/v1/settings",
            json!({"responseWindowDays": 0, "reportingCurrency": "euro"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let mut fields: Vec<&str> = problem["violations"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["settings.reportingCurrency", "settings.responseWindowDays"],
        "{problem}"
    );
    let (status, changed) = admin
        .patch(
            "/v1/settings",
            json!({"responseWindowDays": 7, "reportingCurrency": "EUR"}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["responseWindowDays"].as_i64(),
            changed["churnWindowDays"].as_i64()
        ),
        (Some(7), Some(365))
    );
    assert_eq!(
        (changed["reportingCurrency"].as_str(), changed["updatedBy"].as_str()),
        (Some("EUR"), Some("alice"))
    );
    let (_, theirs) = Rest::as_user(base, "globex", "gus", Role::Admin)
        .get("/v1/settings")
        .await;
    assert_eq!(
        theirs["responseWindowDays"], 30,
        "another tenant's settings are its own"
    );

    // A company and contacts, each with what it filled.
    let (status, firm) = ann.post("/v1/companies", json!({"displayName": "Firm"})).await;
    assert_eq!(status, 201, "{firm}");
    let mut made = Vec::new();
    let full = create(
        &ann,
        json!({"givenName": "Full", "emails": [{"address": "full@example.com"}], "phones": [{"number": "+44 20 7946 0958"}],
               "company": firm["name"], "lifecycleStage": "CUSTOMER"}),
    )
    .await;
    made.push(Made {
        owner: "ann",
        email: true,
        phone: true,
        company: true,
    });
    let bare = create(&ann, json!({"givenName": "Bare"})).await;
    made.push(Made {
        owner: "ann",
        email: false,
        phone: false,
        company: false,
    });
    let bens = create(
        &ben,
        json!({"givenName": "Bens", "emails": [{"address": "bens@example.com"}]}),
    )
    .await;
    made.push(Made {
        owner: "ben",
        email: true,
        phone: false,
        company: false,
    });
    create(&admin, json!({"givenName": "Lees", "owner": "lee"})).await;
    made.push(Made {
        owner: "cat",
        email: false,
        phone: false,
        company: false,
    });

    // Support tickets of 10 and 20 minutes; a campaign reaching three contacts, one answering.
    let now = chrono::Utc::now();
    let at = |minutes_ago: i64| {
        (now - chrono::Duration::minutes(minutes_ago)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    log(
        &ann,
        &full,
        json!({"type": "SUPPORT_TICKET", "direction": "INBOUND", "occurTime": at(30), "duration": "600s"}),
    )
    .await;
    log(
        &ben,
        &bens,
        json!({"type": "SUPPORT_TICKET", "direction": "INBOUND", "occurTime": at(20), "duration": "1200s"}),
    )
    .await;
    for contact in [&full, &bare, &bens] {
        log(
            &admin,
            contact,
            json!({"type": "EMAIL", "direction": "OUTBOUND", "occurTime": at(15), "campaignId": "spring"}),
        )
        .await;
    }
    log(
        &admin,
        &full,
        json!({"type": "EMAIL", "direction": "INBOUND", "occurTime": at(5), "campaignId": "spring"}),
    )
    .await;

    // Lee leaves: his contact moves to Cat; then someone gives Lee a new contact.
    let (status, moved) = admin
        .post(
            "/v1/contacts:reassignOwner",
            json!({"fromUser": "lee", "toUsers": ["cat"]}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    create(&admin, json!({"givenName": "Orphan", "owner": "lee"})).await;
    made.push(Made {
        owner: "lee",
        email: false,
        phone: false,
        company: false,
    });

    let today = chrono::Utc::now().date_naive();
    let period = format!("{}..{}", today.pred_opt().expect("day"), today.succ_opt().expect("day"));
    // The orphan was the last event: once completeness counts it, everything is in.
    let answer = settled(&admin, "profile-completeness", &period, made.len() as i64).await;
    #[allow(clippy::cast_precision_loss)]
    let share = |has: fn(&Made) -> bool| made.iter().filter(|m| has(m)).count() as f64 / made.len() as f64;
    let expected = (share(|m| m.email) + share(|m| m.phone) + share(|m| m.company) + 1.0 + 0.0) / 5.0;
    close_to(&answer["figures"][0]["value"], expected, "profile completeness");
    close_to(
        &answer["figures"][0]["parts"]["email"],
        share(|m| m.email),
        "email share",
    );

    // Every record (the contacts and the company) was changed today: all fresh.
    let (status, fresh) = admin
        .get(&format!("/v1/metrics/data-freshness:query?period={period}"))
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        fresh["figures"][0]["count"],
        json!((made.len() + 1).to_string()),
        "{fresh}"
    );
    close_to(&fresh["figures"][0]["value"], 1.0, "fresh share");
    let (_, by_owner) = admin
        .get(&format!(
            "/v1/metrics/data-freshness:query?period={period}&groupBy=OWNER"
        ))
        .await;
    let by_owner = figures(&by_owner);
    for owner in ["ann", "ben", "cat", "lee"] {
        let records = made.iter().filter(|m| m.owner == owner).count() + usize::from(owner == "ann");
        assert_eq!(
            by_owner[owner]["count"],
            json!(records.to_string()),
            "{owner}: {by_owner:?}"
        );
    }

    // Handling time: the mean of 10 and 20 minutes; per user.
    let (_, handling) = admin
        .get(&format!("/v1/metrics/handling-time:query?period={period}"))
        .await;
    close_to(&handling["figures"][0]["value"], 15.0, "handling time");
    close_to(&handling["figures"][0]["parts"]["p90"], 20.0, "p90");
    let (_, per_user) = admin
        .get(&format!(
            "/v1/metrics/handling-time:query?period={period}&groupBy=OWNER"
        ))
        .await;
    close_to(&figures(&per_user)["ben"]["value"], 20.0, "ben's tickets");

    // Campaign response: one of three reached answered.
    let (_, response) = admin
        .get(&format!(
            "/v1/metrics/campaign-response:query?period={period}&groupBy=CAMPAIGN"
        ))
        .await;
    close_to(&figures(&response)["spring"]["value"], 1.0 / 3.0, "spring response");
    assert_eq!(figures(&response)["spring"]["count"], "3");

    // Portfolio continuity: Lee left, one record moved, one given to him since.
    let (_, continuity) = admin
        .get(&format!("/v1/metrics/portfolio-continuity:query?period={period}"))
        .await;
    let figure = &continuity["figures"][0];
    close_to(&figure["value"], 1.0, "records left with a user who left");
    close_to(&figure["parts"]["transfers"], 1.0, "transfers");
    close_to(&figure["parts"]["departed_users"], 1.0, "departed users");

    // A won deal with Full's company makes it a new customer.
    let pipeline = crate::pipeline::pipeline(&admin).await;
    let (status, deal) = ann
        .post(
            "/v1/deals",
            json!({"displayName": "First order", "pipeline": pipeline["name"], "company": firm["name"],
                   "amount": {"amountMinor": "5000", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    let (status, won) = ann
        .post(
            &format!("/v1/deals/{}:close", id_of(&deal["name"])),
            json!({"outcome": "DEAL_STATUS_WON", "reason": "signed"}),
        )
        .await;
    assert_eq!(status, 200, "{won}");
    let retention = eventually(
        &admin,
        &format!("/v1/metrics/customer-retention:query?period={period}"),
        |answer| answer["figures"][0]["parts"]["new"].as_f64() == Some(1.0),
    )
    .await;
    assert_eq!(
        retention["figures"][0]["count"], "0",
        "nobody was a customer at the start: {retention}"
    );
    assert!(retention["figures"][0]["value"].is_null(), "{retention}");

    // Customer value: Bens (a contact without a company) buys in USD, converted at this month's
    // rate; Bare buys in GBP, which has no rate and is reported apart.
    let month = today.format("%Y-%m").to_string();
    let (status, _) = ann
        .post(
            "/v1/exchangeRates",
            json!({"currency": "USD", "month": month, "rate": 0.5}),
        )
        .await;
    assert_eq!(status, 403, "rates are set by admins");
    let (status, problem) = admin
        .post(
            "/v1/exchangeRates",
            json!({"currency": "usd", "month": "2026-Q4", "rate": -1}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["violations"].as_array().map(Vec::len), Some(3), "{problem}");
    let (status, rate) = admin
        .post(
            "/v1/exchangeRates",
            json!({"currency": "USD", "month": month, "rate": 0.5}),
        )
        .await;
    assert!(status == 200 || status == 201, "{rate}");
    for (rep, body) in [
        (
            &ben,
            json!({"contact": bens["name"], "amount": {"amountMinor": "4000", "currencyCode": "USD"}}),
        ),
        (
            &ann,
            json!({"contact": bare["name"], "amount": {"amountMinor": "100", "currencyCode": "GBP"}}),
        ),
    ] {
        let mut body = body;
        body["displayName"] = json!("Order");
        body["pipeline"] = pipeline["name"].clone();
        let (status, deal) = rep.post("/v1/deals", body).await;
        assert_eq!(status, 201, "{deal}");
        let (status, won) = rep
            .post(
                &format!("/v1/deals/{}:close", id_of(&deal["name"])),
                json!({"outcome": "DEAL_STATUS_WON", "reason": "signed"}),
            )
            .await;
        assert_eq!(status, 200, "{won}");
    }
    // (customer, monetary in EUR): all won today, one deal each.
    let mut customers: Vec<(String, i64)> = vec![
        (id_of(&firm["name"]).to_owned(), 5000),
        (id_of(&bens["name"]).to_owned(), 2000),
        (id_of(&bare["name"]).to_owned(), 0),
    ];
    customers.sort();
    let segments = eventually(&admin, "/v1/segments", |answer| {
        let total: i64 = answer["segments"]
            .as_array()
            .expect("segments")
            .iter()
            .map(|s| s["customers"].as_str().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0))
            .sum();
        total == 3
    })
    .await;
    assert_eq!(segments["reportingCurrency"], "EUR", "{segments}");
    // Scores by quintile of first ranks (ties in id order): with n customers the rank r falls
    // in bin max(1, ceil(5 (r - 1) / (n - 1))).
    let n = customers.len();
    let bin = |rank: usize| ((5 * (rank - 1)).div_ceil(n - 1)).max(1) as i64;
    let mut by_money: Vec<&(String, i64)> = customers.iter().collect();
    by_money.sort_by_key(|(id, m)| (*m, id.clone()));
    for (i, (id, monetary)) in customers.iter().enumerate() {
        let (status, value) = admin.get(&format!("/v1/customers/{id}:value")).await;
        assert_eq!(status, 200, "{value}");
        // Same recency and frequency for all: the id order decides.
        let (r, f) = (6 - bin(i + 1), bin(i + 1));
        let m = bin(by_money.iter().position(|(c, _)| c == id).expect("ranked") + 1);
        assert_eq!(
            (
                value["recencyScore"].as_i64(),
                value["frequencyScore"].as_i64(),
                value["monetaryScore"].as_i64()
            ),
            (Some(r), Some(f), Some(m)),
            "{value}"
        );
        assert_eq!(value["monetary"]["amountMinor"], json!(monetary.to_string()), "{value}");
        let segment = match (r, f) {
            (5, 1) => "new",
            (3, 3) => "need_attention",
            (1, 5) => "cant_lose",
            other => panic!("{other:?} is not a cell of three customers"),
        };
        assert_eq!(value["segment"], segment, "{value}");
    }
    let bare_value = admin
        .get(&format!("/v1/customers/{}:value", id_of(&bare["name"])))
        .await
        .1;
    assert_eq!(
        bare_value["unconverted"],
        json!([{"amountMinor": "100", "currencyCode": "GBP"}]),
        "{bare_value}"
    );
    let (status, _) = ben.get(&format!("/v1/customers/{}:value", id_of(&firm["name"]))).await;
    assert_eq!(status, 404, "a rep reads only their own customers' value");
    let (status, own) = ben.get(&format!("/v1/customers/{}:value", id_of(&bens["name"]))).await;
    assert_eq!(status, 200, "{own}");

    // Cross-sell: Firm buys the CRM with mail, Bens the CRM alone.
    let mut products = Vec::new();
    for sku in ["CRM", "MAIL"] {
        let (status, product) = admin
            .post(
                "/v1/products",
                json!({"sku": sku, "displayName": sku, "listPrice": {"amountMinor": "1000", "currencyCode": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{product}");
        products.push(product["name"].as_str().expect("name").to_owned());
    }
    let baskets: [(&Rest, &Value, &str, &[String]); 2] = [
        (&ann, &firm, "company", &products[..]),
        (&ben, &bens, "contact", &products[..1]),
    ];
    for (rep, customer, field, bought) in baskets {
        let items: Vec<Value> = bought.iter().map(|p| json!({"product": p, "quantity": "1"})).collect();
        let mut body = json!({"displayName": "Bundle", "pipeline": pipeline["name"], "lineItems": items});
        body[field] = customer["name"].clone();
        let (status, deal) = rep.post("/v1/deals", body).await;
        assert_eq!(status, 201, "{deal}");
        let (status, won) = rep
            .post(
                &format!("/v1/deals/{}:close", id_of(&deal["name"])),
                json!({"outcome": "DEAL_STATUS_WON", "reason": "signed"}),
            )
            .await;
        assert_eq!(status, 200, "{won}");
    }
    // Two customers with products; CRM -> MAIL: both 1 of 2, CRM held by 2, MAIL by 1.
    let pairs = eventually(&ben, "/v1/productPairs?minSupport=0&minConfidence=0", |answer| {
        answer["customers"] == "2"
    })
    .await;
    let rule = pairs["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .find(|p| p["from"] == products[0].as_str() && p["to"] == products[1].as_str())
        .unwrap_or_else(|| panic!("CRM -> MAIL: {pairs}"))
        .clone();
    let (n, both, crm, mail) = (2.0, 1.0, 2.0, 1.0);
    close_to(&rule["support"], both / n, "support");
    close_to(&rule["confidence"], both / crm, "confidence");
    close_to(&rule["lift"], (both / crm) / (mail / n), "lift");
    let (status, advice) = ben
        .get(&format!(
            "/v1/recommendations?customer=customers/{}&minSupport=0&minConfidence=0",
            id_of(&bens["name"])
        ))
        .await;
    assert_eq!(status, 200, "{advice}");
    assert_eq!(
        advice["recommendations"][0]["product"],
        products[1].as_str(),
        "{advice}"
    );
    close_to(
        &advice["recommendations"][0]["confidence"],
        both / crm,
        "advice confidence",
    );
    let (status, _) = ben
        .get(&format!(
            "/v1/recommendations?customer=customers/{}",
            id_of(&firm["name"])
        ))
        .await;
    assert_eq!(status, 404, "a rep's advice is for their own customers");
    let (status, problem) = ben.get("/v1/productPairs?minSupport=2&minConfidence=-1").await;
    assert_eq!(status, 400, "{problem}");

    // A duplicate of Bare with a won deal of its own, merged into Bare: the deal counts for
    // Bare from then on, and the duplicate is no customer any more.
    let twin = create(&admin, json!({"givenName": "Twin", "owner": "ann"})).await;
    let (status, deal) = admin
        .post(
            "/v1/deals",
            json!({"displayName": "Twin's order", "pipeline": pipeline["name"], "contact": twin["name"],
                   "amount": {"amountMinor": "300", "currencyCode": "EUR"}}),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    let (status, won) = admin
        .post(
            &format!("/v1/deals/{}:close", id_of(&deal["name"])),
            json!({"outcome": "DEAL_STATUS_WON", "reason": "signed"}),
        )
        .await;
    assert_eq!(status, 200, "{won}");
    // Whichever feed arrives first, the deal ends with the survivor: a deal written after the
    // merge names the merged record and is mapped to its survivor.
    let (status, merged) = admin
        .post(
            &format!("/v1/contacts/{}:merge", id_of(&bare["name"])),
            json!({"merged": [twin["name"]]}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    let survivor = eventually(&admin, &format!("/v1/customers/{}:value", id_of(&bare["name"])), |v| {
        v["frequency"] == "2"
    })
    .await;
    assert_eq!(
        survivor["monetary"]["amountMinor"], "300",
        "the twin's EUR deal: {survivor}"
    );
    assert_eq!(
        survivor["unconverted"],
        json!([{"amountMinor": "100", "currencyCode": "GBP"}]),
        "{survivor}"
    );
    let (status, _) = admin
        .get(&format!("/v1/customers/{}:value", id_of(&twin["name"])))
        .await;
    assert_eq!(status, 404, "a merged contact is no customer of its own");

    // Another tenant sees none of it.
    let gus = Rest::as_user(base, "globex", "gus", Role::Admin);
    let (_, theirs) = gus
        .get(&format!("/v1/metrics/profile-completeness:query?period={period}"))
        .await;
    assert_eq!(theirs["figures"][0]["count"], "0", "{theirs}");
}

#[tokio::test]
async fn usage_becomes_adoption_on_both_backends() {
    for postgres in BACKENDS {
        let Some(deployment) =
            Deployment::start_with(postgres, "analytics_usage", &[("CRM_USAGE_EVERY", "200ms")]).await
        else {
            continue;
        };
        usage_becomes_adoption(deployment.rest()).await;
        deployment.stop().await;
    }
}

async fn usage_becomes_adoption(base: &str) {
    let (ann, ben) = (
        Rest::as_user(base, "acme", "ann", Role::Rep),
        Rest::as_user(base, "acme", "ben", Role::Rep),
    );
    // (user, requests, changes): each call below is one request to the contact service.
    let contact = create(&ann, json!({"givenName": "Used"})).await;
    for _ in 0..2 {
        let (status, _) = ann.get(&format!("/v1/contacts/{}", id_of(&contact["name"]))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = ben.get("/v1/contacts").await;
    assert_eq!(status, 200);
    let made = [("ann", 3, 1), ("ben", 1, 0)];

    // Val reads the figures: her requests to the analytics service are usage too (the
    // service's own, which it does not ingest from a feed), however many polls it takes.
    let val = Rest::as_user(base, "acme", "val", Role::Viewer);
    let today = chrono::Utc::now().date_naive();
    let period = format!("{}..{}", today.pred_opt().expect("day"), today.succ_opt().expect("day"));
    let answer = eventually(
        &val,
        &format!("/v1/metrics/crm-adoption:query?period={period}"),
        |got| got["figures"][0]["count"] == "3",
    )
    .await;
    let figure = &answer["figures"][0];
    #[allow(clippy::cast_precision_loss)]
    let users = (made.len() + 1) as f64;
    let requests: i32 = made.iter().map(|m| m.1).sum();
    let changes: i32 = made.iter().map(|m| m.2).sum();
    close_to(&figure["value"], 1.0, "everyone seen was active");
    // Val's reads are at least one request, and no change.
    let per_user = figure["parts"]["requests_per_active_user"].as_f64().expect("requests");
    assert!(per_user >= f64::from(requests + 1) / users, "{figure}");
    close_to(
        &figure["parts"]["changes_per_active_user"],
        f64::from(changes) / users,
        "changes",
    );
    // Ann and Ben used contacts, val the metrics: one area each.
    close_to(&figure["parts"]["areas_per_active_user"], 1.0, "one area each");
    // Another tenant sees none of acme's use: at most gus's own request, if it was reported
    // before the figure was read.
    let gus = Rest::as_user(base, "globex", "gus", Role::Admin);
    let (_, theirs) = gus
        .get(&format!("/v1/metrics/crm-adoption:query?period={period}"))
        .await;
    let figure = &theirs["figures"][0];
    assert!(figure["count"] == "0" || figure["count"] == "1", "{theirs}");
    if figure["count"] == "1" {
        close_to(&figure["parts"]["requests_per_active_user"], 1.0, "gus's one request");
    }
}
