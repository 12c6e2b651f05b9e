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

/// The request of a custom method: the body's fields, the resource name and the etag.
fn method_request(name: String, body: Option<Value>, headers: &HeaderMap) -> Result<Value, Problem> {
    let mut fields = match body {
        Some(body) => object(body)?,
        None => serde_json::Map::new(),
    };
    fields.insert("name".into(), Value::String(name));
    let etag = if_match(headers);
    if !etag.is_empty() {
        fields.insert("etag".into(), Value::String(etag));
    }
    Ok(Value::Object(fields))
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

// ---- pipelines ----

/// Lists pipelines (`pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines",
    responses((status = 200, description = "ListPipelinesResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_pipelines(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        pipelines,
        list_pipelines,
        rpc!("ListPipelines"),
        list_request(q)
    )
}

/// Creates a pipeline with its ordered stages (managers and admins).
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines", request_body(content = Object, description = "Pipeline"),
    responses((status = 201, description = "Pipeline"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn create_pipeline(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("CreatePipeline").resource("pipeline").created();
    call!(
        gw,
        call,
        pipelines,
        create_pipeline,
        rpc,
        create_request("pipeline", body, &headers)
    )
}

/// Returns one pipeline.
#[utoipa::path(get, path = "/v1/pipelines/{id}", tag = "pipelines", params(("id" = String, Path)),
    responses((status = 200, description = "Pipeline"), (status = 404, body = ProblemBody)))]
pub async fn get_pipeline(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    let rpc = rpc!("GetPipeline").resource("pipeline");
    call!(
        gw,
        call,
        pipelines,
        get_pipeline,
        rpc,
        json!({ "name": format!("pipelines/{id}") })
    )
}

/// Renames a pipeline or replaces its stage list (stages keep their ids; history is never
/// rewritten). `If-Match` carries the etag.
#[utoipa::path(patch, path = "/v1/pipelines/{id}", tag = "pipelines", params(("id" = String, Path)),
    request_body(content = Object, description = "Pipeline (the fields to change)"),
    responses((status = 200, description = "Pipeline"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update_pipeline(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let json = update_request("pipeline", format!("pipelines/{id}"), body, &headers, &q)?;
    call!(
        gw,
        call,
        pipelines,
        update_pipeline,
        rpc!("UpdatePipeline").resource("pipeline"),
        json
    )
}

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

/// Lists leads (`filter`: `owner = me`, `status = QUALIFIED`, `contact`, `company`; `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/leads", tag = "leads",
    responses((status = 200, description = "ListLeadsResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_leads(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(gw, call, leads, list_leads, rpc!("ListLeads"), list_request(q))
}

/// Creates a lead (`Idempotency-Key` makes retries safe).
#[utoipa::path(post, path = "/v1/leads", tag = "leads", request_body(content = Object, description = "Lead"),
    responses((status = 201, description = "Lead"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn create_lead(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("CreateLead").resource("lead").created();
    call!(
        gw,
        call,
        leads,
        create_lead,
        rpc,
        create_request("lead", body, &headers)
    )
}

/// Returns one lead.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path)),
    responses((status = 200, description = "Lead"), (status = 404, body = ProblemBody)))]
pub async fn get_lead(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        leads,
        get_lead,
        rpc!("GetLead").resource("lead"),
        json!({ "name": format!("leads/{id}") })
    )
}

/// Changes a lead (status NEW, WORKING or QUALIFIED; score; source; references).
#[utoipa::path(patch, path = "/v1/leads/{id}", tag = "leads", params(("id" = String, Path)),
    request_body(content = Object, description = "Lead (the fields to change)"),
    responses((status = 200, description = "Lead"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update_lead(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let json = update_request("lead", format!("leads/{id}"), body, &headers, &q)?;
    call!(gw, call, leads, update_lead, rpc!("UpdateLead").resource("lead"), json)
}

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
    let (id, verb) = id_and_verb.split_once(':').ok_or_else(not_found)?;
    let json = method_request(format!("leads/{id}"), optional_body(request).await?, &headers)?;
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

/// Lists deals (`filter`: `pipeline`, `owner`, `status`, `contact`, `company`; `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/deals", tag = "deals",
    responses((status = 200, description = "ListDealsResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_deals(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(gw, call, deals, list_deals, rpc!("ListDeals"), list_request(q))
}

/// Creates a deal in a pipeline's stage (its first open stage by default).
#[utoipa::path(post, path = "/v1/deals", tag = "deals", request_body(content = Object, description = "Deal"),
    responses((status = 201, description = "Deal"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn create_deal(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("CreateDeal").resource("deal").created();
    call!(
        gw,
        call,
        deals,
        create_deal,
        rpc,
        create_request("deal", body, &headers)
    )
}

/// Returns one deal.
#[utoipa::path(get, path = "/v1/deals/{id}", tag = "deals", params(("id" = String, Path)),
    responses((status = 200, description = "Deal"), (status = 404, body = ProblemBody)))]
pub async fn get_deal(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        deals,
        get_deal,
        rpc!("GetDeal").resource("deal"),
        json!({ "name": format!("deals/{id}") })
    )
}

/// Changes a deal's fields (not its stage: see `:move`).
#[utoipa::path(patch, path = "/v1/deals/{id}", tag = "deals", params(("id" = String, Path)),
    request_body(content = Object, description = "Deal (the fields to change)"),
    responses((status = 200, description = "Deal"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update_deal(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let json = update_request("deal", format!("deals/{id}"), body, &headers, &q)?;
    call!(gw, call, deals, update_deal, rpc!("UpdateDeal").resource("deal"), json)
}

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
    let (id, verb) = id_and_verb.split_once(':').ok_or_else(not_found)?;
    let json = method_request(format!("deals/{id}"), optional_body(request).await?, &headers)?;
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

/// Lists products (`filter=active = true`, `pageSize`, `pageToken`).
#[utoipa::path(get, path = "/v1/products", tag = "products",
    responses((status = 200, description = "ListProductsResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_products(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(gw, call, products, list_products, rpc!("ListProducts"), list_request(q))
}

/// Adds a product (managers and admins).
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body(content = Object, description = "Product"),
    responses((status = 201, description = "Product"), (status = 400, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub async fn create_product(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("CreateProduct").resource("product").created();
    call!(
        gw,
        call,
        products,
        create_product,
        rpc,
        create_request("product", body, &headers)
    )
}

/// Returns one product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    responses((status = 200, description = "Product"), (status = 404, body = ProblemBody)))]
pub async fn get_product(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    let rpc = rpc!("GetProduct").resource("product");
    call!(
        gw,
        call,
        products,
        get_product,
        rpc,
        json!({ "name": format!("products/{id}") })
    )
}

/// Changes a product; deals keep the prices they were written with.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", params(("id" = String, Path)),
    request_body(content = Object, description = "Product (the fields to change)"),
    responses((status = 200, description = "Product"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update_product(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let json = update_request("product", format!("products/{id}"), body, &headers, &q)?;
    call!(
        gw,
        call,
        products,
        update_product,
        rpc!("UpdateProduct").resource("product"),
        json
    )
}

// ---- tasks ----

/// Lists tasks, earliest due first (`filter`: `assignee = me`, `status = OPEN`, `overdue = true`).
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, description = "ListTasksResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_tasks(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(gw, call, tasks, list_tasks, rpc!("ListTasks"), list_request(q))
}

/// Creates a task or reminder.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body(content = Object, description = "Task"),
    responses((status = 201, description = "Task"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn create_task(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("CreateTask").resource("task").created();
    call!(
        gw,
        call,
        tasks,
        create_task,
        rpc,
        create_request("task", body, &headers)
    )
}

/// Returns one task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "Task"), (status = 404, body = ProblemBody)))]
pub async fn get_task(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        tasks,
        get_task,
        rpc!("GetTask").resource("task"),
        json!({ "name": format!("tasks/{id}") })
    )
}

/// Changes a task.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    request_body(content = Object, description = "Task (the fields to change)"),
    responses((status = 200, description = "Task"), (status = 400, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update_task(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let json = update_request("task", format!("tasks/{id}"), body, &headers, &q)?;
    call!(gw, call, tasks, update_task, rpc!("UpdateTask").resource("task"), json)
}

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
    let (id, verb) = id_and_verb.split_once(':').ok_or_else(not_found)?;
    let json = method_request(format!("tasks/{id}"), optional_body(request).await?, &headers)?;
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

/// Lists forecast submissions (`filter`: `owner`, `period`).
#[utoipa::path(get, path = "/v1/forecasts", tag = "forecasts",
    responses((status = 200, description = "ListForecastsResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_forecasts(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(
        gw,
        call,
        forecasts,
        list_forecasts,
        rpc!("ListForecasts"),
        list_request(q)
    )
}

/// Submits a forecast (immutable once recorded).
#[utoipa::path(post, path = "/v1/forecasts", tag = "forecasts", request_body(content = Object, description = "Forecast"),
    responses((status = 201, description = "Forecast"), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn submit_forecast(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, Problem> {
    let rpc = rpc!("SubmitForecast").resource("forecast").created();
    call!(
        gw,
        call,
        forecasts,
        submit_forecast,
        rpc,
        create_request("forecast", body, &headers)
    )
}

/// Lists quotas (`filter`: `owner`, `period`).
#[utoipa::path(get, path = "/v1/quotas", tag = "forecasts",
    responses((status = 200, description = "ListQuotasResponse"), (status = 400, body = ProblemBody)))]
pub async fn list_quotas(
    State(gw): State<Gateway>,
    call: Call,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Problem> {
    call!(gw, call, forecasts, list_quotas, rpc!("ListQuotas"), list_request(q))
}

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
