//! Signing keys from an issuer's JWKS URL, cached with a TTL (moka).
//!
//! A token whose `kid` is not in the cached set triggers one refetch (the issuer may have
//! rotated keys), at most once per `min_refetch`, so a flood of tokens with made-up key ids
//! cannot turn into a flood of requests to the issuer. Only RSA and P-256 EC signing keys
//! are kept; encryption keys and other key types are skipped.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse},
    Algorithm, DecodingKey,
};
use moka::future::Cache;

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

pub(super) struct Jwks {
    http: reqwest::Client,
    url: String,
    cache: Cache<(), Arc<Vec<Key>>>,
    min_refetch: Duration,
    last_refetch: Mutex<Option<Instant>>,
}

impl Jwks {
    pub(super) fn new(http: reqwest::Client, url: String, ttl: Duration, min_refetch: Duration) -> Self {
        Self {
            http,
            url,
            cache: Cache::builder().max_capacity(1).time_to_live(ttl).build(),
            min_refetch,
            last_refetch: Mutex::new(None),
        }
    }

    /// The key that verifies a token with this `kid` and `alg`.
    pub(super) async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Error> {
        if let Some(key) = pick(&self.keys().await?, kid, alg)? {
            return Ok(key);
        }
        if self.may_refetch() {
            self.cache.invalidate(&()).await;
            if let Some(key) = pick(&self.keys().await?, kid, alg)? {
                return Ok(key);
            }
        }
        Err(unauthorized("token signed with an unknown key"))
    }

    async fn keys(&self) -> Result<Arc<Vec<Key>>, Error> {
        self.cache.try_get_with((), self.fetch()).await.map_err(|e| (*e).clone())
    }

    fn may_refetch(&self) -> bool {
        // A poisoned lock only means another thread panicked mid-update; the Option is
        // still valid, so carry on with it.
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.min_refetch) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn fetch(&self) -> Result<Arc<Vec<Key>>, Error> {
        let unavailable = |problem: String| Error::Upstream {
            message: "the identity provider's signing keys are unavailable".into(),
            cause: Some(Arc::new(KeysUnavailable { url: self.url.clone(), problem })),
        };
        let response = self.http.get(&self.url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("status {}", response.status())));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(unavailable("document too large".into()));
        }
        let body = response.bytes().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable("document too large".into()));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| unavailable("not a JWKS document".into()))?;
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
