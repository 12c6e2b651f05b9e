//! The contact service's rules, independent of transport: who may do what, field masks,
//! optimistic concurrency and paging.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;

use crm_platform::error::Violations;
use crm_platform::paging::{decode_token, encode_token, page_size, query_fingerprint};
use crm_platform::{ApiError, Principal, UserId};

use crate::domain::merge;
use crate::domain::*;
use crate::store::{
    Batch, CompanyMerge, ContactStore, Created, MAX_CANDIDATES, Merge, Owned, RequestKey, StoreError, TimelineOf,
    company_cursor, contact_cursor, interaction_cursor,
};

/// Attempts of a read-modify-write update without an etag before giving up as ABORTED.
const UPDATE_ATTEMPTS: usize = 3;

/// One page of a list and the token of the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

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
const COMPANY_ORDERS: &[SortField] = &[SortField::CreateTime, SortField::UpdateTime, SortField::DisplayName];

pub(crate) fn check_fields(problems: Vec<(String, String)>, prefix: &str) -> Result<(), ApiError> {
    let mut violations = Violations::new(prefix);
    for (field, reason) in problems {
        violations.add(field, reason);
    }
    violations.finish()
}

fn page_of<T>(mut items: Vec<T>, limit: usize, next: impl FnOnce(&T) -> String) -> Page<T> {
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items.last().map(next).unwrap_or_default()
    } else {
        String::new()
    };
    Page { items, next_page_token }
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

/// The audit record of a write by `who`.
pub(crate) fn audit(who: &Principal, action: ChangeAction, changes: Vec<FieldChange>) -> AuditRecord {
    AuditRecord {
        action,
        actor: who.user.clone(),
        changes,
    }
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

/// Most users one reassignment may spread a portfolio over.
pub(crate) const MAX_REASSIGN_TARGETS: usize = 100;
/// Records moved per transaction by a reassignment.
const REASSIGN_BATCH: usize = 500;

/// What a portfolio reassignment moved (or would move, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub dry_run: bool,
    /// Per receiving user: contacts and companies.
    pub shares: Vec<(UserId, u64, u64)>,
}

impl Reassignment {
    pub fn contacts(&self) -> u64 {
        self.shares.iter().map(|s| s.1).sum()
    }

    pub fn companies(&self) -> u64 {
        self.shares.iter().map(|s| s.2).sum()
    }
}

/// How `count` records split round-robin over `targets` users, the first ones taking the
/// remainder, as a real run starting at offset 0 would.
fn round_robin_shares(count: u64, targets: usize) -> Vec<u64> {
    let n = u64::try_from(targets).unwrap_or(1).max(1);
    (0..n).map(|i| count / n + u64::from(i < count % n)).collect()
}

/// Score below which likely duplicates are not reported unless the caller asks.
const DEFAULT_MIN_SCORE: f64 = 0.5;
/// Most contacts merged into a survivor at once.
pub(crate) const MAX_MERGE: usize = 20;
/// The deepest a search pages (search finds someone; listing with filters is exhaustive).
const MAX_SEARCH_OFFSET: usize = 100_000;
/// Links followed from a merged contact to its survivor (merges flatten chains, so one).
const MAX_MERGE_HOPS: usize = 4;

/// A contact that is likely the same person as another.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub contact: ContactId,
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// Contacts that are likely one person.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateGroup {
    /// Most recently updated first.
    pub contacts: Vec<ContactId>,
    /// The weakest link of the group.
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// A group of likely duplicates, as a duplicate search pages through them.
trait Grouped {
    type Id: PartialEq;
    fn members(&self) -> &[Self::Id];
    fn score_and_reasons(&mut self) -> (&mut f64, &mut Vec<MatchReason>);

    /// Takes in what `other` (the same members, found through another key) says.
    fn absorb(&mut self, mut other: Self)
    where
        Self: Sized,
    {
        let (score, reasons) = other.score_and_reasons();
        let (score, reasons) = (*score, std::mem::take(reasons));
        let (own_score, own_reasons) = self.score_and_reasons();
        *own_score = own_score.max(score);
        for reason in reasons {
            if !own_reasons.contains(&reason) {
                own_reasons.push(reason);
            }
        }
    }

    fn same_members(&self, other: &Self) -> bool {
        let (a, b) = (self.members(), other.members());
        a.len() == b.len() && a.iter().all(|id| b.contains(id))
    }
}

impl Grouped for DuplicateGroup {
    type Id = ContactId;
    fn members(&self) -> &[ContactId] {
        &self.contacts
    }
    fn score_and_reasons(&mut self) -> (&mut f64, &mut Vec<MatchReason>) {
        (&mut self.score, &mut self.reasons)
    }
}

impl Grouped for CompanyGroup {
    type Id = CompanyId;
    fn members(&self) -> &[CompanyId] {
        &self.companies
    }
    fn score_and_reasons(&mut self) -> (&mut f64, &mut Vec<MatchReason>) {
        (&mut self.score, &mut self.reasons)
    }
}

/// Shared match keys one page of a duplicate search reads at once.
const SHARED_KEYS_PER_READ: usize = 250;
/// Shared match keys one page of a duplicate search examines at most. Common family names
/// make many shared keys with no duplicates among their holders: without a bound, a page of
/// a tenant with few duplicates read the whole tenant (a 100k-contact tenant outlasted the
/// gateway's 30 s). A page may therefore hold fewer groups than asked for, even none, with a
/// token to go on from; an empty token is the end.
const SHARED_KEYS_PER_PAGE: usize = 2000;

