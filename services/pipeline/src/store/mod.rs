//! Storage of the pipeline service: one trait, a PostgreSQL and an SQLite implementation, and
//! one conformance suite both must pass.
//!
//! Each kind of record has its table: the record as a document (its serde form, `body`) and
//! the columns queries filter, sort and sum on, which the database derives from the document
//! (generated columns), so they cannot disagree with it. A deal's stage history is a typed,
//! append-only table. Every write is one [`Write`]: records with their expected revisions,
//! stage transitions, outbox events and an idempotency key, all or nothing.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_platform::outbox::NewEvent;
use crm_platform::{ApiError, TenantId};
use sqlx::migrate::Migrator;
use uuid::Uuid;

use crate::domain::{Money, Transition};

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgPipelineStore;
pub use sqlite::SqlitePipelineStore;

/// Migrations of each backend, embedded in the binary: the service's own, then the
/// platform's outbox (its schema, `format` and `outbox_append`, defined once for every service).
pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| {
    crm_platform::outbox::migrations::postgres(&sqlx::migrate!("./migrations/postgres"), POSTGRES_APP_ROLE)
});
pub static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| crm_platform::outbox::migrations::sqlite(&sqlx::migrate!("./migrations/sqlite")));

/// The PostgreSQL role the service serves as; row-level security applies to it.
pub const POSTGRES_APP_ROLE: &str = "crm_pipeline_app";

/// The kinds of records, one table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pipeline,
    Lead,
    Deal,
    Product,
    Task,
    Forecast,
    Quota,
}

impl Kind {
    pub fn table(self) -> &'static str {
        match self {
            Kind::Pipeline => "pipelines",
            Kind::Lead => "leads",
            Kind::Deal => "deals",
            Kind::Product => "products",
            Kind::Task => "tasks",
            Kind::Forecast => "forecasts",
            Kind::Quota => "quotas",
        }
    }

    /// The column a list of this kind is ordered by before its id (ids are time-ordered, so
    /// without one a list is in creation order).
    fn order_column(self) -> Option<&'static str> {
        match self {
            Kind::Task => Some("due_order"),
            _ => None,
        }
    }
}

/// A stored record: its document and bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: Uuid,
    pub revision: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub body: serde_json::Value,
}

/// A record to write: new (`expected` None) or replacing the revision `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Put {
    pub kind: Kind,
    pub doc: Doc,
    pub expected: Option<i64>,
}

/// The idempotency key of a create: the client's request id, a fingerprint of the request
/// and the record it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub kind: Kind,
    pub request_id: String,
    pub fingerprint: String,
    pub resource: Uuid,
}

/// One atomic write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    pub puts: Vec<Put>,
    pub transitions: Vec<Transition>,
    pub events: Vec<NewEvent>,
    pub request: Option<RequestKey>,
    /// Contacts merged away, with their survivor: `(merged, survivor)`.
    pub merges: Vec<(Uuid, Uuid)>,
    /// Ids of erased contacts to scrub from stored event payloads and the audit
    /// log: see [`scrub_payload`].
    pub scrub: Vec<String>,
}

impl Write {
    /// Adds another write's records, transitions and events to this one (one transaction).
    pub fn absorb(&mut self, other: Write) {
        self.puts.extend(other.puts);
        self.transitions.extend(other.transitions);
        self.events.extend(other.events);
        self.merges.extend(other.merges);
        self.scrub.extend(other.scrub);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record changed since it was read (its revision is not the expected one), or a new
    /// record's id exists.
    #[error("revision mismatch")]
    Stale,
    /// A unique rule of the kind was broken (a product's SKU, a quota's owner and period).
    #[error("{0} is taken")]
    Taken(&'static str),
    /// The request id was used before (by this or a concurrent request).
    #[error("request id used before")]
    RequestIdUsed,
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The client-facing error; database details are logged, never returned.
    pub fn into_api(self) -> ApiError {
        match self {
            StoreError::Stale => ApiError::etag_mismatch(),
            StoreError::Taken(field) => ApiError::new(
                crm_platform::ErrorCode::AlreadyExists,
                "ALREADY_EXISTS",
                format!("another record has the same {field}"),
            ),
            StoreError::RequestIdUsed => ApiError::new(
                crm_platform::ErrorCode::Aborted,
                "REQUEST_IN_FLIGHT",
                "a request with this request_id is being processed; retry",
            ),
            StoreError::Corrupt(_) | StoreError::Database(_) => ApiError::internal(&self),
        }
    }
}

/// A filter of a list; each names one derived column, never free SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Owner(String),
    Status(&'static str),
    Pipeline(Uuid),
    Contact(Uuid),
    Company(Uuid),
    Period(String),
    /// The record's id in the system it was imported from.
    ExternalId(String),
    ActiveOnly,
    /// Open tasks due before this time.
    DueBefore(DateTime<Utc>),
}

impl Filter {
    /// The column and the bound value, as text (every derived column compares as text).
    fn column(&self) -> (&'static str, Option<String>) {
        match self {
            Filter::Owner(owner) => ("owner", Some(owner.clone())),
            Filter::Status(status) => ("status", Some((*status).to_owned())),
            Filter::Pipeline(id) => ("pipeline_id", Some(id.to_string())),
            Filter::Contact(id) => ("contact_id", Some(id.to_string())),
            Filter::Company(id) => ("company_id", Some(id.to_string())),
            Filter::Period(period) => ("period", Some(period.clone())),
            Filter::ExternalId(id) => ("external_id", Some(id.clone())),
            Filter::ActiveOnly => ("active", None),
            Filter::DueBefore(_) => ("due_order", None),
        }
    }
}

/// A page of a list: keyset after `(order value, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub kind: Kind,
    pub filters: Vec<Filter>,
    pub after: Option<(i64, Uuid)>,
    pub limit: usize,
}

/// A listed record with its order key (for the next page's cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub order: i64,
    pub doc: Doc,
}

