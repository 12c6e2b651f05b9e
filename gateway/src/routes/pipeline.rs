//! The pipeline service's REST routes: `/v1/pipelines`, `/v1/leads`, `/v1/deals`,
//! `/v1/products`, `/v1/tasks`, `/v1/forecasts`, `/v1/quotas`. Bodies and responses are the
//! crm.pipeline.v1 messages in proto3 JSON (see /openapi.json for each route's message).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};

use super::transcode::{Rpc, object, query_fields};
use super::{idempotency_key, if_match};
use crate::Gateway;
use crate::extract::JsonBody;
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

fn not_found() -> Problem {
    Problem(crm_platform::ApiError::new(
        crm_platform::ErrorCode::NotFound,
        "ROUTE_NOT_FOUND",
        "no such method; see /openapi.json",
    ))
}

/// `givenName` stays, `given_name` becomes `givenName`: FieldMask's JSON form is lowerCamel.
fn camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.trim().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The request of a PATCH: the resource (named, with the `If-Match` etag) and the update mask
/// (`updateMask` or the fields in the body).
fn update_request(
    field: &str,
    name: String,
    body: Value,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
) -> Result<Value, Problem> {
    let mut resource = object(body)?;
    let mask = match query.get("updateMask") {
        Some(explicit) => explicit
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(camel)
            .collect::<Vec<_>>(),
        None => resource
            .keys()
            .filter(|k| *k != "name" && *k != "etag")
            .cloned()
            .collect(),
    };
    resource.insert("name".into(), Value::String(name));
    let etag = if_match(headers);
    if !etag.is_empty() {
        resource.insert("etag".into(), Value::String(etag));
    }
    Ok(json!({ field: resource, "updateMask": mask.join(",") }))
}

/// The verb and request of a custom method (`POST /v1/{collection}/{id}:verb`): the body's
/// fields, the resource name and the `If-Match` etag.
async fn method_request<'a>(
    collection: &str,
    id_and_verb: &'a str,
    request: axum::extract::Request,
    headers: &HeaderMap,
) -> Result<(&'a str, Value), Problem> {
    let (id, verb) = id_and_verb.split_once(':').ok_or_else(not_found)?;
    let mut fields = match optional_body(request).await? {
        Some(body) => object(body)?,
        None => serde_json::Map::new(),
    };
    fields.insert("name".into(), Value::String(format!("{collection}/{id}")));
    let etag = if_match(headers);
    if !etag.is_empty() {
        fields.insert("etag".into(), Value::String(etag));
    }
    Ok((verb, Value::Object(fields)))
}

/// A list request from the query string.
fn list_request(query: BTreeMap<String, String>) -> Value {
    Value::Object(query_fields(query))
}

/// A create request: the resource and the `Idempotency-Key`.
fn create_request(field: &str, body: Value, headers: &HeaderMap) -> Value {
    json!({ field: body, "requestId": idempotency_key(headers) })
}

/// Reads an optional JSON body of a custom method.
async fn optional_body(request: axum::extract::Request) -> Result<Option<Value>, Problem> {
    use axum::extract::FromRequest;
    let has_body = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|len| len != "0");
    if !has_body {
        return Ok(None);
    }
    let JsonBody(body) = JsonBody::<Value>::from_request(request, &()).await?;
    Ok(Some(body))
}

macro_rules! call {
    ($gw:expr, $call:expr, $client:ident, $method:ident, $rpc:expr, $json:expr) => {{
        let rpc = $rpc;
        let request = rpc.request($json)?;
        let response = $gw
            .$client()
            .$method($call.request(request, $gw.deadline))
            .await?
            .into_inner();
        rpc.respond(&response)
    }};
}

macro_rules! rpc {
    ($method:literal) => {
        Rpc::new(
            concat!("crm.pipeline.v1.", $method, "Request"),
            concat!("crm.pipeline.v1.", $method, "Response"),
        )
    };
}

