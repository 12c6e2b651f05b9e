//! Contacts: created with their likely duplicates, read through merges, updated, deleted,
//! listed and searched.

use crm_platform::paging::PageRequest;
use crm_platform::{ApiError, Principal};

use super::duplicates::likely_duplicates;
use super::{
    CONTACT_ORDERS, Candidate, ContactApp, DEFAULT_MIN_SCORE, ListParams, MAX_MERGE_HOPS, Page, audit, check_fields,
    read_modify_write, refuse_erased, unchanged,
};
use crate::domain::*;
use crate::store::{Created, RequestKey, contact_cursor};

/// The deepest a search pages (search finds someone; listing with filters is exhaustive).
const MAX_SEARCH_OFFSET: usize = 100_000;

impl ContactApp {
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
        let now = self.now();
        let contact = Contact {
            id: ContactId::generate(),
            fields,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            erase_time: None,
            merged_into: None,
        };
        let audit = audit(
            who,
            Audited::Contact(contact.id),
            ChangeAction::Created,
            changes(None, Some(&contact.fields)),
            now,
        )?;
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
        if mask.is_empty() {
            // Nothing to change (AIP-134): the contact as it is, on the same conditions.
            let current = self.get_contact(who, id).await?;
            who.ensure_can_write_owned_by(&current.fields.owner)?;
            refuse_erased(&current)?;
            return unchanged(current, etag);
        }
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
                let now = self.now();
                let audit = audit(who, Audited::Contact(current.id), ChangeAction::Updated, diff, now)?;
                let updated = Contact {
                    fields,
                    update_time: now,
                    revision: current.revision.next(),
                    ..current
                };
                Ok((updated, audit))
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
        let audit = audit(
            who,
            Audited::Contact(id),
            ChangeAction::Deleted,
            changes(Some(&current.fields), None),
            self.now(),
        )?;
        self.store
            .delete_contact(&who.tenant, id, etag, &audit)
            .await
            .map_err(|err| err.into_api("contact"))
    }

    pub async fn list_contacts(&self, who: &Principal, params: &ListParams) -> Result<Page<Contact>, ApiError> {
        let page = PageRequest::<Cursor>::parse(
            params.page_size,
            &params.page_token,
            &["contacts", &params.filter, &params.order_by],
        )?;
        let filter = ContactFilter::parse(&params.filter)?;
        let order = Order::parse(&params.order_by, CONTACT_ORDERS)?;
        let query = ListQuery {
            filter,
            order,
            after: page.after.clone(),
            limit: page.limit,
        };
        let rows = self
            .store
            .list_contacts(&who.tenant, &query)
            .await
            .map_err(|err| err.into_api("contacts"))?;
        Ok(page.page(rows, |last| contact_cursor(last, order.field)))
    }

    pub async fn search_contacts(
        &self,
        who: &Principal,
        query: &str,
        size: i32,
        token: &str,
    ) -> Result<Page<Contact>, ApiError> {
        let page = PageRequest::<usize>::parse(size, token, &["search", query])?;
        let terms = SearchTerms::parse(query)?;
        let (offset, limit) = (page.after.unwrap_or(0), page.limit);
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
        Ok(page.page(rows, |_| offset + limit))
    }
}
