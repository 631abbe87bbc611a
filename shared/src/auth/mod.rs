//! Authentication and authorisation for every HTTP route but `GET /health`.
//!
//! A request carries `Authorization: Bearer <JWT>`. Two modes, by configuration:
//! - `jwks`: RS256/ES256 tokens from an OIDC issuer (Auth0, Cognito, ...), verified against
//!   keys fetched from its JWKS URL and cached (see [`jwks`]);
//! - `hs256`: HS256 tokens signed with `jwt_hs256_secret` from the Secrets Manager secret.
//!
//! Algorithms are pinned per mode before any key is chosen (no `none`, no HS256 in JWKS
//! mode, so a token "signed" with an RSA public key as HMAC secret is refused). `exp` is
//! required and `nbf` honoured, with a small leeway; `iss` and `aud` are checked when
//! configured. Claims map to a [`Principal`] (user id, tenant, roles, access groups); route guards ask for
//! a [`Role`]. Failures are 401 (bad or missing token) or 403 (wrong role). Tokens are never
//! logged.

pub mod api_keys;
mod claims;
mod jwks;

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use lambda_http::{http::header::AUTHORIZATION, Request};

pub use api_keys::ApiKeys;
pub use claims::{validate_tenant, Principal, Role};

use crate::{
    config::{ConfigError, Env},
    error::Error,
    secrets::Secrets,
};

/// Field of the Coach secret holding the HS256 signing key.
pub const HS256_SECRET_FIELD: &str = "jwt_hs256_secret";
/// Shortest HS256 key accepted (RFC 7518 asks for at least the hash size, 256 bits).
const MIN_HS256_KEY_BYTES: usize = 32;

/// Where signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// HS256 with the key from the Coach secret (`COACH_SECRET_ID`).
    Hs256,
    /// RS256/ES256 against an issuer's JWKS.
    Jwks { url: String, algorithms: Vec<Algorithm>, cache_ttl: Duration, min_refetch: Duration },
}

/// Which tenant a caller belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Read from this claim; a token without it is refused.
    Claim(String),
    /// Every caller belongs to this one tenant (`COACH_SINGLE_TENANT`).
    Single(String),
}

