//! The gRPC servers of crm.pipeline.v1: authenticate nothing themselves (the auth layer did),
//! convert at the edge (`requests` in, `crate::convert` out) and delegate to [`PipelineApp`].

pub mod events;
mod history;
pub mod legacy_events;
#[cfg(test)]
mod legacy_events_tests;
mod requests;

use crm_platform::ApiError;
use crm_platform::error::{parse_field as parse, required_field as required};
use crm_platform::idempotency::RequestKey;
use crm_proto::crm::pipeline::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{Caller, PipelineApp, user_or_me};
use crate::convert;
use crate::domain::{DealId, LeadId, PipelineId, ProductId, TaskId};
use crate::store::Filter;

pub use pb::deal_service_server::DealServiceServer;
pub use pb::forecast_service_server::ForecastServiceServer;
pub use pb::lead_service_server::LeadServiceServer;
pub use pb::pipeline_service_server::PipelineServiceServer;
pub use pb::product_service_server::ProductServiceServer;
pub use pb::task_service_server::TaskServiceServer;

/// The fully qualified names clients and health checks use.
pub const SERVICE_NAMES: &[&str] = &[
    "crm.pipeline.v1.PipelineService",
    "crm.pipeline.v1.LeadService",
    "crm.pipeline.v1.DealService",
    "crm.pipeline.v1.ProductService",
    "crm.pipeline.v1.TaskService",
    "crm.pipeline.v1.ForecastService",
];

/// Implements every generated service trait of crm.pipeline.v1.
#[derive(Clone)]
pub struct PipelineGrpc {
    app: PipelineApp,
}

/// The tonic services, ready to add to a server.
pub struct Servers {
    pub pipelines: PipelineServiceServer<PipelineGrpc>,
    pub leads: LeadServiceServer<PipelineGrpc>,
    pub deals: DealServiceServer<PipelineGrpc>,
    pub products: ProductServiceServer<PipelineGrpc>,
    pub tasks: TaskServiceServer<PipelineGrpc>,
    pub forecasts: ForecastServiceServer<PipelineGrpc>,
}

impl PipelineGrpc {
    pub fn new(app: PipelineApp) -> Self {
        Self { app }
    }

    pub fn into_servers(self) -> Servers {
        Servers {
            pipelines: PipelineServiceServer::new(self.clone()),
            leads: LeadServiceServer::new(self.clone()),
            deals: DealServiceServer::new(self.clone()),
            products: ProductServiceServer::new(self.clone()),
            tasks: TaskServiceServer::new(self.clone()),
            forecasts: ForecastServiceServer::new(self),
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let who = crm_platform::identity::principal(request)?;
    let credentials = crm_platform::identity::credentials(request);
    Ok(Caller { who, credentials })
}

fn stage_id(raw: &str, field: &str) -> Result<Option<Uuid>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| ApiError::invalid_field(field, "is not a stage id"))
}

type GrpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::pipeline_service_server::PipelineService for PipelineGrpc {
    async fn create_pipeline(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> GrpcResult<pb::CreatePipelineResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let p = required("pipeline", r.pipeline.as_ref())?;
        let name = parse(
            "pipeline.display_name",
            crate::domain::values::text(&p.display_name, 200, true),
        )?;
        let stages = requests::stages_in(p)?;
        let created = self.app.create_pipeline(&caller, name, stages, key.as_ref()).await?;
        Ok(Response::new(pb::CreatePipelineResponse {
            pipeline: Some(convert::pipeline(&created)),
        }))
    }

    async fn get_pipeline(&self, request: Request<pb::GetPipelineRequest>) -> GrpcResult<pb::GetPipelineResponse> {
        let caller = caller(&request)?;
        let id = parse("name", PipelineId::parse_name(&request.get_ref().name))?;
        let pipeline = self.app.get_pipeline(&caller, id).await?;
        Ok(Response::new(pb::GetPipelineResponse {
            pipeline: Some(convert::pipeline(&pipeline)),
        }))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> GrpcResult<pb::ListPipelinesResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let page = self.app.list_pipelines(&caller, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListPipelinesResponse {
            pipelines: page.items.iter().map(convert::pipeline).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> GrpcResult<pb::UpdatePipelineResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let p = required("pipeline", r.pipeline.as_ref())?;
        let id = parse("pipeline.name", PipelineId::parse_name(&p.name))?;
        let paths = requests::mask(r.update_mask.as_ref(), &["display_name", "stages"])?;
        let name = if paths.iter().any(|p| p == "display_name") {
            Some(parse(
                "pipeline.display_name",
                crate::domain::values::text(&p.display_name, 200, true),
            )?)
        } else {
            None
        };
        let stages = if paths.iter().any(|p| p == "stages") {
            Some(requests::stages_in(p)?)
        } else {
            None
        };
        let etag = requests::etag(&p.etag, "pipeline.etag")?;
        let updated = self.app.update_pipeline(&caller, id, etag, name, stages).await?;
        Ok(Response::new(pb::UpdatePipelineResponse {
            pipeline: Some(convert::pipeline(&updated)),
        }))
    }

    async fn get_board(&self, request: Request<pb::GetBoardRequest>) -> GrpcResult<pb::GetBoardResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("pipeline", PipelineId::parse_name(&r.pipeline))?;
        let per_stage = match r.deals_per_stage {
            n if n < 0 => return Err(ApiError::invalid_field("deals_per_stage", "must not be negative").into()),
            0 => 20,
            n => usize::try_from(n).unwrap_or(100).min(100),
        };
        let owner = (!r.owner.is_empty()).then(|| user_or_me(&caller, &r.owner));
        let (pipeline, columns) = self.app.board(&caller, id, owner, per_stage).await?;
        Ok(Response::new(pb::GetBoardResponse {
            pipeline: PipelineId(pipeline.id).name(),
            columns: columns
                .iter()
                .map(|c| pb::BoardColumn {
                    stage: Some(convert::stage(&c.stage)),
                    deal_count: c.count,
                    totals: c.totals.iter().map(convert::money).collect(),
                    deals: c.deals.iter().map(convert::deal).collect(),
                })
                .collect(),
        }))
    }

    async fn reassign_owner(
        &self,
        request: Request<pb::ReassignOwnerRequest>,
    ) -> GrpcResult<pb::ReassignOwnerResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let moved = self
            .app
            .reassign_owner(&caller, &r.from_user, &r.to_users, r.dry_run)
            .await?;
        Ok(Response::new(pb::ReassignOwnerResponse {
            leads: moved.leads,
            deals: moved.deals,
            tasks: moved.tasks,
            shares: moved
                .shares
                .iter()
                .map(|s| pb::OwnerShare {
                    user: s.user.clone(),
                    leads: s.leads,
                    deals: s.deals,
                    tasks: s.tasks,
                })
                .collect(),
            dry_run: moved.dry_run,
        }))
    }
}

#[tonic::async_trait]
impl pb::lead_service_server::LeadService for PipelineGrpc {
    async fn create_lead(&self, request: Request<pb::CreateLeadRequest>) -> GrpcResult<pb::CreateLeadResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let input = requests::lead_in(required("lead", r.lead.as_ref())?, None)?;
        let lead = self.app.create_lead(&caller, input, key.as_ref()).await?;
        Ok(Response::new(pb::CreateLeadResponse {
            lead: Some(convert::lead(&lead)),
        }))
    }

    async fn get_lead(&self, request: Request<pb::GetLeadRequest>) -> GrpcResult<pb::GetLeadResponse> {
        let caller = caller(&request)?;
        let id = parse("name", LeadId::parse_name(&request.get_ref().name))?;
        let lead = self.app.get_lead(&caller, id).await?;
        Ok(Response::new(pb::GetLeadResponse {
            lead: Some(convert::lead(&lead)),
        }))
    }

    async fn list_leads(&self, request: Request<pb::ListLeadsRequest>) -> GrpcResult<pb::ListLeadsResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Leads, self.app.now())?;
        let page = self
            .app
            .list_leads(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListLeadsResponse {
            leads: page.items.iter().map(convert::lead).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_lead(&self, request: Request<pb::UpdateLeadRequest>) -> GrpcResult<pb::UpdateLeadResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let l = required("lead", r.lead.as_ref())?;
        let id = parse("lead.name", LeadId::parse_name(&l.name))?;
        let paths = requests::mask(
            r.update_mask.as_ref(),
            &["title", "contact", "company", "source", "status", "score", "owner"],
        )?;
        let patch = requests::lead_in(l, Some(&paths))?;
        let etag = requests::etag(&l.etag, "lead.etag")?;
        let lead = self.app.update_lead(&caller, id, etag, patch).await?;
        Ok(Response::new(pb::UpdateLeadResponse {
            lead: Some(convert::lead(&lead)),
        }))
    }

    async fn disqualify_lead(
        &self,
        request: Request<pb::DisqualifyLeadRequest>,
    ) -> GrpcResult<pb::DisqualifyLeadResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", LeadId::parse_name(&r.name))?;
        let reason = parse("reason", crate::domain::values::text(&r.reason, 500, true))?;
        let etag = requests::etag(&r.etag, "etag")?;
        let lead = self.app.disqualify_lead(&caller, id, reason, etag).await?;
        Ok(Response::new(pb::DisqualifyLeadResponse {
            lead: Some(convert::lead(&lead)),
        }))
    }

    async fn convert_lead(&self, request: Request<pb::ConvertLeadRequest>) -> GrpcResult<pb::ConvertLeadResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", LeadId::parse_name(&r.name))?;
        let deal = requests::deal_in(required("deal", r.deal.as_ref())?)?;
        let etag = requests::etag(&r.etag, "etag")?;
        let (lead, deal) = self.app.convert_lead(&caller, id, deal, etag).await?;
        Ok(Response::new(pb::ConvertLeadResponse {
            lead: Some(convert::lead(&lead)),
            deal: Some(convert::deal(&deal)),
        }))
    }
}

