//! Bearer-token authentication: JWT verification (HS256 with a shared secret for development
//! and tests; RS256/ES256 against a JWKS with issuer and audience pinned for production) and a
//! tower layer that puts the verified [`Principal`] on every request, for gRPC servers and the
//! gateway alike.

mod jwks;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use self::jwks::{JwksCache, wrong_algorithm};
pub use self::jwks::{JwksTiming, KeyState};
use crate::error::ApiError;
use crate::identity::{Principal, Role, TenantId, UserId};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims the suite reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience or a list of them (RFC 7519 allows both; Auth0 and Keycloak
/// issue lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// How tokens are verified.
#[derive(Clone)]
pub enum VerifierConfig {
    /// HS256 with a shared secret (development, tests, `crm serve`).
    SharedSecret {
        secret: Vec<u8>,
        issuer: Option<String>,
        audience: Option<String>,
    },
    /// RS256/ES256 with keys from a JWKS URL (any OIDC provider).
    Jwks {
        url: String,
        issuer: String,
        audience: String,
    },
}

impl std::fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifierConfig::SharedSecret { issuer, audience, .. } => f
                .debug_struct("SharedSecret")
                .field("secret", &"<redacted>")
                .field("issuer", issuer)
                .field("audience", audience)
                .finish(),
            VerifierConfig::Jwks { url, issuer, audience } => f
                .debug_struct("Jwks")
                .field("url", url)
                .field("issuer", issuer)
                .field("audience", audience)
                .finish(),
        }
    }
}

/// Verifies bearer tokens and turns them into principals.
pub struct Verifier {
    keys: Keys,
}

/// What tokens are checked against.
enum Keys {
    Shared {
        secret: Vec<u8>,
        issuer: Option<String>,
        audience: Option<String>,
    },
    Jwks {
        cache: JwksCache,
        issuer: String,
        audience: String,
    },
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Arc<Self> {
        Self::with_timing(config, JwksTiming::default())
    }

    /// A verifier whose JWKS is fetched and kept as `timing` says.
    pub fn with_timing(config: VerifierConfig, timing: JwksTiming) -> Arc<Self> {
        let keys = match config {
            VerifierConfig::SharedSecret {
                secret,
                issuer,
                audience,
            } => Keys::Shared {
                secret,
                issuer,
                audience,
            },
            VerifierConfig::Jwks { url, issuer, audience } => Keys::Jwks {
                cache: JwksCache::new(url, timing),
                issuer,
                audience,
            },
        };
        Arc::new(Self { keys })
    }

    /// Fetches the signing keys if they are due and says what state they are in: readiness
    /// asks this, so a process whose keys are unusable is not ready.
    pub async fn check_keys(&self) -> KeyState {
        match &self.keys {
            Keys::Jwks { cache, .. } => cache.check().await,
            Keys::Shared { .. } => KeyState::Fresh,
        }
    }

    /// Verifies the value of an `authorization` header (`Bearer <jwt>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        self.verify_header_until(header).await.map(|(principal, _)| principal)
    }

    /// Verifies the value of an `authorization` header: its principal, and until when the
    /// token is accepted.
    pub async fn verify_header_until(&self, header: Option<&str>) -> Result<(Principal, Expiry), ApiError> {
        let header = header.ok_or_else(|| ApiError::unauthenticated("MISSING_TOKEN", "missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("MALFORMED_TOKEN", "authorization must be 'Bearer <token>'"))?;
        self.verify_until(token).await
    }

    /// Verifies a JWT and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_until(token).await.map(|(principal, _)| principal)
    }

    /// Verifies a JWT: its principal, and until when it is accepted.
    pub async fn verify_until(&self, token: &str) -> Result<(Principal, Expiry), ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthenticated("MALFORMED_TOKEN", "token is not a valid JWT"))?;
        let claims = match &self.keys {
            Keys::Shared {
                secret,
                issuer,
                audience,
            } => {
                let validation = validation(Algorithm::HS256, header.alg, issuer.as_deref(), audience.as_deref())?;
                decode(token, &DecodingKey::from_secret(secret), &validation)?
            }
            Keys::Jwks {
                cache,
                issuer,
                audience,
            } => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(wrong_algorithm());
                }
                let key = cache.key(header.kid.as_deref(), header.alg).await?;
                let validation = validation(header.alg, header.alg, Some(issuer), Some(audience))?;
                decode(token, &key, &validation)?
            }
        };
        let expiry = Expiry(
            i64::try_from(claims.exp.saturating_add(LEEWAY_SECS))
                .ok()
                .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        );
        Ok((principal_from_claims(claims)?, expiry))
    }
}

