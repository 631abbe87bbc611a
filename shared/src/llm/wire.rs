//! What the HTTP providers share: a provider is its wire format ([`Wire`]), and
//! [`HttpModel`] does the rest for all of them: the API key, sending with retries, reading a
//! reply within the timeout, and turning a Server-Sent Events stream into [`Delta`]s.

use std::{marker::PhantomData, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};

use super::{sse, ChatModel, Completion, Delta, DeltaStream, LlmConfig, Prompt};
use crate::{
    error::Error,
    model::Passage,
    retry::{self, SendError},
    secrets::{Secrets, LLM_API_KEY_FIELD},
};

/// What one stream event means.
pub(super) enum StreamStep {
    Deltas(Vec<Delta>),
    Done,
}

/// One provider's wire format.
pub(super) trait Wire: Send + Sync + 'static {
    /// The request body.
    type Request<'a>: Serialize + Send + Sync;
    /// A whole reply.
    type Response: DeserializeOwned;
    /// The `data` of one stream event.
    type Event: DeserializeOwned;

    /// Where to send a request.
    fn url(config: &LlmConfig, stream: bool) -> String;
    /// The request body for `prompt`.
    fn body<'a>(config: &'a LlmConfig, prompt: &'a Prompt, stream: bool) -> Self::Request<'a>;
    /// Headers beyond the JSON body: the API key, a version.
    fn headers(request: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder;
    /// The completion in a reply; `None` when the reply has no text.
    fn completion(response: Self::Response) -> Option<Completion>;
    /// Whether a refusal (`status`, the start of its body) says the prompt is longer than the
    /// model's context window.
    fn context_too_long(status: u16, body: &str) -> bool;
    /// Whether a stream event's raw data marks the end (OpenAI's `[DONE]`).
    fn is_done(_data: &str) -> bool {
        false
    }
    /// What a decoded stream event means; `name` is its SSE `event:` field.
    fn step(name: Option<&str>, event: Self::Event) -> Result<StreamStep, Error>;
}

/// A model behind an HTTP API speaking wire format `W`.
pub(super) struct HttpModel<W> {
    config: LlmConfig,
    http: reqwest::Client,
    secrets: Secrets,
    wire: PhantomData<W>,
}

impl<W: Wire> HttpModel<W> {
    pub(super) fn new(config: LlmConfig, http: reqwest::Client, secrets: Secrets) -> Self {
        Self { config, http, secrets, wire: PhantomData }
    }

    /// Sends the request with the retry policy (see [`crate::retry`]).
    async fn send(&self, prompt: &Prompt, stream: bool) -> Result<reqwest::Response, Error> {
        let api_key = self.secrets.field(LLM_API_KEY_FIELD).await?;
        let policy = self.config.retries.policy(self.config.timeout);
        // A whole reply must arrive within the timeout; a stream gets a generous cap and is
        // bounded chunk by chunk.
        let total = if stream { Duration::from_secs(15 * 60) } else { self.config.timeout };
        let url = W::url(&self.config, stream);
        let body = W::body(&self.config, prompt, stream);
        let build = || W::headers(self.http.post(&url).json(&body), api_key.as_deref());
        retry::send(&policy, "llm", total, build).await.map_err(|e| refusal::<W>(e))
    }
}

