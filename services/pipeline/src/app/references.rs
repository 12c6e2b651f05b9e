//! Keeping references to the contact service's records true when it merges or erases them.

use crm_platform::{ApiError, Principal, Role, TenantId, UserId};
use serde_json::Value;

use super::{Caller, PipelineApp, Rec};
use crate::store::{ContactChange, Kind, Write, scrub_payload};

/// The kinds that reference contacts, and their event when such a reference changes.
const CONTACT_HOLDERS: &[(Kind, &str)] = &[
    (Kind::Lead, "crm.pipeline.v1.LeadUpdated"),
    (Kind::Deal, "crm.pipeline.v1.DealUpdated"),
    (Kind::Task, "crm.pipeline.v1.TaskUpdated"),
];

impl PipelineApp {
    /// The writes that apply a contact-service change to this service's records (read now;
    /// written at the revisions read, so a concurrent change makes the caller read again).
    pub async fn follow_contact_change(
        &self,
        tenant: &TenantId,
        actor: &str,
        change: &ContactChange,
    ) -> Result<Vec<(TenantId, Write)>, ApiError> {
        let caller = Caller {
            who: Principal {
                tenant: tenant.clone(),
                user: UserId::parse(actor)
                    .or_else(|_| UserId::parse(super::tasks::SYSTEM_ACTOR))
                    .map_err(|e| ApiError::internal(&e))?,
                roles: vec![Role::Service],
            },
            credentials: String::new(),
        };
        let mut write = Write::default();
        match change {
            ContactChange::ContactsMerged { survivor, merged } => {
                for old in merged {
                    self.repoint(&caller, "contact", *old, &mut write, |body| {
                        body["contact"] = Value::String(survivor.to_string());
                        vec!["contact"]
                    })
                    .await?;
                    write.merges.push((*old, *survivor));
                }
            }
            ContactChange::CompaniesMerged { survivor, merged } => {
                for old in merged {
                    self.repoint(&caller, "company", *old, &mut write, |body| {
                        body["company"] = Value::String(survivor.to_string());
                        vec!["company"]
                    })
                    .await?;
                }
            }
            ContactChange::ContactErased { contact } => {
                // The person may be on record under ids merged into this one, too.
                let mut ids = self
                    .store
                    .merged_into(tenant, *contact)
                    .await
                    .map_err(super::store_error)?;
                ids.push(*contact);
                for id in ids {
                    let needle = id.to_string();
                    self.repoint(&caller, "contact", id, &mut write, |body| {
                        scrub_payload(body, &needle);
                        vec!["contact", "title", "notes"]
                    })
                    .await?;
                    write.scrub.push(needle);
                }
            }
        }
        Ok(vec![(tenant.clone(), write)])
    }

    /// Adds to `write` the change `edit` makes to every record whose `field` is `id`.
    async fn repoint(
        &self,
        caller: &Caller,
        field: &'static str,
        id: uuid::Uuid,
        write: &mut Write,
        edit: impl Fn(&mut Value) -> Vec<&'static str>,
    ) -> Result<(), ApiError> {
        for (kind, event_kind) in CONTACT_HOLDERS {
            if field == "company" && *kind == Kind::Task {
                continue;
            }
            let docs = self
                .store
                .referencing(caller.tenant(), *kind, field, id)
                .await
                .map_err(super::store_error)?;
            for doc in docs {
                let current: Rec<Value> = Rec::from_doc(doc)?;
                let mut body = current.body.clone();
                let fields = edit(&mut body);
                write.absorb(
                    self.revise(caller, *kind, event_kind, &current, body, super::changed(fields))?
                        .1,
                );
            }
        }
        Ok(())
    }
}
