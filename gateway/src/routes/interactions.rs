//! `/v1/contacts/{id}/interactions` and `/v1/companies/{id}/interactions`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use crm_proto::crm::contact::v1 as pb;
use http::{HeaderMap, StatusCode};

use super::*;
use crate::Gateway;
use crate::dto::{Interaction, InteractionPage};
use crate::extract::{JsonBody, QueryParams};
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

async fn timeline(gw: &Gateway, call: &Call, parent: String, q: PageParams) -> Result<Response, Problem> {
    let request = pb::ListInteractionsRequest {
        parent,
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .list_interactions(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(InteractionPage {
        interactions: response.interactions.iter().map(Interaction::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// A contact's timeline, newest first.
#[utoipa::path(get, path = "/v1/contacts/{id}/interactions", tag = "interactions", params(("id" = String, Path), PageParams),
    responses((status = 200, body = InteractionPage), (status = 404, body = ProblemBody)))]
pub async fn list_for_contact(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageParams>,
) -> Result<Response, Problem> {
    timeline(&gw, &call, format!("contacts/{id}"), q).await
}

/// A company's timeline (interactions of its contacts), newest first.
#[utoipa::path(get, path = "/v1/companies/{id}/interactions", tag = "interactions", params(("id" = String, Path), PageParams),
    responses((status = 200, body = InteractionPage), (status = 404, body = ProblemBody)))]
pub async fn list_for_company(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageParams>,
) -> Result<Response, Problem> {
    timeline(&gw, &call, format!("companies/{id}"), q).await
}

/// Records an interaction on a contact's timeline.
#[utoipa::path(post, path = "/v1/contacts/{id}/interactions", tag = "interactions", request_body = Interaction,
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Interaction), (status = 400, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn create(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Interaction>,
) -> Result<Response, Problem> {
    let request = pb::CreateInteractionRequest {
        parent: format!("contacts/{id}"),
        interaction: Some(body.to_proto()?),
        request_id: idempotency_key(&headers),
    };
    let created = gw
        .contacts()
        .create_interaction(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .interaction
        .unwrap_or_default();
    let mut response = (StatusCode::CREATED, axum::Json(Interaction::from(&created))).into_response();
    if let Ok(location) = http::HeaderValue::from_str(&format!("/v1/{}", created.name)) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    Ok(response)
}

/// Returns one interaction.
#[utoipa::path(get, path = "/v1/contacts/{id}/interactions/{interaction}", tag = "interactions",
    params(("id" = String, Path), ("interaction" = String, Path)),
    responses((status = 200, body = Interaction), (status = 404, body = ProblemBody)))]
pub async fn get(
    State(gw): State<Gateway>,
    call: Call,
    Path((id, interaction)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let request = pb::GetInteractionRequest {
        name: format!("contacts/{id}/interactions/{interaction}"),
    };
    let found = gw
        .contacts()
        .get_interaction(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .interaction
        .unwrap_or_default();
    Ok(axum::Json(Interaction::from(&found)).into_response())
}

/// Deletes an interaction.
#[utoipa::path(delete, path = "/v1/contacts/{id}/interactions/{interaction}", tag = "interactions",
    params(("id" = String, Path), ("interaction" = String, Path)),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn delete(
    State(gw): State<Gateway>,
    call: Call,
    Path((id, interaction)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let request = pb::DeleteInteractionRequest {
        name: format!("contacts/{id}/interactions/{interaction}"),
    };
    gw.contacts()
        .delete_interaction(call.request(request, gw.deadline))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