/// Authentication settings (`COACH_AUTH_*`, `COACH_JWT_*`, claim names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_secs: u64,
    pub user_claim: String,
    pub tenant: TenantSource,
    pub roles_claim: String,
    /// Role of a caller whose token names no known role; `None` gives no role at all.
    pub default_role: Option<Role>,
    /// Subjects that are platform admins whatever their token's roles
    /// (`COACH_PLATFORM_ADMINS`, comma-separated).
    pub platform_admins: Vec<String>,
    /// The claim holding the caller's access groups (`COACH_GROUPS_CLAIM`, `groups`; `None`
    /// for `none`: no token carries groups).
    pub groups_claim: Option<String>,
}

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.text("COACH_AUTH_MODE").to_ascii_lowercase().as_str() {
            "hs256" => {
                let algorithms = env.list("COACH_JWT_ALGORITHMS");
                if algorithms.iter().any(|a| a != "HS256") {
                    return Err(ConfigError {
                        var: "COACH_JWT_ALGORITHMS",
                        reason: "hs256 mode accepts only HS256".into(),
                    });
                }
                AuthMode::Hs256
            }
            "jwks" => {
                let url = env.string("COACH_JWKS_URL").ok_or_else(|| ConfigError {
                    var: "COACH_JWKS_URL",
                    reason: "required when COACH_AUTH_MODE=jwks".into(),
                })?;
                if !(url.starts_with("https://") || is_loopback_http(&url)) {
                    return Err(ConfigError {
                        var: "COACH_JWKS_URL",
                        reason: format!("must be an https:// URL (http:// only on loopback), got {url:?}"),
                    });
                }
                let mut algorithms = Vec::new();
                for name in env.list("COACH_JWT_ALGORITHMS") {
                    match name.as_str() {
                        "RS256" => algorithms.push(Algorithm::RS256),
                        "ES256" => algorithms.push(Algorithm::ES256),
                        other => {
                            return Err(ConfigError {
                                var: "COACH_JWT_ALGORITHMS",
                                reason: format!("jwks mode accepts RS256 and ES256, got {other:?}"),
                            })
                        }
                    }
                }
                if algorithms.is_empty() {
                    algorithms = vec![Algorithm::RS256, Algorithm::ES256];
                }
                AuthMode::Jwks {
                    url,
                    algorithms,
                    cache_ttl: Duration::from_secs(env.number("COACH_JWKS_CACHE_TTL_SECS")?),
                    min_refetch: Duration::from_secs(env.number("COACH_JWKS_MIN_REFETCH_SECS")?),
                }
            }
            other => {
                return Err(ConfigError {
                    var: "COACH_AUTH_MODE",
                    reason: format!("expected hs256 or jwks, got {other:?}"),
                })
            }
        };
        let tenant = match env.string("COACH_SINGLE_TENANT") {
            Some(tenant) => {
                claims::validate_tenant(&tenant)
                    .map_err(|reason| ConfigError { var: "COACH_SINGLE_TENANT", reason })?;
                TenantSource::Single(tenant)
            }
            None => TenantSource::Claim(env.text("COACH_TENANT_CLAIM")),
        };
        let default_role = match env.text("COACH_DEFAULT_ROLE").to_ascii_lowercase().as_str() {
            "none" => None,
            name => Some(name.parse().map_err(|_| ConfigError {
                var: "COACH_DEFAULT_ROLE",
                reason: format!("expected user, editor, admin or none, got {name:?}"),
            })?),
        };
        if default_role == Some(Role::PlatformAdmin) {
            let reason = "platform-admin is never a default; name the operators in COACH_PLATFORM_ADMINS".into();
            return Err(ConfigError { var: "COACH_DEFAULT_ROLE", reason });
        }
        let issuer = env.string("COACH_JWT_ISSUER");
        let audience = env.list("COACH_JWT_AUDIENCE");
        // An identity provider signs tokens for every API it serves with the same keys: without
        // both checks a token minted for another API (or tenant of the provider) would pass.
        if matches!(mode, AuthMode::Jwks { .. }) {
            if issuer.is_none() {
                return Err(ConfigError {
                    var: "COACH_JWT_ISSUER",
                    reason: "required when COACH_AUTH_MODE=jwks (the identity provider's issuer URL)".into(),
                });
            }
            if audience.is_empty() {
                return Err(ConfigError {
                    var: "COACH_JWT_AUDIENCE",
                    reason: "required when COACH_AUTH_MODE=jwks (this API's identifier at the provider)".into(),
                });
            }
        }
        Ok(Self {
            mode,
            issuer,
            audience,
            leeway_secs: env.number("COACH_JWT_LEEWAY_SECS")?,
            user_claim: env.text("COACH_USER_CLAIM"),
            tenant,
            roles_claim: env.text("COACH_ROLES_CLAIM"),
            default_role,
            platform_admins: env.list("COACH_PLATFORM_ADMINS"),
            groups_claim: Some(env.text("COACH_GROUPS_CLAIM")).filter(|claim| claim != "none"),
        })
    }
}

/// An `http://` URL whose host, as a URL parser reads it, is this machine: `localhost` or a
/// loopback address, with no user part (`http://localhost:80@evil.com/` is `evil.com`).
fn is_loopback_http(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else { return false };
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    url.scheme() == "http" && loopback && url.username().is_empty() && url.password().is_none()
}

/// Verifies bearer tokens. Built once per cold start; keys and secrets are cached inside.
pub struct Authenticator {
    config: AuthConfig,
    keys: Keys,
    /// API keys, where the function accepts them.
    api_keys: Option<Arc<ApiKeys>>,
}

enum Keys {
    Hs256(Secrets),
    Jwks(jwks::Jwks),
}

impl Authenticator {
    /// `secrets` serve HS256 mode; JWKS mode fetches keys with an HTTP client of its own,
    /// built on the first fetch (it follows no redirects).
    pub fn new(config: AuthConfig, secrets: Secrets) -> Self {
        let keys = match &config.mode {
            AuthMode::Hs256 => Keys::Hs256(secrets),
            AuthMode::Jwks { url, cache_ttl, min_refetch, .. } => {
                Keys::Jwks(jwks::Jwks::new(url.clone(), *cache_ttl, *min_refetch))
            }
        };
        Self { config, keys, api_keys: None }
    }

