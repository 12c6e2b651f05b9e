//! The gRPC server of crm.contact.v1: authenticates nothing itself (the auth layer did),
//! converts at the edge and delegates to [`ContactApp`].

pub mod legacy_events;

use crm_platform::error::{parse_field as parse, required_field as required};
use crm_platform::idempotency::RequestKey;
use crm_platform::identity::principal;
use crm_platform::{ApiError, Principal, UserId};
use crm_proto::crm::contact::v1 as pb;
use crm_proto::crm::contact::v1::contact_service_server::ContactService;
use tonic::{Request, Response, Status};

use crate::app::{ContactApp, ListParams};
use crate::convert::*;
use crate::domain::{Audited, CompanyField, CompanyId, ContactField, ContactId, InteractionId};
use crate::store::TimelineOf;
use crm_platform::resource::precondition;

pub use crm_proto::crm::contact::v1::contact_service_server::ContactServiceServer;

/// The fully qualified name clients and health checks use.
pub const SERVICE_NAME: &str = "crm.contact.v1.ContactService";

/// Implements the generated ContactService trait.
#[derive(Clone)]
pub struct ContactGrpc {
    app: ContactApp,
}

impl ContactGrpc {
    pub fn new(app: ContactApp) -> Self {
        Self { app }
    }

    /// The tonic service, ready to add to a server.
    pub fn into_server(self) -> ContactServiceServer<Self> {
        ContactServiceServer::new(self)
    }
}

fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    principal(request).map_err(Status::from)
}

fn timeline_of(parent: &str) -> Result<TimelineOf, ApiError> {
    if let Ok(id) = ContactId::parse_name(parent) {
        return Ok(TimelineOf::Contact(id));
    }
    CompanyId::parse_name(parent)
        .map(TimelineOf::Company)
        .map_err(|_| ApiError::invalid_field("parent", "must be contacts/{id} or companies/{id}"))
}

/// Row results per response message of an import.
const IMPORT_RESULT_BATCH: usize = 200;
/// Most field choices a merge may name (there are fewer mergeable fields than this).
const MAX_FIELD_SOURCES: usize = 32;

fn import_options(options: &pb::ImportOptions) -> Result<crate::import::ImportOptions, ApiError> {
    use crate::import::NaturalKey;
    let natural_key = match pb::NaturalKey::try_from(options.natural_key) {
        Ok(pb::NaturalKey::ExternalId) => NaturalKey::ExternalId,
        Ok(pb::NaturalKey::PrimaryEmail) => NaturalKey::PrimaryEmail,
        _ => {
            return Err(ApiError::invalid_field(
                "options.natural_key",
                "must be EXTERNAL_ID or PRIMARY_EMAIL",
            ));
        }
    };
    Ok(crate::import::ImportOptions {
        natural_key,
        dry_run: options.dry_run,
    })
}

/// A merge request's parts, parsed: survivor, merged records, survivorship choices, etag.
type ParsedMerge<Id, Field> = (
    Id,
    Vec<Id>,
    std::collections::BTreeMap<Field, Id>,
    Option<crate::domain::Revision>,
);

/// Parses the fields every merge request has, collecting every violation.
fn parse_merge<Id: Copy, Field: Ord>(
    survivor: &str,
    merged: &[String],
    field_sources: &std::collections::BTreeMap<String, String>,
    raw_etag: &str,
    parse_id: fn(&str) -> Result<Id, String>,
    parse_field: fn(&str) -> Result<Field, String>,
) -> Result<ParsedMerge<Id, Field>, ApiError> {
    let mut violations = crm_platform::error::Violations::new("");
    let survivor = violations.check("survivor", parse_id(survivor));
    let merged: Vec<Id> = violations
        .bounded("merged", merged, crate::app::MAX_MERGE)
        .iter()
        .enumerate()
        .filter_map(|(i, name)| violations.check(format!("merged[{i}]"), parse_id(name)))
        .collect();
    let mut choices = std::collections::BTreeMap::new();
    let within = violations.within("field_sources", field_sources.len(), MAX_FIELD_SOURCES);
    for (field, source) in field_sources.iter().filter(|_| within) {
        let path = format!("field_sources[{field}]");
        let field = violations.check(&path, parse_field(&crm_platform::resource::field_path(field)));
        let source = violations.check(&path, parse_id(source));
        if let (Some(field), Some(source)) = (field, source) {
            choices.insert(field, source);
        }
    }
    let etag = precondition(raw_etag, "etag")?;
    violations.finish()?;
    let survivor = survivor.ok_or_else(|| ApiError::invalid_field("survivor", "is required"))?;
    Ok((survivor, merged, choices, etag))
}

