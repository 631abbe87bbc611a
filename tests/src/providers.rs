//! Fake model providers that answer as the real APIs document it, from the wire fixtures in
//! `tests/fixtures/providers/` (see its README): OpenAI chat completions, Anthropic Messages
//! and Gemini `generateContent`, whole and streamed, under the *dated* model name each API
//! serves for the undated one Coach asks for. Failures (a 429 with `retry-after`, a
//! context-length 400, Anthropic's 529, a stream that breaks midway) are served from the
//! same files.

use serde_json::Value;
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

/// A provider of the language model (`COACH_LLM_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

/// Every HTTP provider, for tests that run each.
pub const PROVIDERS: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];

/// Tokens of every fixture reply: in, out.
pub const FIXTURE_USAGE: (u64, u64) = (1200, 300);

impl Provider {
    /// `COACH_LLM_PROVIDER`'s value and the fixtures' folder.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
        }
    }

    /// The model Coach asks for (the provider's default model, undated).
    pub fn requested(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-3-5-haiku-latest",
            Provider::Gemini => "gemini-1.5-flash",
        }
    }

    /// The model the provider says answered: what the fixtures name.
    pub fn served(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini-2024-07-18",
            Provider::Anthropic => "claude-3-5-haiku-20241022",
            Provider::Gemini => "gemini-1.5-flash-002",
        }
    }

    /// A fixture file's text.
    pub fn fixture(self, file: &str) -> String {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/providers").join(self.name()).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A JSON fixture.
    pub fn json(self, file: &str) -> Value {
        serde_json::from_str(&self.fixture(file)).expect("a JSON fixture")
    }

    /// Matches requests for a whole reply (`stream == false`) or a streamed one.
    fn route(self, stream: bool) -> wiremock::MockBuilder {
        match self {
            Provider::OpenAi => Mock::given(matchers::method("POST"))
                .and(matchers::path("/chat/completions"))
                .and(matchers::body_partial_json(serde_json::json!({ "stream": stream }))),
            Provider::Anthropic => Mock::given(matchers::method("POST"))
                .and(matchers::path("/v1/messages"))
                .and(matchers::body_partial_json(serde_json::json!({ "stream": stream }))),
            Provider::Gemini => {
                let action = if stream { "streamGenerateContent" } else { "generateContent" };
                Mock::given(matchers::method("POST"))
                    .and(matchers::path_regex(format!(r"^/v1beta/models/[^/:]+:{action}$")))
            }
        }
    }
}

/// A fake provider on a free loopback port.
pub struct FakeProvider {
    pub provider: Provider,
    pub server: MockServer,
}

/// An SSE body as the providers send it.
fn event_stream(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_raw(body, "text/event-stream")
}

impl FakeProvider {
    /// Answers every request with the fixture reply, whole or streamed.
    pub async fn start(provider: Provider) -> Self {
        let fake = Self { provider, server: MockServer::start().await };
        provider
            .route(false)
            .respond_with(ResponseTemplate::new(200).set_body_json(provider.json("reply.json")))
            .mount(&fake.server)
            .await;
        provider.route(true).respond_with(event_stream(provider.fixture("stream.sse"))).mount(&fake.server).await;
        fake
    }

    /// Answers every request with `status`, the fixture `file` as its body and `headers`.
    pub async fn failing(provider: Provider, status: u16, file: &str, headers: &[(&str, &str)]) -> Self {
        let fake = Self { provider, server: MockServer::start().await };
        let mut response = ResponseTemplate::new(status).set_body_json(provider.json(file));
        for (name, value) in headers {
            response = response.insert_header(*name, *value);
        }
        Mock::given(matchers::any()).respond_with(response).mount(&fake.server).await;
        fake
    }

    /// Streams replies that break off midway (`stream-error.sse`).
    pub async fn breaking_stream(provider: Provider) -> Self {
        let fake = Self { provider, server: MockServer::start().await };
        provider.route(true).respond_with(event_stream(provider.fixture("stream-error.sse"))).mount(&fake.server).await;
        fake
    }

    /// The environment that points Coach's language model here, asking for the undated
    /// model, quickly retried.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COACH_LLM_PROVIDER", self.provider.name().to_owned()),
            ("COACH_LLM_BASE_URL", self.server.uri()),
            ("COACH_LLM_MODEL", self.provider.requested().to_owned()),
            ("COACH_LLM_BACKOFF_MS", "1".to_owned()),
        ]
    }

    /// The requests received so far.
    pub async fn requests(&self) -> usize {
        self.server.received_requests().await.unwrap_or_default().len()
    }
}

/// `vars` as the `(&str, &str)` pairs a [`crate::stack::TestStack`] takes.
pub fn pairs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
