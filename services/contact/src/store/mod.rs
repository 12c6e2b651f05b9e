//! Storage of the contact service: one trait, a PostgreSQL and an SQLite implementation, and
//! one conformance suite both must pass.

use std::sync::LazyLock;

use async_trait::async_trait;
use crm_platform::outbox::{EventError, NewEvent};
use crm_platform::{ApiError, TenantId, UserId};
use sqlx::migrate::Migrator;

use crate::domain::{
    AuditRecord, Audited, Company, CompanyFilter, CompanyId, Contact, ContactFilter, ContactId, Cursor, HistoryEntry,
    Interaction, InteractionId, KeyKind, ListQuery, MatchKey, Revision, SearchTerms, SortField, SortKey,
};

#[cfg(test)]
mod conformance;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgContactStore;
pub use sqlite::SqliteContactStore;

/// How the application publishes the event of a change whose last details only the store
/// knows (the company an interaction is logged under, the owner a record is moved to): the
/// store calls it in the change's transaction and writes the event with the change.
pub type Publish<'a, T> = &'a (dyn Fn(&T) -> Result<NewEvent, EventError> + Send + Sync);

/// Blanks the values of a stored event's field changes (proto3 JSON of a crm.contact.v1 event:
/// `fields` of a creation, `changedFields` of a change or merge): what an erase leaves of the
/// events the feed still serves. True when anything changed.
pub(crate) fn erase_event_values(payload: &mut serde_json::Value) -> bool {
    let mut erased = false;
    for key in ["fields", "changedFields"] {
        let Some(changes) = payload.get_mut(key).and_then(serde_json::Value::as_array_mut) else {
            continue;
        };
        for change in changes.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            for value in ["oldValue", "newValue"] {
                if change.get(value).is_some_and(|v| !v.is_null()) {
                    change.insert(value.to_owned(), serde_json::Value::Null);
                    erased = true;
                }
            }
        }
    }
    erased
}

/// A record moved to another owner by a reassignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub of: Audited,
    pub to: UserId,
}

/// Migrations of each backend, embedded in the binary: the service's own, then the
/// platform's outbox.
pub static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| {
    crm_platform::outbox::migrations::postgres(&sqlx::migrate!("./migrations/postgres"), POSTGRES_APP_ROLE)
});
pub static SQLITE_MIGRATIONS: LazyLock<Migrator> =
    LazyLock::new(|| crm_platform::outbox::migrations::sqlite(&sqlx::migrate!("./migrations/sqlite")));

/// The PostgreSQL role the service serves as; row-level security applies to it.
pub const POSTGRES_APP_ROLE: &str = "crm_contact_app";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("revision mismatch")]
    RevisionMismatch,
    #[error("request id reused for a different request")]
    RequestIdReused,
    #[error("referenced company does not exist")]
    UnknownCompany,
    #[error("another contact has the same email address")]
    DuplicateEmail(ContactId),
    #[error("another contact has the same external id")]
    DuplicateExternalId(ContactId),
    #[error("another company has the same domain")]
    DuplicateDomain(CompanyId),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Event(#[from] EventError),
}

impl StoreError {
    /// The client-facing error; database details are logged, never returned.
    pub fn into_api(self, what: &str) -> ApiError {
        match self {
            StoreError::NotFound => ApiError::not_found(what),
            StoreError::RevisionMismatch => ApiError::etag_mismatch(),
            StoreError::RequestIdReused => crm_platform::idempotency::reused(),
            StoreError::UnknownCompany => ApiError::invalid_field("company", "no such company"),
            StoreError::DuplicateEmail(existing) => ApiError::new(
                crm_platform::ErrorCode::AlreadyExists,
                "DUPLICATE_EMAIL",
                format!(
                    "{} has the same email address; merge them, or create with allow_duplicate",
                    existing.name()
                ),
            ),
            StoreError::DuplicateExternalId(existing) => ApiError::new(
                crm_platform::ErrorCode::AlreadyExists,
                "DUPLICATE_EXTERNAL_ID",
                format!("{} has the same external_id", existing.name()),
            ),
            StoreError::DuplicateDomain(existing) => ApiError::new(
                crm_platform::ErrorCode::AlreadyExists,
                "DUPLICATE_DOMAIN",
                format!(
                    "{} has the same domain; merge them, or create with allow_duplicate",
                    existing.name()
                ),
            ),
            StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Event(_) => ApiError::internal(&self),
        }
    }
}

