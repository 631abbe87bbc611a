//! Every setting Coach reads from its environment, in one table ([`SETTINGS`]): its name,
//! its default, and its bounds. [`super::Env`] reads a setting as the table says, so no
//! module writes a default or a bound of its own; a default that depends on another
//! setting (the model's URL on its provider, a cache's size on the function's memory) is
//! marked computed here and given by the module that knows it. The configuration
//! table of `docs/CONFIGURATION.md` is held to this one by a test (names and literal defaults), and another test holds
//! every read in the code to a row of it.

/// What kind of value a setting holds, and its default when it has a fixed one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number in `min..=max`; `default: None` when the module computes it.
    Number { default: Option<u64>, min: u64, max: u64 },
    /// A decimal number in `min..=max`.
    Float { default: f32, min: f32, max: f32 },
    /// `true`/`false`, its default computed by the module.
    Flag,
    /// Text; `default: None` when unset means something (or the module computes it).
    Text { default: Option<&'static str> },
    /// A comma-separated list, empty when unset.
    List,
}

/// One setting: an environment variable and what it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
}

impl Setting {
    const fn number(name: &'static str, default: u64, min: u64, max: u64) -> Self {
        Self { name, kind: Kind::Number { default: Some(default), min, max } }
    }

    const fn computed_number(name: &'static str, min: u64, max: u64) -> Self {
        Self { name, kind: Kind::Number { default: None, min, max } }
    }

    const fn float(name: &'static str, default: f32, min: f32, max: f32) -> Self {
        Self { name, kind: Kind::Float { default, min, max } }
    }

    const fn computed_flag(name: &'static str) -> Self {
        Self { name, kind: Kind::Flag }
    }

    const fn text(name: &'static str, default: &'static str) -> Self {
        Self { name, kind: Kind::Text { default: Some(default) } }
    }

    const fn computed_text(name: &'static str) -> Self {
        Self { name, kind: Kind::Text { default: None } }
    }

    const fn optional(name: &'static str) -> Self {
        Self { name, kind: Kind::Text { default: None } }
    }

    const fn list(name: &'static str) -> Self {
        Self { name, kind: Kind::List }
    }

    /// The default as `docs/CONFIGURATION.md` writes it, when the table fixes one.
    pub fn default_text(&self) -> Option<String> {
        match self.kind {
            Kind::Number { default: Some(n), .. } => Some(n.to_string()),
            Kind::Float { default, .. } => Some(default.to_string()),
            Kind::Text { default: Some(text) } => Some(text.to_owned()),
            _ => None,
        }
    }
}

