//! Text embeddings, for ingest (chunk vectors) and retrieval (query vectors).
//!
//! Providers (`COACH_EMBEDDING_PROVIDER`): `local` (default: the embedded model of [`local`],
//! run in-process from `COACH_EMBEDDING_MODEL_DIR`, no key, no network), `none` (lexical
//! retrieval only), `openai` (any OpenAI-compatible `POST {base}/embeddings`) and `gemini`
//! (`POST {base}/v1beta/models/{model}:batchEmbedContents`), and `bedrock` (through Bedrock's
//! `InvokeModel` and the IAM role, [`BEDROCK_CONCURRENCY`] requests at a time, vectors
//! `COACH_BEDROCK_EMBEDDING_DIMENSIONS` long and normalised: Amazon Titan Text Embeddings v2,
//! one text a request as the model takes them; or Cohere Embed, v3 or v4, up to
//! [`COHERE_BATCH`] texts a request, told whether they are documents or a search's queries).
//! For the HTTP providers the key is the secret's `embedding_api_key`
//! field, else `llm_api_key`; calls are retried with the same settings as the language
//! model's ([`Retries`]), each bounded by `COACH_EMBEDDING_TIMEOUT_MS`; texts go in batches of
//! [`BATCH`].

pub use coach_embed as local;

mod wire;

use std::{path::PathBuf, sync::Arc, time::Duration};

use coach_embed::LocalModel;

use wire::EmbeddingWire;

use crate::{
    config::{ConfigError, Env},
    error::{Cause, Error},
    model::{ModelUsage, Usage},
    retry::{self, Retries, RetryPolicy, SendError},
    secrets::{Secrets, LLM_API_KEY_FIELD},
    store::{AwsClients, ModelRuntime, RuntimeError},
};

/// Field of the Coach secret with the embedding key (falls back to `llm_api_key`).
pub const EMBEDDING_KEY_FIELD: &str = "embedding_api_key";
/// Texts per request.
pub const BATCH: usize = 64;
/// Bedrock embedding requests in flight at once (Titan takes one text a request).
pub const BEDROCK_CONCURRENCY: usize = 8;
/// Texts per Cohere Embed request on Bedrock (the API's limit).
pub const COHERE_BATCH: usize = 96;
/// Longest text Cohere Embed v3 takes on Bedrock, in characters (longer ones are cut).
pub const COHERE_V3_MAX_CHARS: usize = 2048;

/// What texts are embedded for: a model that tells them apart (Cohere Embed) makes each
/// kind's vectors for finding the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Passages to be found (ingest).
    Document,
    /// A search's query (retrieval).
    Query,
}

/// The Bedrock embedding models Coach speaks, by their request format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BedrockEmbedder {
    /// Amazon Titan Text Embeddings v2 (`amazon.titan-embed-text-v2:0`).
    Titan,
    /// Cohere Embed v3 (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`): 1024
    /// values, texts of at most [`COHERE_V3_MAX_CHARS`].
    CohereV3,
    /// Cohere Embed v4 (`cohere.embed-v4:0`, or an inference profile of it).
    CohereV4,
}

impl BedrockEmbedder {
    /// The family of the model id `model`, if Coach speaks it.
    pub fn of(model: &str) -> Option<Self> {
        if model.contains("titan-embed-text-v2") {
            Some(Self::Titan)
        } else if model.contains("cohere.embed-v4") {
            Some(Self::CohereV4)
        } else if model.contains("cohere.embed-") && model.ends_with("-v3") {
            Some(Self::CohereV3)
        } else {
            None
        }
    }

