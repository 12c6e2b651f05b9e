//! The REST API of every gRPC method with a `google.api.http` rule, transcoded through the
//! descriptors (gRPC transcoding, AIP-127): path variables, query parameters and the body
//! become the request message; the response message (or its `response_body` field) comes back
//! as proto3 JSON. Conventions on top of the rules:
//!
//! - `If-Match` sets the request's (or the body resource's) `etag`; `Idempotency-Key` sets
//!   `request_id`.
//! - A PATCH without `updateMask` changes the fields present in the body.
//! - A POST to a collection that takes an idempotency key creates: 201 with `Location`; a
//!   DELETE with an empty response is a 204; every resource returned carries its `ETag`.
//! - A created resource with likely duplicates gets a `Link: <...:findDuplicates?...>;
//!   rel="duplicates"` header.

pub mod check;
mod raw;
pub mod rules;
pub mod template;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use crm_platform::error::Violations;
use crm_platform::{ApiError, ErrorCode};
use crm_proto::prost_reflect::{Kind, MessageDescriptor};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use self::rules::Binding;
use crate::Gateway;
use crate::extract::{OptionalJson, in_client_words};
use crate::problem::Problem;
use crate::upstream::Call;

/// The bindings of the suite's descriptors, read once.
static BINDINGS: LazyLock<Result<Vec<Binding>, String>> =
    LazyLock::new(|| rules::bindings(crm_proto::json::descriptors()?));

/// Every REST binding of the suite.
pub fn bindings() -> Result<&'static [Binding], String> {
    BINDINGS.as_deref().map_err(Clone::clone)
}

/// The routes of every binding. Bindings whose verb follows a wildcard share their axum route
/// with the resource (`/v1/contacts/{id}` serves `GET` and `POST ...:erase`), so each route
/// dispatches on the method and the verb itself: a method the path does not take is a 405
/// with the path's own `Allow`.
pub fn routes() -> Result<Router<Gateway>, String> {
    let mut by_route: BTreeMap<String, Vec<&'static Binding>> = BTreeMap::new();
    for binding in bindings()? {
        by_route.entry(binding.template.route()).or_default().push(binding);
    }
    let mut router = Router::new();
    for (route, candidates) in by_route {
        let candidates: Arc<[&'static Binding]> = candidates.into();
        router = router.route(
            &route,
            any(
                move |State(gw): State<Gateway>, call: Call, values: Option<Path<Vec<String>>>, request: Request| {
                    let candidates = Arc::clone(&candidates);
                    let values = values.map(|Path(values)| values).unwrap_or_default();
                    async move { dispatch(gw, call, &candidates, values, request).await }
                },
            ),
        );
    }
    Ok(router)
}

fn no_route() -> Problem {
    Problem(ApiError::new(
        ErrorCode::NotFound,
        "ROUTE_NOT_FOUND",
        "no such method; see /openapi.json",
    ))
}

/// Picks the binding of the request's method and verb (the last parameter carries a verb
/// when the route has verb bindings after a wildcard).
async fn dispatch(
    gw: Gateway,
    call: Call,
    candidates: &[&'static Binding],
    values: Vec<String>,
    request: Request,
) -> Result<Response, Problem> {
    let verb_routes = candidates.iter().any(|b| b.template.verb_in_parameter());
    let (verb, values) = if verb_routes {
        let (verb, stripped) = template::Template::split_verb(&values);
        (
            verb.map(str::to_owned),
            stripped.into_iter().map(str::to_owned).collect(),
        )
    } else {
        (None, values)
    };
    let on_path: Vec<&'static Binding> = candidates
        .iter()
        .filter(|b| {
            if b.template.verb_in_parameter() {
                b.template.verb == verb
            } else {
                verb.is_none()
            }
        })
        .copied()
        .collect();
    if on_path.is_empty() {
        return Err(no_route());
    }
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    if let Some(binding) = on_path.iter().find(|b| b.http == method) {
        return transcode(gw, call, binding, values, request).await;
    }
    let mut allowed: Vec<&str> = on_path.iter().map(|b| b.http.as_str()).collect();
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.sort_unstable();
    allowed.dedup();
    let allow = HeaderValue::from_str(&allowed.join(", ")).map_err(|e| Problem(ApiError::internal(&e)))?;
    // (OPTIONS never gets here: the CORS layer answers it.)
    let mut response = Problem(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "METHOD_NOT_ALLOWED",
        format!("this path takes {}", allowed.join(", ")),
    ))
    .into_response();
    response.headers_mut().insert(http::header::ALLOW, allow);
    Ok(response)
}

async fn transcode(
    gw: Gateway,
    call: Call,
    binding: &Binding,
    values: Vec<String>,
    request: Request,
) -> Result<Response, Problem> {
    let headers = request.headers().clone();
    let query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map_err(|err| Problem(ApiError::invalid_field("query", in_client_words(&err.body_text()))))?
        .0;
    let body = match binding.body {
        Some(_) => OptionalJson::<Value>::from_request(request, &()).await?.0,
        None => None,
    };
    // A body that is one field of the request (the resource created or changed) is required,
    // as the OpenAPI document states: without it there is nothing to create or change.
    if body.is_none() && binding.body.as_deref().is_some_and(|field| field != "*") {
        return Err(Problem(ApiError::invalid_field("body", "is required: a JSON object")));
    }
    let input = binding.method.input();
    let mut violations = Violations::new("");
    let mut message = query_fields(&mut violations, binding, &input, query);
    if let Some(field) = &binding.body {
        let mut body = body.unwrap_or_else(|| Value::Object(Map::new()));
        if field == "*" {
            check::check_message(&mut violations, "", &mut body, &input);
            if let Value::Object(fields) = body {
                message.extend(fields);
            }
        } else {
            if let Some(Kind::Message(resource)) = input.get_field_by_name(field).map(|f| f.kind()) {
                check::check_message(&mut violations, &format!("{field}."), &mut body, &resource);
                // An empty updateMask is no mask (AIP-134): the body's fields are the mask.
                if binding.http == Method::PATCH
                    && binding.has_field("update_mask")
                    && message.get("updateMask").is_none_or(|mask| mask == "")
                {
                    message.insert("updateMask".into(), Value::String(present_fields(&body, &resource)));
                }
            }
            message.insert(json_name(&input, field), body);
        }
    }
    apply_headers(&mut violations, &mut message, binding, &headers);
    violations.finish()?;
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    for (field, value) in binding.template.bind(&values) {
        set_path(&mut message, &input, &field, Value::String(value));
    }
    let message = Value::Object(message);
    let encoded = crm_proto::json::json_to_encoded(&message, input.full_name())
        .map_err(|reason| Problem(ApiError::invalid_field("body", in_client_words(&reason))))?;
    let channel = gw
        .channel_for(binding.method.parent_service().full_name())
        .ok_or_else(no_route)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Problem(ApiError::unavailable(format!("the service is not reachable: {e}"))))?;
    let path = http::uri::PathAndQuery::try_from(binding.grpc_path()).map_err(|e| Problem(ApiError::internal(&e)))?;
    let response = grpc
        .unary(call.request(encoded, gw.deadline), path, raw::RawCodec)
        .await?
        .into_inner();
    respond(binding, &response)
}

