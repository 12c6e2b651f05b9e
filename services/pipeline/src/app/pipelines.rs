//! Pipelines and their stages, and the board.

use crm_platform::ApiError;
use uuid::Uuid;

use super::{Caller, Page, PipelineApp, Rec, check_etag, event, failed, put, store_error};
use crate::convert;
use crate::domain::{Money, Pipeline, PipelineId, Stage, StageKind};
use crate::store::{Kind, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// A stage as a client describes it: an existing stage's id keeps it (and its history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInput {
    pub id: Option<Uuid>,
    pub name: String,
    pub probability: u8,
    pub kind: StageKind,
}

/// One column of a board.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub stage: Stage,
    pub count: i64,
    pub totals: Vec<Money>,
    pub deals: Vec<Rec<crate::domain::Deal>>,
}

fn ensure_configures(caller: &Caller) -> Result<(), ApiError> {
    if caller.who.writes_all() {
        Ok(())
    } else {
        Err(ApiError::permission_denied(
            "only managers and admins configure pipelines",
        ))
    }
}

/// Builds the stage list, keeping the ids of stages that exist in `current`.
fn stages(inputs: Vec<StageInput>, current: &[Stage]) -> Result<Vec<Stage>, ApiError> {
    let stages: Vec<Stage> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| match input.id {
            Some(id) if current.iter().any(|s| s.id == id) => Ok(Stage {
                id,
                name: input.name,
                probability: input.probability,
                kind: input.kind,
            }),
            Some(id) => Err(ApiError::invalid_field(
                format!("pipeline.stages[{i}].id"),
                format!("{id} is not a stage of this pipeline (leave it empty for a new stage)"),
            )),
            None => Ok(Stage {
                id: Uuid::now_v7(),
                name: input.name,
                probability: input.probability,
                kind: input.kind,
            }),
        })
        .collect::<Result<_, _>>()?;
    Pipeline::check_stages(&stages).map_err(|reason| ApiError::invalid_field("pipeline.stages", reason))?;
    Ok(stages)
}

impl PipelineApp {
    pub async fn create_pipeline(
        &self,
        caller: &Caller,
        name: String,
        inputs: Vec<StageInput>,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Pipeline>, ApiError> {
        ensure_configures(caller)?;
        if let Some(done) = self.replay(caller, Kind::Pipeline, request).await? {
            return Ok(done);
        }
        let pipeline = Pipeline {
            name,
            stages: stages(inputs, &[])?,
        };
        let record = Rec::new(pipeline, self.now());
        let write = Write {
            puts: vec![put(Kind::Pipeline, &record, None)?],
            events: vec![event(
                caller,
                PipelineId::COLLECTION,
                &record,
                &pb::PipelineCreated {
                    pipeline: Some(convert::pipeline(&record)),
                },
            )?],
            ..Write::default()
        };
        self.create(caller, Kind::Pipeline, request, record, write).await
    }

    pub async fn get_pipeline(&self, caller: &Caller, id: PipelineId) -> Result<Rec<Pipeline>, ApiError> {
        self.load(caller.tenant(), Kind::Pipeline, id.0, &id.name()).await
    }

    pub async fn list_pipelines(
        &self,
        caller: &Caller,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Pipeline>, ApiError> {
        self.list_page(caller, Kind::Pipeline, vec![], page_size, page_token)
            .await
    }

    /// Renames the pipeline and/or replaces its stage list. Stages keep their ids, so the
    /// stage history (which records names as they were) is never rewritten; a stage with
    /// open deals cannot be removed or stop being open.
    pub async fn update_pipeline(
        &self,
        caller: &Caller,
        id: PipelineId,
        etag: Option<i64>,
        name: Option<String>,
        inputs: Option<Vec<StageInput>>,
    ) -> Result<Rec<Pipeline>, ApiError> {
        ensure_configures(caller)?;
        let current: Rec<Pipeline> = self.get_pipeline(caller, id).await?;
        check_etag(etag, current.revision)?;
        let mut body = current.body.clone();
        let mut fields = Vec::new();
        if let Some(name) = name.filter(|n| n != &body.name) {
            body.name = name;
            fields.push("display_name");
        }
        if let Some(inputs) = inputs {
            let new = stages(inputs, &body.stages)?;
            let board = self
                .store
                .board(caller.tenant(), id.0, None, 0)
                .await
                .map_err(store_error)?;
            for column in board.iter().filter(|c| c.count > 0) {
                let kept_open = new.iter().any(|s| s.id == column.stage && s.kind == StageKind::Open);
                if !kept_open {
                    return Err(failed(
                        "STAGE_HAS_OPEN_DEALS",
                        format!(
                            "stage {} holds {} open deals; move them before removing it or changing its kind",
                            column.stage, column.count
                        ),
                    ));
                }
            }
            if new != body.stages {
                body.stages = new;
                fields.push("stages");
            }
        }
        if fields.is_empty() {
            return Ok(current);
        }
        let (record, write) = self.revise(caller, Kind::Pipeline, &current, body, |record| pb::PipelineUpdated {
            pipeline: Some(convert::pipeline(record)),
            changed_fields: super::changed(fields),
        })?;
        self.write(caller, &write).await?;
        Ok(record)
    }

    /// The pipeline's open stages in order, each with its open deals' count, totals per
    /// currency and first `per_stage` deals (earliest expected close first).
    pub async fn board(
        &self,
        caller: &Caller,
        id: PipelineId,
        owner: Option<String>,
        per_stage: usize,
    ) -> Result<(Rec<Pipeline>, Vec<Column>), ApiError> {
        let pipeline = self.get_pipeline(caller, id).await?;
        let stages = self
            .store
            .board(caller.tenant(), id.0, owner.as_deref(), per_stage)
            .await
            .map_err(store_error)?;
        let mut columns = Vec::new();
        for stage in pipeline.body.stages.iter().filter(|s| s.kind == StageKind::Open) {
            let found = stages.iter().find(|s| s.stage == stage.id);
            columns.push(Column {
                stage: stage.clone(),
                count: found.map_or(0, |s| s.count),
                totals: found.map(|s| s.totals.clone()).unwrap_or_default(),
                deals: found
                    .map(|s| s.deals.iter().cloned().map(Rec::from_doc).collect::<Result<_, _>>())
                    .transpose()?
                    .unwrap_or_default(),
            });
        }
        Ok((pipeline, columns))
    }
}
