//! contact_write (migrations 0012, 0013): the rows, match keys, audit entries and events of
//! many contacts, creates and updates, written in one call with their unique keys locked and checked.

use chrono::{DateTime, Utc};
use crm_platform::TenantId;
use crm_platform::outbox::{EventColumns, NewEvent};
use crm_platform::telemetry::current_traceparent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::duplicates::{PROBE_PER_KEY, Probe, ProbeKeys};
use super::tag_strings;
use crate::domain::*;
use crate::store::{StoreError, WriteBatch, claim_conflict, corrupt};

/// The columns of many contacts, one array per column, as contact_write takes them: creates
/// (no expected revision) and updates (the revision they were read at) together.
struct ContactArrays {
    ids: Vec<Uuid>,
    given_names: Vec<String>,
    family_names: Vec<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    primary_emails: Vec<Option<String>>,
    titles: Vec<String>,
    companies: Vec<Option<Uuid>>,
    stages: Vec<&'static str>,
    sources: Vec<&'static str>,
    owners: Vec<String>,
    tags: Vec<String>,
    attributes: Vec<String>,
    consents: Vec<String>,
    search_texts: Vec<String>,
    create_times: Vec<DateTime<Utc>>,
    update_times: Vec<DateTime<Utc>>,
    revisions: Vec<i64>,
    external_ids: Vec<Option<String>>,
    expected: Vec<Option<i64>>,
}

impl ContactArrays {
    fn new<'a>(contacts: impl Iterator<Item = (&'a Contact, Option<Revision>)>) -> Result<Self, StoreError> {
        let mut a = ContactArrays {
            ids: Vec::new(),
            given_names: Vec::new(),
            family_names: Vec::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            primary_emails: Vec::new(),
            titles: Vec::new(),
            companies: Vec::new(),
            stages: Vec::new(),
            sources: Vec::new(),
            owners: Vec::new(),
            tags: Vec::new(),
            attributes: Vec::new(),
            consents: Vec::new(),
            search_texts: Vec::new(),
            create_times: Vec::new(),
            update_times: Vec::new(),
            revisions: Vec::new(),
            external_ids: Vec::new(),
            expected: Vec::new(),
        };
        for (contact, expected) in contacts {
            let f = &contact.fields;
            a.ids.push(contact.id.0);
            a.given_names.push(f.given_name.clone());
            a.family_names.push(f.family_name.clone());
            a.emails.push(to_json(&f.emails)?);
            a.phones.push(to_json(&f.phones)?);
            a.primary_emails.push(f.primary_email().map(|e| e.as_str().to_owned()));
            a.titles.push(f.title.clone());
            a.companies.push(f.company.map(|c| c.0));
            a.stages.push(f.lifecycle_stage.as_str());
            a.sources.push(f.source.as_str());
            a.owners.push(f.owner.as_str().to_owned());
            a.tags.push(to_json(&tag_strings(&f.tags))?);
            a.attributes.push(to_json(&f.attributes)?);
            a.consents.push(to_json(&f.consent)?);
            a.search_texts.push(f.search_text());
            a.create_times.push(contact.create_time);
            a.update_times.push(contact.update_time);
            a.revisions.push(contact.revision.0);
            a.external_ids.push(f.external_id.clone());
            a.expected.push(expected.map(|r| r.0));
        }
        Ok(a)
    }
}

/// The match keys of many contacts, as arrays.
struct KeyArrays {
    kinds: Vec<&'static str>,
    values: Vec<String>,
    owners: Vec<Uuid>,
}

impl KeyArrays {
    fn new<'a>(contacts: impl Iterator<Item = &'a Contact>) -> Self {
        let (mut kinds, mut values, mut owners) = (Vec::new(), Vec::new(), Vec::new());
        for contact in contacts {
            for key in contact.fields.match_keys() {
                kinds.push(key.kind.as_str());
                values.push(key.value);
                owners.push(contact.id.0);
            }
        }
        Self { kinds, values, owners }
    }
}

/// The audit entries of many contacts, as arrays aligned with their [`ContactArrays`].
struct AuditArrays {
    ids: Vec<Uuid>,
    actions: Vec<&'static str>,
    actors: Vec<String>,
    changes: Vec<String>,
    traces: Vec<String>,
}

impl AuditArrays {
    /// `traces` holds each entry's trace when they came from different requests; when empty,
    /// every entry takes the current request's.
    fn new<'a>(entries: impl Iterator<Item = &'a AuditRecord>, traces: &[String]) -> Result<Self, StoreError> {
        let mut a = AuditArrays {
            ids: Vec::new(),
            actions: Vec::new(),
            actors: Vec::new(),
            changes: Vec::new(),
            traces: traces.to_vec(),
        };
        for audit in entries {
            a.ids.push(Uuid::now_v7());
            a.actions.push(audit.action.as_str());
            a.actors.push(audit.actor.as_str().to_owned());
            a.changes.push(to_json(&audit.changes)?);
        }
        if traces.is_empty() {
            let current = current_traceparent().unwrap_or_default();
            a.traces = vec![current; a.ids.len()];
        }
        Ok(a)
    }
}

