//! Deals: creation, changes, the stage moves and closes that make their append-only history.

use chrono::{DateTime, NaiveDate, Utc};
use crm_platform::ApiError;
use crm_platform::paging::PageRequest;
use crm_proto::prost::Name;
use uuid::Uuid;

use super::{Caller, Page, PipelineApp, Rec, changed, event, failed, put, revision_write};
use crate::convert;
use crate::domain::{
    CompanyRef, ContactRef, Deal, DealId, DealStatus, ForecastCategory, LineItem, Money, Pipeline, PipelineId, Product,
    ProductId, StageKind, Transition, TransitionKind, line_total, values,
};
use crate::store::{Filter, Kind, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// A line as a client writes it; the product's SKU, name and (by default) price are copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    pub product: ProductId,
    pub quantity: i64,
    pub unit_price: Option<Money>,
    pub discount_bps: u16,
}

/// A new deal as a client describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealInput {
    pub name: String,
    pub pipeline: PipelineId,
    pub stage: Option<Uuid>,
    pub amount: Option<Money>,
    pub close_date: Option<NaiveDate>,
    pub owner: Option<String>,
    pub contact: Option<ContactRef>,
    pub company: Option<CompanyRef>,
    pub forecast: Option<ForecastCategory>,
    pub lines: Vec<LineInput>,
}

/// The fields an UpdateDeal changes (None: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DealPatch {
    pub name: Option<String>,
    pub amount: Option<Money>,
    pub close_date: Option<Option<NaiveDate>>,
    pub contact: Option<Option<ContactRef>>,
    pub company: Option<Option<CompanyRef>>,
    pub forecast: Option<ForecastCategory>,
    pub lines: Option<Vec<LineInput>>,
}

/// A deal's change and what it records.
struct Change {
    record: Rec<Deal>,
    transition: Transition,
}

pub(super) fn transition(
    deal: &Rec<Deal>,
    kind: TransitionKind,
    from: Option<(Uuid, String)>,
    to: (Uuid, String),
    caller: &Caller,
    time: DateTime<Utc>,
    reason: &str,
) -> Transition {
    let (from_stage, from_stage_name) = from.map_or((None, String::new()), |(id, name)| (Some(id), name));
    Transition {
        deal: deal.id,
        seq: deal.body.transitions,
        kind,
        from_stage,
        to_stage: to.0,
        from_stage_name,
        to_stage_name: to.1,
        amount: deal.body.amount.clone(),
        actor: caller.user().to_owned(),
        time,
        reason: reason.to_owned(),
    }
}

fn stage_name(pipeline: &Pipeline, id: Uuid) -> String {
    pipeline.stage(id).map(|s| s.name.clone()).unwrap_or_default()
}

/// The open stage `requested` (or the first open one) of `pipeline`.
fn open_stage(pipeline: &Rec<Pipeline>, requested: Option<Uuid>, field: &str) -> Result<(Uuid, String), ApiError> {
    let stage = match requested {
        None => pipeline.body.first_open(),
        Some(id) => {
            let stage = pipeline.body.stage(id).ok_or_else(|| {
                ApiError::invalid_field(field, format!("{id} is not a stage of pipelines/{}", pipeline.id))
            })?;
            if stage.kind != StageKind::Open {
                return Err(ApiError::invalid_field(
                    field,
                    format!("`{}` is a closing stage: use CloseDeal", stage.name),
                ));
            }
            Some(stage)
        }
    };
    stage
        .map(|s| (s.id, s.name.clone()))
        .ok_or_else(|| ApiError::invalid_field(field, "the pipeline has no open stage"))
}

