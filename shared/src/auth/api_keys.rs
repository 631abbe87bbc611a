//! API keys for server-to-server callers.
//!
//! An admin creates a key for their tenant with some roles, and optionally access groups
//! (each one of the admin's own), (`POST /api-keys`); the key,
//! `coach_{id}_{secret}` (the id a ULID, the secret 256 random bits in hex), is shown once.
//! A key reads the restricted documents of its groups, as a signed-in caller of those groups
//! would; a key with the admin role reads everything in the tenant, as an admin does.
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
//!
//! A key may expire (`expires_in_days` at creation; a deployment may require it and set the
//! longest, `COACH_API_KEY_MAX_DAYS`); an expired key is refused, and the table's TTL removes
//! it. Its last use is kept (`last_used_at`), written at most once a minute per key. Only a
//! signed-in admin manages keys: a key can neither create nor revoke one, and no key has the
//! `platform-admin` role (keys belong to a tenant).

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Principal, Role};
use crate::{
    config::{ConfigError, Env},
    error::Error,
    ids::{hex, now_ms, parse_id, rfc3339},
    model::access::group_list,
    store::{ApiKeyStore, StoreError, StoredApiKey},
};

/// What every key starts with.
pub const KEY_PREFIX: &str = "coach_";
/// What a key's user id starts with (`key:{id}`); no token's subject may.
pub const KEY_USER_PREFIX: &str = "key:";
/// A key's last use is written at most this often.
const TOUCH_EVERY_MS: u64 = 60_000;
/// The longest expiry a key may be given, in days.
const MAX_EXPIRY_DAYS: u64 = 3650;
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
    /// Access groups, each one of the creating admin's own; none by default.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Days until the key expires; by default never, or `COACH_API_KEY_MAX_DAYS` when set.
    #[serde(default, deserialize_with = "crate::http::whole_opt")]
    pub expires_in_days: Option<u64>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub created_at: String,
    pub created_by: String,
    /// When the key stops working; `null`: never.
    pub expires_at: Option<String>,
    /// Its last recorded use (recorded at most once a minute); `null`: never.
    pub last_used_at: Option<String>,
}

impl From<&StoredApiKey> for ApiKeyInfo {
    fn from(key: &StoredApiKey) -> Self {
        ApiKeyInfo {
            id: key.id.clone(),
            name: key.name.clone(),
            roles: key.roles.clone(),
            groups: key.groups.clone(),
            created_at: rfc3339(key.created_ms),
            created_by: key.created_by.clone(),
            expires_at: key.expires_ms.map(rfc3339),
            last_used_at: key.last_used_ms.map(rfc3339),
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
    /// Keys looked up, by id (`None`: no such key), for the configured time ([`ApiKeyConfig::cache_ttl`]).
    cache: moka::future::Cache<String, Option<Arc<StoredApiKey>>>,
    /// Keys whose use this instance wrote in the last minute.
    touched: moka::future::Cache<String, ()>,
    /// The longest a key may live, in days (`COACH_API_KEY_MAX_DAYS`; `None`: no limit).
    max_days: Option<u64>,
}

fn invalid() -> Error {
    Error::Unauthorized("invalid API key".into())
}

/// 403 for an API key: keys are managed by signed-in admins only.
fn refuse_keys(who: &Principal) -> Result<(), Error> {
    if who.is_api_key() {
        return Err(Error::Forbidden("an API key cannot create or revoke API keys; sign in as an admin".into()));
    }
    Ok(())
}

/// A new key's access groups: valid names, at most
/// [`MAX_DOCUMENT_GROUPS`](crate::model::access::MAX_DOCUMENT_GROUPS), each one of
/// its creator's own groups (never more than the creator's: 403), sorted and distinct.
fn key_groups(who: &Principal, groups: Vec<String>) -> Result<Vec<String>, Error> {
    let groups = group_list(&groups).map_err(|problem| Error::BadRequest(format!("groups: {problem}")))?;
    if let Some(group) = groups.iter().find(|g| who.groups.binary_search(g).is_err()) {
        return Err(Error::Forbidden(format!("a key cannot have the group {group:?}, which its creator lacks")));
    }
    Ok(groups)
}

/// The SHA-256 of `secret`, hex.
fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal strings, compared in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// How API keys are checked and how long they may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// How long a key looked up is kept (`COACH_API_KEY_CACHE_SECS`, 5; 0 to 60).
    pub cache_ttl: Duration,
    /// Longest life of a key in days (`COACH_API_KEY_MAX_DAYS`; `None` for 0: no limit).
    pub max_days: Option<u64>,
}

impl ApiKeyConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            cache_ttl: Duration::from_secs(env.number("COACH_API_KEY_CACHE_SECS")?),
            max_days: Some(env.number("COACH_API_KEY_MAX_DAYS")?).filter(|d| *d > 0),
        })
    }
}

