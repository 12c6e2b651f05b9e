//! Bulk transfer: `/v1/contacts:export` streams contacts out as CSV or NDJSON;
//! `/v1/contacts:import` and `/v1/deals:import` (history) stream a file in and a result per
//! row back.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use crm_proto::crm::contact::v1 as pb;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::Gateway;
use crate::extract::QueryParams;
use crate::problem::{Problem, ProblemBody};
use crate::upstream::Call;

/// How an export is encoded.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` or `ndjson` (default).
    #[param(pattern = "^(csv|ndjson)$")]
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
    responses((status = 200, description = "every matching contact, streamed", content((String = "text/csv"), (String = "application/x-ndjson"))), (status = 400, body = ProblemBody),
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
    let header = futures::stream::iter(csv.then(|| Ok(bytes::Bytes::from(crate::table::encode_csv([], true)))));
    let rows = batches.map(move |batch| match batch {
        Ok(batch) if csv => Ok(bytes::Bytes::from(crate::table::encode_csv(
            batch.contacts.iter().map(crate::table::contact_record),
            false,
        ))),
        Ok(batch) => {
            let mut lines = Vec::new();
            for contact in &batch.contacts {
                let _ = crm_proto::json::to_json(contact, "crm.contact.v1.Contact")
                    .map(|json| serde_json::to_writer(&mut lines, &json));
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
    /// `csv` or `ndjson`; by default the one the body's Content-Type names (`text/csv`,
    /// `application/x-ndjson`), else `csv`. It must not contradict the Content-Type.
    #[param(pattern = "^(csv|ndjson)$")]
    pub format: Option<String>,
    /// `external_id` or `primary_email`: what rows are matched on. Default: `external_id` when
    /// the file has that column (NDJSON: always), else `primary_email`; the summary says which.
    #[param(pattern = "^(external_id|primary_email|email)$")]
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

/// The format of an import: `format` when given, else the one the body's Content-Type names,
/// else CSV. A Content-Type that names the other format contradicts `format`: the body would
/// be read as what it is not.
fn import_format(named: Option<&str>, headers: &http::HeaderMap) -> Result<crate::import::Format, Problem> {
    use crate::import::Format;
    let invalid = |reason: &str| Problem(crm_platform::ApiError::invalid_field("format", reason));
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let sent = match media.as_deref() {
        Some("text/csv") => Some(Format::Csv),
        Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => Some(Format::Ndjson),
        _ => None,
    };
    let format = match named {
        Some(raw) => Format::parse(raw).ok_or_else(|| invalid("must be csv or ndjson"))?,
        None => sent.unwrap_or(Format::Csv),
    };
    match sent {
        Some(sent) if sent != format => Err(invalid("contradicts the body's Content-Type")),
        _ => Ok(format),
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

/// An upload read on a blocking thread as rows of `S`: the header's verdict first (a 400 when
/// the file cannot be imported), then the rows as they are read.
async fn upload<S: crate::import::Schema + Send + 'static>(
    request: axum::extract::Request,
    format: crate::import::Format,
    mapping: Vec<(String, String)>,
) -> Result<
    (
        crate::import::Header,
        tokio_stream::wrappers::ReceiverStream<crate::import::SourceRow<S::Row>>,
    ),
    Problem,
> {
    use futures::TryStreamExt;
    let body = request.into_body().into_data_stream().map_err(std::io::Error::other);
    let source = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (rows_tx, rows_rx) = tokio::sync::mpsc::channel(256);
    tokio::task::spawn_blocking(move || crate::import::read_rows::<S>(source, format, &mapping, header_tx, rows_tx));
    match header_rx.await {
        Ok(Ok(header)) => Ok((header, tokio_stream::wrappers::ReceiverStream::new(rows_rx))),
        Ok(Err(reason)) => Err(Problem(crm_platform::ApiError::invalid_field("body", reason))),
        Err(_) => Err(Problem(crm_platform::ApiError::invalid_field(
            "body",
            "the upload could not be read",
        ))),
    }
}

/// An import's response: each response message as NDJSON lines (`lines` writes them); an
/// import that breaks off ends the body with an error, so the client sees it was cut.
fn ndjson_response<M: Send + 'static>(responses: tonic::Streaming<M>, lines: fn(&M, &mut Vec<u8>)) -> Response {
    use futures::StreamExt;
    let body = responses.map(move |message| match message {
        Ok(message) => {
            let mut out = Vec::new();
            lines(&message, &mut out);
            Ok(bytes::Bytes::from(out))
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "import aborted");
            Err(std::io::Error::other("import aborted"))
        }
    });
    (
        [(http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// Writes `value` as one NDJSON line.
fn line(out: &mut Vec<u8>, value: &serde_json::Value) {
    let _ = serde_json::to_writer(&mut *out, value);
    out.push(b'\n');
}

/// Imports a CSV or NDJSON upload, streamed in and processed in constant memory. Each row
/// upserts one contact on the natural key and commits on its own; the response streams one
/// NDJSON line per row (created, updated, unchanged or rejected with field and reason) and a
/// last line `{"summary": ...}`. Running the same file again creates nothing new.
#[utoipa::path(post, path = "/v1/contacts:import", tag = "contacts", params(ImportParams),
    request_body(content = String, description = "CSV with a header row (the columns of an export), or NDJSON contacts", content_type = "text/csv"),
    responses((status = 200, description = "a RowResult per row, then {\"summary\": ImportSummary}", body = String, content_type = "application/x-ndjson"),
        (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn import(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<ImportParams>,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    use futures::StreamExt;
    let format = import_format(q.format.as_deref(), request.headers())?;
    let mapping = crate::table::parse_mapping(q.mapping.as_deref().unwrap_or_default())
        .map_err(|reason| Problem(crm_platform::ApiError::invalid_field("mapping", reason)))?;
    let named = natural_key(q.natural_key.as_deref())?;
    let (header, rows) = upload::<crate::table::RowReader>(request, format, mapping).await?;
    let options = import_options(named, &header, q.dry_run.unwrap_or(false));
    let first = pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Options(options)),
    };
    let rows = rows.map(|source| pb::ImportContactsRequest {
        kind: Some(pb::import_contacts_request::Kind::Row(source.row)),
    });
    let requests = futures::stream::iter([first]).chain(rows);
    let responses = gw
        .contacts()
        .import_contacts(call.request(requests, IMPORT_DEADLINE))
        .await?
        .into_inner();
    Ok(ndjson_response(
        responses,
        |message: &pb::ImportContactsResponse, out| {
            for result in &message.results {
                if let Ok(json) = crm_proto::json::to_json(result, "crm.contact.v1.RowResult") {
                    line(out, &json);
                }
            }
            if let Some(summary) = &message.summary {
                line(out, &serde_json::json!({ "summary": ImportSummary::from(summary) }));
            }
        },
    ))
}

/// How a history import runs.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DealImportParams {
    /// `csv` or `ndjson`; by default the one the body's Content-Type names, else `csv`.
    #[param(pattern = "^(csv|ndjson)$")]
    pub format: Option<String>,
    /// Check every row and report what would happen without writing anything.
    pub dry_run: Option<bool>,
    /// CSV column mapping, `column:field,column:field`; `column:-` skips a column.
    pub mapping: Option<String>,
}

/// Imports the deals and leads of the years before the CRM with their original times (CSV:
/// one row per deal or lead, `record` = `deal` or `lead`, a deal's stages as
/// `Stage@time;Stage@time`; NDJSON: `{"deal": HistoricalDeal}` or `{"lead": HistoricalLead}`
/// per line). Rows are matched on `external_id`: a re-run creates nothing new. Managers and
/// admins only. The response streams one NDJSON line per row and a last `{"summary": ...}`.
#[utoipa::path(post, path = "/v1/deals:import", tag = "deals", params(DealImportParams),
    request_body(content = String, description = "CSV with a header row, or NDJSON rows", content_type = "text/csv"),
    responses((status = 200, description = "an ImportDealsResult per row, then {\"summary\": DealImportSummary}", body = String, content_type = "application/x-ndjson"),
        (status = 400, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn import_deals(
    State(gw): State<Gateway>,
    call: Call,
    QueryParams(q): QueryParams<DealImportParams>,
    request: axum::extract::Request,
) -> Result<Response, Problem> {
    use crm_proto::crm::pipeline::v1 as deals;
    use futures::StreamExt;
    let format = import_format(q.format.as_deref(), request.headers())?;
    let mapping = crate::table::parse_mapping(q.mapping.as_deref().unwrap_or_default())
        .map_err(|reason| Problem(crm_platform::ApiError::invalid_field("mapping", reason)))?;
    let (_, rows) = upload::<crate::import::deals::DealColumns>(request, format, mapping).await?;
    let first = deals::ImportDealsRequest {
        kind: Some(deals::import_deals_request::Kind::Options(deals::ImportDealsOptions {
            dry_run: q.dry_run.unwrap_or(false),
        })),
    };
    let rows = rows.map(|source| deals::ImportDealsRequest {
        kind: Some(deals::import_deals_request::Kind::Row(source.row)),
    });
    let requests = futures::stream::iter([first]).chain(rows);
    let responses = gw
        .deals()
        .import_deals(call.request(requests, IMPORT_DEADLINE))
        .await?
        .into_inner();
    Ok(ndjson_response(
        responses,
        |message: &deals::ImportDealsResponse, out| {
            for result in &message.results {
                if let Ok(json) = crm_proto::json::to_json(result, "crm.pipeline.v1.ImportDealsResult") {
                    line(out, &json);
                }
            }
            if let Some(s) = &message.summary {
                let summary = DealImportSummary {
                    created: s.created.to_string(),
                    unchanged: s.unchanged.to_string(),
                    rejected: s.rejected.to_string(),
                    dry_run: s.dry_run,
                };
                line(out, &serde_json::json!({ "summary": summary }));
            }
        },
    ))
}

/// Totals of a history import (the last line of the response, as `{"summary": {...}}`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DealImportSummary {
    /// Rows that created a deal or lead (a decimal string, as proto3 JSON writes 64-bit numbers).
    pub created: String,
    /// Rows whose external id was imported before.
    pub unchanged: String,
    pub rejected: String,
    pub dry_run: bool,
}

/// Totals of an import (the last line of the response, as `{"summary": {...}}`): every count
/// is written, zero included, and the natural key by its parameter name.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    /// Rows that created a contact (a decimal string, as proto3 JSON writes 64-bit numbers).
    pub created: String,
    pub updated: String,
    pub unchanged: String,
    pub rejected: String,
    pub dry_run: bool,
    /// What the rows were matched on: `external_id` or `primary_email`.
    pub natural_key: String,
}

impl From<&pb::ImportSummary> for ImportSummary {
    fn from(s: &pb::ImportSummary) -> Self {
        ImportSummary {
            created: s.created.to_string(),
            updated: s.updated.to_string(),
            unchanged: s.unchanged.to_string(),
            rejected: s.rejected.to_string(),
            dry_run: s.dry_run,
            natural_key: natural_key_name(s.natural_key).to_owned(),
        }
    }
}

/// The name an import's natural key goes by in its parameters.
pub fn natural_key_name(key: i32) -> &'static str {
    match pb::NaturalKey::try_from(key) {
        Ok(pb::NaturalKey::PrimaryEmail) => "primary_email",
        _ => "external_id",
    }
}
