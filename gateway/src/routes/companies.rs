//! `/v1/companies`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use crm_proto::crm::contact::v1 as pb;
use http::{HeaderMap, StatusCode};

use super::*;
use crate::Gateway;
use crate::dto::{Company, CompanyPage};
use crate::extract::{JsonBody, QueryParams};
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// Lists companies.
#[utoipa::path(get, path = "/v1/companies", tag = "companies", params(ListParams),
    responses((status = 200, body = CompanyPage), (status = 400, body = ProblemBody)))]
pub async fn list(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<ListParams>,
) -> Result<Response, Problem> {
    let request = pb::ListCompaniesRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
        filter: q.filter.unwrap_or_default(),
        order_by: q.order_by.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .list_companies(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(CompanyPage {
        companies: response.companies.iter().map(Company::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// Creates a company. A domain another company has is refused (409, DUPLICATE_DOMAIN) unless
/// `allowDuplicate=true`; when likely duplicates exist, a `Link` header with
/// `rel="duplicates"` points to them.
#[utoipa::path(post, path = "/v1/companies", tag = "companies", request_body = Company,
    params(super::contacts::CreateParams, ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Company), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 409, body = ProblemBody)))]
pub async fn create(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    QueryParams(params): QueryParams<super::contacts::CreateParams>,
    JsonBody(body): JsonBody<Company>,
) -> Result<Response, Problem> {
    let request = pb::CreateCompanyRequest {
        company: Some(body.to_proto("company.")?),
        request_id: idempotency_key(&headers),
        allow_duplicate: params.allow_duplicate.unwrap_or(false),
    };
    let created = gw
        .contacts()
        .create_company(call.request(request, gw.deadline))
        .await?
        .into_inner();
    let company = created.company.unwrap_or_default();
    let mut response = with_etag(
        StatusCode::CREATED,
        &company.etag,
        Some(company.name.clone()),
        Company::from(&company),
    );
    if !created.duplicates.is_empty() {
        link_duplicates(&mut response, "companies", "company", &company.name);
    }
    Ok(response)
}

/// Returns one company.
#[utoipa::path(get, path = "/v1/companies/{id}", tag = "companies", params(("id" = String, Path)),
    responses((status = 200, body = Company), (status = 404, body = ProblemBody)))]
pub async fn get(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    let request = pb::GetCompanyRequest {
        name: format!("companies/{id}"),
    };
    let company = gw
        .contacts()
        .get_company(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .company
        .unwrap_or_default();
    Ok(with_etag(StatusCode::OK, &company.etag, None, Company::from(&company)))
}

/// Changes the fields present in the body (or named by `updateMask`).
#[utoipa::path(patch, path = "/v1/companies/{id}", tag = "companies", request_body = Company,
    params(("id" = String, Path), UpdateParams, ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = Company), (status = 400, body = ProblemBody), (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UpdateParams>,
    JsonBody(body): JsonBody<Company>,
) -> Result<Response, Problem> {
    let mut company = body.to_proto("company.")?;
    company.name = format!("companies/{id}");
    let header_etag = if_match(&headers);
    if !header_etag.is_empty() {
        company.etag = header_etag;
    }
    let request = pb::UpdateCompanyRequest {
        company: Some(company),
        update_mask: Some(mask(&params, body.present_paths())),
    };
    let updated = gw
        .contacts()
        .update_company(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .company
        .unwrap_or_default();
    Ok(with_etag(StatusCode::OK, &updated.etag, None, Company::from(&updated)))
}

/// Deletes a company; its contacts stay and lose the link.
#[utoipa::path(delete, path = "/v1/companies/{id}", tag = "companies",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn delete(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let request = pb::DeleteCompanyRequest {
        name: format!("companies/{id}"),
        etag: if_match(&headers),
    };
    gw.contacts().delete_company(call.request(request, gw.deadline)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A company's audit trail, newest first.
#[utoipa::path(get, path = "/v1/companies/{id}/history", tag = "companies", params(("id" = String, Path), PageParams),
    responses((status = 200, body = crate::dto::HistoryPage), (status = 404, body = ProblemBody)))]
pub async fn history(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageParams>,
) -> Result<Response, Problem> {
    super::contacts::history(&gw, &call, format!("companies/{id}"), q).await
}

/// Company duplicate search parameters.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CompanyDuplicateParams {
    /// Only the candidates of this company (`companies/{id}`).
    pub company: Option<String>,
    /// Leave out groups scoring below this (0 to 1, default 0.5).
    pub min_score: Option<f64>,
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

/// Groups of companies that are likely one organisation (same domain, near-identical names),
/// or the candidates of one company.
#[utoipa::path(get, path = "/v1/companies:findDuplicates", tag = "companies", params(CompanyDuplicateParams),
    responses((status = 200, body = crate::dto::CompanyDuplicateGroupPage), (status = 400, body = ProblemBody)))]
pub async fn find_duplicates(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<CompanyDuplicateParams>,
) -> Result<Response, Problem> {
    let request = pb::FindCompanyDuplicatesRequest {
        company: q.company.unwrap_or_default(),
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
        min_score: q.min_score.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .find_company_duplicates(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(crate::dto::CompanyDuplicateGroupPage {
        groups: response
            .groups
            .iter()
            .map(crate::dto::CompanyDuplicateGroup::from)
            .collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// Custom methods on one company (`POST /v1/companies/{id}:verb`).
pub async fn custom_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    use axum::extract::FromRequest;
    match id_and_verb.split_once(':') {
        Some((id, "merge")) => {
            let JsonBody(body) = JsonBody::<crate::dto::MergeRequest>::from_request(request, &()).await?;
            let request = pb::MergeCompaniesRequest {
                survivor: format!("companies/{id}"),
                merged: body.merged,
                field_sources: body
                    .field_sources
                    .into_iter()
                    .map(|(field, source)| (proto_path(&field), source))
                    .collect(),
                etag: if_match(&headers),
            };
            let survivor = gw
                .contacts()
                .merge_companies(call.request(request, gw.deadline))
                .await?
                .into_inner()
                .company
                .unwrap_or_default();
            Ok(with_etag(
                StatusCode::OK,
                &survivor.etag,
                None,
                Company::from(&survivor),
            ))
        }
        _ => Err(Problem(crm_platform::ApiError::new(
            crm_platform::ErrorCode::NotFound,
            "ROUTE_NOT_FOUND",
            "no such method; see /openapi.json",
        ))),
    }
}

/// Merges other companies into this one (the survivor): per-field survivorship, their contacts
/// and interactions moved, each merged company's name resolving to the survivor afterwards.
#[utoipa::path(post, path = "/v1/companies/{id}:merge", tag = "companies", request_body = crate::dto::MergeRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the survivor's etag")),
    responses((status = 200, body = Company), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn merge_companies() {}
