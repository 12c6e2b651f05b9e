//! Leads: qualification, disqualification and the one-time conversion into a deal.

use crm_platform::{ApiError, UserId};

use super::{Caller, DealInput, Page, PipelineApp, Rec, changed, event, failed, put, revision_write};
use crate::convert;
use crate::domain::{CompanyRef, ContactRef, Deal, Lead, LeadId, LeadStatus};
use crate::store::{Filter, Kind, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// A lead's client-set fields (None: not given / unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadPatch {
    pub title: Option<String>,
    pub contact: Option<Option<ContactRef>>,
    pub company: Option<Option<CompanyRef>>,
    pub source: Option<String>,
    pub status: Option<LeadStatus>,
    pub score: Option<u8>,
    pub owner: Option<String>,
}

fn owner_id(owner: &str, field: &str) -> Result<UserId, ApiError> {
    UserId::parse(owner).map_err(|r| ApiError::invalid_field(field, r))
}

/// Statuses a client may set directly; the others have their own methods.
fn settable(status: LeadStatus) -> Result<LeadStatus, ApiError> {
    match status {
        LeadStatus::New | LeadStatus::Working | LeadStatus::Qualified => Ok(status),
        LeadStatus::Disqualified => Err(ApiError::invalid_field(
            "lead.status",
            "use DisqualifyLead, with a reason",
        )),
        LeadStatus::Converted => Err(ApiError::invalid_field("lead.status", "use ConvertLead")),
    }
}

fn ensure_open(lead: &Lead) -> Result<(), ApiError> {
    match lead.status {
        LeadStatus::Converted => Err(failed("LEAD_CONVERTED", "the lead was converted into a deal")),
        LeadStatus::Disqualified => Err(failed("LEAD_DISQUALIFIED", "the lead is disqualified")),
        _ => Ok(()),
    }
}

