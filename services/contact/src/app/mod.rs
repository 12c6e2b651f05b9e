//! The contact service's rules, independent of transport: who may do what, field masks,
//! optimistic concurrency and paging. The shared parts are here, each resource's in its file.

mod companies;
mod contacts;
mod duplicates;
mod erasure;
pub mod events;
mod export;
mod history;
mod interactions;
mod merge;
mod ownership;

use std::sync::Arc;

use futures::future::BoxFuture;

use crm_platform::ApiError;
use crm_platform::error::Violations;

pub use duplicates::{Candidate, CompanyCandidate, CompanyGroup, DuplicateGroup};
pub(crate) use events::audit;
pub(crate) use merge::MAX_MERGE;
pub(crate) use ownership::MAX_REASSIGN_TARGETS;
pub use ownership::Reassignment;

use crate::domain::*;
use crate::store::{ContactStore, StoreError};

/// Attempts of a read-modify-write update without an etag before giving up as ABORTED.
const UPDATE_ATTEMPTS: usize = 3;

pub use crm_platform::paging::Page;

/// The list parameters every List takes.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub page_size: i32,
    pub page_token: String,
    pub filter: String,
    pub order_by: String,
}

const CONTACT_ORDERS: &[SortField] = &[
    SortField::CreateTime,
    SortField::UpdateTime,
    SortField::FamilyName,
    SortField::GivenName,
];

pub(crate) fn check_fields(problems: Vec<(String, String)>, prefix: &str) -> Result<(), ApiError> {
    let mut violations = Violations::new(prefix);
    for (field, reason) in problems {
        violations.add(field, reason);
    }
    violations.finish()
}

/// A record written with optimistic concurrency.
trait Versioned {
    fn revision(&self) -> Revision;
}

impl Versioned for Contact {
    fn revision(&self) -> Revision {
        self.revision
    }
}

impl Versioned for Company {
    fn revision(&self) -> Revision {
        self.revision
    }
}

/// Reads a record, derives its new state and writes it if nobody wrote in between. A client
/// that pinned an etag gets FAILED_PRECONDITION on any interleaving; without one, the update
/// is retried on the fresh state a few times before giving up as ABORTED.
async fn read_modify_write<'a, T: Versioned, A>(
    etag: Option<Revision>,
    what: &str,
    read: impl Fn() -> BoxFuture<'a, Result<T, ApiError>>,
    modify: impl Fn(T) -> Result<(T, A), ApiError>,
    write: impl Fn((T, A), Revision) -> BoxFuture<'a, Result<T, StoreError>>,
) -> Result<T, ApiError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let current = read().await?;
        let expected = current.revision();
        // Rights and validity first, so that a caller without rights learns nothing more.
        let updated = modify(current)?;
        if etag.is_some_and(|etag| etag != expected) {
            return Err(ApiError::etag_mismatch());
        }
        match write(updated, expected).await {
            Ok(written) => return Ok(written),
            Err(StoreError::RevisionMismatch) if etag.is_none() => continue,
            Err(err) => return Err(err.into_api(what)),
        }
    }
    Err(ApiError::new(
        crm_platform::ErrorCode::Aborted,
        "CONCURRENT_UPDATE",
        format!("the {what} kept changing; retry"),
    ))
}

/// An update that changes nothing: the resource as it is, if `etag` (when given) is its own.
fn unchanged<T: Versioned>(current: T, etag: Option<Revision>) -> Result<T, ApiError> {
    if etag.is_some_and(|etag| etag != current.revision()) {
        return Err(ApiError::etag_mismatch());
    }
    Ok(current)
}

/// An erased contact is a tombstone: nothing may be written to it again.
pub(crate) fn refuse_erased(contact: &Contact) -> Result<(), ApiError> {
    match contact.erase_time {
        Some(_) => Err(ApiError::new(
            crm_platform::ErrorCode::FailedPrecondition,
            "CONTACT_ERASED",
            "the contact's personal data was erased; it cannot be changed",
        )),
        None => Ok(()),
    }
}

/// Score below which likely duplicates are not reported unless the caller asks.
const DEFAULT_MIN_SCORE: f64 = 0.5;

/// Links followed from a merged contact to its survivor (merges flatten chains, so one).
const MAX_MERGE_HOPS: usize = 4;

/// The contact service.
#[derive(Clone)]
pub struct ContactApp {
    pub(crate) store: Arc<dyn ContactStore>,
    /// Where the time comes from.
    clock: Arc<dyn crm_platform::time::Clock>,
}

impl ContactApp {
    pub fn new(store: Arc<dyn ContactStore>) -> Self {
        Self {
            store,
            clock: Arc::new(crm_platform::time::SystemClock),
        }
    }

    /// The same application reading the time from `clock` (tests move a manual one on).
    pub fn with_clock(self, clock: Arc<dyn crm_platform::time::Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Now, by the application's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}
