//! Interactions: logged on a contact, read, deleted, and listed as a contact's or a company's
//! timeline.

use crm_platform::paging::PageRequest;
use crm_platform::{ApiError, Principal};

use super::{ContactApp, Page};
use crate::domain::*;
use crate::store::{Created, RequestKey, TimelineOf, interaction_cursor};

impl ContactApp {
    /// Logs an interaction. Anyone who writes may log on any contact of the tenant, but only
    /// admins and managers may log on someone else's behalf.
    pub async fn create_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        fields: InteractionFields,
        key: Option<RequestKey>,
    ) -> Result<Created<Interaction>, ApiError> {
        who.ensure_writer()?;
        who.ensure_can_write_owned_by(&fields.actor)?;
        let interaction = Interaction {
            id: InteractionId::generate(),
            contact,
            company: None,
            fields,
            create_time: self.now(),
        };
        let tenant = &who.tenant;
        self.store
            .create_interaction(tenant, &interaction, key.as_ref(), &|logged| {
                super::events::interaction_logged(tenant, logged)
            })
            .await
            .map_err(|err| err.into_api("contact"))
    }

    pub async fn get_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<Interaction, ApiError> {
        self.store
            .get_interaction(&who.tenant, contact, id)
            .await
            .map_err(|err| err.into_api("interaction"))
    }

    pub async fn list_interactions(
        &self,
        who: &Principal,
        of: TimelineOf,
        size: i32,
        token: &str,
    ) -> Result<Page<Interaction>, ApiError> {
        let parent = match of {
            TimelineOf::Contact(id) => id.name(),
            TimelineOf::Company(id) => id.name(),
        };
        // An unknown parent is a 404, not an empty timeline.
        match of {
            TimelineOf::Contact(id) => self.get_contact(who, id).await.map(drop)?,
            TimelineOf::Company(id) => self.get_company(who, id).await.map(drop)?,
        }
        let page = PageRequest::<Cursor>::parse(size, token, &["interactions", &parent])?;
        let (after, limit) = (page.after.clone(), page.limit);
        let rows = self
            .store
            .list_interactions(&who.tenant, of, after.as_ref(), limit)
            .await
            .map_err(|err| err.into_api("interactions"))?;
        Ok(page.page(rows, interaction_cursor))
    }

    pub async fn delete_interaction(
        &self,
        who: &Principal,
        contact: ContactId,
        id: InteractionId,
    ) -> Result<(), ApiError> {
        let current = self.get_interaction(who, contact, id).await?;
        who.ensure_can_write_owned_by(&current.fields.actor)?;
        self.store
            .delete_interaction(&who.tenant, contact, id)
            .await
            .map_err(|err| err.into_api("interaction"))
    }
}
