//! Optional user profiles from the Auth0 Management API (`user_metadata`), for the prompt.
//!
//! Enabled when `COACH_AUTH0_DOMAIN` and `COACH_AUTH0_CLIENT_ID` are set; the client secret
//! is the `auth0_client_secret` field of the Coach secret. A management token is obtained
//! with the client-credentials grant and cached for up to 24 h (less if Auth0 says so);
//! profiles are cached for `COACH_PROFILE_CACHE_TTL_SECS` (default 10 min, at most 1000
//! users). Any failure means "no profile": a profile is never a reason to fail a chat.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use moka::future::Cache;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    config::{ConfigError, Env},
    secrets::Secrets,
};

/// Field of the Coach secret holding the Auth0 client secret.
pub const AUTH0_CLIENT_SECRET_FIELD: &str = "auth0_client_secret";
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_PROFILES: u64 = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const USER_ID_ENCODE_SET: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where and how to fetch profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// `https://{COACH_AUTH0_DOMAIN}` (a full `http(s)://` URL is taken as is).
    pub base_url: String,
    pub client_id: String,
    pub cache_ttl: Duration,
}

impl ProfileConfig {
    /// `None` unless both `COACH_AUTH0_DOMAIN` and `COACH_AUTH0_CLIENT_ID` are set.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let cache_ttl = Duration::from_secs(env.number("COACH_PROFILE_CACHE_TTL_SECS")?);
        let (domain, client_id) = match (env.string("COACH_AUTH0_DOMAIN"), env.string("COACH_AUTH0_CLIENT_ID")) {
            (None, None) => return Ok(None),
            (Some(d), Some(c)) => (d, c),
            (Some(_), None) => {
                return Err(ConfigError {
                    var: "COACH_AUTH0_CLIENT_ID",
                    reason: "required with COACH_AUTH0_DOMAIN".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    var: "COACH_AUTH0_DOMAIN",
                    reason: "required with COACH_AUTH0_CLIENT_ID".into(),
                })
            }
        };
        let base_url = if domain.starts_with("https://") || domain.starts_with("http://") {
            domain.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", domain.trim_end_matches('/'))
        };
        reqwest::Url::parse(&base_url).map_err(|e| ConfigError {
            var: "COACH_AUTH0_DOMAIN",
            reason: format!("not a domain or URL ({e}): {domain:?}"),
        })?;
        Ok(Some(Self { base_url, client_id, cache_ttl }))
    }
}

#[derive(Debug)]
struct ManagementToken {
    value: String,
    expires_at: Instant,
}

/// Fetches and caches profiles. Cheap to share; build once per cold start.
pub struct Profiles {
    config: ProfileConfig,
    http: reqwest::Client,
    secrets: Secrets,
    token: Cache<(), Arc<ManagementToken>>,
    /// `None` is cached too: a user without metadata is not asked for again and again.
    profiles: Cache<String, Option<Arc<Value>>>,
}

/// Why a fetch gave no profile, for the logs.
enum Miss {
    /// Nothing to cache-bust; remember the absence.
    Absent,
    /// Transient failure; try again on the next request.
    Failed(String),
    /// The token was refused; drop it and try again next time.
    TokenRejected,
}

impl Profiles {
    pub fn new(config: ProfileConfig, http: reqwest::Client, secrets: Secrets) -> Self {
        Self {
            token: Cache::builder().max_capacity(1).time_to_live(TOKEN_TTL).build(),
            profiles: Cache::builder().max_capacity(MAX_PROFILES).time_to_live(config.cache_ttl).build(),
            config,
            http,
            secrets,
        }
    }

    /// The user's `user_metadata`, or `None` (no metadata, or Auth0 unavailable).
    pub async fn get(&self, user_id: &str) -> Option<Arc<Value>> {
        if let Some(cached) = self.profiles.get(user_id).await {
            return cached;
        }
        match self.fetch(user_id).await {
            Ok(profile) => {
                let profile = profile.map(Arc::new);
                self.profiles.insert(user_id.to_owned(), profile.clone()).await;
                profile
            }
            Err(Miss::Absent) => {
                self.profiles.insert(user_id.to_owned(), None).await;
                None
            }
            Err(Miss::TokenRejected) => {
                tracing::warn!("Auth0 rejected the management token; dropping it");
                self.token.invalidate(&()).await;
                None
            }
            Err(Miss::Failed(problem)) => {
                tracing::warn!(problem, "user profile unavailable; continuing without it");
                None
            }
        }
    }

