//! Google Gemini (`POST {base}/v1beta/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streams).

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
    let contents: Vec<Value> = prompt
        .turns
        .iter()
        .map(|t| {
            let role = match t.role {
                Author::User => "user",
                Author::Assistant => "model",
            };
            json!({"role": role, "parts": [{"text": t.content}]})
        })
        .collect();
    let body = json!({
        "systemInstruction": {"parts": [{"text": prompt.system}]},
        "contents": contents,
        "generationConfig": {"maxOutputTokens": config.max_output_tokens},
    });
    let url = if stream {
        format!("{}/v1beta/models/{}:streamGenerateContent?alt=sse", config.base_url, config.model)
    } else {
        format!("{}/v1beta/models/{}:generateContent", config.base_url, config.model)
    };
    let request = http.post(url).json(&body);
    match api_key {
        Some(key) => request.header("x-goog-api-key", key),
        None => request,
    }
}

fn text_of(body: &Value) -> Option<String> {
    let parts = body["candidates"][0]["content"]["parts"].as_array()?;
    Some(parts.iter().filter_map(|p| p["text"].as_str()).collect())
}

fn usage_of(body: &Value) -> Usage {
    Usage {
        input_tokens: body["usageMetadata"]["promptTokenCount"].as_u64().unwrap_or(0),
        output_tokens: body["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap_or(0),
    }
}

pub(super) fn parse_completion(body: &Value) -> Option<Completion> {
    Some(Completion {
        text: text_of(body)?,
        usage: usage_of(body),
        model: body["modelVersion"].as_str().unwrap_or_default().to_owned(),
    })
}

pub(super) fn parse_stream_event(event: &SseEvent) -> Result<StreamStep, Error> {
    let chunk: Value =
        serde_json::from_str(&event.data).map_err(|_| upstream("the language model sent a malformed event"))?;
    if chunk.get("error").is_some() {
        return Err(upstream("the language model failed mid-reply"));
    }
    let mut deltas = Vec::new();
    if let Some(model) = chunk["modelVersion"].as_str() {
        deltas.push(Delta::Model(model.to_owned()));
    }
    if let Some(text) = text_of(&chunk).filter(|t| !t.is_empty()) {
        deltas.push(Delta::Text(text));
    }
    if chunk["usageMetadata"].is_object() {
        deltas.push(Delta::Usage(usage_of(&chunk)));
    }
    Ok(StreamStep::Deltas(deltas))
}
