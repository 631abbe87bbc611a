//! The language model, called over HTTP with reqwest.
//!
//! Providers (`COACH_LLM_PROVIDER`): `openai` (any OpenAI-compatible chat completions API:
//! OpenAI, Ollama, vLLM, ...), `anthropic` (Messages API), `gemini` (Google Generative
//! Language API) and `none`, which calls nothing and answers with the retrieved passages,
//! clearly labelled, so Coach works offline. API keys are the `llm_api_key` field of the
//! Coach secret.
//!
//! Every call is bounded by `COACH_LLM_TIMEOUT_MS` and tried up to `COACH_LLM_MAX_ATTEMPTS`
//! times, with exponential backoff and full jitter, on 429, 5xx, timeouts and connection
//! failures (honouring a short `Retry-After`). A stream is retried only before its first
//! byte. Failures become 502 errors; prompts and replies are never logged.

mod anthropic;
mod gemini;
mod openai;
pub mod sse;

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::{
    config::{ConfigError, Env},
    error::Error,
    history::Author,
    retrieval::Passage,
    retry::{self, RetryPolicy, SendError},
    secrets::Secrets,
};

/// Field of the Coach secret holding the provider's API key.
pub const API_KEY_FIELD: &str = "llm_api_key";

/// Token counts of one model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    None,
    OpenAi,
    Anthropic,
    Gemini,
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
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts.
    pub backoff: Duration,
}

impl LlmConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = match env.string_or("COACH_LLM_PROVIDER", "none").to_ascii_lowercase().as_str() {
            "none" => Provider::None,
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            other => {
                return Err(ConfigError {
                    var: "COACH_LLM_PROVIDER",
                    reason: format!("expected none, openai, anthropic or gemini, got {other:?}"),
                })
            }
        };
        let (default_url, default_model) = match provider {
            Provider::None => ("", "none"),
            Provider::OpenAi => ("https://api.openai.com/v1", "gpt-4o-mini"),
            Provider::Anthropic => ("https://api.anthropic.com", "claude-3-5-haiku-latest"),
            Provider::Gemini => ("https://generativelanguage.googleapis.com", "gemini-1.5-flash"),
        };
        let base_url = env.string_or("COACH_LLM_BASE_URL", default_url).trim_end_matches('/').to_owned();
        if provider != Provider::None && reqwest::Url::parse(&base_url).is_err() {
            return Err(ConfigError { var: "COACH_LLM_BASE_URL", reason: format!("not a URL: {base_url:?}") });
        }
        let max_output_tokens = env.number("COACH_LLM_MAX_OUTPUT_TOKENS", 1024, 16, 65_536)? as u32;
        let context_tokens = env.number("COACH_LLM_CONTEXT_TOKENS", 16_000, 1_000, 2_000_000)? as u32;
        if context_tokens <= max_output_tokens {
            return Err(ConfigError {
                var: "COACH_LLM_CONTEXT_TOKENS",
                reason: "must be larger than COACH_LLM_MAX_OUTPUT_TOKENS".into(),
            });
        }
        Ok(Self {
            provider,
            model: env.string_or("COACH_LLM_MODEL", default_model),
            base_url,
            max_output_tokens,
            context_tokens,
            timeout: Duration::from_millis(env.number("COACH_LLM_TIMEOUT_MS", 30_000, 100, 900_000)?),
            max_attempts: env.number("COACH_LLM_MAX_ATTEMPTS", 3, 1, 10)? as u32,
            backoff: Duration::from_millis(env.number("COACH_LLM_BACKOFF_MS", 250, 0, 10_000)?),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub turns: Vec<Turn>,
}

/// A finished reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    pub model: String,
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
}

pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta, Error>> + Send>>;

/// The configured model. Build once per cold start.
pub struct Llm {
    config: LlmConfig,
    http: reqwest::Client,
    secrets: Secrets,
    secret_id: String,
}

