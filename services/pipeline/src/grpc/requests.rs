//! proto -> application inputs for crm.pipeline.v1: every check of a request's fields happens
//! here, each failure naming its field. (Records become messages in `crate::convert`.)

use crm_platform::ApiError;
use crm_platform::error::Violations;
use crm_proto::crm::common::v1 as common;
use crm_proto::crm::pipeline::v1 as pb;
use uuid::Uuid;

use crate::app::{DealInput, DealPatch, LeadPatch, LineInput, ProductPatch, StageInput, TaskPatch};
use crate::domain::values::text;
use crate::domain::{
    CompanyRef, ContactRef, DealId, ForecastCategory, LeadId, LeadStatus, Money, PipelineId, ProductId, StageKind,
    TaskPriority,
};

pub(crate) use crm_platform::time::from_timestamp;

pub(crate) fn money_in(v: &mut Violations, field: &str, m: Option<&common::Money>) -> Option<Money> {
    let m = m?;
    if !(0..=crm_platform::money::MAX_AMOUNT_MINOR).contains(&m.amount_minor) {
        v.add(
            format!("{field}.amount_minor"),
            format!(
                "must be from 0 to {} minor units",
                crm_platform::money::MAX_AMOUNT_MINOR
            ),
        );
        return None;
    }
    v.check(
        format!("{field}.currency_code"),
        Money::new(m.amount_minor, &m.currency_code),
    )
}

/// An etag as sent by a client (empty: none).
pub(crate) fn etag(raw: &str, field: &str) -> Result<Option<i64>, ApiError> {
    Ok(crm_platform::resource::precondition(raw, field)?.map(|r| r.0))
}

/// The update mask's paths (required, each one of `allowed`).
pub(crate) fn mask(m: Option<&crm_proto::prost_types::FieldMask>, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    crm_platform::resource::update_mask(m, |path| {
        if allowed.contains(&path) {
            Ok(path.to_owned())
        } else {
            Err(format!(
                "is not a field you can change here (one of: {})",
                allowed.join(", ")
            ))
        }
    })
}

fn reference<T>(v: &mut Violations, field: &str, raw: &str, parse: fn(&str) -> Result<T, String>) -> Option<Option<T>> {
    if raw.is_empty() {
        Some(None)
    } else {
        v.check(field, parse(raw)).map(Some)
    }
}

pub(crate) fn lead_status_in(raw: i32) -> Result<Option<LeadStatus>, String> {
    match pb::LeadStatus::try_from(raw) {
        Ok(pb::LeadStatus::Unspecified) => Ok(None),
        Ok(pb::LeadStatus::New) => Ok(Some(LeadStatus::New)),
        Ok(pb::LeadStatus::Working) => Ok(Some(LeadStatus::Working)),
        Ok(pb::LeadStatus::Qualified) => Ok(Some(LeadStatus::Qualified)),
        Ok(pb::LeadStatus::Disqualified) => Ok(Some(LeadStatus::Disqualified)),
        Ok(pb::LeadStatus::Converted) => Ok(Some(LeadStatus::Converted)),
        Err(_) => Err(format!("{raw} is not a lead status")),
    }
}

pub(crate) fn forecast_category_in(raw: i32) -> Result<Option<ForecastCategory>, String> {
    match pb::ForecastCategory::try_from(raw) {
        Ok(pb::ForecastCategory::Unspecified) => Ok(None),
        Ok(pb::ForecastCategory::Pipeline) => Ok(Some(ForecastCategory::Pipeline)),
        Ok(pb::ForecastCategory::BestCase) => Ok(Some(ForecastCategory::BestCase)),
        Ok(pb::ForecastCategory::Commit) => Ok(Some(ForecastCategory::Commit)),
        Ok(pb::ForecastCategory::Closed) => Ok(Some(ForecastCategory::Closed)),
        Ok(pb::ForecastCategory::Omitted) => Ok(Some(ForecastCategory::Omitted)),
        Err(_) => Err(format!("{raw} is not a forecast category")),
    }
}