    /// Also accepts the tenant's API keys (`Bearer coach_...` or `x-api-key`).
    pub fn with_api_keys(mut self, api_keys: Arc<ApiKeys>) -> Self {
        self.api_keys = Some(api_keys);
        self
    }

    /// The API keys this authenticator accepts, when it does.
    pub fn api_keys(&self) -> Option<&ApiKeys> {
        self.api_keys.as_deref()
    }

    /// Authenticates a request by its `Authorization: Bearer` header (a JWT, or an API key
    /// `coach_...`), or its `x-api-key` header.
    pub async fn authenticate(&self, req: &Request) -> Result<Principal, Error> {
        if let Some(key) = req.headers().get("x-api-key") {
            let key = key.to_str().map_err(|_| unauthorized("malformed x-api-key header"))?;
            return self.verify_key(key.trim()).await;
        }
        let header = req.headers().get(AUTHORIZATION).ok_or_else(|| unauthorized("missing Authorization header"))?;
        let value = header.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => token.trim(),
            _ => return Err(unauthorized("expected Authorization: Bearer <token>")),
        };
        if ApiKeys::is_key(token) {
            return self.verify_key(token).await;
        }
        self.verify(token).await
    }

    async fn verify_key(&self, key: &str) -> Result<Principal, Error> {
        match &self.api_keys {
            Some(api_keys) => api_keys.verify(key).await,
            None => Err(unauthorized("API keys are not accepted here")),
        }
    }

    /// Verifies a token and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, Error> {
        // Bound the work a hostile header can cause before any parsing.
        if token.len() > 16 * 1024 {
            return Err(unauthorized("token too large"));
        }
        let header = decode_header(token).map_err(|_| unauthorized("malformed token"))?;
        let alg = header.alg;
        let key = match &self.keys {
            Keys::Hs256(secrets) => {
                if alg != Algorithm::HS256 {
                    return Err(unauthorized("token algorithm not accepted"));
                }
                hs256_key(secrets).await?
            }
            Keys::Jwks(jwks) => {
                let AuthMode::Jwks { algorithms, .. } = &self.config.mode else {
                    return Err(Error::internal("JWKS keys without JWKS mode"));
                };
                if !algorithms.contains(&alg) {
                    return Err(unauthorized("token algorithm not accepted"));
                }
                jwks.key(header.kid.as_deref(), alg).await?
            }
        };

        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.config.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation).map_err(|e| {
            unauthorized(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_owned(),
                ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
                ErrorKind::InvalidIssuer => "token issuer not accepted".to_owned(),
                ErrorKind::InvalidAudience => "token audience not accepted".to_owned(),
                ErrorKind::InvalidSignature => "invalid token signature".to_owned(),
                ErrorKind::InvalidAlgorithm => "token algorithm not accepted".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the {claim:?} claim"),
                ErrorKind::InvalidClaimFormat(claim) => format!("token claim {claim:?} is malformed"),
                _ => "malformed token".to_owned(),
            })
        })?;
        claims::principal(&data.claims, &self.config)
    }
}

async fn hs256_key(secrets: &Secrets) -> Result<DecodingKey, Error> {
    match secrets.field(HS256_SECRET_FIELD).await? {
        Some(key) if key.len() >= MIN_HS256_KEY_BYTES => Ok(DecodingKey::from_secret(key.as_bytes())),
        _ => Err(Error::unavailable("authentication is not configured", WeakKey)),
    }
}

/// The HS256 key is missing from the secret, or too short to be safe.
#[derive(Debug, thiserror::Error)]
#[error("the secret's {HS256_SECRET_FIELD} is missing or shorter than {MIN_HS256_KEY_BYTES} bytes")]
struct WeakKey;