/// The request fields given as query parameters (`a.b=1`, either spelling; a repeated field
/// by repeating the parameter), typed by their fields and then checked like a body. Fields the
/// path or the body set are refused here.
fn query_fields(
    v: &mut Violations,
    binding: &Binding,
    input: &MessageDescriptor,
    query: Vec<(String, String)>,
) -> Map<String, Value> {
    let mut fields = Map::new();
    for (key, raw) in query {
        let Some((field, path)) = rules::json_path(input, &key) else {
            v.add(&key, format!("is not a parameter of {}", input.name()));
            continue;
        };
        let top = path.first().map(String::as_str).unwrap_or_default();
        let bound_by_path = binding
            .path_fields()
            .any(|f| rules::json_path(input, f).is_some_and(|(_, p)| p.first().map(String::as_str) == Some(top)));
        let bound_by_body = match binding.body.as_deref() {
            Some("*") => true,
            Some(body) => json_name(input, body) == top,
            None => false,
        };
        if bound_by_path || bound_by_body {
            v.add(&key, "is set by the path or the body, not the query");
            continue;
        }
        let value = match field.kind() {
            Kind::Bool => match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(raw),
            },
            Kind::Double | Kind::Float => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::String(raw), Value::Number),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => raw
                .trim()
                .parse::<i64>()
                .map_or(Value::String(raw), |n| Value::Number(n.into())),
            Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => Value::String(mask_paths(&raw)),
            _ => Value::String(raw),
        };
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
        let parent = nested(&mut fields, &parents);
        if field.is_list() {
            match parent.entry(last.clone()).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(value),
                _ => v.add(&key, "is given twice"),
            }
        } else if parent.contains_key(last) {
            v.add(&key, "is given twice");
        } else {
            parent.insert(last.clone(), value);
        }
    }
    let mut object = Value::Object(fields);
    check::check_message(v, "", &mut object, input);
    match object {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

/// An update mask as a client writes it (`given_name, familyName`) in its JSON form
/// (`givenName,familyName`).
fn mask_paths(raw: &str) -> String {
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(crate::problem::json_field_path)
        .collect::<Vec<_>>()
        .join(",")
}

/// The object at `path` inside `root`, made where missing.
fn nested<'a>(root: &'a mut Map<String, Value>, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut current = root;
    for segment in path {
        let entry = current
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            unreachable!("made an object above")
        };
        current = next;
    }
    current
}

