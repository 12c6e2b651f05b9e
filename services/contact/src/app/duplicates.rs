//! Likely duplicates: the candidates of one contact or company, and the groups across a tenant
//! found along the match keys their members share.

use std::collections::HashMap;

use futures::future::BoxFuture;

use crm_platform::paging::{decode_token, encode_token, page_size, query_fingerprint};
use crm_platform::{ApiError, Principal};

use super::{ContactApp, DEFAULT_MIN_SCORE, Page};
use crate::domain::*;
use crate::store::MAX_CANDIDATES;

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

impl ContactApp {
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

    /// Live companies likely to be the same organisation as `company`, best first.
    pub(super) async fn company_candidates_for(
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
}

/// Those of `found` (other than `contact`) scoring `min_score` or more as its duplicates, best
/// first.
pub(super) fn likely_duplicates(contact: &Contact, found: &[Contact], min_score: f64) -> Vec<Candidate> {
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
