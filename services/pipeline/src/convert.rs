//! domain -> proto for crm.pipeline.v1: the messages of records, as the gRPC edge answers
//! with them and the application's events carry them. Below both (it knows the domain only),
//! so the application builds its events without the gRPC layer.

use chrono::{DateTime, Utc};
use crm_proto::crm::common::v1 as common;
use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost_types::Timestamp;
use uuid::Uuid;

use crate::domain::{
    Deal, DealId, DealStatus, Forecast, ForecastCategory, Lead, LeadId, LeadStatus, Money, Pipeline, PipelineId,
    Product, ProductId, Quota, Rec, Stage, StageKind, Task, TaskPriority, TaskStatus, Transition, TransitionKind,
};

pub(crate) use crm_platform::time::timestamp;

fn opt_timestamp(time: Option<DateTime<Utc>>) -> Option<Timestamp> {
    time.map(timestamp)
}

pub(crate) fn money(m: &Money) -> common::Money {
    common::Money {
        amount_minor: m.minor,
        currency_code: m.currency.clone(),
    }
}

pub(crate) fn stage_kind(kind: StageKind) -> i32 {
    match kind {
        StageKind::Open => pb::StageKind::Open,
        StageKind::Won => pb::StageKind::Won,
        StageKind::Lost => pb::StageKind::Lost,
    }
    .into()
}

pub(crate) fn lead_status(status: LeadStatus) -> i32 {
    match status {
        LeadStatus::New => pb::LeadStatus::New,
        LeadStatus::Working => pb::LeadStatus::Working,
        LeadStatus::Qualified => pb::LeadStatus::Qualified,
        LeadStatus::Disqualified => pb::LeadStatus::Disqualified,
        LeadStatus::Converted => pb::LeadStatus::Converted,
    }
    .into()
}

pub(crate) fn deal_status(status: DealStatus) -> i32 {
    match status {
        DealStatus::Open => pb::DealStatus::Open,
        DealStatus::Won => pb::DealStatus::Won,
        DealStatus::Lost => pb::DealStatus::Lost,
    }
    .into()
}

pub(crate) fn forecast_category(category: ForecastCategory) -> i32 {
    match category {
        ForecastCategory::Pipeline => pb::ForecastCategory::Pipeline,
        ForecastCategory::BestCase => pb::ForecastCategory::BestCase,
        ForecastCategory::Commit => pb::ForecastCategory::Commit,
        ForecastCategory::Closed => pb::ForecastCategory::Closed,
        ForecastCategory::Omitted => pb::ForecastCategory::Omitted,
    }
    .into()
}

fn task_priority(priority: TaskPriority) -> i32 {
    match priority {
        TaskPriority::Low => pb::TaskPriority::Low,
        TaskPriority::Normal => pb::TaskPriority::Normal,
        TaskPriority::High => pb::TaskPriority::High,
        TaskPriority::Urgent => pb::TaskPriority::Urgent,
    }
    .into()
}

fn transition_kind(kind: TransitionKind) -> i32 {
    match kind {
        TransitionKind::Created => pb::TransitionKind::Created,
        TransitionKind::Moved => pb::TransitionKind::Moved,
        TransitionKind::Won => pb::TransitionKind::Won,
        TransitionKind::Lost => pb::TransitionKind::Lost,
        TransitionKind::Reopened => pb::TransitionKind::Reopened,
    }
    .into()
}

pub(crate) fn stage(s: &Stage) -> pb::Stage {
    pb::Stage {
        id: s.id.to_string(),
        display_name: s.name.clone(),
        probability_percent: i32::from(s.probability),
        kind: stage_kind(s.kind),
    }
}

