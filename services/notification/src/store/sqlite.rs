//! The SQLite store (`crm serve`): one process owns the file, so a write transaction excludes
//! every other writer and claims need no locks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::begin_sqlite_write;
use crm_platform::outbox::{Outbox, SqliteOutbox};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{
    After, Claim, EmailRow, Finished, InboxCounts, NotificationStore, Sent, StoreError, View, channel_names, channels,
    corrupt, email_state, email_template, email_template_json, fatigue, fatigue_json, muted_of, recipient_names,
    recipients, state, strings,
};
use crate::domain::fatigue::{Muted, Pacing};
use crate::domain::matching::Matched;
use crate::domain::members::Members;
use crate::domain::template::Rendered;
use crate::domain::{
    Attempt, Delivery, Due, DueDigest, DueEmail, Email, Endpoint, HeldEmail, MAX_ENDPOINTS, MAX_RULES, NewEmail,
    Notification, Preferences, Rule, signing_secrets, slot_honoured_since, slot_interval,
};

#[derive(Clone)]
pub struct SqliteNotificationStore {
    pool: SqlitePool,
    outbox: Arc<SqliteOutbox>,
}

impl SqliteNotificationStore {
    pub fn new(pool: SqlitePool) -> Self {
        let outbox = SqliteOutbox::new(pool.clone());
        Self { pool, outbox }
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(raw: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(raw).ok_or_else(|| corrupt(format!("time {raw}")))
}

fn id(row: &SqliteRow, column: &str) -> Result<Uuid, StoreError> {
    let raw: String = row.try_get(column)?;
    Uuid::parse_str(&raw).map_err(|_| corrupt(format!("{column} `{raw}`")))
}

fn json(row: &SqliteRow, column: &str) -> Result<serde_json::Value, StoreError> {
    let raw: String = row.try_get(column)?;
    serde_json::from_str(&raw).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn endpoint(row: &SqliteRow) -> Result<Endpoint, StoreError> {
    Ok(Endpoint {
        id: id(row, "id")?,
        url: row.try_get("url")?,
        event_types: strings(&json(row, "event_types")?)?,
        description: row.try_get("description")?,
        secret: row.try_get("secret")?,
        create_time: time(row.try_get("create_time")?)?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: row.try_get::<Option<i64>, _>("previous_until")?.map(time).transpose()?,
        created_by: row.try_get("created_by")?,
        max_per_second: u32::try_from(row.try_get::<i64, _>("max_per_second")?).unwrap_or(0),
        failing_since: row.try_get::<Option<i64>, _>("failing_since")?.map(time).transpose()?,
        disable_time: row.try_get::<Option<i64>, _>("disable_time")?.map(time).transpose()?,
        disable_reason: row.try_get("disable_reason")?,
    })
}

fn rule(row: &SqliteRow) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: id(row, "id")?,
        display_name: row.try_get("display_name")?,
        event_types: strings(&json(row, "event_types")?)?,
        condition: row.try_get("condition")?,
        recipients: recipients(&json(row, "recipients")?)?,
        channels: channels(&json(row, "channels")?)?,
        email_template: email_template(&json(row, "email_template")?),
        category: row.try_get("category")?,
        critical: row.try_get("critical")?,
        pacing: pacing(row)?,
        created_by: row.try_get("created_by")?,
        create_time: time(row.try_get("create_time")?)?,
    })
}

/// A rule's pacing, of a row with its `digest_window_minutes` and `max_emails_per_hour`.
fn pacing(row: &SqliteRow) -> Result<Pacing, sqlx::Error> {
    Ok(Pacing::of(
        row.try_get("digest_window_minutes")?,
        row.try_get("max_emails_per_hour")?,
    ))
}

const DELIVERY_COLUMNS: &str =
    "id, rule_id, endpoint_id, event_id, event_type, state, attempts, next_attempt_time, create_time";

fn delivery(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let next: Option<i64> = row.try_get("next_attempt_time")?;
    Ok(Delivery {
        id: id(row, "id")?,
        rule: id(row, "rule_id")?,
        endpoint: id(row, "endpoint_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        state: state(row.try_get("state")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_time: next.map(time).transpose()?,
        create_time: time(row.try_get("create_time")?)?,
    })
}

fn attempt(row: &SqliteRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        attempt: row.try_get("attempt")?,
        time: time(row.try_get("time")?)?,
        status_code: row.try_get("status_code")?,
        error: row.try_get("error")?,
        latency_ms: row.try_get("latency_ms")?,
        response_head: row.try_get("response_head")?,
    })
}

