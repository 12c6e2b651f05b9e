//! The OpenAPI document, generated from the handlers and types themselves.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::dto;
use crate::problem::{ProblemBody, Violation};
use crate::routes::{companies, contacts, events, interactions, ops, pipeline, users};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "CRM suite REST API", description = "REST/JSON mirror of the suite's gRPC APIs. JSON field names are proto3 JSON (lowerCamelCase); errors are application/problem+json."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    paths(
        contacts::list, contacts::create, contacts::get, contacts::update, contacts::delete, contacts::search,
        contacts::contact_history, contacts::reassign_owner, contacts::erase_contact, companies::history,
        contacts::find_duplicates, contacts::merge_contacts, contacts::export, contacts::import,
        companies::find_duplicates, companies::merge_companies,
        companies::list, companies::create, companies::get, companies::update, companies::delete,
        interactions::list_for_contact, interactions::list_for_company, interactions::create, interactions::get, interactions::delete,
        events::stream,
        pipeline::list_pipelines, pipeline::create_pipeline, pipeline::get_pipeline, pipeline::update_pipeline, pipeline::board,
        pipeline::list_leads, pipeline::create_lead, pipeline::get_lead, pipeline::update_lead, pipeline::disqualify_lead,
        pipeline::convert_lead, pipeline::list_deals, pipeline::create_deal, pipeline::get_deal, pipeline::update_deal,
        pipeline::move_deal, pipeline::close_deal, pipeline::reopen_deal, pipeline::deal_history,
        pipeline::list_products, pipeline::create_product, pipeline::get_product, pipeline::update_product,
        pipeline::list_tasks, pipeline::create_task, pipeline::get_task, pipeline::update_task, pipeline::complete_task,
        pipeline::reopen_task, pipeline::list_forecasts, pipeline::submit_forecast, pipeline::list_quotas, pipeline::set_quota,
        users::transfer_portfolio,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(
        dto::Contact, dto::Company, dto::Interaction, dto::ContactPage, dto::CompanyPage, dto::InteractionPage,
        dto::EmailAddress, dto::PhoneNumber, dto::Consent, dto::ChannelConsent, dto::common::AttributeValue,
        dto::HistoryPage, dto::HistoryEntry, dto::FieldChange, dto::ReassignOwnerRequest, dto::ReassignOwnerResponse,
        dto::OwnerShare, dto::DuplicateGroup, dto::DuplicateGroupPage, dto::MergeRequest, dto::RowResult, dto::ImportSummary, dto::CompanyDuplicateGroup, dto::CompanyDuplicateGroupPage, ProblemBody, Violation,
        users::TransferRequest, users::TransferResponse, users::TransferShare,
    )),
    tags((name = "contacts"), (name = "companies"), (name = "interactions"), (name = "events"), (name = "pipelines"), (name = "leads"), (name = "deals"),
        (name = "products"), (name = "tasks"), (name = "forecasts"), (name = "users"), (name = "operations")),
)]
pub struct ApiDoc;
