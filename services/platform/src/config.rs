//! Typed settings shared by every role, read from flags and `CRM_*` environment variables and
//! validated before any port is bound. Each setting's default is a named constant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A secret given either as a value or as a file holding it (`CRM_X` or `CRM_X_FILE`, how
/// Kubernetes mounts Secrets), never both. The file's content is trimmed.
pub fn value_or_file(value: Option<&str>, file: Option<&Path>, name: &str) -> Result<Option<String>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!("set {name} or {name}_FILE, not both"))),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|content| Some(content.trim().to_owned()))
            .map_err(|err| ConfigError(format!("{name}_FILE: cannot read {}: {err}", file.display()))),
        (None, None) => Ok(None),
    }
}

/// Token verification settings.
#[derive(clap::Args, Clone)]
pub struct AuthArgs {
    /// HS256 shared secret (development and tests; at least 32 bytes).
    #[arg(long, env = "CRM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A file holding the HS256 shared secret (instead of CRM_JWT_SECRET).
    #[arg(long, env = "CRM_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
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
            .field("jwt_secret_file", &self.jwt_secret_file)
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
        let secret = value_or_file(
            self.jwt_secret.as_deref(),
            self.jwt_secret_file.as_deref(),
            "CRM_JWT_SECRET",
        )?;
        match (&secret, &self.jwks_url) {
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

/// The PostgreSQL URL of a service's database, as a value or a file.
#[derive(clap::Args, Clone)]
pub struct DatabaseUrlArgs {
    /// PostgreSQL URL, e.g. postgres://crm@db/crm_contact (or give CRM_DATABASE_URL_FILE).
    #[arg(long, env = "CRM_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the PostgreSQL URL (a mounted Secret).
    #[arg(long, env = "CRM_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
}

impl std::fmt::Debug for DatabaseUrlArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseUrlArgs")
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("database_url_file", &self.database_url_file)
            .finish()
    }
}

impl DatabaseUrlArgs {
    /// The URL, read from its file if given that way; checked to be a postgres:// URL.
    pub fn url(&self) -> Result<String, ConfigError> {
        let url = value_or_file(
            self.database_url.as_deref(),
            self.database_url_file.as_deref(),
            "CRM_DATABASE_URL",
        )?
        .ok_or_else(|| ConfigError("set CRM_DATABASE_URL or CRM_DATABASE_URL_FILE".into()))?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError("CRM_DATABASE_URL must be a postgres:// URL".into()));
        }
        Ok(url)
    }
}

/// PostgreSQL settings of a service role.
#[derive(clap::Args, Clone, Debug)]
pub struct PostgresArgs {
    #[command(flatten)]
    pub database: DatabaseUrlArgs,
    /// Connections in the pool.
    #[arg(long, env = "CRM_DB_MAX_CONNECTIONS", default_value_t = DEFAULT_DB_MAX_CONNECTIONS)]
    pub db_max_connections: u32,
}

impl PostgresArgs {
    /// Checks the settings and returns the database URL.
    pub fn validate(&self) -> Result<String, ConfigError> {
        let url = self.database.url()?;
        if self.db_max_connections == 0 {
            return Err(ConfigError("CRM_DB_MAX_CONNECTIONS must be at least 1".into()));
        }
        Ok(url)
    }
}

/// How a service authenticates to the feeds it follows: a `service` role token given as a
/// value or as a file (read again on every connection, so a renewed token is used without a
/// restart), or, with an HS256 secret, one it mints itself.
#[derive(clap::Args, Clone)]
pub struct FeedCredentialArgs {
    /// A `service` role token to follow other services' feeds with; by default minted with
    /// CRM_JWT_SECRET (with CRM_JWKS_URL, this or CRM_SERVICE_TOKEN_FILE is required).
    #[arg(long, env = "CRM_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<String>,
    /// A file holding that token, read again on every connection (a mounted Secret that the
    /// identity provider's renewals or Kubernetes rotate).
    #[arg(long, env = "CRM_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for FeedCredentialArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedCredentialArgs")
            .field("service_token", &self.service_token.as_ref().map(|_| "<redacted>"))
            .field("service_token_file", &self.service_token_file)
            .finish()
    }
}

