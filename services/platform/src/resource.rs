//! Resource ids (UUIDv7, generated in the app) with their resource names, and the revision
//! behind every etag: shared by every service's domain.

pub use uuid::Uuid;

/// Most paths an update mask may name (a resource has fewer fields than this).
pub const MAX_MASK_PATHS: usize = 64;

/// A field path in its proto spelling: `displayName` (the JSON spelling) becomes
/// `display_name`; `display_name` stays. Field names in maps and lists (merge choices, masks)
/// are accepted in either spelling.
pub fn field_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.trim().chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The etag a request is conditional on (`field` names it in errors): empty is none.
pub fn precondition(raw: &str, field: &str) -> Result<Option<Revision>, crate::ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Revision::parse_etag(raw)
        .map(Some)
        .map_err(|reason| crate::ApiError::invalid_field(field, reason))
}

/// The fields an update mask names, each parsed by `parse` (which says why a path is not one
/// the update can change). The mask holds at most [`MAX_MASK_PATHS`] paths; every bad path is
/// reported at once. An empty (or absent) mask names nothing: the update changes nothing and
/// answers the resource as it is (AIP-134; REST callers get the mask implied by their body).
pub fn update_mask<F>(
    mask: Option<&prost_types::FieldMask>,
    parse: impl Fn(&str) -> Result<F, String>,
) -> Result<Vec<F>, crate::ApiError> {
    let mut v = crate::error::Violations::new("");
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    let fields = v
        .bounded("update_mask.paths", paths, MAX_MASK_PATHS)
        .iter()
        .filter_map(|p| v.check(format!("update_mask.paths[{p}]"), parse(p)))
        .collect();
    v.finish()?;
    Ok(fields)
}

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
    /// What a condition on an etag this service never issued (or on a weak etag, which strong
    /// comparison never matches) compares as: no record is ever at it, so the condition fails
    /// like any other mismatch (412).
    pub const NEVER: Revision = Revision(0);

    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }

    pub fn etag(self) -> String {
        self.0.to_string()
    }

    /// Parses the etag of a precondition: as a resource shows it (`3`) or as an HTTP entity
    /// tag (`"3"`), compared strongly (RFC 9110): a weak tag (`W/"3"`) and a well-formed tag
    /// this service never issued are [`Revision::NEVER`], so they fail as a mismatch; only
    /// text that is no entity tag at all is refused.
    pub fn parse_etag(etag: &str) -> Result<Revision, String> {
        let etag = etag.trim();
        let (weak, tag) = match etag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, etag),
        };
        let opaque = match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner,
            None if !weak => tag,
            None => return Err("is not an entity tag (a weak tag is W/\"...\")".to_owned()),
        };
        // etagc: visible ASCII but the double quote (and obs-text, which no tag of ours has).
        if opaque.is_empty()
            || !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return Err("is not an entity tag such as \"3\"".to_owned());
        }
        if weak {
            return Ok(Revision::NEVER);
        }
        Ok(opaque
            .parse::<i64>()
            .ok()
            .filter(|r| *r > 0)
            .map_or(Revision::NEVER, Revision))
    }
}

#[cfg(test)]
mod tests {
    use super::Revision;

    #[test]
    fn field_paths_take_either_spelling() {
        assert_eq!(super::field_path("displayName"), "display_name");
        assert_eq!(super::field_path("display_name"), "display_name");
        assert_eq!(super::field_path(" consent.email "), "consent.email");
    }

    #[test]
    fn etags_compare_strongly() {
        assert_eq!(Revision::parse_etag("3"), Ok(Revision(3)));
        assert_eq!(Revision::parse_etag("\"3\""), Ok(Revision(3)));
        assert_eq!(
            Revision::parse_etag("W/\"3\""),
            Ok(Revision::NEVER),
            "weak tags never match"
        );
        assert_eq!(
            Revision::parse_etag("\"abc\""),
            Ok(Revision::NEVER),
            "not ours: a mismatch"
        );
        assert_eq!(Revision::parse_etag("\"0\""), Ok(Revision::NEVER));
        for malformed in ["\"3", "\"a b\"", "W/3", "\"\"", "a\"b"] {
            assert!(Revision::parse_etag(malformed).is_err(), "{malformed}");
        }
    }
}