/// The JSON text of a value bound as `jsonb`.
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

/// A row of contact_write's outcome: (outcome, claimed kind, probe key index, holder).
type WriteOutcome = (String, Option<String>, Option<i64>, Option<Uuid>);

/// The SQLSTATE contact_write raises when an update's revision moved.
const STALE_WRITE: &str = "CRM01";

/// Writes the creates and updates of `batch` in one call of contact_write (migration 0012):
/// the unique keys it claims locked and checked, then every row, match key and audit entry;
/// then the holders of each probe's keys are looked up. On a connection without a
/// transaction the call is a transaction of its own. `traces`: see [`AuditArrays::new`].
/// Returns, for each probe, the contacts holding its keys (merged and erased included: see
/// [`candidates`](super::duplicates::candidates)).
pub(super) async fn write_rows(
    conn: &mut PgConnection,
    tenant: &TenantId,
    batch: &WriteBatch,
    traces: &[String],
    probes: &[Probe<'_>],
) -> Result<Vec<Vec<Uuid>>, StoreError> {
    let claims = batch.claims()?;
    let claim_kinds: Vec<&str> = claims.iter().map(|c| c.0).collect();
    let claim_values: Vec<&str> = claims.iter().map(|c| c.1.as_str()).collect();
    let claimants: Vec<Uuid> = claims.iter().map(|c| c.2.0).collect();
    let contacts = || {
        batch
            .creates
            .iter()
            .map(|(c, _)| (c, None))
            .chain(batch.updates.iter().map(|(c, r, _)| (c, Some(*r))))
    };
    let rows = ContactArrays::new(contacts())?;
    let keys = KeyArrays::new(contacts().map(|(c, _)| c));
    let audits = AuditArrays::new(
        batch
            .creates
            .iter()
            .map(|(_, a)| a)
            .chain(batch.updates.iter().map(|(_, _, a)| a)),
        traces,
    )?;
    let published: Vec<&NewEvent> = batch
        .creates
        .iter()
        .map(|(_, a)| a)
        .chain(batch.updates.iter().map(|(_, _, a)| a))
        .flat_map(|a| &a.events)
        .collect();
    let events = EventColumns::of(&published);
    let probe_keys = ProbeKeys::new(probes);
    let outcomes: Vec<WriteOutcome> = sqlx::query_as(
        "SELECT outcome, kind, key_index, holder FROM contact_write($1, $2, $3, $4, $5, $6, $7, $8::jsonb[], $9::jsonb[], \
         $10, $11, $12, $13, $14, $15, $16::jsonb[], $17::jsonb[], $18::jsonb[], $19, $20, $21, $22, $23, $24, $25, $26, \
         $27, $28, $29, $30, $31::jsonb[], $32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44::text[]::jsonb[])",
    )
    .bind(tenant.as_str())
    .bind(&claim_kinds)
    .bind(&claim_values)
    .bind(&claimants)
    .bind(&rows.ids)
    .bind(&rows.given_names)
    .bind(&rows.family_names)
    .bind(&rows.emails)
    .bind(&rows.phones)
    .bind(&rows.primary_emails)
    .bind(&rows.titles)
    .bind(&rows.companies)
    .bind(&rows.stages)
    .bind(&rows.sources)
    .bind(&rows.owners)
    .bind(&rows.tags)
    .bind(&rows.attributes)
    .bind(&rows.consents)
    .bind(&rows.search_texts)
    .bind(&rows.create_times)
    .bind(&rows.update_times)
    .bind(&rows.revisions)
    .bind(&rows.external_ids)
    .bind(&rows.expected)
    .bind(&keys.kinds)
    .bind(&keys.values)
    .bind(&keys.owners)
    .bind(&audits.ids)
    .bind(&audits.actions)
    .bind(&audits.actors)
    .bind(&audits.changes)
    .bind(&audits.traces)
    .bind(now())
    .bind(&probe_keys.kinds)
    .bind(&probe_keys.values)
    .bind(PROBE_PER_KEY)
    .bind(&events.tenants)
    .bind(&events.ids)
    .bind(&events.types)
    .bind(&events.subjects)
    .bind(&events.times)
    .bind(&events.actors)
    .bind(&events.traceparents)
    .bind(&events.payloads)
    .fetch_all(&mut *conn)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(STALE_WRITE) => StoreError::RevisionMismatch,
        _ => err.into(),
    })?;
    let mut holders = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            (outcome, Some(kind), _, Some(holder)) if outcome == "claimed" => {
                return Err(claim_conflict(&kind, ContactId(holder)));
            }
            (outcome, ..) if outcome == "unknown_company" => return Err(StoreError::UnknownCompany),
            (outcome, _, Some(key), Some(holder)) if outcome == "held" => {
                holders.push((probe_keys.index(key)?, holder))
            }
            (outcome, ..) => return Err(corrupt(format!("contact_write outcome {outcome}"))),
        }
    }
    Ok(probe_keys.held(probes, holders))
}
