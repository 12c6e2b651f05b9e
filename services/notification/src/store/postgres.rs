//! The PostgreSQL store: every transaction pinned to its tenant (row-level security); the
//! delivery worker's claim reads every tenant's due deliveries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::db::{begin_queue_scan, begin_tenant};
use crm_platform::outbox::{Outbox, PgOutbox};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{
    After, Claim, EmailRow, Finished, Hold, InboxCounts, NotificationStore, Sent, StoreError, View, channel_names,
    channels, corrupt, email_state, email_template, email_template_json, fatigue, fatigue_json, muted_of,
    recipient_names, recipients, state, strings,
};
use crate::domain::fatigue::{Muted, Pacing};
use crate::domain::matching::Matched;
use crate::domain::members::Members;
use crate::domain::template::Rendered;
use crate::domain::{
    Attempt, Delivery, DeliveryState, Due, DueDigest, DueEmail, Email, Endpoint, HeldEmail, MAX_ENDPOINTS, MAX_RULES,
    NewEmail, Notification, Preferences, Rule, signing_secrets, slot_honoured_since, slot_interval,
};

#[derive(Clone)]
pub struct PgNotificationStore {
    pool: PgPool,
    outbox: Arc<PgOutbox>,
    /// Held across a claim's scan: this replica's claims scan one at a time, each after the
    /// last, instead of side by side over the same rows (the later one skipping, row by row,
    /// every delivery the other locked).
    claims: Arc<tokio::sync::Mutex<ClaimCursor>>,
}

/// Where this replica's next webhook claim starts in the due order: after its previous
/// claim's last, so that it does not scan again past deliveries it claimed (in flight, or
/// finished but not yet vacuumed). A claim that finds too few there goes on from the start
/// up to where it began; the start is also where a claim begins at least every [`RESCAN`],
/// so that what is due behind the cursor (skipped while another replica held it, or due
/// again when a lease ended) waits no longer.
#[derive(Debug, Default)]
struct ClaimCursor {
    after: Option<DueKey>,
    since: Option<std::time::Instant>,
}

/// How often claims scan the due deliveries from the start at least.
const RESCAN: Duration = Duration::from_secs(1);

impl ClaimCursor {
    /// Where the next claim starts: after this, or (None) at the start.
    fn start(&mut self, now: std::time::Instant) -> Option<DueKey> {
        if self.since.is_none_or(|since| now.duration_since(since) >= RESCAN) {
            self.after = None;
            self.since = Some(now);
        }
        self.after
    }

    /// A claim that asked for `asked` found `found`, the last of them at `last` in the due
    /// order.
    fn claimed(&mut self, last: Option<DueKey>, found: usize, asked: usize) {
        self.after = if found < asked { None } else { last };
    }
}

impl PgNotificationStore {
    /// The store over `pool`, with its outbox's sequencer started.
    pub async fn start(pool: PgPool) -> Result<Self, sqlx::Error> {
        let outbox = PgOutbox::start(pool.clone()).await?;
        Ok(Self {
            pool,
            outbox,
            claims: Arc::default(),
        })
    }
}

/// Takes, in `tx`, the lock on a tenant's `list` (its endpoints, its rules) that its
/// creations take in turn, so that one counts what the other added before it.
async fn lock_tenants_list(tx: &mut sqlx::PgConnection, list: &str, tenant: &TenantId) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('crm.notification.' || $1 || '/' || $2, 0))")
        .bind(list)
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn endpoint(row: &PgRow) -> Result<Endpoint, StoreError> {
    Ok(Endpoint {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        event_types: strings(&row.try_get("event_types")?)?,
        description: row.try_get("description")?,
        secret: row.try_get("secret")?,
        create_time: row.try_get("create_time")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: row.try_get("previous_until")?,
        created_by: row.try_get("created_by")?,
        max_per_second: u32::try_from(row.try_get::<i32, _>("max_per_second")?).unwrap_or(0),
        failing_since: row.try_get("failing_since")?,
        disable_time: row.try_get("disable_time")?,
        disable_reason: row.try_get("disable_reason")?,
    })
}

fn rule(row: &PgRow) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        event_types: strings(&row.try_get("event_types")?)?,
        condition: row.try_get("condition")?,
        recipients: recipients(&row.try_get("recipients")?)?,
        channels: channels(&row.try_get("channels")?)?,
        email_template: email_template(&row.try_get("email_template")?),
        category: row.try_get("category")?,
        critical: row.try_get("critical")?,
        pacing: pacing(row)?,
        created_by: row.try_get("created_by")?,
        create_time: row.try_get("create_time")?,
    })
}

/// A rule's pacing, of a row with its `digest_window_minutes` and `max_emails_per_hour`.
fn pacing(row: &PgRow) -> Result<Pacing, sqlx::Error> {
    Ok(Pacing::of(
        row.try_get::<i32, _>("digest_window_minutes")?.into(),
        row.try_get::<i32, _>("max_emails_per_hour")?.into(),
    ))
}

const DELIVERY_COLUMNS: &str =
    "id, rule_id, endpoint_id, event_id, event_type, state, attempts, next_attempt_time, create_time";

fn delivery(row: &PgRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        rule: row.try_get("rule_id")?,
        endpoint: row.try_get("endpoint_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        state: state(row.try_get("state")?)?,
        attempts: row.try_get("attempts")?,
        next_attempt_time: row.try_get("next_attempt_time")?,
        create_time: row.try_get("create_time")?,
    })
}

fn attempt(row: &PgRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        attempt: row.try_get("attempt")?,
        time: row.try_get("time")?,
        status_code: row.try_get("status_code")?,
        error: row.try_get("error")?,
        latency_ms: row.try_get("latency_ms")?,
        response_head: row.try_get("response_head")?,
    })
}

fn notification(row: &PgRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        id: row.try_get("id")?,
        user: row.try_get("user_id")?,
        rule: row.try_get("rule_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        subject: row.try_get("subject")?,
        title: row.try_get("title")?,
        read: row.try_get("read")?,
        seen: row.try_get("seen")?,
        archived: row.try_get("archived")?,
        create_time: row.try_get("create_time")?,
    })
}

