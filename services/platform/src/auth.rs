//! Bearer-token authentication: JWT verification (HS256 with a shared secret for development
//! and tests; RS256/ES256 against a JWKS with issuer and audience pinned for production) and a
//! tower layer that puts the verified [`Principal`] on every request, for gRPC servers and the
//! gateway alike.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::error::ApiError;
use crate::identity::{Principal, Role, TenantId, UserId};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// A JWKS is fetched again at most this often when a token names an unknown key.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// Keys are refreshed at least this often.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

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
    pub aud: Option<String>,
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

struct CachedJwks {
    keys: JwkSet,
    fetched: Instant,
}

/// Verifies bearer tokens and turns them into principals.
pub struct Verifier {
    config: VerifierConfig,
    jwks: RwLock<Option<CachedJwks>>,
    http: reqwest::Client,
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            jwks: RwLock::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        })
    }

    /// Verifies the value of an `authorization` header (`Bearer <jwt>`).
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let header = header.ok_or_else(|| ApiError::unauthenticated("MISSING_TOKEN", "missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("MALFORMED_TOKEN", "authorization must be 'Bearer <token>'"))?;
        self.verify(token).await
    }

    /// Verifies a JWT and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthenticated("MALFORMED_TOKEN", "token is not a valid JWT"))?;
        let claims = match &self.config {
            VerifierConfig::SharedSecret {
                secret,
                issuer,
                audience,
            } => {
                let validation = validation(Algorithm::HS256, header.alg, issuer.as_deref(), audience.as_deref())?;
                decode(token, &DecodingKey::from_secret(secret), &validation)?
            }
            VerifierConfig::Jwks { issuer, audience, .. } => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(wrong_algorithm());
                }
                let key = self.jwks_key(header.kid.as_deref(), header.alg).await?;
                let validation = validation(header.alg, header.alg, Some(issuer), Some(audience))?;
                decode(token, &key, &validation)?
            }
        };
        principal_from_claims(claims)
    }

    async fn jwks_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, ApiError> {
        if let Some(key) = self.cached_key(kid, alg, JWKS_MAX_AGE).await {
            return key;
        }
        self.refresh_jwks().await?;
        self.cached_key(kid, alg, Duration::MAX).await.unwrap_or_else(|| {
            Err(ApiError::unauthenticated(
                "UNKNOWN_KEY",
                "token signed by an unknown key",
            ))
        })
    }

    async fn cached_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        max_age: Duration,
    ) -> Option<Result<DecodingKey, ApiError>> {
        let cache = self.jwks.read().await;
        let cached = cache.as_ref().filter(|c| c.fetched.elapsed() < max_age)?;
        let jwk = match kid {
            Some(kid) => cached.keys.find(kid)?,
            None if cached.keys.keys.len() == 1 => cached.keys.keys.first()?,
            None => return Some(Err(ApiError::unauthenticated("UNKNOWN_KEY", "token has no key id"))),
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|ka| ka.to_string() != format!("{alg:?}"))
        {
            return Some(Err(wrong_algorithm()));
        }
        Some(DecodingKey::from_jwk(jwk).map_err(|_| ApiError::unauthenticated("UNKNOWN_KEY", "unusable signing key")))
    }

    async fn refresh_jwks(&self) -> Result<(), ApiError> {
        let VerifierConfig::Jwks { url, .. } = &self.config else {
            return Ok(());
        };
        let mut cache = self.jwks.write().await;
        if cache.as_ref().is_some_and(|c| c.fetched.elapsed() < JWKS_MIN_REFRESH) {
            return Ok(());
        }
        let keys: JwkSet = async { self.http.get(url).send().await?.error_for_status()?.json().await }
            .await
            .map_err(|err: reqwest::Error| {
                tracing::warn!(error = %err, "jwks fetch failed");
                ApiError::unavailable("signing keys are unavailable")
            })?;
        *cache = Some(CachedJwks {
            keys,
            fetched: Instant::now(),
        });
        Ok(())
    }
}