/// When the caller's token stops being accepted (its `exp`, with the leeway): the auth
/// layer puts it on each request beside the principal, so that a stream the request opens
/// can end with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(pub chrono::DateTime<chrono::Utc>);

fn validation(
    expected: Algorithm,
    actual: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Validation, ApiError> {
    if expected != actual {
        return Err(wrong_algorithm());
    }
    let mut validation = Validation::new(expected);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    // A pinned issuer or audience is also a required claim: a token without it is refused.
    let mut required = vec!["exp", "sub"];
    match issuer {
        Some(iss) => {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    Ok(validation)
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, ApiError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => ApiError::unauthenticated("TOKEN_EXPIRED", "token has expired"),
            ErrorKind::InvalidSignature => ApiError::unauthenticated("INVALID_SIGNATURE", "token signature is invalid"),
            ErrorKind::InvalidAlgorithm => wrong_algorithm(),
            ErrorKind::InvalidIssuer => ApiError::unauthenticated("INVALID_ISSUER", "token issuer is not accepted"),
            ErrorKind::InvalidAudience => {
                ApiError::unauthenticated("INVALID_AUDIENCE", "token audience is not accepted")
            }
            ErrorKind::ImmatureSignature => ApiError::unauthenticated("TOKEN_NOT_YET_VALID", "token is not valid yet"),
            ErrorKind::MissingRequiredClaim(claim) => ApiError::unauthenticated(
                "MISSING_CLAIM",
                format!("token has no `{claim}` claim, which this server requires"),
            ),
            _ => ApiError::unauthenticated("INVALID_TOKEN", "token is invalid"),
        })
}

fn principal_from_claims(claims: Claims) -> Result<Principal, ApiError> {
    let tenant = TenantId::parse(&claims.tenant)
        .map_err(|reason| ApiError::unauthenticated("INVALID_TOKEN", format!("tenant claim {reason}")))?;
    let user = UserId::parse(&claims.sub)
        .map_err(|reason| ApiError::unauthenticated("INVALID_TOKEN", format!("sub claim {reason}")))?;
    // Unknown role names are ignored so that an identity provider may carry roles of other systems.
    let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
    if roles.is_empty() {
        return Err(ApiError::unauthenticated(
            "NO_ROLE",
            "token carries none of the roles admin, manager, rep, viewer",
        ));
    }
    Ok(Principal { tenant, user, roles })
}

/// Mints an HS256 token, for `crm token` and tests.
pub fn mint_token(secret: &[u8], principal: &Principal, ttl: Duration) -> Result<String, ApiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|err| ApiError::internal(&err))?
        .as_secs();
    let claims = Claims {
        sub: principal.user.as_str().to_owned(),
        tenant: principal.tenant.as_str().to_owned(),
        roles: principal.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
        iss: None,
        aud: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|err| ApiError::internal(&err))
}

/// Builds the response sent instead of calling the service when authentication fails.
pub type Rejector<B> = fn(ApiError) -> http::Response<B>;

/// Decides from the caller's roles and the request line alone (before the body is read)
/// whether the call may go ahead: a caller who may not write is refused before anything it
/// sent is parsed.
pub type Admission = fn(&Principal, &http::Method, &str) -> Result<(), ApiError>;

/// The method names of gRPC calls that only read (AIP standard and custom read methods, and
/// the change feed).
const GRPC_READ_VERBS: &[&str] = &["Get", "List", "Search", "Find", "Export", "Subscribe", "Query"];

/// Methods that only read though their names start with no read verb.
const GRPC_READ_METHODS: &[&str] = &["BeforeAfter"];

/// gRPC admission: reads for every role; any other method for roles that write (so neither a
/// viewer nor a `service` token gets further than its request line).
pub fn grpc_admission(principal: &Principal, _method: &http::Method, path: &str) -> Result<(), ApiError> {
    if is_read(path.rsplit('/').next().unwrap_or_default()) {
        Ok(())
    } else {
        principal.ensure_writer()
    }
}

