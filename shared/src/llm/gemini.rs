//! Google Gemini (`POST {base}/v1beta/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streams).

use serde::{Deserialize, Serialize};

use super::{
    wire::{count, text, StreamStep, Wire},
    Completion, Delta, LlmConfig, Prompt,
};
use crate::{
    error::Error,
    model::{Author, Usage},
};

pub(super) struct Gemini;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Request<'a> {
    system_instruction: Content<'a>,
    contents: Vec<Content<'a>>,
    generation_config: GenerationConfig,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: [Part<'a>; 1],
}

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    max_output_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default, deserialize_with = "text")]
    model_version: Option<String>,
    /// Only in stream chunks: a failure mid-reply.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(default)]
    content: Option<ReplyContent>,
}

#[derive(Deserialize)]
struct ReplyContent {
    #[serde(default)]
    parts: Option<Vec<ReplyPart>>,
}

#[derive(Deserialize)]
struct ReplyPart {
    #[serde(default, deserialize_with = "text")]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default, deserialize_with = "count")]
    prompt_token_count: u64,
    #[serde(default, deserialize_with = "count")]
    candidates_token_count: u64,
}

impl Response {
    /// The first candidate's text; `None` when it has no parts.
    fn text(&mut self) -> Option<String> {
        let parts = self.candidates.first_mut()?.content.as_mut()?.parts.take()?;
        Some(parts.into_iter().filter_map(|p| p.text).collect())
    }

    fn usage(&self) -> Usage {
        self.usage_metadata
            .as_ref()
            .map(|u| Usage { input_tokens: u.prompt_token_count, output_tokens: u.candidates_token_count })
            .unwrap_or_default()
    }
}

impl Wire for Gemini {
    type Request<'a> = Request<'a>;
    type Response = Response;
    type Event = Response;

    fn url(config: &LlmConfig, stream: bool) -> String {
        if stream {
            format!("{}/v1beta/models/{}:streamGenerateContent?alt=sse", config.base_url, config.model)
        } else {
            format!("{}/v1beta/models/{}:generateContent", config.base_url, config.model)
        }
    }

    fn body<'a>(config: &'a LlmConfig, prompt: &'a Prompt, _stream: bool) -> Request<'a> {
        let contents = prompt
            .turns
            .iter()
            .map(|t| {
                let role = match t.role {
                    Author::User => "user",
                    Author::Assistant => "model",
                };
                Content { role: Some(role), parts: [Part { text: &t.content }] }
            })
            .collect();
        Request {
            system_instruction: Content { role: None, parts: [Part { text: &prompt.system }] },
            contents,
            generation_config: GenerationConfig {
                max_output_tokens: prompt.sampling.max_output_tokens(config),
                temperature: prompt.sampling.temperature,
            },
        }
    }

    fn headers(request: reqwest::RequestBuilder, api_key: Option<&str>) -> reqwest::RequestBuilder {
        match api_key {
            Some(key) => request.header("x-goog-api-key", key),
            None => request,
        }
    }

    fn completion(mut response: Response) -> Option<Completion> {
        Some(Completion {
            text: response.text()?,
            usage: response.usage(),
            model: response.model_version.take().unwrap_or_default(),
            intervened: false,
        })
    }

    fn context_too_long(status: u16, body: &str) -> bool {
        // `INVALID_ARGUMENT`: "The input token count (…) exceeds the maximum number of tokens allowed (…)".
        status == 400 && body.contains("exceeds the maximum number of tokens")
    }

    fn step(_name: Option<&str>, mut chunk: Response) -> Result<StreamStep, Error> {
        if chunk.error.is_some() {
            return Err(Error::upstream("the language model failed mid-reply"));
        }
        let mut deltas = Vec::new();
        if let Some(model) = chunk.model_version.take() {
            deltas.push(Delta::Model(model));
        }
        if let Some(text) = chunk.text().filter(|t| !t.is_empty()) {
            deltas.push(Delta::Text(text));
        }
        if chunk.usage_metadata.is_some() {
            deltas.push(Delta::Usage(chunk.usage()));
        }
        Ok(StreamStep::Deltas(deltas))
    }
}