/// One page of a duplicate search: walks the shared match keys in key order after `after`,
/// `read` giving the next [`SHARED_KEYS_PER_READ`] of them (fewer at the end) each with the
/// groups among its holders, until `limit` groups or [`SHARED_KEYS_PER_PAGE`] keys. Groups
/// found through several keys are one.
async fn groups_along_shared_keys<'a, K: serde::Serialize + Clone, G: Grouped>(
    mut after: Option<K>,
    fingerprint: &str,
    limit: usize,
    mut read: impl FnMut(Option<K>) -> BoxFuture<'a, Result<Vec<(K, Vec<G>)>, ApiError>>,
) -> Result<Page<G>, ApiError> {
    let mut groups: Vec<G> = Vec::new();
    let mut examined = 0;
    loop {
        let shared = read(after.clone()).await?;
        let exhausted = shared.len() < SHARED_KEYS_PER_READ;
        let count = shared.len();
        for (i, (key, found)) in shared.into_iter().enumerate() {
            for group in found {
                match groups.iter_mut().find(|g| g.same_members(&group)) {
                    Some(existing) => existing.absorb(group),
                    None => groups.push(group),
                }
            }
            examined += 1;
            let more = i + 1 < count || !exhausted;
            if more && (groups.len() >= limit || examined >= SHARED_KEYS_PER_PAGE) {
                return Ok(Page {
                    items: groups,
                    next_page_token: encode_token(&key, fingerprint),
                });
            }
            after = Some(key);
        }
        if exhausted {
            return Ok(Page {
                items: groups,
                next_page_token: String::new(),
            });
        }
    }
}

/// Links members alike enough (`alike` scoring `min_score` or more) and returns the groups of
/// two or more linked members: their ids, the weakest link's score, and the links' reasons.
fn group_alike<T, Id: Copy>(
    members: &[T],
    id: impl Fn(&T) -> Id,
    alike: impl Fn(&T, &T) -> Option<(f64, Vec<MatchReason>)>,
    min_score: f64,
) -> Vec<(Vec<Id>, f64, Vec<MatchReason>)> {
    let mut group_of: Vec<usize> = (0..members.len()).collect();
    let mut links: Vec<(usize, f64, Vec<MatchReason>)> = Vec::new();
    for i in 0..members.len() {
        for j in i + 1..members.len() {
            if let Some((score, reasons)) = alike(&members[i], &members[j])
                && score >= min_score
            {
                let (from, to) = (group_of[j], group_of[i]);
                group_of.iter_mut().filter(|g| **g == from).for_each(|g| *g = to);
                links.push((i, score, reasons));
            }
        }
    }
    let mut roots = group_of.clone();
    roots.sort_unstable();
    roots.dedup();
    roots
        .into_iter()
        .filter_map(|root| {
            let ids: Vec<Id> = (0..members.len())
                .filter(|i| group_of[*i] == root)
                .map(|i| id(&members[i]))
                .collect();
            if ids.len() < 2 {
                return None;
            }
            let inner: Vec<&(usize, f64, Vec<MatchReason>)> = links.iter().filter(|l| group_of[l.0] == root).collect();
            let mut reasons: Vec<MatchReason> = Vec::new();
            for reason in inner.iter().flat_map(|l| l.2.iter()) {
                if !reasons.contains(reason) {
                    reasons.push(*reason);
                }
            }
            Some((ids, inner.iter().map(|l| l.1).fold(1.0, f64::min), reasons))
        })
        .collect()
}

/// Splits contacts sharing a key into groups of likely one person.
fn group_members(members: &[Contact], min_score: f64) -> Vec<DuplicateGroup> {
    group_alike(members, |c| c.id, |a, b| a.fields.likeness(&b.fields), min_score)
        .into_iter()
        .map(|(contacts, score, reasons)| DuplicateGroup {
            contacts,
            score,
            reasons,
        })
        .collect()
}

/// Splits companies sharing a key into groups of likely one organisation.
fn group_companies(members: &[Company], min_score: f64) -> Vec<CompanyGroup> {
    group_alike(members, |c| c.id, |a, b| a.fields.likeness(&b.fields), min_score)
        .into_iter()
        .map(|(companies, score, reasons)| CompanyGroup {
            companies,
            score,
            reasons,
        })
        .collect()
}

/// Contacts per export batch (one gRPC message, one database round trip).
const EXPORT_BATCH: usize = 500;

/// A company that is likely the same organisation as another.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyCandidate {
    pub company: CompanyId,
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// Companies that are likely one organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompanyGroup {
    pub companies: Vec<CompanyId>,
    pub score: f64,
    pub reasons: Vec<MatchReason>,
}

