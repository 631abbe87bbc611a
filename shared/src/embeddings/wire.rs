//! The HTTP embedding providers' wire formats ([`EmbeddingWire`]), typed as the language
//! models' are (`crate::llm`): a provider is its URL, body, headers and reply, and
//! [`super::Embedder`] does the rest (the key, batches, retries, usage).

use serde::{Deserialize, Serialize};

use super::EmbeddingConfig;

/// What one batch's reply says: a vector per text, and what the API says it served and
/// counted, when it says so.
pub(super) struct Reply {
    pub vectors: Vec<Vec<f32>>,
    pub model: Option<String>,
    pub tokens: Option<u64>,
}

/// One embedding provider's wire format.
pub(super) trait EmbeddingWire {
    /// The request body.
    type Request<'a>: Serialize + Send + Sync;
    /// The reply.
    type Response: for<'de> Deserialize<'de>;

    /// Where a batch goes.
    fn url(config: &EmbeddingConfig) -> String;
    /// The request body for `batch`.
    fn body<'a>(config: &'a EmbeddingConfig, batch: &'a [String]) -> Self::Request<'a>;
    /// The API key's header.
    fn authorise(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder;
    /// What a reply says.
    fn reply(response: Self::Response) -> Reply;
}

/// Any OpenAI-compatible `POST {base}/embeddings`.
pub(super) struct OpenAi;

#[derive(Serialize)]
pub(super) struct OpenAiRequest<'a> {
    model: &'a str,
    input: &'a [String],
}

#[derive(Deserialize)]
pub(super) struct OpenAiResponse {
    data: Vec<OpenAiEmbedding>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiEmbedding {
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
}

impl EmbeddingWire for OpenAi {
    type Request<'a> = OpenAiRequest<'a>;
    type Response = OpenAiResponse;

    fn url(config: &EmbeddingConfig) -> String {
        format!("{}/embeddings", config.base_url)
    }

    fn body<'a>(config: &'a EmbeddingConfig, batch: &'a [String]) -> OpenAiRequest<'a> {
        OpenAiRequest { model: &config.model, input: batch }
    }

    fn authorise(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        request.bearer_auth(key)
    }

    fn reply(response: OpenAiResponse) -> Reply {
        Reply {
            vectors: response.data.into_iter().map(|d| d.embedding).collect(),
            model: response.model,
            tokens: response.usage.and_then(|u| u.prompt_tokens),
        }
    }
}

/// Gemini's `POST {base}/v1beta/models/{model}:batchEmbedContents`.
pub(super) struct Gemini;

#[derive(Serialize)]
pub(super) struct GeminiRequest<'a> {
    requests: Vec<GeminiEmbedRequest<'a>>,
}

#[derive(Serialize)]
struct GeminiEmbedRequest<'a> {
    model: String,
    content: GeminiContent<'a>,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    parts: [GeminiPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiPart<'a> {
    text: &'a str,
}

#[derive(Deserialize)]
pub(super) struct GeminiResponse {
    embeddings: Vec<GeminiEmbedding>,
}

#[derive(Deserialize)]
struct GeminiEmbedding {
    values: Vec<f32>,
}

fn gemini_model(config: &EmbeddingConfig) -> String {
    format!("models/{}", config.model)
}

impl EmbeddingWire for Gemini {
    type Request<'a> = GeminiRequest<'a>;
    type Response = GeminiResponse;

    fn url(config: &EmbeddingConfig) -> String {
        format!("{}/v1beta/{}:batchEmbedContents", config.base_url, gemini_model(config))
    }

    fn body<'a>(config: &'a EmbeddingConfig, batch: &'a [String]) -> GeminiRequest<'a> {
        let model = gemini_model(config);
        let requests = batch
            .iter()
            .map(|text| GeminiEmbedRequest {
                model: model.clone(),
                content: GeminiContent { parts: [GeminiPart { text }] },
            })
            .collect();
        GeminiRequest { requests }
    }

    fn authorise(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        request.header("x-goog-api-key", key)
    }

    // Gemini says neither the model it served nor the tokens it counted.
    fn reply(response: GeminiResponse) -> Reply {
        Reply { vectors: response.embeddings.into_iter().map(|e| e.values).collect(), model: None, tokens: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(model: &str) -> EmbeddingConfig {
        let model = model.to_owned();
        let read = move |var: &str| {
            (var == "COACH_EMBEDDING_MODEL" || var == "COACH_EMBEDDING_PROVIDER").then(|| {
                if var == "COACH_EMBEDDING_MODEL" {
                    model.clone()
                } else {
                    "openai".to_owned()
                }
            })
        };
        let env = crate::config::Env(&read);
        let retries = crate::retry::Retries::from_env(&env).unwrap();
        EmbeddingConfig::from_env(&env, retries).unwrap()
    }

    #[test]
    fn the_wire_formats_are_the_providers_documented_bodies() {
        let config = config("text-embedding-3-small");
        let batch = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            serde_json::to_value(OpenAi::body(&config, &batch)).unwrap(),
            serde_json::json!({"model": "text-embedding-3-small", "input": ["a", "b"]})
        );
        assert_eq!(
            serde_json::to_value(Gemini::body(&config, &batch)).unwrap(),
            serde_json::json!({"requests": [
                {"model": "models/text-embedding-3-small", "content": {"parts": [{"text": "a"}]}},
                {"model": "models/text-embedding-3-small", "content": {"parts": [{"text": "b"}]}},
            ]})
        );
        let reply: OpenAiResponse = serde_json::from_value(serde_json::json!({
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 3, "total_tokens": 3}
        }))
        .unwrap();
        let reply = OpenAi::reply(reply);
        assert_eq!(
            (reply.vectors, reply.model.as_deref(), reply.tokens),
            (vec![vec![0.5, -1.0]], Some("text-embedding-3-small"), Some(3))
        );
        let reply: GeminiResponse =
            serde_json::from_value(serde_json::json!({"embeddings": [{"values": [1.0, 2.0]}]})).unwrap();
        assert_eq!(Gemini::reply(reply).vectors, vec![vec![1.0, 2.0]]);
    }
}