impl FeedCredentialArgs {
    /// The credentials to follow feeds with, as `user` of the `system` tenant when minted.
    pub fn credentials(
        &self,
        verifier: &VerifierConfig,
        user: &str,
    ) -> Result<crate::consumer::Credentials, ConfigError> {
        use crate::consumer::Credentials;
        match (&self.service_token, &self.service_token_file) {
            (Some(_), Some(_)) => Err(ConfigError(
                "set CRM_SERVICE_TOKEN or CRM_SERVICE_TOKEN_FILE, not both".into(),
            )),
            (Some(token), None) => Ok(Credentials::Token(token.clone())),
            (None, Some(file)) => {
                std::fs::metadata(file).map_err(|err| {
                    ConfigError(format!("CRM_SERVICE_TOKEN_FILE: cannot read {}: {err}", file.display()))
                })?;
                Ok(Credentials::File(file.clone()))
            }
            (None, None) => match verifier {
                VerifierConfig::SharedSecret { secret, .. } => Ok(Credentials::Mint {
                    secret: secret.clone(),
                    principal: crate::Principal {
                        tenant: crate::TenantId::parse("system").map_err(ConfigError)?,
                        user: crate::UserId::parse(user).map_err(ConfigError)?,
                        roles: vec![crate::Role::Service],
                    },
                    ttl: Duration::from_secs(3600),
                }),
                VerifierConfig::Jwks { .. } => Err(ConfigError(
                    "set CRM_SERVICE_TOKEN_FILE (or CRM_SERVICE_TOKEN), a service-role token, to follow feeds \
                     when tokens are verified with a JWKS"
                        .into(),
                )),
            },
        }
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

/// How the replicas of a consuming service share the feeds it follows.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Partitions each followed feed is split into among the replicas (1 to 1024; fixed for a
    /// deployment). Used by the services that follow feeds (analytics).
    #[arg(long, env = "CRM_INGEST_PARTITIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ingest_partitions: u32,
    /// How long a replica's lease of a partition lasts without renewal, e.g. 15s: a replica that
    /// dies has its partitions taken over after it.
    #[arg(long, env = "CRM_LEASE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
}

impl ScaleArgs {
    /// The scale of a role, deriving as often as `events` says.
    pub fn scale(&self, events: &EventArgs) -> Result<crate::service::Scale, ConfigError> {
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError("CRM_LEASE_TTL must be at least 1s".into()));
        }
        Ok(crate::service::Scale {
            partitions: self.ingest_partitions,
            lease_ttl: self.lease_ttl,
            derive_every: events.derive_every,
        })
    }
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
    /// How often the requests counted in memory are published as usage events, e.g. 60s.
    #[arg(long, env = "CRM_USAGE_EVERY", default_value = "60s", value_parser = parse_duration)]
    pub usage_every: Duration,
    /// How often the changes derived from the facts (segments, goal statuses, stalled deals)
    /// are looked for and published on the analytics feed, e.g. 60s.
    #[arg(long, env = "CRM_DERIVE_EVERY", default_value = "60s", value_parser = parse_duration)]
    pub derive_every: Duration,
}

impl EventArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.event_retention < Duration::from_secs(1) {
            return Err(ConfigError("CRM_EVENT_RETENTION must be at least 1s".into()));
        }
        if self.feed_heartbeat < Duration::from_millis(100) {
            return Err(ConfigError("CRM_FEED_HEARTBEAT must be at least 100ms".into()));
        }
        if self.usage_every < Duration::from_millis(100) {
            return Err(ConfigError("CRM_USAGE_EVERY must be at least 100ms".into()));
        }
        if self.derive_every < Duration::from_millis(100) {
            return Err(ConfigError("CRM_DERIVE_EVERY must be at least 100ms".into()));
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
            jwt_secret_file: None,
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
            usage_every: Duration::from_secs(60),
            derive_every: Duration::from_secs(60),
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