    /// The vector lengths the model makes.
    pub fn dimensions(self) -> &'static [u32] {
        match self {
            Self::Titan => &[256, 512, 1024],
            Self::CohereV3 => &[1024],
            Self::CohereV4 => &[256, 512, 1024, 1536],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    None,
    Local,
    OpenAi,
    Gemini,
    /// Amazon Titan Text Embeddings or Cohere Embed on Bedrock.
    Bedrock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    pub provider: EmbeddingProvider,
    pub model: String,
    pub base_url: String,
    /// The `local` provider's model folder.
    pub model_dir: PathBuf,
    pub policy: RetryPolicy,
    /// The `bedrock` provider's vector length (see [`BedrockEmbedder::dimensions`]).
    pub dimensions: u32,
}

impl EmbeddingConfig {
    pub fn from_env(env: &Env, retries: Retries) -> Result<Self, ConfigError> {
        let provider = match env.text("COACH_EMBEDDING_PROVIDER").to_ascii_lowercase().as_str() {
            "none" => EmbeddingProvider::None,
            "local" => EmbeddingProvider::Local,
            "openai" => EmbeddingProvider::OpenAi,
            "gemini" => EmbeddingProvider::Gemini,
            "bedrock" => EmbeddingProvider::Bedrock,
            other => {
                return Err(ConfigError {
                    var: "COACH_EMBEDDING_PROVIDER",
                    reason: format!("expected local, none, openai, gemini or bedrock, got {other:?}"),
                })
            }
        };
        let model_dir = PathBuf::from(env.text("COACH_EMBEDDING_MODEL_DIR"));
        // The local model is named after its folder unless named explicitly: vectors of
        // different models never meet in one ranking.
        let folder_name = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (url, model) = match provider {
            EmbeddingProvider::None => ("", ""),
            EmbeddingProvider::Local => ("", folder_name.as_str()),
            EmbeddingProvider::OpenAi => ("https://api.openai.com/v1", "text-embedding-3-small"),
            EmbeddingProvider::Gemini => ("https://generativelanguage.googleapis.com", "text-embedding-004"),
            EmbeddingProvider::Bedrock => ("", "amazon.titan-embed-text-v2:0"),
        };
        let model = env.string_or("COACH_EMBEDDING_MODEL", model);
        let dimensions = env.number("COACH_BEDROCK_EMBEDDING_DIMENSIONS")? as u32;
        if provider == EmbeddingProvider::Bedrock {
            let Some(family) = BedrockEmbedder::of(&model) else {
                return Err(ConfigError {
                    var: "COACH_EMBEDDING_MODEL",
                    reason: format!(
                        "{model:?} is not a Bedrock embedding model Coach speaks: Amazon Titan Text Embeddings v2 \
                         (amazon.titan-embed-text-v2:0) or Cohere Embed (cohere.embed-english-v3, \
                         cohere.embed-multilingual-v3, cohere.embed-v4:0)"
                    ),
                });
            };
            if !family.dimensions().contains(&dimensions) {
                return Err(ConfigError {
                    var: "COACH_BEDROCK_EMBEDDING_DIMENSIONS",
                    reason: format!("{model} makes vectors of {:?} values, not {dimensions}", family.dimensions()),
                });
            }
        }
        let base_url = env.string_or("COACH_EMBEDDING_BASE_URL", url).trim_end_matches('/').to_owned();
        if provider == EmbeddingProvider::Local {
            let missing = local::missing_files(&model_dir);
            if !missing.is_empty() {
                return Err(ConfigError {
                    var: "COACH_EMBEDDING_MODEL_DIR",
                    reason: format!(
                        "{} lacks {} (install the model with scripts/model.sh, or set COACH_EMBEDDING_PROVIDER)",
                        model_dir.display(),
                        missing.join(", ")
                    ),
                });
            }
        }
        let is_http = matches!(provider, EmbeddingProvider::OpenAi | EmbeddingProvider::Gemini);
        if is_http && reqwest::Url::parse(&base_url).is_err() {
            return Err(ConfigError { var: "COACH_EMBEDDING_BASE_URL", reason: format!("not a URL: {base_url:?}") });
        }
        Ok(Self {
            provider,
            model,
            base_url,
            model_dir,
            policy: retries.policy(Duration::from_millis(env.number("COACH_EMBEDDING_TIMEOUT_MS")?)),
            dimensions,
        })
    }
}

/// Why embeddings could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No provider is configured (`COACH_EMBEDDING_PROVIDER=none`).
    #[error("no embedding provider is configured")]
    NotConfigured,
    /// The service refused the request for good (bad key, bad model): retrying will not help.
    #[error("the embedding service refused the request (status {status})")]
    Refused {
        status: u16,
        #[source]
        cause: SendError,
    },
    /// The model runtime refused the request for good (no access, no such model, an invalid
    /// request): retrying will not help.
    #[error("the embedding model refused the request: {reason}")]
    Denied { reason: String },
    /// The service or the model is unavailable, or answered nonsense; try again later.
    #[error("{what}")]
    Unavailable {
        what: &'static str,
        #[source]
        cause: Option<Cause>,
    },
}

