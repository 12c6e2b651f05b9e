//! An identity provider for tests: a JWKS served over HTTP on 127.0.0.1 with one ES256 key,
//! which can be switched to hang or fail (an outage), and a signer of tokens with that key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The key id the JWKS serves.
pub const KEY_ID: &str = "key-1";

/// A throwaway P-256 key made for tests only.
const TEST_EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgR+FAtuIva1eXmKCp
1kbgK1Vldt20Euh0b6YQpO+czyqhRANCAAQXf7lMd4wJP0jNFwPuQA36gV4jqZKM
Yhy7sQVMIF1NYmiW4FlHJ/h95DcTrQdE/9cK3cY2LdtaRG7kBwG5NZ9R
-----END PRIVATE KEY-----";

/// How the JWKS endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// The key set.
    Serve = 0,
    /// Never answers (a hung provider).
    Hang = 1,
    /// 503.
    Fail = 2,
}

/// A running JWKS endpoint.
pub struct JwksServer {
    /// `http://127.0.0.1:<port>/jwks`.
    pub url: String,
    mode: Arc<AtomicU8>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Serves the key set on a free port of 127.0.0.1 (on the current tokio runtime).
    pub async fn start() -> JwksServer {
        let mode = Arc::new(AtomicU8::new(Mode::Serve as u8));
        let fetches = Arc::new(AtomicUsize::new(0));
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": KEY_ID, "alg": "ES256", "use": "sig",
            "x": "F3-5THeMCT9IzRcD7kAN-oFeI6mSjGIcu7EFTCBdTWI",
            "y": "aJbgWUcn-H3kNxOtB0T_1wrdxjYt21pEbuQHAbk1n1E"
        }]});
        let (answer_mode, counter) = (Arc::clone(&mode), Arc::clone(&fetches));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                let mode = answer_mode.load(Ordering::SeqCst);
                async move {
                    use axum::response::IntoResponse;
                    if mode == Mode::Hang as u8 {
                        std::future::pending::<()>().await;
                    }
                    if mode == Mode::Fail as u8 {
                        return http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    axum::Json(jwks).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url, mode, fetches }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// How many times the key set was asked for.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A token with `claims`, signed ES256 with the served key under `kid`.
pub fn sign(kid: &str, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_ec_pem(TEST_EC_KEY.as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}
