//! Signing keys from an identity provider's JWKS. One fetch at a time serves every waiter,
//! with a short timeout; a failed fetch is remembered briefly, so an outage costs each request
//! nothing but a quick 503; the last good keys keep verifying tokens for a bounded grace period
//! while the provider is down; and the keys' state feeds readiness and metrics.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;

use crate::error::ApiError;

/// When the keys are fetched again, and how long they may serve when that fails.
#[derive(Debug, Clone, Copy)]
pub struct JwksTiming {
    /// Keys older than this are fetched again (on the next request or readiness check).
    pub refresh_after: Duration,
    /// A token naming a key the cached set lacks triggers a fetch at most this often.
    pub min_refresh: Duration,
    /// After a failed fetch, requests do not try again for this long (they get 503 at once).
    pub retry_after_failure: Duration,
    /// The longest one fetch may take.
    pub fetch_timeout: Duration,
    /// How long past `refresh_after` the last good keys still verify tokens while every fetch
    /// fails; after that the keys are unusable and the process is not ready.
    pub stale_grace: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        Self {
            refresh_after: Duration::from_secs(3600),
            min_refresh: Duration::from_secs(30),
            retry_after_failure: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(3),
            stale_grace: Duration::from_secs(6 * 3600),
        }
    }
}

/// The state of the signing keys, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Fetched within `refresh_after` (or a shared secret: nothing to fetch).
    Fresh,
    /// The provider has not answered since the keys became due; the last good keys still serve.
    Stale,
    /// No usable keys: every request that needs one gets 503.
    Unavailable,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Fresh => "fresh",
            KeyState::Stale => "stale",
            KeyState::Unavailable => "unavailable",
        }
    }
}

struct Cached {
    keys: JwkSet,
    fetched: Instant,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    failed: Option<Instant>,
}

/// The cached key set of one JWKS URL.
pub(crate) struct JwksCache {
    url: String,
    timing: JwksTiming,
    http: reqwest::Client,
    state: std::sync::Mutex<State>,
    /// Held by the one fetch in flight; the others wait for its outcome instead of fetching.
    fetching: tokio::sync::Mutex<()>,
}

fn unavailable() -> ApiError {
    ApiError::unavailable("signing keys are unavailable: the identity provider does not answer")
}

fn unknown_key(message: &'static str) -> ApiError {
    ApiError::unauthenticated("UNKNOWN_KEY", message)
}

pub(crate) fn wrong_algorithm() -> ApiError {
    ApiError::unauthenticated(
        "WRONG_ALGORITHM",
        "token is signed with an algorithm this server does not accept",
    )
}

impl JwksCache {
    pub(crate) fn new(url: String, timing: JwksTiming) -> Self {
        Self {
            url,
            timing,
            http: reqwest::Client::builder()
                .timeout(timing.fetch_timeout)
                .connect_timeout(timing.fetch_timeout)
                .build()
                .unwrap_or_default(),
            state: std::sync::Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent state (plain assignments only).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key that verifies a token with header `kid` and `alg`.
    pub(crate) async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, ApiError> {
        if let Some(found) = self.lookup(kid, alg, self.timing.refresh_after) {
            return found;
        }
        // The keys are due, or they lack this key id (the provider may have rotated).
        let refreshed = self.refresh().await;
        let usable = self.timing.refresh_after.saturating_add(self.timing.stale_grace);
        match (self.lookup(kid, alg, usable), refreshed) {
            (Some(found), _) => found,
            (None, Ok(())) => Err(unknown_key("token signed by an unknown key")),
            (None, Err(err)) => Err(err),
        }
    }

    /// The key for `kid` among keys fetched less than `max_age` ago; None when there are no
    /// such keys or they lack the key id.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm, max_age: Duration) -> Option<Result<DecodingKey, ApiError>> {
        let state = self.state();
        let cached = state.cached.as_ref().filter(|c| c.fetched.elapsed() < max_age)?;
        let jwk = match kid {
            Some(kid) => cached.keys.find(kid)?,
            None if cached.keys.keys.len() == 1 => cached.keys.keys.first()?,
            None => return Some(Err(unknown_key("token has no key id"))),
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|ka| ka.to_string() != format!("{alg:?}"))
        {
            return Some(Err(wrong_algorithm()));
        }
        Some(DecodingKey::from_jwk(jwk).map_err(|_| unknown_key("unusable signing key")))
    }

    fn failed_recently(&self, state: &State) -> bool {
        state
            .failed
            .is_some_and(|failed| failed.elapsed() < self.timing.retry_after_failure)
    }

    /// Fetches the key set unless another caller just did (or just failed to): one fetch in
    /// flight at a time, whatever the number of waiting requests.
    async fn refresh(&self) -> Result<(), ApiError> {
        if self.failed_recently(&self.state()) {
            return Err(unavailable());
        }
        let asked = Instant::now();
        let _turn = self.fetching.lock().await;
        {
            let state = self.state();
            if state
                .cached
                .as_ref()
                .is_some_and(|c| c.fetched >= asked || c.fetched.elapsed() < self.timing.min_refresh)
            {
                return Ok(());
            }
            if state.failed.is_some_and(|failed| failed >= asked) || self.failed_recently(&state) {
                return Err(unavailable());
            }
        }
        let fetched = tokio::time::timeout(self.timing.fetch_timeout, self.fetch()).await;
        let outcome = match fetched {
            Ok(Ok(keys)) => {
                let mut state = self.state();
                state.cached = Some(Cached {
                    keys,
                    fetched: Instant::now(),
                });
                state.failed = None;
                Ok(())
            }
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timing.fetch_timeout)),
        };
        let result = outcome.map_err(|error| {
            tracing::warn!(error = %error, "jwks fetch failed");
            metrics::counter!("crm_auth_jwks_fetch_failures_total").increment(1);
            self.state().failed = Some(Instant::now());
            unavailable()
        });
        self.report();
        result
    }

    async fn fetch(&self) -> Result<JwkSet, reqwest::Error> {
        self.http.get(&self.url).send().await?.error_for_status()?.json().await
    }

    /// Fetches the keys if they are due, then says what state they are in (readiness).
    pub(crate) async fn check(&self) -> KeyState {
        let due = self
            .state()
            .cached
            .as_ref()
            .is_none_or(|c| c.fetched.elapsed() >= self.timing.refresh_after);
        if due {
            // The outcome is read from the state below.
            let _ = self.refresh().await;
        }
        self.report()
    }

    /// The keys' state, also published as gauges.
    fn report(&self) -> KeyState {
        let state = self.state();
        let (key_state, age) = match &state.cached {
            None => (KeyState::Unavailable, None),
            Some(cached) => {
                let age = cached.fetched.elapsed();
                let key_state = if age < self.timing.refresh_after {
                    KeyState::Fresh
                } else if age < self.timing.refresh_after.saturating_add(self.timing.stale_grace) {
                    KeyState::Stale
                } else {
                    KeyState::Unavailable
                };
                (key_state, Some(age))
            }
        };
        if let Some(age) = age {
            metrics::gauge!("crm_auth_signing_keys_age_seconds").set(age.as_secs_f64());
        }
        metrics::gauge!("crm_auth_signing_keys_stale").set(if key_state == KeyState::Fresh { 0.0 } else { 1.0 });
        key_state
    }
}