pub(crate) fn pipeline(r: &Rec<Pipeline>) -> pb::Pipeline {
    pb::Pipeline {
        name: PipelineId(r.id).name(),
        display_name: r.body.name.clone(),
        stages: r.body.stages.iter().map(stage).collect(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

fn name_of(collection: &str, id: Option<Uuid>) -> String {
    id.map(|id| format!("{collection}/{id}")).unwrap_or_default()
}

pub(crate) fn lead(r: &Rec<Lead>) -> pb::Lead {
    let l = &r.body;
    pb::Lead {
        name: LeadId(r.id).name(),
        title: l.title.clone(),
        contact: name_of("contacts", l.contact),
        company: name_of("companies", l.company),
        source: l.source.clone(),
        status: lead_status(l.status),
        disqualify_reason: l.disqualify_reason.clone(),
        score: i32::from(l.score),
        owner: l.owner.clone(),
        converted_deal: name_of("deals", l.converted_deal),
        convert_time: opt_timestamp(l.convert_time),
        converted_by: l.converted_by.clone(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
        external_id: l.external_id.clone().unwrap_or_default(),
        imported: l.external_id.is_some(),
    }
}

pub(crate) fn deal(r: &Rec<Deal>) -> pb::Deal {
    let d = &r.body;
    pb::Deal {
        name: DealId(r.id).name(),
        display_name: d.name.clone(),
        pipeline: PipelineId(d.pipeline).name(),
        stage: d.stage.to_string(),
        status: deal_status(d.status),
        amount: Some(money(&d.amount)),
        expected_close_date: d
            .close_date
            .map(|c| c.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        owner: d.owner.clone(),
        contact: name_of("contacts", d.contact),
        company: name_of("companies", d.company),
        forecast_category: forecast_category(d.forecast),
        line_items: d
            .lines
            .iter()
            .map(|l| pb::LineItem {
                product: ProductId(l.product).name(),
                sku: l.sku.clone(),
                display_name: l.name.clone(),
                quantity: l.quantity,
                unit_price: Some(money(&l.unit_price)),
                discount_bps: i32::from(l.discount_bps),
                net_amount: Some(common::Money {
                    amount_minor: l.net_minor().unwrap_or_default(),
                    currency_code: l.unit_price.currency.clone(),
                }),
            })
            .collect(),
        close_reason: d.close_reason.clone(),
        close_time: opt_timestamp(d.close_time),
        lead: name_of("leads", d.lead),
        stage_enter_time: Some(timestamp(d.stage_enter_time)),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
        external_id: d.external_id.clone().unwrap_or_default(),
        imported: d.external_id.is_some(),
    }
}

pub(crate) fn transition(t: &Transition) -> pb::StageTransition {
    pb::StageTransition {
        deal: DealId(t.deal).name(),
        sequence: t.seq,
        kind: transition_kind(t.kind),
        from_stage: t.from_stage.map(|s| s.to_string()).unwrap_or_default(),
        to_stage: t.to_stage.to_string(),
        from_stage_name: t.from_stage_name.clone(),
        to_stage_name: t.to_stage_name.clone(),
        amount: Some(money(&t.amount)),
        actor: t.actor.clone(),
        transition_time: Some(timestamp(t.time)),
        reason: t.reason.clone(),
    }
}

pub(crate) fn product(r: &Rec<Product>) -> pb::Product {
    let p = &r.body;
    pb::Product {
        name: ProductId(r.id).name(),
        sku: p.sku.clone(),
        display_name: p.name.clone(),
        family: p.family.clone(),
        list_price: Some(money(&p.price)),
        active: p.active,
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

pub(crate) fn task(r: &Rec<Task>) -> pb::Task {
    let t = &r.body;
    pb::Task {
        name: crate::domain::TaskId(r.id).name(),
        title: t.title.clone(),
        notes: t.notes.clone(),
        due_time: opt_timestamp(t.due),
        assignee: t.assignee.clone(),
        priority: task_priority(t.priority),
        status: match t.status {
            TaskStatus::Open => pb::TaskStatus::Open,
            TaskStatus::Completed => pb::TaskStatus::Completed,
        }
        .into(),
        deal: name_of("deals", t.deal),
        lead: name_of("leads", t.lead),
        contact: name_of("contacts", t.contact),
        complete_time: opt_timestamp(t.complete_time),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: r.etag(),
    }
}

pub(crate) fn forecast(r: &Rec<Forecast>) -> pb::Forecast {
    let f = &r.body;
    pb::Forecast {
        name: crate::domain::ForecastId(r.id).name(),
        owner: f.owner.clone(),
        period: f.period.clone(),
        amount: Some(money(&f.amount)),
        category: forecast_category(f.category),
        submit_time: Some(timestamp(r.create_time)),
        submitted_by: f.submitted_by.clone(),
    }
}

pub(crate) fn quota(r: &Rec<Quota>) -> pb::Quota {
    let q = &r.body;
    pb::Quota {
        name: format!("quotas/{}/{}", q.owner, q.period),
        owner: q.owner.clone(),
        period: q.period.clone(),
        amount: Some(money(&q.amount)),
        update_time: Some(timestamp(r.update_time)),
        set_by: q.set_by.clone(),
    }
}