#[tonic::async_trait]
impl pb::deal_service_server::DealService for PipelineGrpc {
    type ImportDealsStream = history::ImportStream;

    async fn import_deals(
        &self,
        request: Request<tonic::Streaming<pb::ImportDealsRequest>>,
    ) -> GrpcResult<Self::ImportDealsStream> {
        let caller = caller(&request)?;
        Ok(Response::new(
            history::run(self.app.clone(), caller, request.into_inner()).await?,
        ))
    }

    async fn create_deal(&self, request: Request<pb::CreateDealRequest>) -> GrpcResult<pb::CreateDealResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let input = requests::deal_in(required("deal", r.deal.as_ref())?)?;
        let deal = self.app.create_deal(&caller, input, key.as_ref()).await?;
        Ok(Response::new(pb::CreateDealResponse {
            deal: Some(convert::deal(&deal)),
        }))
    }

    async fn get_deal(&self, request: Request<pb::GetDealRequest>) -> GrpcResult<pb::GetDealResponse> {
        let caller = caller(&request)?;
        let id = parse("name", DealId::parse_name(&request.get_ref().name))?;
        let deal = self.app.get_deal(&caller, id).await?;
        Ok(Response::new(pb::GetDealResponse {
            deal: Some(convert::deal(&deal)),
        }))
    }

    async fn list_deals(&self, request: Request<pb::ListDealsRequest>) -> GrpcResult<pb::ListDealsResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Deals, self.app.now())?;
        let page = self
            .app
            .list_deals(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListDealsResponse {
            deals: page.items.iter().map(convert::deal).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_deal(&self, request: Request<pb::UpdateDealRequest>) -> GrpcResult<pb::UpdateDealResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let d = required("deal", r.deal.as_ref())?;
        let id = parse("deal.name", DealId::parse_name(&d.name))?;
        let paths = requests::mask(
            r.update_mask.as_ref(),
            &[
                "display_name",
                "amount",
                "expected_close_date",
                "contact",
                "company",
                "forecast_category",
                "line_items",
            ],
        )?;
        let patch = requests::deal_patch(d, Some(&paths))?;
        if paths.iter().any(|p| p == "display_name") && patch.name.as_deref() == Some("") {
            return Err(ApiError::invalid_field("deal.display_name", "is required").into());
        }
        let etag = requests::etag(&d.etag, "deal.etag")?;
        let deal = self.app.update_deal(&caller, id, etag, patch).await?;
        Ok(Response::new(pb::UpdateDealResponse {
            deal: Some(convert::deal(&deal)),
        }))
    }

    async fn move_deal(&self, request: Request<pb::MoveDealRequest>) -> GrpcResult<pb::MoveDealResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", DealId::parse_name(&r.name))?;
        let stage = stage_id(&r.stage, "stage")?.ok_or_else(|| ApiError::invalid_field("stage", "is required"))?;
        let etag = requests::etag(&r.etag, "etag")?;
        let (deal, transition) = self.app.move_deal(&caller, id, stage, etag).await?;
        Ok(Response::new(pb::MoveDealResponse {
            deal: Some(convert::deal(&deal)),
            transition: Some(convert::transition(&transition)),
        }))
    }

    async fn close_deal(&self, request: Request<pb::CloseDealRequest>) -> GrpcResult<pb::CloseDealResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", DealId::parse_name(&r.name))?;
        let won = match pb::DealStatus::try_from(r.outcome) {
            Ok(pb::DealStatus::Won) => true,
            Ok(pb::DealStatus::Lost) => false,
            _ => return Err(ApiError::invalid_field("outcome", "must be WON or LOST").into()),
        };
        let reason = parse("reason", crate::domain::values::text(&r.reason, 500, false))?;
        let etag = requests::etag(&r.etag, "etag")?;
        let (deal, transition) = self.app.close_deal(&caller, id, won, reason, etag).await?;
        Ok(Response::new(pb::CloseDealResponse {
            deal: Some(convert::deal(&deal)),
            transition: Some(convert::transition(&transition)),
        }))
    }

    async fn reopen_deal(&self, request: Request<pb::ReopenDealRequest>) -> GrpcResult<pb::ReopenDealResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", DealId::parse_name(&r.name))?;
        let stage = stage_id(&r.stage, "stage")?;
        let etag = requests::etag(&r.etag, "etag")?;
        let (deal, transition) = self.app.reopen_deal(&caller, id, stage, etag).await?;
        Ok(Response::new(pb::ReopenDealResponse {
            deal: Some(convert::deal(&deal)),
            transition: Some(convert::transition(&transition)),
        }))
    }

    async fn list_deal_history(
        &self,
        request: Request<pb::ListDealHistoryRequest>,
    ) -> GrpcResult<pb::ListDealHistoryResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", DealId::parse_name(&r.name))?;
        let page = self.app.deal_history(&caller, id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDealHistoryResponse {
            transitions: page.items.iter().map(convert::transition).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

#[tonic::async_trait]
impl pb::product_service_server::ProductService for PipelineGrpc {
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> GrpcResult<pb::CreateProductResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let input = requests::product_in(required("product", r.product.as_ref())?, None)?;
        let product = self.app.create_product(&caller, input, key.as_ref()).await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(convert::product(&product)),
        }))
    }

    async fn get_product(&self, request: Request<pb::GetProductRequest>) -> GrpcResult<pb::GetProductResponse> {
        let caller = caller(&request)?;
        let id = parse("name", ProductId::parse_name(&request.get_ref().name))?;
        let product = self.app.get_product(&caller, id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(convert::product(&product)),
        }))
    }

    async fn list_products(&self, request: Request<pb::ListProductsRequest>) -> GrpcResult<pb::ListProductsResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Products, self.app.now())?;
        let page = self
            .app
            .list_products(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: page.items.iter().map(convert::product).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> GrpcResult<pb::UpdateProductResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let p = required("product", r.product.as_ref())?;
        let id = parse("product.name", ProductId::parse_name(&p.name))?;
        let paths = requests::mask(
            r.update_mask.as_ref(),
            &["sku", "display_name", "family", "list_price", "active"],
        )?;
        let patch = requests::product_in(p, Some(&paths))?;
        let etag = requests::etag(&p.etag, "product.etag")?;
        let product = self.app.update_product(&caller, id, etag, patch).await?;
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(convert::product(&product)),
        }))
    }
}

