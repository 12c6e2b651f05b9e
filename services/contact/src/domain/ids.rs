//! Resource ids (UUIDv7, generated here) and their resource names.

use std::fmt;

use uuid::Uuid;

macro_rules! resource_id {
    ($(#[$meta:meta])* $name:ident, $collection:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const COLLECTION: &'static str = $collection;

            /// A new time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses `collection/{uuid}`.
            pub fn parse_name(name: &str) -> Result<Self, String> {
                name.strip_prefix(concat!($collection, "/"))
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .map(Self)
                    .ok_or_else(|| format!("must be a resource name like {}/{{id}}", $collection))
            }

            /// `collection/{uuid}`.
            pub fn name(&self) -> String {
                format!(concat!($collection, "/{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

resource_id!(
    /// Id of a contact; name `contacts/{id}`.
    ContactId, "contacts"
);
resource_id!(
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

/// An optimistic-concurrency revision; the etag clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(pub i64);

impl Revision {
    pub const FIRST: Revision = Revision(1);

    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }

    pub fn etag(self) -> String {
        self.0.to_string()
    }

    /// Parses an etag; weak (`W/"3"`) and quoted (`"3"`) forms from HTTP are accepted.
    pub fn parse_etag(etag: &str) -> Result<Revision, String> {
        let bare = etag.trim().trim_start_matches("W/").trim_matches('"');
        bare.parse::<i64>()
            .ok()
            .filter(|r| *r > 0)
            .map(Revision)
            .ok_or_else(|| "is not an etag returned by this service".to_owned())
    }
}
