//! A rule's backtest: a rule being drafted, evaluated against the retained events of the
//! last N days (read from the feeds as the caller, so only their tenant's), answers how many
//! webhooks, emails and in-app notifications it would have made, to whom, with samples;
//! nothing is saved or sent. The read is bounded in events and time; a bounded answer says so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_platform::error::Violations;
use crm_platform::{ApiError, Principal};

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
        let rule = match self.check_rule(who, spec).await? {
            Ok(rule) => rule,
            Err(problems) => {
                v.merge(problems);
                v.finish()?;
                return Err(ApiError::invalid_field("rule", "is not valid"));
            }
        };
        v.finish()?;
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
        result.truncated = history.read(credentials, &types, &mut visit).await?;
        let mut recipients: Vec<(String, u64)> = recipients.into_iter().collect();
        recipients.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        recipients.truncate(MAX_RECIPIENTS);
        result.recipients = recipients;
        Ok(result)
    }
}