#[tonic::async_trait]
impl pb::task_service_server::TaskService for PipelineGrpc {
    async fn create_task(&self, request: Request<pb::CreateTaskRequest>) -> GrpcResult<pb::CreateTaskResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let input = requests::task_in(required("task", r.task.as_ref())?, None)?;
        let task = self.app.create_task(&caller, input, key.as_ref()).await?;
        Ok(Response::new(pb::CreateTaskResponse {
            task: Some(convert::task(&task)),
        }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> GrpcResult<pb::GetTaskResponse> {
        let caller = caller(&request)?;
        let id = parse("name", TaskId::parse_name(&request.get_ref().name))?;
        let task = self.app.get_task(&caller, id).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(convert::task(&task)),
        }))
    }

    async fn list_tasks(&self, request: Request<pb::ListTasksRequest>) -> GrpcResult<pb::ListTasksResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Tasks, self.app.now())?;
        let page = self
            .app
            .list_tasks(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: page.items.iter().map(convert::task).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_task(&self, request: Request<pb::UpdateTaskRequest>) -> GrpcResult<pb::UpdateTaskResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let t = required("task", r.task.as_ref())?;
        let id = parse("task.name", TaskId::parse_name(&t.name))?;
        let paths = requests::mask(
            r.update_mask.as_ref(),
            &[
                "title", "notes", "due_time", "assignee", "priority", "deal", "lead", "contact",
            ],
        )?;
        let patch = requests::task_in(t, Some(&paths))?;
        let etag = requests::etag(&t.etag, "task.etag")?;
        let task = self.app.update_task(&caller, id, etag, patch).await?;
        Ok(Response::new(pb::UpdateTaskResponse {
            task: Some(convert::task(&task)),
        }))
    }

    async fn complete_task(&self, request: Request<pb::CompleteTaskRequest>) -> GrpcResult<pb::CompleteTaskResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", TaskId::parse_name(&r.name))?;
        let etag = requests::etag(&r.etag, "etag")?;
        let task = self.app.complete_task(&caller, id, etag).await?;
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(convert::task(&task)),
        }))
    }

    async fn reopen_task(&self, request: Request<pb::ReopenTaskRequest>) -> GrpcResult<pb::ReopenTaskResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let id = parse("name", TaskId::parse_name(&r.name))?;
        let etag = requests::etag(&r.etag, "etag")?;
        let task = self.app.reopen_task(&caller, id, etag).await?;
        Ok(Response::new(pb::ReopenTaskResponse {
            task: Some(convert::task(&task)),
        }))
    }
}

