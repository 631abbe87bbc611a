//! The language model, called over HTTP with reqwest.
//!
//! Providers (`COACH_LLM_PROVIDER`): `openai` (any OpenAI-compatible chat completions API:
//! OpenAI, Ollama, vLLM, ...), `anthropic` (Messages API), `gemini` (Google Generative
//! Language API) and `none`, which calls nothing and answers with the retrieved passages,
//! clearly labelled, so Coach works offline. API keys are the `llm_api_key` field of the
//! Coach secret.
//!
//! Every provider is a [`ChatModel`]. The three HTTP providers differ only in their wire
//! format ([`wire::Wire`]: URL, headers, serde request and response types); sending with
//! retries, reading replies and decoding streams is one piece of code ([`wire::HttpModel`]).
//! Every call is bounded by `COACH_LLM_TIMEOUT_MS` and tried up to `COACH_LLM_MAX_ATTEMPTS`
//! times, with exponential backoff and full jitter, on 429, 5xx, timeouts and connection
//! failures (honouring a short `Retry-After`). A stream is retried only before its first
//! byte. Failures become 502 errors; prompts and replies are never logged.

mod anthropic;
mod bedrock;
mod gemini;
mod openai;
pub mod sse;
mod wire;

use std::{pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::Stream;

use crate::{
    config::{ConfigError, Env},
    error::Error,
    model::Passage,
    model::{Author, ModelUsage, Usage},
    retry::Retries,
    secrets::Secrets,
    store::AwsClients,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    None,
    OpenAi,
    Anthropic,
    Gemini,
    /// Amazon Bedrock's Converse API, through the AWS SDK and the function's IAM role.
    Bedrock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    pub provider: Provider,
    pub model: String,
    /// API base URL, without a trailing slash.
    pub base_url: String,
    pub max_output_tokens: u32,
    /// Context budget for system prompt + history + message (estimated tokens).
    pub context_tokens: u32,
    /// Bound on one attempt (non-streaming) or on the wait for each streamed chunk.
    pub timeout: Duration,
    pub retries: Retries,
    /// An Amazon Bedrock guardrail (id or ARN, version) applied to the model's input and
    /// output (`COACH_BEDROCK_GUARDRAIL_ID`, `_VERSION`; Bedrock only).
    pub guardrail: Option<(String, String)>,
}

impl LlmConfig {
    pub fn from_env(env: &Env, retries: Retries) -> Result<Self, ConfigError> {
        let provider = match env.text("COACH_LLM_PROVIDER").to_ascii_lowercase().as_str() {
            "none" => Provider::None,
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "bedrock" => Provider::Bedrock,
            other => {
                return Err(ConfigError {
                    var: "COACH_LLM_PROVIDER",
                    reason: format!("expected none, openai, anthropic, gemini or bedrock, got {other:?}"),
                })
            }
        };
        let (default_url, default_model) = match provider {
            Provider::None => ("", "none"),
            Provider::OpenAi => ("https://api.openai.com/v1", "gpt-4o-mini"),
            Provider::Anthropic => ("https://api.anthropic.com", "claude-3-5-haiku-latest"),
            Provider::Gemini => ("https://generativelanguage.googleapis.com", "gemini-1.5-flash"),
            // No URL: the SDK's endpoint (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` for a stand-in).
            Provider::Bedrock => ("", "amazon.nova-lite-v1:0"),
        };
        let base_url = env.string_or("COACH_LLM_BASE_URL", default_url).trim_end_matches('/').to_owned();
        let http = !matches!(provider, Provider::None | Provider::Bedrock);
        if http && reqwest::Url::parse(&base_url).is_err() {
            return Err(ConfigError { var: "COACH_LLM_BASE_URL", reason: format!("not a URL: {base_url:?}") });
        }
        let max_output_tokens = env.number("COACH_LLM_MAX_OUTPUT_TOKENS")? as u32;
        let context_tokens = env.number("COACH_LLM_CONTEXT_TOKENS")? as u32;
        if context_tokens <= max_output_tokens {
            return Err(ConfigError {
                var: "COACH_LLM_CONTEXT_TOKENS",
                reason: "must be larger than COACH_LLM_MAX_OUTPUT_TOKENS".into(),
            });
        }
        let guardrail = match env.string("COACH_BEDROCK_GUARDRAIL_ID") {
            None => None,
            Some(_) if provider != Provider::Bedrock => {
                return Err(ConfigError {
                    var: "COACH_BEDROCK_GUARDRAIL_ID",
                    reason: "a guardrail needs COACH_LLM_PROVIDER=bedrock".into(),
                })
            }
            Some(id) => {
                let valid_id = id.len() <= 2048 && id.chars().all(|c| c.is_ascii_alphanumeric() || ":/-_.".contains(c));
                if !valid_id {
                    return Err(ConfigError {
                        var: "COACH_BEDROCK_GUARDRAIL_ID",
                        reason: format!("not a guardrail id or ARN: {id:?}"),
                    });
                }
                let version = env.text("COACH_BEDROCK_GUARDRAIL_VERSION");
                let numbered = !version.is_empty() && version.len() <= 8 && version.bytes().all(|b| b.is_ascii_digit());
                if version != "DRAFT" && !numbered {
                    return Err(ConfigError {
                        var: "COACH_BEDROCK_GUARDRAIL_VERSION",
                        reason: format!("expected DRAFT or a version number, got {version:?}"),
                    });
                }
                Some((id, version))
            }
        };
        Ok(Self {
            provider,
            guardrail,
            model: env.string_or("COACH_LLM_MODEL", default_model),
            base_url,
            max_output_tokens,
            context_tokens,
            timeout: Duration::from_millis(env.number("COACH_LLM_TIMEOUT_MS")?),
            retries,
        })
    }
}

/// One turn of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Author,
    pub content: String,
}

