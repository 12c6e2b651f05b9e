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

/// Creates a company.
#[utoipa::path(post, path = "/v1/companies", tag = "companies", request_body = Company,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Company), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn create(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Company>,
) -> Result<Response, Problem> {
    let request = pb::CreateCompanyRequest {
        company: Some(body.to_proto("company.")?),
        request_id: idempotency_key(&headers),
    };
    let company = gw
        .contacts()
        .create_company(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .company
        .unwrap_or_default();
    Ok(with_etag(
        StatusCode::CREATED,
        &company.etag,
        Some(company.name.clone()),
        Company::from(&company),
    ))
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
