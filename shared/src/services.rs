//! Everything a request handler needs, built once per cold start: configuration, AWS
//! clients, the secrets cache, the outbound HTTP client, the authenticator and the
//! optional profile client. Handlers
//! borrow it; nothing in it is a global.

use std::time::Duration;

use crate::{
    auth::Authenticator, aws::AwsClients, config::Config, documents::Documents, embeddings::Embedder, history::History,
    llm::Llm, profile::Profiles, prompt::SystemPrompt, ratelimit::RateLimiter, retrieval::Index, secrets::Secrets,
};

/// Error raised while building [`Services`] at cold start.
pub type StartupError = Box<dyn std::error::Error + Send + Sync>;

pub struct Services {
    pub config: Config,
    pub aws: AwsClients,
    pub secrets: Secrets,
    /// Outbound HTTPS client (JWKS, identity provider, LLM), with connection pooling.
    pub http: reqwest::Client,
    pub auth: Authenticator,
    /// User profiles, when an Auth0 Management API client is configured.
    pub profiles: Option<Profiles>,
    pub history: History,
    pub system_prompt: SystemPrompt,
    pub llm: Llm,
    pub documents: Documents,
    pub embedder: Embedder,
    /// The document index, shards cached by ETag.
    pub index: Index,
    pub rate_limiter: RateLimiter,
}

impl Services {
    /// Reads the configuration from the environment and builds everything from it.
    pub async fn from_env() -> Result<Self, StartupError> {
        let config = Config::from_env()?;
        let aws = AwsClients::new(&config).await;
        Self::new(config, aws)
    }

    /// Builds the services from a configuration and ready SDK clients (tests pass clients
    /// pointed at the local emulator).
    pub fn new(config: Config, aws: AwsClients) -> Result<Self, StartupError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("coach/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let secrets = Secrets::new(aws.secrets.clone(), config.secret_ttl);
        let auth = Authenticator::new(config.auth.clone(), secrets.clone(), config.secret_id.clone(), http.clone());
        let profiles =
            config.profile.clone().map(|p| Profiles::new(p, http.clone(), secrets.clone(), config.secret_id.clone()));
        let history = History::new(aws.dynamodb.clone(), config.table.clone(), config.chat.retention);
        let system_prompt = SystemPrompt::new(aws.s3.clone(), config.bucket.clone(), config.chat.prompt_revalidate);
        let llm = Llm::new(config.llm.clone(), http.clone(), secrets.clone(), config.secret_id.clone());
        let documents = Documents::new(
            aws.s3.clone(),
            aws.dynamodb.clone(),
            config.bucket.clone(),
            config.table.clone(),
            config.uploads.clone(),
        );
        let embedder =
            Embedder::new(config.embeddings.clone(), http.clone(), secrets.clone(), config.secret_id.clone());
        let index = Index::new(aws.s3.clone(), config.bucket.clone(), config.retrieval.revalidate);
        let rate_limiter = RateLimiter::new(aws.dynamodb.clone(), config.table.clone(), config.rate_limits);
        Ok(Self {
            config,
            aws,
            secrets,
            http,
            auth,
            profiles,
            history,
            system_prompt,
            llm,
            documents,
            embedder,
            index,
            rate_limiter,
        })
    }
}