impl EmbedError {
    fn unavailable(what: &'static str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        EmbedError::Unavailable { what, cause: Some(Arc::new(cause)) }
    }

    /// Whether retrying cannot help: the document is failed, or keeps words-only search.
    pub fn is_permanent(&self) -> bool {
        matches!(self, EmbedError::NotConfigured | EmbedError::Refused { .. } | EmbedError::Denied { .. })
    }
}

impl From<EmbedError> for Error {
    fn from(e: EmbedError) -> Error {
        Error::Upstream { message: e.to_string(), cause: Some(Arc::new(e)) }
    }
}

/// Vectors, and what computing them used (`None`: not metered).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub used: Option<ModelUsage>,
}

pub struct Embedder {
    config: EmbeddingConfig,
    http: reqwest::Client,
    secrets: Secrets,
    /// The `bedrock` provider's runtime.
    runtime: Option<Arc<dyn ModelRuntime>>,
    /// The `local` provider's model, once the first embedding has loaded it.
    local: tokio::sync::OnceCell<Arc<LocalModel>>,
}

impl Embedder {
    /// The provider `config` names: over `http` with the key in `secrets`, or for `bedrock`
    /// through `aws` (no key read).
    pub fn new(config: EmbeddingConfig, http: reqwest::Client, secrets: Secrets, aws: &AwsClients) -> Self {
        let runtime = (config.provider == EmbeddingProvider::Bedrock).then(|| {
            let policy = &config.policy;
            aws.model_runtime(policy.timeout, policy.max_attempts, policy.backoff)
        });
        Self { config, http, secrets, runtime, local: tokio::sync::OnceCell::new() }
    }

    pub fn enabled(&self) -> bool {
        self.config.provider != EmbeddingProvider::None
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// One vector per text, all of one length, and what computing them used when the
    /// provider is a paid API (the embedded model and `none` are not metered): the tokens the
    /// API reported (OpenAI's `usage.prompt_tokens`), else the texts' estimated tokens, under
    /// the model name the API served (OpenAI's `model`), one call per batch.
    /// In an `embedding` span (model, texts, latency, outcome; never the text).
    pub async fn embed(&self, texts: &[String]) -> Result<Embedded, EmbedError> {
        self.embed_as(texts, Purpose::Document).await
    }

    /// As [`Embedder::embed`], for `purpose` (documents, or a search's queries).
    pub async fn embed_as(&self, texts: &[String], purpose: Purpose) -> Result<Embedded, EmbedError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "embedding",
            model = self.model(),
            texts = texts.len(),
            latency_ms = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let started = std::time::Instant::now();
        let embedded = async {
            match self.config.provider {
                EmbeddingProvider::None => Err(EmbedError::NotConfigured),
                EmbeddingProvider::Local => Ok(Embedded { vectors: self.embed_locally(texts).await?, used: None }),
                EmbeddingProvider::OpenAi => self.embed_remotely::<wire::OpenAi>(texts).await,
                EmbeddingProvider::Gemini => self.embed_remotely::<wire::Gemini>(texts).await,
                EmbeddingProvider::Bedrock => self.embed_on_bedrock(texts, purpose).await,
            }
        }
        .instrument(span.clone())
        .await;
        span.record("latency_ms", started.elapsed().as_millis() as u64);
        span.record("outcome", if embedded.is_ok() { "ok" } else { "error" });
        embedded
    }

    /// The local model, loaded by the first call (off the event loop).
    pub async fn local_model(&self) -> Result<Arc<LocalModel>, EmbedError> {
        let dir = self.config.model_dir.clone();
        self.local
            .get_or_try_init(|| async move {
                let started = std::time::Instant::now();
                let model = blocking(move || local::shared(&dir)).await?.map_err(|e| {
                    // A model that does not load is a deployment fault: retried, never a
                    // verdict on the user's document.
                    tracing::error!(error = %e, "the embedding model could not be loaded");
                    EmbedError::unavailable("the embedding model could not be loaded", e)
                })?;
                tracing::info!(
                    load_ms = started.elapsed().as_millis() as u64,
                    kernels = model.kernels(),
                    "embedding model ready"
                );
                Ok(model)
            })
            .await
            .cloned()
    }

