//! The pipeline service's rules: who may do what, what a valid change is, and which records,
//! transitions and events each change writes (in one store write). Events are the generated
//! messages (`crate::convert` makes records into them), each typed by its own name.

mod deals;
mod forecasts;
mod history;
mod leads;
mod ownership;
mod pipelines;
mod products;
mod references;
mod tasks;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_platform::outbox::NewEvent;
use crm_platform::paging::PageRequest;
use crm_platform::{ApiError, ErrorCode, Principal, TenantId};
use crm_proto::prost::Name;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use deals::{DealInput, DealPatch, LineInput, close_date};
pub use history::{HistoricalDeal, HistoricalLead, Imported, Pipelines, StageEntry};
pub use leads::LeadPatch;
pub use ownership::{Moved, Share};
pub use pipelines::StageInput;
pub use products::ProductPatch;
pub use tasks::{SYSTEM_ACTOR, TaskPatch};

use crate::directory::Directory;
use crate::store::{Doc, Kind, ListQuery, PipelineStore, Put, RequestKey, StoreError, Write};

pub use crate::domain::Rec;

impl<T: Serialize + DeserializeOwned> Rec<T> {
    fn from_doc(doc: Doc) -> Result<Self, ApiError> {
        Ok(Rec {
            id: doc.id,
            revision: doc.revision,
            create_time: doc.create_time,
            update_time: doc.update_time,
            body: serde_json::from_value(doc.body).map_err(|e| ApiError::internal(&e))?,
        })
    }

    fn to_doc(&self) -> Result<Doc, ApiError> {
        Ok(Doc {
            id: self.id,
            revision: self.revision,
            create_time: self.create_time,
            update_time: self.update_time,
            body: serde_json::to_value(&self.body).map_err(|e| ApiError::internal(&e))?,
        })
    }

    /// A new record, first revision.
    fn new(body: T, now: DateTime<Utc>) -> Self {
        Rec {
            id: Uuid::now_v7(),
            revision: 1,
            create_time: now,
            update_time: now,
            body,
        }
    }

    /// The next revision of this record with `body`.
    fn next(&self, body: T, now: DateTime<Utc>) -> Self {
        Rec {
            id: self.id,
            revision: self.revision + 1,
            create_time: self.create_time,
            update_time: now,
            body,
        }
    }
}

use crm_platform::time::{Clock, SystemClock};

/// Who is calling, and the credentials to call other services on their behalf.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    /// The caller's `authorization` header value, passed on to the contact service.
    pub credentials: String,
}

impl Caller {
    fn tenant(&self) -> &TenantId {
        &self.who.tenant
    }

    fn user(&self) -> &str {
        self.who.user.as_str()
    }
}

/// The event `message` reports of a change to `record` (of collection `collection`): typed,
/// its type the message's own name, written with the change.
fn event<T, M: Name>(caller: &Caller, collection: &str, record: &Rec<T>, message: &M) -> Result<NewEvent, ApiError> {
    Ok(NewEvent::of(
        caller.tenant(),
        format!("{collection}/{}", record.id),
        caller.user(),
        record.update_time,
        message,
    )?)
}

/// The put of a new record, or of the next revision of one read at `expected`.
fn put<T: Serialize + DeserializeOwned>(kind: Kind, record: &Rec<T>, expected: Option<i64>) -> Result<Put, ApiError> {
    Ok(Put {
        kind,
        doc: record.to_doc()?,
        expected,
    })
}

/// Checks a client's etag against the revision read.
fn check_etag(etag: Option<i64>, revision: i64) -> Result<(), ApiError> {
    match etag {
        Some(expected) if expected != revision => Err(ApiError::etag_mismatch()),
        _ => Ok(()),
    }
}

fn failed(reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::FailedPrecondition, reason, message)
}

fn store_error(err: StoreError) -> ApiError {
    err.into_api()
}

/// A kind of record a user owns (a lead's or deal's owner, a task's assignee).
pub(super) trait Owned: Serialize + DeserializeOwned + Clone + Send + Sync {
    const KIND: Kind;
    const COLLECTION: &'static str;
    fn owner(&self) -> &str;
    fn owner_mut(&mut self) -> &mut String;
}

impl Owned for crate::domain::Lead {
    const KIND: Kind = Kind::Lead;
    const COLLECTION: &'static str = "leads";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn owner_mut(&mut self) -> &mut String {
        &mut self.owner
    }
}

