//! Resource ids (UUIDv7, generated in the app) with their resource names, and the revision
//! behind every etag: shared by every service's domain.

pub use uuid::Uuid;

/// Most paths an update mask may name (a resource has fewer fields than this).
pub const MAX_MASK_PATHS: usize = 64;

/// Declares a resource id type named `collection/{uuid}`.
#[macro_export]
macro_rules! resource_id {
    ($(#[$meta:meta])* $name:ident, $collection:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $crate::resource::Uuid);

        impl $name {
            pub const COLLECTION: &'static str = $collection;

            /// A new time-ordered id.
            pub fn generate() -> Self {
                Self($crate::resource::Uuid::now_v7())
            }

            /// Parses `collection/{uuid}`.
            pub fn parse_name(name: &str) -> Result<Self, String> {
                name.strip_prefix(concat!($collection, "/"))
                    .and_then(|id| $crate::resource::Uuid::parse_str(id).ok())
                    .map(Self)
                    .ok_or_else(|| format!("must be a resource name like {}/{{id}}", $collection))
            }

            /// `collection/{uuid}`.
            pub fn name(&self) -> String {
                format!(concat!($collection, "/{}"), self.0)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
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