pub(crate) fn unauthorized(message: impl Into<String>) -> Error {
    Error::Unauthorized(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        crate::config::with(vars, AuthConfig::from_env)
    }

    #[test]
    fn auth_defaults_to_hs256_with_standard_claims() {
        let auth = config(&[]).unwrap();
        assert_eq!(auth.mode, AuthMode::Hs256);
        assert_eq!(auth.user_claim, "sub");
        assert_eq!(auth.tenant, TenantSource::Claim("tenant_id".into()));
        assert_eq!(auth.roles_claim, "roles");
        assert_eq!(auth.default_role, Some(Role::User));
        assert_eq!(auth.groups_claim.as_deref(), Some("groups"));
        assert_eq!(config(&[("COACH_GROUPS_CLAIM", "none")]).unwrap().groups_claim, None);
        assert_eq!(auth.leeway_secs, 30);
    }

    #[test]
    fn jwks_mode_settings() {
        let c = config(&[
            ("COACH_AUTH_MODE", "jwks"),
            ("COACH_JWKS_URL", "https://tenant.auth0.com/.well-known/jwks.json"),
            ("COACH_JWT_ALGORITHMS", "ES256"),
            ("COACH_JWT_ISSUER", "https://tenant.auth0.com/"),
            ("COACH_JWT_AUDIENCE", "a, b"),
        ])
        .unwrap();
        let AuthMode::Jwks { url, algorithms, cache_ttl, min_refetch } = c.mode else { panic!("jwks") };
        assert_eq!(url, "https://tenant.auth0.com/.well-known/jwks.json");
        assert_eq!(algorithms, vec![Algorithm::ES256]);
        assert_eq!(cache_ttl, Duration::from_secs(3600));
        assert_eq!(min_refetch, Duration::from_secs(60));
        assert_eq!(c.audience, vec!["a", "b"]);
    }

    #[test]
    fn bad_auth_settings_name_the_variable() {
        let var = |vars: &[(&str, &str)]| config(vars).unwrap_err().var;
        assert_eq!(var(&[("COACH_AUTH_MODE", "basic")]), "COACH_AUTH_MODE");
        assert_eq!(var(&[("COACH_AUTH_MODE", "jwks")]), "COACH_JWKS_URL");
        assert_eq!(
            var(&[("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", "http://idp.example.com/jwks")]),
            "COACH_JWKS_URL"
        );
        assert_eq!(
            var(&[("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", "https://x/j"), ("COACH_JWT_ALGORITHMS", "HS256")]),
            "COACH_JWT_ALGORITHMS"
        );
        assert_eq!(var(&[("COACH_JWT_ALGORITHMS", "RS256")]), "COACH_JWT_ALGORITHMS");
        // jwks mode without the issuer or the audience check.
        let jwks = [("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", "https://x/j")];
        assert_eq!(var(&[jwks[0], jwks[1], ("COACH_JWT_AUDIENCE", "api")]), "COACH_JWT_ISSUER");
        assert_eq!(var(&[jwks[0], jwks[1], ("COACH_JWT_ISSUER", "https://x/")]), "COACH_JWT_AUDIENCE");
        assert_eq!(
            var(&[jwks[0], jwks[1], ("COACH_JWT_ISSUER", "https://x/"), ("COACH_JWT_AUDIENCE", " ")]),
            "COACH_JWT_AUDIENCE"
        );
        assert_eq!(var(&[("COACH_DEFAULT_ROLE", "root")]), "COACH_DEFAULT_ROLE");
        assert_eq!(var(&[("COACH_SINGLE_TENANT", "a/b")]), "COACH_SINGLE_TENANT");
        assert_eq!(var(&[("COACH_JWT_LEEWAY_SECS", "3600")]), "COACH_JWT_LEEWAY_SECS");
    }

    #[test]
    fn loopback_http_jwks_is_allowed_for_local_issuers() {
        let checks = [("COACH_JWT_ISSUER", "http://localhost/"), ("COACH_JWT_AUDIENCE", "coach")];
        for url in ["http://127.0.0.1:8080/jwks", "http://localhost/jwks"] {
            let vars = [("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", url), checks[0], checks[1]];
            assert!(config(&vars).is_ok(), "{url}");
        }
        for spoof in [
            "http://localhost.evil.com/jwks",
            "http://localhost:80@evil.com/",
            "http://127.0.0.1@evil.com/jwks",
            "http://evil.com/?http://localhost",
            "http://127.0.0.1.evil.com/",
            "ftp://localhost/jwks",
        ] {
            let refused = config(&[("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", spoof), checks[0], checks[1]]);
            assert_eq!(refused.unwrap_err().var, "COACH_JWKS_URL", "{spoof}");
        }
        assert!(is_loopback_http("http://[::1]:9000/jwks") && is_loopback_http("http://127.0.0.2/"));
    }
}
