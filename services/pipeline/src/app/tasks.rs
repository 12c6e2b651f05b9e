//! Tasks and reminders, and the TaskDue event published once per due time.

use chrono::{DateTime, Utc};
use crm_platform::{ApiError, Principal, Role, TenantId, UserId};
use crm_proto::prost::Name;

use super::{Caller, Page, PipelineApp, Rec, event, failed, put, revision_write};
use crate::convert;
use crate::domain::{ContactRef, DealId, LeadId, Task, TaskId, TaskPriority, TaskStatus};
use crate::store::{Filter, Kind, StoreError, Write};
use crm_proto::crm::pipeline::v1 as pb;

/// The user the service acts as when it publishes on its own (TaskDue).
pub const SYSTEM_ACTOR: &str = "crm-pipeline";

/// A task's client-set fields (None: not given / unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub notes: Option<String>,
    pub due: Option<Option<DateTime<Utc>>>,
    pub assignee: Option<String>,
    pub priority: Option<TaskPriority>,
    pub deal: Option<Option<DealId>>,
    pub lead: Option<Option<LeadId>>,
    pub contact: Option<Option<ContactRef>>,
}

fn user(raw: &str, field: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|r| ApiError::invalid_field(field, r))
}

impl PipelineApp {
    /// Checks a task's links: the deal and lead must exist in the tenant, the contact in the
    /// contact service.
    async fn task_links(
        &self,
        caller: &Caller,
        patch: &TaskPatch,
        body: &mut Task,
    ) -> Result<Vec<&'static str>, ApiError> {
        let mut changed = Vec::new();
        for (kind, field, linked, slot) in [
            (Kind::Deal, "deal", patch.deal.map(|d| d.map(|d| d.0)), &mut body.deal),
            (Kind::Lead, "lead", patch.lead.map(|l| l.map(|l| l.0)), &mut body.lead),
        ] {
            let Some(linked) = linked else { continue };
            if let Some(id) = linked {
                self.store
                    .get(caller.tenant(), kind, id)
                    .await
                    .map_err(super::store_error)?
                    .ok_or_else(|| ApiError::invalid_field(format!("task.{field}"), format!("no such {field}")))?;
            }
            if linked != *slot {
                *slot = linked;
                changed.push(field);
            }
        }
        self.patch_contact(caller, "task.contact", patch.contact, &mut body.contact, &mut changed)
            .await?;
        Ok(changed)
    }

    pub async fn create_task(
        &self,
        caller: &Caller,
        input: TaskPatch,
        request: Option<&crm_platform::idempotency::RequestKey>,
    ) -> Result<Rec<Task>, ApiError> {
        let assignee = input.assignee.clone().unwrap_or_else(|| caller.user().to_owned());
        caller
            .who
            .ensure_can_write_owned_by(&user(&assignee, "task.assignee")?)?;
        if let Some(done) = self.replay(caller, Kind::Task, request).await? {
            return Ok(done);
        }
        let title = input.title.clone().filter(|t| !t.is_empty());
        let Some(title) = title else {
            return Err(ApiError::invalid_field("task.title", "is required"));
        };
        let mut body = Task {
            title,
            notes: input.notes.clone().unwrap_or_default(),
            due: input.due.flatten(),
            assignee,
            priority: input.priority.unwrap_or(TaskPriority::Normal),
            status: TaskStatus::Open,
            deal: None,
            lead: None,
            contact: None,
            complete_time: None,
            due_notified: None,
        };
        self.task_links(caller, &input, &mut body).await?;
        let record = Rec::new(body, self.now());
        let write = Write {
            puts: vec![put(Kind::Task, &record, None)?],
            events: vec![event(
                caller,
                TaskId::COLLECTION,
                &record,
                &pb::TaskCreated {
                    task: Some(convert::task(&record)),
                },
            )?],
            ..Write::default()
        };
        let created = self.create(caller, Kind::Task, request, record, write).await?;
        self.due_changed.notify_one();
        Ok(created)
    }

    pub async fn get_task(&self, caller: &Caller, id: TaskId) -> Result<Rec<Task>, ApiError> {
        self.load(caller.tenant(), Kind::Task, id.0, &id.name()).await
    }

    /// Tasks, earliest due first (tasks without a due time last).
    pub async fn list_tasks(
        &self,
        caller: &Caller,
        filters: Vec<Filter>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Task>, ApiError> {
        self.list_page(caller, Kind::Task, filters, page_size, page_token).await
    }

    /// Writes the task's next revision with `body`, and the event `message` makes of it.
    async fn save_task<M: Name>(
        &self,
        caller: &Caller,
        current: &Rec<Task>,
        body: Task,
        message: impl FnOnce(pb::Task) -> M,
    ) -> Result<Rec<Task>, ApiError> {
        let (record, write) = self.revise(caller, Kind::Task, current, body, |record| {
            message(convert::task(record))
        })?;
        self.write(caller, &write).await?;
        self.due_changed.notify_one();
        Ok(record)
    }

    pub async fn update_task(
        &self,
        caller: &Caller,
        id: TaskId,
        etag: Option<i64>,
        patch: TaskPatch,
    ) -> Result<Rec<Task>, ApiError> {
        let current = self.writable::<Task>(caller, id.0, etag).await?;
        let mut body = current.body.clone();
        let mut changed = self.task_links(caller, &patch, &mut body).await?;
        if let Some(title) = patch.title.filter(|t| t != &body.title) {
            if title.is_empty() {
                return Err(ApiError::invalid_field("task.title", "is required"));
            }
            body.title = title;
            changed.push("title");
        }
        if let Some(notes) = patch.notes.filter(|n| n != &body.notes) {
            body.notes = notes;
            changed.push("notes");
        }
        if let Some(due) = patch.due.filter(|d| d != &body.due) {
            body.due = due;
            changed.push("due_time");
        }
        if let Some(priority) = patch.priority.filter(|p| p != &body.priority) {
            body.priority = priority;
            changed.push("priority");
        }
        if let Some(assignee) = patch.assignee.filter(|a| a != &body.assignee) {
            // The rule of create: a rep assigns tasks only to themselves; handing a task to
            // someone else is a manager's call.
            caller
                .who
                .ensure_can_write_owned_by(&user(&assignee, "task.assignee")?)?;
            body.assignee = assignee;
            changed.push("assignee");
        }
        if changed.is_empty() {
            return Ok(current);
        }
        self.save_task(caller, &current, body, |task| pb::TaskUpdated {
            task: Some(task),
            changed_fields: super::changed(changed),
        })
        .await
    }

    pub async fn complete_task(&self, caller: &Caller, id: TaskId, etag: Option<i64>) -> Result<Rec<Task>, ApiError> {
        let current = self.writable::<Task>(caller, id.0, etag).await?;
        if current.body.status == TaskStatus::Completed {
            return Err(failed("TASK_COMPLETED", "the task is already completed"));
        }
        let mut body = current.body.clone();
        body.status = TaskStatus::Completed;
        body.complete_time = Some(self.now());
        self.save_task(caller, &current, body, |task| pb::TaskCompleted { task: Some(task) })
            .await
    }

    pub async fn reopen_task(&self, caller: &Caller, id: TaskId, etag: Option<i64>) -> Result<Rec<Task>, ApiError> {
        let current = self.writable::<Task>(caller, id.0, etag).await?;
        if current.body.status == TaskStatus::Open {
            return Err(failed("TASK_OPEN", "the task is open"));
        }
        let mut body = current.body.clone();
        body.status = TaskStatus::Open;
        body.complete_time = None;
        self.save_task(caller, &current, body, |task| pb::TaskReopened { task: Some(task) })
            .await
    }

    /// Publishes TaskDue for every open task whose due time has come and has not been
    /// published for that due time yet; returns how many were published and the next due
    /// time still to come. Each publication is written with the task at the revision read, so
    /// two schedulers (replicas) cannot both publish it, and it survives restarts.
    pub async fn publish_due_tasks(&self, now: DateTime<Utc>) -> Result<(usize, Option<DateTime<Utc>>), ApiError> {
        const BATCH: usize = 200;
        let (owed, next) = self
            .store
            .owed_due_tasks(now, BATCH)
            .await
            .map_err(super::store_error)?;
        let mut published = 0;
        for (tenant, doc) in owed {
            let current: Rec<Task> = Rec::from_doc(doc)?;
            if !current.body.due_event_owed(now) {
                continue;
            }
            let caller = system_caller(tenant)?;
            let mut body = current.body.clone();
            body.due_notified = body.due;
            let record = current.next(body, now);
            let due = pb::TaskDue {
                task: Some(convert::task(&record)),
            };
            let write = revision_write(&caller, Kind::Task, current.revision, &record, &due)?;
            match self.store.write(caller.tenant(), &write).await {
                Ok(()) => published += 1,
                // Changed meanwhile (by its assignee or another replica): looked at again on
                // the next round.
                Err(StoreError::Stale) => {}
                Err(err) => return Err(super::store_error(err)),
            }
        }
        Ok((published, next))
    }
}

/// The service itself, acting in one tenant.
pub(super) fn system_caller(tenant: TenantId) -> Result<Caller, ApiError> {
    Ok(Caller {
        who: Principal {
            tenant,
            user: UserId::parse(SYSTEM_ACTOR).map_err(|e| ApiError::internal(&e))?,
            roles: vec![Role::Service],
        },
        credentials: String::new(),
    })
}
