//! OpenAI-compatible chat completions (`POST {base}/chat/completions`): OpenAI, Ollama,
//! vLLM, LM Studio and other compatible servers.

use serde_json::{json, Value};

use super::{sse::SseEvent, upstream, Completion, Delta, LlmConfig, Prompt, StreamStep, Usage};
use crate::{error::Error, history::Author};

pub(super) fn request(
    http: &reqwest::Client,
    config: &LlmConfig,
    prompt: &Prompt,
    api_key: Option<&str>,
    stream: bool,
) -> reqwest::RequestBuilder {
    let mut messages = vec![json!({"role": "system", "content": prompt.system})];
    messages.extend(prompt.turns.iter().map(|t| {
        let role = match t.role {
            Author::User => "user",
            Author::Assistant => "assistant",
        };
        json!({"role": role, "content": t.content})
    }));
    let mut body = json!({
        "model": config.model,
        "messages": messages,
        "max_tokens": config.max_output_tokens,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let request = http.post(format!("{}/chat/completions", config.base_url)).json(&body);
    match api_key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

pub(super) fn parse_completion(body: &Value) -> Option<Completion> {
    let text = body["choices"][0]["message"]["content"].as_str()?.to_owned();
    Some(Completion {
        text,
        usage: Usage {
            input_tokens: body["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            output_tokens: body["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        },
        model: body["model"].as_str().unwrap_or_default().to_owned(),
    })
}

pub(super) fn parse_stream_event(event: &SseEvent) -> Result<StreamStep, Error> {
    if event.data.trim() == "[DONE]" {
        return Ok(StreamStep::Done);
    }
    let chunk: Value =
        serde_json::from_str(&event.data).map_err(|_| upstream("the language model sent a malformed event"))?;
    if chunk.get("error").is_some() {
        return Err(upstream("the language model failed mid-reply"));
    }
    let mut deltas = Vec::new();
    if let Some(model) = chunk["model"].as_str() {
        deltas.push(Delta::Model(model.to_owned()));
    }
    if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
        if !text.is_empty() {
            deltas.push(Delta::Text(text.to_owned()));
        }
    }
    if chunk["usage"].is_object() {
        deltas.push(Delta::Usage(Usage {
            input_tokens: chunk["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            output_tokens: chunk["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        }));
    }
    Ok(StreamStep::Deltas(deltas))
}
