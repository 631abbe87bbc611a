//! What Coach answers and records when a model provider answers as its API documents it
//! (the wire fixtures in `tests/fixtures/providers/`): a whole reply, a stream with its usage,
//! a 429 with `retry-after`, an overload (Anthropic's 529), a prompt over the context window
//! and a stream that breaks off midway, for OpenAI, Anthropic, Gemini and Amazon Bedrock
//! (through the AWS SDK, against a stand-in speaking Converse and ConverseStream), and
//! Bedrock's own refusals: throttling, a model not ready, access not enabled.

use coach_testkit::{
    flows::{chat_call, stream_call},
    providers::{pairs, FakeProvider, Provider, FIXTURE_USAGE, HTTP_PROVIDERS, PROVIDERS},
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

const REPLY: &str = "Name the behaviour, its effect, and what you would like instead [1].";

fn alice() -> String {
    tokens::for_test("alice", "acme", &["user"])
}

async fn deploy(fake: &FakeProvider) -> (TestStack, Deployment) {
    let stack = TestStack::with_env(&pairs(&fake.env())).await;
    let services = stack.deploy();
    (stack, services)
}

/// Alice's usage by model: (model, input, output, requests).
async fn usage(services: &Deployment) -> Vec<(String, u64, u64, u64)> {
    let (status, own) = chat_call(services, "GET", "/usage", None, &alice()).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let n = |m: &Value, f: &str| m[f].as_u64().unwrap();
    own["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["model"].as_str().unwrap().to_owned(), n(m, "input_tokens"), n(m, "output_tokens"), n(m, "requests"))
        })
        .collect()
}

/// The session's stored messages, oldest first: (role, content, model).
async fn stored(services: &Deployment, session: &str) -> Vec<(String, String, Option<String>)> {
    let (status, page) = chat_call(services, "GET", &format!("/sessions/{session}/messages"), None, &alice()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut messages: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = |f: &str| m[f].as_str().map(str::to_owned);
            (text("role").unwrap(), text("content").unwrap(), text("model"))
        })
        .collect();
    messages.reverse();
    messages
}

#[tokio::test]
async fn a_whole_reply_is_answered_stored_and_metered_under_the_served_model() {
    let (tokens_in, tokens_out) = FIXTURE_USAGE;
    for provider in PROVIDERS {
        let fake = FakeProvider::start(provider).await;
        let (_stack, services) = deploy(&fake).await;
        let (status, reply) = chat_call(&services, "POST", "/chat", Some(json!({"message": "How?"})), &alice()).await;
        assert_eq!(status, StatusCode::OK, "{provider:?}: {reply}");
        assert_eq!(reply["answer"], REPLY);
        assert_eq!(reply["model"], provider.served());
        assert_eq!(reply["usage"], json!({"input_tokens": tokens_in, "output_tokens": tokens_out}));
        let session = reply["session_id"].as_str().unwrap();
        let messages = stored(&services, session).await;
        assert_eq!(messages[1], ("assistant".into(), REPLY.into(), Some(provider.served().into())), "{provider:?}");
        assert_eq!(usage(&services).await, vec![(provider.served().into(), tokens_in, tokens_out, 1)]);
    }
}

#[tokio::test]
async fn a_stream_gives_its_text_and_its_final_usage() {
    let (tokens_in, tokens_out) = FIXTURE_USAGE;
    for provider in PROVIDERS {
        let fake = FakeProvider::start(provider).await;
        let (_stack, services) = deploy(&fake).await;
        let (status, _, events) = stream_call(&services, json!({"message": "How?"}), &alice()).await;
        assert_eq!(status, StatusCode::OK, "{provider:?}");
        let text: String =
            events.iter().filter(|(kind, _)| kind == "token").map(|(_, data)| data["text"].as_str().unwrap()).collect();
        assert_eq!(text, REPLY, "{provider:?}");
        let (kind, done) = events.last().unwrap();
        assert_eq!(kind, "done", "{provider:?}: {events:?}");
        assert_eq!(done["model"], provider.served());
        assert_eq!(done["usage"], json!({"input_tokens": tokens_in, "output_tokens": tokens_out}), "{provider:?}");
        let messages = stored(&services, done["session_id"].as_str().unwrap()).await;
        assert_eq!(messages[1].1, REPLY);
        assert_eq!(usage(&services).await, vec![(provider.served().into(), tokens_in, tokens_out, 1)]);
    }
}

