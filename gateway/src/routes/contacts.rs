//! `/v1/contacts`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use crm_proto::crm::contact::v1 as pb;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;

use super::*;
use crate::Gateway;
use crate::dto::{
    Contact, ContactPage, DuplicateGroup, DuplicateGroupPage, HistoryPage, MergeRequest, ReassignOwnerRequest,
    ReassignOwnerResponse,
};
use crate::extract::{JsonBody, QueryParams};
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// Search parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words that must all match (as prefixes) a name, email, phone or company.
    pub query: String,
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

/// Parameters of a create.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// Create even when another contact has one of the same email addresses (otherwise 409).
    pub allow_duplicate: Option<bool>,
}

/// Duplicate search parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DuplicateParams {
    /// Only the candidates of this contact (`contacts/{id}`).
    pub contact: Option<String>,
    /// Leave out groups scoring below this (0 to 1, default 0.5).
    pub min_score: Option<f64>,
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

/// Lists contacts.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ListParams),
    responses((status = 200, body = ContactPage), (status = 400, body = ProblemBody), (status = 401, body = ProblemBody)))]
pub async fn list(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<ListParams>,
) -> Result<Response, Problem> {
    let request = pb::ListContactsRequest {
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
        filter: q.filter.unwrap_or_default(),
        order_by: q.order_by.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .list_contacts(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(ContactPage {
        contacts: response.contacts.iter().map(Contact::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// Creates a contact. A retry with the same `Idempotency-Key` returns the first result. An
/// email address another contact has is refused (409, DUPLICATE_EMAIL) unless
/// `allowDuplicate=true`; when likely duplicates exist, a `Link` header with
/// `rel="duplicates"` points to them.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts", request_body = Contact,
    params(CreateParams, ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = Contact, headers(("ETag" = String), ("Location" = String))),
        (status = 400, body = ProblemBody), (status = 403, body = ProblemBody), (status = 413, body = ProblemBody)))]
pub async fn create(
    State(gw): State<Gateway>,
    call: Call,
    headers: HeaderMap,
    QueryParams(params): QueryParams<CreateParams>,
    JsonBody(body): JsonBody<Contact>,
) -> Result<Response, Problem> {
    let request = pb::CreateContactRequest {
        contact: Some(body.to_proto("contact.")?),
        request_id: idempotency_key(&headers),
        allow_duplicate: params.allow_duplicate.unwrap_or(false),
    };
    let created = gw
        .contacts()
        .create_contact(call.request(request, gw.deadline))
        .await?
        .into_inner();
    let contact = created.contact.unwrap_or_default();
    let mut response = with_etag(
        StatusCode::CREATED,
        &contact.etag,
        Some(contact.name.clone()),
        Contact::from(&contact),
    );
    if !created.duplicates.is_empty() {
        link_duplicates(&mut response, "contacts", "contact", &contact.name);
    }
    Ok(response)
}

/// Returns one contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", params(("id" = String, Path)),
    responses((status = 200, body = Contact, headers(("ETag" = String))), (status = 404, body = ProblemBody)))]
pub async fn get(State(gw): State<Gateway>, call: Call, Path(id): Path<String>) -> Result<Response, Problem> {
    let request = pb::GetContactRequest {
        name: format!("contacts/{id}"),
    };
    let contact = gw
        .contacts()
        .get_contact(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .contact
        .unwrap_or_default();
    Ok(with_etag(StatusCode::OK, &contact.etag, None, Contact::from(&contact)))
}

/// Changes the fields present in the body (or named by `updateMask`). `If-Match` makes the
/// change conditional on the etag.
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts", request_body = Contact,
    params(("id" = String, Path), UpdateParams, ("If-Match" = Option<String>, Header, description = "etag the change is based on")),
    responses((status = 200, body = Contact), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn update(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UpdateParams>,
    JsonBody(body): JsonBody<Contact>,
) -> Result<Response, Problem> {
    let mut contact = body.to_proto("contact.")?;
    contact.name = format!("contacts/{id}");
    let header_etag = if_match(&headers);
    if !header_etag.is_empty() {
        contact.etag = header_etag;
    }
    let request = pb::UpdateContactRequest {
        contact: Some(contact),
        update_mask: Some(mask(&params, body.present_paths())),
    };
    let updated = gw
        .contacts()
        .update_contact(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .contact
        .unwrap_or_default();
    Ok(with_etag(StatusCode::OK, &updated.etag, None, Contact::from(&updated)))
}

/// Deletes a contact and its timeline.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn delete(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let request = pb::DeleteContactRequest {
        name: format!("contacts/{id}"),
        etag: if_match(&headers),
    };
    gw.contacts().delete_contact(call.request(request, gw.deadline)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Full-text search, best match first.
#[utoipa::path(get, path = "/v1/contacts:search", tag = "contacts", params(SearchParams),
    responses((status = 200, body = ContactPage), (status = 400, body = ProblemBody)))]
pub async fn search(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<SearchParams>,
) -> Result<Response, Problem> {
    let request = pb::SearchContactsRequest {
        query: q.query,
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .search_contacts(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(ContactPage {
        contacts: response.contacts.iter().map(Contact::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// A record's audit trail: who changed which fields when, newest first.
pub(crate) async fn history(gw: &Gateway, call: &Call, parent: String, q: PageParams) -> Result<Response, Problem> {
    let request = pb::ListHistoryRequest {
        parent,
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .list_history(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(HistoryPage {
        entries: response.entries.iter().map(crate::dto::HistoryEntry::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// A contact's audit trail, newest first.
#[utoipa::path(get, path = "/v1/contacts/{id}/history", tag = "contacts", params(("id" = String, Path), PageParams),
    responses((status = 200, body = HistoryPage), (status = 404, body = ProblemBody)))]
pub async fn contact_history(
    State(gw): State<Gateway>,
    call: Call,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PageParams>,
) -> Result<Response, Problem> {
    history(&gw, &call, format!("contacts/{id}"), q).await
}

/// Moves every contact and company a user owns to another user, or round-robin over
/// several, in audited batches. Admins and managers only.
#[utoipa::path(post, path = "/v1/contacts:reassignOwner", tag = "contacts", request_body = ReassignOwnerRequest,
    responses((status = 200, body = ReassignOwnerResponse), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn reassign_owner(
    State(gw): State<Gateway>,
    call: Call,
    JsonBody(body): JsonBody<ReassignOwnerRequest>,
) -> Result<Response, Problem> {
    let request = pb::ReassignOwnerRequest {
        from_user: body.from_user,
        to_users: body.to_users,
        dry_run: body.dry_run,
    };
    let response = gw
        .contacts()
        .reassign_owner(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(ReassignOwnerResponse::from(&response)).into_response())
}

/// Custom methods on one contact (`POST /v1/contacts/{id}:verb`).
pub async fn custom_method(
    State(gw): State<Gateway>,
    call: Call,
    Path(id_and_verb): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    use axum::extract::FromRequest;
    let etag = if_match(&headers);
    match id_and_verb.split_once(':') {
        Some((id, "erase")) => erase(&gw, &call, id).await,
        Some((id, "merge")) => {
            let JsonBody(body) = JsonBody::<MergeRequest>::from_request(request, &()).await?;
            merge(&gw, &call, id, etag, body).await
        }
        _ => Err(Problem(crm_platform::ApiError::new(
            crm_platform::ErrorCode::NotFound,
            "ROUTE_NOT_FOUND",
            "no such method; see /openapi.json",
        ))),
    }
}

/// Erases the contact's personal data everywhere in the contact service (GDPR art. 17) and
/// returns the anonymous tombstone left behind. Admins and managers only.
#[utoipa::path(post, path = "/v1/contacts/{id}:erase", tag = "contacts", params(("id" = String, Path)),
    responses((status = 200, body = Contact), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn erase_contact() {}

async fn erase(gw: &Gateway, call: &Call, id: &str) -> Result<Response, Problem> {
    let request = pb::EraseContactRequest {
        name: format!("contacts/{id}"),
    };
    let tombstone = gw
        .contacts()
        .erase_contact(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .contact
        .unwrap_or_default();
    Ok(with_etag(
        StatusCode::OK,
        &tombstone.etag,
        None,
        Contact::from(&tombstone),
    ))
}

/// Groups of contacts that are likely one person, or the candidates of one contact.
#[utoipa::path(get, path = "/v1/contacts:findDuplicates", tag = "contacts", params(DuplicateParams),
    responses((status = 200, body = DuplicateGroupPage), (status = 400, body = ProblemBody)))]
pub async fn find_duplicates(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<DuplicateParams>,
) -> Result<Response, Problem> {
    let request = pb::FindDuplicatesRequest {
        contact: q.contact.unwrap_or_default(),
        page_size: q.page_size.unwrap_or_default(),
        page_token: q.page_token.unwrap_or_default(),
        min_score: q.min_score.unwrap_or_default(),
    };
    let response = gw
        .contacts()
        .find_duplicates(call.request(request, gw.deadline))
        .await?
        .into_inner();
    Ok(axum::Json(DuplicateGroupPage {
        groups: response.groups.iter().map(DuplicateGroup::from).collect(),
        next_page_token: response.next_page_token,
    })
    .into_response())
}

/// Merges other contacts into this one (the survivor): per-field survivorship, interactions
/// moved, and each merged contact's name resolving to the survivor afterwards.
#[utoipa::path(post, path = "/v1/contacts/{id}:merge", tag = "contacts", request_body = MergeRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, description = "the survivor's etag")),
    responses((status = 200, body = Contact), (status = 400, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 412, body = ProblemBody)))]
pub async fn merge_contacts() {}

async fn merge(gw: &Gateway, call: &Call, id: &str, etag: String, body: MergeRequest) -> Result<Response, Problem> {
    let request = pb::MergeContactsRequest {
        survivor: format!("contacts/{id}"),
        merged: body.merged,
        field_sources: body
            .field_sources
            .into_iter()
            .map(|(field, source)| (proto_path(&field), source))
            .collect(),
        etag,
    };
    let survivor = gw
        .contacts()
        .merge_contacts(call.request(request, gw.deadline))
        .await?
        .into_inner()
        .contact
        .unwrap_or_default();
    Ok(with_etag(
        StatusCode::OK,
        &survivor.etag,
        None,
        Contact::from(&survivor),
    ))
}

/// How an export is encoded.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` or `ndjson` (default).
    pub format: Option<String>,
    /// The same filter as the list.
    pub filter: Option<String>,
    /// The same orders as the list; default `create_time`.
    pub order_by: Option<String>,
}

/// How long an export may stream.
const EXPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Streams every contact matching the filter as CSV or NDJSON, in constant memory. Admins and
/// managers only. A failure mid-stream aborts the transfer rather than ending it short.
#[utoipa::path(get, path = "/v1/contacts:export", tag = "contacts", params(ExportParams),
    responses((status = 200, description = "text/csv or application/x-ndjson, streamed"), (status = 400, body = ProblemBody),
        (status = 403, body = ProblemBody)))]
pub async fn export(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<ExportParams>,
) -> Result<Response, Problem> {
    use futures::StreamExt;
    let csv = match q.format.as_deref().unwrap_or("ndjson") {
        "csv" => true,
        "ndjson" => false,
        _ => {
            return Err(Problem(crm_platform::ApiError::invalid_field(
                "format",
                "must be csv or ndjson",
            )));
        }
    };
    let request = pb::ExportContactsRequest {
        filter: q.filter.unwrap_or_default(),
        order_by: q.order_by.unwrap_or_default(),
    };
    let batches = gw
        .contacts()
        .export_contacts(call.request(request, EXPORT_DEADLINE))
        .await?
        .into_inner();
    let header = futures::stream::iter(csv.then(|| Ok(bytes::Bytes::from(crate::dto::table::encode_csv([], true)))));
    let rows = batches.map(move |batch| match batch {
        Ok(batch) if csv => Ok(bytes::Bytes::from(crate::dto::table::encode_csv(
            batch.contacts.iter().map(crate::dto::table::contact_record),
            false,
        ))),
        Ok(batch) => {
            let mut lines = Vec::new();
            for contact in &batch.contacts {
                let _ = serde_json::to_writer(&mut lines, &Contact::from(contact));
                lines.push(b'\n');
            }
            Ok(bytes::Bytes::from(lines))
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "export aborted");
            Err(std::io::Error::other("export aborted"))
        }
    });
    let (content_type, file) = if csv {
        ("text/csv; charset=utf-8", "contacts.csv")
    } else {
        ("application/x-ndjson", "contacts.ndjson")
    };
    Ok((
        [
            (http::header::CONTENT_TYPE, content_type.to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        axum::body::Body::from_stream(header.chain(rows)),
    )
        .into_response())
}

/// How an import runs.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `csv` (default) or `ndjson`.
    pub format: Option<String>,
    /// `external_id` or `primary_email`: what rows are matched on. Default: `external_id` when
    /// the file has that column (NDJSON: always), else `primary_email`; the summary says which.
    pub natural_key: Option<String>,
    /// Report what would happen without writing anything.
    pub dry_run: Option<bool>,
    /// CSV column mapping, `column:field,column:field`; `column:-` skips a column.
    pub mapping: Option<String>,
}

/// How long an import may run.
const IMPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The natural key an import names, if it names one.
pub fn natural_key(raw: Option<&str>) -> Result<Option<pb::NaturalKey>, crm_platform::ApiError> {
    match raw {
        None => Ok(None),
        Some("external_id") => Ok(Some(pb::NaturalKey::ExternalId)),
        Some("primary_email" | "email") => Ok(Some(pb::NaturalKey::PrimaryEmail)),
        Some(_) => Err(crm_platform::ApiError::invalid_field(
            "naturalKey",
            "must be external_id or primary_email",
        )),
    }
}

/// The import options: the key named, else the one the file's header can match on.
pub fn import_options(
    named: Option<pb::NaturalKey>,
    header: &crate::import::Header,
    dry_run: bool,
) -> pb::ImportOptions {
    pb::ImportOptions {
        natural_key: named.unwrap_or_else(|| header.default_natural_key()) as i32,
        dry_run,
    }
}

/// Imports a CSV or NDJSON upload, streamed in and processed in constant memory. Each row
/// upserts one contact on the natural key and commits on its own; the response streams one
/// NDJSON line per row (created, updated, unchanged or rejected with field and reason) and a
/// last line `{"summary": ...}`. Running the same file again creates nothing new.
#[utoipa::path(post, path = "/v1/contacts:import", tag = "contacts", params(ImportParams),
    request_body(content = String, description = "CSV with a header row (the columns of an export), or NDJSON contacts", content_type = "text/csv"),
    responses((status = 200, description = "application/x-ndjson: a RowResult per row, then {\"summary\": ImportSummary}", body = crate::dto::RowResult),
        (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn import(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<ImportParams>,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    use crate::import::{Format, read_rows};
    use futures::{StreamExt, TryStreamExt};
    let format = Format::parse(q.format.as_deref().unwrap_or("csv"))
        .ok_or_else(|| Problem(crm_platform::ApiError::invalid_field("format", "must be csv or ndjson")))?;
    let mapping = crate::dto::table::parse_mapping(q.mapping.as_deref().unwrap_or_default())
        .map_err(|reason| Problem(crm_platform::ApiError::invalid_field("mapping", reason)))?;
    let named = natural_key(q.natural_key.as_deref())?;

    let body = request.into_body().into_data_stream().map_err(std::io::Error::other);
    let source = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(256);
    tokio::task::spawn_blocking(move || read_rows(source, format, &mapping, header_tx, rows_tx));
    let header = match header_rx.await {
        Ok(Ok(header)) => header,
        Ok(Err(reason)) => return Err(Problem(crm_platform::ApiError::invalid_field("body", reason))),
        Err(_) => {
            return Err(Problem(crm_platform::ApiError::invalid_field(
                "body",
                "the upload could not be read",
            )));
        }
    };
    let options = import_options(named, &header, q.dry_run.unwrap_or(false));
    let first = pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Options(options)),
    };
    let rows = tokio_stream::wrappers::ReceiverStream::new(rows_rx).map(|source| pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Row(source.row)),
    });
    let requests = futures::stream::iter([first]).chain(rows);
    let responses = gw
        .contacts()
        .import_contacts(call.request(requests, IMPORT_DEADLINE))
        .await?
        .into_inner();
    let lines = responses.map(|message| match message {
        Ok(message) => {
            let mut out = Vec::new();
            for result in &message.results {
                let _ = serde_json::to_writer(&mut out, &crate::dto::RowResult::from(result));
                out.push(b'\n');
            }
            if let Some(summary) = &message.summary {
                let _ = serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({ "summary": crate::dto::ImportSummary::from(summary) }),
                );
                out.push(b'\n');
            }
            Ok(bytes::Bytes::from(out))
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "import aborted");
            Err(std::io::Error::other("import aborted"))
        }
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}
