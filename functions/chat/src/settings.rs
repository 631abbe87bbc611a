//! The chat functions' settings: one typed value per function, read from the environment
//! once at cold start ([`Settings::load`], [`StreamSettings::load`]) before any client is
//! built, so a bad variable stops the cold start naming it. Names, defaults and bounds are
//! the rows of [`coach::config::settings::SETTINGS`]; each section is its module's
//! (`LlmConfig`, `Ranking`, ...).

use std::time::Duration;

use coach::{
    analysis::Analyzer,
    api::{Keys, PipelineConfig},
    assist::AssistConfig,
    chat::ChatConfig,
    config::{ConfigError, Env},
    embeddings::EmbeddingConfig,
    history::HistoryConfig,
    index::IndexStoreConfig,
    llm::{self, LlmConfig},
    model::Ranking,
    profile::ProfileConfig,
    prompt,
    ratelimit::RateLimitConfig,
    rerank::RerankConfig,
    retry::Retries,
    rewrite::RewriteConfig,
    secrets::SecretsConfig,
    streams,
    usage::{BudgetConfig, LedgerConfig},
};

/// What a chat turn uses, in both functions.
pub struct TurnSettings {
    /// The Coach secret's cache (model, embedding and Auth0 credentials).
    pub secrets: SecretsConfig,
    pub llm: LlmConfig,
    /// Other models of the provider a caller may pick by name (the OpenAI-compatible API).
    pub allowed_models: Vec<String>,
    /// `None` when the query rewrite is off.
    pub rewrite: Option<RewriteConfig>,
    pub embeddings: EmbeddingConfig,
    pub index: IndexStoreConfig,
    pub ranking: Ranking,
    /// How queries become terms (the index's analyser).
    pub analyzer: Analyzer,
    pub rerank: RerankConfig,
    pub chat: ChatConfig,
    pub history: HistoryConfig,
    /// How long the system prompt is kept before it is revalidated.
    pub prompt_revalidate: Duration,
    /// `None` without Auth0 profiles.
    pub profiles: Option<ProfileConfig>,
    pub rate_limit: RateLimitConfig,
    pub ledger: LedgerConfig,
    pub budgets: BudgetConfig,
}

impl TurnSettings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let retries = Retries::from_env(env)?;
        let llm = LlmConfig::from_env(env, retries)?;
        Ok(Self {
            secrets: SecretsConfig::from_env(env)?,
            rewrite: RewriteConfig::from_env(env, &llm)?,
            allowed_models: llm::allowed_models(env, &llm)?,
            llm,
            embeddings: EmbeddingConfig::from_env(env, retries)?,
            index: IndexStoreConfig::from_env(env)?,
            ranking: Ranking::from_env(env)?,
            analyzer: Analyzer::from_env(env)?,
            rerank: RerankConfig::from_env(env)?,
            chat: ChatConfig::from_env(env)?,
            history: HistoryConfig::from_env(env)?,
            prompt_revalidate: prompt::revalidate_after(env)?,
            profiles: ProfileConfig::from_env(env)?,
            rate_limit: RateLimitConfig::from_env(env)?,
            ledger: LedgerConfig::from_env(env)?,
            budgets: BudgetConfig::from_env(env)?,
        })
    }
}

/// The `chat` function's settings.
pub struct Settings {
    pub pipeline: PipelineConfig,
    pub turn: TurnSettings,
    /// `/qa`, `/summarize`, `/mindmap`.
    pub assist: AssistConfig,
}

impl Settings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            pipeline: PipelineConfig::from_env(env, Keys::Accepted)?,
            turn: TurnSettings::load(env)?,
            assist: AssistConfig::from_env(env)?,
        })
    }
}

/// The `chat-stream` function's settings.
pub struct StreamSettings {
    pub pipeline: PipelineConfig,
    pub turn: TurnSettings,
    /// Most streams a tenant holds at once (0: no limit).
    pub streams_per_tenant: u32,
}

impl StreamSettings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            pipeline: PipelineConfig::from_env(env, Keys::Accepted)?,
            turn: TurnSettings::load(env)?,
            streams_per_tenant: streams::per_tenant(env)?,
        })
    }
}