/// The setting named `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Every setting, by name. `AWS_*` ones are Lambda's and the SDK's, read as inputs.
pub const SETTINGS: &[Setting] = &[
    Setting::optional("AWS_ENDPOINT_URL"),
    Setting::optional("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
    Setting::optional("AWS_ENDPOINT_URL_S3"),
    Setting::number("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 2048, 128, 10_240),
    Setting::optional("AWS_LAMBDA_FUNCTION_NAME"),
    Setting::optional("AWS_LAMBDA_LOG_LEVEL"),
    Setting::list("COACH_ALLOWED_MODELS"),
    Setting::number("COACH_API_KEY_CACHE_SECS", 5, 0, 60),
    Setting::number("COACH_API_KEY_MAX_DAYS", 0, 0, 3650),
    Setting::number("COACH_AUDIT_RETENTION_DAYS", 365, 1, 3650),
    Setting::optional("COACH_AUTH0_CLIENT_ID"),
    Setting::optional("COACH_AUTH0_DOMAIN"),
    Setting::text("COACH_AUTH_MODE", "hs256"),
    Setting::number("COACH_AWS_TIMEOUT_MS", 3_000, 100, 60_000),
    Setting::number("COACH_BEDROCK_EMBEDDING_DIMENSIONS", 1024, 256, 1536),
    Setting::optional("COACH_BEDROCK_GUARDRAIL_ID"),
    Setting::text("COACH_BEDROCK_GUARDRAIL_VERSION", "DRAFT"),
    Setting::text("COACH_BUCKET", "coach-local"),
    Setting::float("COACH_BUDGET_TENANT_MONTHLY", 0.0, 0.0, 1e15),
    Setting::text("COACH_BUDGET_UNIT", "usd"),
    Setting::float("COACH_BUDGET_USER_MONTHLY", 0.0, 0.0, 1e15),
    Setting::number("COACH_CHUNK_OVERLAP", 150, 0, 10_000),
    Setting::number("COACH_CHUNK_SIZE", 1000, 100, 20_000),
    Setting::text("COACH_DEFAULT_ROLE", "user"),
    Setting::computed_text("COACH_EMBEDDING_BASE_URL"),
    Setting::computed_text("COACH_EMBEDDING_MODEL"),
    Setting::text("COACH_EMBEDDING_MODEL_DIR", "/opt/all-minilm-l6-v2"),
    Setting::text("COACH_EMBEDDING_PROVIDER", "local"),
    Setting::number("COACH_EMBEDDING_TIMEOUT_MS", 30_000, 100, 900_000),
    Setting::number("COACH_EMBED_INLINE_CHUNKS", 1000, 1, 1_000_000),
    Setting::number("COACH_EMBED_JOB_SECS", 120, 0, 840),
    Setting::number("COACH_EXTRACT_MAX_TEXT_MB", 64, 1, 1024),
    Setting::computed_number("COACH_EXTRACT_MEMORY_MB", 128, 10240),
    Setting::optional("COACH_EXTRACT_PROGRAM"),
    Setting::number("COACH_EXTRACT_SECS", 120, 2, 840),
    Setting::text("COACH_GROUPS_CLAIM", "groups"),
    Setting::number("COACH_HISTORY_LIMIT", 10, 0, 100),
    Setting::number("COACH_HISTORY_RETENTION_DAYS", 90, 1, 3650),
    Setting::computed_number("COACH_INDEX_CACHE_MB", 1, 10_240),
    Setting::number("COACH_INDEX_GC_GRACE_SECS", 900, 0, 86_400),
    Setting::number("COACH_INDEX_ORPHAN_SECS", 3600, 0, 7 * 86_400),
    Setting::number("COACH_INDEX_REVALIDATE_SECS", 0, 0, 3600),
    Setting::number("COACH_INDEX_SEGMENT_MB", 32, 1, 512),
    Setting::text("COACH_INDEX_STORE", "s3"),
    Setting::optional("COACH_INGEST_QUEUE_URL"),
    Setting::number("COACH_INGEST_STUCK_MINUTES", 15, 6, 1440),
    Setting::number("COACH_INLINE_UPLOAD_MAX_BYTES", 1 << 20, 1, 2 << 20),
    Setting::number("COACH_JWKS_CACHE_TTL_SECS", 3600, 1, 86_400),
    Setting::number("COACH_JWKS_MIN_REFETCH_SECS", 60, 0, 3600),
    Setting::optional("COACH_JWKS_URL"),
    Setting::list("COACH_JWT_ALGORITHMS"),
    Setting::list("COACH_JWT_AUDIENCE"),
    Setting::optional("COACH_JWT_ISSUER"),
    Setting::number("COACH_JWT_LEEWAY_SECS", 30, 0, 300),
    Setting::optional("COACH_JWT_SECRET_ID"),
    Setting::number("COACH_LLM_BACKOFF_MS", 250, 0, 10_000),
    Setting::computed_text("COACH_LLM_BASE_URL"),
    Setting::number("COACH_LLM_CONTEXT_TOKENS", 16_000, 1_000, 2_000_000),
    Setting::number("COACH_LLM_MAX_ATTEMPTS", 3, 1, 10),
    Setting::number("COACH_LLM_MAX_OUTPUT_TOKENS", 1024, 16, 65_536),
    Setting::computed_text("COACH_LLM_MODEL"),
    Setting::text("COACH_LLM_PROVIDER", "none"),
    Setting::number("COACH_LLM_TIMEOUT_MS", 30_000, 100, 900_000),
    Setting::text("COACH_LOG_FORMAT", "auto"),
    Setting::text("COACH_LOG_PII", "hashed"),
    Setting::optional("COACH_LOG_PII_KEY"),
    Setting::number("COACH_MAX_CHUNKS", 200_000, 1, 10_000_000),
    Setting::number("COACH_MAX_MESSAGE_CHARS", 4000, 1, 100_000),
    Setting::number("COACH_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, 1, 100 * 1024 * 1024),
    Setting::number("COACH_PG_CONNECT_TIMEOUT_SECS", 3, 1, 60),
    Setting::text("COACH_PG_DATABASE", "coach"),
    Setting::number("COACH_PG_EF_SEARCH", 100, 10, 1000),
    Setting::optional("COACH_PG_HOST"),
    Setting::number("COACH_PG_POOL_SIZE", 4, 1, 64),
    Setting::number("COACH_PG_PORT", 5432, 1, 65_535),
    Setting::number("COACH_PG_STATEMENT_TIMEOUT_SECS", 10, 1, 900),
    Setting::text("COACH_PG_TLS", "verify-full"),
    Setting::text("COACH_PG_USER", "coach"),
    Setting::number("COACH_PG_WORD_ROWS", 20_000, 0, 1_000_000_000),
    Setting::list("COACH_PLATFORM_ADMINS"),
    Setting::optional("COACH_PRICES"),
    Setting::number("COACH_PROFILE_CACHE_TTL_SECS", 600, 0, 86_400),
    Setting::number("COACH_PROMPT_MAX_TOKENS", 8000, 100, 1_000_000),
    Setting::number("COACH_PROMPT_REVALIDATE_SECS", 5, 0, 3600),
    Setting::number("COACH_QA_CACHE_SECS", 300, 0, 86_400),
    Setting::text("COACH_QUERY_REWRITE", "off"),
    Setting::number("COACH_QUERY_REWRITE_TIMEOUT_MS", 2_000, 100, 10_000),
    Setting::number("COACH_RATE_LIMIT_TENANT", 600, 0, 10_000_000),
    Setting::number("COACH_RATE_LIMIT_USER", 30, 0, 1_000_000),
    Setting::number("COACH_RATE_LIMIT_WINDOW_SECS", 60, 1, 86_400),
    Setting::text("COACH_RERANK_BASE_URL", "https://api.cohere.com/v2"),
    Setting::number("COACH_RERANK_CANDIDATES", 20, 1, 100),
    Setting::text("COACH_RERANK_MODEL", "rerank-v3.5"),
    Setting::text("COACH_RERANK_PROVIDER", "none"),
    Setting::number("COACH_RERANK_TIMEOUT_MS", 2000, 50, 30_000),
    Setting::float("COACH_RETRIEVAL_MIN_SCORE", 0.0, 0.0, 1.0),
    Setting::float("COACH_RETRIEVAL_MIN_SIMILARITY", 0.3, -1.0, 1.0),
    Setting::number("COACH_RETRIEVAL_TOP_K", 5, 0, 50),
    Setting::float("COACH_RETRIEVAL_VECTOR_WEIGHT", 1.0, 0.1, 10.0),
    Setting::text("COACH_ROLES_CLAIM", "roles"),
    Setting::computed_flag("COACH_S3_FORCE_PATH_STYLE"),
    Setting::text("COACH_SEARCH_LANGUAGE", "english"),
    Setting::number("COACH_SECRET_CACHE_TTL_SECS", 300, 0, 86_400),
    Setting::text("COACH_SECRET_ID", "coach-local"),
    Setting::optional("COACH_SINGLE_TENANT"),
    Setting::number("COACH_STREAMS_PER_TENANT", 10, 0, 1000),
    Setting::number("COACH_SUMMARIZE_MAX_CHARS", 200_000, 1_000, 5_000_000),
    Setting::number("COACH_SUMMARIZE_MAX_PARTS", 16, 1, 200),
    Setting::text("COACH_TABLE", "coach-local"),
    Setting::text("COACH_TENANT_CLAIM", "tenant_id"),
    Setting::number("COACH_TURN_TIMEOUT_SECS", 28, 3, 900),
    Setting::number("COACH_UPLOAD_URL_TTL_SECS", 300, 60, 3600),
    Setting::number("COACH_USAGE_RETENTION_DAYS", 400, 1, 3650),
    Setting::text("COACH_USER_CLAIM", "sub"),
    Setting::optional("NO_COLOR"),
    Setting::optional("RUST_LOG"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_without_repeats_and_its_defaults_are_within_bounds() {
        for pair in SETTINGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
        for s in SETTINGS {
            match s.kind {
                Kind::Number { default: Some(d), min, max } => assert!((min..=max).contains(&d), "{}", s.name),
                Kind::Number { min, max, .. } => assert!(min <= max, "{}", s.name),
                Kind::Float { default, min, max } => assert!((min..=max).contains(&default), "{}", s.name),
                _ => {}
            }
        }
    }
}