fn wrong_algorithm() -> ApiError {
    ApiError::unauthenticated(
        "WRONG_ALGORITHM",
        "token is signed with an algorithm this server does not accept",
    )
}

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
    validation.set_required_spec_claims(&["exp", "sub"]);
    match issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
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

/// The rejection of a gRPC request: a trailers-only response carrying the status.
pub fn grpc_rejection(err: ApiError) -> http::Response<tonic::body::Body> {
    tonic::Status::from(err).into_http()
}

/// Tower layer that verifies the bearer token of every request whose path is not public and
/// inserts the [`Principal`] into the request extensions.
pub struct AuthLayer<B> {
    verifier: Arc<Verifier>,
    public_prefixes: Arc<[&'static str]>,
    reject: Rejector<B>,
}

impl<B> Clone for AuthLayer<B> {
    fn clone(&self) -> Self {
        Self {
            verifier: Arc::clone(&self.verifier),
            public_prefixes: Arc::clone(&self.public_prefixes),
            reject: self.reject,
        }
    }
}

impl<B> AuthLayer<B> {
    pub fn new(verifier: Arc<Verifier>, public_prefixes: &[&'static str], reject: Rejector<B>) -> Self {
        Self {
            verifier,
            public_prefixes: public_prefixes.into(),
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
            match layer.verifier.verify_header(header.as_deref()).await {
                Ok(principal) => {
                    tracing::Span::current().record("tenant", principal.tenant.as_str());
                    request.extensions_mut().insert(principal);
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

    /// A throwaway P-256 key made for this test only.
    const TEST_EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgR+FAtuIva1eXmKCp
1kbgK1Vldt20Euh0b6YQpO+czyqhRANCAAQXf7lMd4wJP0jNFwPuQA36gV4jqZKM
Yhy7sQVMIF1NYmiW4FlHJ/h95DcTrQdE/9cK3cY2LdtaRG7kBwG5NZ9R
-----END PRIVATE KEY-----";

    /// Serves a JWKS with the test key's public half on 127.0.0.1 and returns its URL and a
    /// counter of fetches.
    async fn jwks_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "key-1", "alg": "ES256", "use": "sig",
            "x": "F3-5THeMCT9IzRcD7kAN-oFeI6mSjGIcu7EFTCBdTWI",
            "y": "aJbgWUcn-H3kNxOtB0T_1wrdxjYt21pEbuQHAbk1n1E"
        }]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, fetches)
    }

    fn es256(kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_ec_pem(TEST_EC_KEY.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    #[tokio::test]
    async fn verifies_es256_against_a_jwks_with_issuer_and_audience_pinned() {
        let (url, fetches) = jwks_server().await;
        let verifier = Verifier::new(VerifierConfig::Jwks {
            url,
            issuer: "https://idp.example".into(),
            audience: "crm".into(),
        });
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 300;
        let good = serde_json::json!({"sub": "alice", "tenant": "t1", "roles": ["rep"], "exp": exp, "iss": "https://idp.example", "aud": "crm"});
        let principal = verifier.verify(&es256("key-1", &good)).await.expect("valid");
        assert_eq!(principal, alice());
        verifier.verify(&es256("key-1", &good)).await.expect("still valid");
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1, "keys are cached");

        let mut wrong_issuer = good.clone();
        wrong_issuer["iss"] = "https://evil.example".into();
        assert_eq!(
            verifier
                .verify(&es256("key-1", &wrong_issuer))
                .await
                .expect_err("iss")
                .reason,
            "INVALID_ISSUER"
        );
        let mut wrong_audience = good.clone();
        wrong_audience["aud"] = "someone-else".into();
        assert_eq!(
            verifier
                .verify(&es256("key-1", &wrong_audience))
                .await
                .expect_err("aud")
                .reason,
            "INVALID_AUDIENCE"
        );
        assert_eq!(
            verifier.verify(&es256("key-9", &good)).await.expect_err("kid").reason,
            "UNKNOWN_KEY"
        );
        assert!(
            fetches.load(std::sync::atomic::Ordering::SeqCst) <= 2,
            "an unknown key id does not hammer the provider"
        );
    }
}
