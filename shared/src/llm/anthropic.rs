//! Anthropic Messages API (`POST {base}/v1/messages`).

use serde::{Deserialize, Serialize};

use super::{
    wire::{count, text, StreamStep, Wire},
    Completion, Delta, LlmConfig, Prompt,
};
use crate::{error::Error, model::Usage};

const API_VERSION: &str = "2023-06-01";

pub(super) struct Anthropic;

#[derive(Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    system: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
pub(super) struct Response {
    content: Vec<Block>,
    #[serde(default)]
    usage: WireUsage,
    #[serde(default, deserialize_with = "text")]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type", default, deserialize_with = "text")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "text")]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    output_tokens: u64,
}

impl From<&WireUsage> for Usage {
    fn from(u: &WireUsage) -> Usage {
        Usage { input_tokens: u.input_tokens, output_tokens: u.output_tokens }
    }
}

/// One stream event's data.
#[derive(Deserialize)]
pub(super) struct Event {
    #[serde(rename = "type", default, deserialize_with = "text")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<EventMessage>,
    #[serde(default)]
    delta: Option<Block>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct EventMessage {
    #[serde(default, deserialize_with = "text")]
    model: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

impl Wire for Anthropic {
    type Request<'a> = Request<'a>;
    type Response = Response;
    type Event = Event;

    fn url(config: &LlmConfig, _stream: bool) -> String {
        format!("{}/v1/messages", config.base_url)
    }

    fn body<'a>(config: &'a LlmConfig, prompt: &'a Prompt, stream: bool) -> Request<'a> {
        Request {
            model: &config.model,
            system: &prompt.system,
            messages: prompt.turns.iter().map(|t| Message { role: t.role.as_str(), content: &t.content }).collect(),
            max_tokens: prompt.sampling.max_output_tokens(config),
            temperature: prompt.sampling.temperature.map(|t| t.min(1.0)),
            stream,
        }
    }

    fn headers(request: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder {
        let request = request.header("anthropic-version", API_VERSION);
        match api_key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    fn completion(response: Response) -> Option<Completion> {
        let text: String =
            response.content.into_iter().filter(|b| b.kind.as_deref() == Some("text")).filter_map(|b| b.text).collect();
        let model = response.model.unwrap_or_default();
        Some(Completion { text, usage: (&response.usage).into(), model, intervened: false })
    }

    fn context_too_long(status: u16, body: &str) -> bool {
        // `invalid_request_error`: "prompt is too long: 210000 tokens > 200000 maximum".
        status == 400 && body.contains("prompt is too long")
    }

    fn step(name: Option<&str>, data: Event) -> Result<StreamStep, Error> {
        let kind = name.or(data.kind.as_deref()).unwrap_or_default();
        let deltas = match kind {
            "message_start" => {
                let mut deltas = Vec::new();
                let (model, usage) = match &data.message {
                    Some(m) => (m.model.clone(), Usage::from(&m.usage)),
                    None => (None, Usage::default()),
                };
                if let Some(model) = model {
                    deltas.push(Delta::Model(model));
                }
                deltas.push(Delta::Usage(usage));
                deltas
            }
            "content_block_delta" => match data.delta {
                Some(Block { kind: Some(k), text: Some(text) }) if k == "text_delta" && !text.is_empty() => {
                    vec![Delta::Text(text)]
                }
                _ => Vec::new(),
            },
            "message_delta" => vec![Delta::Usage((&data.usage).into())],
            "message_stop" => return Ok(StreamStep::Done),
            "error" => return Err(Error::upstream("the language model failed mid-reply")),
            _ => Vec::new(),
        };
        Ok(StreamStep::Deltas(deltas))
    }
}
