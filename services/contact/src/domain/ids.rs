//! Resource ids (UUIDv7, generated here) and their resource names.

use uuid::Uuid;

crm_platform::resource_id!(
    /// Id of a contact; name `contacts/{id}`.
    ContactId, "contacts"
);
crm_platform::resource_id!(
    /// Id of a company; name `companies/{id}`.
    CompanyId, "companies"
);

/// Id of an interaction; name `contacts/{contact}/interactions/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InteractionId(pub Uuid);

impl InteractionId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses `contacts/{contact}/interactions/{id}`.
    pub fn parse_name(name: &str) -> Result<(ContactId, Self), String> {
        let error = || "must be a resource name like contacts/{id}/interactions/{id}".to_owned();
        let (contact, id) = name.split_once("/interactions/").ok_or_else(error)?;
        let contact = ContactId::parse_name(contact).map_err(|_| error())?;
        let id = Uuid::parse_str(id).map_err(|_| error())?;
        Ok((contact, Self(id)))
    }

    pub fn name(&self, contact: ContactId) -> String {
        format!("{}/interactions/{}", contact.name(), self.0)
    }
}

pub use crm_platform::resource::Revision;
