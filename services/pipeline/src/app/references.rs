//! Keeping references to the contact service's records true when it merges or erases them.

use crm_platform::{ApiError, Principal, Role, TenantId, UserId};
use serde_json::Value;

use crm_proto::crm::pipeline::v1 as pb;
use crm_proto::prost::Name;

use super::{Caller, Owned, PipelineApp, Rec};
use crate::convert;
use crate::domain::{Deal, Lead, Task};
use crate::store::{ContactChange, Write, scrub_payload};

/// A kind of record that references contacts, and the event of a change to such a reference.
trait Holder: Owned {
    type Updated: Name;
    fn updated(record: &Rec<Self>, changed: Vec<String>) -> Self::Updated;
}

impl Holder for Lead {
    type Updated = pb::LeadUpdated;
    fn updated(record: &Rec<Self>, changed_fields: Vec<String>) -> pb::LeadUpdated {
        pb::LeadUpdated {
            lead: Some(convert::lead(record)),
            changed_fields,
        }
    }
}

impl Holder for Deal {
    type Updated = pb::DealUpdated;
    fn updated(record: &Rec<Self>, changed_fields: Vec<String>) -> pb::DealUpdated {
        pb::DealUpdated {
            deal: Some(convert::deal(record)),
            changed_fields,
        }
    }
}

impl Holder for Task {
    type Updated = pb::TaskUpdated;
    fn updated(record: &Rec<Self>, changed_fields: Vec<String>) -> pb::TaskUpdated {
        pb::TaskUpdated {
            task: Some(convert::task(record)),
            changed_fields,
        }
    }
}

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
        self.repoint_kind::<Lead>(caller, field, id, write, &edit).await?;
        self.repoint_kind::<Deal>(caller, field, id, write, &edit).await?;
        // Tasks name contacts, not companies.
        if field != "company" {
            self.repoint_kind::<Task>(caller, field, id, write, &edit).await?;
        }
        Ok(())
    }

    /// [`Self::repoint`] over the records of one kind. `edit` changes a record's document.
    async fn repoint_kind<T: Holder>(
        &self,
        caller: &Caller,
        field: &'static str,
        id: uuid::Uuid,
        write: &mut Write,
        edit: &impl Fn(&mut Value) -> Vec<&'static str>,
    ) -> Result<(), ApiError> {
        let docs = self
            .store
            .referencing(caller.tenant(), T::KIND, field, id)
            .await
            .map_err(super::store_error)?;
        for doc in docs {
            let mut body = doc.body.clone();
            let fields = edit(&mut body);
            let current: Rec<T> = Rec::from_doc(doc)?;
            let body: T = serde_json::from_value(body).map_err(|e| ApiError::internal(&e))?;
            let changed = super::changed(fields);
            write.absorb(
                self.revise(caller, T::KIND, &current, body, |record| T::updated(record, changed))?
                    .1,
            );
        }
        Ok(())
    }
}