    async fn fetch(&self, user_id: &str) -> Result<Option<Value>, Miss> {
        let token = self.token().await?;
        // Auth0 ids contain '|' (`auth0|123`): encode everything but unreserved characters.
        let user = percent_encoding::utf8_percent_encode(user_id, USER_ID_ENCODE_SET);
        let mut url = reqwest::Url::parse(&format!("{}/api/v2/users/{user}", self.config.base_url))
            .map_err(|e| Miss::Failed(e.to_string()))?;
        url.query_pairs_mut().append_pair("fields", "user_metadata").append_pair("include_fields", "true");
        let response = crate::http::traced(self.http.get(url))
            .bearer_auth(&token.value)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| Miss::Failed(without_url(e)))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Miss::Absent),
            401 => return Err(Miss::TokenRejected),
            status => return Err(Miss::Failed(format!("users endpoint answered {status}"))),
        }
        #[derive(Deserialize)]
        struct User {
            user_metadata: Option<Value>,
        }
        let user: User = response.json().await.map_err(|_| Miss::Failed("users endpoint sent bad JSON".into()))?;
        Ok(user.user_metadata.filter(|m| m.as_object().is_some_and(|o| !o.is_empty())))
    }

    async fn token(&self) -> Result<Arc<ManagementToken>, Miss> {
        if let Some(token) = self.token.get(&()).await {
            if token.expires_at > Instant::now() {
                return Ok(token);
            }
            self.token.invalidate(&()).await;
        }
        let token = self.token.try_get_with((), self.fetch_token()).await.map_err(|e| Miss::Failed((*e).clone()))?;
        Ok(token)
    }

    async fn fetch_token(&self) -> Result<Arc<ManagementToken>, String> {
        let client_secret = self
            .secrets
            .field(AUTH0_CLIENT_SECRET_FIELD)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the secret has no {AUTH0_CLIENT_SECRET_FIELD}"))?;
        let base = &self.config.base_url;
        let response = crate::http::traced(self.http.post(format!("{base}/oauth/token")))
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({
                "grant_type": "client_credentials",
                "client_id": self.config.client_id,
                "client_secret": client_secret,
                "audience": format!("{base}/api/v2/"),
            }))
            .send()
            .await
            .map_err(without_url)?;
        if !response.status().is_success() {
            return Err(format!("token endpoint answered {}", response.status().as_u16()));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = response.json().await.map_err(|_| "token endpoint sent bad JSON".to_owned())?;
        // Renew a minute early; never keep a token longer than the cache's 24 h.
        let lifetime = body.expires_in.map_or(TOKEN_TTL, Duration::from_secs).min(TOKEN_TTL);
        let lifetime = lifetime.saturating_sub(Duration::from_secs(60));
        Ok(Arc::new(ManagementToken { value: body.access_token, expires_at: Instant::now() + lifetime }))
    }
}

/// A reqwest error's text without the URL (it may carry a user id).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<ProfileConfig>, ConfigError> {
        crate::config::with(vars, ProfileConfig::from_env)
    }

    #[test]
    fn auth0_profile_settings() {
        let p = config(&[("COACH_AUTH0_DOMAIN", "tenant.eu.auth0.com/"), ("COACH_AUTH0_CLIENT_ID", "abc")])
            .unwrap()
            .unwrap();
        assert_eq!(p.base_url, "https://tenant.eu.auth0.com");
        assert_eq!(p.cache_ttl, Duration::from_secs(600));
        assert_eq!(config(&[]), Ok(None));
    }

    #[test]
    fn both_auth0_settings_or_neither() {
        let var = |vars: &[(&str, &str)]| config(vars).unwrap_err().var;
        assert_eq!(var(&[("COACH_AUTH0_DOMAIN", "tenant.auth0.com")]), "COACH_AUTH0_CLIENT_ID");
        assert_eq!(var(&[("COACH_AUTH0_CLIENT_ID", "abc")]), "COACH_AUTH0_DOMAIN");
    }
}