/// Checks what every merge request must hold: something to merge, not too much, not the
/// survivor itself, no record twice, and choices naming only records of the merge.
fn validate_merge<Id: Copy + PartialEq, Field: std::fmt::Debug>(
    what: &str,
    survivor: Id,
    merged: &[Id],
    choices: &BTreeMap<Field, Id>,
) -> Result<(), ApiError> {
    let mut violations = Violations::new("");
    if merged.is_empty() {
        violations.add("merged", format!("name at least one {what} to merge"));
    }
    if merged.len() > MAX_MERGE {
        violations.add("merged", format!("at most {MAX_MERGE} at once"));
    }
    if merged.contains(&survivor) {
        violations.add("merged", format!("a {what} cannot be merged into itself"));
    }
    if merged.iter().enumerate().any(|(i, id)| merged[..i].contains(id)) {
        violations.add("merged", format!("lists a {what} twice"));
    }
    for (field, source) in choices {
        if *source != survivor && !merged.contains(source) {
            violations.add(
                format!("field_sources[{field:?}]"),
                "must name the survivor or one of the merged records",
            );
        }
    }
    violations.finish()
}

/// The contact service.
#[derive(Clone)]
pub struct ContactApp {
    pub(crate) store: Arc<dyn ContactStore>,
}

impl ContactApp {
    pub fn new(store: Arc<dyn ContactStore>) -> Self {
        Self { store }
    }

    /// Creates a contact. Unless `allow_duplicate`, an email address another live contact has
    /// is refused (ALREADY_EXISTS, DUPLICATE_EMAIL); likely duplicates are returned with it.
    pub async fn create_contact(
        &self,
        who: &Principal,
        mut fields: ContactFields,
        key: Option<RequestKey>,
        allow_duplicate: bool,
    ) -> Result<(Created<Contact>, Vec<Candidate>), ApiError> {
        who.ensure_can_write_owned_by(&fields.owner)?;
        fields.normalise();
        check_fields(fields.check(), "contact.")?;
        let now = now();
        let contact = Contact {
            id: ContactId::generate(),
            fields,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            erase_time: None,
            merged_into: None,
        };
        let audit = audit(who, ChangeAction::Created, changes(None, Some(&contact.fields)));
        let created = self
            .store
            .create_contact(&who.tenant, &contact, key.as_ref(), &audit, !allow_duplicate)
            .await
            .map_err(|err| err.into_api("contact"))?;
        let candidates = likely_duplicates(&created.value, &created.similar, DEFAULT_MIN_SCORE);
        Ok((created, candidates))
    }

    /// Returns a contact; the name of a merged contact resolves to its survivor.
    pub async fn get_contact(&self, who: &Principal, id: ContactId) -> Result<Contact, ApiError> {
        let mut contact = self
            .store
            .get_contact(&who.tenant, id)
            .await
            .map_err(|err| err.into_api("contact"))?;
        for _ in 0..MAX_MERGE_HOPS {
            match contact.merged_into {
                Some(survivor) => {
                    contact = self
                        .store
                        .get_contact(&who.tenant, survivor)
                        .await
                        .map_err(|err| err.into_api("contact"))?;
                }
                None => return Ok(contact),
            }
        }
        Err(ApiError::internal(&format!(
            "merge chain of {id} longer than {MAX_MERGE_HOPS}"
        )))
    }

    pub async fn update_contact(
        &self,
        who: &Principal,
        id: ContactId,
        patch: &ContactFields,
        mask: &[ContactField],
        etag: Option<Revision>,
    ) -> Result<Contact, ApiError> {
        read_modify_write(
            etag,
            "contact",
            || Box::pin(self.get_contact(who, id)),
            |current: Contact| {
                who.ensure_can_write_owned_by(&current.fields.owner)?;
                refuse_erased(&current)?;
                if mask.contains(&ContactField::Owner) {
                    who.ensure_can_write_owned_by(&patch.owner)?;
                }
                let mut fields = current.fields.clone();
                fields.apply(patch, mask);
                check_fields(fields.check(), "contact.")?;
                let diff = changes(Some(&current.fields), Some(&fields));
                let updated = Contact {
                    fields,
                    update_time: now(),
                    revision: current.revision.next(),
                    ..current
                };
                Ok((updated, audit(who, ChangeAction::Updated, diff)))
            },
            |(updated, audit): (Contact, AuditRecord), expected| {
                Box::pin(async move {
                    self.store
                        .update_contact(&who.tenant, &updated, expected, &audit)
                        .await
                        .map(|()| updated)
                })
            },
        )
        .await
    }

    pub async fn delete_contact(&self, who: &Principal, id: ContactId, etag: Option<Revision>) -> Result<(), ApiError> {
        let current = self.get_contact(who, id).await?;
        who.ensure_can_write_owned_by(&current.fields.owner)?;
        let audit = audit(who, ChangeAction::Deleted, changes(Some(&current.fields), None));
        self.store
            .delete_contact(&who.tenant, id, etag, &audit)
            .await
            .map_err(|err| err.into_api("contact"))
    }

    pub async fn list_contacts(&self, who: &Principal, params: &ListParams) -> Result<Page<Contact>, ApiError> {
        let limit = page_size(params.page_size)?;
        let filter = ContactFilter::parse(&params.filter)?;
        let order = Order::parse(&params.order_by, CONTACT_ORDERS)?;
        let fingerprint = query_fingerprint(&["contacts", &params.filter, &params.order_by]);
        let after = decode_token::<Cursor>(&params.page_token, &fingerprint)?;
        let query = ListQuery {
            filter,
            order,
            after,
            limit,
        };
        let rows = self
            .store
            .list_contacts(&who.tenant, &query)
            .await
            .map_err(|err| err.into_api("contacts"))?;
        Ok(page_of(rows, limit, |last| {
            encode_token(&contact_cursor(last, order.field), &fingerprint)
        }))
    }