/// One stage of a board.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardStage {
    pub stage: Uuid,
    pub count: i64,
    /// Sum per currency, sorted by currency.
    pub totals: Vec<Money>,
    /// The first deals by expected close date (then id).
    pub deals: Vec<Doc>,
}

/// Groups per-(stage, currency) sums, ordered by stage, into board stages.
pub(crate) fn board_stages(sums: impl IntoIterator<Item = (Uuid, i64, Money)>) -> Vec<BoardStage> {
    let mut stages: Vec<BoardStage> = Vec::new();
    for (stage, count, money) in sums {
        match stages.last_mut() {
            Some(last) if last.stage == stage => {
                last.count = last.count.saturating_add(count);
                last.totals.push(money);
            }
            _ => stages.push(BoardStage {
                stage,
                count,
                totals: vec![money],
                deals: Vec::new(),
            }),
        }
    }
    stages
}

/// A change the contact service made that this service follows (from its feed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    /// Contacts merged into a survivor: references to them now point at the survivor.
    ContactsMerged { survivor: Uuid, merged: Vec<Uuid> },
    /// Companies merged into a survivor.
    CompaniesMerged { survivor: Uuid, merged: Vec<Uuid> },
    /// A contact erased: its references and the text of records about it go.
    ContactErased { contact: Uuid },
}

#[async_trait]
pub trait PipelineStore: Send + Sync + 'static {
    async fn get(&self, tenant: &TenantId, kind: Kind, id: Uuid) -> Result<Option<Doc>, StoreError>;

    /// Records of a kind matching every filter, in order, after the cursor.
    async fn list(&self, tenant: &TenantId, query: &ListQuery) -> Result<Vec<Listed>, StoreError>;

    /// Writes everything or nothing.
    async fn write(&self, tenant: &TenantId, write: &Write) -> Result<(), StoreError>;

    /// The record an earlier request with this id created, and that request's fingerprint.
    async fn request(
        &self,
        tenant: &TenantId,
        kind: Kind,
        request_id: &str,
    ) -> Result<Option<(String, Uuid)>, StoreError>;

    /// A pipeline's open deals per stage (stages without deals left out).
    async fn board(
        &self,
        tenant: &TenantId,
        pipeline: Uuid,
        owner: Option<&str>,
        per_stage: usize,
    ) -> Result<Vec<BoardStage>, StoreError>;

    /// A deal's transitions with a sequence above `after`, oldest first.
    async fn transitions(
        &self,
        tenant: &TenantId,
        deal: Uuid,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError>;

    /// Open tasks of every tenant whose due time has come and whose TaskDue is not yet
    /// published, earliest first; and the next due time after `now` still to come.
    async fn owed_due_tasks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<(TenantId, Doc)>, Option<DateTime<Utc>>), StoreError>;

    /// Records of a kind that reference a contact (`field` "contact") or a company ("company").
    async fn referencing(
        &self,
        tenant: &TenantId,
        kind: Kind,
        field: &'static str,
        id: Uuid,
    ) -> Result<Vec<Doc>, StoreError>;

    /// The contacts merged (directly or through a chain of merges) into `survivor`.
    async fn merged_into(&self, tenant: &TenantId, survivor: Uuid) -> Result<Vec<Uuid>, StoreError>;

    /// The last contact-feed sequence applied under `consumer`.
    async fn checkpoint(&self, consumer: &str) -> Result<u64, StoreError>;

    /// Applies writes made for followed events and moves the checkpoint from `previous` to
    /// `to`, in one transaction; false (nothing written) when the checkpoint moved meanwhile.
    async fn follow(
        &self,
        consumer: &str,
        previous: u64,
        to: u64,
        writes: &[(TenantId, Write)],
    ) -> Result<bool, StoreError>;

    /// After an erasure has been applied: removes the copies of the erased values the backend
    /// still keeps in its files (SQLite's write-ahead log; PostgreSQL's old row versions go
    /// with vacuum, and nothing is done here).
    async fn purge_erased(&self) -> Result<(), StoreError>;
}