fn task_priority_in(raw: i32) -> Result<Option<TaskPriority>, String> {
    match pb::TaskPriority::try_from(raw) {
        Ok(pb::TaskPriority::Unspecified) => Ok(None),
        Ok(pb::TaskPriority::Low) => Ok(Some(TaskPriority::Low)),
        Ok(pb::TaskPriority::Normal) => Ok(Some(TaskPriority::Normal)),
        Ok(pb::TaskPriority::High) => Ok(Some(TaskPriority::High)),
        Ok(pb::TaskPriority::Urgent) => Ok(Some(TaskPriority::Urgent)),
        Err(_) => Err(format!("{raw} is not a task priority")),
    }
}

/// Whether a create reads `field`, or an update's mask names it.
fn wants(paths: Option<&[String]>, field: &str) -> bool {
    paths.is_none_or(|p| p.iter().any(|x| x == field))
}

/// Stage inputs of a pipeline.
pub(crate) fn stages_in(p: &pb::Pipeline) -> Result<Vec<StageInput>, ApiError> {
    let mut v = Violations::new("pipeline.");
    if p.stages.is_empty() {
        v.add("stages", "needs stages: at least one open, one won and one lost");
    }
    let mut out = Vec::new();
    for (i, s) in v
        .bounded("stages", &p.stages, crate::domain::MAX_STAGES)
        .iter()
        .enumerate()
    {
        let id = if s.id.is_empty() {
            Some(None)
        } else {
            v.check(
                format!("stages[{i}].id"),
                Uuid::parse_str(&s.id)
                    .map(Some)
                    .map_err(|_| "is not a stage id".to_owned()),
            )
        };
        let name = v.check(format!("stages[{i}].display_name"), text(&s.display_name, 100, true));
        let probability = v.check(
            format!("stages[{i}].probability_percent"),
            u8::try_from(s.probability_percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| "must be between 0 and 100".to_owned()),
        );
        let kind = v.check(
            format!("stages[{i}].kind"),
            match pb::StageKind::try_from(s.kind) {
                Ok(pb::StageKind::Open) => Ok(StageKind::Open),
                Ok(pb::StageKind::Won) => Ok(StageKind::Won),
                Ok(pb::StageKind::Lost) => Ok(StageKind::Lost),
                _ => Err("must be OPEN, WON or LOST".to_owned()),
            },
        );
        if let (Some(id), Some(name), Some(probability), Some(kind)) = (id, name, probability, kind) {
            out.push(StageInput {
                id,
                name,
                probability,
                kind,
            });
        }
    }
    v.finish()?;
    Ok(out)
}

pub(crate) fn lead_in(l: &pb::Lead, paths: Option<&[String]>) -> Result<LeadPatch, ApiError> {
    let mut v = Violations::new("lead.");
    let mut patch = LeadPatch::default();
    if wants(paths, "title") {
        patch.title = v.check("title", text(&l.title, 200, paths.is_none()));
    }
    if wants(paths, "contact") {
        patch.contact = reference(&mut v, "contact", &l.contact, ContactRef::parse_name);
    }
    if wants(paths, "company") {
        patch.company = reference(&mut v, "company", &l.company, CompanyRef::parse_name);
    }
    if wants(paths, "source") {
        patch.source = v.check("source", text(&l.source, 100, false));
    }
    if wants(paths, "status") {
        patch.status = v.check("status", lead_status_in(l.status)).flatten();
    }
    if wants(paths, "score") {
        patch.score = v.check(
            "score",
            u8::try_from(l.score)
                .ok()
                .filter(|s| *s <= 100)
                .ok_or_else(|| "must be between 0 and 100".to_owned()),
        );
    }
    if paths.is_none() && !l.owner.is_empty() || paths.is_some_and(|p| p.iter().any(|x| x == "owner")) {
        patch.owner = Some(l.owner.clone());
    }
    v.finish()?;
    Ok(patch)
}