    pub async fn search_contacts(
        &self,
        who: &Principal,
        query: &str,
        size: i32,
        token: &str,
    ) -> Result<Page<Contact>, ApiError> {
        let limit = page_size(size)?;
        let terms = SearchTerms::parse(query)?;
        let fingerprint = query_fingerprint(&["search", query]);
        let offset = decode_token::<usize>(token, &fingerprint)?.unwrap_or(0);
        // Page tokens come back from the client: an offset no page of ours reaches is refused,
        // so that no store adds up a forged one.
        if offset > MAX_SEARCH_OFFSET {
            return Err(ApiError::invalid_field(
                "page_token",
                "is not a page token of this search",
            ));
        }
        let rows = self
            .store
            .search_contacts(&who.tenant, &terms, offset, limit)
            .await
            .map_err(|err| err.into_api("contacts"))?;
        Ok(page_of(rows, limit, |_| encode_token(&(offset + limit), &fingerprint)))
    }

    /// Creates a company. Unless `allow_duplicate`, a domain another live company has is
    /// refused (ALREADY_EXISTS, DUPLICATE_DOMAIN); likely duplicates are returned with it.
    pub async fn create_company(
        &self,
        who: &Principal,
        mut fields: CompanyFields,
        key: Option<RequestKey>,
        allow_duplicate: bool,
    ) -> Result<(Created<Company>, Vec<CompanyCandidate>), ApiError> {
        who.ensure_can_write_owned_by(&fields.owner)?;
        fields.normalise();
        check_fields(fields.check(), "company.")?;
        let now = now();
        let company = Company {
            id: CompanyId::generate(),
            fields,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            merged_into: None,
        };
        let audit = audit(who, ChangeAction::Created, changes(None, Some(&company.fields)));
        let created = self
            .store
            .create_company(&who.tenant, &company, key.as_ref(), &audit, !allow_duplicate)
            .await
            .map_err(|err| err.into_api("company"))?;
        let candidates = self
            .company_candidates_for(who, &created.value, DEFAULT_MIN_SCORE)
            .await?;
        Ok((created, candidates))
    }

    /// Returns a company; the name of a merged company resolves to its survivor.
    pub async fn get_company(&self, who: &Principal, id: CompanyId) -> Result<Company, ApiError> {
        self.resolved_company(who, id).await
    }

    pub async fn update_company(
        &self,
        who: &Principal,
        id: CompanyId,
        patch: &CompanyFields,
        mask: &[CompanyField],
        etag: Option<Revision>,
    ) -> Result<Company, ApiError> {
        read_modify_write(
            etag,
            "company",
            || Box::pin(self.get_company(who, id)),
            |current: Company| {
                who.ensure_can_write_owned_by(&current.fields.owner)?;
                if mask.contains(&CompanyField::Owner) {
                    who.ensure_can_write_owned_by(&patch.owner)?;
                }
                let mut fields = current.fields.clone();
                fields.apply(patch, mask);
                check_fields(fields.check(), "company.")?;
                let diff = changes(Some(&current.fields), Some(&fields));
                let updated = Company {
                    fields,
                    update_time: now(),
                    revision: current.revision.next(),
                    ..current
                };
                Ok((updated, audit(who, ChangeAction::Updated, diff)))
            },
            |(updated, audit): (Company, AuditRecord), expected| {
                Box::pin(async move {
                    self.store
                        .update_company(&who.tenant, &updated, expected, &audit)
                        .await
                        .map(|()| updated)
                })
            },
        )
        .await
    }

    pub async fn delete_company(&self, who: &Principal, id: CompanyId, etag: Option<Revision>) -> Result<(), ApiError> {
        let current = self.get_company(who, id).await?;
        who.ensure_can_write_owned_by(&current.fields.owner)?;
        let audit = audit(who, ChangeAction::Deleted, changes(Some(&current.fields), None));
        self.store
            .delete_company(&who.tenant, id, etag, &audit)
            .await
            .map_err(|err| err.into_api("company"))
    }

    pub async fn list_companies(&self, who: &Principal, params: &ListParams) -> Result<Page<Company>, ApiError> {
        let limit = page_size(params.page_size)?;
        let filter = CompanyFilter::parse(&params.filter)?;
        let order = Order::parse(&params.order_by, COMPANY_ORDERS)?;
        let fingerprint = query_fingerprint(&["companies", &params.filter, &params.order_by]);
        let after = decode_token::<Cursor>(&params.page_token, &fingerprint)?;
        let query = ListQuery {
            filter,
            order,
            after,
            limit,
        };
        let rows = self
            .store
            .list_companies(&who.tenant, &query)
            .await
            .map_err(|err| err.into_api("companies"))?;
        Ok(page_of(rows, limit, |last| {
            encode_token(&company_cursor(last, order.field), &fingerprint)
        }))
    }