impl PipelineApp {
    /// Resolves line inputs against the catalogue (products must exist and be active).
    async fn lines(&self, caller: &Caller, inputs: &[LineInput], field: &str) -> Result<Vec<LineItem>, ApiError> {
        if inputs.len() > crate::domain::MAX_LINE_ITEMS {
            return Err(ApiError::invalid_field(
                field,
                format!("at most {} line items", crate::domain::MAX_LINE_ITEMS),
            ));
        }
        let mut lines = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let path = format!("{field}[{i}]");
            let product: Rec<Product> = self
                .store
                .get(caller.tenant(), Kind::Product, input.product.0)
                .await
                .map_err(super::store_error)?
                .map(Rec::from_doc)
                .transpose()?
                .ok_or_else(|| ApiError::invalid_field(format!("{path}.product"), "no such product"))?;
            if !product.body.active {
                return Err(ApiError::invalid_field(
                    format!("{path}.product"),
                    "the product is inactive",
                ));
            }
            lines.push(LineItem {
                product: product.id,
                sku: product.body.sku.clone(),
                name: product.body.name.clone(),
                quantity: input.quantity,
                unit_price: input.unit_price.clone().unwrap_or(product.body.price.clone()),
                discount_bps: input.discount_bps,
            });
        }
        Ok(lines)
    }

    /// The deal's amount: its lines' total when it has lines, else the given amount.
    fn amount(lines: &[LineItem], given: Option<Money>, field: &str) -> Result<Money, ApiError> {
        match line_total(lines).map_err(|reason| ApiError::invalid_field(format!("{field}.line_items"), reason))? {
            Some(total) => {
                if let Some(given) = given.filter(|g| g.currency != total.currency) {
                    return Err(ApiError::invalid_field(
                        format!("{field}.amount.currency_code"),
                        format!("is {}, the line items are in {}", given.currency, total.currency),
                    ));
                }
                Ok(total)
            }
            None => given.ok_or_else(|| ApiError::invalid_field(format!("{field}.amount"), "is required")),
        }
    }

    pub(super) async fn check_contact(
        &self,
        caller: &Caller,
        contact: Option<ContactRef>,
        field: &str,
    ) -> Result<Option<Uuid>, ApiError> {
        match contact {
            None => Ok(None),
            Some(id) => self.directory.contact(caller, id.0).await?.map(Some).ok_or_else(|| {
                ApiError::invalid_field(field, format!("{} is not a contact of this tenant", id.name()))
            }),
        }
    }

    pub(super) async fn check_company(
        &self,
        caller: &Caller,
        company: Option<CompanyRef>,
        field: &str,
    ) -> Result<Option<Uuid>, ApiError> {
        match company {
            None => Ok(None),
            Some(id) => self.directory.company(caller, id.0).await?.map(Some).ok_or_else(|| {
                ApiError::invalid_field(field, format!("{} is not a company of this tenant", id.name()))
            }),
        }
    }

    /// A new deal, its first transition and its event (DealCreated), not yet written.
    pub(super) async fn new_deal(
        &self,
        caller: &Caller,
        input: DealInput,
        lead: Option<Uuid>,
        field: &str,
    ) -> Result<(Rec<Deal>, Write), ApiError> {
        if input.name.is_empty() {
            return Err(ApiError::invalid_field(format!("{field}.display_name"), "is required"));
        }
        let owner = input.owner.unwrap_or_else(|| caller.user().to_owned());
        caller.who.ensure_can_write_owned_by(
            &crm_platform::UserId::parse(&owner).map_err(|r| ApiError::invalid_field(format!("{field}.owner"), r))?,
        )?;
        let pipeline: Rec<Pipeline> = self
            .store
            .get(caller.tenant(), Kind::Pipeline, input.pipeline.0)
            .await
            .map_err(super::store_error)?
            .map(Rec::from_doc)
            .transpose()?
            .ok_or_else(|| ApiError::invalid_field(format!("{field}.pipeline"), "no such pipeline"))?;
        let stage = open_stage(&pipeline, input.stage, &format!("{field}.stage"))?;
        let lines = self.lines(caller, &input.lines, &format!("{field}.line_items")).await?;
        let amount = Self::amount(&lines, input.amount, field)?;
        let contact = self
            .check_contact(caller, input.contact, &format!("{field}.contact"))
            .await?;
        let company = self
            .check_company(caller, input.company, &format!("{field}.company"))
            .await?;
        if input.forecast == Some(ForecastCategory::Closed) {
            return Err(ApiError::invalid_field(
                format!("{field}.forecast_category"),
                "CLOSED is set when the deal is won",
            ));
        }
        let now = self.now();
        let record = Rec::new(
            Deal {
                name: input.name,
                pipeline: pipeline.id,
                stage: stage.0,
                status: DealStatus::Open,
                amount,
                close_date: input.close_date,
                owner,
                contact,
                company,
                forecast: input.forecast.unwrap_or(ForecastCategory::Pipeline),
                lines,
                close_reason: String::new(),
                close_time: None,
                lead,
                stage_enter_time: now,
                transitions: 1,
                external_id: None,
            },
            now,
        );
        let first = transition(&record, TransitionKind::Created, None, stage, caller, now, "");
        let write = Write {
            puts: vec![put(Kind::Deal, &record, None)?],
            events: vec![event(
                caller,
                DealId::COLLECTION,
                &record,
                &pb::DealCreated {
                    deal: Some(convert::deal(&record)),
                },
            )?],
            transitions: vec![first],
            ..Write::default()
        };
        Ok((record, write))
    }

    pub async fn create_deal(
        &self,
        caller: &Caller,
        input: DealInput,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Deal>, ApiError> {
        caller.who.ensure_writer()?;
        // Request ids are the caller's own (see crm_platform::idempotency): a replay returns
        // only what this caller created, under the rules that held then.
        if let Some(done) = self.replay(caller, Kind::Deal, request).await? {
            return Ok(done);
        }
        let (record, write) = self.new_deal(caller, input, None, "deal").await?;
        self.create(caller, Kind::Deal, request, record, write).await
    }

    pub async fn get_deal(&self, caller: &Caller, id: DealId) -> Result<Rec<Deal>, ApiError> {
        self.load(caller.tenant(), Kind::Deal, id.0, &id.name()).await
    }

    pub async fn list_deals(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Deal>, ApiError> {
        self.list_page(caller, Kind::Deal, filters, page_size, page_token).await
    }

    async fn pipeline_of(&self, caller: &Caller, deal: &Rec<Deal>) -> Result<Rec<Pipeline>, ApiError> {
        self.load(
            caller.tenant(),
            Kind::Pipeline,
            deal.body.pipeline,
            "the deal's pipeline",
        )
        .await
    }

    pub async fn update_deal(
        &self,
        caller: &Caller,
        id: DealId,
        etag: Option<i64>,
        patch: DealPatch,
    ) -> Result<Rec<Deal>, ApiError> {
        let current = self.writable::<Deal>(caller, id.0, etag).await?;
        if current.body.status != DealStatus::Open {
            return Err(failed(
                "DEAL_CLOSED",
                "a closed deal is a record of what happened: reopen it to change it",
            ));
        }
        let mut body = current.body.clone();
        let mut fields = Vec::new();
        if let Some(name) = patch.name.filter(|n| n != &body.name) {
            body.name = name;
            fields.push("display_name");
        }
        if let Some(date) = patch.close_date.filter(|d| d != &body.close_date) {
            body.close_date = date;
            fields.push("expected_close_date");
        }
        self.patch_contact(caller, "deal.contact", patch.contact, &mut body.contact, &mut fields)
            .await?;
        self.patch_company(caller, "deal.company", patch.company, &mut body.company, &mut fields)
            .await?;
        if let Some(forecast) = patch.forecast.filter(|f| f != &body.forecast) {
            if forecast == ForecastCategory::Closed {
                return Err(ApiError::invalid_field(
                    "deal.forecast_category",
                    "CLOSED is set when the deal is won",
                ));
            }
            body.forecast = forecast;
            fields.push("forecast_category");
        }
        if let Some(inputs) = &patch.lines {
            let lines = self.lines(caller, inputs, "deal.line_items").await?;
            if lines != body.lines {
                body.lines = lines;
                fields.push("line_items");
            }
        }
        if patch.lines.is_some() || patch.amount.is_some() {
            let given = patch.amount.or_else(|| Some(body.amount.clone()));
            let amount = Self::amount(&body.lines, given, "deal")?;
            if amount != body.amount {
                body.amount = amount;
                fields.push("amount");
            }
        }
        if fields.is_empty() {
            return Ok(current);
        }
        let (record, write) = self.revise(caller, Kind::Deal, &current, body, |record| pb::DealUpdated {
            deal: Some(convert::deal(record)),
            changed_fields: changed(fields),
        })?;
        self.write(caller, &write).await?;
        Ok(record)
    }

    /// Writes a deal's stage change with its transition and event (the message `event` makes
    /// of the deal and the transition).
    async fn record_change<M: Name>(
        &self,
        caller: &Caller,
        read: &Rec<Deal>,
        change: Change,
        event: fn(Option<pb::Deal>, Option<pb::StageTransition>) -> M,
    ) -> Result<(Rec<Deal>, Transition), ApiError> {
        let Change { record, transition } = change;
        let message = event(Some(convert::deal(&record)), Some(convert::transition(&transition)));
        let mut write = revision_write(caller, Kind::Deal, read.revision, &record, &message)?;
        write.transitions.push(transition.clone());
        self.write(caller, &write).await?;
        Ok((record, transition))
    }

    /// Moves an open deal to another open stage of its pipeline.
    pub async fn move_deal(
        &self,
        caller: &Caller,
        id: DealId,
        stage: Uuid,
        etag: Option<i64>,
    ) -> Result<(Rec<Deal>, Transition), ApiError> {
        let current = self.writable::<Deal>(caller, id.0, etag).await?;
        if current.body.status != DealStatus::Open {
            return Err(failed("DEAL_CLOSED", "the deal is closed: reopen it to move it"));
        }
        let pipeline = self.pipeline_of(caller, &current).await?;
        let to = open_stage(&pipeline, Some(stage), "stage")?;
        if to.0 == current.body.stage {
            return Err(failed("ALREADY_IN_STAGE", format!("the deal is already in `{}`", to.1)));
        }
        let now = self.now();
        let from = (current.body.stage, stage_name(&pipeline.body, current.body.stage));
        let mut body = current.body.clone();
        body.stage = to.0;
        body.stage_enter_time = now;
        body.transitions += 1;
        let record = current.next(body, now);
        let transition = transition(&record, TransitionKind::Moved, Some(from), to, caller, now, "");
        self.record_change(caller, &current, Change { record, transition }, |deal, transition| {
            pb::DealStageChanged { deal, transition }
        })
        .await
    }

    /// Closes an open deal as won or lost.
    pub async fn close_deal(
        &self,
        caller: &Caller,
        id: DealId,
        won: bool,
        reason: String,
        etag: Option<i64>,
    ) -> Result<(Rec<Deal>, Transition), ApiError> {
        let current = self.writable::<Deal>(caller, id.0, etag).await?;
        if current.body.status != DealStatus::Open {
            return Err(failed("DEAL_CLOSED", "the deal is already closed"));
        }
        if !won && reason.is_empty() {
            return Err(ApiError::invalid_field("reason", "is required when a deal is lost"));
        }
        let pipeline = self.pipeline_of(caller, &current).await?;
        let kind = if won { StageKind::Won } else { StageKind::Lost };
        let stage = pipeline
            .body
            .closing(kind)
            .map(|s| (s.id, s.name.clone()))
            .ok_or_else(|| failed("NO_CLOSING_STAGE", "the pipeline has no stage to close the deal into"))?;
        let now = self.now();
        let from = (current.body.stage, stage_name(&pipeline.body, current.body.stage));
        let mut body = current.body.clone();
        body.stage = stage.0;
        body.stage_enter_time = now;
        body.status = if won { DealStatus::Won } else { DealStatus::Lost };
        body.forecast = if won {
            ForecastCategory::Closed
        } else {
            ForecastCategory::Omitted
        };
        body.close_reason = reason.clone();
        body.close_time = Some(now);
        body.transitions += 1;
        let record = current.next(body, now);
        let transition_kind = if won { TransitionKind::Won } else { TransitionKind::Lost };
        let transition = transition(&record, transition_kind, Some(from), stage, caller, now, &reason);
        let change = Change { record, transition };
        if won {
            self.record_change(caller, &current, change, |deal, transition| pb::DealWon {
                deal,
                transition,
            })
            .await
        } else {
            self.record_change(caller, &current, change, |deal, transition| pb::DealLost {
                deal,
                transition,
            })
            .await
        }
    }

    /// Reopens a closed deal into an open stage (the first by default).
    pub async fn reopen_deal(
        &self,
        caller: &Caller,
        id: DealId,
        stage: Option<Uuid>,
        etag: Option<i64>,
    ) -> Result<(Rec<Deal>, Transition), ApiError> {
        let current = self.writable::<Deal>(caller, id.0, etag).await?;
        if current.body.status == DealStatus::Open {
            return Err(failed("DEAL_OPEN", "the deal is open"));
        }
        let pipeline = self.pipeline_of(caller, &current).await?;
        let to = open_stage(&pipeline, stage, "stage")?;
        let now = self.now();
        let from = (current.body.stage, stage_name(&pipeline.body, current.body.stage));
        let mut body = current.body.clone();
        body.stage = to.0;
        body.stage_enter_time = now;
        body.status = DealStatus::Open;
        body.forecast = ForecastCategory::Pipeline;
        body.close_reason = String::new();
        body.close_time = None;
        body.transitions += 1;
        let record = current.next(body, now);
        let transition = transition(&record, TransitionKind::Reopened, Some(from), to, caller, now, "");
        self.record_change(caller, &current, Change { record, transition }, |deal, transition| {
            pb::DealReopened { deal, transition }
        })
        .await
    }

    /// A deal's transitions, oldest first, a page at a time.
    pub async fn deal_history(
        &self,
        caller: &Caller,
        id: DealId,
        page_size: i32,
        page_token: &str,
    ) -> Result<crm_platform::paging::Page<Transition>, ApiError> {
        let page = PageRequest::<i64>::parse(page_size, page_token, &["history", &id.name()])?;
        self.get_deal(caller, id).await?;
        let transitions = self
            .store
            .transitions(caller.tenant(), id.0, page.after.unwrap_or(0), page.fetch())
            .await
            .map_err(super::store_error)?;
        Ok(page.page(transitions, |last| last.seq))
    }
}

/// Checks a close date (for the gRPC edge).
pub fn close_date(raw: &str) -> Result<Option<NaiveDate>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        values::date(raw).map(Some)
    }
}
