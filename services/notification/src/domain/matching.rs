//! An event against a tenant's rules: the deliveries and in-app notifications it makes. Each
//! (rule, event, recipient) makes at most one; the store keeps it so across replays.

use chrono::{DateTime, Utc};
use crm_proto::crm::events::v1 as events;
use crm_proto::prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};
use uuid::Uuid;

use super::condition::{Condition, event_type};
use super::fatigue::Muted;
use super::members::Members;
use super::reach::contact_of;
use super::template::{self, Rendered};
use super::{Channel, EmailTemplate, Endpoint, NewDelivery, NewEmail, Notification, Recipient, Rule, RuleId};

/// The rule every tenant has without making it: a task's due time reaches its assignee, in
/// the inbox and by email.
pub const TASK_DUE_RULE: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_7a5c_0d0e);

/// The rule of every digest email (carrying what a user's digest or cap held back).
pub const DIGEST_RULE: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_d16e_5700);

/// The rule of the inbox notification telling an endpoint's maker it was disabled.
pub const ENDPOINT_DISABLED_RULE: Uuid = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0d15_ab1e);

/// A rule ready to match: its condition parsed against its event types.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub rule: Rule,
    condition: Condition,
}

impl Compiled {
    /// `rule` compiled, or every problem of its event types and condition (`event_types[i]`
    /// or `condition`, and the reason).
    pub fn new(rule: Rule) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut types = Vec::new();
        for (i, name) in rule.event_types.iter().enumerate() {
            match event_type(name) {
                Ok(t) => types.push(t),
                Err(reason) => problems.push((format!("event_types[{i}]"), reason)),
            }
        }
        let condition = if problems.is_empty() {
            Condition::parse(&rule.condition, &types).unwrap_or_else(|reasons| {
                problems.extend(reasons.into_iter().map(|r| ("condition".to_owned(), r)));
                Condition::default()
            })
        } else {
            Condition::default()
        };
        if problems.is_empty() {
            Ok(Self { rule, condition })
        } else {
            Err(problems)
        }
    }

    /// The rules every tenant has.
    pub fn builtin() -> Vec<Compiled> {
        let task_due = Rule {
            id: TASK_DUE_RULE,
            display_name: "Task due".to_owned(),
            event_types: vec!["crm.pipeline.v1.TaskDue".to_owned()],
            condition: String::new(),
            recipients: vec![Recipient::Owner],
            channels: vec![Channel::InApp, Channel::Email],
            email_template: EmailTemplate {
                subject: "Task due: {{ data.task.title }}".to_owned(),
                text: "Your task \"{{ data.task.title }}\" is due{% if data.task.dueTime %} ({{ data.task.dueTime }}){% endif %}.\n\n{{ data.task.notes }}\n".to_owned(),
                html: "<p>Your task <strong>{{ data.task.title }}</strong> is due{% if data.task.dueTime %} ({{ data.task.dueTime }}){% endif %}.</p>\n<p>{{ data.task.notes }}</p>\n".to_owned(),
            },
            category: "tasks".to_owned(),
            critical: false,
            pacing: super::fatigue::Pacing::default(),
            created_by: String::new(),
            create_time: DateTime::<Utc>::UNIX_EPOCH,
        };
        Compiled::new(task_due).into_iter().collect()
    }
}

/// What an event made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matched {
    pub deliveries: Vec<NewDelivery>,
    pub notifications: Vec<Notification>,
    pub emails: Vec<NewEmail>,
    /// What the events change of what may reach their contacts.
    pub reach: Vec<super::reach::ReachChange>,
    /// The members the events show at work.
    pub members: Vec<super::members::MemberSeen>,
}

impl Matched {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
            && self.notifications.is_empty()
            && self.emails.is_empty()
            && self.reach.is_empty()
            && self.members.is_empty()
    }

    pub fn extend(&mut self, other: Matched) {
        self.deliveries.extend(other.deliveries);
        self.notifications.extend(other.notifications);
        self.emails.extend(other.emails);
        self.reach.extend(other.reach);
        self.members.extend(other.members);
    }
}

