//! Rules: admins and managers make, read and remove them; a rule is checked whole when saved
//! (its event types, its condition against every type, its recipients).

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::{NotificationApp, ensure_manager};
use crate::domain::fatigue::{self, DEFAULT_CATEGORY};
use crate::domain::matching::Compiled;
use crate::domain::matching::webhook_body;
use crate::domain::template::{self, Rendered};
use crate::domain::{Channel, EmailTemplate, MAX_RULES, Recipient, Rule, RuleId};

/// Most event types of a rule.
pub const MAX_RULE_TYPES: usize = 50;
/// Longest condition, in characters.
pub const MAX_CONDITION: usize = 2048;
/// Most recipients of a rule.
pub const MAX_RECIPIENTS: usize = 50;

/// What a request asks of a new rule.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub display_name: String,
    pub event_types: Vec<String>,
    pub condition: String,
    pub recipients: Vec<String>,
    /// How its users hear of it (None: a value that is no channel); empty: in the app.
    pub channels: Vec<Option<Channel>>,
    pub email_template: EmailTemplate,
    /// Empty: `general`.
    pub category: String,
    pub critical: bool,
    /// Its digest window, in minutes, and its emails a user gets an hour (0: none).
    pub digest_window_minutes: i32,
    pub max_emails_per_hour: i32,
}

/// A sample event to preview a rule's email with: its type (empty: the rule's first) and its
/// payload as proto3 JSON (empty: an empty payload).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub event_type: String,
    pub payload: String,
}

/// Channels a rule may name: there are two.
pub const MAX_CHANNELS: usize = 2;
/// Longest sample payload, in bytes.
pub const MAX_SAMPLE: usize = 64 * 1024;

impl NotificationApp {
    pub async fn create_rule(&self, who: &Principal, spec: RuleSpec) -> Result<Rule, ApiError> {
        ensure_manager(who, "rules")?;
        let rule = self.checked_rule(who, spec).await?;
        if !self.store.create_rule(&who.tenant, &rule).await? {
            return Err(ApiError::invalid_field(
                "rule",
                format!("a tenant has at most {MAX_RULES} rules"),
            ));
        }
        Ok(rule)
    }

    /// The email `spec` would send for `sample`, rendered as it would be, nothing saved or
    /// sent; the rule is checked whole as when it is created.
    pub async fn preview_email(&self, who: &Principal, spec: RuleSpec, sample: Sample) -> Result<Rendered, ApiError> {
        ensure_manager(who, "rules")?;
        let mut v = Violations::new("");
        if sample.payload.len() > MAX_SAMPLE {
            v.add("sample_payload", format!("is longer than {MAX_SAMPLE} bytes"));
        }
        let rule = self.checked_rule_with(who, spec, v).await?;
        let mut v = Violations::new("");
        let event_type = if sample.event_type.is_empty() {
            rule.event_types.first().cloned().unwrap_or_default()
        } else if rule.event_types.contains(&sample.event_type) {
            sample.event_type
        } else {
            v.add("sample_event_type", "is not one of the rule's event types");
            String::new()
        };
        v.finish()?;
        let payload = if sample.payload.trim().is_empty() {
            "{}"
        } else {
            sample.payload.as_str()
        };
        let bytes = serde_json::from_str::<serde_json::Value>(payload)
            .map_err(|e| e.to_string())
            .and_then(|json| crm_proto::json::json_to_encoded(&json, &event_type))
            .map_err(|reason| ApiError::invalid_field("sample_payload", reason))?;
        let event = crm_proto::crm::events::v1::Event {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: who.tenant.as_str().to_owned(),
            r#type: event_type.clone(),
            subject: String::new(),
            time: Some(crm_platform::time::timestamp(self.clock.now())),
            payload: Some(crm_proto::prost_types::Any {
                type_url: format!("type.googleapis.com/{event_type}"),
                value: bytes,
            }),
            ..Default::default()
        };
        let body = webhook_body(&event).map_err(|reason| ApiError::invalid_field("sample_payload", reason))?;
        let context = template::context(&body, &RuleId(rule.id).name(), &rule.display_name);
        rule.email_template
            .render(&context)
            .map_err(|e| ApiError::invalid_field(format!("rule.email_template.{}", e.part), e.reason))
    }

    /// `spec` as a rule, or a 400 naming each of its problems.
    pub(super) async fn checked_rule(&self, who: &Principal, spec: RuleSpec) -> Result<Rule, ApiError> {
        self.checked_rule_with(who, spec, Violations::new("")).await
    }