#[tonic::async_trait]
impl pb::forecast_service_server::ForecastService for PipelineGrpc {
    async fn submit_forecast(
        &self,
        request: Request<pb::SubmitForecastRequest>,
    ) -> GrpcResult<pb::SubmitForecastResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let key = RequestKey::of(&caller.who.user, &r.request_id, r)?;
        let f = required("forecast", r.forecast.as_ref())?;
        let mut v = crm_platform::error::Violations::new("forecast.");
        let period = v.check("period", crate::domain::Period::parse(&f.period));
        let amount = requests::money_in(&mut v, "amount", f.amount.as_ref());
        if f.amount.is_none() {
            v.add("amount", "is required");
        }
        let category = v
            .check("category", requests::forecast_category_in(f.category))
            .flatten();
        if category.is_none() {
            v.add("category", "is required (COMMIT, BEST_CASE, PIPELINE, ...)");
        }
        v.finish()?;
        let (Some(period), Some(amount), Some(category)) = (period, amount, category) else {
            return Err(ApiError::invalid_field("forecast", "is incomplete").into());
        };
        let owner = (!f.owner.is_empty()).then(|| user_or_me(&caller, &f.owner));
        let forecast = self
            .app
            .submit_forecast(&caller, owner, period, amount, category, key.as_ref())
            .await?;
        Ok(Response::new(pb::SubmitForecastResponse {
            forecast: Some(convert::forecast(&forecast)),
        }))
    }

    async fn list_forecasts(
        &self,
        request: Request<pb::ListForecastsRequest>,
    ) -> GrpcResult<pb::ListForecastsResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Forecasts, self.app.now())?;
        let page = self
            .app
            .list_forecasts(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListForecastsResponse {
            forecasts: page.items.iter().map(convert::forecast).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn set_quota(&self, request: Request<pb::SetQuotaRequest>) -> GrpcResult<pb::SetQuotaResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let q = required("quota", r.quota.as_ref())?;
        let mut v = crm_platform::error::Violations::new("quota.");
        let owner = v.check("owner", crm_platform::UserId::parse(&q.owner));
        let period = v.check("period", crate::domain::Period::parse(&q.period));
        let amount = requests::money_in(&mut v, "amount", q.amount.as_ref());
        if q.amount.is_none() {
            v.add("amount", "is required");
        }
        v.finish()?;
        let (Some(owner), Some(period), Some(amount)) = (owner, period, amount) else {
            return Err(ApiError::invalid_field("quota", "is incomplete").into());
        };
        let quota = self
            .app
            .set_quota(&caller, owner.as_str().to_owned(), period, amount)
            .await?;
        Ok(Response::new(pb::SetQuotaResponse {
            quota: Some(convert::quota(&quota)),
        }))
    }

    async fn list_quotas(&self, request: Request<pb::ListQuotasRequest>) -> GrpcResult<pb::ListQuotasResponse> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let filters = list_filters(&caller, &r.filter, Listing::Quotas, self.app.now())?;
        let page = self
            .app
            .list_quotas(&caller, filters, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListQuotasResponse {
            quotas: page.items.iter().map(convert::quota).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

/// The lists and the filter fields each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Leads,
    Deals,
    Products,
    Tasks,
    Forecasts,
    Quotas,
}

impl Listing {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Listing::Leads => &["owner", "status", "contact", "company"],
            Listing::Deals => &["pipeline", "owner", "status", "contact", "company"],
            Listing::Products => &["active"],
            Listing::Tasks => &["assignee", "status", "overdue"],
            Listing::Forecasts | Listing::Quotas => &["owner", "period"],
        }
    }

    /// The stored form of a status, accepting `OPEN` and `DEAL_STATUS_OPEN` alike.
    fn status(self, raw: &str) -> Result<&'static str, String> {
        let known: &[(&str, &str)] = match self {
            Listing::Leads => &[
                ("NEW", "new"),
                ("WORKING", "working"),
                ("QUALIFIED", "qualified"),
                ("DISQUALIFIED", "disqualified"),
                ("CONVERTED", "converted"),
            ],
            Listing::Deals => &[("OPEN", "open"), ("WON", "won"), ("LOST", "lost")],
            Listing::Tasks => &[("OPEN", "open"), ("COMPLETED", "completed")],
            _ => &[],
        };
        let prefix = match self {
            Listing::Leads => "LEAD_STATUS_",
            Listing::Deals => "DEAL_STATUS_",
            _ => "TASK_STATUS_",
        };
        let bare = raw.strip_prefix(prefix).unwrap_or(raw);
        known
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, stored)| *stored)
            .ok_or_else(|| {
                let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
                format!("status must be one of {}", names.join(", "))
            })
    }
}

