//! API keys for server-to-server callers.
//!
//! An admin creates a key for their tenant with some roles (`POST /api-keys`); the key,
//! `coach_{id}_{secret}` (the id a ULID, the secret 256 random bits in hex), is shown once.
//! Coach keeps only the SHA-256 of the secret (a high-entropy secret needs no slow hash),
//! under the id, by which a presented key is looked up. A caller sends it as
//! `Authorization: Bearer coach_...` or `x-api-key: coach_...`; the key's tenant and roles
//! form the principal as a JWT's claims would, with the user id `key:{id}`, so rate limits,
//! budgets and usage count per key.
//!
//! A warm instance keeps a key it looked up for `COACH_API_KEY_CACHE_SECS` (5): a revoked
//! key (`DELETE /api-keys/{id}`) is refused by the revoking instance at once and by every
//! other within that time. Keys are never logged: an error says what is wrong with a key,
//! never the key.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Principal, Role};
use crate::{
    config::{ConfigError, Env},
    error::Error,
    ids::{hex, now_ms, parse_id, rfc3339},
    store::{ApiKeyStore, StoreError, StoredApiKey},
};

/// What every key starts with.
pub const KEY_PREFIX: &str = "coach_";
/// Keys a tenant may hold at once.
pub const MAX_KEYS_PER_TENANT: usize = 100;
/// Longest name of a key, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Body of `POST /api-keys`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub roles: Vec<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: String,
    pub created_by: String,
}

impl From<&StoredApiKey> for ApiKeyInfo {
    fn from(key: &StoredApiKey) -> Self {
        ApiKeyInfo {
            id: key.id.clone(),
            name: key.name.clone(),
            roles: key.roles.clone(),
            created_at: rfc3339(key.created_ms),
            created_by: key.created_by.clone(),
        }
    }
}

/// A new key: its listing and, this once, the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

/// API keys: verified on requests, created, listed and revoked by admins. Build once per
/// cold start.
pub struct ApiKeys {
    store: Arc<dyn ApiKeyStore>,
    /// Keys looked up, by id (`None`: no such key), for [`ApiKeys::from_env`]'s time.
    cache: moka::future::Cache<String, Option<Arc<StoredApiKey>>>,
}

fn invalid() -> Error {
    Error::Unauthorized("invalid API key".into())
}

/// The SHA-256 of `secret`, hex.
fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal strings, compared in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys looked up are kept `COACH_API_KEY_CACHE_SECS` (5; 0 to 60).
    pub fn from_env(env: &Env, store: Arc<dyn ApiKeyStore>) -> Result<Self, ConfigError> {
        let ttl = Duration::from_secs(env.number("COACH_API_KEY_CACHE_SECS", 5, 0, 60)?);
        Ok(Self::new(store, ttl))
    }

    pub fn new(store: Arc<dyn ApiKeyStore>, ttl: Duration) -> Self {
        let cache =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(ttl.max(Duration::from_millis(1))).build();
        Self { store, cache }
    }

    /// Whether a bearer token is an API key rather than a JWT.
    pub fn is_key(token: &str) -> bool {
        token.starts_with(KEY_PREFIX)
    }

    /// The principal of a presented key, or 401.
    pub async fn verify(&self, presented: &str) -> Result<Principal, Error> {
        let rest = presented.strip_prefix(KEY_PREFIX).ok_or_else(invalid)?;
        let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
        if secret.len() != 64 || ulid::Ulid::from_string(id).is_err() {
            return Err(invalid());
        }
        let key = match self.cache.get(id).await {
            Some(key) => key,
            None => {
                let key = self
                    .store
                    .key(id)
                    .await
                    .map_err(|e| Error::unavailable("API keys cannot be checked", e))?
                    .map(Arc::new);
                self.cache.insert(id.to_owned(), key.clone()).await;
                key
            }
        };
        let key = key.ok_or_else(invalid)?;
        if !same(&hash(secret), &key.hash) {
            return Err(invalid());
        }
        let roles = key.roles.iter().filter_map(|r| r.parse::<Role>().ok()).collect();
        Ok(Principal { user_id: format!("key:{}", key.id), tenant: key.tenant.clone(), roles })
    }

    /// Creates a key for `who`'s tenant with `input`'s roles (each one `who` has). 400 for an
    /// empty or long name, an unknown or missing role; 409 past [`MAX_KEYS_PER_TENANT`].
    pub async fn create(&self, who: &Principal, input: NewApiKey) -> Result<CreatedApiKey, Error> {
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(Error::BadRequest(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
        }
        let mut roles: Vec<Role> = Vec::new();
        for role in &input.roles {
            let role: Role = role.parse().map_err(|_| Error::BadRequest(format!("unknown role {role:?}")))?;
            if !who.has_role(role) {
                return Err(Error::Forbidden(format!("a key cannot have the {role} role its creator lacks")));
            }
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(Error::BadRequest("roles must name at least one of user, editor, admin".into()));
        }
        roles.sort();
        let held = self.store.keys(&who.tenant).await?;
        if held.len() >= MAX_KEYS_PER_TENANT {
            return Err(Error::Conflict(format!("a tenant holds at most {MAX_KEYS_PER_TENANT} API keys; revoke one")));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::internal(format!("no randomness for an API key: {e}")))?;
        let secret = hex(&secret);
        let id = ulid::Ulid::generate().to_string();
        let stored = StoredApiKey {
            id: id.clone(),
            tenant: who.tenant.clone(),
            name: name.to_owned(),
            roles: roles.iter().map(ToString::to_string).collect(),
            hash: hash(&secret),
            created_ms: now_ms(),
            created_by: who.user_id.clone(),
        };
        self.store.create_key(&stored).await.map_err(|e| match e {
            StoreError::ConditionFailed { .. } => Error::Conflict("a key with this id exists; try again".into()),
            other => other.into(),
        })?;
        Ok(CreatedApiKey { info: (&stored).into(), key: format!("{KEY_PREFIX}{id}_{secret}") })
    }

    /// The keys of `who`'s tenant, oldest first, without secrets.
    pub async fn list(&self, who: &Principal) -> Result<Vec<ApiKeyInfo>, Error> {
        Ok(self.store.keys(&who.tenant).await?.iter().map(ApiKeyInfo::from).collect())
    }

    /// Revokes key `id` of `who`'s tenant: refused from now on by this instance, and by every
    /// other once its cache lets it go. 404 for no such key of the tenant.
    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<(), Error> {
        let id = parse_id(id, "API key")?.to_string();
        if !self.store.delete_key(&who.tenant, &id).await? {
            return Err(Error::NotFound("no such API key".into()));
        }
        self.cache.invalidate(&id).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hashed_and_compared_in_constant_time() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab"));
        assert!(ApiKeys::is_key("coach_01J_x") && !ApiKeys::is_key("eyJhbGciOi"));
    }
}
