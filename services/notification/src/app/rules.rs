//! Rules: admins and managers make, read and remove them; a rule is checked whole when saved
//! (its event types, its condition against every type, its recipients).

use crm_platform::error::Violations;
use crm_platform::paging::{Page, PageRequest};
use crm_platform::{ApiError, Principal};
use uuid::Uuid;

use super::{NotificationApp, ensure_manager};
use crate::domain::matching::Compiled;
use crate::domain::{MAX_RULES, Recipient, Rule};

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
}

impl NotificationApp {
    pub async fn create_rule(&self, who: &Principal, spec: RuleSpec) -> Result<Rule, ApiError> {
        ensure_manager(who, "rules")?;
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
            created_by: who.user.as_str().to_owned(),
            create_time: self.clock.now(),
        };
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
        v.finish()?;
        if self.store.rules(&who.tenant, None, MAX_RULES).await?.len() >= MAX_RULES {
            return Err(ApiError::invalid_field(
                "rule",
                format!("a tenant has at most {MAX_RULES} rules"),
            ));
        }
        self.store.create_rule(&who.tenant, &rule).await?;
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
