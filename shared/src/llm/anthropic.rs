//! Anthropic Messages API (`POST {base}/v1/messages`).

use serde_json::{json, Value};

use super::{sse::SseEvent, upstream, Completion, Delta, LlmConfig, Prompt, StreamStep, Usage};
use crate::{error::Error, history::Author};

const API_VERSION: &str = "2023-06-01";

pub(super) fn request(
    http: &reqwest::Client,
    config: &LlmConfig,
    prompt: &Prompt,
    api_key: Option<&str>,
    stream: bool,
) -> reqwest::RequestBuilder {
    let messages: Vec<Value> = prompt
        .turns
        .iter()
        .map(|t| {
            let role = match t.role {
                Author::User => "user",
                Author::Assistant => "assistant",
            };
            json!({"role": role, "content": t.content})
        })
        .collect();
    let body = json!({
        "model": config.model,
        "system": prompt.system,
        "messages": messages,
        "max_tokens": config.max_output_tokens,
        "stream": stream,
    });
    let request =
        http.post(format!("{}/v1/messages", config.base_url)).header("anthropic-version", API_VERSION).json(&body);
    match api_key {
        Some(key) => request.header("x-api-key", key),
        None => request,
    }
}

pub(super) fn parse_completion(body: &Value) -> Option<Completion> {
    let blocks = body["content"].as_array()?;
    let text: String = blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
    Some(Completion {
        text,
        usage: Usage {
            input_tokens: body["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: body["usage"]["output_tokens"].as_u64().unwrap_or(0),
        },
        model: body["model"].as_str().unwrap_or_default().to_owned(),
    })
}

pub(super) fn parse_stream_event(event: &SseEvent) -> Result<StreamStep, Error> {
    let data: Value =
        serde_json::from_str(&event.data).map_err(|_| upstream("the language model sent a malformed event"))?;
    let kind = event.event.as_deref().or(data["type"].as_str()).unwrap_or_default();
    let deltas = match kind {
        "message_start" => {
            let message = &data["message"];
            let mut deltas = Vec::new();
            if let Some(model) = message["model"].as_str() {
                deltas.push(Delta::Model(model.to_owned()));
            }
            deltas.push(Delta::Usage(Usage {
                input_tokens: message["usage"]["input_tokens"].as_u64().unwrap_or(0),
                output_tokens: message["usage"]["output_tokens"].as_u64().unwrap_or(0),
            }));
            deltas
        }
        "content_block_delta" => match data["delta"]["text"].as_str() {
            Some(text) if data["delta"]["type"] == "text_delta" && !text.is_empty() => {
                vec![Delta::Text(text.to_owned())]
            }
            _ => Vec::new(),
        },
        "message_delta" => vec![Delta::Usage(Usage {
            input_tokens: data["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: data["usage"]["output_tokens"].as_u64().unwrap_or(0),
        })],
        "message_stop" => return Ok(StreamStep::Done),
        "error" => return Err(upstream("the language model failed mid-reply")),
        _ => Vec::new(),
    };
    Ok(StreamStep::Deltas(deltas))
}
