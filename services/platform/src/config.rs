//! Typed settings shared by every role, read from flags and `CRM_*` environment variables and
//! validated before any port is bound. Each setting's default is a named constant.

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::VerifierConfig;

/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50051";
/// Default REST listen address.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";
/// Default size of a PostgreSQL pool.
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 16;
/// Shortest HS256 secret accepted (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// Default time a process drains in-flight requests after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "20s";

/// A configuration the process refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Token verification settings.
#[derive(clap::Args, Clone)]
pub struct AuthArgs {
    /// HS256 shared secret (development and tests; at least 32 bytes).
    #[arg(long, env = "CRM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS URL of the identity provider (production; RS256/ES256).
    #[arg(long, env = "CRM_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required `iss` claim (required with --jwks-url).
    #[arg(long, env = "CRM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (required with --jwks-url).
    #[arg(long, env = "CRM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("jwks_url", &self.jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .finish()
    }
}

impl AuthArgs {
    /// Checks the settings and returns how to verify tokens. `fallback_secret` is used when
    /// neither a secret nor a JWKS URL is configured (only `crm serve` passes one).
    pub fn verifier_config(&self, fallback_secret: Option<Vec<u8>>) -> Result<VerifierConfig, ConfigError> {
        match (&self.jwt_secret, &self.jwks_url) {
            (Some(_), Some(_)) => Err(ConfigError(
                "set either CRM_JWT_SECRET or CRM_JWKS_URL, not both".into(),
            )),
            (Some(secret), None) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(ConfigError(format!(
                        "CRM_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
                    )));
                }
                Ok(VerifierConfig::SharedSecret {
                    secret: secret.as_bytes().to_vec(),
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                })
            }
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ConfigError("CRM_JWKS_URL must be an http(s) URL".into()));
                }
                let (Some(issuer), Some(audience)) = (&self.jwt_issuer, &self.jwt_audience) else {
                    return Err(ConfigError(
                        "CRM_JWKS_URL needs CRM_JWT_ISSUER and CRM_JWT_AUDIENCE".into(),
                    ));
                };
                Ok(VerifierConfig::Jwks {
                    url: url.clone(),
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                })
            }
            (None, None) => fallback_secret
                .map(|secret| VerifierConfig::SharedSecret {
                    secret,
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                })
                .ok_or_else(|| ConfigError("set CRM_JWKS_URL (production) or CRM_JWT_SECRET (development)".into())),
        }
    }
}

/// PostgreSQL settings of a service role.
#[derive(clap::Args, Clone)]
pub struct PostgresArgs {
    /// PostgreSQL URL, e.g. postgres://crm@db/crm_contact.
    #[arg(long, env = "CRM_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "CRM_DB_MAX_CONNECTIONS", default_value_t = DEFAULT_DB_MAX_CONNECTIONS)]
    pub db_max_connections: u32,
}

impl std::fmt::Debug for PostgresArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

impl PostgresArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            return Err(ConfigError("CRM_DATABASE_URL must be a postgres:// URL".into()));
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError("CRM_DB_MAX_CONNECTIONS must be at least 1".into()));
        }
        Ok(())
    }
}

/// Hides the password of a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Shutdown settings.
#[derive(clap::Args, Debug, Clone)]
pub struct ShutdownArgs {
    /// How long in-flight requests may drain after SIGTERM, e.g. 20s.
    #[arg(long, env = "CRM_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE, value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The change feed of a producing service.
#[derive(clap::Args, Debug, Clone)]
pub struct EventArgs {
    /// How long events stay on the feed, e.g. 30d; older ones are pruned, and a subscriber
    /// asking for them gets OUT_OF_RANGE.
    #[arg(long, env = "CRM_EVENT_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub event_retention: Duration,
    /// How long an idle feed waits before sending a heartbeat, e.g. 5s.
    #[arg(long, env = "CRM_FEED_HEARTBEAT", default_value = "5s", value_parser = parse_duration)]
    pub feed_heartbeat: Duration,
}

impl EventArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.event_retention < Duration::from_secs(1) {
            return Err(ConfigError("CRM_EVENT_RETENTION must be at least 1s".into()));
        }
        if self.feed_heartbeat < Duration::from_millis(100) {
            return Err(ConfigError("CRM_FEED_HEARTBEAT must be at least 100ms".into()));
        }
        Ok(())
    }
}

/// Parses durations such as `500ms`, `30s`, `5m`, `12h`, `30d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 30s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        "d" => Ok(Duration::from_secs(value * 86_400)),
        _ => Err(format!("`{raw}`: unit must be ms, s, m, h or d")),
    }
}

/// Parses a listen address.
pub fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse()
        .map_err(|_| format!("`{raw}` is not an address like 0.0.0.0:8080"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: Option<&str>, jwks: Option<&str>) -> AuthArgs {
        AuthArgs {
            jwt_secret: secret.map(str::to_owned),
            jwks_url: jwks.map(str::to_owned),
            jwt_issuer: None,
            jwt_audience: None,
        }
    }

    #[test]
    fn auth_settings_are_checked() {
        assert!(auth(Some("short"), None).verifier_config(None).is_err());
        assert!(auth(Some(&"x".repeat(32)), None).verifier_config(None).is_ok());
        assert!(auth(None, None).verifier_config(None).is_err());
        assert!(auth(None, Some("https://idp/jwks")).verifier_config(None).is_err());
        assert!(
            auth(Some(&"x".repeat(32)), Some("https://idp/jwks"))
                .verifier_config(None)
                .is_err()
        );
        let mut with_pins = auth(None, Some("https://idp/jwks"));
        with_pins.jwt_issuer = Some("https://idp".into());
        with_pins.jwt_audience = Some("crm".into());
        assert!(with_pins.verifier_config(None).is_ok());
        assert!(format!("{:?}", auth(Some("topsecret-topsecret-topsecret-xx"), None)).contains("<redacted>"));
    }

    #[test]
    fn urls_and_durations() {
        assert_eq!(
            redact_url("postgres://crm:pw@db:5432/x"),
            "postgres://crm:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        let events = |retention, heartbeat| EventArgs {
            event_retention: retention,
            feed_heartbeat: heartbeat,
        };
        assert!(
            events(Duration::from_secs(86_400), Duration::from_secs(5))
                .validate()
                .is_ok()
        );
        assert!(events(Duration::ZERO, Duration::from_secs(5)).validate().is_err());
        assert!(
            events(Duration::from_secs(60), Duration::ZERO).validate().is_err(),
            "a zero heartbeat would spin"
        );
        assert!(parse_duration("soon").is_err());
    }
}
