//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI, Ollama,
//! vLLM, LM Studio and other compatible servers.

use serde::{Deserialize, Serialize};

use super::{
    wire::{count, text, StreamStep, Wire},
    Completion, Delta, LlmConfig, Prompt,
};
use crate::{error::Error, model::Usage};

pub(super) struct OpenAi;

#[derive(Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
pub(super) struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, deserialize_with = "text")]
    model: Option<String>,
    /// Only in stream chunks: a failure mid-reply.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Choice {
    #[serde(default)]
    message: Option<Content>,
    #[serde(default)]
    delta: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default, deserialize_with = "text")]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    completion_tokens: u64,
}

impl From<&WireUsage> for Usage {
    fn from(u: &WireUsage) -> Usage {
        Usage { input_tokens: u.prompt_tokens, output_tokens: u.completion_tokens }
    }
}

impl Wire for OpenAi {
    type Request<'a> = Request<'a>;
    type Response = Response;
    type Event = Response;

    fn url(config: &LlmConfig, _stream: bool) -> String {
        format!("{}/chat/completions", config.base_url)
    }

    fn body<'a>(config: &'a LlmConfig, prompt: &'a Prompt, stream: bool) -> Request<'a> {
        let mut messages = vec![Message { role: "system", content: &prompt.system }];
        messages.extend(prompt.turns.iter().map(|t| Message { role: t.role.as_str(), content: &t.content }));
        Request {
            model: &config.model,
            messages,
            max_tokens: prompt.sampling.max_output_tokens(config),
            temperature: prompt.sampling.temperature,
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
        }
    }

    fn headers(request: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder {
        match api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn completion(response: Response) -> Option<Completion> {
        let text = response.choices.into_iter().next()?.message?.content?;
        Some(Completion {
            text,
            usage: response.usage.as_ref().map(Usage::from).unwrap_or_default(),
            model: response.model.unwrap_or_default(),
            intervened: false,
        })
    }

    fn context_too_long(status: u16, body: &str) -> bool {
        // `{"error": {"code": "context_length_exceeded", ...}}`
        status == 400 && body.contains("context_length_exceeded")
    }

    fn is_done(data: &str) -> bool {
        data == "[DONE]"
    }

    fn step(_name: Option<&str>, chunk: Response) -> Result<StreamStep, Error> {
        if chunk.error.is_some() {
            return Err(Error::upstream("the language model failed mid-reply"));
        }
        let mut deltas = Vec::new();
        if let Some(model) = chunk.model {
            deltas.push(Delta::Model(model));
        }
        let piece = chunk.choices.into_iter().next().and_then(|c| c.delta).and_then(|d| d.content);
        if let Some(text) = piece.filter(|t| !t.is_empty()) {
            deltas.push(Delta::Text(text));
        }
        if let Some(usage) = &chunk.usage {
            deltas.push(Delta::Usage(usage.into()));
        }
        Ok(StreamStep::Deltas(deltas))
    }
}
