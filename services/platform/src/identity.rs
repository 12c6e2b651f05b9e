//! Who is calling: tenant, user and roles, built only from a verified token.

use std::fmt;

use crate::error::{ApiError, ErrorCode};

/// An organisation; every row of every service belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// 1 to 64 characters of ASCII letters, digits, '-', '_' and '.'.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 1 to 64 characters of letters, digits, '-', '_' or '.'".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user of a tenant (the `sub` of the token; owners of records are users).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// 1 to 128 characters with no whitespace or control characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid =
            !raw.is_empty() && raw.chars().count() <= 128 && !raw.chars().any(|c| c.is_control() || c.is_whitespace());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 1 to 128 characters without whitespace".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Roles of the suite, from most to least powerful within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything in the tenant.
    Admin,
    /// Reads everything, writes every record of the tenant (teams are not modelled yet).
    Manager,
    /// Reads shared records, writes the records they own.
    Rep,
    /// Reads only.
    Viewer,
    /// Another service of the suite (analytics, notification): reads the change feeds of every
    /// tenant; writes nothing.
    Service,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Manager, Role::Rep, Role::Viewer, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Rep => "rep",
            Role::Viewer => "viewer",
            Role::Service => "service",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == raw)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Admins and managers write any record of their tenant.
    pub fn writes_all(&self) -> bool {
        self.has_role(Role::Admin) || self.has_role(Role::Manager)
    }

    /// Whether the caller may write at all (everyone but a pure viewer).
    pub fn writes_any(&self) -> bool {
        self.writes_all() || self.has_role(Role::Rep)
    }

    /// Fails unless the caller may write records owned by `owner`.
    pub fn ensure_can_write_owned_by(&self, owner: &UserId) -> Result<(), ApiError> {
        if self.writes_all() || (self.has_role(Role::Rep) && &self.user == owner) {
            Ok(())
        } else if self.writes_any() {
            Err(ApiError::permission_denied("a rep may only change records they own"))
        } else {
            Err(ApiError::permission_denied("this role may not write"))
        }
    }

    /// Fails unless the caller may write at all.
    pub fn ensure_writer(&self) -> Result<(), ApiError> {
        if self.writes_any() {
            Ok(())
        } else {
            Err(ApiError::permission_denied("this role may not write"))
        }
    }
}

/// Reads the principal the auth layer put on a gRPC request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "UNAUTHENTICATED", "missing bearer token"))
}

/// Until when the caller's token is accepted, as the auth layer put it on a gRPC request
/// (None without one: a test's request, say).
pub fn token_expiry<T>(request: &tonic::Request<T>) -> Option<chrono::DateTime<chrono::Utc>> {
    request.extensions().get::<crate::auth::Expiry>().map(|expiry| expiry.0)
}

/// The caller's `authorization` header value, to pass on to another service that acts for
/// them (empty without one).
pub fn credentials<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            tenant: TenantId::parse("t1").expect("tenant"),
            user: UserId::parse("alice").expect("user"),
            roles: vec![role],
        }
    }

    #[test]
    fn role_rules() {
        let alice = UserId::parse("alice").expect("user");
        let bob = UserId::parse("bob").expect("user");
        assert!(principal(Role::Admin).ensure_can_write_owned_by(&bob).is_ok());
        assert!(principal(Role::Manager).ensure_can_write_owned_by(&bob).is_ok());
        assert!(principal(Role::Rep).ensure_can_write_owned_by(&alice).is_ok());
        assert!(principal(Role::Rep).ensure_can_write_owned_by(&bob).is_err());
        assert!(principal(Role::Viewer).ensure_can_write_owned_by(&alice).is_err());
        assert!(principal(Role::Viewer).ensure_writer().is_err());
    }

    #[test]
    fn tenant_ids_are_restricted() {
        assert!(TenantId::parse("acme-corp_1.eu").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a b").is_err());
        assert!(TenantId::parse("' OR 1=1 --").is_err());
        assert!(TenantId::parse(&"x".repeat(65)).is_err());
    }
}