fn notification(row: &SqliteRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: id(row, "id")?,
        user: row.try_get("user_id")?,
        rule: id(row, "rule_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        subject: row.try_get("subject")?,
        title: row.try_get("title")?,
        read: row.try_get("read")?,
        seen: row.try_get("seen")?,
        archived: row.try_get("archived")?,
        create_time: time(row.try_get("create_time")?)?,
    })
}

/// Keeps a new email (a (rule, event, recipient) kept before is left as it is).
async fn insert_email(tx: &mut sqlx::SqliteConnection, tenant: &TenantId, e: &NewEmail) -> Result<(), StoreError> {
    let row = EmailRow::of(e);
    sqlx::query(
        "INSERT INTO emails (tenant_id, id, rule_id, recipient, user_id, address, event_id, event_type, subject, \
         text_body, html_body, state, last_error, next_attempt_time, create_time, category, critical, contact, \
         digest_window_minutes, max_emails_per_hour) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
         CASE WHEN ?12 = 'pending' THEN ?14 END, ?14, ?15, ?16, ?17, ?18, ?19) \
         ON CONFLICT (tenant_id, rule_id, event_id, recipient) DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(e.id.to_string())
    .bind(e.rule.to_string())
    .bind(&row.recipient)
    .bind(row.user)
    .bind(row.address)
    .bind(&e.event_id)
    .bind(&e.event_type)
    .bind(row.subject)
    .bind(row.text)
    .bind(row.html)
    .bind(row.state.as_str())
    .bind(&row.error)
    .bind(micros(e.create_time))
    .bind(&e.category)
    .bind(e.critical)
    .bind(row.contact)
    .bind(i64::from(e.pacing.digest_window_minutes))
    .bind(i64::from(e.pacing.max_emails_per_hour))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Keeps what may reach a contact, as the contact feed changed it.
async fn apply_reach(
    tx: &mut sqlx::SqliteConnection,
    tenant: &str,
    change: &crate::domain::reach::ReachChange,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    use crate::domain::reach::ReachChange;
    match change {
        ReachChange::Set {
            contact,
            email_address,
            email_consent,
        } => {
            sqlx::query(
                "INSERT INTO contact_reach (tenant_id, contact, email_address, email_consent, update_time) \
                 VALUES (?1, ?2, coalesce(?3, ''), coalesce(?4, 0), ?5) ON CONFLICT (tenant_id, contact) DO UPDATE \
                 SET email_address = coalesce(?3, email_address), email_consent = coalesce(?4, email_consent), \
                 update_time = ?5",
            )
            .bind(tenant)
            .bind(contact)
            .bind(email_address.as_deref())
            .bind(*email_consent)
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        }
        ReachChange::Remove { contact } => {
            sqlx::query("DELETE FROM contact_reach WHERE tenant_id = ?1 AND contact = ?2")
                .bind(tenant)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        ReachChange::Erase { contact } => {
            sqlx::query("DELETE FROM contact_reach WHERE tenant_id = ?1 AND contact = ?2")
                .bind(tenant)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
            // The emails to them: no address, no content; one waiting is not sent.
            sqlx::query(
                "UPDATE emails SET address = '', subject = '', text_body = '', html_body = '', \
                 state = CASE WHEN state IN ('pending', 'held') THEN 'refused' ELSE state END, \
                 last_error = CASE WHEN state IN ('pending', 'held') THEN 'the contact was erased' ELSE last_error END, \
                 next_attempt_time = NULL WHERE tenant_id = ?1 AND contact = ?2",
            )
            .bind(tenant)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
            // The webhook bodies of their events (their subject is the contact); one waiting
            // is not sent.
            sqlx::query(
                "UPDATE deliveries SET body = '{}', \
                 state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END, next_attempt_time = NULL \
                 WHERE tenant_id = ?1 AND body LIKE ?3",
            )
            .bind(tenant)
            .bind(contact)
            .bind(format!("%\"subject\":\"{contact}\"%"))
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// Keeps new in-app notifications (a (rule, event, user) kept before is left as it is) and
/// their users' unread counts.
async fn insert_notifications(
    tx: &mut sqlx::SqliteConnection,
    tenant: &str,
    notifications: &[Notification],
) -> Result<(), StoreError> {
    let mut unread: BTreeMap<&str, i64> = BTreeMap::new();
    for n in notifications {
        let inserted = sqlx::query(
            "INSERT INTO notifications (tenant_id, id, user_id, rule_id, event_id, event_type, subject, title, \
             create_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (tenant_id, rule_id, event_id, user_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(n.id.to_string())
        .bind(&n.user)
        .bind(n.rule.to_string())
        .bind(&n.event_id)
        .bind(&n.event_type)
        .bind(&n.subject)
        .bind(&n.title)
        .bind(micros(n.create_time))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            *unread.entry(n.user.as_str()).or_default() += 1;
        }
    }
    for (user, added) in unread {
        sqlx::query(
            "INSERT INTO inbox_counts (tenant_id, user_id, unread, unseen) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE \
             SET unread = unread + excluded.unread, unseen = unseen + excluded.unseen",
        )
        .bind(tenant)
        .bind(user)
        .bind(added)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Keeps what a batch of attempts says of each endpoint's health (see the PostgreSQL store).
async fn endpoint_health(tx: &mut sqlx::SqliteConnection, finished: &[Finished]) -> Result<(), StoreError> {
    let Some(super::Health { now, ok, failed }) = super::health(finished) else {
        return Ok(());
    };
    for (tenant, endpoint) in &ok {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE tenant_id = ?1 AND id = ?2")
            .bind(*tenant)
            .bind(endpoint.to_string())
            .execute(&mut *tx)
            .await?;
    }
    let cutoff = micros(now - crate::domain::DISABLE_AFTER);
    for (tenant, endpoint) in failed {
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ?3) \
             WHERE tenant_id = ?1 AND id = ?2 RETURNING url, created_by, failing_since, disable_time",
        )
        .bind(tenant)
        .bind(endpoint.to_string())
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let since: i64 = row.try_get("failing_since")?;
        let disabled: Option<i64> = row.try_get("disable_time")?;
        if disabled.is_some() || since > cutoff {
            continue;
        }
        sqlx::query(
            "UPDATE webhook_endpoints SET disable_time = ?3, disable_reason = ?4 WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant)
        .bind(endpoint.to_string())
        .bind(micros(now))
        .bind(super::disable_reason(time(since)?))
        .execute(&mut *tx)
        .await?;
        tracing::warn!(tenant, %endpoint, "a webhook endpoint failing for five days was disabled");
        ::metrics::counter!("crm_notification_endpoints_disabled_total").increment(1);
        let created_by: String = row.try_get("created_by")?;
        let url: String = row.try_get("url")?;
        let event = super::disabled_event(tenant, endpoint, &created_by, time(since)?, now);
        crm_platform::outbox::append_sqlite(&mut *tx, event.as_slice()).await?;
        if !created_by.is_empty() {
            insert_notifications(tx, tenant, &[super::disabled_notice(endpoint, &url, &created_by, now)]).await?;
        }
    }
    Ok(())
}

#[async_trait]
impl NotificationStore for SqliteNotificationStore {
    async fn create_endpoint(&self, tenant: &TenantId, e: &Endpoint) -> Result<bool, StoreError> {
        // One statement: SQLite writes one at a time, so the count is the insert's own.
        let kept = sqlx::query(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, description, secret, create_time, \
             created_by, max_per_second) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
             WHERE (SELECT count(*) FROM webhook_endpoints WHERE tenant_id = ?1) < ?10",
        )
        .bind(tenant.as_str())
        .bind(e.id.to_string())
        .bind(&e.url)
        .bind(serde_json::Value::from(e.event_types.clone()).to_string())
        .bind(&e.description)
        .bind(&e.secret)
        .bind(micros(e.create_time))
        .bind(&e.created_by)
        .bind(i64::from(e.max_per_second))
        .bind(limit(MAX_ENDPOINTS))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(kept == 1)
    }

    async fn endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn endpoints(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Endpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
        )
        .bind(tenant.as_str())
        .bind(after.map(|a| a.to_string()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint).collect()
    }

    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = ?4, secret = ?3 \
             WHERE tenant_id = ?1 AND id = ?2 RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(secret)
        .bind(micros(previous_until))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn delete_endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE deliveries SET state = 'failed', next_attempt_time = NULL, lease_until = NULL \
             WHERE tenant_id = ?1 AND endpoint_id = ?2 AND state = 'pending'",
        )
        .bind(tenant.as_str())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn create_rule(&self, tenant: &TenantId, r: &Rule) -> Result<bool, StoreError> {
        let kept = sqlx::query(
            "INSERT INTO rules (tenant_id, id, display_name, event_types, condition, recipients, created_by, create_time, \
             channels, email_template, category, critical, digest_window_minutes, max_emails_per_hour) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?14, ?15 \
             WHERE (SELECT count(*) FROM rules WHERE tenant_id = ?1) < ?13",
        )
        .bind(tenant.as_str())
        .bind(r.id.to_string())
        .bind(&r.display_name)
        .bind(serde_json::Value::from(r.event_types.clone()).to_string())
        .bind(&r.condition)
        .bind(recipient_names(r).to_string())
        .bind(&r.created_by)
        .bind(micros(r.create_time))
        .bind(channel_names(r).to_string())
        .bind(email_template_json(r).to_string())
        .bind(&r.category)
        .bind(r.critical)
        .bind(limit(MAX_RULES))
        .bind(i64::from(r.pacing.digest_window_minutes))
        .bind(i64::from(r.pacing.max_emails_per_hour))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(kept == 1)
    }

    async fn rule(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Rule>, StoreError> {
        let row = sqlx::query("SELECT * FROM rules WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rule).transpose()
    }

    async fn rules(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Rule>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM rules WHERE tenant_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3")
                .bind(tenant.as_str())
                .bind(after.map(|a| a.to_string()))
                .bind(limit(n))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rule).collect()
    }

    async fn delete_rule(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM rules WHERE tenant_id = ?1 AND id = ?2")
            .bind(tenant.as_str())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::sqlite_checkpoint(&self.pool, consumer).await?)
    }

    async fn record(
        &self,
        consumer: &str,
        previous: u64,
        last: u64,
        matched: &[(TenantId, Matched)],
    ) -> Result<bool, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        if !crm_platform::consumer::sqlite_claim(&mut tx, consumer, previous).await? {
            return Ok(false);
        }
        for (tenant, made) in matched {
            for d in &made.deliveries {
                sqlx::query(
                    "INSERT INTO deliveries (tenant_id, id, rule_id, endpoint_id, event_id, event_type, body, state, \
                     next_attempt_time, create_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8) \
                     ON CONFLICT (tenant_id, rule_id, event_id, endpoint_id) DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(d.id.to_string())
                .bind(d.rule.to_string())
                .bind(d.endpoint.to_string())
                .bind(&d.event_id)
                .bind(&d.event_type)
                .bind(&d.body)
                .bind(micros(d.create_time))
                .execute(&mut *tx)
                .await?;
            }
            for change in &made.reach {
                apply_reach(&mut tx, tenant.as_str(), change, Utc::now()).await?;
            }
            for seen in &made.members {
                sqlx::query(
                    "INSERT INTO members (tenant_id, user_id, roles, last_seen) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET roles = excluded.roles, last_seen = excluded.last_seen \
                     WHERE excluded.last_seen >= members.last_seen",
                )
                .bind(tenant.as_str())
                .bind(&seen.user)
                .bind(super::roles_text(&seen.roles))
                .bind(seen.day.to_string())
                .execute(&mut *tx)
                .await?;
            }
            for e in &made.emails {
                insert_email(&mut tx, tenant, e).await?;
            }
            insert_notifications(&mut tx, tenant.as_str(), &made.notifications).await?;
        }
        crm_platform::consumer::sqlite_advance(&mut tx, consumer, last).await?;
        tx.commit().await?;
        // An erased contact's values leave the write-ahead log too.
        let erased = matched.iter().any(|(_, m)| {
            m.reach
                .iter()
                .any(|r| matches!(r, crate::domain::reach::ReachChange::Erase { .. }))
        });
        if erased {
            crm_platform::db::purge_sqlite_log(&self.pool).await?;
        }
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        n: usize,
    ) -> Result<Claim<Due, Finished>, StoreError> {
        let lease = chrono::Duration::from_std(lease).map_err(corrupt)?;
        let mut tx = begin_sqlite_write(&self.pool).await?;
        // A batch whose every delivery failed (its endpoint gone) says nothing of what is due
        // after it: the claim goes on past it, a few batches at most.
        let mut due = Vec::new();
        for _ in 0..=super::DROPPED_BATCHES {
            let rows = sqlx::query(
                "UPDATE deliveries SET lease_until = ?2 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM deliveries \
                     WHERE state = 'pending' AND next_attempt_time <= ?1 AND (lease_until IS NULL OR lease_until <= ?1) \
                     ORDER BY next_attempt_time LIMIT ?3) \
                 RETURNING tenant_id, id, endpoint_id, body, attempts, coalesce(slot = next_attempt_time AND slot >= ?4, 0) AS slotted",
            )
            .bind(micros(now))
            .bind(micros(now + lease))
            .bind(limit(n))
            .bind(micros(slot_honoured_since(now)))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let tenant: String = row.try_get("tenant_id")?;
                let endpoint: String = row.try_get("endpoint_id")?;
                let target = sqlx::query(
                    "SELECT url, secret, previous_secret, previous_until, max_per_second, \
                     disable_time IS NOT NULL AS disabled FROM webhook_endpoints WHERE tenant_id = ?1 AND id = ?2",
                )
                .bind(&tenant)
                .bind(&endpoint)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(target) = target else {
                    // Its endpoint is gone (deleted while matching, or a redelivery raced it): it
                    // fails, as the endpoint's deletion fails its pending deliveries, instead of
                    // being claimed again at every lease's end and never sent.
                    sqlx::query(
                        "UPDATE deliveries SET state = 'failed', next_attempt_time = NULL, lease_until = NULL \
                         WHERE tenant_id = ?1 AND id = ?2",
                    )
                    .bind(&tenant)
                    .bind(row.try_get::<String, _>("id")?)
                    .execute(&mut *tx)
                    .await?;
                    continue;
                };
                due.push(Due {
                    tenant,
                    id: id(row, "id")?,
                    endpoint: Uuid::parse_str(&endpoint).map_err(|_| corrupt(format!("endpoint_id `{endpoint}`")))?,
                    max_per_second: u32::try_from(target.try_get::<i64, _>("max_per_second")?).unwrap_or(0),
                    disabled: target.try_get("disabled")?,
                    url: target.try_get("url")?,
                    secrets: signing_secrets(
                        target.try_get("secret")?,
                        target.try_get("previous_secret")?,
                        target
                            .try_get::<Option<i64>, _>("previous_until")?
                            .map(time)
                            .transpose()?,
                        now,
                    ),
                    body: row.try_get("body")?,
                    attempts: row.try_get("attempts")?,
                    slotted: row.try_get("slotted")?,
                });
            }
            if !due.is_empty() || rows.len() < n {
                break;
            }
        }
        tx.commit().await?;
        Ok(Claim::leased(due))
    }

    async fn finish_attempts(&self, finished: &[Finished]) -> Result<(), StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        for Finished {
            tenant,
            delivery,
            attempt,
            outcome,
            ..
        } in finished
        {
            if let Some(a) = attempt {
                sqlx::query(
                    "INSERT INTO delivery_attempts (tenant_id, delivery_id, attempt, time, status_code, error, \
                     latency_ms, response_head) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                )
                .bind(tenant.as_str())
                .bind(delivery.to_string())
                .bind(a.attempt)
                .bind(micros(a.time))
                .bind(a.status_code)
                .bind(&a.error)
                .bind(a.latency_ms)
                .bind(&a.response_head)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE deliveries SET state = ?3, attempts = max(attempts, ?4), next_attempt_time = ?5, \
             lease_until = NULL, slot = ?6 WHERE tenant_id = ?1 AND id = ?2 AND state = 'pending'",
            )
            .bind(tenant.as_str())
            .bind(delivery.to_string())
            .bind(outcome.state.as_str())
            .bind(attempt.as_ref().map_or(0, |a| a.attempt))
            .bind(outcome.next_attempt_time.map(micros))
            .bind(outcome.next_attempt_time.filter(|_| outcome.slotted).map(micros))
            .execute(&mut *tx)
            .await?;
        }
        endpoint_health(&mut tx, finished).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    async fn take_slot(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        per_second: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let interval = slot_interval(per_second);
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let next: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET next_slot = max(coalesce(next_slot, ?3), ?3) + ?4 \
             WHERE tenant_id = ?1 AND id = ?2 RETURNING next_slot",
        )
        .bind(tenant.as_str())
        .bind(endpoint.to_string())
        .bind(micros(now))
        .bind(interval.num_microseconds().unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        next.map(|next| time(next).map(|next| next - interval)).transpose()
    }

    async fn enable_endpoint(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET disable_time = NULL, disable_reason = '', failing_since = NULL \
             WHERE tenant_id = ?1 AND id = ?2 RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            sqlx::query(
                "UPDATE deliveries SET next_attempt_time = ?3 \
                 WHERE tenant_id = ?1 AND endpoint_id = ?2 AND state = 'pending' AND next_attempt_time IS NULL",
            )
            .bind(tenant.as_str())
            .bind(id.to_string())
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn redeliver_since(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let again = sqlx::query(
            "UPDATE deliveries SET state = 'pending', next_attempt_time = ?4 \
             WHERE tenant_id = ?1 AND endpoint_id = ?2 AND create_time >= ?3 AND state <> 'pending' \
             AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = ?1 AND e.id = ?2)",
        )
        .bind(tenant.as_str())
        .bind(endpoint.to_string())
        .bind(micros(since))
        .bind(micros(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(again)
    }

    async fn delivery(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ?1 AND id = ?2"
        )))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn deliveries(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ?1 AND (?2 IS NULL OR id < ?2) \
             ORDER BY id DESC LIMIT ?3"
        )))
        .bind(tenant.as_str())
        .bind(after.map(|a| a.to_string()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery).collect()
    }

    async fn attempts(&self, tenant: &TenantId, delivery: Uuid) -> Result<Vec<Attempt>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM delivery_attempts WHERE tenant_id = ?1 AND delivery_id = ?2 ORDER BY attempt")
                .bind(tenant.as_str())
                .bind(delivery.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(attempt).collect()
    }

    async fn redeliver(&self, tenant: &TenantId, id: Uuid, now: DateTime<Utc>) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_time = ?3 \
             WHERE tenant_id = ?1 AND id = ?2 AND EXISTS (SELECT 1 FROM webhook_endpoints e \
                 WHERE e.tenant_id = deliveries.tenant_id AND e.id = deliveries.endpoint_id) \
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn claim_emails(&self, now: DateTime<Utc>, lease: Duration, n: usize) -> Result<Vec<DueEmail>, StoreError> {
        let lease = chrono::Duration::from_std(lease).map_err(corrupt)?;
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let rows = sqlx::query(
            "UPDATE emails SET lease_until = ?2 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM emails \
                 WHERE (state = 'pending' OR (state = 'held' AND held_for = 'quiet_hours')) \
                 AND next_attempt_time <= ?1 AND (lease_until IS NULL OR lease_until <= ?1) \
                 ORDER BY next_attempt_time LIMIT ?3) \
             RETURNING tenant_id, id, recipient, user_id, address, subject, text_body, html_body, attempts, category, \
             critical, (SELECT email_address FROM notification_preferences p \
                 WHERE p.tenant_id = emails.tenant_id AND p.user_id = emails.user_id) AS email_address, \
             (SELECT settings FROM notification_preferences p \
                 WHERE p.tenant_id = emails.tenant_id AND p.user_id = emails.user_id) AS settings, contact, \
             (SELECT email_address FROM contact_reach r \
                 WHERE r.tenant_id = emails.tenant_id AND r.contact = emails.contact) AS contact_address, \
             (SELECT email_consent FROM contact_reach r \
                 WHERE r.tenant_id = emails.tenant_id AND r.contact = emails.contact) AS contact_consent, rule_id, \
             digest_window_minutes, max_emails_per_hour",
        )
        .bind(micros(now))
        .bind(micros(now + lease))
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let user: Option<String> = row.try_get("user_id")?;
                let contact: Option<String> = row.try_get("contact")?;
                let preferred: Option<String> = row.try_get("email_address")?;
                let settings: Option<String> = row.try_get("settings")?;
                let settings = settings
                    .map(|s| {
                        serde_json::from_str::<serde_json::Value>(&s).map_err(|e| corrupt(format!("settings: {e}")))
                    })
                    .transpose()?;
                Ok(DueEmail {
                    tenant: row.try_get("tenant_id")?,
                    id: id(row, "id")?,
                    recipient: row.try_get("recipient")?,
                    address: match (&user, &contact) {
                        (Some(user), _) => super::user_address(user, preferred.as_deref()),
                        (None, Some(_)) => row.try_get::<Option<String>, _>("contact_address")?.unwrap_or_default(),
                        (None, None) => row.try_get("address")?,
                    },
                    contact_consent: row.try_get("contact_consent")?,
                    rendered: Rendered {
                        subject: row.try_get("subject")?,
                        text: row.try_get("text_body")?,
                        html: row.try_get("html_body")?,
                    },
                    attempts: row.try_get("attempts")?,
                    user,
                    rule: id(row, "rule_id")?,
                    pacing: pacing(row)?,
                    category: row.try_get("category")?,
                    critical: row.try_get("critical")?,
                    fatigue: settings.as_ref().map(fatigue).transpose()?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn finish_emails(&self, sent: &[Sent]) -> Result<(), StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        for s in sent {
            sqlx::query(
                "UPDATE emails SET state = ?3, attempts = max(attempts, ?4), address = ?5, last_error = ?6, \
                 next_attempt_time = ?7, send_time = CASE WHEN ?3 = 'sent' THEN ?8 END, lease_until = NULL, \
                 held_for = ?9 WHERE tenant_id = ?1 AND id = ?2",
            )
            .bind(s.tenant.as_str())
            .bind(s.email.to_string())
            .bind(s.state.as_str())
            .bind(s.attempt)
            .bind(&s.address)
            .bind(&s.error)
            .bind(s.next_attempt_time.map(micros))
            .bind(micros(s.time))
            .bind(s.held.map(|h| h.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn emails(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Email>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM emails WHERE tenant_id = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
        )
        .bind(tenant.as_str())
        .bind(after.map(|a| a.to_string()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Email {
                    id: id(row, "id")?,
                    rule: id(row, "rule_id")?,
                    recipient: row.try_get("recipient")?,
                    address: row.try_get("address")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    subject: row.try_get("subject")?,
                    state: email_state(row.try_get("state")?)?,
                    attempts: row.try_get("attempts")?,
                    last_error: row.try_get("last_error")?,
                    next_attempt_time: row
                        .try_get::<Option<i64>, _>("next_attempt_time")?
                        .map(time)
                        .transpose()?,
                    create_time: time(row.try_get("create_time")?)?,
                    send_time: row.try_get::<Option<i64>, _>("send_time")?.map(time).transpose()?,
                    digest: row
                        .try_get::<Option<String>, _>("digest_id")?
                        .map(|d| Uuid::parse_str(&d).map_err(|_| corrupt(format!("digest_id `{d}`"))))
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn sent_since(
        &self,
        tenant: &TenantId,
        user: &str,
        rule: Option<Uuid>,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM emails WHERE tenant_id = ?1 AND user_id = ?2 AND state = 'sent' AND send_time >= ?3 \
             AND (?4 IS NULL OR rule_id = ?4)",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(micros(since))
        .bind(rule.map(|r| r.to_string()))
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn due_digests(&self, now: DateTime<Utc>, n: usize) -> Result<Vec<DueDigest>, StoreError> {
        let rows = sqlx::query(
            "WITH users AS (SELECT DISTINCT tenant_id, user_id FROM emails \
                 WHERE state = 'held' AND held_for IN ('digest', 'cap') AND next_attempt_time <= ?1 LIMIT ?2) \
             SELECT e.tenant_id, e.user_id, e.id, e.subject, e.event_type, e.create_time FROM emails e \
             JOIN users u ON u.tenant_id = e.tenant_id AND u.user_id = e.user_id \
             WHERE e.state = 'held' AND e.held_for IN ('digest', 'cap') AND e.next_attempt_time <= ?1 \
             ORDER BY e.tenant_id, e.user_id, e.id",
        )
        .bind(micros(now))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        let mut digests: Vec<DueDigest> = Vec::new();
        for row in &rows {
            let tenant: String = row.try_get("tenant_id")?;
            let user: Option<String> = row.try_get("user_id")?;
            let held = HeldEmail {
                id: id(row, "id")?,
                subject: row.try_get("subject")?,
                event_type: row.try_get("event_type")?,
                create_time: time(row.try_get("create_time")?)?,
            };
            let user = user.unwrap_or_default();
            match digests.last_mut() {
                Some(d) if d.tenant == tenant && d.user == user => d.held.push(held),
                _ => digests.push(DueDigest {
                    tenant,
                    user,
                    held: vec![held],
                }),
            }
        }
        Ok(digests)
    }

    async fn bundle_digest(&self, tenant: &TenantId, ids: &[Uuid], digest: &NewEmail) -> Result<bool, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let mut bundled = 0usize;
        for held in ids {
            bundled += usize::try_from(
                sqlx::query(
                    "UPDATE emails SET state = 'digested', digest_id = ?3, held_for = NULL, next_attempt_time = NULL \
                     WHERE tenant_id = ?1 AND id = ?2 AND state = 'held'",
                )
                .bind(tenant.as_str())
                .bind(held.to_string())
                .bind(digest.id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            )
            .unwrap_or(0);
        }
        if bundled != ids.len() {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_email(&mut tx, tenant, digest).await?;
        tx.commit().await?;
        Ok(true)
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox) as Arc<dyn Outbox>
    }

    async fn members(&self, tenant: &TenantId, since: chrono::NaiveDate) -> Result<Members, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT user_id, roles, last_seen FROM members WHERE tenant_id = ?1 AND last_seen >= ?2")
                .bind(tenant.as_str())
                .bind(since.to_string())
                .fetch_all(&self.pool)
                .await?;
        let rows = rows
            .into_iter()
            .map(|(user, roles, day)| {
                let day = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|_| corrupt(format!("last_seen `{day}`")))?;
                Ok((user, roles, day))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(super::members_of(rows))
    }

    async fn muted(&self, tenant: &TenantId) -> Result<Muted, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_id, settings FROM notification_preferences \
             WHERE tenant_id = ?1 AND json_array_length(settings, '$.muted') > 0",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .into_iter()
            .map(|(user, raw)| {
                serde_json::from_str(&raw)
                    .map(|settings| (user, settings))
                    .map_err(|e| corrupt(format!("settings: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        muted_of(rows)
    }

    async fn preferences(&self, tenant: &TenantId, user: &str) -> Result<Option<Preferences>, StoreError> {
        let row = sqlx::query("SELECT * FROM notification_preferences WHERE tenant_id = ?1 AND user_id = ?2")
            .bind(tenant.as_str())
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Preferences {
                email_address: row.try_get("email_address")?,
                fatigue: fatigue(&json(&row, "settings")?)?,
                update_time: Some(time(row.try_get("update_time")?)?),
            })
        })
        .transpose()
    }

    async fn set_preferences(&self, tenant: &TenantId, user: &str, p: &Preferences) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notification_preferences (tenant_id, user_id, email_address, update_time, settings) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, user_id) DO UPDATE \
             SET email_address = excluded.email_address, update_time = excluded.update_time, settings = excluded.settings",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(&p.email_address)
        .bind(micros(p.update_time.unwrap_or_else(Utc::now)))
        .bind(fatigue_json(&p.fatigue).to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn notifications(
        &self,
        tenant: &TenantId,
        user: &str,
        view: View,
        after: After,
        n: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(match view {
            View::Inbox => {
                "SELECT * FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 \
                 AND (?3 IS NULL OR id < ?3) AND NOT archived ORDER BY id DESC LIMIT ?4"
            }
            View::Unread => {
                "SELECT * FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 \
                 AND (?3 IS NULL OR id < ?3) AND NOT read AND NOT archived ORDER BY id DESC LIMIT ?4"
            }
            View::Archived => {
                "SELECT * FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 \
                 AND (?3 IS NULL OR id < ?3) AND archived ORDER BY id DESC LIMIT ?4"
            }
            View::All => {
                "SELECT * FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            }
        })
        .bind(tenant.as_str())
        .bind(user)
        .bind(after.map(|a| a.to_string()))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification).collect()
    }

    async fn notifications_since(
        &self,
        tenant: &TenantId,
        user: &str,
        since: Uuid,
        n: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(since.to_string())
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification).collect()
    }

    async fn counts(&self, tenant: &TenantId, user: &str) -> Result<InboxCounts, StoreError> {
        let counts: Option<(i64, i64)> =
            sqlx::query_as("SELECT unread, unseen FROM inbox_counts WHERE tenant_id = ?1 AND user_id = ?2")
                .bind(tenant.as_str())
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(counts.map_or_else(InboxCounts::default, |(unread, unseen)| InboxCounts { unread, unseen }))
    }

    async fn mark_read(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError> {
        self.change_inbox(tenant, user, Change::Read, ids).await
    }

    async fn mark_seen(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError> {
        self.change_inbox(tenant, user, Change::Seen, &[]).await
    }

    async fn archive(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError> {
        self.change_inbox(tenant, user, Change::Archive, ids).await
    }
}

/// A change of a user's notifications.
#[derive(Debug, Clone, Copy)]
enum Change {
    Read,
    Seen,
    Archive,
}

impl SqliteNotificationStore {
    /// Applies `change` to the user's notifications (of `ids`; every one to mark them seen)
    /// and moves the user's counts by what it changed; how many it changed.
    async fn change_inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        change: Change,
        ids: &[Uuid],
    ) -> Result<i64, StoreError> {
        let mut tx = begin_sqlite_write(&self.pool).await?;
        let mut before: Vec<(bool, bool)> = Vec::new();
        match change {
            Change::Seen => {
                before = sqlx::query_as(
                    "UPDATE notifications SET seen = 1 WHERE tenant_id = ?1 AND user_id = ?2 AND NOT seen \
                     RETURNING 1, 0",
                )
                .bind(tenant.as_str())
                .bind(user)
                .fetch_all(&mut *tx)
                .await?;
            }
            Change::Read | Change::Archive => {
                for id in ids {
                    let old: Option<(bool, bool, bool)> = sqlx::query_as(
                        "SELECT read, seen, archived FROM notifications WHERE tenant_id = ?1 AND user_id = ?2 AND id = ?3",
                    )
                    .bind(tenant.as_str())
                    .bind(user)
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((read, seen, archived)) = old else { continue };
                    let update = match change {
                        Change::Read if !read => "UPDATE notifications SET read = 1 WHERE tenant_id = ?1 AND id = ?2",
                        Change::Archive if !archived => {
                            "UPDATE notifications SET archived = 1, read = 1, seen = 1 WHERE tenant_id = ?1 AND id = ?2"
                        }
                        _ => continue,
                    };
                    sqlx::query(update)
                        .bind(tenant.as_str())
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                    before.push(match change {
                        Change::Read => (false, true),
                        _ => (read, seen),
                    });
                }
            }
        }
        let changed = i64::try_from(before.len()).unwrap_or(i64::MAX);
        let was_unread = i64::try_from(before.iter().filter(|(read, _)| !read).count()).unwrap_or(i64::MAX);
        let was_unseen = i64::try_from(before.iter().filter(|(_, seen)| !seen).count()).unwrap_or(i64::MAX);
        if changed > 0 {
            sqlx::query(
                "UPDATE inbox_counts SET unread = unread - ?3, unseen = unseen - ?4 WHERE tenant_id = ?1 AND user_id = ?2",
            )
            .bind(tenant.as_str())
            .bind(user)
            .bind(was_unread)
            .bind(was_unseen)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
