//! Secrets from AWS Secrets Manager, cached in memory with a TTL.
//!
//! A Coach secret is one JSON object of string fields (`jwt_hs256_secret`, `llm_api_key`,
//! `auth0_client_secret`, ...). Values are fetched on first use, kept for the configured
//! TTL, and never logged: errors name the secret id and field, not the value.

use std::{collections::HashMap, sync::Arc, time::Duration};

use moka::future::Cache;

use crate::{aws::classify, error::Error};

/// What the caller sees when a secret cannot be read; the logs say which and why.
const UNAVAILABLE: &str = "a secret this request needs is unavailable";

/// A secret's fields, as parsed from its JSON string.
type Fields = Arc<HashMap<String, String>>;

/// Reads JSON secrets by id, one Secrets Manager call per secret per TTL.
#[derive(Clone)]
pub struct Secrets {
    client: aws_sdk_secretsmanager::Client,
    cache: Cache<String, Fields>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("cached", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

impl Secrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, ttl: Duration) -> Self {
        Self { client, cache: Cache::builder().max_capacity(16).time_to_live(ttl).build() }
    }

    /// The string field `field` of secret `secret_id`; `Ok(None)` when the secret has no
    /// such field (or it is empty). Concurrent first calls share one fetch.
    pub async fn field(&self, secret_id: &str, field: &str) -> Result<Option<String>, Error> {
        let fields =
            self.cache.try_get_with(secret_id.to_owned(), self.fetch(secret_id)).await.map_err(|e| (*e).clone())?;
        Ok(fields.get(field).filter(|v| !v.is_empty()).cloned())
    }

    async fn fetch(&self, secret_id: &str) -> Result<Fields, Error> {
        let output = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
            let failure = classify(&e);
            tracing::error!(secret_id, ?failure, "cannot read secret");
            Error::Unavailable(UNAVAILABLE.to_owned())
        })?;
        let raw = output.secret_string().unwrap_or_default();
        let json: HashMap<String, serde_json::Value> = serde_json::from_str(raw).map_err(|_| {
            tracing::error!(secret_id, "secret is not a JSON object");
            Error::Unavailable(UNAVAILABLE.to_owned())
        })?;
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