/// Whether the gRPC method named `rpc` (`GetContact`) only reads.
pub fn is_read(rpc: &str) -> bool {
    GRPC_READ_VERBS.iter().any(|verb| rpc.starts_with(verb)) || GRPC_READ_METHODS.contains(&rpc)
}

/// The rejection of a gRPC request: a trailers-only response carrying the status.
pub fn grpc_rejection(err: ApiError) -> http::Response<tonic::body::Body> {
    tonic::Status::from(err).into_http()
}

/// Tower layer that verifies the bearer token of every request whose path is not public and
/// inserts the [`Principal`] into the request extensions.
pub struct AuthLayer<B> {
    verifier: Arc<Verifier>,
    public_prefixes: Arc<[&'static str]>,
    admit: Admission,
    reject: Rejector<B>,
}

impl<B> Clone for AuthLayer<B> {
    fn clone(&self) -> Self {
        Self {
            verifier: Arc::clone(&self.verifier),
            public_prefixes: Arc::clone(&self.public_prefixes),
            admit: self.admit,
            reject: self.reject,
        }
    }
}

impl<B> AuthLayer<B> {
    pub fn new(
        verifier: Arc<Verifier>,
        public_prefixes: &[&'static str],
        admit: Admission,
        reject: Rejector<B>,
    ) -> Self {
        Self {
            verifier,
            public_prefixes: public_prefixes.into(),
            admit,
            reject,
        }
    }
}

impl<S, B> tower::Layer<S> for AuthLayer<B> {
    type Service = AuthService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct AuthService<S, B> {
    inner: S,
    layer: AuthLayer<B>,
}

impl<S: Clone, B> Clone for AuthService<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for AuthService<S, B>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if layer.public_prefixes.iter().any(|prefix| path.starts_with(prefix)) {
                return inner.call(request).await;
            }
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let admitted =
                layer
                    .verifier
                    .verify_header_until(header.as_deref())
                    .await
                    .and_then(|(principal, expiry)| {
                        (layer.admit)(&principal, request.method(), request.uri().path()).map(|()| (principal, expiry))
                    });
            match admitted {
                Ok((principal, expiry)) => {
                    tracing::Span::current().record("tenant", principal.tenant.as_str());
                    request.extensions_mut().insert(principal);
                    request.extensions_mut().insert(expiry);
                    inner.call(request).await
                }
                Err(err) => Ok((layer.reject)(err)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            tenant: TenantId::parse("t1").expect("tenant"),
            user: UserId::parse("alice").expect("user"),
            roles: vec![Role::Rep],
        }
    }

    fn shared(secret: &[u8]) -> Arc<Verifier> {
        Verifier::new(VerifierConfig::SharedSecret {
            secret: secret.to_vec(),
            issuer: None,
            audience: None,
        })
    }

    #[tokio::test]
    async fn accepts_a_minted_token() {
        let token = mint_token(b"s3cret-s3cret-s3cret-s3cret-s3cret", &alice(), Duration::from_secs(60)).expect("mint");
        let principal = shared(b"s3cret-s3cret-s3cret-s3cret-s3cret")
            .verify(&token)
            .await
            .expect("verify");
        assert_eq!(principal, alice());
        // Accepted until its expiry and the leeway: 60 s and 30 s from now.
        let (_, Expiry(until)) = shared(b"s3cret-s3cret-s3cret-s3cret-s3cret")
            .verify_until(&token)
            .await
            .expect("verify");
        let from_now = (until - chrono::Utc::now()).num_seconds();
        assert!((88..=90).contains(&from_now), "{from_now}");
    }