    async fn embed_locally(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.local_model().await?;
        let texts = texts.to_vec();
        blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed(&refs)
        })
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "the embedding model failed");
            EmbedError::unavailable("the embedding model failed", e)
        })
    }

    /// The vectors of an HTTP provider speaking wire format `W`, a batch at a time.
    async fn embed_remotely<W: EmbeddingWire>(&self, texts: &[String]) -> Result<Embedded, EmbedError> {
        let key = match self.secrets.field(EMBEDDING_KEY_FIELD).await {
            Ok(Some(key)) => Some(key),
            Ok(None) => self.secrets.field(LLM_API_KEY_FIELD).await.ok().flatten(),
            Err(e) => return Err(EmbedError::unavailable("the embedding service's key cannot be read", e)),
        };
        let url = W::url(&self.config);
        let mut vectors = Vec::with_capacity(texts.len());
        let (mut served, mut tokens) = (None::<String>, 0u64);
        for batch in texts.chunks(BATCH) {
            let body = W::body(&self.config, batch);
            let build = || {
                let request = self.http.post(&url).json(&body);
                match &key {
                    Some(key) => W::authorise(request, key),
                    None => request,
                }
            };
            let response = retry::send(&self.config.policy, "embeddings", self.config.policy.timeout, build)
                .await
                .map_err(|e| match e {
                    SendError::Refused { status, .. } => EmbedError::Refused { status, cause: e },
                    SendError::Unavailable { .. } => EmbedError::unavailable("the embedding service is unavailable", e),
                })?;
            let reply: W::Response = response
                .json()
                .await
                .map_err(|e| EmbedError::unavailable("the embedding service sent an unreadable reply", e))?;
            let reply = W::reply(reply);
            if reply.vectors.len() != batch.len() {
                return Err(EmbedError::Unavailable {
                    what: "the embedding service sent an unexpected reply",
                    cause: Some(Arc::new(Mismatch(format!(
                        "{} vectors for {} texts",
                        reply.vectors.len(),
                        batch.len()
                    )))),
                });
            }
            vectors.extend(reply.vectors);
            // What the API says it served and counted (OpenAI); else the model asked for and
            // the texts' estimated tokens.
            if let Some(model) = reply.model.filter(|m| !m.is_empty() && m.len() <= 200) {
                served = Some(model);
            }
            tokens += reply
                .tokens
                .unwrap_or_else(|| batch.iter().map(|t| u64::from(crate::prompt::estimate_tokens(t))).sum());
        }
        let dims = vectors.first().map_or(0, Vec::len);
        if dims == 0 || vectors.iter().any(|v| v.len() != dims) {
            return Err(EmbedError::Unavailable {
                what: "the embedding service sent vectors of different lengths",
                cause: None,
            });
        }
        let used = ModelUsage {
            model: served.unwrap_or_else(|| self.config.model.clone()),
            requested: self.config.model.clone(),
            usage: Usage { input_tokens: tokens, output_tokens: 0 },
            calls: texts.len().div_ceil(BATCH) as u64,
        };
        Ok(Embedded { vectors, used: Some(used) })
    }
}

/// Titan Text Embeddings v2's request (`InvokeModel`).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanRequest<'a> {
    input_text: &'a str,
    dimensions: u32,
    normalize: bool,
}

/// Its reply.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanReply {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: Option<u64>,
}

/// Cohere Embed's request (`InvokeModel`).
#[derive(serde::Serialize)]
struct CohereRequest<'a> {
    texts: Vec<&'a str>,
    input_type: &'static str,
    truncate: &'static str,
    /// v4: the vectors' kind and length.
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding_types: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u32>,
}

/// Its reply: `embeddings` a list of vectors (v3), or by kind (`{"float": [...]}`, asked
/// for with `embedding_types`).
#[derive(serde::Deserialize)]
struct CohereReply {
    embeddings: CohereEmbeddings,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    Floats(Vec<Vec<f32>>),
    ByType { float: Vec<Vec<f32>> },
}