/// The payload of `event` when it is an event a rule can match.
pub fn payload_of(event: &events::Event) -> Option<DynamicMessage> {
    let descriptor = event_type(&event.r#type).ok()?;
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    DynamicMessage::decode(descriptor, bytes).ok()
}

/// The first string `direct` finds on `payload`, else on one of its (singular) messages: a
/// field of the event or of the record it carries (a deal's, a task's).
pub(crate) fn find_in_payload(
    payload: &DynamicMessage,
    direct: impl Fn(&DynamicMessage) -> Option<String>,
) -> Option<String> {
    direct(payload).or_else(|| {
        payload.descriptor().fields().find_map(|field| {
            if field.is_list() || field.is_map() || !matches!(field.kind(), Kind::Message(_)) {
                return None;
            }
            match payload.get_field(&field).into_owned() {
                Value::Message(inner) => direct(&inner),
                _ => None,
            }
        })
    })
}

/// The user an event names as its record's assignee or owner: the first of `assignee`,
/// `owner` and `new_owner` set on the payload, or on one of its messages.
pub fn owner_of(payload: &DynamicMessage) -> Option<String> {
    const FIELDS: [&str; 3] = ["assignee", "owner", "new_owner"];
    find_in_payload(payload, |m| {
        FIELDS.iter().find_map(|name| {
            let field = m.descriptor().get_field_by_name(name)?;
            match m.get_field(&field).into_owned() {
                Value::String(s) if !s.is_empty() => Some(s),
                _ => None,
            }
        })
    })
}

/// The webhook body of an event (Standard Webhooks' recommended shape): its type, the time it
/// happened, the record it is about, its id, and its payload as proto3 JSON. Email templates
/// are rendered with it too.
pub fn webhook_body(event: &events::Event) -> Result<serde_json::Value, String> {
    let bytes = event.payload.as_ref().map(|p| p.value.as_slice()).unwrap_or_default();
    let data = crm_proto::json::encoded_to_json(bytes, &event.r#type)?;
    let timestamp = event
        .time
        .as_ref()
        .and_then(|t| crm_platform::time::from_timestamp(t).ok())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let body = serde_json::json!({
        "type": event.r#type,
        "timestamp": timestamp,
        "eventId": event.id,
        "subject": event.subject,
        "data": data,
    });
    Ok(body)
}

/// A tenant as matching sees it: its rules (with the built-in ones), its endpoints, the
/// categories its users muted, and who holds each role (loaded only when a rule names one).
#[derive(Debug, Clone, Default)]
pub struct TenantRules {
    pub rules: Vec<Compiled>,
    pub endpoints: Vec<Endpoint>,
    pub muted: Muted,
    pub members: Members,
}

impl TenantRules {
    /// Whether a rule names a role, whose members matching then needs.
    pub fn names_a_role(rules: &[Compiled]) -> bool {
        rules
            .iter()
            .any(|r| r.rule.recipients.iter().any(|to| matches!(to, Recipient::Role(_))))
    }
}

/// What `event` makes under its tenant's rules. A user who muted a rule's category in the app
/// gets no notification of it (unless the rule is critical); their emails are decided when
/// sent, where a refusal is kept.
pub fn match_event(event: &events::Event, tenant: &TenantRules, now: DateTime<Utc>) -> Matched {
    let TenantRules {
        rules,
        endpoints,
        muted,
        members,
    } = tenant;
    let mut matched = Matched::default();
    let candidates: Vec<&Compiled> = rules
        .iter()
        .filter(|r| r.rule.event_types.contains(&event.r#type))
        .collect();
    if candidates.is_empty() {
        return matched;
    }
    let Some(payload) = payload_of(event) else {
        tracing::warn!(kind = %event.r#type, sequence = event.sequence, "an event's payload does not decode: no rule matched it");
        ::metrics::counter!("crm_notification_undecodable_events_total").increment(1);
        return matched;
    };
    let mut body = None;
    let mut body_of = |event: &events::Event| -> Option<(serde_json::Value, String)> {
        match body.get_or_insert_with(|| webhook_body(event).map(|b| (b.to_string(), b))) {
            Ok((text, json)) => Some((json.clone(), text.clone())),
            Err(reason) => {
                tracing::warn!(kind = %event.r#type, %reason, "an event has no webhook body");
                None
            }
        }
    };
    for compiled in candidates.into_iter().filter(|r| r.condition.matches(&payload)) {
        let rule = &compiled.rule;
        let mut rendered: Option<Result<Rendered, String>> = None;
        let mut email =
            |recipient: Recipient, body_of: &mut dyn FnMut(&events::Event) -> Option<(serde_json::Value, String)>| {
                let rendered = rendered
                    .get_or_insert_with(|| {
                        let (json, _) =
                            body_of(event).ok_or_else(|| "the event has no payload to render".to_owned())?;
                        let context = template::context(&json, &RuleId(rule.id).name(), &rule.display_name);
                        rule.email_template.render(&context).map_err(|e| e.to_string())
                    })
                    .clone();
                NewEmail {
                    id: Uuid::now_v7(),
                    rule: rule.id,
                    contact: None,
                    category: rule.category.clone(),
                    critical: rule.critical,
                    pacing: rule.pacing,
                    recipient,
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    rendered,
                    create_time: now,
                }
            };
        for recipient in &rule.recipients {
            let users = match recipient {
                Recipient::Email(_) => {
                    matched.emails.push(email(recipient.clone(), &mut body_of));
                    continue;
                }
                Recipient::Contact => {
                    if let Some(contact) = contact_of(&payload, &event.subject) {
                        matched.emails.push(NewEmail {
                            contact: Some(contact),
                            ..email(Recipient::Contact, &mut body_of)
                        });
                    }
                    continue;
                }
                Recipient::Endpoint(id) => {
                    let Some(endpoint) = endpoints.iter().find(|e| e.id == *id && e.takes(&event.r#type)) else {
                        continue;
                    };
                    let Some((_, body)) = body_of(event) else {
                        continue;
                    };
                    matched.deliveries.push(NewDelivery {
                        id: Uuid::now_v7(),
                        rule: rule.id,
                        endpoint: endpoint.id,
                        event_id: event.id.clone(),
                        event_type: event.r#type.clone(),
                        body,
                        create_time: now,
                    });
                    continue;
                }
                Recipient::User(user) => vec![user.clone()],
                Recipient::Owner => match owner_of(&payload) {
                    Some(owner) => vec![owner],
                    None => continue,
                },
                Recipient::Role(role) => members.holding(*role).to_vec(),
            };
            for user in users {
                if rule.channels.contains(&Channel::Email) {
                    matched.emails.push(email(Recipient::User(user.clone()), &mut body_of));
                }
                if !rule.channels.contains(&Channel::InApp)
                    || (!rule.critical && muted.mutes(&user, &rule.category, Channel::InApp))
                {
                    continue;
                }
                let short = event.r#type.rsplit('.').next().unwrap_or_default();
                matched.notifications.push(Notification {
                    id: Uuid::now_v7(),
                    user,
                    rule: rule.id,
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    subject: event.subject.clone(),
                    title: format!("{}: {short} {}", rule.display_name, event.subject),
                    read: false,
                    seen: false,
                    archived: false,
                    create_time: now,
                });
            }
        }
    }
    matched
}

/// Events and rules the tests of matching and of the follower build alike.
#[cfg(test)]
pub(crate) mod fixtures {
    use chrono::Utc;
    use crm_proto::crm::common::v1::Money;
    use crm_proto::crm::events::v1 as events;
    use crm_proto::crm::pipeline::v1 as pipeline;
    use crm_proto::prost::{Message, Name};
    use uuid::Uuid;

    use crate::domain::{Channel, EmailTemplate, Recipient, Rule};

    /// `message` as an event of tenant `t1` about `subject`.
    pub(crate) fn event<M: Message + Name>(message: &M, subject: &str) -> events::Event {
        events::Event {
            id: Uuid::now_v7().to_string(),
            tenant: "t1".into(),
            r#type: M::full_name(),
            subject: subject.into(),
            sequence: 7,
            payload: Some(crm_proto::prost_types::Any {
                type_url: format!("type.googleapis.com/{}", M::full_name()),
                value: message.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    /// Bob's deal won for `amount_minor` euro cents.
    pub(crate) fn won(amount_minor: i64) -> events::Event {
        event(
            &pipeline::DealWon {
                deal: Some(pipeline::Deal {
                    amount: Some(Money {
                        amount_minor,
                        currency_code: "EUR".into(),
                    }),
                    owner: "bob".into(),
                    ..Default::default()
                }),
                transition: None,
            },
            "deals/1",
        )
    }

    /// A webhook endpoint of `DealWon` events made at `create_time`, unthrottled and healthy.
    pub(crate) fn endpoint(create_time: chrono::DateTime<Utc>) -> crate::domain::Endpoint {
        crate::domain::Endpoint {
            id: Uuid::now_v7(),
            url: "https://example.com/hooks".into(),
            event_types: vec!["crm.pipeline.v1.DealWon".into()],
            description: "ERP".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            create_time,
            previous_secret: String::new(),
            previous_until: None,
            created_by: "alice".into(),
            max_per_second: 0,
            failing_since: None,
            disable_time: None,
            disable_reason: String::new(),
        }
    }

    /// A rule of the `deals` category, in-app, on `types` when `condition` holds.
    pub(crate) fn rule(types: &[&str], condition: &str, recipients: Vec<Recipient>) -> Rule {
        Rule {
            id: Uuid::now_v7(),
            display_name: "Big wins".into(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            condition: condition.into(),
            recipients,
            channels: vec![Channel::InApp],
            email_template: EmailTemplate::default(),
            category: "deals".into(),
            critical: false,
            pacing: crate::domain::fatigue::Pacing::default(),
            created_by: "admin".into(),
            create_time: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crm_proto::crm::pipeline::v1 as pipeline;

    use super::fixtures::{event, won};
    use super::*;

    fn rule(types: &[&str], condition: &str, recipients: Vec<Recipient>) -> Compiled {
        Compiled::new(fixtures::rule(types, condition, recipients)).expect("rule")
    }

    #[test]
    fn a_matching_event_reaches_each_recipient_once() {
        // Of every event type.
        let endpoint = Endpoint {
            event_types: vec![],
            ..fixtures::endpoint(Utc::now())
        };
        let only_lost = Endpoint {
            id: Uuid::now_v7(),
            event_types: vec!["crm.pipeline.v1.DealLost".into()],
            ..endpoint.clone()
        };
        let rules = [rule(
            &["crm.pipeline.v1.DealWon"],
            "deal.amount.amount_minor >= 1000000",
            vec![
                Recipient::Endpoint(endpoint.id),
                Recipient::Endpoint(only_lost.id),
                Recipient::User("carol".into()),
                Recipient::Owner,
            ],
        )];
        let tenant = TenantRules {
            rules: rules.to_vec(),
            endpoints: vec![endpoint.clone(), only_lost],
            muted: Muted::default(),
            members: Members::default(),
        };
        let big = match_event(&won(2_000_000), &tenant, Utc::now());
        assert_eq!(big.deliveries.len(), 1);
        assert_eq!(big.deliveries[0].endpoint, endpoint.id);
        let body: serde_json::Value = serde_json::from_str(&big.deliveries[0].body).expect("json");
        assert_eq!(body["type"], "crm.pipeline.v1.DealWon");
        assert_eq!(body["data"]["deal"]["amount"]["amountMinor"], "2000000");
        let users: Vec<&str> = big.notifications.iter().map(|n| n.user.as_str()).collect();
        assert_eq!(users, ["carol", "bob"]);
        assert!(match_event(&won(999_999), &tenant, Utc::now()).is_empty());
        // A user who muted the rule's category in the app gets no notification; critical
        // rules reach them anyway.
        let mut muted = tenant.clone();
        muted.muted.0.insert(
            "carol".into(),
            vec![crate::domain::fatigue::Mute {
                category: "deals".into(),
                channel: Channel::InApp,
            }],
        );
        let users: Vec<String> = match_event(&won(2_000_000), &muted, Utc::now())
            .notifications
            .into_iter()
            .map(|n| n.user)
            .collect();
        assert_eq!(users, ["bob"]);
        muted.rules[0].rule.critical = true;
        assert_eq!(match_event(&won(2_000_000), &muted, Utc::now()).notifications.len(), 2);
    }

    #[test]
    fn a_role_reaches_each_member_holding_it_once() {
        use crm_platform::identity::Role;
        let rules = [rule(
            &["crm.pipeline.v1.DealWon"],
            "deal.amount.amount_minor >= 1000000",
            vec![Recipient::Role(Role::Manager), Recipient::Owner],
        )];
        let mut tenant = TenantRules {
            rules: rules.to_vec(),
            members: Members::new(
                [
                    ("mia", vec![Role::Manager]),
                    ("bob", vec![Role::Rep, Role::Manager]),
                    ("rex", vec![Role::Rep]),
                ]
                .map(|(user, roles)| (user.to_owned(), roles, Utc::now().date_naive())),
            ),
            ..TenantRules::default()
        };
        assert!(TenantRules::names_a_role(&tenant.rules));
        assert!(!TenantRules::names_a_role(&Compiled::builtin()));
        let users: Vec<String> = match_event(&won(2_000_000), &tenant, Utc::now())
            .notifications
            .into_iter()
            .map(|n| n.user)
            .collect();
        // bob is a manager and the owner: two recipients, one (rule, event, user) kept by the
        // store.
        assert_eq!(users, ["bob", "mia", "bob"]);
        tenant.rules[0].rule.channels = vec![Channel::Email];
        let emailed: Vec<String> = match_event(&won(2_000_000), &tenant, Utc::now())
            .emails
            .into_iter()
            .map(|e| e.recipient.name())
            .collect();
        assert_eq!(emailed, ["users/bob", "users/mia", "users/bob"]);
        assert_eq!(Recipient::parse("roles/manager"), Ok(Recipient::Role(Role::Manager)));
        assert_eq!(Recipient::Role(Role::Rep).name(), "roles/rep");
        assert!(Recipient::parse("roles/service").is_err());
    }

    #[test]
    fn a_due_task_reaches_its_assignee_out_of_the_box() {
        let due = event(
            &pipeline::TaskDue {
                task: Some(pipeline::Task {
                    title: "Call Ann".into(),
                    assignee: "dave".into(),
                    ..Default::default()
                }),
            },
            "tasks/1",
        );
        let tenant = TenantRules {
            rules: Compiled::builtin(),
            ..TenantRules::default()
        };
        let matched = match_event(&due, &tenant, Utc::now());
        assert_eq!(matched.notifications.len(), 1);
        assert_eq!(matched.notifications[0].user, "dave");
        assert_eq!(matched.notifications[0].rule, TASK_DUE_RULE);
        assert_eq!(matched.emails.len(), 1);
        assert_eq!(matched.emails[0].recipient, Recipient::User("dave".into()));
        let rendered = matched.emails[0].rendered.clone().expect("rendered");
        assert_eq!(rendered.subject, "Task due: Call Ann");
        assert!(rendered.html.contains("<strong>Call Ann</strong>"), "{}", rendered.html);
    }

    #[test]
    fn an_email_recipient_gets_the_rendered_template_and_a_failing_one_keeps_its_reason() {
        let mut good = rule(
            &["crm.pipeline.v1.DealWon"],
            "",
            vec![Recipient::Email("cfo@example.com".into()), Recipient::Owner],
        );
        good.rule.channels = vec![Channel::Email];
        good.rule.email_template.subject =
            "Won {{ data.deal.amount.amountMinor }} {{ data.deal.amount.currencyCode }}".into();
        let mut bad = good.clone();
        bad.rule.id = Uuid::now_v7();
        bad.rule.recipients = vec![Recipient::Email("cfo@example.com".into())];
        bad.rule.email_template.subject = "{{ data.nothing.here }}".into();
        let tenant = TenantRules {
            rules: vec![good.clone(), bad],
            ..TenantRules::default()
        };
        let matched = match_event(&won(5000), &tenant, Utc::now());
        assert!(matched.notifications.is_empty(), "email only");
        let to: Vec<String> = matched.emails.iter().map(|e| e.recipient.name()).collect();
        assert_eq!(to, ["mailto:cfo@example.com", "users/bob", "mailto:cfo@example.com"]);
        assert_eq!(
            matched.emails[0].rendered.as_ref().expect("renders").subject,
            "Won 5000 EUR"
        );
        let reason = matched.emails[2].rendered.clone().expect_err("fails");
        assert!(reason.starts_with("subject: "), "{reason}");
    }
}