fn lines_in(v: &mut Violations, items: &[pb::LineItem]) -> Vec<LineInput> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let product = v.check(format!("line_items[{i}].product"), ProductId::parse_name(&item.product));
        if item.quantity < 1 {
            v.add(format!("line_items[{i}].quantity"), "must be at least 1");
        }
        let discount = u16::try_from(item.discount_bps).ok().filter(|d| *d <= 10_000);
        if discount.is_none() {
            v.add(format!("line_items[{i}].discount_bps"), "must be between 0 and 10000");
        }
        let price = money_in(v, &format!("line_items[{i}].unit_price"), item.unit_price.as_ref());
        if let (Some(product), Some(discount)) = (product, discount) {
            out.push(LineInput {
                product,
                quantity: item.quantity,
                unit_price: price,
                discount_bps: discount,
            });
        }
    }
    out
}

/// The fields of a deal a create or an update reads.
pub(crate) fn deal_patch(d: &pb::Deal, paths: Option<&[String]>) -> Result<DealPatch, ApiError> {
    let mut v = Violations::new("deal.");
    let mut patch = DealPatch::default();
    if wants(paths, "display_name") {
        patch.name = v.check("display_name", text(&d.display_name, 200, false));
    }
    if wants(paths, "amount") {
        patch.amount = money_in(&mut v, "amount", d.amount.as_ref());
    }
    if wants(paths, "expected_close_date") {
        patch.close_date = v.check("expected_close_date", crate::app::close_date(&d.expected_close_date));
    }
    if wants(paths, "contact") {
        patch.contact = reference(&mut v, "contact", &d.contact, ContactRef::parse_name);
    }
    if wants(paths, "company") {
        patch.company = reference(&mut v, "company", &d.company, CompanyRef::parse_name);
    }
    if wants(paths, "forecast_category") {
        patch.forecast = v
            .check("forecast_category", forecast_category_in(d.forecast_category))
            .flatten();
    }
    if wants(paths, "line_items") {
        let lines = v.bounded("line_items", &d.line_items, crate::domain::MAX_LINE_ITEMS);
        patch.lines = Some(lines_in(&mut v, lines));
    }
    v.finish()?;
    Ok(patch)
}

/// A new deal (CreateDeal, or the deal of a ConvertLead where the pipeline is the only
/// required field).
pub(crate) fn deal_in(d: &pb::Deal) -> Result<DealInput, ApiError> {
    let patch = deal_patch(d, None)?;
    let mut v = Violations::new("deal.");
    let pipeline = v.check("pipeline", PipelineId::parse_name(&d.pipeline));
    let stage = if d.stage.is_empty() {
        Some(None)
    } else {
        v.check(
            "stage",
            Uuid::parse_str(&d.stage)
                .map(Some)
                .map_err(|_| "is not a stage id".to_owned()),
        )
    };
    let owner = (!d.owner.is_empty()).then(|| d.owner.clone());
    v.finish()?;
    let (Some(pipeline), Some(stage)) = (pipeline, stage) else {
        return Err(ApiError::invalid_field("deal.pipeline", "is required"));
    };
    Ok(DealInput {
        name: patch.name.unwrap_or_default(),
        pipeline,
        stage,
        amount: patch.amount,
        close_date: patch.close_date.flatten(),
        owner,
        contact: patch.contact.flatten(),
        company: patch.company.flatten(),
        forecast: patch.forecast,
        lines: patch.lines.unwrap_or_default(),
    })
}

