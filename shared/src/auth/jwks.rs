//! Signing keys from an issuer's JWKS URL, cached for a TTL.
//!
//! A token whose `kid` is not in the cached set triggers one refetch (the issuer may have
//! rotated keys), at most once per `min_refetch`, so a flood of tokens with made-up key ids
//! cannot turn into a flood of requests to the issuer. Only RSA and P-256 EC signing keys
//! are kept; encryption keys and other key types are skipped.
//!
//! An outage of the issuer does not lock users out: when a refresh fails, the last good keys
//! stay in use (past their TTL) and the next attempt waits a backoff (2 s doubling to 64 s);
//! one fetch runs at a time. The document is read with a size cap as it streams in, and a
//! redirect is refused, not followed: the keys must come from the configured URL.

use std::{
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse},
    Algorithm, DecodingKey,
};

use super::unauthorized;
use crate::error::Error;

/// Why the signing keys could not be loaded (for the log line at the edge).
#[derive(Debug, thiserror::Error)]
#[error("cannot load signing keys from {url}: {problem}")]
struct KeysUnavailable {
    url: String,
    problem: String,
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Waits after failed fetches: 2 s, doubling, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    EcP256,
}

impl Family {
    fn signs(self, alg: Algorithm) -> bool {
        matches!((self, alg), (Family::Rsa, Algorithm::RS256) | (Family::EcP256, Algorithm::ES256))
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    /// The `alg` the JWK declares, if any.
    alg: Option<String>,
    key: DecodingKey,
}

#[derive(Default)]
struct State {
    /// The last good keys and when they were fetched.
    keys: Option<Arc<Vec<Key>>>,
    fetched: Option<Instant>,
    /// Fetches that failed in a row, and no new fetch before `retry_at`.
    failures: u32,
    retry_at: Option<Instant>,
    /// The last refetch for an unknown `kid`.
    last_refetch: Option<Instant>,
    /// Counts fetches ended (either way): a task that waited for another's fetch uses it.
    generation: u64,
}

pub(super) struct Jwks {
    url: String,
    ttl: Duration,
    min_refetch: Duration,
    /// Built on the first fetch (not at cold start): never follows redirects.
    client: OnceLock<reqwest::Client>,
    state: Mutex<State>,
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    pub(super) fn new(url: String, ttl: Duration, min_refetch: Duration) -> Self {
        Self {
            url,
            ttl,
            min_refetch,
            client: OnceLock::new(),
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(super) async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Error> {
        if let Some(key) = pick(&self.keys(false).await?, kid, alg)? {
            return Ok(key);
        }
        if self.may_refetch() {
            if let Some(key) = pick(&self.keys(true).await?, kid, alg)? {
                return Ok(key);
            }
        }
        Err(unauthorized("token signed with an unknown key"))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the state is still
        // valid (each field is written whole), so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unavailable(&self, problem: String) -> Error {
        Error::Upstream {
            message: "the identity provider's signing keys are unavailable".into(),
            cause: Some(Arc::new(KeysUnavailable { url: self.url.clone(), problem })),
        }
    }

    /// The keys to verify with: the cached set while it is fresh (and `refresh` is not
    /// asked), else a new fetch, unless the last one failed less than a backoff ago. A
    /// failed fetch leaves the last good set in use.
    async fn keys(&self, refresh: bool) -> Result<Arc<Vec<Key>>, Error> {
        let generation = {
            let state = self.state();
            let now = Instant::now();
            let fresh = state.fetched.is_some_and(|at| now.duration_since(at) < self.ttl);
            let backing_off = state.retry_at.is_some_and(|at| now < at);
            match &state.keys {
                Some(keys) if (fresh && !refresh) || backing_off => return Ok(keys.clone()),
                None if backing_off => {
                    return Err(self.unavailable(format!("{} failed fetches; waiting to retry", state.failures)))
                }
                _ => state.generation,
            }
        };
        let _one_fetch = self.fetching.lock().await;
        {
            let state = self.state();
            if state.generation != generation {
                // Another task fetched while this one waited: its outcome stands.
                return state.keys.clone().ok_or_else(|| self.unavailable("the last fetch failed".into()));
            }
        }
        let outcome = self.fetch().await;
        let mut state = self.state();
        state.generation += 1;
        match outcome {
            Ok(keys) => {
                state.keys = Some(keys.clone());
                state.fetched = Some(Instant::now());
                state.failures = 0;
                state.retry_at = None;
                Ok(keys)
            }
            Err(error) => {
                state.failures += 1;
                let backoff = Duration::from_secs(1 << state.failures.min(6)).min(MAX_BACKOFF);
                state.retry_at = Some(Instant::now() + backoff);
                match &state.keys {
                    Some(keys) => {
                        tracing::warn!(
                            url = %self.url,
                            failures = state.failures,
                            retry_in_secs = backoff.as_secs(),
                            "signing keys could not be refreshed; the last good keys stay in use"
                        );
                        Ok(keys.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    fn may_refetch(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        if state.last_refetch.is_some_and(|t| now.duration_since(t) < self.min_refetch) {
            return false;
        }
        state.last_refetch = Some(now);
        true
    }

    async fn fetch(&self) -> Result<Arc<Vec<Key>>, Error> {
        let client = match self.client.get() {
            Some(client) => client,
            None => {
                let client = crate::http::outbound_client_without_redirects()
                    .map_err(|e| self.unavailable(format!("HTTP client: {e}")))?;
                self.client.get_or_init(|| client)
            }
        };
        let mut response = crate::http::traced(client.get(&self.url))
            .send()
            .await
            .map_err(|e| self.unavailable(e.without_url().to_string()))?;
        if response.status().is_redirection() {
            return Err(self.unavailable(format!("status {}: redirects are not followed", response.status())));
        }
        if !response.status().is_success() {
            return Err(self.unavailable(format!("status {}", response.status())));
        }
        let too_large = || self.unavailable(format!("document over {MAX_JWKS_BYTES} bytes"));
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(too_large());
        }
        // Read as it streams in, stopping at the cap (a missing or false length is no bound).
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unavailable(e.without_url().to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| self.unavailable("not a JWKS document".into()))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter_map(|jwk| {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Family::Rsa,
                    AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Family::EcP256,
                    _ => return None,
                };
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    family,
                    alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
                    key: DecodingKey::from_jwk(jwk).ok()?,
                })
            })
            .collect();
        tracing::info!(url = %self.url, keys = keys.len(), "loaded signing keys");
        Ok(Arc::new(keys))
    }
}

/// Finds the key for `kid` (or the only key of the right type when the token has no kid).
/// A key that exists but cannot sign `alg` is an error, not a reason to refetch.
fn pick(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, Error> {
    let candidate = match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let mut usable = keys.iter().filter(|k| k.family.signs(alg));
            match (usable.next(), usable.next()) {
                (Some(only), None) => Some(only),
                (Some(_), Some(_)) => return Err(unauthorized("token has no key id and the issuer has several keys")),
                _ => None,
            }
        }
    };
    let Some(key) = candidate else { return Ok(None) };
    let alg_matches = key.alg.as_deref().is_none_or(|declared| declared == format!("{alg:?}"));
    if key.family.signs(alg) && alg_matches {
        Ok(Some(key.key.clone()))
    } else {
        Err(unauthorized("token algorithm does not match its signing key"))
    }
}