fn boolean_true(field: &str, value: &str) -> Result<(), String> {
    match value {
        "true" => Ok(()),
        _ => Err(format!("`{field}` can only be `= true`")),
    }
}

/// The filters of a list request (`field = value AND ...`; `me` names the caller).
fn list_filters(
    caller: &Caller,
    raw: &str,
    listing: Listing,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Filter>, ApiError> {
    let mut filters = Vec::new();
    for term in crm_platform::filter::parse(raw)? {
        let field = term.field.as_str();
        if !listing.fields().contains(&field) {
            return Err(ApiError::invalid_field(
                "filter",
                format!(
                    "`{field}` is not a filter of this list (one of: {})",
                    listing.fields().join(", ")
                ),
            ));
        }
        if term.op != crm_platform::filter::Op::Eq {
            return Err(ApiError::invalid_field(
                "filter",
                format!("`{field}` supports `=` only"),
            ));
        }
        let value = term.value.as_str();
        let filter = match field {
            "owner" | "assignee" => {
                let user = user_or_me(caller, value);
                crm_platform::UserId::parse(&user).map(|_| Filter::Owner(user))
            }
            "status" => listing.status(value).map(Filter::Status),
            "pipeline" => PipelineId::parse_name(value).map(|id| Filter::Pipeline(id.0)),
            "contact" => crate::domain::ContactRef::parse_name(value).map(|id| Filter::Contact(id.0)),
            "company" => crate::domain::CompanyRef::parse_name(value).map(|id| Filter::Company(id.0)),
            "period" => crate::domain::Period::parse(value).map(|p| Filter::Period(p.to_string())),
            "active" => boolean_true(field, value).map(|()| Filter::ActiveOnly),
            _ => boolean_true(field, value).map(|()| Filter::DueBefore(now)),
        };
        filters.push(filter.map_err(|reason| ApiError::invalid_field("filter", format!("{field}: {reason}")))?);
    }
    Ok(filters)
}