impl Owned for crate::domain::Deal {
    const KIND: Kind = Kind::Deal;
    const COLLECTION: &'static str = "deals";
    fn owner(&self) -> &str {
        &self.owner
    }
    fn owner_mut(&mut self) -> &mut String {
        &mut self.owner
    }
}

impl Owned for crate::domain::Task {
    const KIND: Kind = Kind::Task;
    const COLLECTION: &'static str = "tasks";
    fn owner(&self) -> &str {
        &self.assignee
    }
    fn owner_mut(&mut self) -> &mut String {
        &mut self.assignee
    }
}

/// The write of `record`, the next revision of one read at `read`: its put (failing as stale
/// if the record changed since) and its event, `message`.
fn revision_write<T: Serialize + DeserializeOwned, M: Name>(
    caller: &Caller,
    kind: Kind,
    read: i64,
    record: &Rec<T>,
    message: &M,
) -> Result<Write, ApiError> {
    Ok(Write {
        puts: vec![put(kind, record, Some(read))?],
        events: vec![event(caller, kind.table(), record, message)?],
        ..Write::default()
    })
}

impl PipelineApp {
    /// The next revision of `current` with `body`, and its write (see [`revision_write`]) with
    /// the event `message` makes of the new revision.
    fn revise<T: Serialize + DeserializeOwned, M: Name>(
        &self,
        caller: &Caller,
        kind: Kind,
        current: &Rec<T>,
        body: T,
        message: impl FnOnce(&Rec<T>) -> M,
    ) -> Result<(Rec<T>, Write), ApiError> {
        let record = current.next(body, self.now());
        let write = revision_write(caller, kind, current.revision, &record, &message(&record))?;
        Ok((record, write))
    }
}

/// The fields an update changed, as its event lists them.
fn changed(fields: Vec<&'static str>) -> Vec<String> {
    fields.into_iter().map(str::to_owned).collect()
}

/// The application: rules over a store and the contact directory.
#[derive(Clone)]
pub struct PipelineApp {
    store: Arc<dyn PipelineStore>,
    directory: Arc<dyn Directory>,
    /// Woken when a task's due time may have changed (the due-task scheduler listens).
    due_changed: Arc<tokio::sync::Notify>,
    /// Where the time comes from.
    clock: Arc<dyn Clock>,
}

impl PipelineApp {
    pub fn new(store: Arc<dyn PipelineStore>, directory: Arc<dyn Directory>) -> Self {
        Self {
            store,
            directory,
            due_changed: Arc::new(tokio::sync::Notify::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same application reading the time from `clock` (tests move a manual one on).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Now, by the application's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn PipelineStore> {
        &self.store
    }

    pub fn due_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.due_changed)
    }

    async fn load<T: Serialize + DeserializeOwned>(
        &self,
        tenant: &TenantId,
        kind: Kind,
        id: Uuid,
        what: &str,
    ) -> Result<Rec<T>, ApiError> {
        let doc = self
            .store
            .get(tenant, kind, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(what))?;
        Rec::from_doc(doc)
    }

    async fn list_records<T: Serialize + DeserializeOwned>(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Vec<(i64, Rec<T>)>, ApiError> {
        self.store
            .list(tenant, query)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|listed| Ok((listed.order, Rec::from_doc(listed.doc)?)))
            .collect()
    }