impl PipelineApp {
    pub async fn create_lead(
        &self,
        caller: &Caller,
        input: LeadPatch,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Lead>, ApiError> {
        let owner = input.owner.clone().unwrap_or_else(|| caller.user().to_owned());
        caller.who.ensure_can_write_owned_by(&owner_id(&owner, "lead.owner")?)?;
        if let Some(done) = self.replay(caller, Kind::Lead, request).await? {
            return Ok(done);
        }
        let status = settable(input.status.unwrap_or(LeadStatus::New))?;
        let contact = self
            .check_contact(caller, input.contact.flatten(), "lead.contact")
            .await?;
        let company = self
            .check_company(caller, input.company.flatten(), "lead.company")
            .await?;
        let record = Rec::new(
            Lead {
                title: input.title.unwrap_or_default(),
                contact,
                company,
                source: input.source.unwrap_or_default(),
                status,
                disqualify_reason: String::new(),
                score: input.score.unwrap_or(0),
                owner,
                converted_deal: None,
                convert_time: None,
                converted_by: String::new(),
                external_id: None,
            },
            self.now(),
        );
        let write = Write {
            puts: vec![put(Kind::Lead, &record, None)?],
            events: vec![event(
                caller,
                LeadId::COLLECTION,
                &record,
                &pb::LeadCreated {
                    lead: Some(convert::lead(&record)),
                },
            )?],
            ..Write::default()
        };
        self.create(caller, Kind::Lead, request, record, write).await
    }

    pub async fn get_lead(&self, caller: &Caller, id: LeadId) -> Result<Rec<Lead>, ApiError> {
        self.load(caller.tenant(), Kind::Lead, id.0, &id.name()).await
    }

    pub async fn list_leads(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Lead>, ApiError> {
        self.list_page(caller, Kind::Lead, filters, page_size, page_token).await
    }

    pub async fn update_lead(
        &self,
        caller: &Caller,
        id: LeadId,
        etag: Option<i64>,
        patch: LeadPatch,
    ) -> Result<Rec<Lead>, ApiError> {
        let current = self.writable::<Lead>(caller, id.0, etag).await?;
        ensure_open(&current.body)?;
        let mut body = current.body.clone();
        let mut fields = Vec::new();
        if let Some(title) = patch.title.filter(|t| t != &body.title) {
            body.title = title;
            fields.push("title");
        }
        if let Some(source) = patch.source.filter(|s| s != &body.source) {
            body.source = source;
            fields.push("source");
        }
        if let Some(score) = patch.score.filter(|s| *s != body.score) {
            body.score = score;
            fields.push("score");
        }
        self.patch_contact(caller, "lead.contact", patch.contact, &mut body.contact, &mut fields)
            .await?;
        self.patch_company(caller, "lead.company", patch.company, &mut body.company, &mut fields)
            .await?;
        let mut qualified = false;
        if let Some(status) = patch.status.filter(|s| *s != body.status) {
            body.status = settable(status)?;
            qualified = status == LeadStatus::Qualified;
            fields.push("status");
        }
        if patch.owner.is_some_and(|o| o != body.owner) {
            return Err(ApiError::invalid_field(
                "lead.owner",
                "ownership moves with ReassignOwner (or a portfolio transfer)",
            ));
        }
        if fields.is_empty() {
            return Ok(current);
        }
        let (record, write) = if qualified {
            self.revise(caller, Kind::Lead, &current, body, |record| pb::LeadQualified {
                lead: Some(convert::lead(record)),
            })?
        } else {
            self.revise(caller, Kind::Lead, &current, body, |record| pb::LeadUpdated {
                lead: Some(convert::lead(record)),
                changed_fields: changed(fields),
            })?
        };
        self.write(caller, &write).await?;
        Ok(record)
    }

    pub async fn disqualify_lead(
        &self,
        caller: &Caller,
        id: LeadId,
        reason: String,
        etag: Option<i64>,
    ) -> Result<Rec<Lead>, ApiError> {
        if reason.is_empty() {
            return Err(ApiError::invalid_field("reason", "is required"));
        }
        let current = self.writable::<Lead>(caller, id.0, etag).await?;
        ensure_open(&current.body)?;
        let mut body = current.body.clone();
        body.status = LeadStatus::Disqualified;
        body.disqualify_reason = reason;
        let (record, write) = self.revise(caller, Kind::Lead, &current, body, |record| pb::LeadDisqualified {
            lead: Some(convert::lead(record)),
        })?;
        self.write(caller, &write).await?;
        Ok(record)
    }

    /// Converts a lead into a deal, once: the deal, the lead's conversion and both events are
    /// one write, and the lead is written at the revision read, so two conversions racing
    /// cannot both succeed.
    pub async fn convert_lead(
        &self,
        caller: &Caller,
        id: LeadId,
        deal: DealInput,
        etag: Option<i64>,
    ) -> Result<(Rec<Lead>, Rec<Deal>), ApiError> {
        let current = self.writable::<Lead>(caller, id.0, etag).await?;
        ensure_open(&current.body)?;
        let input = DealInput {
            name: if deal.name.is_empty() {
                current.body.title.clone()
            } else {
                deal.name
            },
            owner: Some(deal.owner.unwrap_or_else(|| current.body.owner.clone())),
            contact: deal.contact.or(current.body.contact.map(ContactRef)),
            company: deal.company.or(current.body.company.map(CompanyRef)),
            ..deal
        };
        let (deal, mut write) = self.new_deal(caller, input, Some(current.id), "deal").await?;
        let now = deal.create_time;
        let mut body = current.body.clone();
        body.status = LeadStatus::Converted;
        body.converted_deal = Some(deal.id);
        body.convert_time = Some(now);
        body.converted_by = caller.user().to_owned();
        let record = current.next(body, now);
        let converted = pb::LeadConverted {
            lead: Some(convert::lead(&record)),
            deal: Some(convert::deal(&deal)),
        };
        let conversion = revision_write(caller, Kind::Lead, current.revision, &record, &converted)?;
        write.absorb(conversion);
        self.write(caller, &write).await?;
        Ok((record, deal))
    }
}
