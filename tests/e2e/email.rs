//! Email through the real processes, on both backends, to an SMTP server on loopback: a rule's
//! email (previewed first) reaches a fixed address and the owner at the address of their
//! preferences, rendered from its template in a multipart (text and HTML) message; a server's
//! temporary refusal or dropped connection is retried and a permanent refusal fails the email
//! with the server's answer;
//! a user with no address is refused with the reason; a due task reaches its assignee by email
//! out of the box; a bad template is a 400 naming it; preferences are their user's; held
//! emails leave as one digest at the user's digest time. Without a
//! mail server, `crm serve` writes each email to a file under its data directory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_platform::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::notification::{won, won_deal};
use crate::pipeline::pipeline;
use crate::support::{BACKENDS, Deployment, Rest, Suite, violation_fields};

/// A message an SMTP server took: its recipients and its text.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

/// An SMTP server on loopback speaking the protocol's core (RFC 5321): it takes every message,
/// except for recipients starting `refuse` (550, for good) and, the first time, `later` (451,
/// try again) and `drop` (the connection closed without an answer).
async fn smtp_server() -> (String, Arc<Mutex<Vec<Mail>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("smtp://{}", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let deferred = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let kept = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (kept, deferred) = (Arc::clone(&kept), Arc::clone(&deferred));
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                let mut to = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "EHLO" => "250-sink\r\n250 8BITMIME".to_owned(),
                        "HELO" | "MAIL" | "RSET" | "NOOP" => {
                            if verb == "RSET" || verb == "MAIL" {
                                to.clear();
                            }
                            "250 OK".to_owned()
                        }
                        "RCPT" => {
                            let address = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                            if address.starts_with("drop") && deferred.lock().expect("lock").insert(address.clone()) {
                                // The server goes away mid-conversation.
                                return;
                            }
                            if address.starts_with("refuse") {
                                "550 5.1.1 no such mailbox".to_owned()
                            } else if address.starts_with("later")
                                && deferred.lock().expect("lock").insert(address.clone())
                            {
                                "451 4.3.0 try again later".to_owned()
                            } else {
                                to.push(address);
                                "250 OK".to_owned()
                            }
                        }
                        "DATA" => {
                            let _ = write.write_all(b"354 go on\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            kept.lock().expect("lock").push(Mail {
                                to: std::mem::take(&mut to),
                                data,
                            });
                            "250 OK queued".to_owned()
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => "502 not implemented".to_owned(),
                    };
                    if write.write_all(format!("{answer}\r\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

/// The tenant's emails once `done` holds for them (10 s at most).
async fn emails_until(admin: &Rest, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..200 {
        let (status, listed) = admin.get("/v1/emails").await;
        assert_eq!(status, 200, "{listed}");
        last = listed["emails"].as_array().cloned().unwrap_or_default();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("emails never settled: {last:#?}");
}

fn to(emails: &[Value], recipient: &str) -> Option<Value> {
    emails.iter().find(|e| e["recipient"] == recipient).cloned()
}

#[tokio::test]
async fn a_rule_emails_its_recipients_through_smtp_on_both_backends() {
    for postgres in BACKENDS {
        let (url, got) = smtp_server().await;
        let envs = [
            ("CRM_SMTP_URL", url.as_str()),
            ("CRM_EMAIL_FROM", "Acme CRM <crm@acme.test>"),
        ];
        let Some(deployment) = Deployment::start_with(postgres, "notification_email", &envs).await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let bob = Rest::as_user(base, "acme", "bob", Role::Rep);

        // Preferences are their user's: bob sets his address; a bad one changes nothing.
        let (status, problem) = bob
            .patch(
                "/v1/users/bob/notificationPreferences",
                json!({"emailAddress": "not an address"}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(
            problem["violations"][0]["field"],
            "notificationPreferences.emailAddress"
        );
        let (status, _) = bob
            .patch(
                "/v1/users/carol/notificationPreferences",
                json!({"emailAddress": "x@acme.test"}),
            )
            .await;
        assert_eq!(status, 403, "another user's preferences");
        let (status, prefs) = bob
            .patch(
                "/v1/users/me/notificationPreferences",
                json!({"emailAddress": "bob@acme.test"}),
            )
            .await;
        assert_eq!(status, 200, "{prefs}");
        assert_eq!(prefs["name"], "users/bob/notificationPreferences");
        let (_, read) = bob.get("/v1/users/bob/notificationPreferences").await;
        assert_eq!(read["emailAddress"], "bob@acme.test");

        let template = json!({
            "subject": "Won: {{ data.deal.displayName }}",
            "text": "{{ data.deal.displayName }} won for {{ data.deal.amount.amountMinor }} {{ data.deal.amount.currencyCode }}",
            "html": "<p>{{ data.deal.displayName }} &amp; more</p>",
        });
        let rule = json!({
            "displayName": "Wins by email",
            "eventTypes": ["crm.pipeline.v1.DealWon"],
            "recipients": ["mailto:cfo@acme.test", "owner", "users/dan", "mailto:refuse@acme.test", "mailto:later@acme.test",
                           "mailto:drop@acme.test"],
            "channels": ["CHANNEL_EMAIL"],
            "emailTemplate": template,
        });

        // The preview renders a sample with the template, saving and sending nothing.
        let (status, preview) = admin
            .post(
                "/v1/rules:previewEmail",
                json!({"rule": rule, "samplePayload": r#"{"deal": {"displayName": "A <b>big</b> one", "amount": {"amountMinor": "5", "currencyCode": "EUR"}}}"#}),
            )
            .await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(preview["subject"], "Won: A <b>big</b> one");
        assert_eq!(preview["text"], "A <b>big</b> one won for 5 EUR");
        assert_eq!(preview["html"], "<p>A &lt;b&gt;big&lt;&#x2f;b&gt; one &amp; more</p>");
        let (status, problem) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Broken", "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": ["owner"],
                       "channels": ["CHANNEL_EMAIL"], "emailTemplate": {"subject": "{{ oops", "html": "{% if %}"}}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(
            violation_fields(&problem),
            ["rule.emailTemplate.subject", "rule.emailTemplate.html"],
            "{problem}"
        );
        let (status, listed) = admin.get("/v1/rules").await;
        assert_eq!((status, listed["rules"].as_array().map(Vec::len)), (200, Some(0)));
        let (status, _) = bob.post("/v1/rules:previewEmail", json!({"rule": rule})).await;
        assert_eq!(status, 403, "a rep drafts no rules");

        let (status, made) = admin.post("/v1/rules", rule.clone()).await;
        assert_eq!(status, 200, "{made}");
        assert_eq!(made["channels"], json!(["CHANNEL_EMAIL"]));
        let pipeline = pipeline(&admin).await;
        won(
            &admin,
            json!({"displayName": "Globex renewal", "pipeline": pipeline["name"], "owner": "bob",
                   "amount": {"amountMinor": "700", "currencyCode": "EUR"}}),
        )
        .await;

        // cfo and bob at once; later@ after a 451 and the first retry (about 5 s); refuse@
        // failed for good; dan has no address.
        let settled = emails_until(&admin, |all| {
            all.len() == 6 && all.iter().all(|e| e["state"] != "EMAIL_STATE_PENDING")
        })
        .await;
        let cfo = to(&settled, "mailto:cfo@acme.test").expect("cfo");
        assert_eq!(
            (cfo["state"].as_str(), cfo["attempts"].as_i64(), cfo["subject"].as_str()),
            (Some("EMAIL_STATE_SENT"), Some(1), Some("Won: Globex renewal")),
            "{cfo}"
        );
        let owner = to(&settled, "users/bob").expect("owner");
        assert_eq!(
            (owner["state"].as_str(), owner["address"].as_str()),
            (Some("EMAIL_STATE_SENT"), Some("bob@acme.test"))
        );
        let later = to(&settled, "mailto:later@acme.test").expect("later");
        assert_eq!(
            (later["state"].as_str(), later["attempts"].as_i64()),
            (Some("EMAIL_STATE_SENT"), Some(2)),
            "{later}"
        );
        let dropped = to(&settled, "mailto:drop@acme.test").expect("drop");
        assert_eq!(
            (dropped["state"].as_str(), dropped["attempts"].as_i64()),
            (Some("EMAIL_STATE_SENT"), Some(2)),
            "a dropped connection is retried: {dropped}"
        );
        let refused = to(&settled, "mailto:refuse@acme.test").expect("refuse");
        assert_eq!(refused["state"], "EMAIL_STATE_FAILED");
        assert!(
            refused["lastError"].as_str().is_some_and(|e| e.contains("550")),
            "{refused}"
        );
        let dan = to(&settled, "users/dan").expect("dan");
        assert_eq!(dan["state"], "EMAIL_STATE_REFUSED");
        assert!(
            dan["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("no email address")),
            "{dan}"
        );

        let mails = got.lock().expect("lock").clone();
        let mut addressed: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
        addressed.sort();
        assert_eq!(
            addressed,
            ["bob@acme.test", "cfo@acme.test", "drop@acme.test", "later@acme.test"]
        );
        let mail = &mails.iter().find(|m| m.to == ["cfo@acme.test"]).expect("cfo's").data;
        assert!(mail.contains("Subject: Won: Globex renewal"), "{mail}");
        assert!(
            mail.contains("From: \"Acme CRM\" <crm@acme.test>") || mail.contains("From: Acme CRM <crm@acme.test>"),
            "{mail}"
        );
        assert!(mail.contains("multipart/alternative"), "{mail}");
        assert!(mail.contains("Globex renewal won for 700 EUR"), "{mail}");
        assert!(mail.contains("<p>Globex renewal &amp; more</p>"), "{mail}");
        let cfo_id = cfo["name"].as_str().expect("name").trim_start_matches("emails/");
        assert!(
            mail.contains(&format!("Message-ID: <{cfo_id}@crm-notification>")),
            "{mail}"
        );

        // A due task reaches its assignee by email too, with no rule made.
        let (status, _) = admin
            .patch(
                "/v1/users/erin/notificationPreferences",
                json!({"emailAddress": "erin@acme.test"}),
            )
            .await;
        assert_eq!(status, 200, "admins set anyone's");
        let due =
            (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (status, task) = admin
            .post(
                "/v1/tasks",
                json!({"title": "Call Ann back", "assignee": "erin", "dueTime": due}),
            )
            .await;
        assert_eq!(status, 201, "{task}");
        let reminded = emails_until(&admin, |all| {
            to(all, "users/erin").is_some_and(|e| e["state"] == "EMAIL_STATE_SENT")
        })
        .await;
        assert_eq!(
            to(&reminded, "users/erin").expect("erin")["subject"],
            "Task due: Call Ann back"
        );
        let mails = got.lock().expect("lock").clone();
        let reminder = mails.iter().find(|m| m.to == ["erin@acme.test"]).expect("erin's");
        assert!(
            reminder.data.contains("Your task \"Call Ann back\" is due"),
            "{}",
            reminder.data
        );

        // Another tenant sees none of it; a rep lists no emails.
        let other = Rest::as_user(base, "globex", "eve", Role::Admin);
        let (_, emails) = other.get("/v1/emails").await;
        assert_eq!(emails["emails"].as_array().map(Vec::len), Some(0), "{emails}");
        let (_, prefs) = other.get("/v1/users/bob/notificationPreferences").await;
        assert_eq!(prefs["emailAddress"], "", "{prefs}");
        let (status, _) = bob.get("/v1/emails").await;
        assert_eq!(status, 403);
        deployment.stop().await;
    }
}

#[tokio::test]
async fn without_a_mail_server_crm_serve_writes_each_email_to_a_file() {
    let suite = Suite::start();
    let admin = Rest::as_user(&suite.rest, "acme", "alice", Role::Admin);
    let (status, rule) = admin
        .post(
            "/v1/rules",
            json!({"displayName": "Wins", "eventTypes": ["crm.pipeline.v1.DealWon"],
                   "recipients": ["mailto:cfo@acme.test"], "emailTemplate": {"subject": "Won {{ data.deal.displayName }}"}}),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    let pipeline = pipeline(&admin).await;
    won_deal(&admin, &pipeline, "900").await;
    emails_until(&admin, |all| all.iter().any(|e| e["state"] == "EMAIL_STATE_SENT")).await;
    let dir = suite.data.path().join("data").join("mail");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("mail directory")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let mail = std::fs::read_to_string(&files[0]).expect("read");
    assert!(mail.contains("Subject: Won Deal of 900"), "{mail}");
    assert!(mail.contains("To: cfo@acme.test"), "{mail}");
}

#[tokio::test]
async fn a_users_preferences_mute_hold_cap_and_digest_their_notifications_on_both_backends() {
    for postgres in BACKENDS {
        let (url, got) = smtp_server().await;
        let envs = [("CRM_SMTP_URL", url.as_str())];
        let Some(deployment) = Deployment::start_with(postgres, "notification_preferences", &envs).await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let now = chrono::Utc::now();
        let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
        let prefs = [
            // Carol's quiet hours are now (in UTC), and she muted deals in the app.
            (
                "carol",
                json!({"emailAddress": "carol@acme.test", "timeZone": "UTC",
                "quietHours": {"start": hm(now - chrono::Duration::hours(1)), "end": hm(now + chrono::Duration::hours(2))},
                "muted": [{"category": "deals", "channel": "CHANNEL_IN_APP"}]}),
            ),
            // Dave takes one email an hour.
            ("dave", json!({"emailAddress": "dave@acme.test", "hourlyEmailCap": 1})),
            // Erin wants a daily digest at 08:00 in Berlin.
            (
                "erin",
                json!({"emailAddress": "erin@acme.test", "dailyDigest": true, "timeZone": "Europe/Berlin"}),
            ),
            // Frank muted deals by email.
            (
                "frank",
                json!({"emailAddress": "frank@acme.test", "muted": [{"category": "deals", "channel": "CHANNEL_EMAIL"}]}),
            ),
        ];
        for (user, body) in prefs {
            let (status, kept) = admin
                .patch(&format!("/v1/users/{user}/notificationPreferences"), body)
                .await;
            assert_eq!(status, 200, "{kept}");
        }
        let (_, erin) = admin.get("/v1/users/erin/notificationPreferences").await;
        assert_eq!(
            (
                erin["timeZone"].as_str(),
                erin["digestTime"].as_str(),
                erin["dailyDigest"].as_bool()
            ),
            (Some("Europe/Berlin"), Some("08:00"), Some(true)),
            "{erin}"
        );
        // Bad preferences are refused whole, every field named.
        let (status, problem) = admin
            .patch(
                "/v1/users/dave/notificationPreferences",
                json!({"timeZone": "Mars/Olympus", "quietHours": {"start": "25:00", "end": "07:00"},
                       "digestTime": "noon", "muted": [{"category": "deals"}], "hourlyEmailCap": 5000}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        let fields = violation_fields(&problem);
        assert!(
            fields.iter().any(|f| f == "notificationPreferences.timeZone"),
            "{problem}"
        );
        assert!(
            fields.iter().any(|f| f == "notificationPreferences.hourlyEmailCap"),
            "{problem}"
        );
        let (_, dave) = admin.get("/v1/users/dave/notificationPreferences").await;
        assert_eq!(dave["hourlyEmailCap"], 1, "nothing changed: {dave}");

        let rule = |name: &str, category: &str, critical: bool, recipients: Value| {
            json!({"displayName": name, "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": recipients,
                   "channels": ["CHANNEL_IN_APP", "CHANNEL_EMAIL"], "category": category, "critical": critical,
                   "emailTemplate": {"subject": format!("{name}: {{{{ data.deal.displayName }}}}")}})
        };
        let (status, made) = admin
            .post(
                "/v1/rules",
                rule(
                    "Wins",
                    "deals",
                    false,
                    json!(["users/carol", "users/dave", "users/erin", "users/frank"]),
                ),
            )
            .await;
        assert_eq!(status, 200, "{made}");
        assert_eq!(
            (made["category"].as_str(), made["critical"].as_bool()),
            (Some("deals"), Some(false))
        );
        let (status, _) = admin
            .post("/v1/rules", rule("Alert", "alerts", true, json!(["users/carol"])))
            .await;
        assert_eq!(status, 200);
        let pipeline = pipeline(&admin).await;
        won_deal(&admin, &pipeline, "100").await;

        let settled = |all: &[Value]| all.len() == 5 && all.iter().all(|e| e["state"] != "EMAIL_STATE_PENDING");
        let first = emails_until(&admin, settled).await;
        let of = |user: &str, rule_subject: &str| {
            first
                .iter()
                .find(|e| {
                    e["recipient"] == format!("users/{user}")
                        && e["subject"].as_str().is_some_and(|s| s.starts_with(rule_subject))
                })
                .cloned()
                .unwrap_or_else(|| panic!("{user}'s {rule_subject}: {first:#?}"))
        };
        let quiet = of("carol", "Wins");
        assert_eq!(quiet["state"], "EMAIL_STATE_HELD", "{quiet}");
        assert!(
            quiet["lastError"].as_str().is_some_and(|e| e.contains("quiet hours")),
            "{quiet}"
        );
        assert_eq!(
            of("carol", "Alert")["state"],
            "EMAIL_STATE_SENT",
            "critical bypasses quiet hours"
        );
        assert_eq!(of("dave", "Wins")["state"], "EMAIL_STATE_SENT");
        let digest = of("erin", "Wins");
        assert_eq!(digest["state"], "EMAIL_STATE_HELD", "{digest}");
        assert!(
            digest["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("daily digest at 08:00 Europe/Berlin")),
            "{digest}"
        );
        let refused = of("frank", "Wins");
        assert_eq!(refused["state"], "EMAIL_STATE_REFUSED", "{refused}");
        assert!(
            refused["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("opted out of `deals`")),
            "{refused}"
        );

        // In the app: carol muted deals (the critical alert still reaches her), dave did not.
        let carol = Rest::as_user(base, "acme", "carol", Role::Rep);
        let (_, inbox) = carol.get("/v1/notifications").await;
        let titles: Vec<&str> = inbox["notifications"]
            .as_array()
            .expect("inbox")
            .iter()
            .filter_map(|n| n["title"].as_str())
            .collect();
        assert!(
            titles.iter().all(|t| t.starts_with("Alert")) && titles.len() == 1,
            "{inbox}"
        );

        // Dave's second email of the hour is held by his cap.
        won_deal(&admin, &pipeline, "200").await;
        let second = emails_until(&admin, |all| {
            all.iter().filter(|e| e["recipient"] == "users/dave").count() == 2
                && all.iter().all(|e| e["state"] != "EMAIL_STATE_PENDING")
        })
        .await;
        let capped: Vec<&Value> = second
            .iter()
            .filter(|e| e["recipient"] == "users/dave" && e["state"] == "EMAIL_STATE_HELD")
            .collect();
        assert_eq!(capped.len(), 1, "{second:#?}");
        assert!(
            capped[0]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("1 emails an hour")),
            "{}",
            capped[0]
        );
        let mails = got.lock().expect("lock").clone();
        let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
        to.sort();
        assert_eq!(
            to,
            ["carol@acme.test", "carol@acme.test", "dave@acme.test"],
            "{mails:?}"
        );
        deployment.stop().await;
    }
}

#[tokio::test]
async fn a_rules_digest_window_and_hourly_cap_pace_its_emails_on_both_backends() {
    for postgres in BACKENDS {
        let (url, got) = smtp_server().await;
        let envs = [("CRM_SMTP_URL", url.as_str())];
        let Some(deployment) = Deployment::start_with(postgres, "notification_rule_pacing", &envs).await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        for user in ["gus", "hana"] {
            let (status, kept) = admin
                .patch(
                    &format!("/v1/users/{user}/notificationPreferences"),
                    json!({"emailAddress": format!("{user}@acme.test")}),
                )
                .await;
            assert_eq!(status, 200, "{kept}");
        }
        let rule = |name: &str, user: &str, pacing: Value| {
            let mut rule = json!({"displayName": name, "eventTypes": ["crm.pipeline.v1.DealWon"],
                   "recipients": [format!("users/{user}")], "channels": ["CHANNEL_EMAIL"],
                   "emailTemplate": {"subject": format!("{name}: {{{{ data.deal.displayName }}}}")}});
            for (key, value) in pacing.as_object().expect("pacing") {
                rule[key] = value.clone();
            }
            rule
        };
        // Out of range: refused, each named, and nothing kept.
        let (status, problem) = admin
            .post("/v1/rules", rule("Wrong", "gus", json!({"digestWindowMinutes": 10081})))
            .await;
        assert_eq!(
            (status, violation_fields(&problem)),
            (400, vec!["rule.digestWindowMinutes".to_owned()]),
            "{problem}"
        );
        let (status, problem) = admin
            .post("/v1/rules", rule("Wrong", "gus", json!({"maxEmailsPerHour": 1001})))
            .await;
        assert_eq!(
            (status, violation_fields(&problem)),
            (400, vec!["rule.maxEmailsPerHour".to_owned()]),
            "{problem}"
        );
        let (_, rules) = admin.get("/v1/rules").await;
        assert_eq!(rules["rules"].as_array().map(Vec::len), Some(0), "{rules}");
        // Gus hears of the rule's wins in one digest a week; Hana of one win an hour at most.
        let (status, paced) = admin
            .post("/v1/rules", rule("Paced", "gus", json!({"digestWindowMinutes": 10080})))
            .await;
        assert_eq!(status, 200, "{paced}");
        assert_eq!(paced["digestWindowMinutes"], 10080, "{paced}");
        let (status, capped) = admin
            .post("/v1/rules", rule("Capped", "hana", json!({"maxEmailsPerHour": 1})))
            .await;
        assert_eq!(status, 200, "{capped}");
        assert_eq!(capped["maxEmailsPerHour"], 1, "{capped}");
        let (_, read) = admin
            .get(&format!("/v1/{}", capped["name"].as_str().expect("name")))
            .await;
        assert_eq!(read["maxEmailsPerHour"], 1, "{read}");

        let pipeline = pipeline(&admin).await;
        // Two wins at once: the cap holds, however the two emails are claimed and attempted.
        won_deal(&admin, &pipeline, "100").await;
        won_deal(&admin, &pipeline, "200").await;
        let settled = emails_until(&admin, |all| {
            all.len() == 4 && all.iter().all(|e| e["state"] != "EMAIL_STATE_PENDING")
        })
        .await;
        let of = |user: &str, state: &str| -> Vec<Value> {
            settled
                .iter()
                .filter(|e| e["recipient"] == format!("users/{user}") && e["state"] == state)
                .cloned()
                .collect()
        };
        let held = of("gus", "EMAIL_STATE_HELD");
        assert_eq!(held.len(), 2, "{settled:#?}");
        assert!(
            held.iter().all(|e| e["lastError"]
                .as_str()
                .is_some_and(|r| r.contains("rule's digest every 10080 minutes"))),
            "{held:#?}"
        );
        assert_eq!(of("hana", "EMAIL_STATE_SENT").len(), 1, "{settled:#?}");
        let over = of("hana", "EMAIL_STATE_HELD");
        assert_eq!(over.len(), 1, "{settled:#?}");
        assert!(
            over[0]["lastError"]
                .as_str()
                .is_some_and(|r| r.contains("rule's 1 emails an hour")),
            "{}",
            over[0]
        );
        // Gus's are held for the weekly digest (one, if a week's end passed meanwhile).
        let mails = got.lock().expect("lock").clone();
        let to: Vec<String> = mails
            .iter()
            .filter(|m| !m.data.contains("held for you"))
            .flat_map(|m| m.to.clone())
            .collect();
        assert_eq!(to, ["hana@acme.test"], "{mails:?}");
        deployment.stop().await;
    }
}

#[tokio::test]
async fn email_reaches_a_contact_only_with_their_consent_on_both_backends() {
    for postgres in BACKENDS {
        let (url, got) = smtp_server().await;
        let envs = [("CRM_SMTP_URL", url.as_str())];
        let Some(deployment) = Deployment::start_with(postgres, "notification_contact_email", &envs).await else {
            continue;
        };
        let base = deployment.rest();
        let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
        let contact = |name: &str, address: &str, consent: &str| {
            json!({"givenName": name, "emails": [{"address": format!("other-{address}")}, {"address": address, "primary": true}],
                   "consent": {"email": {"status": consent, "source": "web-form"}}})
        };
        let (status, ann) = admin
            .post("/v1/contacts", contact("Ann", "ann@client.test", "OPTED_IN"))
            .await;
        assert_eq!(status, 201, "{ann}");
        let (status, ben) = admin
            .post("/v1/contacts", contact("Ben", "ben@client.test", "OPTED_OUT"))
            .await;
        assert_eq!(status, 201, "{ben}");
        let (status, rule) = admin
            .post(
                "/v1/rules",
                json!({"displayName": "Thank you", "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": ["contact"],
                       "emailTemplate": {"subject": "Thank you for {{ data.deal.displayName }}"}}),
            )
            .await;
        assert_eq!(status, 200, "{rule}");
        let pipeline = pipeline(&admin).await;
        let win = |contact: Value, title: &'static str| {
            won(
                &admin,
                json!({"displayName": title, "pipeline": pipeline["name"], "contact": contact,
                       "amount": {"amountMinor": "100", "currencyCode": "EUR"}}),
            )
        };
        win(ann["name"].clone(), "Ann's order").await;
        win(ben["name"].clone(), "Ben's order").await;
        let settled = emails_until(&admin, |all| {
            all.len() == 2
                && all
                    .iter()
                    .all(|e| e["state"] == "EMAIL_STATE_SENT" || e["state"] == "EMAIL_STATE_REFUSED")
        })
        .await;
        let to_ann = to(&settled, ann["name"].as_str().expect("name")).expect("ann's");
        assert_eq!(
            (to_ann["state"].as_str(), to_ann["address"].as_str()),
            (Some("EMAIL_STATE_SENT"), Some("ann@client.test")),
            "the primary address: {to_ann}"
        );
        let to_ben = to(&settled, ben["name"].as_str().expect("name")).expect("ben's");
        assert_eq!(to_ben["state"], "EMAIL_STATE_REFUSED", "{to_ben}");
        assert!(
            to_ben["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("has not consented")),
            "{to_ben}"
        );

        // Ann withdraws her consent: the next email to her is refused.
        let (status, _) = admin
            .patch(
                &format!("/v1/{}?updateMask=consent", ann["name"].as_str().expect("name")),
                json!({"consent": {"email": {"status": "OPTED_OUT", "source": "unsubscribe-link"}}}),
            )
            .await;
        assert_eq!(status, 200);
        // The consent reaches the notification service through the contact feed.
        let mut refused = false;
        for attempt in 0..20 {
            win(
                ann["name"].clone(),
                if attempt == 0 {
                    "Ann's second order"
                } else {
                    "Ann's next order"
                },
            )
            .await;
            let all = emails_until(&admin, |all| all.iter().all(|e| e["state"] != "EMAIL_STATE_PENDING")).await;
            let newest = &all[0];
            if newest["state"] == "EMAIL_STATE_REFUSED" {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(refused, "a withdrawn consent is honoured");
        let mails = got.lock().expect("lock").clone();
        assert!(mails.iter().all(|m| m.to != ["ben@client.test"]), "{mails:?}");
        deployment.stop().await;
    }
}

/// A daily digest through the real processes, on both backends: a user's emails wait, held,
/// until their digest time in their time zone; then one digest email listing them all goes
/// through SMTP, and each held email is marked digested. (The digest time is the next whole
/// minute at least 30 s away, so the test waits 30 to 90 s, both backends at once.)
#[tokio::test]
async fn held_emails_leave_as_one_digest_at_the_users_digest_time_on_both_backends() {
    let [sqlite, postgres] = BACKENDS;
    tokio::join!(digest_on(sqlite), digest_on(postgres));
}

async fn digest_on(postgres: bool) {
    use chrono::Timelike;
    let (url, got) = smtp_server().await;
    let envs = [("CRM_SMTP_URL", url.as_str())];
    let Some(deployment) = Deployment::start_with(postgres, "notification_digest", &envs).await else {
        return;
    };
    let base = deployment.rest();
    let admin = Rest::as_user(base, "acme", "alice", Role::Admin);
    let at = (chrono::Utc::now() + chrono::Duration::seconds(90))
        .with_second(0)
        .expect("a whole minute");
    let (status, kept) = admin
        .patch(
            "/v1/users/gina/notificationPreferences",
            json!({"emailAddress": "gina@acme.test", "dailyDigest": true, "timeZone": "UTC",
                   "digestTime": at.format("%H:%M").to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{kept}");
    let (status, rule) = admin
        .post(
            "/v1/rules",
            json!({"displayName": "Wins", "eventTypes": ["crm.pipeline.v1.DealWon"], "recipients": ["users/gina"],
                   "channels": ["CHANNEL_EMAIL"],
                   "emailTemplate": {"subject": "Won: {{ data.deal.displayName }}"}}),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    let pipeline = pipeline(&admin).await;
    won_deal(&admin, &pipeline, "100").await;
    won_deal(&admin, &pipeline, "200").await;
    let held = emails_until(&admin, |all| {
        all.len() == 2 && all.iter().all(|e| e["state"] == "EMAIL_STATE_HELD")
    })
    .await;
    assert!(
        held.iter().all(|e| e["lastError"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("daily digest at {} UTC", at.format("%H:%M"))))),
        "{held:#?}"
    );
    assert!(
        got.lock().expect("lock").is_empty(),
        "nothing is sent before the digest"
    );

    // At the digest time (its worker looks every 10 s): one email carries both.
    let mut last = Vec::new();
    for _ in 0..180 {
        let (_, listed) = admin.get("/v1/emails").await;
        last = listed["emails"].as_array().cloned().unwrap_or_default();
        let digested = last.iter().filter(|e| e["state"] == "EMAIL_STATE_DIGESTED").count();
        let sent = last.iter().filter(|e| e["state"] == "EMAIL_STATE_SENT").count();
        if digested == 2 && sent == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let digest = last
        .iter()
        .find(|e| e["state"] == "EMAIL_STATE_SENT")
        .unwrap_or_else(|| panic!("no digest was sent: {last:#?}"));
    assert_eq!(digest["subject"], "2 notifications held for you", "{digest}");
    assert_eq!(digest["recipient"], "users/gina");
    assert!(chrono::Utc::now() >= at, "the digest left before its time ({at})");
    let mails = got.lock().expect("lock").clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, ["gina@acme.test"]);
    for subject in ["Won: Deal of 100", "Won: Deal of 200"] {
        assert!(mails[0].data.contains(subject), "{subject} missing: {}", mails[0].data);
    }
    deployment.stop().await;
}
