//! Companies: created with their likely duplicates, read through merges, updated, deleted and
//! listed.

use crm_platform::paging::PageRequest;
use crm_platform::{ApiError, Principal};

use super::{
    CompanyCandidate, ContactApp, DEFAULT_MIN_SCORE, ListParams, MAX_MERGE_HOPS, Page, audit, check_fields,
    read_modify_write, unchanged,
};
use crate::domain::*;
use crate::store::{Created, RequestKey, company_cursor};

const COMPANY_ORDERS: &[SortField] = &[SortField::CreateTime, SortField::UpdateTime, SortField::DisplayName];

impl ContactApp {
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
        let now = self.now();
        let company = Company {
            id: CompanyId::generate(),
            fields,
            create_time: now,
            update_time: now,
            revision: Revision::FIRST,
            merged_into: None,
        };
        let audit = audit(
            who,
            Audited::Company(company.id),
            ChangeAction::Created,
            changes(None, Some(&company.fields)),
            now,
        )?;
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
        if mask.is_empty() {
            // Nothing to change (AIP-134): the company as it is, on the same conditions.
            let current = self.get_company(who, id).await?;
            who.ensure_can_write_owned_by(&current.fields.owner)?;
            return unchanged(current, etag);
        }
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
                let now = self.now();
                let audit = audit(who, Audited::Company(current.id), ChangeAction::Updated, diff, now)?;
                let updated = Company {
                    fields,
                    update_time: now,
                    revision: current.revision.next(),
                    ..current
                };
                Ok((updated, audit))
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
        let audit = audit(
            who,
            Audited::Company(id),
            ChangeAction::Deleted,
            changes(Some(&current.fields), None),
            self.now(),
        )?;
        self.store
            .delete_company(&who.tenant, id, etag, &audit)
            .await
            .map_err(|err| err.into_api("company"))
    }

    pub async fn list_companies(&self, who: &Principal, params: &ListParams) -> Result<Page<Company>, ApiError> {
        let page = PageRequest::<Cursor>::parse(
            params.page_size,
            &params.page_token,
            &["companies", &params.filter, &params.order_by],
        )?;
        let filter = CompanyFilter::parse(&params.filter)?;
        let order = Order::parse(&params.order_by, COMPANY_ORDERS)?;
        let query = ListQuery {
            filter,
            order,
            after: page.after.clone(),
            limit: page.limit,
        };
        let rows = self
            .store
            .list_companies(&who.tenant, &query)
            .await
            .map_err(|err| err.into_api("companies"))?;
        Ok(page.page(rows, |last| company_cursor(last, order.field)))
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
}