/// Declares a List route: the request fields come from the query string.
macro_rules! list_route {
    ($(#[$meta:meta])* $name:ident => $client:ident.$method:ident($rpc:literal)) => {
        $(#[$meta])*
        pub async fn $name(
            State(gw): State<Gateway>,
            call: Call,
            Query(q): Query<BTreeMap<String, String>>,
        ) -> Result<Response, Problem> {
            call!(gw, call, $client, $method, rpc!($rpc), list_request(q))
        }
    };
}

/// Declares a Create route: the body is the resource, `Idempotency-Key` its request id.
macro_rules! create_route {
    ($(#[$meta:meta])* $name:ident => $client:ident.$method:ident($rpc:literal, $field:literal)) => {
        $(#[$meta])*
        pub async fn $name(
            State(gw): State<Gateway>,
            call: Call,
            headers: HeaderMap,
            JsonBody(body): JsonBody<Value>,
        ) -> Result<Response, Problem> {
            let rpc = rpc!($rpc).resource($field).created();
            call!(gw, call, $client, $method, rpc, create_request($field, body, &headers))
        }
    };
}

/// Declares a Get route of `/v1/{collection}/{id}`.
macro_rules! get_route {
    ($(#[$meta:meta])* $name:ident => $client:ident.$method:ident($rpc:literal, $field:literal, $collection:literal)) => {
        $(#[$meta])*
        pub async fn $name(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
            let json = json!({ "name": format!(concat!($collection, "/{}"), id) });
            call!(gw, call, $client, $method, rpc!($rpc).resource($field), json)
        }
    };
}

/// Declares an Update (PATCH) route of `/v1/{collection}/{id}`.
macro_rules! update_route {
    ($(#[$meta:meta])* $name:ident => $client:ident.$method:ident($rpc:literal, $field:literal, $collection:literal)) => {
        $(#[$meta])*
        pub async fn $name(
            State(gw): State<Gateway>,
            call: Call,
            Path(id): Path<String>,
            headers: HeaderMap,
            Query(q): Query<BTreeMap<String, String>>,
            JsonBody(body): JsonBody<Value>,
        ) -> Result<Response, Problem> {
            let name = format!(concat!($collection, "/{}"), id);
            let json = update_request($field, name, body, &headers, &q)?;
            call!(gw, call, $client, $method, rpc!($rpc).resource($field), json)
        }
    };
}

// ---- pipelines ----

list_route!(
/// Lists pipelines (`pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines",
    responses((status = 200, description = "ListPipelinesResponse"), (status = 400, body = ProblemBody)))]
list_pipelines => pipelines.list_pipelines("ListPipelines")
);

create_route!(
/// Creates a pipeline with its ordered stages (managers and admins).
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines", request_body(content = Object, description = "Pipeline"),
    responses((status = 201, description = "Pipeline"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
create_pipeline => pipelines.create_pipeline("CreatePipeline", "pipeline")
);

get_route!(
/// Returns one pipeline.
#[utoipa::path(get, path = "/v1/pipelines/{id}", tag = "pipelines", params(("id" = String, Path)),
    responses((status = 200, description = "Pipeline"), (status = 404, body = ProblemBody)))]
get_pipeline => pipelines.get_pipeline("GetPipeline", "pipeline", "pipelines")
);

update_route!(
/// Renames a pipeline or replaces its stage list (stages keep their ids; history is never
/// rewritten). `If-Match` carries the etag.
#[utoipa::path(patch, path = "/v1/pipelines/{id}", tag = "pipelines", params(("id" = String, Path)),
    request_body(content = Object, description = "Pipeline (the fields to change)"),
    responses((status = 200, description = "Pipeline"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
update_pipeline => pipelines.update_pipeline("UpdatePipeline", "pipeline", "pipelines")
);

/// The pipeline's open deals grouped by stage, with counts and totals (`dealsPerStage`,
/// `owner`).
#[utoipa::path(get, path = "/v1/pipelines/{id}/board", tag = "pipelines", params(("id" = String, Path)),
    responses((status = 200, description = "GetBoardResponse"), (status = 404, body = ProblemBody)))]
pub async fn board(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let mut fields = query_fields(q);
    fields.insert("pipeline".into(), Value::String(format!("pipelines/{id}")));
    call!(gw, call, pipelines, get_board, rpc!("GetBoard"), Value::Object(fields))
}

// ---- leads ----

list_route!(
/// Lists leads (`filter`: `owner = me`, `status = QUALIFIED`, `contact`, `company`; `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/leads", tag = "leads",
    responses((status = 200, description = "ListLeadsResponse"), (status = 400, body = ProblemBody)))]
list_leads => leads.list_leads("ListLeads")
);

create_route!(
/// Creates a lead (`Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/v1/leads", tag = "leads", request_body(content = Object, description = "Lead"),
    responses((status = 201, description = "Lead"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
create_lead => leads.create_lead("CreateLead", "lead")
);

get_route!(
/// Returns one lead.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path)),
    responses((status = 200, description = "Lead"), (status = 404, body = ProblemBody)))]
get_lead => leads.get_lead("GetLead", "lead", "leads")
);

update_route!(
/// Changes a lead (status NEW, WORKING or QUALIFIED; score; source; references).
#[utoipa::path(patch, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path)),
    request_body(content = Object, description = "Lead (the fields to change)"),
    responses((status = 200, description = "Lead"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
update_lead => leads.update_lead("UpdateLead", "lead", "leads")
);

/// Disqualifies a lead: body `{"reason": "..."}`.
#[utoipa::path(post, path = "/v1/leads/{id}:disqualify", tag = "leads", params(("id" = String, Path)),
    request_body(content = Object, description = "DisqualifyLeadRequest"),
    responses((status = 200, description = "Lead"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn disqualify_lead() {}

/// Converts a lead into a deal, once: body `{"deal": {"pipeline": "pipelines/..", ...}}`.
#[utoipa::path(post, path = "/v1/leads/{id}:convert", tag = "leads", params(("id" = String, Path)),
    request_body(content = Object, description = "ConvertLeadRequest"),
    responses((status = 200, description = "ConvertLeadResponse"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn convert_lead() {}

/// Custom methods on one lead (`POST /v1/leads/{id}:verb`).
pub async fn lead_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let (verb, json) = method_request("leads", &id_and_verb, request, &headers).await?;
    match verb {
        "disqualify" => call!(
            gw,
            call,
            leads,
            disqualify_lead,
            rpc!("DisqualifyLead").resource("lead"),
            json
        ),
        "convert" => call!(gw, call, leads, convert_lead, rpc!("ConvertLead"), json),
        _ => Err(not_found()),
    }
}

// ---- deals ----

list_route!(
/// Lists deals (`filter`: `pipeline`, `owner`, `status`, `contact`, `company`; `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/deals", tag = "deals",
    responses((status = 200, description = "ListDealsResponse"), (status = 400, body = ProblemBody)))]
list_deals => deals.list_deals("ListDeals")
);

create_route!(
/// Creates a deal in a pipeline's stage (its first open stage by default).
#[utoipa::path(post, path = "/v1/deals", tag = "deals", request_body(content = Object, description = "Deal"),
    responses((status = 201, description = "Deal"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
create_deal => deals.create_deal("CreateDeal", "deal")
);

get_route!(
/// Returns one deal.
#[utoipa::path(get, path = "/v1/deals/{id}", tag = "deals", params(("id" = String, Path)),
    responses((status = 200, description = "Deal"), (status = 404, body = ProblemBody)))]
get_deal => deals.get_deal("GetDeal", "deal", "deals")
);

update_route!(
/// Changes a deal's fields (not its stage: see `:move`).
#[utoipa::path(patch, path = "/v1/deals/{id}", tag = "deals", params(("id" = String, Path)),
    request_body(content = Object, description = "Deal (the fields to change)"),
    responses((status = 200, description = "Deal"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
update_deal => deals.update_deal("UpdateDeal", "deal", "deals")
);

/// Moves an open deal to another open stage: body `{"stage": "<stage id>"}`, `If-Match`.
#[utoipa::path(post, path = "/v1/deals/{id}:move", tag = "deals", params(("id" = String, Path)),
    request_body(content = Object, description = "MoveDealRequest"),
    responses((status = 200, description = "MoveDealResponse"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn move_deal() {}

/// Closes an open deal: body `{"outcome": "DEAL_STATUS_WON", "reason": ".."}`.
#[utoipa::path(post, path = "/v1/deals/{id}:close", tag = "deals", params(("id" = String, Path)),
    request_body(content = Object, description = "CloseDealRequest"),
    responses((status = 200, description = "CloseDealResponse"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn close_deal() {}

/// Reopens a closed deal: body `{"stage": "<stage id>"}` (optional).
#[utoipa::path(post, path = "/v1/deals/{id}:reopen", tag = "deals", params(("id" = String, Path)),
    request_body(content = Object, description = "ReopenDealRequest"),
    responses((status = 200, description = "ReopenDealResponse"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn reopen_deal() {}

/// Custom methods on one deal (`POST /v1/deals/{id}:verb`).
pub async fn deal_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let (verb, json) = method_request("deals", &id_and_verb, request, &headers).await?;
    match verb {
        "move" => call!(gw, call, deals, move_deal, rpc!("MoveDeal"), json),
        "close" => call!(gw, call, deals, close_deal, rpc!("CloseDeal"), json),
        "reopen" => call!(gw, call, deals, reopen_deal, rpc!("ReopenDeal"), json),
        _ => Err(not_found()),
    }
}

/// A deal's stage transitions, oldest first (`pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/deals/{id}/history", tag = "deals", params(("id" = String, Path)),
    responses((status = 200, description = "ListDealHistoryResponse"), (status = 404, body = ProblemBody)))]
pub async fn deal_history(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    let mut fields = query_fields(q);
    fields.insert("name".into(), Value::String(format!("deals/{id}")));
    call!(
        gw,
        call,
        deals,
        list_deal_history,
        rpc!("ListDealHistory"),
        Value::Object(fields)
    )
}

// ---- products ----

list_route!(
/// Lists products (`filter=active = true`, `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/products", tag = "products",
    responses((status = 200, description = "ListProductsResponse"), (status = 400, body = ProblemBody)))]
list_products => products.list_products("ListProducts")
);

create_route!(
/// Adds a product (managers and admins).
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body(content = Object, description = "Product"),
    responses((status = 201, description = "Product"), (status = 400, body = ProblemBody), (status = 409, body = ProblemBody)))]
create_product => products.create_product("CreateProduct", "product")
);

get_route!(
/// Returns one product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    responses((status = 200, description = "Product"), (status = 404, body = ProblemBody)))]
get_product => products.get_product("GetProduct", "product", "products")
);

update_route!(
/// Changes a product; deals keep the prices they were written with.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    request_body(content = Object, description = "Product (the fields to change)"),
    responses((status = 200, description = "Product"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
update_product => products.update_product("UpdateProduct", "product", "products")
);

// ---- tasks ----

list_route!(
/// Lists tasks, earliest due first (`filter`: `assignee = me`, `status = OPEN`, `overdue = true`).
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, description = "ListTasksResponse"), (status = 400, body = ProblemBody)))]
list_tasks => tasks.list_tasks("ListTasks")
);

create_route!(
/// Creates a task or reminder.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body(content = Object, description = "Task"),
    responses((status = 201, description = "Task"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
create_task => tasks.create_task("CreateTask", "task")
);

get_route!(
/// Returns one task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "Task"), (status = 404, body = ProblemBody)))]
get_task => tasks.get_task("GetTask", "task", "tasks")
);

update_route!(
/// Changes a task.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    request_body(content = Object, description = "Task (the fields to change)"),
    responses((status = 200, description = "Task"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
update_task => tasks.update_task("UpdateTask", "task", "tasks")
);

/// Completes an open task.
#[utoipa::path(post, path = "/v1/tasks/{id}:complete", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "Task"), (status = 412, body = ProblemBody)))]
pub async fn complete_task() {}

/// Reopens a completed task.
#[utoipa::path(post, path = "/v1/tasks/{id}:reopen", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "Task"), (status = 412, body = ProblemBody)))]
pub async fn reopen_task() {}

/// Custom methods on one task (`POST /v1/tasks/{id}:verb`).
pub async fn task_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    let (verb, json) = method_request("tasks", &id_and_verb, request, &headers).await?;
    match verb {
        "complete" => call!(
            gw,
            call,
            tasks,
            complete_task,
            rpc!("CompleteTask").resource("task"),
            json
        ),
        "reopen" => call!(gw, call, tasks, reopen_task, rpc!("ReopenTask").resource("task"), json),
        _ => Err(not_found()),
    }
}

// ---- forecasts and quotas ----

list_route!(
/// Lists forecast submissions (`filter`: `owner`, `period`).
#[utoipa::path(get, path = "/v1/forecasts", tag = "forecasts",
    responses((status = 200, description = "ListForecastsResponse"), (status = 400, body = ProblemBody)))]
list_forecasts => forecasts.list_forecasts("ListForecasts")
);

create_route!(
/// Submits a forecast (immutable once recorded).
#[utoipa::path(post, path = "/v1/forecasts", tag = "forecasts", request_body(content = Object, description = "Forecast"),
    responses((status = 201, description = "Forecast"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
submit_forecast => forecasts.submit_forecast("SubmitForecast", "forecast")
);

list_route!(
/// Lists quotas (`filter`: `owner`, `period`).
#[utoipa::path(get, path = "/v1/quotas", tag = "forecasts",
    responses((status = 200, description = "ListQuotasResponse"), (status = 400, body = ProblemBody)))]
list_quotas => forecasts.list_quotas("ListQuotas")
);

/// Sets a user's quota for a period (managers and admins).
#[utoipa::path(post, path = "/v1/quotas", tag = "forecasts", request_body(content = Object, description = "Quota"),
    responses((status = 200, description = "Quota"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn set_quota(
    State(gw): State<Gateway>,
    call: Call,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        forecasts,
        set_quota,
        rpc!("SetQuota").resource("quota"),
        json!({ "quota": body })
    )
}
