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
use crate::domain::members::{MemberSeen, member_seen};
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
        // The members each tenant's usage reports of this batch showed so far: an event
        // after a report in the batch reaches a role as the report left it.
        let mut seen: BTreeMap<String, Vec<MemberSeen>> = BTreeMap::new();
        for event in batch {
            let Ok(tenant) = TenantId::parse(&event.tenant) else {
                tracing::warn!(sequence = event.sequence, tenant = %event.tenant, "an event of no valid tenant: skipped");
                continue;
            };
            // A tenant's rules are read only for an event a rule can match (not for a usage
            // report, say): a batch of those alone reads none.
            let mut matched = if event_type(&event.r#type).is_ok() {
                if !rules.contains_key(tenant.as_str()) {
                    let mut loaded = self.tenant_rules(&tenant).await?;
                    for member in seen.get(tenant.as_str()).into_iter().flatten() {
                        loaded.members.saw(member);
                    }
                    rules.insert(tenant.as_str().to_owned(), loaded);
                }
                match_event(event, &rules[tenant.as_str()], now)
            } else {
                Matched::default()
            };
            matched.reach = reach_changes(event);
            if let Some(member) = member_seen(event) {
                if let Some(loaded) = rules.get_mut(tenant.as_str()) {
                    loaded.members.saw(&member);
                }
                seen.entry(tenant.as_str().to_owned()).or_default().push(member.clone());
                matched.members.push(member);
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use crm_platform::identity::Role;
    use crm_proto::prost::{Message, Name};

    use super::*;
    use crate::domain::Recipient;
    use crate::domain::matching::fixtures;
    use crate::store::{NotificationStore, SQLITE_MIGRATIONS, SqliteNotificationStore, View};

    /// `message` as tenant acme's event at `sequence`.
    fn event<M: Message + Name>(message: &M, sequence: u64) -> events::Event {
        events::Event {
            tenant: "acme".into(),
            sequence,
            ..fixtures::event(message, "deals/1")
        }
    }

    #[tokio::test]
    async fn an_event_after_a_usage_report_in_its_batch_reaches_the_role_the_report_shows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = crm_platform::db::open_sqlite(&dir.path().join("notification.db"), &SQLITE_MIGRATIONS)
            .await
            .expect("sqlite");
        let store = Arc::new(SqliteNotificationStore::new(pool));
        let acme = TenantId::parse("acme").expect("tenant");
        let rule = fixtures::rule(
            &["crm.pipeline.v1.DealWon"],
            "deal.amount.amount_minor >= 100",
            vec![Recipient::Role(Role::Manager)],
        );
        store.create_rule(&acme, &rule).await.expect("rule");
        let report = |user: &str, sequence| {
            event(
                &events::UsageReported {
                    user: user.into(),
                    area: "crm.pipeline.v1.PipelineService".into(),
                    day: Utc::now().date_naive().to_string(),
                    requests: 1,
                    changes: 1,
                    roles: vec!["manager".into()],
                },
                sequence,
            )
        };
        let won = |sequence| events::Event {
            tenant: "acme".into(),
            sequence,
            ..fixtures::won(5000)
        };
        let matching = Matching::new(NotificationApp::new(Arc::clone(&store) as Arc<dyn NotificationStore>));
        let inbox = |user: &'static str| {
            let (store, acme) = (Arc::clone(&store), acme.clone());
            async move {
                store
                    .notifications(&acme, user, View::Inbox, None, 10)
                    .await
                    .expect("inbox")
                    .len()
            }
        };
        // ann is first seen at work as a manager in the batch of the win that follows (the
        // rules are read after her report).
        assert!(
            matching
                .apply(FEEDS[1].consumer, 0, &[report("ann", 1), won(2)])
                .await
                .expect("apply")
        );
        assert_eq!(inbox("ann").await, 1);
        // cy is first seen between two wins of a batch (the rules read before his report):
        // he hears of the second only; ann, kept a member, of both.
        assert!(
            matching
                .apply(FEEDS[1].consumer, 2, &[won(3), report("cy", 4), won(5)])
                .await
                .expect("apply")
        );
        assert_eq!(inbox("cy").await, 1);
        assert_eq!(inbox("ann").await, 3);
        assert_eq!(store.checkpoint(FEEDS[1].consumer).await.expect("checkpoint"), 5);
    }
}
