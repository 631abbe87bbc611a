//! Fake model providers that answer as the real APIs document it, from the wire fixtures in
//! `tests/fixtures/providers/` (see its README): OpenAI chat completions, Anthropic Messages
//! and Gemini `generateContent`, whole and streamed, under the *dated* model name each API
//! serves for the undated one Coach asks for, and Amazon Bedrock's Converse and
//! ConverseStream (its stream in the event-stream framing, its errors named by
//! `x-amzn-errortype`), reached through the AWS SDK. Failures (a 429 with `retry-after`, a
//! context-length 400, Anthropic's 529, Bedrock's exceptions, a stream that breaks midway)
//! are served from the same files.

use serde_json::Value;
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

/// A provider of the language model (`COACH_LLM_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
}

/// Every provider, for tests that run each.
pub const PROVIDERS: [Provider; 4] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini, Provider::Bedrock];

/// The providers reached over HTTP with an API key, whose refusals carry `retry-after`.
pub const HTTP_PROVIDERS: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];

/// Tokens of every fixture reply: in, out.
pub const FIXTURE_USAGE: (u64, u64) = (1200, 300);

impl Provider {
    /// `COACH_LLM_PROVIDER`'s value and the fixtures' folder.
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Bedrock => "bedrock",
        }
    }

    /// The model Coach asks for (the provider's default model, undated).
    pub fn requested(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-3-5-haiku-latest",
            Provider::Gemini => "gemini-1.5-flash",
            Provider::Bedrock => "anthropic.claude-3-5-haiku-20241022-v1:0",
        }
    }

    /// The model the provider says answered: what the fixtures name (Converse names none:
    /// the model id asked for).
    pub fn served(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini-2024-07-18",
            Provider::Anthropic => "claude-3-5-haiku-20241022",
            Provider::Gemini => "gemini-1.5-flash-002",
            Provider::Bedrock => "anthropic.claude-3-5-haiku-20241022-v1:0",
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
            Provider::Bedrock => {
                let operation = if stream { "converse-stream" } else { "converse" };
                Mock::given(matchers::method("POST")).and(matchers::path_regex(format!(r"^/model/[^/]+/{operation}$")))
            }
        }
    }

    /// A streamed reply's body from the fixture `name` (without its extension), as the
    /// provider sends it.
    pub fn stream_body(self, name: &str) -> ResponseTemplate {
        match self {
            Provider::Bedrock => ResponseTemplate::new(200).set_body_raw(
                event_stream_frames(&self.json(&format!("{name}.json"))),
                "application/vnd.amazon.eventstream",
            ),
            _ => event_stream(self.fixture(&format!("{name}.sse"))),
        }
    }
}

/// Bedrock's exception for a refusal fixture, as `x-amzn-errortype` names it.
fn bedrock_error(file: &str) -> &'static str {
    match file {
        "rate-limited.json" => "ThrottlingException",
        "context-length.json" => "ValidationException",
        "access-denied.json" => "AccessDeniedException",
        "not-ready.json" => "ModelNotReadyException",
        other => panic!("no Bedrock exception for {other}"),
    }
}

/// ConverseStream's events in the event-stream framing (`application/vnd.amazon.eventstream`):
/// each `{"name": {body}}` of `events` one message, an event of that type, or an exception
/// when the name ends with `Exception`, its body JSON.
pub fn event_stream_frames(events: &Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut frames = Vec::new();
    for event in events.as_array().expect("a list of events") {
        let (name, body) = event.as_object().and_then(|o| o.iter().next()).expect("one member per event");
        let (kind, type_header) =
            if name.ends_with("Exception") { ("exception", ":exception-type") } else { ("event", ":event-type") };
        let message = Message::new(serde_json::to_vec(body).expect("JSON"))
            .add_header(Header::new(":message-type", HeaderValue::String(kind.into())))
            .add_header(Header::new(type_header, HeaderValue::String(name.clone().into())))
            .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())));
        aws_smithy_eventstream::frame::write_message_to(&message, &mut frames).expect("a frame");
    }
    frames
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
        provider.route(true).respond_with(provider.stream_body("stream")).mount(&fake.server).await;
        fake
    }

    /// Answers every request with `status`, the fixture `file` as its body and `headers`.
    pub async fn failing(provider: Provider, status: u16, file: &str, headers: &[(&str, &str)]) -> Self {
        let fake = Self { provider, server: MockServer::start().await };
        let mut response = ResponseTemplate::new(status).set_body_json(provider.json(file));
        if provider == Provider::Bedrock {
            response = response.insert_header("x-amzn-errortype", bedrock_error(file));
        }
        for (name, value) in headers {
            response = response.insert_header(*name, *value);
        }
        Mock::given(matchers::any()).respond_with(response).mount(&fake.server).await;
        fake
    }

    /// Streams replies that break off midway (`stream-error.sse`).
    pub async fn breaking_stream(provider: Provider) -> Self {
        let fake = Self { provider, server: MockServer::start().await };
        provider.route(true).respond_with(provider.stream_body("stream-error")).mount(&fake.server).await;
        fake
    }

    /// The environment that points Coach's language model here, asking for the undated
    /// model, quickly retried.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        // Bedrock is reached through the AWS SDK, at its own endpoint.
        let endpoint = match self.provider {
            Provider::Bedrock => "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
            _ => "COACH_LLM_BASE_URL",
        };
        vec![
            ("COACH_LLM_PROVIDER", self.provider.name().to_owned()),
            (endpoint, self.server.uri()),
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

/// An OpenAI-compatible server on a free loopback port that streams every reply slowly:
/// `pieces` as `chat.completion.chunk` events (the model `gpt-4o-mini-2024-07-18`), `gap`
/// apart, then the usage chunk and `[DONE]`. For streams that must last (held slots, a
/// client that leaves, a deadline); each connection is served on a task of its own.
pub struct SlowStream {
    pub url: String,
    /// Connections accepted so far.
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowStream {
    pub async fn start(pieces: Vec<String>, gap: std::time::Duration) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let pieces = pieces.clone();
                tokio::spawn(async move {
                    // The request: its headers, then as much of its body as they announce.
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    let header_end = loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..header_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while seen.len() < header_end + length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head =
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = |data: String| format!("{:x}\r\n{data}\r\n", data.len());
                    let event = |delta: serde_json::Value, usage: Option<serde_json::Value>| {
                        let mut body = serde_json::json!({"id": "chatcmpl-slow", "object": "chat.completion.chunk",
                            "model": Provider::OpenAi.served(), "choices": [{"index": 0, "delta": delta}]});
                        if let Some(usage) = usage {
                            body["choices"] = serde_json::json!([]);
                            body["usage"] = usage;
                        }
                        format!("data: {body}\n\n")
                    };
                    for piece in &pieces {
                        let data = event(serde_json::json!({"content": piece}), None);
                        if socket.write_all(chunk(data).as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(gap).await;
                    }
                    let usage = serde_json::json!({"prompt_tokens": 100, "completion_tokens": pieces.len()});
                    let end = format!(
                        "{}{}0\r\n\r\n",
                        chunk(event(serde_json::json!({}), Some(usage))),
                        chunk("data: [DONE]\n\n".into())
                    );
                    let _ = socket.write_all(end.as_bytes()).await;
                });
            }
        });
        Self { url, connections, task }
    }

    /// The environment that points Coach's language model here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COACH_LLM_PROVIDER", "openai".to_owned()),
            ("COACH_LLM_BASE_URL", self.url.clone()),
            ("COACH_LLM_BACKOFF_MS", "1".to_owned()),
        ]
    }
}

impl Drop for SlowStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