impl Embedder {
    /// The vectors of the Bedrock model, in order, of the configured length; their tokens
    /// (Titan's count, else estimated) under the model's name, one call per request.
    async fn embed_on_bedrock(&self, texts: &[String], purpose: Purpose) -> Result<Embedded, EmbedError> {
        let Some(runtime) = &self.runtime else { return Err(EmbedError::NotConfigured) };
        let model = self.config.model.as_str();
        let (vectors, tokens, calls) = match BedrockEmbedder::of(model) {
            Some(BedrockEmbedder::Titan) => self.titan_vectors(runtime, texts).await?,
            Some(family) => self.cohere_vectors(runtime, family, texts, purpose).await?,
            None => {
                return Err(EmbedError::Denied { reason: format!("{model} is not an embedding model Coach speaks") })
            }
        };
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != self.config.dimensions as usize) {
            return Err(EmbedError::Unavailable {
                what: "the embedding model sent other vectors than asked for",
                cause: None,
            });
        }
        let used = ModelUsage {
            model: model.to_owned(),
            requested: model.to_owned(),
            usage: Usage { input_tokens: tokens, output_tokens: 0 },
            calls,
        };
        Ok(Embedded { vectors, used: Some(used) })
    }

    /// Cohere Embed's vectors: up to [`COHERE_BATCH`] texts a request, a few requests at a
    /// time; unit length (Coach ranks by dot product); tokens estimated (Bedrock counts them
    /// only in a header the SDK does not return).
    async fn cohere_vectors(
        &self,
        runtime: &Arc<dyn ModelRuntime>,
        family: BedrockEmbedder,
        texts: &[String],
        purpose: Purpose,
    ) -> Result<(Vec<Vec<f32>>, u64, u64), EmbedError> {
        use futures_util::{StreamExt, TryStreamExt};
        let model = self.config.model.as_str();
        let v4 = family == BedrockEmbedder::CohereV4;
        let input_type = match purpose {
            Purpose::Document => "search_document",
            Purpose::Query => "search_query",
        };
        let cut = |text: &str| -> usize {
            match family {
                BedrockEmbedder::CohereV3 => {
                    text.char_indices().nth(COHERE_V3_MAX_CHARS).map_or(text.len(), |(at, _)| at)
                }
                _ => text.len(),
            }
        };
        let requests: Vec<Vec<u8>> = texts
            .chunks(COHERE_BATCH)
            .map(|batch| {
                let request = CohereRequest {
                    texts: batch.iter().map(|t| &t[..cut(t)]).collect(),
                    input_type,
                    truncate: "END",
                    embedding_types: v4.then_some(["float"]),
                    output_dimension: v4.then_some(self.config.dimensions),
                };
                serde_json::to_vec(&request).map_err(|e| EmbedError::unavailable("the request could not be written", e))
            })
            .collect::<Result<_, _>>()?;
        let calls = requests.len() as u64;
        let replies: Vec<CohereReply> = futures_util::stream::iter(requests)
            .map(|body| {
                let runtime = runtime.clone();
                async move { invoke(runtime.as_ref(), model, body).await }
            })
            .buffered(BEDROCK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut vectors = Vec::with_capacity(texts.len());
        for reply in replies {
            let (CohereEmbeddings::Floats(batch) | CohereEmbeddings::ByType { float: batch }) = reply.embeddings;
            vectors.extend(batch.into_iter().map(unit));
        }
        let tokens = texts.iter().map(|t| u64::from(crate::prompt::estimate_tokens(&t[..cut(t)]))).sum();
        Ok((vectors, tokens, calls))
    }

    /// Titan's vectors: one request a text, a few at a time; the tokens Titan counted.
    async fn titan_vectors(
        &self,
        runtime: &Arc<dyn ModelRuntime>,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, u64, u64), EmbedError> {
        use futures_util::{StreamExt, TryStreamExt};
        let (model, dimensions) = (self.config.model.as_str(), self.config.dimensions);
        let replies: Vec<TitanReply> = futures_util::stream::iter(texts.iter().cloned())
            .map(|text: String| {
                let (runtime, model) = (runtime.clone(), model.to_owned());
                async move { titan(runtime.as_ref(), &model, &text, dimensions).await }
            })
            .buffered(BEDROCK_CONCURRENCY)
            .try_collect()
            .await?;
        let tokens = replies
            .iter()
            .zip(texts)
            .map(|(r, t)| r.input_text_token_count.unwrap_or_else(|| u64::from(crate::prompt::estimate_tokens(t))))
            .sum();
        let vectors: Vec<Vec<f32>> = replies.into_iter().map(|r| r.embedding).collect();
        Ok((vectors, tokens, texts.len() as u64))
    }
}