pub(crate) fn product_in(p: &pb::Product, paths: Option<&[String]>) -> Result<ProductPatch, ApiError> {
    let mut v = Violations::new("product.");
    let mut patch = ProductPatch::default();
    if wants(paths, "sku") {
        patch.sku = v.check("sku", text(&p.sku, 64, true));
    }
    if wants(paths, "display_name") {
        patch.name = v.check("display_name", text(&p.display_name, 200, true));
    }
    if wants(paths, "family") {
        patch.family = v.check("family", text(&p.family, 100, false));
    }
    if wants(paths, "list_price") {
        patch.price = money_in(&mut v, "list_price", p.list_price.as_ref());
        if p.list_price.is_none() {
            v.add("list_price", "is required");
        }
    }
    if paths.is_some_and(|p| p.iter().any(|x| x == "active")) {
        patch.active = Some(p.active);
    } else if paths.is_none() {
        // A new product is active unless the request says otherwise; proto3 cannot tell an
        // unset bool from false, so creation always makes an active product.
        patch.active = Some(true);
    }
    v.finish()?;
    Ok(patch)
}

pub(crate) fn task_in(t: &pb::Task, paths: Option<&[String]>) -> Result<TaskPatch, ApiError> {
    let mut v = Violations::new("task.");
    let mut patch = TaskPatch::default();
    if wants(paths, "title") {
        patch.title = v.check("title", text(&t.title, 200, true));
    }
    if wants(paths, "notes") {
        patch.notes = v.check("notes", text(&t.notes, 4000, false));
    }
    if wants(paths, "due_time") {
        patch.due = match &t.due_time {
            None => Some(None),
            Some(ts) => v.check("due_time", from_timestamp(ts)).map(Some),
        };
    }
    if wants(paths, "assignee") && !(paths.is_none() && t.assignee.is_empty()) {
        patch.assignee = Some(t.assignee.clone());
    }
    if wants(paths, "priority") {
        patch.priority = v.check("priority", task_priority_in(t.priority)).flatten();
    }
    if wants(paths, "deal") {
        patch.deal = reference(&mut v, "deal", &t.deal, DealId::parse_name);
    }
    if wants(paths, "lead") {
        patch.lead = reference(&mut v, "lead", &t.lead, LeadId::parse_name);
    }
    if wants(paths, "contact") {
        patch.contact = reference(&mut v, "contact", &t.contact, ContactRef::parse_name);
    }
    v.finish()?;
    Ok(patch)
}

/// A time of an import row: None when not given.
fn time_in(
    v: &mut Violations,
    field: &str,
    ts: Option<&crm_proto::prost_types::Timestamp>,
) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    match ts {
        None => Some(None),
        Some(ts) => v.check(field, from_timestamp(ts)).map(Some),
    }
}

fn external_id_in(v: &mut Violations, raw: &str) -> Option<String> {
    let id = v.check("external_id", text(raw, 128, true))?;
    if id.contains(['\n', '\r', '\t']) {
        v.add("external_id", "must be one line");
        return None;
    }
    Some(id)
}