#[tonic::async_trait]
impl ContactService for ContactGrpc {
    type ImportContactsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ImportContactsResponse, Status>> + Send + 'static>>;

    async fn import_contacts(
        &self,
        request: Request<tonic::Streaming<pb::ImportContactsRequest>>,
    ) -> Result<Response<Self::ImportContactsStream>, Status> {
        use pb::import_contacts_request::Kind;
        let who = caller(&request)?;
        self.app.ensure_can_import(&who)?;
        let mut rows = request.into_inner();
        let options = match rows.message().await? {
            Some(pb::ImportContactsRequest {
                kind: Some(Kind::Options(options)),
            }) => import_options(&options)?,
            _ => return Err(ApiError::invalid_field("options", "the first message must carry the options").into()),
        };
        // Bounded channels throughout: when the client stops reading results, the import
        // stops reading rows, so neither side buffers more than a few batches.
        let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(crate::import::IMPORT_WORKERS * 64);
        let mut outcomes = crate::import::run(self.app.clone(), who.clone(), options, rows_rx);
        let (results_tx, results_rx) = tokio::sync::mpsc::channel(4);
        let reader_results = results_tx.clone();
        tokio::spawn(async move {
            loop {
                let row = match rows.message().await {
                    Ok(Some(pb::ImportContactsRequest {
                        kind: Some(Kind::Row(row)),
                    })) => row,
                    Ok(None) => return,
                    Ok(Some(_)) => {
                        let err = ApiError::invalid_field("row", "only rows may follow the options");
                        let _ = reader_results.send(Err(err.into())).await;
                        return;
                    }
                    Err(status) => {
                        tracing::warn!(code = ?status.code(), "import stream broken");
                        return;
                    }
                };
                if rows_tx.send((row.line, import_row(&row, &who.user))).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut summary = crate::import::ImportSummary::default();
            let mut results = Vec::with_capacity(IMPORT_RESULT_BATCH);
            while let Some(outcome) = outcomes.recv().await {
                let (line, outcome) = match outcome {
                    Ok(done) => done,
                    Err(err) => {
                        let _ = results_tx.send(Err(err.into())).await;
                        return;
                    }
                };
                summary.count(&outcome);
                results.push(row_result(line, &outcome));
                if results.len() >= IMPORT_RESULT_BATCH {
                    let batch = pb::ImportContactsResponse {
                        results: std::mem::take(&mut results),
                        summary: None,
                    };
                    if results_tx.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
            }
            let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            let summary = pb::ImportSummary {
                created: as_i64(summary.created),
                updated: as_i64(summary.updated),
                unchanged: as_i64(summary.unchanged),
                rejected: as_i64(summary.rejected),
                dry_run: options.dry_run,
                natural_key: match options.natural_key {
                    crate::import::NaturalKey::ExternalId => pb::NaturalKey::ExternalId,
                    crate::import::NaturalKey::PrimaryEmail => pb::NaturalKey::PrimaryEmail,
                } as i32,
            };
            tracing::info!(
                created = summary.created,
                updated = summary.updated,
                rejected = summary.rejected,
                "import finished"
            );
            let _ = results_tx
                .send(Ok(pb::ImportContactsResponse {
                    results,
                    summary: Some(summary),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            results_rx,
        ))))
    }

    type ExportContactsStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportContactsResponse, Status>> + Send + 'static>>;

    async fn export_contacts(
        &self,
        request: Request<pb::ExportContactsRequest>,
    ) -> Result<Response<Self::ExportContactsStream>, Status> {
        use futures::StreamExt;
        let who = caller(&request)?;
        let r = request.get_ref();
        let batches = self.app.export_contacts(&who, &r.filter, &r.order_by)?;
        Ok(Response::new(Box::pin(batches.map(|batch| {
            batch
                .map(|contacts| pb::ExportContactsResponse {
                    contacts: contacts.iter().map(contact_to_proto).collect(),
                })
                .map_err(Status::from)
        }))))
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetContactRequest>,
    ) -> Result<Response<pb::GetContactResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("name", ContactId::parse_name(&request.get_ref().name))?;
        let contact = self.app.get_contact(&who, id).await?;
        Ok(Response::new(pb::GetContactResponse {
            contact: Some(contact_to_proto(&contact)),
        }))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let params = ListParams {
            page_size: r.page_size,
            page_token: r.page_token,
            filter: r.filter,
            order_by: r.order_by,
        };
        let page = self.app.list_contacts(&who, &params).await?;
        Ok(Response::new(pb::ListContactsResponse {
            contacts: page.items.iter().map(contact_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Result<Response<pb::CreateContactResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let contact = required("contact", r.contact.as_ref())?;
        let fields = new_contact(contact, &who.user)?;
        let key = RequestKey::of(&who.user, &r.request_id, contact)?;
        let (created, candidates) = self.app.create_contact(&who, fields, key, r.allow_duplicate).await?;
        Ok(Response::new(pb::CreateContactResponse {
            contact: Some(contact_to_proto(&created.value)),
            duplicates: candidates.iter().map(candidate_to_proto).collect(),
        }))
    }

    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::UpdateContactResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let contact = required("contact", r.contact.as_ref())?;
        let id = parse("contact.name", ContactId::parse_name(&contact.name))?;
        let mask = crm_platform::resource::update_mask(r.update_mask.as_ref(), ContactField::parse)?;
        let etag = precondition(&contact.etag, "contact.etag")?;
        let mut violations = crm_platform::error::Violations::new("contact.");
        // The owner is required only when the mask names it; otherwise it is not applied.
        let owner_default = (!mask.contains(&ContactField::Owner)).then_some(&who.user);
        let patch = contact_fields(&mut violations, &masked_contact(contact, &mask), owner_default);
        violations.finish()?;
        let updated = self.app.update_contact(&who, id, &patch, &mask, etag).await?;
        Ok(Response::new(pb::UpdateContactResponse {
            contact: Some(contact_to_proto(&updated)),
        }))
    }

    async fn delete_contact(
        &self,
        request: Request<pb::DeleteContactRequest>,
    ) -> Result<Response<pb::DeleteContactResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", ContactId::parse_name(&r.name))?;
        self.app
            .delete_contact(&who, id, precondition(&r.etag, "etag")?)
            .await?;
        Ok(Response::new(pb::DeleteContactResponse {}))
    }

    async fn search_contacts(
        &self,
        request: Request<pb::SearchContactsRequest>,
    ) -> Result<Response<pb::SearchContactsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let page = self
            .app
            .search_contacts(&who, &r.query, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::SearchContactsResponse {
            contacts: page.items.iter().map(contact_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_company(
        &self,
        request: Request<pb::GetCompanyRequest>,
    ) -> Result<Response<pb::GetCompanyResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("name", CompanyId::parse_name(&request.get_ref().name))?;
        let company = self.app.get_company(&who, id).await?;
        Ok(Response::new(pb::GetCompanyResponse {
            company: Some(company_to_proto(&company)),
        }))
    }

    async fn list_companies(
        &self,
        request: Request<pb::ListCompaniesRequest>,
    ) -> Result<Response<pb::ListCompaniesResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let params = ListParams {
            page_size: r.page_size,
            page_token: r.page_token,
            filter: r.filter,
            order_by: r.order_by,
        };
        let page = self.app.list_companies(&who, &params).await?;
        Ok(Response::new(pb::ListCompaniesResponse {
            companies: page.items.iter().map(company_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_company(
        &self,
        request: Request<pb::CreateCompanyRequest>,
    ) -> Result<Response<pb::CreateCompanyResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let company = required("company", r.company.as_ref())?;
        let fields = new_company(company, &who.user)?;
        let key = RequestKey::of(&who.user, &r.request_id, company)?;
        let (created, candidates) = self.app.create_company(&who, fields, key, r.allow_duplicate).await?;
        Ok(Response::new(pb::CreateCompanyResponse {
            company: Some(company_to_proto(&created.value)),
            duplicates: candidates.iter().map(company_candidate_to_proto).collect(),
        }))
    }

    async fn update_company(
        &self,
        request: Request<pb::UpdateCompanyRequest>,
    ) -> Result<Response<pb::UpdateCompanyResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let company = required("company", r.company.as_ref())?;
        let id = parse("company.name", CompanyId::parse_name(&company.name))?;
        let mask = crm_platform::resource::update_mask(r.update_mask.as_ref(), CompanyField::parse)?;
        let etag = precondition(&company.etag, "company.etag")?;
        let mut violations = crm_platform::error::Violations::new("company.");
        let owner_default = (!mask.contains(&CompanyField::Owner)).then_some(&who.user);
        let patch = company_fields(&mut violations, &masked_company(company, &mask), owner_default);
        violations.finish()?;
        let updated = self.app.update_company(&who, id, &patch, &mask, etag).await?;
        Ok(Response::new(pb::UpdateCompanyResponse {
            company: Some(company_to_proto(&updated)),
        }))
    }

    async fn delete_company(
        &self,
        request: Request<pb::DeleteCompanyRequest>,
    ) -> Result<Response<pb::DeleteCompanyResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", CompanyId::parse_name(&r.name))?;
        self.app
            .delete_company(&who, id, precondition(&r.etag, "etag")?)
            .await?;
        Ok(Response::new(pb::DeleteCompanyResponse {}))
    }

    async fn create_interaction(
        &self,
        request: Request<pb::CreateInteractionRequest>,
    ) -> Result<Response<pb::CreateInteractionResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let contact = parse("parent", ContactId::parse_name(&r.parent))?;
        let interaction = required("interaction", r.interaction.as_ref())?;
        let fields = new_interaction(interaction, &who.user)?;
        let key = RequestKey::of(&who.user, &r.request_id, r)?;
        let created = self.app.create_interaction(&who, contact, fields, key).await?;
        Ok(Response::new(pb::CreateInteractionResponse {
            interaction: Some(interaction_to_proto(&created.value)),
        }))
    }

    async fn get_interaction(
        &self,
        request: Request<pb::GetInteractionRequest>,
    ) -> Result<Response<pb::GetInteractionResponse>, Status> {
        let who = caller(&request)?;
        let (contact, id) = parse("name", InteractionId::parse_name(&request.get_ref().name))?;
        let interaction = self.app.get_interaction(&who, contact, id).await?;
        Ok(Response::new(pb::GetInteractionResponse {
            interaction: Some(interaction_to_proto(&interaction)),
        }))
    }

    async fn list_interactions(
        &self,
        request: Request<pb::ListInteractionsRequest>,
    ) -> Result<Response<pb::ListInteractionsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let of = timeline_of(&r.parent)?;
        let page = self.app.list_interactions(&who, of, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListInteractionsResponse {
            interactions: page.items.iter().map(interaction_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_interaction(
        &self,
        request: Request<pb::DeleteInteractionRequest>,
    ) -> Result<Response<pb::DeleteInteractionResponse>, Status> {
        let who = caller(&request)?;
        let (contact, id) = parse("name", InteractionId::parse_name(&request.get_ref().name))?;
        self.app.delete_interaction(&who, contact, id).await?;
        Ok(Response::new(pb::DeleteInteractionResponse {}))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let of = match timeline_of(&r.parent)? {
            TimelineOf::Contact(id) => Audited::Contact(id),
            TimelineOf::Company(id) => Audited::Company(id),
        };
        let page = self.app.list_history(&who, of, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListHistoryResponse {
            entries: page.items.iter().map(history_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn reassign_owner(
        &self,
        request: Request<pb::ReassignOwnerRequest>,
    ) -> Result<Response<pb::ReassignOwnerResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let mut violations = crm_platform::error::Violations::new("");
        let from = violations.check("from_user", UserId::parse(&r.from_user));
        let to: Vec<UserId> = violations
            .bounded("to_users", &r.to_users, crate::app::MAX_REASSIGN_TARGETS)
            .iter()
            .enumerate()
            .filter_map(|(i, u)| violations.check(format!("to_users[{i}]"), UserId::parse(u)))
            .collect();
        violations.finish()?;
        let Some(from) = from else {
            return Err(ApiError::invalid_field("from_user", "is required").into());
        };
        let done = self.app.reassign_owner(&who, &from, &to, r.dry_run).await?;
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Ok(Response::new(pb::ReassignOwnerResponse {
            contacts: as_i64(done.contacts()),
            companies: as_i64(done.companies()),
            shares: done
                .shares
                .iter()
                .map(|(user, contacts, companies)| pb::OwnerShare {
                    user: user.as_str().to_owned(),
                    contacts: as_i64(*contacts),
                    companies: as_i64(*companies),
                })
                .collect(),
            dry_run: done.dry_run,
        }))
    }

    async fn erase_contact(
        &self,
        request: Request<pb::EraseContactRequest>,
    ) -> Result<Response<pb::EraseContactResponse>, Status> {
        let who = caller(&request)?;
        let id = parse("name", ContactId::parse_name(&request.get_ref().name))?;
        let tombstone = self.app.erase_contact(&who, id).await?;
        Ok(Response::new(pb::EraseContactResponse {
            contact: Some(contact_to_proto(&tombstone)),
        }))
    }

    async fn find_duplicates(
        &self,
        request: Request<pb::FindDuplicatesRequest>,
    ) -> Result<Response<pb::FindDuplicatesResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let contact = if r.contact.is_empty() {
            None
        } else {
            Some(parse("contact", ContactId::parse_name(&r.contact))?)
        };
        let page = self
            .app
            .find_duplicates(&who, contact, r.page_size, &r.page_token, r.min_score)
            .await?;
        Ok(Response::new(pb::FindDuplicatesResponse {
            groups: page.items.iter().map(group_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn merge_contacts(
        &self,
        request: Request<pb::MergeContactsRequest>,
    ) -> Result<Response<pb::MergeContactsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let (survivor, merged, choices, etag) = parse_merge(
            &r.survivor,
            &r.merged,
            &r.field_sources,
            &r.etag,
            ContactId::parse_name,
            ContactField::parse,
        )?;
        let contact = self.app.merge_contacts(&who, survivor, &merged, &choices, etag).await?;
        Ok(Response::new(pb::MergeContactsResponse {
            contact: Some(contact_to_proto(&contact)),
        }))
    }

    async fn find_company_duplicates(
        &self,
        request: Request<pb::FindCompanyDuplicatesRequest>,
    ) -> Result<Response<pb::FindCompanyDuplicatesResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let company = if r.company.is_empty() {
            None
        } else {
            Some(parse("company", CompanyId::parse_name(&r.company))?)
        };
        let page = self
            .app
            .find_company_duplicates(&who, company, r.page_size, &r.page_token, r.min_score)
            .await?;
        Ok(Response::new(pb::FindCompanyDuplicatesResponse {
            groups: page.items.iter().map(company_group_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn merge_companies(
        &self,
        request: Request<pb::MergeCompaniesRequest>,
    ) -> Result<Response<pb::MergeCompaniesResponse>, Status> {
        let who = caller(&request)?;
        let r = request.get_ref();
        let (survivor, merged, choices, etag) = parse_merge(
            &r.survivor,
            &r.merged,
            &r.field_sources,
            &r.etag,
            CompanyId::parse_name,
            CompanyField::parse,
        )?;
        let company = self
            .app
            .merge_companies(&who, survivor, &merged, &choices, etag)
            .await?;
        Ok(Response::new(pb::MergeCompaniesResponse {
            company: Some(company_to_proto(&company)),
        }))
    }
}