/// Keeps a new email (a (rule, event, recipient) kept before is left as it is).
async fn insert_email(tx: &mut sqlx::PgConnection, tenant: &TenantId, e: &NewEmail) -> Result<(), StoreError> {
    let row = EmailRow::of(e);
    sqlx::query(
        "INSERT INTO emails (tenant_id, id, rule_id, recipient, user_id, address, event_id, event_type, subject, \
         text_body, html_body, state, last_error, next_attempt_time, create_time, category, critical, contact, \
         digest_window_minutes, max_emails_per_hour) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         CASE WHEN $12 = 'pending' THEN $14 END, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT ON CONSTRAINT emails_once DO NOTHING",
    )
    .bind(tenant.as_str())
    .bind(e.id)
    .bind(e.rule)
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
    .bind(e.create_time)
    .bind(&e.category)
    .bind(e.critical)
    .bind(row.contact)
    .bind(i32::try_from(e.pacing.digest_window_minutes).unwrap_or(i32::MAX))
    .bind(i32::try_from(e.pacing.max_emails_per_hour).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Keeps what may reach a contact, as the contact feed changed it.
async fn apply_reach(
    tx: &mut sqlx::PgConnection,
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
                 VALUES ($1, $2, coalesce($3, ''), coalesce($4, false), $5) ON CONFLICT (tenant_id, contact) DO UPDATE \
                 SET email_address = coalesce($3, contact_reach.email_address), \
                 email_consent = coalesce($4, contact_reach.email_consent), update_time = $5",
            )
            .bind(tenant)
            .bind(contact)
            .bind(email_address.as_deref())
            .bind(*email_consent)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        ReachChange::Remove { contact } => {
            sqlx::query("DELETE FROM contact_reach WHERE tenant_id = $1 AND contact = $2")
                .bind(tenant)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        ReachChange::Erase { contact } => {
            sqlx::query("DELETE FROM contact_reach WHERE tenant_id = $1 AND contact = $2")
                .bind(tenant)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
            // The emails to them: no address, no content; one waiting is not sent.
            sqlx::query(
                "UPDATE emails SET address = '', subject = '', text_body = '', html_body = '', \
                 state = CASE WHEN state IN ('pending', 'held') THEN 'refused' ELSE state END, \
                 last_error = CASE WHEN state IN ('pending', 'held') THEN 'the contact was erased' ELSE last_error END, \
                 next_attempt_time = NULL WHERE tenant_id = $1 AND contact = $2",
            )
            .bind(tenant)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
            // The webhook bodies of their events (their subject is the contact); one waiting
            // is not sent.
            let about = format!("%\"subject\":\"{contact}\"%");
            for statement in [
                "DELETE FROM delivery_queue q USING deliveries d \
                 WHERE q.tenant_id = d.tenant_id AND q.id = d.id AND d.tenant_id = $1 AND d.body LIKE $2",
                "UPDATE deliveries SET body = '{}', \
                 state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END, next_attempt_time = NULL \
                 WHERE tenant_id = $1 AND body LIKE $2",
            ] {
                sqlx::query(statement)
                    .bind(tenant)
                    .bind(&about)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Keeps new in-app notifications (a (rule, event, user) kept before is left as it is) and
/// their users' unread counts.
async fn insert_notifications(
    tx: &mut sqlx::PgConnection,
    tenant: &str,
    notifications: &[Notification],
) -> Result<(), StoreError> {
    let mut unread: BTreeMap<&str, i64> = BTreeMap::new();
    for n in notifications {
        let inserted = sqlx::query(
            "INSERT INTO notifications (tenant_id, id, user_id, rule_id, event_id, event_type, subject, title, \
             create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING RETURNING id",
        )
        .bind(tenant)
        .bind(n.id)
        .bind(&n.user)
        .bind(n.rule)
        .bind(&n.event_id)
        .bind(&n.event_type)
        .bind(&n.subject)
        .bind(&n.title)
        .bind(n.create_time)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_some() {
            *unread.entry(n.user.as_str()).or_default() += 1;
        }
    }
    for (user, added) in unread {
        sqlx::query(
            "INSERT INTO inbox_counts (tenant_id, user_id, unread, unseen) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE \
             SET unread = inbox_counts.unread + excluded.unread, unseen = inbox_counts.unseen + excluded.unseen",
        )
        .bind(tenant)
        .bind(user)
        .bind(added)
        .execute(&mut *tx)
        .await?;
        announce(&mut *tx, tenant, user).await?;
    }
    Ok(())
}

/// Keeps what a batch of attempts says of each endpoint's health: a success clears its
/// failing time, a failure starts it, and an endpoint failing for five days is disabled (its
/// maker told in their inbox, and an event on this service's feed says so).
async fn endpoint_health(tx: &mut sqlx::PgConnection, tenant: &str, done: &[&Finished]) -> Result<(), StoreError> {
    let Some(health) = super::health(done.iter().copied()) else {
        return Ok(());
    };
    let now = health.now;
    // `done` is one tenant's: the endpoints alone.
    let ok: Vec<Uuid> = health.ok.iter().map(|(_, e)| *e).collect();
    let failed: Vec<Uuid> = health.failed.iter().map(|(_, e)| *e).collect();
    if !ok.is_empty() {
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL \
             WHERE tenant_id = $1 AND id = ANY($2) AND failing_since IS NOT NULL",
        )
        .bind(tenant)
        .bind(&ok)
        .execute(&mut *tx)
        .await?;
    }
    if failed.is_empty() {
        return Ok(());
    }
    let disabled = sqlx::query(
        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $3), \
         disable_time = CASE WHEN disable_time IS NULL AND failing_since <= $4 THEN $3 ELSE disable_time END \
         WHERE tenant_id = $1 AND id = ANY($2) \
         RETURNING id, url, created_by, failing_since, disable_time = $3 AND failing_since <= $4 AS now_disabled",
    )
    .bind(tenant)
    .bind(&failed)
    .bind(now)
    .bind(now - crate::domain::DISABLE_AFTER)
    .fetch_all(&mut *tx)
    .await?;
    let mut notices = Vec::new();
    let mut events = Vec::new();
    for row in &disabled {
        if !row.try_get::<bool, _>("now_disabled")? {
            continue;
        }
        let id: Uuid = row.try_get("id")?;
        let since: DateTime<Utc> = row.try_get("failing_since")?;
        sqlx::query("UPDATE webhook_endpoints SET disable_reason = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .bind(super::disable_reason(since))
            .execute(&mut *tx)
            .await?;
        let created_by: String = row.try_get("created_by")?;
        let url: String = row.try_get("url")?;
        tracing::warn!(tenant, endpoint = %id, "a webhook endpoint failing for five days was disabled");
        ::metrics::counter!("crm_notification_endpoints_disabled_total").increment(1);
        events.extend(super::disabled_event(tenant, id, &created_by, since, now));
        if !created_by.is_empty() {
            notices.push(super::disabled_notice(id, &url, &created_by, now));
        }
    }
    crm_platform::outbox::append_pg(&mut *tx, &events).await?;
    insert_notifications(tx, tenant, &notices).await
}

/// A due delivery's place in the due order: (due time, id).
type DueKey = (DateTime<Utc>, Uuid);
/// Before and after every due delivery.
const FIRST_KEY: DueKey = (DateTime::UNIX_EPOCH, Uuid::nil());
const LAST_KEY: DueKey = (DateTime::<Utc>::MAX_UTC, Uuid::max());

/// Locks, in `tx`, up to `n` pending deliveries due at `now` and not leased whose place is
/// after `after` and at most `upto`, in the due order (a plain scan of the queue's index),
/// skipping those another transaction holds: each with its place. Each delivery is read by
/// its key (the subquery, kept apart by `OFFSET 0`, cannot be joined another way: right
/// after a burst the statistics lag, and a plan that read each endpoint's every delivery
/// once took seconds a claim).
async fn lock_due(
    tx: &mut sqlx::PgConnection,
    now: DateTime<Utc>,
    n: usize,
    after: DueKey,
    upto: DueKey,
) -> Result<Locked, StoreError> {
    let rows = sqlx::query(
        "WITH due AS (SELECT tenant_id, id, next_attempt_time, slot FROM delivery_queue \
             WHERE (next_attempt_time, id) > ($3, $4) AND (next_attempt_time, id) <= ($5, $6) \
             AND next_attempt_time <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
             ORDER BY next_attempt_time, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         SELECT q.tenant_id, q.id, q.next_attempt_time, coalesce(q.slot = q.next_attempt_time AND q.slot >= $7, false) AS slotted, d.state, d.endpoint_id, d.body, d.attempts, e.url, \
         e.secret, e.previous_secret, e.previous_until, e.max_per_second, e.disable_time IS NOT NULL AS disabled \
         FROM due q \
         LEFT JOIN LATERAL (SELECT state, endpoint_id, body, attempts FROM deliveries \
             WHERE tenant_id = q.tenant_id AND id = q.id OFFSET 0) d ON true \
         LEFT JOIN webhook_endpoints e ON e.tenant_id = q.tenant_id AND e.id = d.endpoint_id"
    )
    .bind(now)
    .bind(limit(n))
    .bind(after.0)
    .bind(after.1)
    .bind(upto.0.min(now))
    .bind(if upto.0 > now { Uuid::max() } else { upto.1 })
    .bind(slot_honoured_since(now))
    .fetch_all(&mut *tx)
    .await?;
    // A place in the queue whose delivery is no longer pending (a redelivery raced an
    // erasure, say) is dropped, under the lock the claim holds; a delivery whose endpoint is
    // gone (deleted while matching or a redelivery raced it) fails, as the endpoint's
    // deletion fails its pending deliveries, and leaves the queue: left there, it would be
    // locked again by every claim and never sent.
    let mut stale: (Vec<String>, Vec<Uuid>) = (Vec::new(), Vec::new());
    let mut orphans: (Vec<String>, Vec<Uuid>) = (Vec::new(), Vec::new());
    let mut due = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in &rows {
        let key: DueKey = (row.try_get("next_attempt_time")?, row.try_get("id")?);
        last = last.max(Some(key));
        if row.try_get::<Option<&str>, _>("state")? != Some(DeliveryState::Pending.as_str()) {
            stale.0.push(row.try_get("tenant_id")?);
            stale.1.push(key.1);
        } else if row.try_get::<Option<&str>, _>("url")?.is_none() {
            orphans.0.push(row.try_get("tenant_id")?);
            orphans.1.push(key.1);
        } else {
            due.push(claimed(row, now)?);
        }
    }
    // In the due order, sorted here rather than by the statement: a sort there carries every
    // row's body once more.
    due.sort_unstable_by_key(|(_, key)| *key);
    if !orphans.1.is_empty() {
        tracing::warn!(
            deliveries = orphans.1.len(),
            "webhook deliveries whose endpoint is gone failed when claimed"
        );
    }
    for (statement, keys) in [
        (
            "DELETE FROM delivery_queue q USING unnest($1::text[], $2::uuid[]) AS stale(tenant_id, id) \
          WHERE q.tenant_id = stale.tenant_id AND q.id = stale.id",
            &stale,
        ),
        // The queue first, then the deliveries, as everywhere.
        (
            "WITH queued AS (DELETE FROM delivery_queue q USING unnest($1::text[], $2::uuid[]) AS orphan(tenant_id, id) \
          WHERE q.tenant_id = orphan.tenant_id AND q.id = orphan.id RETURNING q.tenant_id, q.id) \
          UPDATE deliveries d SET state = 'failed', next_attempt_time = NULL \
          FROM queued WHERE d.tenant_id = queued.tenant_id AND d.id = queued.id",
            &orphans,
        ),
    ] {
        if !keys.1.is_empty() {
            sqlx::query(statement)
                .bind(&keys.0)
                .bind(&keys.1)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(Locked {
        due,
        scanned: rows.len(),
        last,
    })
}

/// What [`lock_due`] locked: the deliveries to attempt, in the due order with their places,
/// how many places it took from the queue (those dropped or failed included) and the last
/// of them.
struct Locked {
    due: Vec<(Due, DueKey)>,
    scanned: usize,
    last: Option<DueKey>,
}

/// A claimed delivery, with its place in the queue, of a row of [`lock_due`].
fn claimed(row: &PgRow, now: DateTime<Utc>) -> Result<(Due, DueKey), sqlx::Error> {
    let due = Due {
        tenant: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        endpoint: row.try_get("endpoint_id")?,
        max_per_second: u32::try_from(row.try_get::<i32, _>("max_per_second")?).unwrap_or(0),
        disabled: row.try_get("disabled")?,
        url: row.try_get("url")?,
        secrets: signing_secrets(
            row.try_get("secret")?,
            row.try_get("previous_secret")?,
            row.try_get("previous_until")?,
            now,
        ),
        body: row.try_get("body")?,
        attempts: row.try_get("attempts")?,
        slotted: row.try_get("slotted")?,
    };
    let key = (row.try_get("next_attempt_time")?, due.id);
    Ok((due, key))
}

/// What attempts leave their deliveries in: (state, attempts made, when next due, the slot
/// given).
type OutcomeKey<'a> = (&'a str, i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Keeps attempts at claimed deliveries, what each leaves its delivery in (releasing it),
/// and each endpoint's health, in `tx`.
async fn keep_finished(tx: &mut sqlx::PgConnection, finished: &[Finished]) -> Result<(), StoreError> {
    // Every row is found by its key, whatever the statistics say: right after a burst of
    // deliveries they lag, and a plan that hashes the whole queue for each batch once slowed
    // deliveries tenfold.
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), \
         set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)",
    )
    .execute(&mut *tx)
    .await?;
    let mut by_tenant: BTreeMap<&str, Vec<&Finished>> = BTreeMap::new();
    for f in finished {
        by_tenant.entry(f.tenant.as_str()).or_default().push(f);
    }
    for (tenant, done) in &by_tenant {
        let tenant = *tenant;
        sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        let made: Vec<(Uuid, &crate::domain::Attempt)> = done
            .iter()
            .filter_map(|f| f.attempt.as_ref().map(|a| (f.delivery, a)))
            .collect();
        sqlx::query(
            "INSERT INTO delivery_attempts (tenant_id, delivery_id, attempt, time, status_code, error, latency_ms, \
             response_head) SELECT $1, * FROM unnest($2::uuid[], $3::int[], $4::timestamptz[], $5::int[], \
             $6::text[], $7::bigint[], $8::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(made.iter().map(|(d, _)| *d).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.attempt).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.time).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.status_code).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.error.clone()).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.latency_ms).collect::<Vec<_>>())
        .bind(made.iter().map(|(_, a)| a.response_head.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        // One statement per outcome (most attempts of a batch share theirs: delivered at
        // their first attempt), each delivery found by its primary key. The keys are joined
        // whole, tenant included: with the tenant a constant, the planner may scan the
        // tenant's every delivery instead when its statistics lag a burst of new ones.
        let mut outcomes: BTreeMap<OutcomeKey<'_>, Vec<Uuid>> = BTreeMap::new();
        for f in done {
            outcomes
                .entry((
                    f.outcome.state.as_str(),
                    f.attempt.as_ref().map_or(0, |a| a.attempt),
                    f.outcome.next_attempt_time,
                    f.outcome.next_attempt_time.filter(|_| f.outcome.slotted),
                ))
                .or_default()
                .push(f.delivery);
        }
        for ((state, attempt, next, slot), ids) in outcomes {
            // A delivery still pending is due again at its next time, unleased; one delivered
            // or failed leaves the queue. The queue first, as everywhere: a claim holds its
            // deliveries' places in the queue, and then writes the deliveries. A delivery no
            // longer in the queue (failed when its endpoint was deleted, or erased, while the
            // attempt was in flight) keeps what it is.
            let pending = state == DeliveryState::Pending.as_str();
            let queue = if pending {
                "UPDATE delivery_queue q SET next_attempt_time = $5, lease_until = NULL, slot = $6 \
                 FROM unnest($1::text[], $2::uuid[]) AS done(tenant_id, id) \
                 WHERE q.tenant_id = done.tenant_id AND q.id = done.id RETURNING q.tenant_id, q.id"
            } else {
                "DELETE FROM delivery_queue q USING unnest($1::text[], $2::uuid[]) AS done(tenant_id, id) \
                 WHERE q.tenant_id = done.tenant_id AND q.id = done.id RETURNING q.tenant_id, q.id"
            };
            let statement = sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH queued AS ({queue}) \
                 UPDATE deliveries d SET state = $3, attempts = greatest(d.attempts, $4), next_attempt_time = $5 \
                 FROM queued WHERE d.tenant_id = queued.tenant_id AND d.id = queued.id"
            )))
            .bind(vec![tenant; ids.len()])
            .bind(&ids)
            .bind(state)
            .bind(attempt)
            .bind(next);
            // Only a delivery still pending keeps a place in the queue, and its slot there.
            let statement = if pending { statement.bind(slot) } else { statement };
            statement.execute(&mut *tx).await?;
        }
    }
    // The endpoints last, as everywhere: after the queue and the deliveries.
    for (tenant, done) in &by_tenant {
        sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
            .bind(*tenant)
            .execute(&mut *tx)
            .await?;
        endpoint_health(tx, tenant, done).await?;
    }
    Ok(())
}

/// Deliveries claimed by the transaction that locked them (see [`Claim`]).
struct HeldDeliveries {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The claimed deliveries, in the claim's order.
    keys: Vec<(String, Uuid)>,
    /// When the claim's lease would end.
    until: DateTime<Utc>,
}

#[async_trait]
impl Hold<Finished> for HeldDeliveries {
    async fn release(mut self: Box<Self>, done: &[Finished], open: &[usize]) -> Result<(), StoreError> {
        let (tenants, ids): (Vec<&str>, Vec<Uuid>) = open
            .iter()
            .filter_map(|&i| self.keys.get(i))
            .map(|(tenant, id)| (tenant.as_str(), *id))
            .unzip();
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE delivery_queue q SET lease_until = $3 FROM unnest($1::text[], $2::uuid[]) AS open(tenant_id, id) \
                 WHERE q.tenant_id = open.tenant_id AND q.id = open.id",
            )
            .bind(&tenants)
            .bind(&ids)
            .bind(self.until)
            .execute(&mut *self.tx)
            .await?;
        }
        // The outcomes are kept as by any worker: each tenant's own.
        sqlx::query("SELECT set_config('crm.all_tenants', 'off', true)")
            .execute(&mut *self.tx)
            .await?;
        keep_finished(&mut self.tx, done).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl NotificationStore for PgNotificationStore {
    async fn create_endpoint(&self, tenant: &TenantId, e: &Endpoint) -> Result<bool, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        lock_tenants_list(&mut tx, "webhook_endpoints", tenant).await?;
        let kept = sqlx::query(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, event_types, description, secret, create_time, \
             created_by, max_per_second) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE (SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1) < $10",
        )
        .bind(tenant.as_str())
        .bind(e.id)
        .bind(&e.url)
        .bind(serde_json::Value::from(e.event_types.clone()))
        .bind(&e.description)
        .bind(&e.secret)
        .bind(e.create_time)
        .bind(&e.created_by)
        .bind(i32::try_from(e.max_per_second).unwrap_or(i32::MAX))
        .bind(limit(MAX_ENDPOINTS))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(kept == 1)
    }

    async fn endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Endpoint>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn endpoints(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Endpoint>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(endpoint).collect()
    }

    async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: Uuid,
        secret: &str,
        previous_until: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $4, secret = $3 \
             WHERE tenant_id = $1 AND id = $2 RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(secret)
        .bind(previous_until)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(endpoint).transpose()
    }

    async fn delete_endpoint(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        // The queue, the deliveries, then the endpoint: the order every writer takes them in.
        for statement in [
            "DELETE FROM delivery_queue q USING deliveries d \
             WHERE q.tenant_id = d.tenant_id AND q.id = d.id AND d.tenant_id = $1 AND d.endpoint_id = $2",
            "UPDATE deliveries SET state = 'failed', next_attempt_time = NULL \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND state = 'pending'",
        ] {
            sqlx::query(statement)
                .bind(tenant.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn create_rule(&self, tenant: &TenantId, r: &Rule) -> Result<bool, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        lock_tenants_list(&mut tx, "rules", tenant).await?;
        let kept = sqlx::query(
            "INSERT INTO rules (tenant_id, id, display_name, event_types, condition, recipients, created_by, create_time, \
             channels, email_template, category, critical, digest_window_minutes, max_emails_per_hour) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15 \
             WHERE (SELECT count(*) FROM rules WHERE tenant_id = $1) < $13",
        )
        .bind(tenant.as_str())
        .bind(r.id)
        .bind(&r.display_name)
        .bind(serde_json::Value::from(r.event_types.clone()))
        .bind(&r.condition)
        .bind(recipient_names(r))
        .bind(&r.created_by)
        .bind(r.create_time)
        .bind(channel_names(r))
        .bind(email_template_json(r))
        .bind(&r.category)
        .bind(r.critical)
        .bind(limit(MAX_RULES))
        .bind(i32::try_from(r.pacing.digest_window_minutes).unwrap_or(i32::MAX))
        .bind(i32::try_from(r.pacing.max_emails_per_hour).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(kept == 1)
    }

    async fn rule(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Rule>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query("SELECT * FROM rules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(rule).transpose()
    }

    async fn rules(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Rule>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM rules WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(rule).collect()
    }

    async fn delete_rule(&self, tenant: &TenantId, id: Uuid) -> Result<bool, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let deleted = sqlx::query("DELETE FROM rules WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(crm_platform::consumer::pg_checkpoint(&self.pool, consumer).await?)
    }

    async fn record(
        &self,
        consumer: &str,
        previous: u64,
        last: u64,
        matched: &[(TenantId, Matched)],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !crm_platform::consumer::pg_claim(&mut tx, consumer, previous).await? {
            return Ok(false);
        }
        for (tenant, made) in matched {
            sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            for d in &made.deliveries {
                sqlx::query(
                    "WITH made AS (INSERT INTO deliveries (tenant_id, id, rule_id, endpoint_id, event_id, event_type, \
                         body, state, next_attempt_time, create_time) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8) \
                         ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING RETURNING tenant_id, id) \
                     INSERT INTO delivery_queue (tenant_id, id, next_attempt_time) SELECT tenant_id, id, $8 FROM made",
                )
                .bind(tenant.as_str())
                .bind(d.id)
                .bind(d.rule)
                .bind(d.endpoint)
                .bind(&d.event_id)
                .bind(&d.event_type)
                .bind(&d.body)
                .bind(d.create_time)
                .execute(&mut *tx)
                .await?;
            }
            for change in &made.reach {
                apply_reach(&mut tx, tenant.as_str(), change, Utc::now()).await?;
            }
            for seen in &made.members {
                sqlx::query(
                    "INSERT INTO members (tenant_id, user_id, roles, last_seen) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET roles = excluded.roles, last_seen = excluded.last_seen \
                     WHERE excluded.last_seen >= members.last_seen",
                )
                .bind(tenant.as_str())
                .bind(&seen.user)
                .bind(super::roles_text(&seen.roles))
                .bind(seen.day)
                .execute(&mut *tx)
                .await?;
            }
            for e in &made.emails {
                insert_email(&mut tx, tenant, e).await?;
            }
            insert_notifications(&mut tx, tenant.as_str(), &made.notifications).await?;
        }
        crm_platform::consumer::pg_advance(&mut tx, consumer, last).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        n: usize,
    ) -> Result<Claim<Due, Finished>, StoreError> {
        let until = now + chrono::Duration::from_std(lease).map_err(corrupt)?;
        // From this replica's cursor to the end of the due order, then (if that was not
        // enough) from the start up to the cursor: what a claim does not find is not due.
        let mut tx = begin_queue_scan(&self.pool).await?;
        let mut cursor = self.claims.lock().await;
        let from = cursor.start(std::time::Instant::now());
        let mut locked = lock_due(&mut tx, now, n, from.unwrap_or(FIRST_KEY), LAST_KEY).await?;
        // A batch whose every place was dropped (stale, or its endpoint gone) says nothing of
        // what is due after it: the claim goes on past it, a few batches at most.
        for _ in 0..super::DROPPED_BATCHES {
            if !locked.due.is_empty() || locked.scanned < n {
                break;
            }
            locked = lock_due(&mut tx, now, n, locked.last.unwrap_or(FIRST_KEY), LAST_KEY).await?;
        }
        if let Some(from) = from.filter(|_| locked.scanned < n) {
            let wrapped = lock_due(&mut tx, now, n - locked.scanned, FIRST_KEY, from).await?;
            locked.due.extend(wrapped.due);
            locked.scanned += wrapped.scanned;
            locked.last = wrapped.last;
        }
        cursor.claimed(locked.last, locked.scanned, n);
        drop(cursor);
        let due: Vec<Due> = locked.due.into_iter().map(|(due, _)| due).collect();
        if due.is_empty() {
            tx.commit().await?;
            return Ok(Claim::leased(due));
        }
        let keys = due.iter().map(|d| (d.tenant.clone(), d.id)).collect();
        Ok(Claim {
            due,
            hold: Some(Box::new(HeldDeliveries { tx, keys, until })),
        })
    }

    async fn finish_attempts(&self, finished: &[Finished]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        keep_finished(&mut tx, finished).await?;
        tx.commit().await?;
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
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET next_slot = greatest(coalesce(next_slot, $3), $3) + $4 * interval '1 microsecond' \
             WHERE tenant_id = $1 AND id = $2 RETURNING next_slot",
        )
        .bind(tenant.as_str())
        .bind(endpoint)
        .bind(now)
        .bind(interval.num_microseconds().unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next.map(|next| next - interval))
    }

    async fn enable_endpoint(
        &self,
        tenant: &TenantId,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query(
            "UPDATE webhook_endpoints SET disable_time = NULL, disable_reason = '', failing_since = NULL \
             WHERE tenant_id = $1 AND id = $2 RETURNING *",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_some() {
            for statement in [
                "UPDATE delivery_queue q SET next_attempt_time = $3 FROM deliveries d \
                 WHERE q.tenant_id = d.tenant_id AND q.id = d.id AND d.tenant_id = $1 AND d.endpoint_id = $2 \
                 AND q.next_attempt_time IS NULL",
                "UPDATE deliveries SET next_attempt_time = $3 \
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND state = 'pending' AND next_attempt_time IS NULL",
            ] {
                sqlx::query(statement)
                    .bind(tenant.as_str())
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
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
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let again = sqlx::query(
            "WITH queued AS (INSERT INTO delivery_queue (tenant_id, id, next_attempt_time) \
                 SELECT tenant_id, id, $4 FROM deliveries \
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND create_time >= $3 AND state <> 'pending' \
                 AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = $1 AND e.id = $2) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET next_attempt_time = excluded.next_attempt_time, \
                 lease_until = NULL RETURNING tenant_id, id) \
             UPDATE deliveries d SET state = 'pending', next_attempt_time = $4 FROM queued \
             WHERE d.tenant_id = queued.tenant_id AND d.id = queued.id",
        )
        .bind(tenant.as_str())
        .bind(endpoint)
        .bind(since)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(again)
    }

    async fn delivery(&self, tenant: &TenantId, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn deliveries(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(delivery).collect()
    }

    async fn attempts(&self, tenant: &TenantId, id: Uuid) -> Result<Vec<Attempt>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows =
            sqlx::query("SELECT * FROM delivery_attempts WHERE tenant_id = $1 AND delivery_id = $2 ORDER BY attempt")
                .bind(tenant.as_str())
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.iter().map(attempt).collect()
    }

    async fn redeliver(&self, tenant: &TenantId, id: Uuid, now: DateTime<Utc>) -> Result<Option<Delivery>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        // Its place in the queue first (a claim may hold it), then the delivery.
        sqlx::query(
            "INSERT INTO delivery_queue (tenant_id, id, next_attempt_time) \
             SELECT d.tenant_id, d.id, $3 FROM deliveries d JOIN webhook_endpoints e \
                 ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id WHERE d.tenant_id = $1 AND d.id = $2 \
             ON CONFLICT (tenant_id, id) DO UPDATE SET next_attempt_time = excluded.next_attempt_time",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_time = $3 \
             WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM webhook_endpoints e \
                 WHERE e.tenant_id = deliveries.tenant_id AND e.id = deliveries.endpoint_id) \
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(delivery).transpose()
    }

    async fn claim_emails(&self, now: DateTime<Utc>, lease: Duration, n: usize) -> Result<Vec<DueEmail>, StoreError> {
        let lease = chrono::Duration::from_std(lease).map_err(corrupt)?;
        let mut tx = begin_queue_scan(&self.pool).await?;
        let rows = sqlx::query(
            "WITH due AS (SELECT tenant_id, id FROM emails \
                 WHERE (state = 'pending' OR (state = 'held' AND held_for = 'quiet_hours')) \
                 AND next_attempt_time <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY next_attempt_time LIMIT $3 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE emails m SET lease_until = $2 FROM due \
                 WHERE m.tenant_id = due.tenant_id AND m.id = due.id \
                 RETURNING m.tenant_id, m.id, m.rule_id, m.recipient, m.user_id, m.address, m.subject, m.text_body, \
                 m.html_body, m.attempts, m.category, m.critical, m.contact, m.digest_window_minutes, \
                 m.max_emails_per_hour) \
             SELECT c.*, p.email_address, p.settings, r.email_address AS contact_address, \
             r.email_consent AS contact_consent FROM claimed c \
             LEFT JOIN notification_preferences p ON p.tenant_id = c.tenant_id AND p.user_id = c.user_id \
             LEFT JOIN contact_reach r ON r.tenant_id = c.tenant_id AND r.contact = c.contact",
        )
        .bind(now)
        .bind(now + lease)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let user: Option<String> = row.try_get("user_id")?;
                let contact: Option<String> = row.try_get("contact")?;
                let preferred: Option<String> = row.try_get("email_address")?;
                let settings: Option<serde_json::Value> = row.try_get("settings")?;
                Ok(DueEmail {
                    tenant: row.try_get("tenant_id")?,
                    id: row.try_get("id")?,
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
                    rule: row.try_get("rule_id")?,
                    pacing: pacing(row)?,
                    category: row.try_get("category")?,
                    critical: row.try_get("critical")?,
                    fatigue: settings.as_ref().map(fatigue).transpose()?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn finish_emails(&self, sent: &[Sent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for s in sent {
            sqlx::query("SELECT set_config('crm.tenant_id', $1, true)")
                .bind(s.tenant.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE emails SET state = $3, attempts = greatest(attempts, $4), address = $5, last_error = $6, \
                 next_attempt_time = $7, send_time = CASE WHEN $3 = 'sent' THEN $8 END, lease_until = NULL, \
                 held_for = $9 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(s.tenant.as_str())
            .bind(s.email)
            .bind(s.state.as_str())
            .bind(s.attempt)
            .bind(&s.address)
            .bind(&s.error)
            .bind(s.next_attempt_time)
            .bind(s.time)
            .bind(s.held.map(|h| h.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn emails(&self, tenant: &TenantId, after: After, n: usize) -> Result<Vec<Email>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM emails WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(Email {
                    id: row.try_get("id")?,
                    rule: row.try_get("rule_id")?,
                    recipient: row.try_get("recipient")?,
                    address: row.try_get("address")?,
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    subject: row.try_get("subject")?,
                    state: email_state(row.try_get("state")?)?,
                    attempts: row.try_get("attempts")?,
                    last_error: row.try_get("last_error")?,
                    next_attempt_time: row.try_get("next_attempt_time")?,
                    create_time: row.try_get("create_time")?,
                    send_time: row.try_get("send_time")?,
                    digest: row.try_get("digest_id")?,
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
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM emails WHERE tenant_id = $1 AND user_id = $2 AND state = 'sent' AND send_time >= $3 \
             AND ($4::uuid IS NULL OR rule_id = $4)",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(since)
        .bind(rule)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(count)
    }

    async fn due_digests(&self, now: DateTime<Utc>, n: usize) -> Result<Vec<DueDigest>, StoreError> {
        let mut tx = begin_queue_scan(&self.pool).await?;
        let rows = sqlx::query(
            "WITH users AS (SELECT DISTINCT tenant_id, user_id FROM emails \
                 WHERE state = 'held' AND held_for IN ('digest', 'cap') AND next_attempt_time <= $1 LIMIT $2) \
             SELECT e.tenant_id, e.user_id, e.id, e.subject, e.event_type, e.create_time FROM emails e \
             JOIN users u ON u.tenant_id = e.tenant_id AND u.user_id = e.user_id \
             WHERE e.state = 'held' AND e.held_for IN ('digest', 'cap') AND e.next_attempt_time <= $1 \
             ORDER BY e.tenant_id, e.user_id, e.id",
        )
        .bind(now)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut digests: Vec<DueDigest> = Vec::new();
        for row in &rows {
            let tenant: String = row.try_get("tenant_id")?;
            let user: Option<String> = row.try_get("user_id")?;
            let held = HeldEmail {
                id: row.try_get("id")?,
                subject: row.try_get("subject")?,
                event_type: row.try_get("event_type")?,
                create_time: row.try_get("create_time")?,
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
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let bundled = sqlx::query(
            "UPDATE emails SET state = 'digested', digest_id = $3, held_for = NULL, next_attempt_time = NULL \
             WHERE tenant_id = $1 AND id = ANY($2) AND state = 'held'",
        )
        .bind(tenant.as_str())
        .bind(ids)
        .bind(digest.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if usize::try_from(bundled).ok() != Some(ids.len()) {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_email(&mut tx, tenant, digest).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn muted(&self, tenant: &TenantId) -> Result<Muted, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT user_id, settings FROM notification_preferences \
             WHERE tenant_id = $1 AND jsonb_array_length(coalesce(settings->'muted', '[]')) > 0",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        muted_of(rows)
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox) as Arc<dyn Outbox>
    }

    async fn members(&self, tenant: &TenantId, since: chrono::NaiveDate) -> Result<Members, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows: Vec<(String, String, chrono::NaiveDate)> =
            sqlx::query_as("SELECT user_id, roles, last_seen FROM members WHERE tenant_id = $1 AND last_seen >= $2")
                .bind(tenant.as_str())
                .bind(since)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(super::members_of(rows))
    }

    async fn preferences(&self, tenant: &TenantId, user: &str) -> Result<Option<Preferences>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let row = sqlx::query("SELECT * FROM notification_preferences WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant.as_str())
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|row| {
            Ok(Preferences {
                email_address: row.try_get("email_address")?,
                fatigue: fatigue(&row.try_get("settings")?)?,
                update_time: Some(row.try_get("update_time")?),
            })
        })
        .transpose()
    }

    async fn set_preferences(&self, tenant: &TenantId, user: &str, p: &Preferences) -> Result<(), StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        sqlx::query(
            "INSERT INTO notification_preferences (tenant_id, user_id, email_address, update_time, settings) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, user_id) DO UPDATE \
             SET email_address = excluded.email_address, update_time = excluded.update_time, settings = excluded.settings",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(&p.email_address)
        .bind(p.update_time.unwrap_or_else(Utc::now))
        .bind(fatigue_json(&p.fatigue))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(match view {
            View::Inbox => {
                "SELECT * FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND ($3::uuid IS NULL OR id < $3) AND NOT archived ORDER BY id DESC LIMIT $4"
            }
            View::Unread => {
                "SELECT * FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND ($3::uuid IS NULL OR id < $3) AND NOT read AND NOT archived ORDER BY id DESC LIMIT $4"
            }
            View::Archived => {
                "SELECT * FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND ($3::uuid IS NULL OR id < $3) AND archived ORDER BY id DESC LIMIT $4"
            }
            View::All => {
                "SELECT * FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
                 AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
            }
        })
        .bind(tenant.as_str())
        .bind(user)
        .bind(after)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(notification).collect()
    }

    async fn notifications_since(
        &self,
        tenant: &TenantId,
        user: &str,
        since: Uuid,
        n: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let rows = sqlx::query(
            "SELECT * FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(since)
        .bind(limit(n))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(notification).collect()
    }

    async fn counts(&self, tenant: &TenantId, user: &str) -> Result<InboxCounts, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let counts: Option<(i64, i64)> =
            sqlx::query_as("SELECT unread, unseen FROM inbox_counts WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant.as_str())
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(counts.map_or_else(InboxCounts::default, |(unread, unseen)| InboxCounts { unread, unseen }))
    }

    async fn mark_read(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError> {
        self.change_inbox(
            tenant,
            user,
            "UPDATE notifications SET read = true \
             WHERE tenant_id = $1 AND user_id = $2 AND id = ANY($3) AND NOT read RETURNING false, true",
            ids,
        )
        .await
    }

    async fn mark_seen(&self, tenant: &TenantId, user: &str) -> Result<i64, StoreError> {
        self.change_inbox(
            tenant,
            user,
            "UPDATE notifications SET seen = true \
             WHERE tenant_id = $1 AND user_id = $2 AND NOT seen AND $3::uuid[] IS NOT NULL RETURNING true, false",
            &[],
        )
        .await
    }

    async fn archive(&self, tenant: &TenantId, user: &str, ids: &[Uuid]) -> Result<i64, StoreError> {
        self.change_inbox(
            tenant,
            user,
            "UPDATE notifications n SET archived = true, read = true, seen = true \
             FROM (SELECT id, read, seen FROM notifications \
                 WHERE tenant_id = $1 AND user_id = $2 AND id = ANY($3) AND NOT archived FOR UPDATE) old \
             WHERE n.tenant_id = $1 AND n.id = old.id RETURNING old.read, old.seen",
            ids,
        )
        .await
    }
}

impl PgNotificationStore {
    /// Runs `change` (an UPDATE of the user's notifications by `$1` tenant, `$2` user and `$3`
    /// ids, returning whether each changed row was read and seen before it) and moves the
    /// user's counts by what it changed, announcing the change; how many rows it changed.
    async fn change_inbox(
        &self,
        tenant: &TenantId,
        user: &str,
        change: &'static str,
        ids: &[Uuid],
    ) -> Result<i64, StoreError> {
        let mut tx = begin_tenant(&self.pool, tenant).await?;
        let before: Vec<(bool, bool)> = sqlx::query_as(change)
            .bind(tenant.as_str())
            .bind(user)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
        let changed = i64::try_from(before.len()).unwrap_or(i64::MAX);
        let was_unread = i64::try_from(before.iter().filter(|(read, _)| !read).count()).unwrap_or(i64::MAX);
        let was_unseen = i64::try_from(before.iter().filter(|(_, seen)| !seen).count()).unwrap_or(i64::MAX);
        if changed > 0 {
            sqlx::query(
                "UPDATE inbox_counts SET unread = unread - $3, unseen = unseen - $4 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(tenant.as_str())
            .bind(user)
            .bind(was_unread)
            .bind(was_unseen)
            .execute(&mut *tx)
            .await?;
            announce(&mut tx, tenant.as_str(), user).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// Announces a change of a user's inbox to every replica (at commit).
async fn announce(tx: &mut sqlx::PgConnection, tenant: &str, user: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(super::INBOX_CHANNEL)
        .bind(format!("{tenant}/{user}"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Feeds `changes` with the inbox changes every replica announces, until `shutdown`; a lost
/// connection is made again (and every watcher told to look, as changes may have been missed
/// meanwhile).
pub async fn listen_inbox(
    pool: PgPool,
    changes: tokio::sync::broadcast::Sender<crate::domain::InboxChange>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    const RETRY: std::time::Duration = std::time::Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "the inbox listener cannot connect; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(super::INBOX_CHANNEL).await {
            tracing::warn!(error = %e, "the inbox listener cannot listen; retrying");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        loop {
            let heard = tokio::select! {
                () = shutdown.cancelled() => return,
                heard = listener.try_recv() => heard,
            };
            match heard {
                Ok(Some(n)) => {
                    if let Some(change) = crate::domain::InboxChange::parse(n.payload()) {
                        let _ = changes.send(change);
                    }
                }
                // Reconnected: what was announced meanwhile is lost, so every watcher looks.
                Ok(None) => {
                    let _ = changes.send(crate::domain::InboxChange::anyone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the inbox listener failed; listening again");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crm_platform::TenantId;
    use crm_platform::testing::TestDatabase;

    use super::*;
    use crate::store::{NotificationStore, POSTGRES_APP_ROLE, POSTGRES_MIGRATIONS};

    #[test]
    fn claims_go_on_from_the_last_full_claim_and_rescan_from_the_start() {
        let t0 = std::time::Instant::now();
        let start = None;
        let key = |n: u128| (DateTime::UNIX_EPOCH + chrono::Duration::seconds(1), Uuid::from_u128(n));
        let at = |n| Some(key(n));
        let mut cursor = ClaimCursor::default();
        assert_eq!(cursor.start(t0), start);
        // A full claim: the next starts after its last.
        cursor.claimed(Some(key(9)), 10, 10);
        assert_eq!(cursor.start(t0), at(9));
        // A claim that found less than it asked reached the end: the next starts over.
        cursor.claimed(Some(key(12)), 3, 10);
        assert_eq!(cursor.start(t0), start);
        // However full the claims, the start is scanned again every RESCAN.
        cursor.claimed(Some(key(20)), 10, 10);
        assert_eq!(cursor.start(t0 + RESCAN / 2), at(20));
        assert_eq!(cursor.start(t0 + RESCAN), start);
        cursor.claimed(Some(key(30)), 10, 10);
        assert_eq!(cursor.start(t0 + RESCAN + RESCAN / 2), at(30));
    }

    #[tokio::test]
    async fn an_inbox_change_on_one_pool_is_heard_by_the_listener_of_another() {
        let Some(db) = TestDatabase::create("notification_inbox_listen").await else {
            return;
        };
        crm_platform::db::migrate_postgres(&db.url, &POSTGRES_MIGRATIONS)
            .await
            .expect("migrate");
        let listening = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
            .await
            .expect("pool");
        let changing = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
            .await
            .expect("pool");
        let (changes, mut heard) = tokio::sync::broadcast::channel(16);
        tokio::spawn(listen_inbox(
            listening,
            changes,
            tokio_util::sync::CancellationToken::new(),
        ));
        let store = PgNotificationStore::start(changing).await.expect("store");
        let acme = TenantId::parse("acme").expect("tenant");
        let mut heard_it = None;
        // The listener may not be listening yet: change until it hears.
        for _ in 0..50 {
            let note = crate::store::disabled_notice(Uuid::now_v7(), "https://x.test", "carol", Utc::now());
            let mut tx = begin_tenant(&store.pool, &acme).await.expect("tx");
            insert_notifications(&mut tx, "acme", &[note]).await.expect("insert");
            tx.commit().await.expect("commit");
            if let Ok(Ok(change)) = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await {
                heard_it = Some(change);
                break;
            }
        }
        let change = heard_it.expect("heard");
        assert!(change.concerns("acme", "carol"), "{change:?}");
        assert_eq!(
            store.counts(&acme, "carol").await.expect("counts").unseen,
            store.counts(&acme, "carol").await.expect("counts").unread
        );
        db.drop_database().await;
    }
}