/// Sets a dotted proto field path (`contact.name`) in a JSON request.
fn set_path(message: &mut Map<String, Value>, input: &MessageDescriptor, field: &str, value: Value) {
    let mut names = Vec::new();
    let mut descriptor = input.clone();
    for segment in field.split('.') {
        let Some(f) = descriptor.get_field_by_name(segment) else {
            return;
        };
        names.push(f.json_name().to_owned());
        if let Kind::Message(inner) = f.kind() {
            descriptor = inner;
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return;
    };
    let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
    nested(message, &parents).insert(last.clone(), value);
}

/// The JSON name of a top-level field.
fn json_name(input: &MessageDescriptor, field: &str) -> String {
    input
        .get_field_by_name(field)
        .map_or_else(|| field.to_owned(), |f| f.json_name().to_owned())
}

/// The update mask of a PATCH without one: the fields present in the body. A message whose
/// fields are all messages (consent: one per channel) is a group, and the mask names the
/// members given, so the others stay as they are.
fn present_fields(body: &Value, resource: &MessageDescriptor) -> String {
    let Some(fields) = body.as_object() else {
        return String::new();
    };
    let mut paths = Vec::new();
    for (key, value) in fields.iter().filter(|(k, _)| *k != "name" && *k != "etag") {
        let group = resource
            .get_field_by_json_name(key)
            .and_then(|field| match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => Some(m),
                _ => None,
            })
            .filter(|m| {
                !m.full_name().starts_with("google.protobuf.")
                    && m.fields().len() > 0
                    && m.fields()
                        .all(|f| matches!(f.kind(), Kind::Message(_)) && !f.is_list() && !f.is_map())
            });
        match (group, value.as_object()) {
            (Some(_), Some(members)) if !members.is_empty() => {
                paths.extend(members.keys().map(|member| format!("{key}.{member}")));
            }
            _ => paths.push(key.clone()),
        }
    }
    mask_paths(&paths.join(","))
}

/// `If-Match` becomes the etag the request is conditional on; `Idempotency-Key` the request
/// id.
/// Takes `If-Match` and `Idempotency-Key` into the request. An idempotency key, in the header
/// or in `requestId`, is at most 128 characters and no control character; the header, when
/// given, is the key (HTTP headers are visible ASCII, a header that is not is refused).
fn apply_headers(v: &mut Violations, message: &mut Map<String, Value>, binding: &Binding, headers: &HeaderMap) {
    if let Some(Value::String(key)) = message.get("requestId")
        && !request_id_valid(key)
    {
        v.add("requestId", REQUEST_ID_RULE);
    }
    if let Some(raw) = headers.get("idempotency-key")
        && binding.has_field("request_id")
        && !raw.to_str().is_ok_and(request_id_valid)
    {
        v.add("Idempotency-Key", REQUEST_ID_RULE);
    }
    let header = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if let Some(etag) = header(http::header::IF_MATCH).filter(|v| v != "*") {
        match binding.if_match_target() {
            Some(rules::IfMatch::Resource(resource)) => {
                nested(message, &[resource.as_str()]).insert("etag".into(), Value::String(etag));
            }
            Some(rules::IfMatch::Request) => {
                message.insert("etag".into(), Value::String(etag));
            }
            None => {}
        }
    }
    if binding.has_field("request_id")
        && let Some(key) = header(http::header::HeaderName::from_static("idempotency-key"))
    {
        message.insert("requestId".into(), Value::String(key));
    }
}

const REQUEST_ID_RULE: &str = "must be at most 128 characters, none of them a control character";

fn request_id_valid(key: &str) -> bool {
    key.chars().count() <= crm_platform::idempotency::MAX_REQUEST_ID && !key.chars().any(char::is_control)
}

/// The response as proto3 JSON: the `response_body` field or the whole message, with the
/// resource's `ETag`, a created resource's `Location` and its likely duplicates' `Link`.
fn respond(binding: &Binding, encoded: &[u8]) -> Result<Response, Problem> {
    let output = binding.method.output();
    let status = binding.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut json =
        crm_proto::json::encoded_to_json(encoded, output.full_name()).map_err(|e| Problem(ApiError::internal(&e)))?;
    let has_duplicates = json
        .get("duplicates")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty());
    let body = match &binding.response_body {
        Some(field) => json
            .as_object_mut()
            .and_then(|fields| fields.remove(&json_name(&output, field)))
            .unwrap_or_else(|| Value::Object(Map::new())),
        None => json,
    };
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let etag = body.get("etag").and_then(Value::as_str).map(str::to_owned);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Some(value) = etag.and_then(|etag| HeaderValue::from_str(&format!("\"{etag}\"")).ok()) {
        headers.insert(http::header::ETAG, value);
    }
    if status == StatusCode::CREATED
        && let Ok(value) = HeaderValue::from_str(&format!("/v1/{name}"))
    {
        headers.insert(http::header::LOCATION, value);
    }
    if let (true, Some(field), Some((collection, _))) = (has_duplicates, &binding.response_body, name.split_once('/')) {
        let link = format!(
            "</v1/{collection}:findDuplicates?{field}={}>; rel=\"duplicates\"",
            name.replace('/', "%2F")
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(http::header::LINK, value);
        }
    }
    Ok(response)
}