/// The idempotency key of a create (one for every service, see `crm_platform::idempotency`).
pub use crm_platform::idempotency::RequestKey;

/// The result of a create: the stored value, and whether an earlier identical request made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Created<T> {
    pub value: T,
    pub replayed: bool,
    /// Live records sharing a match key with it, read in the same transaction (up to
    /// [`MAX_CANDIDATES`]; contacts only, empty for other records).
    pub similar: Vec<T>,
}

impl<T> Created<T> {
    pub(crate) fn new(value: T, replayed: bool) -> Self {
        Self {
            value,
            replayed,
            similar: Vec::new(),
        }
    }
}

/// How many likely duplicates a lookup considers at most.
pub const MAX_CANDIDATES: usize = 200;

/// Whose timeline to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineOf {
    Contact(ContactId),
    Company(CompanyId),
}

/// Kinds of resources idempotency keys are kept for.
pub(crate) const KIND_CONTACT: &str = "contact";
pub(crate) const KIND_COMPANY: &str = "company";
pub(crate) const KIND_INTERACTION: &str = "interaction";

/// The records a user can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Contacts,
    Companies,
}

impl Owned {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Owned::Contacts => "contacts",
            Owned::Companies => "companies",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Owned::Contacts => "contact",
            Owned::Companies => "company",
        }
    }

    /// The record of this kind with `id`.
    pub(crate) fn record(self, id: uuid::Uuid) -> Audited {
        match self {
            Owned::Contacts => Audited::Contact(ContactId(id)),
            Owned::Companies => Audited::Company(CompanyId(id)),
        }
    }
}

/// A store: the traits of every resource, each implemented by both backends in a file named
/// after it. Every write records its audit entry in the same transaction.
pub trait ContactStore:
    Contacts + Erasure + Companies + Interactions + History + Ownership + Duplicates + Merges + Imports + 'static
{
}

impl<S> ContactStore for S where
    S: Contacts + Erasure + Companies + Interactions + History + Ownership + Duplicates + Merges + Imports + 'static
{
}