    #[tokio::test]
    async fn rejects_wrong_secret_expired_and_wrong_algorithm() {
        let secret = b"s3cret-s3cret-s3cret-s3cret-s3cret";
        let token = mint_token(b"another-secret-another-secret-xx", &alice(), Duration::from_secs(60)).expect("mint");
        assert_eq!(
            shared(secret).verify(&token).await.expect_err("bad sig").reason,
            "INVALID_SIGNATURE"
        );

        let expired = Claims {
            sub: "alice".into(),
            tenant: "t1".into(),
            roles: vec!["rep".into()],
            exp: 1,
            iat: None,
            iss: None,
            aud: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode");
        assert_eq!(
            shared(secret).verify(&token).await.expect_err("expired").reason,
            "TOKEN_EXPIRED"
        );

        let valid = Claims {
            exp: u64::MAX / 2,
            ..expired
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &valid,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode");
        assert_eq!(
            shared(secret).verify(&token).await.expect_err("alg").reason,
            "WRONG_ALGORITHM"
        );

        let jwks = Verifier::new(VerifierConfig::Jwks {
            url: "http://127.0.0.1:9/jwks".into(),
            issuer: "i".into(),
            audience: "a".into(),
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &valid,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode");
        assert_eq!(
            jwks.verify(&token).await.expect_err("hs256 on jwks").reason,
            "WRONG_ALGORITHM"
        );
    }

    #[tokio::test]
    async fn rejects_missing_and_malformed_headers() {
        let verifier = shared(b"s3cret-s3cret-s3cret-s3cret-s3cret");
        assert_eq!(
            verifier.verify_header(None).await.expect_err("missing").reason,
            "MISSING_TOKEN"
        );
        assert_eq!(
            verifier
                .verify_header(Some("Basic abc"))
                .await
                .expect_err("basic")
                .reason,
            "MALFORMED_TOKEN"
        );
        assert_eq!(
            verifier
                .verify_header(Some("Bearer not.a.jwt"))
                .await
                .expect_err("garbage")
                .reason,
            "MALFORMED_TOKEN"
        );
    }

    use crate::testing::jwks::{JwksServer, KEY_ID, Mode, now, sign};

    fn pinned(url: &str, timing: JwksTiming) -> Arc<Verifier> {
        Verifier::with_timing(
            VerifierConfig::Jwks {
                url: url.to_owned(),
                issuer: "https://idp.example".into(),
                audience: "crm".into(),
            },
            timing,
        )
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"sub": "alice", "tenant": "t1", "roles": ["rep"], "exp": now() + 300,
            "iss": "https://idp.example", "aud": "crm"})
    }

    async fn reason(verifier: &Verifier, claims: &serde_json::Value) -> String {
        verifier
            .verify(&sign(KEY_ID, claims))
            .await
            .expect_err("refused")
            .reason
            .into_owned()
    }

    #[tokio::test]
    async fn verifies_es256_against_a_jwks_with_issuer_and_audience_pinned() {
        let server = JwksServer::start().await;
        let verifier = pinned(&server.url, JwksTiming::default());
        let good = good_claims();
        let principal = verifier.verify(&sign(KEY_ID, &good)).await.expect("valid");
        assert_eq!(principal, alice());
        verifier.verify(&sign(KEY_ID, &good)).await.expect("still valid");
        assert_eq!(server.fetches(), 1, "keys are cached");

        let mut wrong_issuer = good.clone();
        wrong_issuer["iss"] = "https://evil.example".into();
        assert_eq!(reason(&verifier, &wrong_issuer).await, "INVALID_ISSUER");
        let mut wrong_audience = good.clone();
        wrong_audience["aud"] = "someone-else".into();
        assert_eq!(reason(&verifier, &wrong_audience).await, "INVALID_AUDIENCE");
        assert_eq!(
            verifier.verify(&sign("key-9", &good)).await.expect_err("kid").reason,
            "UNKNOWN_KEY"
        );
        assert!(server.fetches() <= 2, "an unknown key id does not hammer the provider");
    }

    #[tokio::test]
    async fn pinned_claims_are_required_and_audience_lists_accepted() {
        let server = JwksServer::start().await;
        let verifier = pinned(&server.url, JwksTiming::default());
        let mut no_issuer = good_claims();
        no_issuer.as_object_mut().expect("object").remove("iss");
        assert_eq!(reason(&verifier, &no_issuer).await, "MISSING_CLAIM");
        let mut no_audience = good_claims();
        no_audience.as_object_mut().expect("object").remove("aud");
        assert_eq!(reason(&verifier, &no_audience).await, "MISSING_CLAIM");

        let mut listed = good_claims();
        listed["aud"] = serde_json::json!(["other", "crm"]);
        assert_eq!(
            verifier.verify(&sign(KEY_ID, &listed)).await.expect("aud list"),
            alice()
        );
        listed["aud"] = serde_json::json!(["other", "another"]);
        assert_eq!(reason(&verifier, &listed).await, "INVALID_AUDIENCE");
    }

    #[tokio::test]
    async fn not_before_is_honoured_with_the_leeway() {
        let secret = b"s3cret-s3cret-s3cret-s3cret-s3cret";
        let verifier = shared(secret);
        let token = |nbf: u64| {
            let claims =
                serde_json::json!({"sub": "alice", "tenant": "t1", "roles": ["rep"], "exp": now() + 7200, "nbf": nbf});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret),
            )
            .expect("encode")
        };
        assert_eq!(
            verifier
                .verify(&token(now() + 3600))
                .await
                .expect_err("an hour ahead")
                .reason,
            "TOKEN_NOT_YET_VALID"
        );
        verifier
            .verify(&token(now() + LEEWAY_SECS / 2))
            .await
            .expect("within the leeway");
        verifier.verify(&token(now() - 60)).await.expect("already valid");
    }

