//! Configuration from environment variables, read and validated once at cold start.
//!
//! Every variable has a default that works with the local stack (`make dev`), so
//! `cargo lambda watch` runs with no edits; deployed functions get their values from
//! `template.yaml`. A bad value stops the cold start with an error naming the variable.
//! This module only reads and validates; it does not build clients (see [`crate::aws`]).

use std::time::Duration;

use crate::{
    auth::AuthConfig, documents::UploadConfig, embeddings::EmbeddingConfig, ingest::chunk::ChunkConfig, llm::LlmConfig,
    profile::ProfileConfig, ratelimit::RateLimitConfig, retrieval::RetrievalConfig,
};

/// Default bucket and table names used by the local stack.
pub const DEFAULT_BUCKET: &str = "coach-local";
pub const DEFAULT_TABLE: &str = "coach-local";
pub const DEFAULT_SECRET_ID: &str = "coach-local";

/// Typed configuration shared by every function.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// S3 bucket holding `docs/`, `prompt/`, `uploads/` and `index/` (`COACH_BUCKET`).
    pub bucket: String,
    /// DynamoDB table for sessions, messages, documents and counters (`COACH_TABLE`).
    pub table: String,
    /// Upper bound on one AWS SDK operation, retries included (`COACH_AWS_TIMEOUT_MS`).
    pub aws_timeout: Duration,
    /// Path-style S3 addressing, needed by local emulators (`COACH_S3_FORCE_PATH_STYLE`).
    pub s3_force_path_style: bool,
    /// Secrets Manager id or ARN of the Coach secret (`COACH_SECRET_ID`).
    pub secret_id: String,
    /// How long secret values are cached (`COACH_SECRET_CACHE_TTL_SECS`).
    pub secret_ttl: Duration,
    /// How callers are authenticated.
    pub auth: AuthConfig,
    /// Where user profiles come from, if anywhere.
    pub profile: Option<ProfileConfig>,
    /// Chat limits and history settings.
    pub chat: ChatConfig,
    /// The language model.
    pub llm: LlmConfig,
    /// Upload limits.
    pub uploads: UploadConfig,
    /// Chunk sizes for ingestion.
    pub chunks: ChunkConfig,
    /// The embedding service, if any.
    pub embeddings: EmbeddingConfig,
    /// Retrieval over the document index.
    pub retrieval: RetrievalConfig,
    /// Token budget of the generated system prompt (`COACH_PROMPT_MAX_TOKENS`).
    pub prompt_budget_tokens: u32,
    /// Request limits for chat and uploads.
    pub rate_limits: RateLimitConfig,
}

/// Chat limits and history settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Past messages sent to the model (`COACH_HISTORY_LIMIT`).
    pub history_limit: i32,
    /// How long messages are kept (`COACH_HISTORY_RETENTION_DAYS`, DynamoDB TTL).
    pub retention: Duration,
    /// Longest accepted message, in characters (`COACH_MAX_MESSAGE_CHARS`).
    pub max_message_chars: usize,
    /// Least time between system prompt revalidations (`COACH_PROMPT_REVALIDATE_SECS`).
    pub prompt_revalidate: Duration,
}