/// A provider's rate limit is the caller's 429 with the provider's `Retry-After` (a wait
/// this long is not spent inside the request: one attempt), and costs nothing.
#[tokio::test]
async fn a_rate_limited_provider_is_a_429_with_its_retry_after() {
    for provider in HTTP_PROVIDERS {
        let fake = FakeProvider::failing(provider, 429, "rate-limited.json", &[("retry-after", "20")]).await;
        let (_stack, services) = deploy(&fake).await;
        let request = events_request("/chat");
        let response = chat::handle(&services.chat, request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{provider:?}");
        assert_eq!(response.headers()["retry-after"], "20");
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(body["error"]["code"], "upstream_rate_limited", "{provider:?}: {body}");
        assert_eq!(fake.requests().await, 1, "{provider:?}: not waited out");
        // The stream refuses the same way before it starts.
        let (status, _, events) = stream_call(&services, json!({"message": "How?"}), &alice()).await;
        assert_eq!(
            (status, events[0].1["error"]["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("upstream_rate_limited"))
        );
        assert!(usage(&services).await.is_empty(), "{provider:?}: nothing used");
    }
}

/// Anthropic's 529 `overloaded_error` is retried, then a 503 the caller may retry.
#[tokio::test]
async fn an_overloaded_provider_is_retried_then_a_503() {
    let fake = FakeProvider::failing(Provider::Anthropic, 529, "overloaded.json", &[]).await;
    let (_stack, services) = deploy(&fake).await;
    let response = chat::handle(&services.chat, events_request("/chat")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["error"]["code"], "upstream_overloaded", "{body}");
    assert_eq!(fake.requests().await, 3, "COACH_LLM_MAX_ATTEMPTS tries");
}

/// A prompt over the model's context window is a 413 the user can act on, not retried.
#[tokio::test]
async fn a_prompt_over_the_context_window_is_a_413() {
    for provider in PROVIDERS {
        let fake = FakeProvider::failing(provider, 400, "context-length.json", &[]).await;
        let (_stack, services) = deploy(&fake).await;
        let response = chat::handle(&services.chat, events_request("/chat")).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{provider:?}");
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("too long for the language model"), "{body}");
        assert_eq!(fake.requests().await, 1);
    }
    // Any other refusal stays a 502.
    let fake = FakeProvider::failing(Provider::OpenAi, 400, "rate-limited.json", &[]).await;
    let (_stack, services) = deploy(&fake).await;
    assert_eq!(chat::handle(&services.chat, events_request("/chat")).await.status(), StatusCode::BAD_GATEWAY);
}

/// A stream that breaks off midway ends with an `error` event after the text so far; what
/// the call used is recorded (the provider's counts so far, else estimates).
#[tokio::test]
async fn a_stream_that_breaks_off_ends_with_an_error_and_is_metered() {
    for provider in PROVIDERS {
        let fake = FakeProvider::breaking_stream(provider).await;
        let (_stack, services) = deploy(&fake).await;
        let (status, _, events) = stream_call(&services, json!({"message": "How?"}), &alice()).await;
        assert_eq!(status, StatusCode::OK, "{provider:?}");
        assert!(events.iter().any(|(kind, _)| kind == "token"), "{provider:?}: {events:?}");
        let (kind, error) = events.last().unwrap();
        assert_eq!((kind.as_str(), error["code"].as_str()), ("error", Some("upstream_error")), "{provider:?}");
        let used = usage(&services).await;
        assert_eq!(used.len(), 1, "{provider:?}: {used:?}");
        let (model, input, output, requests) = &used[0];
        assert_eq!((model.as_str(), *requests), (provider.served(), 1), "{provider:?}");
        assert!(*input > 0 && *output > 0, "{provider:?}: {used:?}");
        if matches!(provider, Provider::Anthropic | Provider::Gemini) {
            // Anthropic's message_start and Gemini's first chunk count the prompt (OpenAI and
            // Bedrock count at the end: estimates here).
            assert_eq!(*input, FIXTURE_USAGE.0, "{provider:?}");
        }
    }
}

/// Bedrock's throttling is retried by the SDK (`COACH_LLM_MAX_ATTEMPTS`, backing off), then
/// the caller's 429 with a `Retry-After`; nothing is metered.
#[tokio::test]
async fn a_throttled_bedrock_model_is_retried_then_a_429() {
    let fake = FakeProvider::failing(Provider::Bedrock, 429, "rate-limited.json", &[]).await;
    let (_stack, services) = deploy(&fake).await;
    let response = chat::handle(&services.chat, events_request("/chat")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["error"]["code"], "upstream_rate_limited", "{body}");
    assert_eq!(fake.requests().await, 3, "COACH_LLM_MAX_ATTEMPTS tries");
    let (status, _, events) = stream_call(&services, json!({"message": "How?"}), &alice()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{events:?}");
    assert!(usage(&services).await.is_empty());
}

/// A model not ready is retried, then a 503; access not enabled in the account is a 503
/// that says what to enable, not retried; the requests went to Converse, signed.
#[tokio::test]
async fn bedrock_refusals_say_what_to_do() {
    let fake = FakeProvider::failing(Provider::Bedrock, 429, "not-ready.json", &[]).await;
    let (_stack, services) = deploy(&fake).await;
    let response = chat::handle(&services.chat, events_request("/chat")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["error"]["code"], "upstream_overloaded", "{body}");
    assert_eq!(fake.requests().await, 3);

    let fake = FakeProvider::failing(Provider::Bedrock, 403, "access-denied.json", &[]).await;
    let (_stack, services) = deploy(&fake).await;
    let response = chat::handle(&services.chat, events_request("/chat")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(Provider::Bedrock.requested()) && message.contains("Model access"), "{message}");
    let requests = fake.server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "not retried");
    let path = requests[0].url.path();
    assert!(path.starts_with("/model/") && path.ends_with("/converse"), "{path}");
    let signed = requests[0].headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(signed.starts_with("AWS4-HMAC-SHA256 Credential="), "SigV4, not an API key: {signed}");
    assert!(signed.contains("/bedrock/aws4_request"), "{signed}");
    // What Converse was asked: the system prompt, the conversation, the limits.
    let fake = FakeProvider::start(Provider::Bedrock).await;
    let (_stack, services) = deploy(&fake).await;
    let (status, _) = chat_call(&services, "POST", "/chat", Some(json!({"message": "How?"})), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    let requests = fake.server.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert!(sent["system"][0]["text"].as_str().is_some_and(|s| !s.is_empty()), "{sent}");
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user", "{sent}");
    assert!(last["content"][0]["text"].as_str().unwrap().contains("How?"), "{sent}");
    assert!(sent["inferenceConfig"]["maxTokens"].as_u64().is_some(), "{sent}");
}

/// The message Bedrock's guardrail answers with in the fixtures.
const BLOCKED: &str = "Sorry, this assistant cannot help with that request.";

/// With a guardrail configured, Converse is asked to apply it (and the policy grants
/// `bedrock:ApplyGuardrail` on it). An intervention, whole or streamed, is answered on every
/// route with the guardrail's message (a 200, never the model's text or a 500), is never kept
/// as a cached answer, tells OpenAI clients `content_filter`, and is audited: one
/// `guardrail.intervened` event per request, naming the route.
#[tokio::test]
async fn a_bedrock_guardrail_is_applied_and_its_intervention_answered_and_audited() {
    let fake = FakeProvider::start(Provider::Bedrock).await;
    wiremock::Mock::given(wiremock::matchers::path_regex(r"^/model/[^/]+/converse$"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(Provider::Bedrock.json("guardrail.json")))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    wiremock::Mock::given(wiremock::matchers::path_regex(r"^/model/[^/]+/converse-stream$"))
        .respond_with(Provider::Bedrock.stream_body("guardrail-stream"))
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let mut vars = fake.env();
    vars.push(("COACH_BEDROCK_GUARDRAIL_ID", "gr1abc2def3g".to_owned()));
    vars.push(("COACH_BEDROCK_GUARDRAIL_VERSION", "3".to_owned()));
    let stack = TestStack::with_env(&pairs(&vars)).await;
    let services = stack.deploy();

    let (status, reply) = chat_call(&services, "POST", "/chat", Some(json!({"message": "How?"})), &alice()).await;
    assert_eq!((status, reply["answer"].as_str()), (StatusCode::OK, Some(BLOCKED)), "{reply}");
    let requests = fake.server.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let guardrail = &sent["guardrailConfig"];
    assert_eq!(
        (guardrail["guardrailIdentifier"].as_str(), guardrail["guardrailVersion"].as_str()),
        (Some("gr1abc2def3g"), Some("3"))
    );
    let session = reply["session_id"].as_str().unwrap();
    assert_eq!(stored(&services, session).await[1].1, BLOCKED);

    let (status, _, events) = stream_call(&services, json!({"message": "And then?"}), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    let written: String =
        events.iter().filter(|(name, _)| name == "token").map(|(_, data)| data["text"].as_str().unwrap()).collect();
    assert_eq!((written.as_str(), events.last().map(|e| e.0.as_str())), (BLOCKED, Some("done")), "{events:?}");

    // Asked twice: answered by the model (and its guardrail) twice, never from the cache.
    for _ in 0..2 {
        let (status, answer) = chat_call(&services, "POST", "/qa", Some(json!({"question": "How?"})), &alice()).await;
        assert_eq!(
            (status, answer["answer"].as_str(), &answer["cached"]),
            (StatusCode::OK, Some(BLOCKED), &json!(false))
        );
    }
    let (status, summary) =
        chat_call(&services, "POST", "/summarize", Some(json!({"text": "A text to summarise."})), &alice()).await;
    assert_eq!((status, summary["summary"].as_str()), (StatusCode::OK, Some(BLOCKED)), "{summary}");
    let (status, map) = chat_call(&services, "POST", "/mindmap", Some(json!({"topic": "Feedback"})), &alice()).await;
    assert_eq!(status, StatusCode::OK, "{map}");
    assert_eq!((&map["root"], map["note"].as_str()), (&json!({"title": "Feedback", "children": []}), Some(BLOCKED)));
    let completion = json!({"model": "coach", "messages": [{"role": "user", "content": "How?"}]});
    let (status, openai) = chat_call(&services, "POST", "/v1/chat/completions", Some(completion), &alice()).await;
    assert_eq!(status, StatusCode::OK, "{openai}");
    let choice = &openai["choices"][0];
    assert_eq!(
        (choice["finish_reason"].as_str(), choice["message"]["content"].as_str()),
        (Some("content_filter"), Some(BLOCKED))
    );
    let ask = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "ask", "arguments": {"question": "How?"}}});
    let mut request = coach_testkit::events::with("chat-post.json", "POST", "/mcp", Some(&ask), Some(&alice()));
    request.headers_mut().insert("mcp-protocol-version", lambda_http::http::HeaderValue::from_static("2025-11-25"));
    let response = chat::handle(&services.chat, request).await;
    let tool: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(tool["result"]["structuredContent"]["answer"].as_str(), Some(BLOCKED), "{tool}");

    let admin = tokens::for_test("ada", "acme", &["admin"]);
    let (status, audit) = chat_call(&services, "GET", "/audit", None, &admin).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let mut audited: Vec<(String, String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "guardrail.intervened")
        .map(|e| {
            let field = |f: &str| e[f].as_str().unwrap().to_owned();
            (field("resource"), field("actor"), field("outcome"))
        })
        .collect();
    audited.sort();
    let expected: Vec<(String, String, String)> = [
        "POST /chat",
        "POST /chat/stream",
        "POST /mcp",
        "POST /mindmap",
        "POST /qa",
        "POST /qa",
        "POST /summarize",
        "POST /v1/chat/completions",
    ]
    .iter()
    .map(|route| ((*route).to_owned(), "alice".to_owned(), "intervened".to_owned()))
    .collect();
    assert_eq!(audited, expected, "{audit}");
}

/// `make dev`'s stand-in (`scripts/fake-llm.py`) speaks Converse and ConverseStream as the
/// AWS SDK reads them: a whole reply and a stream through the Bedrock provider, with usage.
#[tokio::test]
async fn the_local_stand_in_answers_the_bedrock_provider_whole_and_streamed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".venv/bin/python");
    let python = if venv.exists() { venv } else { "python3".into() };
    let child = std::process::Command::new(python)
        .arg(root.join("scripts/fake-llm.py"))
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the stand-in starts");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let vars = [
        ("COACH_LLM_PROVIDER", "bedrock"),
        ("COACH_LLM_MODEL", "amazon.nova-lite-v1:0"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", endpoint.as_str()),
    ];
    let stack = TestStack::with_env(&vars).await;
    let services = stack.deploy();
    let (status, reply) = chat_call(&services, "POST", "/chat", Some(json!({"message": "How?"})), &alice()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["answer"].as_str().unwrap().starts_with("(fake-llm) You said: \"How?\""), "{reply}");
    assert_eq!(reply["model"], "amazon.nova-lite-v1:0");
    assert!(reply["usage"]["input_tokens"].as_u64().unwrap() > 0, "{reply}");
    let (status, _, events) = stream_call(&services, json!({"message": "And then?"}), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    let text: String =
        events.iter().filter(|(kind, _)| kind == "token").map(|(_, data)| data["text"].as_str().unwrap()).collect();
    assert!(text.starts_with("(fake-llm) You said: \"And then?\""), "{events:?}");
    let (kind, done) = events.last().unwrap();
    assert_eq!(kind, "done", "{events:?}");
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0, "{done}");
    // Priced: amazon.nova-lite-v1:0 is in the default table.
    let (_, own) = chat_call(&services, "GET", "/usage", None, &alice()).await;
    assert!(own["models"][0]["cost_usd"].as_f64().unwrap() > 0.0, "{own}");
}

fn events_request(path: &str) -> lambda_http::Request {
    coach_testkit::events::with("chat-post.json", "POST", path, Some(&json!({"message": "How?"})), Some(&alice()))
}