/// Removes an erased contact from a stored payload or document: every object whose `contact`
/// is `id` loses the reference and its free text (`title`, `notes`). Returns whether anything
/// changed. Reads both forms: a document (and a payload written before typed events) holds
/// the bare id, which becomes null; a message's proto3 JSON (an event's payload) holds the
/// resource name `contacts/{id}`, which becomes empty, as a message without a contact has it.
pub fn scrub_payload(value: &mut serde_json::Value, id: &str) -> bool {
    use serde_json::Value;
    let mut changed = false;
    match value {
        Value::Object(map) => {
            let cleared = match map.get("contact").and_then(Value::as_str) {
                Some(contact) if contact == id => Some(Value::Null),
                Some(contact) if contact.strip_prefix("contacts/") == Some(id) => Some(Value::String(String::new())),
                _ => None,
            };
            if let Some(cleared) = cleared {
                map.insert("contact".into(), cleared);
                for field in ["title", "notes"] {
                    if map.contains_key(field) {
                        map.insert(field.into(), Value::String(String::new()));
                    }
                }
                changed = true;
            }
            for child in map.values_mut() {
                changed |= scrub_payload(child, id);
            }
        }
        Value::Array(items) => {
            for child in items {
                changed |= scrub_payload(child, id);
            }
        }
        _ => {}
    }
    changed
}

/// A value bound to a list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// The SQL of a list, with `placeholder(n)` spelling the n-th parameter of the backend; ids
/// compare through `id_param(placeholder)` (a cast on PostgreSQL).
pub(crate) fn list_sql(
    tenant: &TenantId,
    query: &ListQuery,
    placeholder: fn(usize) -> String,
    id_param: fn(String) -> String,
) -> (String, Vec<Bind>) {
    let mut binds = vec![Bind::Text(tenant.as_str().to_owned())];
    let param = |bind: Bind, binds: &mut Vec<Bind>| {
        binds.push(bind);
        placeholder(binds.len())
    };
    let order = query.kind.order_column();
    let mut sql = format!(
        "SELECT {} AS ord, id, revision, create_time, update_time, body FROM {} WHERE tenant_id = {}",
        order.unwrap_or("CAST(0 AS BIGINT)"),
        query.kind.table(),
        placeholder(1)
    );
    for filter in &query.filters {
        match (filter, filter.column()) {
            (Filter::DueBefore(time), _) => {
                let p = param(Bind::Int(time.timestamp_micros()), &mut binds);
                sql.push_str(&format!(" AND status = 'open' AND due_order < {p}"));
            }
            (_, (column, Some(value))) => {
                let p = param(Bind::Text(value), &mut binds);
                sql.push_str(&format!(" AND {column} = {p}"));
            }
            (_, (column, None)) => sql.push_str(&format!(" AND {column}")),
        }
    }
    if let Some((ord, id)) = query.after {
        let id = id_param(param(Bind::Text(id.to_string()), &mut binds));
        match order {
            Some(column) => {
                let o = param(Bind::Int(ord), &mut binds);
                sql.push_str(&format!(" AND ({column}, id) > ({o}, {id})"));
            }
            None => sql.push_str(&format!(" AND id > {id}")),
        }
    }
    let limit = param(Bind::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)), &mut binds);
    match order {
        Some(column) => sql.push_str(&format!(" ORDER BY {column}, id LIMIT {limit}")),
        None => sql.push_str(&format!(" ORDER BY id LIMIT {limit}")),
    }
    (sql, binds)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::scrub_payload;

    const ID: &str = "0190a1b2-0000-7000-8000-0000000000a1";

    #[test]
    fn scrubbing_reads_documents_and_earlier_payloads() {
        let mut earlier = json!({
            "record": {"id": "x", "body": {"title": "Call Ada", "notes": "mornings", "contact": ID}},
            "changed": ["contact"],
        });
        assert!(scrub_payload(&mut earlier, ID));
        assert_eq!(
            earlier["record"]["body"],
            json!({"title": "", "notes": "", "contact": null})
        );
        assert!(!scrub_payload(&mut earlier, ID), "nothing left to scrub");
    }

    #[test]
    fn scrubbing_reads_typed_payloads() {
        let mut converted = json!({
            "lead": {"name": "leads/1", "title": "Ada wants Pro", "contact": format!("contacts/{ID}"), "source": "web"},
            "deal": {"name": "deals/2", "displayName": "Pro", "contact": format!("contacts/{ID}")},
        });
        assert!(scrub_payload(&mut converted, ID));
        assert_eq!(
            converted,
            json!({
                "lead": {"name": "leads/1", "title": "", "contact": "", "source": "web"},
                "deal": {"name": "deals/2", "displayName": "Pro", "contact": ""},
            })
        );
        let mut other = json!({"task": {"title": "Call Bob", "contact": "contacts/someone-else"}});
        assert!(!scrub_payload(&mut other, ID), "another contact's records stay");
        assert_eq!(other["task"]["title"], "Call Bob");
    }
}