    /// Logs an interaction. Anyone who writes may log on any contact of the tenant, but only
    /// admins and managers may log on someone else's behalf.
    pub async fn create_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        fields: InteractionFields,
        key: Option<RequestKey>,
    ) -> Result<Created<Interaction>, ApiError> {
        who.ensure_writer()?;
        who.ensure_can_write_owned_by(&fields.actor)?;
        let interaction = Interaction {
            id: InteractionId::generate(),
            contact,
            company: None,
            fields,
            create_time: now(),
        };
        self.store
            .create_interaction(&who.tenant, &interaction, key.as_ref())
            .await
            .map_err(|err| err.into_api("contact"))
    }

    pub async fn get_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<Interaction, ApiError> {
        self.store
            .get_interaction(&who.tenant, contact, id)
            .await
            .map_err(|err| err.into_api("interaction"))
    }

    pub async fn list_interactions(
        &self,
        who: &Principal,
        of: TimelineOf,
        size: i32,
        token: &str,
    ) -> Result<Page<Interaction>, ApiError> {
        let limit = page_size(size)?;
        let parent = match of {
            TimelineOf::Contact(id) => id.name(),
            TimelineOf::Company(id) => id.name(),
        };
        // An unknown parent is a 404, not an empty timeline.
        match of {
            TimelineOf::Contact(id) => self.get_contact(who, id).await.map(drop)?,
            TimelineOf::Company(id) => self.get_company(who, id).await.map(drop)?,
        }
        let fingerprint = query_fingerprint(&["interactions", &parent]);
        let after = decode_token::<Cursor>(token, &fingerprint)?;
        let rows = self
            .store
            .list_interactions(&who.tenant, of, after.as_ref(), limit)
            .await
            .map_err(|err| err.into_api("interactions"))?;
        Ok(page_of(rows, limit, |last| {
            encode_token(&interaction_cursor(last), &fingerprint)
        }))
    }

    pub async fn delete_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<(), ApiError> {
        let current = self.get_interaction(who, contact, id).await?;
        who.ensure_can_write_owned_by(&current.fields.actor)?;
        self.store
            .delete_interaction(&who.tenant, contact, id)
            .await
            .map_err(|err| err.into_api("interaction"))
    }

    /// The audit trail of a contact or company, newest first. Every role that may read the
    /// record may read its history; the trail outlives a deleted record.
    pub async fn list_history(
        &self,
        who: &Principal,
        of: Audited,
        size: i32,
        token: &str,
    ) -> Result<Page<HistoryEntry>, ApiError> {
        let limit = page_size(size)?;
        let fingerprint = query_fingerprint(&["history", &of.name()]);
        let before = decode_token::<uuid::Uuid>(token, &fingerprint)?;
        let rows = self
            .store
            .list_history(&who.tenant, of, before, limit)
            .await
            .map_err(|err| err.into_api("history"))?;
        if rows.is_empty() && before.is_none() {
            return Err(ApiError::not_found(of.kind()));
        }
        Ok(page_of(rows, limit, |last| encode_token(&last.id, &fingerprint)))
    }

    /// Moves every contact and company `from` owns to `to` (round-robin over several), in
    /// batches committed with their audit entries. An interrupted run leaves every record
    /// owned by exactly one user; running it again moves the rest.
    pub async fn reassign_owner(
        &self,
        who: &Principal,
        from: &UserId,
        to: &[UserId],
        dry_run: bool,
    ) -> Result<Reassignment, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "only admins and managers reassign portfolios",
            ));
        }
        let mut violations = Violations::new("");
        if to.is_empty() {
            violations.add("to_users", "name at least one user");
        }
        if to.len() > MAX_REASSIGN_TARGETS {
            violations.add("to_users", format!("at most {MAX_REASSIGN_TARGETS} users"));
        }
        if to.contains(from) {
            violations.add("to_users", "must not contain from_user");
        }
        if to.iter().enumerate().any(|(i, u)| to[..i].contains(u)) {
            violations.add("to_users", "lists a user twice");
        }
        violations.finish()?;
        let mut shares: Vec<(UserId, u64, u64)> = to.iter().map(|u| (u.clone(), 0, 0)).collect();
        for what in [Owned::Contacts, Owned::Companies] {
            let moved = if dry_run {
                let count = self
                    .store
                    .count_owned(&who.tenant, what, from)
                    .await
                    .map_err(|err| err.into_api("records"))?;
                round_robin_shares(count, to.len())
            } else {
                self.move_all(who, what, from, to).await?
            };
            for (share, n) in shares.iter_mut().zip(moved) {
                match what {
                    Owned::Contacts => share.1 += n,
                    Owned::Companies => share.2 += n,
                }
            }
        }
        tracing::info!(tenant = %who.tenant, actor = %who.user, from = %from, targets = to.len(), dry_run, "portfolio reassigned");
        Ok(Reassignment { dry_run, shares })
    }

    async fn move_all(&self, who: &Principal, what: Owned, from: &UserId, to: &[UserId]) -> Result<Vec<u64>, ApiError> {
        let mut totals = vec![0_u64; to.len()];
        let mut offset = 0;
        loop {
            let batch = self
                .store
                .reassign_batch(
                    &who.tenant,
                    &Batch {
                        what,
                        from,
                        to,
                        offset,
                        limit: REASSIGN_BATCH,
                        actor: &who.user,
                    },
                )
                .await
                .map_err(|err| err.into_api("records"))?;
            let moved: u64 = batch.iter().sum();
            if moved == 0 {
                return Ok(totals);
            }
            for (total, n) in totals.iter_mut().zip(batch) {
                *total += n;
            }
            offset += usize::try_from(moved).unwrap_or(usize::MAX);
        }
    }

    /// Erases a contact's personal data everywhere in this service and leaves a tombstone.
    /// Erasing twice is harmless: the second call returns the tombstone.
    pub async fn erase_contact(&self, who: &Principal, id: ContactId) -> Result<Contact, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied(
                "only admins and managers erase personal data",
            ));
        }
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.get_contact(who, id).await?;
            if current.erase_time.is_some() {
                return Ok(current);
            }
            let tombstone = current.erased(now());
            // The erase entry names the fields that were cleared, never their values.
            let cleared = changes(Some(&current.fields), Some(&tombstone.fields))
                .into_iter()
                .map(|c| FieldChange {
                    old: serde_json::Value::Null,
                    new: serde_json::Value::Null,
                    ..c
                })
                .collect();
            let audit = audit(who, ChangeAction::Erased, cleared);
            match self
                .store
                .erase_contact(&who.tenant, &tombstone, current.revision, &audit)
                .await
            {
                Ok(()) => {
                    tracing::info!(tenant = %who.tenant, actor = %who.user, contact = %id, "contact erased");
                    return Ok(tombstone);
                }
                Err(StoreError::RevisionMismatch) => continue,
                Err(err) => return Err(err.into_api("contact")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contact kept changing; retry",
        ))
    }

    /// Live contacts likely to be the same person as `contact`, best first.
    async fn candidates_for(
        &self,
        who: &Principal,
        contact: &Contact,
        min_score: f64,
    ) -> Result<Vec<Candidate>, ApiError> {
        let found = self
            .store
            .find_by_keys(&who.tenant, &contact.fields.match_keys(), MAX_CANDIDATES)
            .await
            .map_err(|err| err.into_api("contacts"))?;
        Ok(likely_duplicates(contact, &found, min_score))
    }

    /// Groups of likely duplicates across the tenant (or the candidates of one contact), in
    /// match-key order, `min_score` and above.
    pub async fn find_duplicates(
        &self,
        who: &Principal,
        contact: Option<ContactId>,
        size: i32,
        token: &str,
        min_score: f64,
    ) -> Result<Page<DuplicateGroup>, ApiError> {
        let limit = page_size(size)?;
        if !(0.0..=1.0).contains(&min_score) {
            return Err(ApiError::invalid_field("min_score", "must be between 0 and 1"));
        }
        let min_score = if min_score == 0.0 { DEFAULT_MIN_SCORE } else { min_score };
        if let Some(id) = contact {
            let contact = self.get_contact(who, id).await?;
            let groups = self
                .candidates_for(who, &contact, min_score)
                .await?
                .into_iter()
                .take(limit)
                .map(|c| DuplicateGroup {
                    contacts: vec![contact.id, c.contact],
                    score: c.score,
                    reasons: c.reasons,
                })
                .collect();
            return Ok(Page {
                items: groups,
                next_page_token: String::new(),
            });
        }
        let fingerprint = query_fingerprint(&["duplicates", &min_score.to_string()]);
        let after = decode_token::<MatchKey>(token, &fingerprint)?;
        groups_along_shared_keys(after, &fingerprint, limit, |after: Option<MatchKey>| {
            Box::pin(async move {
                let shared = self
                    .store
                    .shared_keys(&who.tenant, after.as_ref(), SHARED_KEYS_PER_READ)
                    .await
                    .map_err(|err| err.into_api("contacts"))?;
                // Each key's newest (by id) holders, all keys' read at once.
                let shared: Vec<(MatchKey, Vec<ContactId>)> = shared
                    .into_iter()
                    .map(|(key, ids)| (key, ids.into_iter().rev().take(MAX_CANDIDATES).collect()))
                    .collect();
                let ids: Vec<ContactId> = shared.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
                let live: HashMap<ContactId, Contact> = self
                    .store
                    .get_live_contacts(&who.tenant, &ids)
                    .await
                    .map_err(|err| err.into_api("contacts"))?
                    .into_iter()
                    .map(|c| (c.id, c))
                    .collect();
                Ok(shared
                    .into_iter()
                    .map(|(key, ids)| {
                        let mut members: Vec<Contact> = ids.iter().filter_map(|id| live.get(id).cloned()).collect();
                        members.sort_by(Contact::most_recent_first);
                        (key, group_members(&members, min_score))
                    })
                    .collect())
            })
        })
        .await
    }

    /// Merges `merged` into `survivor` with per-field survivorship (see
    /// [`crate::domain::merge::merge_fields`]). Refused: merging a contact into itself, an
    /// erased or already merged contact; the caller must be allowed to write every one.
    pub async fn merge_contacts(
        &self,
        who: &Principal,
        survivor: ContactId,
        merged: &[ContactId],
        choices: &BTreeMap<ContactField, ContactId>,
        etag: Option<Revision>,
    ) -> Result<Contact, ApiError> {
        validate_merge("contact", survivor, merged, choices)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .store
                .get_contact(&who.tenant, survivor)
                .await
                .map_err(|err| err.into_api("contact"))?;
            let mut others = Vec::with_capacity(merged.len());
            for id in merged {
                others.push(
                    self.store
                        .get_contact(&who.tenant, *id)
                        .await
                        .map_err(|err| err.into_api("contact"))?,
                );
            }
            for contact in std::iter::once(&current).chain(&others) {
                who.ensure_can_write_owned_by(&contact.fields.owner)?;
                refuse_erased(contact)?;
                if contact.merged_into.is_some() {
                    return Err(ApiError::new(
                        crm_platform::ErrorCode::FailedPrecondition,
                        "ALREADY_MERGED",
                        format!("{} was already merged into another contact", contact.id.name()),
                    ));
                }
            }
            if etag.is_some_and(|etag| etag != current.revision) {
                return Err(ApiError::etag_mismatch());
            }
            let fields = merge::merge_fields(&current, &others, choices);
            check_fields(fields.check(), "contact.")?;
            let diff = changes(Some(&current.fields), Some(&fields));
            let mut survivor_audit = audit(who, ChangeAction::Merged, diff);
            survivor_audit.changes.push(FieldChange {
                field: "merged".into(),
                old: serde_json::Value::Null,
                new: serde_json::Value::Array(merged.iter().map(|id| id.name().into()).collect()),
            });
            let merged_audit = audit(
                who,
                ChangeAction::Merged,
                vec![FieldChange {
                    field: "merged_into".into(),
                    old: serde_json::Value::Null,
                    new: survivor.name().into(),
                }],
            );
            let updated = Contact {
                fields,
                update_time: now(),
                revision: current.revision.next(),
                ..current.clone()
            };
            let revisions: Vec<(ContactId, Revision)> = others.iter().map(|c| (c.id, c.revision)).collect();
            let merge = Merge {
                survivor: &updated,
                expected: current.revision,
                merged: &revisions,
                survivor_audit: &survivor_audit,
                merged_audit: &merged_audit,
            };
            match self.store.merge_contacts(&who.tenant, &merge).await {
                Ok(()) => {
                    tracing::info!(tenant = %who.tenant, actor = %who.user, survivor = %survivor, merged = merged.len(), "contacts merged");
                    return Ok(updated);
                }
                Err(StoreError::RevisionMismatch) if etag.is_none() => continue,
                Err(err) => return Err(err.into_api("contact")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the contacts kept changing; retry",
        ))
    }

    /// Every live contact matching `filter`, batch by batch, by keyset paging: memory stays
    /// constant whatever the tenant's size. Admins and managers only: a bulk export is the
    /// whole customer base.
    pub fn export_contacts(
        &self,
        who: &Principal,
        filter: &str,
        order_by: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Vec<Contact>, ApiError>>, ApiError> {
        if !who.writes_all() {
            return Err(ApiError::permission_denied("only admins and managers export contacts"));
        }
        let filter = ContactFilter::parse(filter)?;
        let order = Order::parse(
            if order_by.is_empty() { "create_time" } else { order_by },
            CONTACT_ORDERS,
        )?;
        let store = Arc::clone(&self.store);
        let tenant = who.tenant.clone();
        let batches = futures::stream::try_unfold(Some(None::<Cursor>), move |state| {
            let store = Arc::clone(&store);
            let tenant = tenant.clone();
            let filter = filter.clone();
            async move {
                let Some(after) = state else { return Ok(None) };
                let query = ListQuery {
                    filter,
                    order,
                    after,
                    limit: EXPORT_BATCH,
                };
                let mut rows = store
                    .list_contacts(&tenant, &query)
                    .await
                    .map_err(|err| err.into_api("contacts"))?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let more = rows.len() > EXPORT_BATCH;
                rows.truncate(EXPORT_BATCH);
                let next = more.then(|| rows.last().map(|last| contact_cursor(last, order.field)));
                Ok(Some((rows, next)))
            }
        });
        Ok(Box::pin(batches))
    }

    /// Returns a company; the name of a merged company resolves to its survivor.
    async fn resolved_company(&self, who: &Principal, id: CompanyId) -> Result<Company, ApiError> {
        let mut company = self
            .store
            .get_company(&who.tenant, id)
            .await
            .map_err(|err| err.into_api("company"))?;
        for _ in 0..MAX_MERGE_HOPS {
            match company.merged_into {
                Some(survivor) => {
                    company = self
                        .store
                        .get_company(&who.tenant, survivor)
                        .await
                        .map_err(|err| err.into_api("company"))?
                }
                None => return Ok(company),
            }
        }
        Err(ApiError::internal(&format!(
            "merge chain of {id} longer than {MAX_MERGE_HOPS}"
        )))
    }

    /// Live companies likely to be the same organisation as `company`, best first.
    async fn company_candidates_for(
        &self,
        who: &Principal,
        company: &Company,
        min_score: f64,
    ) -> Result<Vec<CompanyCandidate>, ApiError> {
        let found = self
            .store
            .company_candidates(
                &who.tenant,
                company.fields.domain.as_deref(),
                &company::name_block(&company.fields.display_name),
                MAX_CANDIDATES,
            )
            .await
            .map_err(|err| err.into_api("companies"))?;
        let mut candidates: Vec<CompanyCandidate> = found
            .iter()
            .filter(|other| other.id != company.id)
            .filter_map(|other| {
                let (score, reasons) = company.fields.likeness(&other.fields)?;
                (score >= min_score).then_some(CompanyCandidate {
                    company: other.id,
                    score,
                    reasons,
                })
            })
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(candidates)
    }

    /// Groups of likely duplicate companies across the tenant (or the candidates of one).
    pub async fn find_company_duplicates(
        &self,
        who: &Principal,
        company: Option<CompanyId>,
        size: i32,
        token: &str,
        min_score: f64,
    ) -> Result<Page<CompanyGroup>, ApiError> {
        let limit = page_size(size)?;
        if !(0.0..=1.0).contains(&min_score) {
            return Err(ApiError::invalid_field("min_score", "must be between 0 and 1"));
        }
        let min_score = if min_score == 0.0 { DEFAULT_MIN_SCORE } else { min_score };
        if let Some(id) = company {
            let company = self.get_company(who, id).await?;
            let groups = self
                .company_candidates_for(who, &company, min_score)
                .await?
                .into_iter()
                .take(limit)
                .map(|c| CompanyGroup {
                    companies: vec![company.id, c.company],
                    score: c.score,
                    reasons: c.reasons,
                })
                .collect();
            return Ok(Page {
                items: groups,
                next_page_token: String::new(),
            });
        }
        let fingerprint = query_fingerprint(&["company-duplicates", &min_score.to_string()]);
        let after = decode_token::<(String, String)>(token, &fingerprint)?;
        groups_along_shared_keys(after, &fingerprint, limit, |after: Option<(String, String)>| {
            Box::pin(async move {
                let shared = self
                    .store
                    .shared_company_keys(&who.tenant, after.as_ref(), SHARED_KEYS_PER_READ)
                    .await
                    .map_err(|err| err.into_api("companies"))?;
                let mut found = Vec::with_capacity(shared.len());
                for (key, ids) in shared {
                    let mut members = Vec::with_capacity(ids.len().min(MAX_CANDIDATES));
                    for id in ids.into_iter().take(MAX_CANDIDATES) {
                        members.push(
                            self.store
                                .get_company(&who.tenant, id)
                                .await
                                .map_err(|err| err.into_api("company"))?,
                        );
                    }
                    found.push((key, group_companies(&members, min_score)));
                }
                Ok(found)
            })
        })
        .await
    }

    /// Merges companies into a survivor: survivorship as for contacts, contacts and
    /// interactions moved, lineage kept. Refused: into itself, already merged, no rights.
    pub async fn merge_companies(
        &self,
        who: &Principal,
        survivor: CompanyId,
        merged: &[CompanyId],
        choices: &BTreeMap<CompanyField, CompanyId>,
        etag: Option<Revision>,
    ) -> Result<Company, ApiError> {
        validate_merge("company", survivor, merged, choices)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .store
                .get_company(&who.tenant, survivor)
                .await
                .map_err(|err| err.into_api("company"))?;
            let mut others = Vec::with_capacity(merged.len());
            for id in merged {
                others.push(
                    self.store
                        .get_company(&who.tenant, *id)
                        .await
                        .map_err(|err| err.into_api("company"))?,
                );
            }
            for company in std::iter::once(&current).chain(&others) {
                who.ensure_can_write_owned_by(&company.fields.owner)?;
                if company.merged_into.is_some() {
                    return Err(ApiError::new(
                        crm_platform::ErrorCode::FailedPrecondition,
                        "ALREADY_MERGED",
                        format!("{} was already merged into another company", company.id.name()),
                    ));
                }
            }
            if etag.is_some_and(|etag| etag != current.revision) {
                return Err(ApiError::etag_mismatch());
            }
            let fields = company::merge_company_fields(&current, &others, choices);
            check_fields(fields.check(), "company.")?;
            let mut survivor_audit = audit(who, ChangeAction::Merged, changes(Some(&current.fields), Some(&fields)));
            survivor_audit.changes.push(FieldChange {
                field: "merged".into(),
                old: serde_json::Value::Null,
                new: serde_json::Value::Array(merged.iter().map(|id| id.name().into()).collect()),
            });
            let merged_audit = audit(
                who,
                ChangeAction::Merged,
                vec![FieldChange {
                    field: "merged_into".into(),
                    old: serde_json::Value::Null,
                    new: survivor.name().into(),
                }],
            );
            let updated = Company {
                fields,
                update_time: now(),
                revision: current.revision.next(),
                ..current.clone()
            };
            let revisions: Vec<(CompanyId, Revision)> = others.iter().map(|c| (c.id, c.revision)).collect();
            let merge = CompanyMerge {
                survivor: &updated,
                expected: current.revision,
                merged: &revisions,
                survivor_audit: &survivor_audit,
                merged_audit: &merged_audit,
            };
            match self.store.merge_companies(&who.tenant, &merge).await {
                Ok(()) => return Ok(updated),
                Err(StoreError::RevisionMismatch) if etag.is_none() => continue,
                Err(err) => return Err(err.into_api("company")),
            }
        }
        Err(ApiError::new(
            crm_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the companies kept changing; retry",
        ))
    }
}

/// Those of `found` (other than `contact`) scoring `min_score` or more as its duplicates, best
/// first.
fn likely_duplicates(contact: &Contact, found: &[Contact], min_score: f64) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = found
        .iter()
        .filter(|other| other.id != contact.id)
        .filter_map(|other| {
            let (score, reasons) = contact.fields.likeness(&other.fields)?;
            (score >= min_score).then_some(Candidate {
                contact: other.id,
                score,
                reasons,
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates
}