    /// A hung provider costs one short fetch for all waiting requests, the failure is
    /// remembered, and readiness says the keys are unavailable.
    #[tokio::test]
    async fn a_hung_provider_is_asked_once_with_a_short_timeout() {
        let server = JwksServer::start().await;
        server.set_mode(Mode::Hang);
        let timing = JwksTiming {
            fetch_timeout: Duration::from_millis(500),
            retry_after_failure: Duration::from_secs(60),
            ..JwksTiming::default()
        };
        let verifier = pinned(&server.url, timing);
        let started = std::time::Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let verifier = Arc::clone(&verifier);
            requests.spawn(async move { verifier.verify(&sign(KEY_ID, &good_claims())).await });
        }
        while let Some(outcome) = requests.join_next().await {
            let err = outcome.expect("task").expect_err("no keys");
            assert_eq!(err.code, crate::ErrorCode::Unavailable);
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "four requests took {:?}",
            started.elapsed()
        );
        assert_eq!(server.fetches(), 1, "one fetch served every waiter");
        // Remembered: the next request does not ask again.
        verifier
            .verify(&sign(KEY_ID, &good_claims()))
            .await
            .expect_err("still down");
        assert_eq!(server.fetches(), 1);
        assert_eq!(verifier.check_keys().await, KeyState::Unavailable);
    }

    /// Keys past their refresh time keep serving while the provider is down, for the grace
    /// period only; readiness reports them stale, then unavailable.
    #[tokio::test]
    async fn the_last_good_keys_serve_for_a_bounded_grace() {
        let server = JwksServer::start().await;
        let timing = JwksTiming {
            refresh_after: Duration::from_millis(300),
            min_refresh: Duration::from_millis(10),
            retry_after_failure: Duration::from_millis(10),
            fetch_timeout: Duration::from_millis(200),
            stale_grace: Duration::from_millis(1500),
        };
        let verifier = pinned(&server.url, timing);
        assert_eq!(verifier.check_keys().await, KeyState::Fresh);
        server.set_mode(Mode::Fail);
        tokio::time::sleep(Duration::from_millis(400)).await;
        verifier
            .verify(&sign(KEY_ID, &good_claims()))
            .await
            .expect("stale keys still verify");
        assert_eq!(verifier.check_keys().await, KeyState::Stale);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let err = verifier
            .verify(&sign(KEY_ID, &good_claims()))
            .await
            .expect_err("past the grace");
        assert_eq!(err.code, crate::ErrorCode::Unavailable);
        assert_eq!(verifier.check_keys().await, KeyState::Unavailable);
        server.set_mode(Mode::Serve);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            verifier.check_keys().await,
            KeyState::Fresh,
            "recovers once the provider answers"
        );
        verifier
            .verify(&sign(KEY_ID, &good_claims()))
            .await
            .expect("valid again");
    }

    #[test]
    fn reads_are_told_from_changes_by_the_method_name() {
        for read in [
            "GetContact",
            "ListDeals",
            "SearchContacts",
            "QueryMetric",
            "BeforeAfter",
            "Subscribe",
        ] {
            assert!(is_read(read), "{read}");
        }
        for change in [
            "CreateContact",
            "UpdateSettings",
            "MergeContacts",
            "SetQuota",
            "BeforeAfterAll",
        ] {
            assert!(!is_read(change), "{change}");
        }
    }
}