/// A historical deal of ImportDeals, checked for form (the app checks it against the
/// tenant's pipelines and contacts).
pub(crate) fn historical_deal_in(d: &pb::HistoricalDeal) -> Result<crate::app::HistoricalDeal, ApiError> {
    use crate::domain::DealStatus;
    let mut v = Violations::new("deal.");
    let external_id = external_id_in(&mut v, &d.external_id);
    let name = v.check("display_name", text(&d.display_name, 200, true));
    let pipeline = v.check("pipeline", text(&d.pipeline, 200, true));
    let amount = match d.amount.as_ref() {
        None => {
            v.add("amount", "is required");
            None
        }
        some => money_in(&mut v, "amount", some),
    };
    let contact = reference(&mut v, "contact", &d.contact, ContactRef::parse_name);
    let company = reference(&mut v, "company", &d.company, CompanyRef::parse_name);
    let create_time = time_in(&mut v, "create_time", d.create_time.as_ref());
    if d.create_time.is_none() {
        v.add("create_time", "is required");
    }
    let stages = v.bounded("stages", &d.stages, crate::domain::MAX_STAGES);
    let stages: Vec<crate::app::StageEntry> = stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let time = time_in(&mut v, &format!("stages[{i}].enter_time"), s.enter_time.as_ref())?;
            Some(crate::app::StageEntry {
                stage: s.stage.clone(),
                time,
            })
        })
        .collect();
    let status = match pb::DealStatus::try_from(d.status) {
        Ok(pb::DealStatus::Unspecified | pb::DealStatus::Open) => Some(DealStatus::Open),
        Ok(pb::DealStatus::Won) => Some(DealStatus::Won),
        Ok(pb::DealStatus::Lost) => Some(DealStatus::Lost),
        Err(_) => {
            v.add("status", format!("{} is not a deal status", d.status));
            None
        }
    };
    let close_time = time_in(&mut v, "close_time", d.close_time.as_ref());
    let close_reason = v.check("close_reason", text(&d.close_reason, 500, false));
    let lead_source = v.check("lead_source", text(&d.lead_source, 100, false));
    let lead_time = time_in(&mut v, "lead_create_time", d.lead_create_time.as_ref());
    if d.lead_source.trim().is_empty() && d.lead_create_time.is_some() {
        v.add("lead_create_time", "is given without a lead_source");
    }
    let owner = (!d.owner.is_empty()).then(|| d.owner.clone());
    v.finish()?;
    match (
        external_id,
        name,
        pipeline,
        amount,
        contact,
        company,
        create_time.flatten(),
        status,
        close_time,
        close_reason,
        lead_source,
        lead_time,
    ) {
        (
            Some(external_id),
            Some(name),
            Some(pipeline),
            Some(amount),
            Some(contact),
            Some(company),
            Some(create_time),
            Some(status),
            Some(close_time),
            Some(close_reason),
            Some(lead_source),
            Some(lead_time),
        ) => Ok(crate::app::HistoricalDeal {
            external_id,
            name,
            pipeline,
            owner,
            amount,
            contact,
            company,
            create_time,
            stages,
            status,
            close_time,
            close_reason,
            lead: (!lead_source.is_empty()).then_some((lead_source, lead_time)),
        }),
        _ => Err(ApiError::internal(&"a historical deal passed its checks incomplete")),
    }
}

/// A historical lead of ImportDeals, checked for form.
pub(crate) fn historical_lead_in(l: &pb::HistoricalLead) -> Result<crate::app::HistoricalLead, ApiError> {
    let mut v = Violations::new("lead.");
    let external_id = external_id_in(&mut v, &l.external_id);
    let title = v.check("title", text(&l.title, 200, true));
    let source = v.check("source", text(&l.source, 100, false));
    let contact = reference(&mut v, "contact", &l.contact, ContactRef::parse_name);
    let company = reference(&mut v, "company", &l.company, CompanyRef::parse_name);
    let create_time = time_in(&mut v, "create_time", l.create_time.as_ref());
    if l.create_time.is_none() {
        v.add("create_time", "is required");
    }
    let status = v.check("status", lead_status_in(l.status));
    let disqualify_reason = v.check("disqualify_reason", text(&l.disqualify_reason, 500, false));
    let status_time = time_in(&mut v, "status_time", l.status_time.as_ref());
    let owner = (!l.owner.is_empty()).then(|| l.owner.clone());
    v.finish()?;
    match (
        external_id,
        title,
        source,
        contact,
        company,
        create_time.flatten(),
        status,
        disqualify_reason,
        status_time,
    ) {
        (
            Some(external_id),
            Some(title),
            Some(source),
            Some(contact),
            Some(company),
            Some(create_time),
            Some(status),
            Some(disqualify_reason),
            Some(status_time),
        ) => Ok(crate::app::HistoricalLead {
            external_id,
            title,
            owner,
            source,
            contact,
            company,
            create_time,
            status: status.unwrap_or(LeadStatus::New),
            disqualify_reason,
            status_time,
        }),
        _ => Err(ApiError::internal(&"a historical lead passed its checks incomplete")),
    }
}