impl ApiKeys {
    pub fn new(store: Arc<dyn ApiKeyStore>, config: ApiKeyConfig) -> Self {
        let ApiKeyConfig { cache_ttl: ttl, max_days } = config;
        let cache =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(ttl.max(Duration::from_millis(1))).build();
        let touched = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_millis(TOUCH_EVERY_MS))
            .build();
        Self { store, cache, touched, max_days }
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
        let now = now_ms();
        if key.expires_ms.is_some_and(|at| at <= now) {
            return Err(Error::Unauthorized("API key expired".into()));
        }
        self.touch(&key, now).await;
        let roles = key.roles.iter().filter_map(|r| r.parse::<Role>().ok()).filter(|r| *r != Role::PlatformAdmin);
        Ok(Principal {
            user_id: format!("{KEY_USER_PREFIX}{}", key.id),
            tenant: key.tenant.clone(),
            roles: roles.collect(),
            groups: key.groups.clone(),
        })
    }

    /// Records that `key` was used at `now`, unless that was done less than a minute ago (by
    /// this instance, or as the stored key says). Best effort: a failure is logged.
    async fn touch(&self, key: &StoredApiKey, now: u64) {
        let recent = key.last_used_ms.is_some_and(|at| now.saturating_sub(at) < TOUCH_EVERY_MS);
        if recent || self.touched.contains_key(&key.id) {
            return;
        }
        self.touched.insert(key.id.clone(), ()).await;
        if let Err(e) = self.store.touch_key(&key.id, now, now.saturating_sub(TOUCH_EVERY_MS)).await {
            tracing::warn!(problem = %e, "could not record an API key's use");
        }
    }

    /// Creates a key for `who`'s tenant with `input`'s roles (each one `who` has). 400 for an
    /// empty or long name, an unknown or missing role; 409 past [`MAX_KEYS_PER_TENANT`].
    pub async fn create(&self, who: &Principal, input: NewApiKey) -> Result<CreatedApiKey, Error> {
        refuse_keys(who)?;
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(Error::BadRequest(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters, not all spaces, without control characters"
            )));
        }
        let mut roles: Vec<Role> = Vec::new();
        for role in &input.roles {
            let role: Role = role.parse().map_err(|_| Error::BadRequest(format!("unknown role {role:?}")))?;
            if role == Role::PlatformAdmin {
                return Err(Error::BadRequest(
                    "a key belongs to a tenant: it cannot have the platform-admin role".into(),
                ));
            }
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
        let groups = key_groups(who, input.groups)?;
        let days = match (input.expires_in_days, self.max_days) {
            (Some(0), _) => return Err(Error::BadRequest("expires_in_days must be 1 or more".into())),
            (Some(days), Some(max)) if days > max => {
                return Err(Error::BadRequest(format!("expires_in_days must be at most {max} here")))
            }
            (Some(days), _) if days > MAX_EXPIRY_DAYS => {
                return Err(Error::BadRequest(format!("expires_in_days must be at most {MAX_EXPIRY_DAYS}")))
            }
            (days, max) => days.or(max),
        };
        let held = self.store.keys(&who.tenant).await?;
        if held.len() >= MAX_KEYS_PER_TENANT {
            return Err(Error::Conflict(format!("a tenant holds at most {MAX_KEYS_PER_TENANT} API keys; revoke one")));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::internal(format!("no randomness for an API key: {e}")))?;
        let secret = hex(&secret);
        let id = ulid::Ulid::generate().to_string();
        let created_ms = now_ms();
        let stored = StoredApiKey {
            id: id.clone(),
            tenant: who.tenant.clone(),
            name: name.to_owned(),
            roles: roles.iter().map(ToString::to_string).collect(),
            groups,
            hash: hash(&secret),
            created_ms,
            created_by: who.user_id.clone(),
            expires_ms: days.map(|d| created_ms + d * 86_400_000),
            last_used_ms: None,
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
        refuse_keys(who)?;
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
