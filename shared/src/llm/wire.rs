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
        retry::send(&policy, "llm", total, build).await.map_err(|e| {
            let message = match e {
                SendError::Refused { status, .. } => {
                    format!("the language model refused the request (status {status})")
                }
                SendError::Unavailable { .. } => "the language model is unavailable; try again shortly".to_owned(),
            };
            Error::Upstream { message, cause: Some(std::sync::Arc::new(e)) }
        })
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
