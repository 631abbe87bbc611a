//! The Coach secret, cached in memory with a TTL.
//!
//! The secret is one JSON object of string fields (`jwt_hs256_secret`, `llm_api_key`,
//! `auth0_client_secret`, ...), read through a [`SecretSource`] (Secrets Manager) on first
//! use and kept for `COACH_SECRET_CACHE_TTL_SECS`. Values are never logged: errors name the
//! secret id, not the value.

use std::{collections::HashMap, sync::Arc, time::Duration};

use moka::future::Cache;

use crate::{
    config::{ConfigError, Env},
    error::Error,
    store::{AwsClients, SecretSource, StoreError},
};

/// Field of the Coach secret holding the language model provider's API key (also the
/// embedding service's, unless it has a key of its own).
pub const LLM_API_KEY_FIELD: &str = "llm_api_key";

/// What the caller sees when a secret cannot be read; the logs say which and why.
const UNAVAILABLE: &str = "a secret this request needs is unavailable";

/// A secret's fields, as parsed from its JSON string.
type Fields = Arc<HashMap<String, String>>;

/// Why the secret could not be used.
#[derive(Debug, thiserror::Error)]
enum SecretError {
    #[error("cannot read secret {secret_id}")]
    Read {
        secret_id: String,
        #[source]
        cause: StoreError,
    },
    #[error("secret {secret_id} is not a JSON object")]
    NotJson { secret_id: String },
}

/// The Coach secret's fields, one read of the source per TTL.
#[derive(Clone)]
pub struct Secrets {
    source: Arc<dyn SecretSource>,
    secret_id: Arc<str>,
    cache: Cache<(), Fields>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("secret_id", &self.secret_id).finish_non_exhaustive()
    }
}

/// How long the secret's fields are kept (`COACH_SECRET_CACHE_TTL_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretsConfig {
    pub ttl: Duration,
}

impl SecretsConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self { ttl: Duration::from_secs(env.number("COACH_SECRET_CACHE_TTL_SECS")?) })
    }
}

impl Secrets {
    pub fn new(source: Arc<dyn SecretSource>, secret_id: &str, ttl: Duration) -> Self {
        Self { source, secret_id: secret_id.into(), cache: Cache::builder().max_capacity(1).time_to_live(ttl).build() }
    }

    /// The Coach secret (`COACH_SECRET_ID`) in Secrets Manager.
    pub fn coach(aws: &AwsClients, config: SecretsConfig) -> Self {
        Self::new(Arc::new(aws.secrets_manager()), &aws.config.secret_id, config.ttl)
    }

    /// The secret holding the token signing key (`COACH_JWT_SECRET_ID`, by default the
    /// Coach secret) in Secrets Manager.
    pub fn signing_key(aws: &AwsClients, config: SecretsConfig) -> Self {
        Self::new(Arc::new(aws.secrets_manager()), &aws.config.jwt_secret_id, config.ttl)
    }

    /// The string field `field`; `Ok(None)` when the secret has no such field (or it is
    /// empty). Concurrent first calls share one read.
    pub async fn field(&self, field: &str) -> Result<Option<String>, Error> {
        let fields = self.cache.try_get_with((), self.fetch()).await.map_err(|e| (*e).clone())?;
        Ok(fields.get(field).filter(|v| !v.is_empty()).cloned())
    }

    async fn fetch(&self) -> Result<Fields, Error> {
        let secret_id = self.secret_id.to_string();
        let raw = self.source.secret_string(&secret_id).await.map_err(|cause| {
            Error::unavailable(UNAVAILABLE, SecretError::Read { secret_id: secret_id.clone(), cause })
        })?;
        let json: HashMap<String, serde_json::Value> = serde_json::from_str(&raw)
            .map_err(|_| Error::unavailable(UNAVAILABLE, SecretError::NotJson { secret_id }))?;
        let fields = json
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect();
        Ok(Arc::new(fields))
    }
}