/// A configuration variable that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// Name of the offending environment variable.
    pub var: &'static str,
    /// What is wrong with it, in words a deployer can act on.
    pub reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process
    /// environment. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);

        let bucket = env.string_or("COACH_BUCKET", DEFAULT_BUCKET);
        validate_bucket_name(&bucket).map_err(|reason| ConfigError { var: "COACH_BUCKET", reason })?;

        let table = env.string_or("COACH_TABLE", DEFAULT_TABLE);
        validate_table_name(&table).map_err(|reason| ConfigError { var: "COACH_TABLE", reason })?;

        let aws_timeout = Duration::from_millis(env.number("COACH_AWS_TIMEOUT_MS", 3_000, 100, 60_000)?);

        // Local emulators serve buckets by path, not by virtual host: default to path style
        // whenever a custom endpoint is configured.
        let custom_endpoint = env.string("AWS_ENDPOINT_URL").is_some() || env.string("AWS_ENDPOINT_URL_S3").is_some();
        let s3_force_path_style = env.boolean("COACH_S3_FORCE_PATH_STYLE", custom_endpoint)?;

        Ok(Self {
            bucket,
            table,
            aws_timeout,
            s3_force_path_style,
            secret_id: env.string_or("COACH_SECRET_ID", DEFAULT_SECRET_ID),
            secret_ttl: Duration::from_secs(env.number("COACH_SECRET_CACHE_TTL_SECS", 300, 0, 86_400)?),
            auth: AuthConfig::from_env(&env)?,
            profile: ProfileConfig::from_env(&env)?,
            chat: ChatConfig {
                history_limit: env.number("COACH_HISTORY_LIMIT", 10, 0, 100)? as i32,
                retention: Duration::from_secs(86_400 * env.number("COACH_HISTORY_RETENTION_DAYS", 90, 1, 3650)?),
                max_message_chars: env.number("COACH_MAX_MESSAGE_CHARS", 4000, 1, 100_000)? as usize,
                prompt_revalidate: Duration::from_secs(env.number("COACH_PROMPT_REVALIDATE_SECS", 5, 0, 3600)?),
            },
            llm: LlmConfig::from_env(&env)?,
            uploads: UploadConfig {
                max_bytes: env.number("COACH_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, 1, 100 * 1024 * 1024)?,
                url_ttl: Duration::from_secs(env.number("COACH_UPLOAD_URL_TTL_SECS", 300, 60, 3600)?),
            },
            chunks: {
                let size = env.number("COACH_CHUNK_SIZE", 1000, 100, 20_000)? as usize;
                let overlap = env.number("COACH_CHUNK_OVERLAP", 150, 0, 10_000)? as usize;
                if overlap >= size / 2 {
                    return Err(ConfigError {
                        var: "COACH_CHUNK_OVERLAP",
                        reason: format!("must be less than half of COACH_CHUNK_SIZE ({size})"),
                    });
                }
                ChunkConfig { size, overlap }
            },
            embeddings: EmbeddingConfig::from_env(&env)?,
            retrieval: RetrievalConfig {
                top_k: env.number("COACH_RETRIEVAL_TOP_K", 5, 0, 50)? as usize,
                min_score: env.float("COACH_RETRIEVAL_MIN_SCORE", 0.0, 0.0, 1.0)?,
                min_similarity: env.float("COACH_RETRIEVAL_MIN_SIMILARITY", 0.3, -1.0, 1.0)?,
                revalidate: Duration::from_secs(env.number("COACH_INDEX_REVALIDATE_SECS", 5, 0, 3600)?),
            },
            prompt_budget_tokens: env.number("COACH_PROMPT_MAX_TOKENS", 8000, 100, 1_000_000)? as u32,
            rate_limits: RateLimitConfig {
                per_user: env.number("COACH_RATE_LIMIT_USER", 30, 0, 1_000_000)?,
                per_tenant: env.number("COACH_RATE_LIMIT_TENANT", 600, 0, 10_000_000)?,
                window: Duration::from_secs(env.number("COACH_RATE_LIMIT_WINDOW_SECS", 60, 1, 86_400)?),
            },
        })
    }
}

