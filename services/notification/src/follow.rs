//! Following the contact, pipeline and analytics feeds: each event is matched against its
//! tenant's rules (and the built-in ones), and what it makes, with the checkpoint, commits in
//! one transaction: each (rule, event, recipient) yields exactly one delivery or notification,
//! whatever crashes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use crm_platform::TenantId;
use crm_platform::consumer::Sink;
use crm_proto::crm::events::v1 as events;

use crate::app::NotificationApp;
use crate::domain::MAX_RULES;
use crate::domain::condition::event_type;
use crate::domain::matching::{Compiled, Matched, TenantRules, match_event};
use crate::domain::members::member_seen;
use crate::domain::reach::reach_changes;

/// A feed this service follows.
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    /// The followed service's name among the suite's.
    pub service: &'static str,
    /// The producer name in the feed's envelopes: the package of its messages.
    pub source: &'static str,
    /// The checkpoint name of the subscription.
    pub consumer: &'static str,
}

/// The feeds this service follows.
pub const FEEDS: [Feed; 3] = [
    Feed {
        service: "contact",
        source: "crm.contact.v1",
        consumer: "notification<-contact",
    },
    Feed {
        service: "pipeline",
        source: "crm.pipeline.v1",
        consumer: "notification<-pipeline",
    },
    Feed {
        service: "analytics",
        source: "crm.analytics.v1",
        consumer: "notification<-analytics",
    },
];

/// The consumer's sink: matching into the notification store.
pub struct Matching {
    app: NotificationApp,
}

impl Matching {
    pub fn new(app: NotificationApp) -> Self {
        Self { app }
    }

    /// A tenant's rules (compiled; one saved before a change of the catalogue that no longer
    /// compiles is skipped and logged) with the built-in ones, and what else matching needs
    /// of the tenant.
    async fn tenant_rules(&self, tenant: &TenantId) -> anyhow::Result<TenantRules> {
        let mut rules = Compiled::builtin();
        for rule in self.app.store().rules(tenant, None, MAX_RULES).await? {
            let id = rule.id;
            match Compiled::new(rule) {
                Ok(compiled) => rules.push(compiled),
                Err(problems) => tracing::warn!(%tenant, rule = %id, ?problems, "a rule no longer compiles: skipped"),
            }
        }
        Ok(self.app.tenant_rules(tenant, rules).await?)
    }
}

#[async_trait]
impl Sink for Matching {
    async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64> {
        Ok(self.app.store().checkpoint(consumer).await?)
    }

    async fn apply(&self, consumer: &str, previous: u64, batch: &[events::Event]) -> anyhow::Result<bool> {
        let Some(last) = batch.last() else { return Ok(true) };
        let now = self.app.clock().now();
        let mut rules: BTreeMap<String, TenantRules> = BTreeMap::new();
        let mut made: BTreeMap<String, Matched> = BTreeMap::new();
        for event in batch {
            let Ok(tenant) = TenantId::parse(&event.tenant) else {
                tracing::warn!(sequence = event.sequence, tenant = %event.tenant, "an event of no valid tenant: skipped");
                continue;
            };
            // A tenant's rules are read only for an event a rule can match (not for a usage
            // report, say): a batch of those alone reads none.
            let mut matched = if event_type(&event.r#type).is_ok() {
                if !rules.contains_key(tenant.as_str()) {
                    let loaded = self.tenant_rules(&tenant).await?;
                    rules.insert(tenant.as_str().to_owned(), loaded);
                }
                match_event(event, &rules[tenant.as_str()], now)
            } else {
                Matched::default()
            };
            matched.reach = reach_changes(event);
            matched.members = member_seen(event).into_iter().collect();
            if !matched.is_empty() {
                made.entry(tenant.as_str().to_owned()).or_default().extend(matched);
            }
        }
        let matched: Vec<(TenantId, Matched)> = made
            .into_iter()
            .filter_map(|(tenant, m)| Some((TenantId::parse(&tenant).ok()?, m)))
            .collect();
        let deliveries = matched.iter().any(|(_, m)| !m.deliveries.is_empty());
        let emails = matched.iter().any(|(_, m)| !m.emails.is_empty());
        let moved = self
            .app
            .store()
            .record(consumer, previous, last.sequence, &matched)
            .await?;
        if moved && deliveries {
            self.app.due().notify_one();
        }
        if moved && emails {
            self.app.mail_due().notify_one();
        }
        if moved {
            let users: std::collections::BTreeSet<(&str, &str)> = matched
                .iter()
                .flat_map(|(tenant, m)| m.notifications.iter().map(move |n| (tenant.as_str(), n.user.as_str())))
                .collect();
            for (tenant, user) in users {
                self.app.announce(crate::app::InboxChange {
                    tenant: tenant.to_owned(),
                    user: user.to_owned(),
                });
            }
        }
        Ok(moved)
    }
}