/// Contacts: created, read, updated, deleted, listed and searched.
#[async_trait]
pub trait Contacts: Send + Sync {
    /// Creates a contact. With `unique_email`, fails with `DuplicateEmail` when a live contact
    /// of the tenant already has one of its email addresses (checked under a lock, so two
    /// concurrent creates cannot both pass). Returns the contacts sharing a match key with it
    /// in `similar`.
    async fn create_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_email: bool,
    ) -> Result<Created<Contact>, StoreError>;
    async fn get_contact(&self, tenant: &TenantId, id: ContactId) -> Result<Contact, StoreError>;
    /// Writes `contact` if the stored revision is still `expected`.
    async fn update_contact(
        &self,
        tenant: &TenantId,
        contact: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn delete_contact(
        &self,
        tenant: &TenantId,
        id: ContactId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    /// Up to `limit + 1` contacts (erased ones left out), so the caller can tell whether
    /// another page follows.
    async fn list_contacts(
        &self,
        tenant: &TenantId,
        query: &ListQuery<ContactFilter>,
    ) -> Result<Vec<Contact>, StoreError>;
    /// Contacts matching every word as a prefix, best matches first; up to `limit + 1` from
    /// `offset`. PostgreSQL ranks a bounded set of matching candidates (the rarest word's
    /// exact term first), so a query matching a large part of the tenant costs the same.
    async fn search_contacts(
        &self,
        tenant: &TenantId,
        terms: &SearchTerms,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError>;
}

/// Erasure of a contact's personal data.
#[async_trait]
pub trait Erasure: Send + Sync {
    /// Writes the tombstone (if the revision is still `expected`) and removes the contact's
    /// personal data from its interactions and from the values of its audit trail.
    async fn erase_contact(
        &self,
        tenant: &TenantId,
        tombstone: &Contact,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
}

/// Companies: created, read, updated, deleted and listed.
#[async_trait]
pub trait Companies: Send + Sync {
    /// Creates a company. With `unique_domain`, fails with `DuplicateDomain` when a live
    /// company of the tenant already has its domain.
    async fn create_company(
        &self,
        tenant: &TenantId,
        company: &Company,
        key: Option<&RequestKey>,
        audit: &AuditRecord,
        unique_domain: bool,
    ) -> Result<Created<Company>, StoreError>;
    async fn get_company(&self, tenant: &TenantId, id: CompanyId) -> Result<Company, StoreError>;
    async fn update_company(
        &self,
        tenant: &TenantId,
        company: &Company,
        expected: Revision,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    /// Deletes a company; its contacts lose the link.
    async fn delete_company(
        &self,
        tenant: &TenantId,
        id: CompanyId,
        expected: Option<Revision>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;
    async fn list_companies(
        &self,
        tenant: &TenantId,
        query: &ListQuery<CompanyFilter>,
    ) -> Result<Vec<Company>, StoreError>;
}

/// The interactions that make the timelines of contacts and companies.
#[async_trait]
pub trait Interactions: Send + Sync {
    /// Records an interaction on an existing contact, noting the contact's current company.
    async fn create_interaction(
        &self,
        tenant: &TenantId,
        interaction: &Interaction,
        key: Option<&RequestKey>,
        publish: Publish<'_, Interaction>,
    ) -> Result<Created<Interaction>, StoreError>;
    async fn get_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<Interaction, StoreError>;
    /// Newest first; up to `limit + 1` after the cursor (occur time, id).
    async fn list_interactions(
        &self,
        tenant: &TenantId,
        of: TimelineOf,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Interaction>, StoreError>;
    async fn delete_interaction(
        &self,
        tenant: &TenantId,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<(), StoreError>;
}

/// The audit trail of contacts and companies.
#[async_trait]
pub trait History: Send + Sync {
    /// Audit entries of a record, newest first; up to `limit + 1` older than `before`.
    async fn list_history(
        &self,
        tenant: &TenantId,
        of: Audited,
        before: Option<uuid::Uuid>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
}

/// The records each user owns, and their reassignment.
#[async_trait]
pub trait Ownership: Send + Sync {
    /// How many records of a kind a user owns (merged-away lineage records are not counted:
    /// they resolve to their survivor, whose owner is the one that matters).
    async fn count_owned(&self, tenant: &TenantId, what: Owned, owner: &UserId) -> Result<u64, StoreError>;
    /// Moves up to `limit` records of `from` in one transaction, the i-th to
    /// `to[(offset + i) % to.len()]`, each with an audit entry; returns how many each target got.
    async fn reassign_batch(&self, tenant: &TenantId, batch: &Batch<'_>) -> Result<Vec<u64>, StoreError>;
}

/// The match keys records share, and the live records holding them.
#[async_trait]
pub trait Duplicates: Send + Sync {
    /// Live contacts (not erased, not merged) having any of these match keys, up to `limit`.
    async fn find_by_keys(
        &self,
        tenant: &TenantId,
        keys: &[MatchKey],
        limit: usize,
    ) -> Result<Vec<Contact>, StoreError>;
    /// The live contacts (neither erased nor merged away) among `ids` (which may repeat), in
    /// no given order.
    async fn get_live_contacts(&self, tenant: &TenantId, ids: &[ContactId]) -> Result<Vec<Contact>, StoreError>;

    /// Match keys shared by several contacts, in key order after `after`, up to `limit`, each
    /// with its holders in id order. A range read of the keys' index: a page costs the keys it
    /// reads, not the tenant's.
    async fn shared_keys(
        &self,
        tenant: &TenantId,
        after: Option<&MatchKey>,
        limit: usize,
    ) -> Result<Vec<(MatchKey, Vec<ContactId>)>, StoreError>;

    /// Live companies with this domain, or with this name block (see
    /// [`crate::domain::company::name_block`]), up to `limit`.
    async fn company_candidates(
        &self,
        tenant: &TenantId,
        domain: Option<&str>,
        name_block: &str,
        limit: usize,
    ) -> Result<Vec<Company>, StoreError>;
    /// (kind, value) keys — `domain` or `name` — shared by several live companies, in key
    /// order after `after`, up to `limit`.
    async fn shared_company_keys(
        &self,
        tenant: &TenantId,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> Result<Vec<((String, String), Vec<CompanyId>)>, StoreError>;
}

/// Merges of contacts and of companies.
#[async_trait]
pub trait Merges: Send + Sync {
    /// Writes the survivor's merged state and turns each merged contact into a lineage record
    /// pointing at it (personal fields moved, not kept twice), moving interactions and
    /// earlier lineage, all in one transaction with the audit entries.
    async fn merge_contacts(&self, tenant: &TenantId, merge: &Merge<'_>) -> Result<(), StoreError>;

    /// Writes the survivor's merged state and points each merged company at it, moving their
    /// contacts, interactions and earlier lineage, in one transaction with the audit entries.
    async fn merge_companies(&self, tenant: &TenantId, merge: &CompanyMerge<'_>) -> Result<(), StoreError>;
}

/// The lookups and batch writes of an import.
#[async_trait]
pub trait Imports: Send + Sync {
    /// Live contacts holding one of `values` as a key of `kind`, each with the value it holds.
    async fn contacts_by_key(
        &self,
        tenant: &TenantId,
        kind: KeyKind,
        values: &[String],
    ) -> Result<Vec<(String, Contact)>, StoreError>;
    /// Writes a batch of creates and updates in one transaction: all of it, or nothing and
    /// the first refusal. Each create is refused as [`Contacts::create_contact`] refuses
    /// one with `unique_email`, each update as [`Contacts::update_contact`] does.
    async fn write_batch(&self, tenant: &TenantId, batch: &WriteBatch) -> Result<(), StoreError>;
}

/// Creates and updates written together (by an import).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Whether creates claim their email addresses (a live holder refuses them).
    pub unique_email: bool,
    pub creates: Vec<(Contact, AuditRecord)>,
    /// The new state, the revision it was read at, and the audit entry.
    pub updates: Vec<(Contact, Revision, AuditRecord)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty()
    }

    /// The unique keys the batch claims, (kind, value, claiming contact), sorted: external ids
    /// of every contact and the email addresses of creates. A value claimed twice within the
    /// batch is refused here, naming the first claimant.
    pub(crate) fn claims(&self) -> Result<Vec<(&'static str, String, ContactId)>, StoreError> {
        let mut claims = Vec::new();
        let contacts = self.creates.iter().map(|(c, _)| (c, true));
        for (contact, create) in contacts.chain(self.updates.iter().map(|(c, _, _)| (c, false))) {
            if let Some(id) = &contact.fields.external_id {
                claims.push((KeyKind::External.as_str(), id.clone(), contact.id));
            }
            if create && self.unique_email {
                for email in &contact.fields.emails {
                    claims.push((KeyKind::Email.as_str(), email.address.key(), contact.id));
                }
            }
        }
        claims.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        claims.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        if let Some(pair) = claims.windows(2).find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1) {
            return Err(claim_conflict(pair[0].0, pair[0].2));
        }
        Ok(claims)
    }
}

/// The refusal for a unique key of `kind` already held by `holder`.
pub(crate) fn claim_conflict(kind: &str, holder: ContactId) -> StoreError {
    if kind == KeyKind::Email.as_str() {
        StoreError::DuplicateEmail(holder)
    } else {
        StoreError::DuplicateExternalId(holder)
    }
}

/// One batch of a portfolio reassignment: up to `limit` records of kind `what` owned by
/// `from`, the i-th going to `to[(offset + i) % to.len()]`, done by `actor`; each move is
/// published.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub publish: Publish<'a, Moved>,
    pub what: Owned,
    pub from: &'a UserId,
    pub to: &'a [UserId],
    pub offset: usize,
    pub limit: usize,
    pub actor: &'a UserId,
}

/// A merge as the store writes it.
#[derive(Debug, Clone, Copy)]
pub struct Merge<'a> {
    /// The survivor's new state, written if its revision is still `expected`.
    pub survivor: &'a Contact,
    pub expected: Revision,
    /// The merged contacts with the revisions they were read at.
    pub merged: &'a [(ContactId, Revision)],
    pub survivor_audit: &'a AuditRecord,
    pub merged_audit: &'a AuditRecord,
}

/// A company merge as the store writes it.
#[derive(Debug, Clone, Copy)]
pub struct CompanyMerge<'a> {
    pub survivor: &'a Company,
    pub expected: Revision,
    pub merged: &'a [(CompanyId, Revision)],
    pub survivor_audit: &'a AuditRecord,
    pub merged_audit: &'a AuditRecord,
}

/// The targets of a round-robin batch: `to[(offset + i) % to.len()]` for the i-th record.
pub(crate) fn round_robin(to: &[UserId], offset: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| (offset + i) % to.len().max(1)).collect()
}

/// The cursor that continues a listing after `contact`.
pub fn contact_cursor(contact: &Contact, field: SortField) -> Cursor {
    let key = match field {
        SortField::UpdateTime => SortKey::Time(contact.update_time),
        SortField::FamilyName => SortKey::Text(contact.fields.family_name.clone()),
        SortField::GivenName => SortKey::Text(contact.fields.given_name.clone()),
        SortField::CreateTime | SortField::DisplayName => SortKey::Time(contact.create_time),
    };
    Cursor { key, id: contact.id.0 }
}

/// The cursor that continues a listing after `company`.
pub fn company_cursor(company: &Company, field: SortField) -> Cursor {
    let key = match field {
        SortField::UpdateTime => SortKey::Time(company.update_time),
        SortField::DisplayName => SortKey::Text(company.fields.display_name.clone()),
        _ => SortKey::Time(company.create_time),
    };
    Cursor { key, id: company.id.0 }
}

/// The cursor that continues a timeline after `interaction`.
pub fn interaction_cursor(interaction: &Interaction) -> Cursor {
    Cursor {
        key: SortKey::Time(interaction.fields.occur_time),
        id: interaction.id.0,
    }
}

/// The FTS query text of each backend: every term must match as a prefix.
pub(crate) fn tsquery(terms: &SearchTerms) -> String {
    terms
        .words()
        .iter()
        .map(|w| format!("'{}':*", w.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" & ")
}

/// With `prefix` each word matches as a prefix, without it as a whole word. A word that another
/// word starts with (a repeated one too) is left out: every contact having the longer word has
/// it, and each word of the query costs a pass over the contacts having it.
pub(crate) fn fts5_query(terms: &SearchTerms, prefix: bool) -> String {
    let words = terms.words();
    let implied = |i: usize, w: &String| {
        words
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.starts_with(w.as_str()) && (other.len() > w.len() || j < i))
    };
    words
        .iter()
        .enumerate()
        .filter(|&(i, w)| !implied(i, w))
        .map(|(_, w)| format!("\"{}\"{}", w.replace('"', "\"\""), if prefix { "*" } else { "" }))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `columns` (a comma-separated list) prefixed with `alias`.
pub(crate) fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn corrupt(err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// Decodes a stored user id.
pub(crate) fn stored_user(raw: &str) -> Result<crm_platform::UserId, StoreError> {
    crm_platform::UserId::parse(raw).map_err(corrupt)
}

/// Decodes a stored enum word.
pub(crate) fn stored_word<T>(raw: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(raw).ok_or_else(|| corrupt(format!("unknown value `{raw}`")))
}
