//! `POST /v1/users/{id}:transferPortfolio`: everything a leaving salesperson owns, across
//! the services, to one user or round-robin over several, in one call.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use crm_proto::crm::contact::v1 as contact;
use crm_proto::crm::pipeline::v1 as pipeline;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Gateway;
use crate::extract::JsonBody;
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// Who takes the portfolio.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// One user takes everything; several share it round-robin. Not the user the portfolio
    /// leaves.
    pub to_users: Vec<String>,
    /// Report what would move without moving anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// What one receiving user got.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferShare {
    pub user: String,
    pub contacts: i64,
    pub companies: i64,
    pub leads: i64,
    pub deals: i64,
    pub tasks: i64,
}

/// What moved, per kind of record.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferResponse {
    pub contacts: i64,
    pub companies: i64,
    /// Leads not yet converted.
    pub leads: i64,
    /// Open deals (closed deals keep the owner who closed them).
    pub deals: i64,
    /// Open tasks.
    pub tasks: i64,
    pub shares: Vec<TransferShare>,
    pub dry_run: bool,
}

/// Transfers a user's portfolio: contacts and companies (contact service), leads, open deals
/// and open tasks (pipeline service); managers and admins. Each service moves in resumable
/// batches, so if the call fails midway, calling it again moves the rest and reports it.
#[utoipa::path(post, path = "/v1/users/{id}:transferPortfolio", tag = "users", params(("id" = String, Path)),
    request_body = TransferRequest,
    responses((status = 200, body = TransferResponse), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn transfer_portfolio() {}

/// Custom methods on a user (`POST /v1/users/{id}:verb`).
pub async fn user_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    JsonBody(body): JsonBody<TransferRequest>,
) -> Result<Response, Problem> {
    let Some((user, "transferPortfolio")) = id_and_verb.split_once(':') else {
        return Err(Problem(crm_platform::ApiError::new(
            crm_platform::ErrorCode::NotFound,
            "ROUTE_NOT_FOUND",
            "no such method; see /openapi.json",
        )));
    };
    let contacts = gw
        .contacts()
        .reassign_owner(call.request(
            contact::ReassignOwnerRequest {
                from_user: user.to_owned(),
                to_users: body.to_users.clone(),
                dry_run: body.dry_run,
            },
            gw.deadline,
        ))
        .await?
        .into_inner();
    let records = gw
        .pipelines()
        .reassign_owner(call.request(
            pipeline::ReassignOwnerRequest {
                from_user: user.to_owned(),
                to_users: body.to_users.clone(),
                dry_run: body.dry_run,
            },
            gw.deadline,
        ))
        .await?
        .into_inner();
    let shares = body
        .to_users
        .iter()
        .map(|user| {
            let c = contacts.shares.iter().find(|s| &s.user == user);
            let p = records.shares.iter().find(|s| &s.user == user);
            TransferShare {
                user: user.clone(),
                contacts: c.map_or(0, |s| s.contacts),
                companies: c.map_or(0, |s| s.companies),
                leads: p.map_or(0, |s| s.leads),
                deals: p.map_or(0, |s| s.deals),
                tasks: p.map_or(0, |s| s.tasks),
            }
        })
        .collect();
    Ok(axum::Json(TransferResponse {
        contacts: contacts.contacts,
        companies: contacts.companies,
        leads: records.leads,
        deals: records.deals,
        tasks: records.tasks,
        shares,
        dry_run: body.dry_run,
    })
    .into_response())
}