/// Typed access to environment variables; every error names its variable.
pub struct Env<'a>(pub &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The trimmed value, `None` when unset or blank.
    pub fn string(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, var: &str, default: &str) -> String {
        self.string(var).unwrap_or_else(|| default.to_owned())
    }

    /// A comma-separated list, items trimmed, blanks dropped; empty when unset.
    pub fn list(&self, var: &str) -> Vec<String> {
        self.string(var)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// A whole number in `min..=max`, `default` when unset.
    pub fn number(&self, var: &'static str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        let reason = || format!("expected a whole number from {min} to {max}, got {value:?}");
        let n: u64 = value.parse().map_err(|_| ConfigError { var, reason: reason() })?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(ConfigError { var, reason: reason() })
        }
    }

    /// A decimal number in `min..=max`, `default` when unset.
    pub fn float(&self, var: &'static str, default: f32, min: f32, max: f32) -> Result<f32, ConfigError> {
        let Some(value) = self.string(var) else { return Ok(default) };
        value
            .parse::<f32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ConfigError { var, reason: format!("expected a number from {min} to {max}, got {value:?}") })
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`), `default` when unset.
    pub fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(value) = self.string(var) else {
            return Ok(default);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError { var, reason: format!("expected true or false, got {value:?}") }),
        }
    }
}

/// S3 bucket naming rules (general purpose buckets).
fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&name.len()) && ok_chars && ok_ends && !name.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit)"
        ))
    }
}

/// DynamoDB table naming rules.
fn validate_table_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if (3..=255).contains(&name.len()) && ok_chars {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid DynamoDB table name (3-255 letters, digits, '_', '-' or '.')"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_work_with_the_local_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bucket, DEFAULT_BUCKET);
        assert_eq!(c.table, DEFAULT_TABLE);
        assert_eq!(c.aws_timeout, Duration::from_secs(3));
        assert!(!c.s3_force_path_style);
    }

    #[test]
    fn custom_endpoint_implies_path_style_unless_overridden() {
        assert!(config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")]).unwrap().s3_force_path_style);
        let c = config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"), ("COACH_S3_FORCE_PATH_STYLE", "false")]);
        assert!(!c.unwrap().s3_force_path_style);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("COACH_BUCKET", "Not_A_Bucket")]).unwrap_err();
        assert_eq!(err.var, "COACH_BUCKET");
        assert!(err.to_string().contains("COACH_BUCKET"), "{err}");

        assert_eq!(config(&[("COACH_TABLE", "a b")]).unwrap_err().var, "COACH_TABLE");
        assert_eq!(config(&[("COACH_AWS_TIMEOUT_MS", "fast")]).unwrap_err().var, "COACH_AWS_TIMEOUT_MS");
        assert_eq!(config(&[("COACH_AWS_TIMEOUT_MS", "10")]).unwrap_err().var, "COACH_AWS_TIMEOUT_MS");
        assert_eq!(config(&[("COACH_S3_FORCE_PATH_STYLE", "maybe")]).unwrap_err().var, "COACH_S3_FORCE_PATH_STYLE");
    }

    #[test]
    fn auth_defaults_to_hs256_with_standard_claims() {
        use crate::auth::{AuthMode, Role, TenantSource};
        let auth = config(&[]).unwrap().auth;
        assert_eq!(auth.mode, AuthMode::Hs256);
        assert_eq!(auth.user_claim, "sub");
        assert_eq!(auth.tenant, TenantSource::Claim("tenant_id".into()));
        assert_eq!(auth.roles_claim, "roles");
        assert_eq!(auth.default_role, Some(Role::User));
        assert_eq!(auth.leeway_secs, 30);
    }

    #[test]
    fn jwks_mode_settings() {
        use crate::auth::AuthMode;
        use jsonwebtoken::Algorithm;
        let c = config(&[
            ("COACH_AUTH_MODE", "jwks"),
            ("COACH_JWKS_URL", "https://tenant.auth0.com/.well-known/jwks.json"),
            ("COACH_JWT_ALGORITHMS", "ES256"),
            ("COACH_JWT_AUDIENCE", "a, b"),
        ])
        .unwrap();
        let AuthMode::Jwks { url, algorithms, cache_ttl, min_refetch } = c.auth.mode else { panic!("jwks") };
        assert_eq!(url, "https://tenant.auth0.com/.well-known/jwks.json");
        assert_eq!(algorithms, vec![Algorithm::ES256]);
        assert_eq!(cache_ttl, Duration::from_secs(3600));
        assert_eq!(min_refetch, Duration::from_secs(60));
        assert_eq!(c.auth.audience, vec!["a", "b"]);
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
        assert_eq!(var(&[("COACH_DEFAULT_ROLE", "root")]), "COACH_DEFAULT_ROLE");
        assert_eq!(var(&[("COACH_SINGLE_TENANT", "a/b")]), "COACH_SINGLE_TENANT");
        assert_eq!(var(&[("COACH_AUTH0_DOMAIN", "tenant.auth0.com")]), "COACH_AUTH0_CLIENT_ID");
        assert_eq!(var(&[("COACH_AUTH0_CLIENT_ID", "abc")]), "COACH_AUTH0_DOMAIN");
        assert_eq!(var(&[("COACH_JWT_LEEWAY_SECS", "3600")]), "COACH_JWT_LEEWAY_SECS");
    }

    #[test]
    fn loopback_http_jwks_is_allowed_for_local_issuers() {
        for url in ["http://127.0.0.1:8080/jwks", "http://localhost/jwks"] {
            assert!(config(&[("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", url)]).is_ok(), "{url}");
        }
        let spoof = config(&[("COACH_AUTH_MODE", "jwks"), ("COACH_JWKS_URL", "http://localhost.evil.com/jwks")]);
        assert!(spoof.is_err());
    }

    #[test]
    fn auth0_profile_settings() {
        let p = config(&[("COACH_AUTH0_DOMAIN", "tenant.eu.auth0.com/"), ("COACH_AUTH0_CLIENT_ID", "abc")])
            .unwrap()
            .profile
            .unwrap();
        assert_eq!(p.base_url, "https://tenant.eu.auth0.com");
        assert_eq!(p.cache_ttl, Duration::from_secs(600));
    }

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(config(&[("COACH_BUCKET", "  ")]).unwrap().bucket, DEFAULT_BUCKET);
    }
}