/// What the model is asked: a system prompt and the turns, the last one the user's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub system: String,
    pub turns: Vec<Turn>,
    /// What the caller asked of the reply's length and randomness, within the settings.
    pub sampling: Sampling,
}

/// A caller's limits on one reply (the OpenAI-compatible API's `max_tokens` and
/// `temperature`); unset, the deployment's settings and the provider's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sampling {
    /// At most this many output tokens, and never more than `COACH_LLM_MAX_OUTPUT_TOKENS`.
    pub max_output_tokens: Option<u32>,
    /// 0 to 2 (Anthropic's 0 to 1: higher values are sent as 1).
    pub temperature: Option<f32>,
}

impl Sampling {
    /// The reply's output token limit under `config`.
    pub fn max_output_tokens(&self, config: &LlmConfig) -> u32 {
        self.max_output_tokens.map_or(config.max_output_tokens, |n| n.clamp(1, config.max_output_tokens))
    }
}

/// A finished reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    pub model: String,
    /// A guardrail (Amazon Bedrock's) intervened: the text is the guardrail's message, not
    /// the model's.
    pub intervened: bool,
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Text(String),
    /// Token counts; a provider may send them in parts (input first, output last), and the
    /// latest non-zero value of each wins.
    Usage(Usage),
    /// The model that answered, when the provider names it.
    Model(String),
    /// A guardrail intervened: the text is its message (see [`Completion::intervened`]).
    Intervened,
}

pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta, Error>> + Send>>;

/// A language model: a whole reply, or a reply streamed piece by piece. `passages` are what
/// retrieval found (the offline model answers with them; the others find them in the prompt).
#[async_trait]
pub trait ChatModel: Send + Sync {
    async fn complete(&self, prompt: &Prompt, passages: &[Passage]) -> Result<Completion, Error>;
    async fn stream(&self, prompt: &Prompt, passages: &[Passage]) -> Result<DeltaStream, Error>;
}

/// The models a caller of the OpenAI-compatible API may ask for by name besides the
/// configured one (`COACH_ALLOWED_MODELS`, comma-separated): other models of the configured
/// provider (`llm`), each a name of up to 128 letters, digits and `-._:/@`. Needs a language
/// model; `coach` is the API's own name for the configured one.
pub fn allowed_models(env: &Env, llm: &LlmConfig) -> Result<Vec<String>, ConfigError> {
    let var = "COACH_ALLOWED_MODELS";
    let mut names: Vec<String> = Vec::new();
    for name in env.list(var) {
        let valid = name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c));
        if !valid {
            return Err(ConfigError { var, reason: format!("not a model name: {name:?}") });
        }
        if name == "coach" {
            return Err(ConfigError { var, reason: "coach always names the configured model".into() });
        }
        if name != llm.model && !names.contains(&name) {
            names.push(name);
        }
    }
    if llm.provider == Provider::None && !names.is_empty() {
        return Err(ConfigError { var, reason: "needs a language model (COACH_LLM_PROVIDER is none)".into() });
    }
    Ok(names)
}