#[async_trait]
impl<W: Wire> ChatModel for HttpModel<W> {
    async fn complete(&self, prompt: &Prompt, _passages: &[Passage]) -> Result<Completion, Error> {
        let response = self.send(prompt, false).await?;
        let body = tokio::time::timeout(self.config.timeout, response.bytes())
            .await
            .map_err(|_| Error::upstream("the language model timed out"))?
            .map_err(|_| Error::upstream("the language model sent an unreadable reply"))?;
        let reply: W::Response = serde_json::from_slice(&body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Error::upstream("the language model sent an unexpected reply"),
            _ => Error::upstream("the language model sent an unreadable reply"),
        })?;
        W::completion(reply).ok_or_else(|| Error::upstream("the language model sent an unexpected reply"))
    }

    async fn stream(&self, prompt: &Prompt, _passages: &[Passage]) -> Result<DeltaStream, Error> {
        let response = self.send(prompt, true).await?;
        let idle = self.config.timeout;
        let mut bytes = response.bytes_stream();
        let mut decoder = sse::SseDecoder::default();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Delta, Error>>(64);
        tokio::spawn(async move {
            // Sends an item; `false` when the consumer went away.
            let send = |item| {
                let tx = tx.clone();
                async move { tx.send(item).await.is_ok() }
            };
            loop {
                let chunk = match tokio::time::timeout(idle, bytes.next()).await {
                    Err(_) => return send(Err(Error::upstream("the language model stopped sending"))).await,
                    Ok(None) => break,
                    Ok(Some(Err(_))) => return send(Err(Error::upstream("the language model stream broke off"))).await,
                    Ok(Some(Ok(chunk))) => chunk,
                };
                let events = match decoder.push(&chunk) {
                    Ok(events) => events,
                    Err(sse::EventTooLarge) => {
                        return send(Err(Error::upstream("the language model sent an oversized event"))).await
                    }
                };
                for event in events {
                    match parse::<W>(&event) {
                        Ok(StreamStep::Deltas(deltas)) => {
                            for delta in deltas {
                                if !send(Ok(delta)).await {
                                    return false;
                                }
                            }
                        }
                        Ok(StreamStep::Done) => return true,
                        Err(err) => return send(Err(err)).await,
                    }
                }
            }
            if let Some(event) = decoder.finish() {
                if let Ok(StreamStep::Deltas(deltas)) = parse::<W>(&event) {
                    for delta in deltas {
                        send(Ok(delta)).await;
                    }
                }
            }
            true
        });
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }
}

/// What the caller is told when the model gave no reply: a prompt over the model's context
/// is a 413 the user can act on; the provider's rate limit a 429 and its overload (Anthropic's
/// 529, a 503) a 503, each with the provider's `Retry-After` (else a few seconds); anything
/// else a 502.
fn refusal<W: Wire>(e: SendError) -> Error {
    let cause = |e| Some(std::sync::Arc::new(e) as crate::error::Cause);
    match e {
        SendError::Refused { status, ref body, .. } if W::context_too_long(status, body) => Error::PayloadTooLarge(
            "the conversation is too long for the language model; start a new session or send a shorter message".into(),
        ),
        SendError::Refused { status, .. } => Error::Upstream {
            message: format!("the language model refused the request (status {status})"),
            cause: cause(e),
        },
        SendError::Unavailable { last_status: Some(status @ (429 | 503 | 529)), retry_after, .. } => {
            let overloaded = status != 429;
            let message = if overloaded {
                "the language model is overloaded; try again shortly"
            } else {
                "the language model's rate limit is reached; try again shortly"
            };
            let retry_after_secs = retry_after.map_or(BUSY_RETRY_SECS, |after| after.as_secs().max(1));
            Error::UpstreamBusy { message: message.into(), retry_after_secs, overloaded, cause: cause(e) }
        }
        SendError::Unavailable { .. } => {
            Error::Upstream { message: "the language model is unavailable; try again shortly".into(), cause: cause(e) }
        }
    }
}

/// `Retry-After` for a busy provider that named no time.
const BUSY_RETRY_SECS: u64 = 5;

fn parse<W: Wire>(event: &sse::SseEvent) -> Result<StreamStep, Error> {
    if W::is_done(event.data.trim()) {
        return Ok(StreamStep::Done);
    }
    let data: W::Event =
        serde_json::from_str(&event.data).map_err(|_| Error::upstream("the language model sent a malformed event"))?;
    W::step(event.event.as_deref(), data)
}

/// A token count as providers send it: a whole number, or anything else read as 0.
pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64().unwrap_or(0))
}

/// A string field that may be absent, null or of another type (read as absent).
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}