/// `v` scaled to unit length (a zero vector stays as it is).
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// One text's Titan vector, through `runtime`.
async fn titan(runtime: &dyn ModelRuntime, model: &str, text: &str, dimensions: u32) -> Result<TitanReply, EmbedError> {
    let request = TitanRequest { input_text: text, dimensions, normalize: true };
    let body =
        serde_json::to_vec(&request).map_err(|e| EmbedError::unavailable("the request could not be written", e))?;
    invoke(runtime, model, body).await
}

/// `body` to the Bedrock `model` through `runtime`: its JSON reply read as `T`. A refusal
/// retrying cannot help (no access, no such model, an invalid request) is `Denied`.
async fn invoke<T: serde::de::DeserializeOwned>(
    runtime: &dyn ModelRuntime,
    model: &str,
    body: Vec<u8>,
) -> Result<T, EmbedError> {
    let reply = runtime.invoke(model, body).await.map_err(|e| match e {
        RuntimeError::Invalid(_) | RuntimeError::AccessDenied(_) | RuntimeError::NotFound(_) => {
            EmbedError::Denied { reason: e.to_string() }
        }
        other => EmbedError::unavailable("the embedding model is unavailable", other),
    })?;
    serde_json::from_slice(&reply)
        .map_err(|e| EmbedError::unavailable("the embedding model sent an unreadable reply", e))
}

/// A reply that does not match its request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Mismatch(String);

/// Runs CPU-bound model work on the blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, EmbedError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| EmbedError::unavailable("the embedding task failed", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<EmbeddingConfig, ConfigError> {
        crate::config::with(vars, |env| EmbeddingConfig::from_env(env, Retries::from_env(env)?))
    }

    #[test]
    fn a_bedrock_embedding_model_is_one_coach_speaks_at_a_length_it_makes() {
        let bedrock = ("COACH_EMBEDDING_PROVIDER", "bedrock");
        let model = |m| ("COACH_EMBEDDING_MODEL", m);
        let dims = |d| ("COACH_BEDROCK_EMBEDDING_DIMENSIONS", d);
        assert_eq!(read(&[bedrock]).unwrap().model, "amazon.titan-embed-text-v2:0");
        for (id, length) in [
            ("amazon.titan-embed-text-v2:0", "256"),
            ("cohere.embed-english-v3", "1024"),
            ("cohere.embed-multilingual-v3", "1024"),
            ("cohere.embed-v4:0", "1536"),
            ("us.cohere.embed-v4:0", "256"),
        ] {
            let config = read(&[bedrock, model(id), dims(length)]).unwrap_or_else(|e| panic!("{id}: {e:?}"));
            assert_eq!(config.dimensions.to_string(), length);
        }
        let refused = |vars: &[(&str, &str)]| read(vars).map(|_| ()).unwrap_err().var;
        assert_eq!(
            refused(&[bedrock, model("cohere.embed-english-v3"), dims("512")]),
            "COACH_BEDROCK_EMBEDDING_DIMENSIONS"
        );
        assert_eq!(refused(&[bedrock, dims("1536")]), "COACH_BEDROCK_EMBEDDING_DIMENSIONS");
        assert_eq!(refused(&[bedrock, model("amazon.titan-embed-text-v1")]), "COACH_EMBEDDING_MODEL");
        // Another provider does not read the Bedrock length.
        assert!(read(&[("COACH_EMBEDDING_PROVIDER", "none"), dims("1536")]).is_ok());
    }

    #[test]
    fn vectors_are_scaled_to_unit_length() {
        assert_eq!(unit(vec![3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(unit(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