    /// Replays an earlier create with the same request id, if there was one: its record when
    /// the request was the same, a refusal when the id was used for another request.
    async fn replay<T: Serialize + DeserializeOwned>(
        &self,
        caller: &Caller,
        kind: Kind,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Option<Rec<T>>, ApiError> {
        let Some(request) = request else {
            return Ok(None);
        };
        match self
            .store
            .request(caller.tenant(), kind, &request.key)
            .await
            .map_err(store_error)?
        {
            None => Ok(None),
            Some((stored, id)) if stored == request.fingerprint_hex() => Ok(Some(
                self.load(caller.tenant(), kind, id, "the request's record").await?,
            )),
            Some(_) => Err(crm_platform::idempotency::reused()),
        }
    }

    /// Writes a create, keyed by its request id if it has one; a concurrent request with the
    /// same id that won the race is replayed.
    async fn create<T: Serialize + DeserializeOwned>(
        &self,
        caller: &Caller,
        kind: Kind,
        request: Option<&crm_platform::idempotency::RequestKey>,
        record: Rec<T>,
        mut write: Write,
    ) -> Result<Rec<T>, ApiError> {
        write.request = request.map(|request| RequestKey {
            kind,
            request_id: request.key.clone(),
            fingerprint: request.fingerprint_hex(),
            resource: record.id,
        });
        match self.store.write(caller.tenant(), &write).await {
            Ok(()) => Ok(record),
            Err(StoreError::RequestIdUsed) => self
                .replay(caller, kind, request)
                .await?
                .ok_or_else(|| StoreError::RequestIdUsed.into_api()),
            Err(err) => Err(store_error(err)),
        }
    }

    async fn write(&self, caller: &Caller, write: &Write) -> Result<(), ApiError> {
        self.store.write(caller.tenant(), write).await.map_err(store_error)
    }

    /// Loads a record the caller may change (a writer who owns it, or a manager or admin), at
    /// the etag they read.
    async fn writable<T: Owned>(&self, caller: &Caller, id: Uuid, etag: Option<i64>) -> Result<Rec<T>, ApiError> {
        caller.who.ensure_writer()?;
        let record: Rec<T> = self
            .load(caller.tenant(), T::KIND, id, &format!("{}/{id}", T::COLLECTION))
            .await?;
        let owner = crm_platform::UserId::parse(record.body.owner()).map_err(|r| ApiError::internal(&r))?;
        caller.who.ensure_can_write_owned_by(&owner)?;
        check_etag(etag, record.revision)?;
        Ok(record)
    }

    /// Applies a patched contact reference (checked against the contact service) to `slot`.
    async fn patch_contact(
        &self,
        caller: &Caller,
        field: &str,
        patch: Option<Option<crate::domain::ContactRef>>,
        slot: &mut Option<Uuid>,
        changed: &mut Vec<&'static str>,
    ) -> Result<(), ApiError> {
        if let Some(contact) = patch {
            let contact = self.check_contact(caller, contact, field).await?;
            if contact != *slot {
                *slot = contact;
                changed.push("contact");
            }
        }
        Ok(())
    }

    /// Applies a patched company reference (checked against the contact service) to `slot`.
    async fn patch_company(
        &self,
        caller: &Caller,
        field: &str,
        patch: Option<Option<crate::domain::CompanyRef>>,
        slot: &mut Option<Uuid>,
        changed: &mut Vec<&'static str>,
    ) -> Result<(), ApiError> {
        if let Some(company) = patch {
            let company = self.check_company(caller, company, field).await?;
            if company != *slot {
                *slot = company;
                changed.push("company");
            }
        }
        Ok(())
    }
}

/// A page of records and the token of the next.
pub type Page<T> = crm_platform::paging::Page<Rec<T>>;

impl PipelineApp {
    /// A page of the records of `kind` that pass `filters`, in keyset order: the page token
    /// carries the cursor and is bound to the kind and the filters.
    async fn list_page<T: Serialize + DeserializeOwned>(
        &self,
        caller: &Caller,
        kind: Kind,
        filters: Vec<crate::store::Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<T>, ApiError> {
        // Overdue is relative to now: the token binds to the filter as written, not to the
        // time it was resolved at.
        let shape: Vec<String> = std::iter::once(format!("{kind:?}"))
            .chain(filters.iter().map(|filter| match filter {
                crate::store::Filter::DueBefore(_) => "DueBefore(now)".to_owned(),
                other => format!("{other:?}"),
            }))
            .collect();
        let shape: Vec<&str> = shape.iter().map(String::as_str).collect();
        let page = PageRequest::<(i64, Uuid)>::parse(page_size, page_token, &shape)?;
        let query = ListQuery {
            kind,
            filters,
            after: page.after,
            limit: page.fetch(),
        };
        let listed = page.page(self.list_records(caller.tenant(), &query).await?, |(order, rec)| {
            (*order, rec.id)
        });
        Ok(crm_platform::paging::Page {
            items: listed.items.into_iter().map(|(_, rec)| rec).collect(),
            next_page_token: listed.next_page_token,
        })
    }
}

/// A user named in a request: `me` is the caller.
pub fn user_or_me(caller: &Caller, raw: &str) -> String {
    if raw == "me" {
        caller.user().to_owned()
    } else {
        raw.to_owned()
    }
}
