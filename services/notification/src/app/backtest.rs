//! A rule's backtest: a rule being drafted, evaluated against the retained events of the
//! last N days (read from the feeds as the caller, so only their tenant's, from the window's
//! start: each feed seeks it by time, so older retained events are not read), answers how many
//! webhooks, emails and in-app notifications it would have made, to whom, with samples;
//! nothing is saved or sent. The read is bounded in events and time; a bounded answer says so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_platform::error::Violations;
use crm_platform::{ApiError, ErrorCode, Principal};

use super::rules::RuleSpec;
use super::{NotificationApp, ensure_manager};
use crate::domain::matching::{Compiled, match_event};
use crate::history::Visit;

/// Days a backtest looks back by default, and at most (the feeds retain 30 days by default).
pub const DEFAULT_DAYS: i32 = 7;
pub const MAX_DAYS: i32 = 30;
/// Events a backtest reads at most, and how long it may read.
const MAX_READ: u64 = 500_000;
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// Backtests running at once in one process, at most.
pub const AT_ONCE: usize = 2;
/// Matched events kept as samples, and recipients listed, at most.
const SAMPLES: usize = 10;
const MAX_RECIPIENTS: usize = 100;

/// One matched event, as a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestSample {
    pub event_id: String,
    pub event_type: String,
    pub subject: String,
    pub time: Option<DateTime<Utc>>,
    /// Who it would have reached (recipient names, each channel once).
    pub recipients: Vec<String>,
}

/// What a rule would have made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backtest {
    /// The window's start.
    pub since: Option<DateTime<Utc>>,
    /// Events of the rule's types in the window.
    pub events: u64,
    /// Those its condition matched.
    pub matched: u64,
    pub webhooks: u64,
    pub emails: u64,
    pub notifications: u64,
    /// Who would have heard of it, most first: (recipient, how many times).
    pub recipients: Vec<(String, u64)>,
    pub samples: Vec<BacktestSample>,
    /// Whether the read stopped at its bound before the head of every feed.
    pub truncated: bool,
}