impl Llm {
    pub fn new(config: LlmConfig, http: reqwest::Client, secrets: Secrets, secret_id: String) -> Self {
        Self { config, http, secrets, secret_id }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Asks for a whole reply. `passages` feed the `none` provider's answer.
    pub async fn complete(&self, prompt: &Prompt, passages: &[Passage]) -> Result<Completion, Error> {
        if self.config.provider == Provider::None {
            return Ok(offline_answer(passages));
        }
        let response = self.send(prompt, false).await?;
        let body: serde_json::Value = tokio::time::timeout(self.config.timeout, response.json())
            .await
            .map_err(|_| upstream("the language model timed out"))?
            .map_err(|_| upstream("the language model sent an unreadable reply"))?;
        let mut completion = match self.config.provider {
            Provider::OpenAi => openai::parse_completion(&body),
            Provider::Anthropic => anthropic::parse_completion(&body),
            Provider::Gemini => gemini::parse_completion(&body),
            Provider::None => unreachable!("handled above"),
        }
        .ok_or_else(|| upstream("the language model sent an unexpected reply"))?;
        if completion.model.is_empty() {
            completion.model.clone_from(&self.config.model);
        }
        Ok(completion)
    }

    /// Asks for a reply streamed token by token.
    pub async fn stream(&self, prompt: &Prompt, passages: &[Passage]) -> Result<DeltaStream, Error> {
        if self.config.provider == Provider::None {
            let answer = offline_answer(passages);
            let deltas =
                vec![Ok(Delta::Model(answer.model)), Ok(Delta::Text(answer.text)), Ok(Delta::Usage(answer.usage))];
            return Ok(Box::pin(futures_util::stream::iter(deltas)));
        }
        let response = self.send(prompt, true).await?;
        let provider = self.config.provider;
        let idle = self.config.timeout;
        let mut bytes = response.bytes_stream();
        let mut decoder = sse::SseDecoder::default();
        let stream = async_stream(move |tx| async move {
            loop {
                let chunk = match tokio::time::timeout(idle, bytes.next()).await {
                    Err(_) => return tx.fail(upstream("the language model stopped sending")).await,
                    Ok(None) => break,
                    Ok(Some(Err(_))) => return tx.fail(upstream("the language model stream broke off")).await,
                    Ok(Some(Ok(chunk))) => chunk,
                };
                let events = match decoder.push(&chunk) {
                    Ok(events) => events,
                    Err(sse::EventTooLarge) => {
                        return tx.fail(upstream("the language model sent an oversized event")).await
                    }
                };
                for event in events {
                    match parse_stream_event(provider, &event) {
                        Ok(StreamStep::Deltas(deltas)) => {
                            for delta in deltas {
                                if !tx.send(Ok(delta)).await {
                                    return;
                                }
                            }
                        }
                        Ok(StreamStep::Done) => return,
                        Err(err) => return tx.fail(err).await,
                    }
                }
            }
            if let Some(event) = decoder.finish() {
                if let Ok(StreamStep::Deltas(deltas)) = parse_stream_event(provider, &event) {
                    for delta in deltas {
                        tx.send(Ok(delta)).await;
                    }
                }
            }
        });
        Ok(stream)
    }

    /// Sends the request with the retry policy (see [`crate::retry`]).
    async fn send(&self, prompt: &Prompt, stream: bool) -> Result<reqwest::Response, Error> {
        if self.config.provider == Provider::None {
            return Err(Error::Internal("the none provider sends no requests".into()));
        }
        let api_key = self.secrets.field(&self.secret_id, API_KEY_FIELD).await?;
        let policy = RetryPolicy {
            timeout: self.config.timeout,
            max_attempts: self.config.max_attempts,
            backoff: self.config.backoff,
        };
        // A whole reply must arrive within the timeout; a stream gets a generous cap and is
        // bounded chunk by chunk.
        let total = if stream { Duration::from_secs(15 * 60) } else { self.config.timeout };
        let build = || match self.config.provider {
            Provider::OpenAi => openai::request(&self.http, &self.config, prompt, api_key.as_deref(), stream),
            Provider::Anthropic => anthropic::request(&self.http, &self.config, prompt, api_key.as_deref(), stream),
            // `None` returned above.
            Provider::Gemini | Provider::None => {
                gemini::request(&self.http, &self.config, prompt, api_key.as_deref(), stream)
            }
        };
        retry::send(&policy, "llm", total, build).await.map_err(|e| match e {
            SendError::Refused(status) => {
                upstream(&format!("the language model refused the request (status {status})"))
            }
            SendError::Unavailable => upstream("the language model is unavailable; try again shortly"),
        })
    }
}

fn upstream(message: &str) -> Error {
    Error::Upstream(message.to_owned())
}

enum StreamStep {
    Deltas(Vec<Delta>),
    Done,
}

fn parse_stream_event(provider: Provider, event: &sse::SseEvent) -> Result<StreamStep, Error> {
    match provider {
        Provider::OpenAi => openai::parse_stream_event(event),
        Provider::Anthropic => anthropic::parse_stream_event(event),
        Provider::Gemini => gemini::parse_stream_event(event),
        Provider::None => Ok(StreamStep::Done),
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
    Completion { text, usage: Usage::default(), model: "none".to_owned() }
}

/// A sender for a hand-written stream.
struct StreamSender(tokio::sync::mpsc::Sender<Result<Delta, Error>>);

impl StreamSender {
    /// Sends an item; `false` when the consumer went away.
    async fn send(&self, item: Result<Delta, Error>) -> bool {
        self.0.send(item).await.is_ok()
    }

    async fn fail(&self, err: Error) {
        let _ = self.0.send(Err(err)).await;
    }
}

/// Runs `producer` as a task feeding a bounded channel, and returns the channel as a stream.
fn async_stream<F, Fut>(producer: F) -> DeltaStream
where
    F: FnOnce(StreamSender) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(StreamSender(tx)));
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_answer_labels_passages() {
        let source = crate::history::Source {
            document_id: "d1".into(),
            title: "giving-feedback.md".into(),
            chunk: 0,
            score: 1.0,
            snippet: "Be".into(),
        };
        let answer = offline_answer(&[Passage { source, text: "Be specific.".into() }]);
        assert!(answer.text.starts_with("No language model is configured"));
        assert!(answer.text.contains("[1] giving-feedback.md (part 1)\nBe specific."));
        assert_eq!(answer.model, "none");
        assert!(offline_answer(&[]).text.contains("no passage"));
    }
}