/// The configured model. Build once per cold start.
pub struct Llm {
    config: LlmConfig,
    model: Arc<dyn ChatModel>,
}

impl Llm {
    /// The model `config` names: over `http` with the API key in `secrets`, or for `bedrock`
    /// through `aws` (a runtime client of the model's timeout and attempts; no key read).
    pub fn new(config: LlmConfig, http: reqwest::Client, secrets: Secrets, aws: &AwsClients) -> Self {
        let model: Arc<dyn ChatModel> = match config.provider {
            Provider::None => Arc::new(Offline),
            Provider::Bedrock => {
                let retries = config.retries;
                let runtime = aws.model_runtime(config.timeout, retries.max_attempts, retries.backoff);
                Arc::new(bedrock::Bedrock::new(config.clone(), runtime))
            }
            Provider::OpenAi => Arc::new(wire::HttpModel::<openai::OpenAi>::new(config.clone(), http, secrets)),
            Provider::Anthropic => {
                Arc::new(wire::HttpModel::<anthropic::Anthropic>::new(config.clone(), http, secrets))
            }
            Provider::Gemini => Arc::new(wire::HttpModel::<gemini::Gemini>::new(config.clone(), http, secrets)),
        };
        Self { config, model }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Asks for a whole reply (retries included), in a `model_call` span (prompt length,
    /// tokens, latency, outcome; never the text), recording the call's metrics.
    pub async fn complete(&self, prompt: &Prompt, passages: &[Passage]) -> Result<Completion, Error> {
        use tracing::Instrument;
        let call = self.start_call(prompt);
        let result = self.model.complete(prompt, passages).instrument(call.span.clone()).await;
        call.end(result.as_ref().ok().map(|c| c.usage));
        let mut completion = result?;
        if completion.model.is_empty() {
            completion.model.clone_from(&self.config.model);
        }
        Ok(completion)
    }

    /// One model call begins: its `model_call` span (the configured model, the prompt's
    /// length in characters) and its clock. [`ModelCall::end`] records how it ended.
    pub fn start_call(&self, prompt: &Prompt) -> ModelCall {
        let prompt_chars = prompt.system.len() + prompt.turns.iter().map(|t| t.content.len()).sum::<usize>();
        let span = tracing::info_span!(
            "model_call",
            model = %self.config.model,
            prompt_chars,
            input_tokens = tracing::field::Empty,
            output_tokens = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        ModelCall { span, started: std::time::Instant::now(), model: self.config.model.clone() }
    }

    /// What `completion` used, for the usage ledger: one call, under the name the provider
    /// served, beside the name Coach asked for.
    pub fn used(&self, completion: &Completion) -> ModelUsage {
        let requested = self.config.model.clone();
        ModelUsage { model: completion.model.clone(), requested, usage: completion.usage, calls: 1 }
    }

    /// Asks for a reply streamed token by token.
    pub async fn stream(&self, prompt: &Prompt, passages: &[Passage]) -> Result<DeltaStream, Error> {
        self.model.stream(prompt, passages).await
    }
}

/// A model call in progress (see [`Llm::start_call`]).
pub struct ModelCall {
    /// The call's span; work of the call runs in it.
    pub span: tracing::Span,
    started: std::time::Instant,
    model: String,
}

impl ModelCall {
    /// The call ended, with its usage when it answered (`None`: it failed): recorded on its
    /// span, which closes, and as its metrics.
    pub fn end(self, usage: Option<Usage>) {
        let elapsed = self.started.elapsed();
        let tokens = usage.map(|u| (u.input_tokens, u.output_tokens));
        if let Some((input, output)) = tokens {
            self.span.record("input_tokens", input);
            self.span.record("output_tokens", output);
        }
        self.span.record("latency_ms", elapsed.as_millis() as u64);
        self.span.record("outcome", if usage.is_some() { "ok" } else { "error" });
        crate::metrics::model_call(&self.model, usage.is_some(), elapsed, tokens);
    }
}

/// The `none` provider: no model, the passages themselves.
struct Offline;

#[async_trait]
impl ChatModel for Offline {
    async fn complete(&self, _prompt: &Prompt, passages: &[Passage]) -> Result<Completion, Error> {
        Ok(offline_answer(passages))
    }

    async fn stream(&self, _prompt: &Prompt, passages: &[Passage]) -> Result<DeltaStream, Error> {
        let answer = offline_answer(passages);
        let deltas = vec![Ok(Delta::Model(answer.model)), Ok(Delta::Text(answer.text)), Ok(Delta::Usage(answer.usage))];
        Ok(Box::pin(futures_util::stream::iter(deltas)))
    }
}

/// The `none` provider's answer: the passages themselves, labelled as such.
pub fn offline_answer(passages: &[Passage]) -> Completion {
    let text = if passages.is_empty() {
        "No language model is configured, and no passage in your documents matched this question.".to_owned()
    } else {
        let mut text = String::from(
            "No language model is configured, so here are the most relevant passages from your documents:\n",
        );
        for (i, p) in passages.iter().enumerate() {
            text.push_str(&format!("\n[{}] {} (part {})\n{}\n", i + 1, p.source.title, p.source.chunk + 1, p.text));
        }
        text
    };
    Completion { text, model: "none".to_owned(), ..Completion::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_answer_labels_passages() {
        let source = crate::model::Source {
            document_id: "d1".into(),
            title: "giving-feedback.md".into(),
            chunk: 0,
            score: 1.0,
            snippet: "Be".into(),
            ..Default::default()
        };
        let answer = offline_answer(&[Passage { source, heading: None, text: "Be specific.".into() }]);
        assert!(answer.text.starts_with("No language model is configured"));
        assert!(answer.text.contains("[1] giving-feedback.md (part 1)\nBe specific."));
        assert_eq!(answer.model, "none");
        assert!(offline_answer(&[]).text.contains("no passage"));
    }

    #[test]
    fn a_guardrail_is_bedrocks_and_named_with_its_version() {
        let read = |vars: &[(&str, &str)]| {
            crate::config::with(vars, |env| LlmConfig::from_env(env, crate::retry::Retries::from_env(env)?))
        };
        let bedrock = ("COACH_LLM_PROVIDER", "bedrock");
        let id = ("COACH_BEDROCK_GUARDRAIL_ID", "gr1abc2def3g");
        assert_eq!(read(&[bedrock]).unwrap().guardrail, None);
        assert_eq!(read(&[bedrock, id]).unwrap().guardrail, Some(("gr1abc2def3g".into(), "DRAFT".into())));
        let numbered = ("COACH_BEDROCK_GUARDRAIL_VERSION", "3");
        assert_eq!(read(&[bedrock, id, numbered]).unwrap().guardrail, Some(("gr1abc2def3g".into(), "3".into())));
        let err = |vars: &[(&str, &str)]| read(vars).unwrap_err().var;
        assert_eq!(err(&[("COACH_LLM_PROVIDER", "openai"), id]), "COACH_BEDROCK_GUARDRAIL_ID");
        assert_eq!(err(&[bedrock, ("COACH_BEDROCK_GUARDRAIL_ID", "a b")]), "COACH_BEDROCK_GUARDRAIL_ID");
        assert_eq!(
            err(&[bedrock, id, ("COACH_BEDROCK_GUARDRAIL_VERSION", "latest")]),
            "COACH_BEDROCK_GUARDRAIL_VERSION"
        );
    }

    #[test]
    fn allowed_models_are_names_of_the_configured_provider() {
        let read = |vars: &[(&str, &str)]| {
            crate::config::with(vars, |env| {
                let llm = LlmConfig::from_env(env, crate::retry::Retries::from_env(env)?)?;
                allowed_models(env, &llm)
            })
        };
        let openai = ("COACH_LLM_PROVIDER", "openai");
        assert_eq!(read(&[openai]), Ok(vec![]));
        let list = ("COACH_ALLOWED_MODELS", "gpt-4o, gpt-4o-mini, gpt-4o, o3-mini");
        assert_eq!(
            read(&[openai, list]),
            Ok(vec!["gpt-4o".to_owned(), "o3-mini".to_owned()]),
            "the configured one once"
        );
        for bad in ["coach", "gpt 4o", "x;y"] {
            assert_eq!(
                read(&[openai, ("COACH_ALLOWED_MODELS", bad)]).unwrap_err().var,
                "COACH_ALLOWED_MODELS",
                "{bad}"
            );
        }
        assert_eq!(read(&[("COACH_ALLOWED_MODELS", "gpt-4o")]).unwrap_err().var, "COACH_ALLOWED_MODELS", "no model");
    }
}
