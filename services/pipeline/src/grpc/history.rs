//! ImportDeals: rows in, one result per row out (sent once the row is committed), a summary
//! last. Rows are imported one after another, each in its own transaction, so a cut import
//! keeps every row it reported; the channels are bounded, so a client that stops reading
//! results stops the import instead of filling memory.

use crm_platform::ApiError;
use crm_proto::crm::pipeline::v1 as pb;
use pb::import_deals_request::Kind;
use pb::import_deals_row::Record;
use tonic::Status;

use super::requests::{historical_deal_in, historical_lead_in};
use crate::app::{Caller, Imported, PipelineApp, Pipelines};

/// Row results per response message.
const RESULT_BATCH: usize = 100;

pub(super) type ImportStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ImportDealsResponse, Status>> + Send + 'static>>;

fn rejected(line: i64, field: impl Into<String>, reason: impl Into<String>) -> pb::ImportDealsResult {
    pb::ImportDealsResult {
        line,
        outcome: pb::ImportOutcome::Rejected as i32,
        record: String::new(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// One row's result; Err ends the import (the error is not about the row).
async fn import_row(
    app: &PipelineApp,
    caller: &Caller,
    pipelines: &mut Pipelines,
    dry_run: bool,
    row: pb::ImportDealsRow,
) -> Result<pb::ImportDealsResult, ApiError> {
    let line = row.line;
    if !row.rejected_reason.is_empty() {
        return Ok(rejected(line, row.rejected_field, row.rejected_reason));
    }
    let (done, prefix) = match &row.record {
        Some(Record::Deal(deal)) => (
            match historical_deal_in(deal) {
                Ok(deal) => app.import_deal(caller, pipelines, deal, dry_run).await,
                Err(err) => Err(err),
            },
            "deal.",
        ),
        Some(Record::Lead(lead)) => (
            match historical_lead_in(lead) {
                Ok(lead) => app.import_lead(caller, lead, dry_run).await,
                Err(err) => Err(err),
            },
            "lead.",
        ),
        None => return Ok(rejected(line, "record", "a row is a deal or a lead")),
    };
    let (outcome, record) = match done {
        Ok(Imported::Created(name)) => (pb::ImportOutcome::Created, name.unwrap_or_default()),
        Ok(Imported::Unchanged(name)) => (pb::ImportOutcome::Unchanged, name),
        Err(err) => {
            let (field, reason) = err.into_rejection(prefix)?;
            return Ok(rejected(line, field, reason));
        }
    };
    Ok(pb::ImportDealsResult {
        line,
        outcome: outcome as i32,
        record,
        field: String::new(),
        reason: String::new(),
    })
}

/// Runs an import: the options must come first.
pub(super) async fn run(
    app: PipelineApp,
    caller: Caller,
    mut rows: tonic::Streaming<pb::ImportDealsRequest>,
) -> Result<ImportStream, Status> {
    app.ensure_can_import_history(&caller)?;
    let options = match rows.message().await? {
        Some(pb::ImportDealsRequest {
            kind: Some(Kind::Options(options)),
        }) => options,
        _ => return Err(ApiError::invalid_field("options", "the first message must carry the options").into()),
    };
    let (results_tx, results_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut pipelines = Pipelines::default();
        let mut summary = pb::ImportDealsSummary {
            dry_run: options.dry_run,
            ..Default::default()
        };
        let mut results = Vec::with_capacity(RESULT_BATCH);
        loop {
            let row = match rows.message().await {
                Ok(Some(pb::ImportDealsRequest {
                    kind: Some(Kind::Row(row)),
                })) => row,
                Ok(None) => break,
                Ok(Some(_)) => {
                    let err = ApiError::invalid_field("row", "only rows may follow the options");
                    let _ = results_tx.send(Err(err.into())).await;
                    return;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "deal import stream broken");
                    return;
                }
            };
            let result = match import_row(&app, &caller, &mut pipelines, options.dry_run, row).await {
                Ok(result) => result,
                Err(err) => {
                    let _ = results_tx.send(Err(err.into())).await;
                    return;
                }
            };
            match pb::ImportOutcome::try_from(result.outcome) {
                Ok(pb::ImportOutcome::Created) => summary.created += 1,
                Ok(pb::ImportOutcome::Unchanged) => summary.unchanged += 1,
                _ => summary.rejected += 1,
            }
            results.push(result);
            if results.len() >= RESULT_BATCH {
                let batch = pb::ImportDealsResponse {
                    results: std::mem::take(&mut results),
                    summary: None,
                };
                if results_tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        }
        tracing::info!(
            created = summary.created,
            unchanged = summary.unchanged,
            rejected = summary.rejected,
            "deal import finished"
        );
        let _ = results_tx
            .send(Ok(pb::ImportDealsResponse {
                results,
                summary: Some(summary),
            }))
            .await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(results_rx)))
}