    /// `spec` as a rule, or a 400 naming each of its problems (fields under `rule.`) and
    /// `others`, the problems of the rest of the request: every one in one answer.
    pub(super) async fn checked_rule_with(
        &self,
        who: &Principal,
        spec: RuleSpec,
        mut others: Violations,
    ) -> Result<Rule, ApiError> {
        let mut v = Violations::new("rule.");
        let display_name = spec.display_name.trim().to_owned();
        if display_name.is_empty() {
            v.add("display_name", "is required");
        } else {
            v.check("display_name", crm_platform::text::check(&display_name, 200, false));
        }
        if spec.event_types.is_empty() {
            v.add("event_types", "at least one event type is required");
        }
        let types = v.bounded("event_types", &spec.event_types, MAX_RULE_TYPES).to_vec();
        if spec.recipients.is_empty() {
            v.add("recipients", "at least one recipient is required");
        }
        let mut channels = Vec::new();
        for (i, channel) in v.bounded("channels", &spec.channels, MAX_CHANNELS).iter().enumerate() {
            match channel {
                Some(channel) if !channels.contains(channel) => channels.push(*channel),
                Some(_) => {}
                None => v.add(format!("channels[{i}]"), "must be CHANNEL_IN_APP or CHANNEL_EMAIL"),
            }
        }
        let mut recipients = Vec::new();
        for (i, raw) in v
            .bounded("recipients", &spec.recipients, MAX_RECIPIENTS)
            .iter()
            .enumerate()
        {
            match Recipient::parse(raw) {
                Ok(Recipient::Endpoint(id)) if self.store.endpoint(&who.tenant, id).await?.is_none() => {
                    v.add(
                        format!("recipients[{i}]"),
                        format!("no webhook endpoint `{raw}` in this tenant"),
                    );
                }
                Ok(r) if recipients.contains(&r) => v.add(format!("recipients[{i}]"), "is named twice"),
                Ok(r) => recipients.push(r),
                Err(reason) => v.add(format!("recipients[{i}]"), reason),
            }
        }
        let rule = Rule {
            id: Uuid::now_v7(),
            display_name,
            event_types: types,
            condition: spec.condition,
            recipients,
            channels: if channels.is_empty() {
                vec![Channel::InApp]
            } else {
                channels.sort();
                channels
            },
            email_template: spec.email_template,
            category: if spec.category.trim().is_empty() {
                DEFAULT_CATEGORY.to_owned()
            } else {
                v.check("category", fatigue::category(&spec.category))
                    .unwrap_or_default()
            },
            critical: spec.critical,
            pacing: fatigue::Pacing {
                // A negative number is out of range too.
                digest_window_minutes: u32::try_from(spec.digest_window_minutes).unwrap_or(u32::MAX),
                max_emails_per_hour: u32::try_from(spec.max_emails_per_hour).unwrap_or(u32::MAX),
            },
            created_by: who.user.as_str().to_owned(),
            create_time: self.clock.now(),
        };
        for (field, reason) in rule.pacing.problems() {
            v.add(field, reason);
        }
        let condition_text = v.check(
            "condition",
            crm_platform::text::check(&rule.condition, MAX_CONDITION, false),
        );
        if !rule.event_types.is_empty()
            && condition_text.is_some()
            && let Err(problems) = Compiled::new(rule.clone())
        {
            for (field, reason) in problems {
                v.add(field, reason);
            }
        }
        for (part, reason) in rule.email_template.problems() {
            v.add(format!("email_template.{part}"), reason);
        }
        others.merge(v);
        others.finish()?;
        Ok(rule)
    }

    pub async fn rule(&self, who: &Principal, id: Uuid) -> Result<Rule, ApiError> {
        ensure_manager(who, "rules")?;
        self.store
            .rule(&who.tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found("rule"))
    }

    pub async fn rules(&self, who: &Principal, page: &PageRequest<Uuid>) -> Result<Page<Rule>, ApiError> {
        ensure_manager(who, "rules")?;
        let listed = self.store.rules(&who.tenant, page.after, page.fetch()).await?;
        Ok(page.page(listed, |r| r.id))
    }

    pub async fn delete_rule(&self, who: &Principal, id: Uuid) -> Result<(), ApiError> {
        ensure_manager(who, "rules")?;
        if self.store.delete_rule(&who.tenant, id).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("rule"))
        }
    }
}