impl NotificationApp {
    /// Backtests `spec` over the last `days` (0: [`DEFAULT_DAYS`]) with the caller's
    /// `credentials`.
    pub async fn backtest(
        &self,
        who: &Principal,
        credentials: &str,
        spec: RuleSpec,
        days: i32,
    ) -> Result<Backtest, ApiError> {
        ensure_manager(who, "rules")?;
        let days = if days == 0 { DEFAULT_DAYS } else { days };
        let mut v = Violations::new("");
        if !(1..=MAX_DAYS).contains(&days) {
            v.add("days", format!("must be 1 to {MAX_DAYS}"));
        }
        let rule = self.checked_rule_with(who, spec, v).await?;
        let types = rule.event_types.clone();
        let compiled = Compiled::new(rule).map_err(|problems| {
            let reasons: Vec<String> = problems.into_iter().map(|(f, r)| format!("{f}: {r}")).collect();
            ApiError::invalid_field("rule", reasons.join("; "))
        })?;
        let Some(history) = self.history.clone() else {
            return Err(ApiError::unavailable(
                "this process reads no feeds: backtests are not available",
            ));
        };
        // A backtest reads and matches up to its bound: a few at once per process, and a
        // caller past them is told to retry rather than queued behind them.
        let _running = self.backtests.try_acquire().map_err(|_| {
            ApiError::new(
                ErrorCode::ResourceExhausted,
                "BACKTESTS_BUSY",
                format!("{AT_ONCE} backtests are running here; retry in a moment"),
            )
        })?;
        let tenant = self.tenant_rules(&who.tenant, vec![compiled]).await?;
        let now = self.clock.now();
        let since = now - chrono::Duration::days(i64::from(days));
        let mut result = Backtest {
            since: Some(since),
            ..Backtest::default()
        };
        let mut recipients: BTreeMap<String, u64> = BTreeMap::new();
        let (started, mut read) = (Instant::now(), 0u64);
        let mut visit = |event: crm_proto::crm::events::v1::Event| {
            read += 1;
            if read > MAX_READ || started.elapsed() > TIME_LIMIT {
                return Visit::Stop;
            }
            let time = event
                .time
                .as_ref()
                .and_then(|t| crm_platform::time::from_timestamp(t).ok());
            if event.tenant != who.tenant.as_str() || time.is_none_or(|t| t < since) {
                return Visit::More;
            }
            result.events += 1;
            let made = match_event(&event, &tenant, now);
            if made.is_empty() {
                return Visit::More;
            }
            result.matched += 1;
            result.webhooks += made.deliveries.len() as u64;
            result.emails += made.emails.len() as u64;
            result.notifications += made.notifications.len() as u64;
            let mut to: Vec<String> = made
                .deliveries
                .iter()
                .map(|d| crate::domain::EndpointId(d.endpoint).name())
                .chain(made.emails.iter().map(|e| e.recipient.name()))
                .chain(
                    made.notifications
                        .iter()
                        .map(|n| format!("{}{}", crate::domain::USERS, n.user)),
                )
                .collect();
            for name in &to {
                *recipients.entry(name.clone()).or_default() += 1;
            }
            if result.samples.len() < SAMPLES {
                to.sort();
                to.dedup();
                result.samples.push(BacktestSample {
                    event_id: event.id.clone(),
                    event_type: event.r#type.clone(),
                    subject: event.subject.clone(),
                    time,
                    recipients: to,
                });
            }
            Visit::More
        };
        result.truncated = history.read(credentials, &types, since, &mut visit).await?;
        let mut recipients: Vec<(String, u64)> = recipients.into_iter().collect();
        recipients.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        recipients.truncate(MAX_RECIPIENTS);
        result.recipients = recipients;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use crm_platform::{Principal, Role, TenantId, UserId};
    use crm_proto::crm::events::v1 as events;
    use tokio::sync::watch;

    use super::*;
    use crate::domain::EmailTemplate;
    use crate::history::History;

    /// Feeds that hold every read until the gate opens; counts the reads begun.
    struct Gated {
        open: watch::Receiver<bool>,
        begun: watch::Sender<usize>,
    }

    #[async_trait]
    impl History for Gated {
        async fn read(
            &self,
            _credentials: &str,
            _types: &[String],
            _since: DateTime<Utc>,
            _visit: &mut (dyn FnMut(events::Event) -> Visit + Send),
        ) -> Result<bool, ApiError> {
            self.begun.send_modify(|n| *n += 1);
            let mut open = self.open.clone();
            let _ = open.wait_for(|open| *open).await;
            Ok(false)
        }
    }

    fn draft() -> RuleSpec {
        RuleSpec {
            display_name: "Wins".into(),
            event_types: vec!["crm.pipeline.v1.DealWon".into()],
            condition: String::new(),
            recipients: vec!["users/alice".into()],
            channels: Vec::new(),
            email_template: EmailTemplate::default(),
            category: String::new(),
            critical: false,
            digest_window_minutes: 0,
            max_emails_per_hour: 0,
        }
    }

    #[tokio::test]
    async fn backtests_past_the_bound_are_told_to_retry_and_the_bound_frees_as_they_end() {
        let (_dir, store) = crate::store::sqlite_for_test().await;
        let (gate, open) = watch::channel(false);
        let (begun, mut reads) = watch::channel(0);
        let app = NotificationApp::new(store).with_history(Arc::new(Gated { open, begun }));
        let manager = Principal {
            tenant: TenantId::parse("acme").expect("tenant"),
            user: UserId::parse("mia").expect("user"),
            roles: vec![Role::Manager],
        };
        let running: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (app, manager) = (app.clone(), manager.clone());
                tokio::spawn(async move { app.backtest(&manager, "Bearer t", draft(), 7).await })
            })
            .collect();
        reads.wait_for(|n| *n == AT_ONCE).await.expect("reads begun");
        let refused = tokio::time::timeout(Duration::from_secs(5), app.backtest(&manager, "Bearer t", draft(), 7))
            .await
            .expect("answered at once, not queued")
            .expect_err("one too many");
        assert_eq!(
            (refused.code, refused.reason.as_ref()),
            (ErrorCode::ResourceExhausted, "BACKTESTS_BUSY")
        );
        gate.send_replace(true);
        for backtest in running {
            assert_eq!(backtest.await.expect("task").expect("backtest").events, 0);
        }
        // Ended, they hold nothing.
        assert!(app.backtest(&manager, "Bearer t", draft(), 7).await.is_ok());
    }
}
