//! The OpenAI-compatible API (`GET /v1/models`, `POST /v1/chat/completions`) through both
//! chat functions, over moto and a fake OpenAI provider answering as the real API does
//! (dated model names, usage): what a client reads, what reaches the model, what the
//! ledger, the audit log and the sessions hold afterwards.

use coach_testkit::{
    events,
    flows::add,
    providers::{pairs, FakeProvider, Provider, FIXTURE_USAGE},
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::{header, StatusCode};
use serde_json::{json, Value};

const GUIDE: &str = "# Feedback\n\nName the behaviour, its effect, and what you would like instead. Praise in public.";

/// What a client reads: the status, the `Retry-After`, the content type and the body text.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The `data:` payloads of a stream, `[DONE]` as a string.
    fn chunks(&self) -> Vec<Value> {
        assert!(self.content_type.starts_with("text/event-stream"), "{}: {}", self.content_type, self.text);
        self.text
            .split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let data = block.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data line: {block}"));
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
            })
            .collect()
    }
}

/// `method path` on the chat function (HTTP API), or the chat-stream one (Function URL).
async fn call(
    services: &Deployment,
    streaming_url: bool,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Answer {
    let request = events::with("chat-post.json", method, path, body.as_ref(), token);
    let (status, headers, bytes) = if streaming_url {
        let response = chat::stream::handle(services.stream.clone(), request).await;
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.collect().await.expect("body").to_bytes().to_vec())
    } else {
        let response = chat::handle(&services.chat, request).await;
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, body.to_vec())
    };
    let header = |name| headers.get(name).map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned());
    Answer {
        status,
        retry_after: header(header::RETRY_AFTER),
        content_type: header(header::CONTENT_TYPE).unwrap_or_default(),
        text: String::from_utf8(bytes).unwrap(),
    }
}

fn alice() -> String {
    tokens::for_test("alice", "acme", &["user"])
}

fn conversation() -> Value {
    json!([
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "How should I give feedback?"},
        {"role": "assistant", "content": "Be specific."},
        {"role": "user", "content": [{"type": "text", "text": "And what if they disagree?"}]},
    ])
}

async fn deployed(provider: &FakeProvider, more: &[(&str, &str)]) -> (TestStack, Deployment) {
    let vars = provider.env();
    let mut vars = pairs(&vars);
    vars.extend_from_slice(more);
    let stack = TestStack::with_env(&vars).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "feedback-guide.md", GUIDE).await;
    (stack, services)
}

/// The JSON bodies the fake provider received.
async fn sent(provider: &FakeProvider) -> Vec<Value> {
    let requests = provider.server.received_requests().await.unwrap_or_default();
    requests.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

#[tokio::test]
async fn a_whole_completion_is_grounded_cited_and_metered_and_nothing_is_stored() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (_stack, services) = deployed(&provider, &[]).await;
    let body = json!({
        "model": "coach", "messages": conversation(), "max_tokens": 50, "temperature": 0.2,
        "user": "someone-else", "tools": [], "seed": 1
    });
    let answer = call(&services, false, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let completion = answer.json();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "coach");
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &completion["choices"][0];
    assert_eq!(
        (choice["finish_reason"].as_str(), choice["message"]["role"].as_str()),
        (Some("stop"), Some("assistant"))
    );
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("Name the behaviour") && content.ends_with("\n\nSources:\n[1] feedback-guide.md"),
        "{content}"
    );
    assert_eq!(completion["sources"][0]["title"], "feedback-guide.md");
    let (input, output) = FIXTURE_USAGE;
    assert_eq!(
        completion["usage"],
        json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
    );

    // The model got Coach's prompt with the caller's instructions, the conversation and the
    // passage, within the caller's limits.
    let asked = sent(&provider).await.pop().expect("one call to the model");
    assert_eq!((asked["max_tokens"].as_u64(), asked["temperature"].as_f64()), (Some(50), Some(0.2)));
    assert_eq!(asked["model"], Provider::OpenAi.requested());
    let messages = asked["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains("## The application's instructions\n") && system.contains("> Answer in one sentence."),
        "{system}"
    );
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    let last = messages[3]["content"].as_str().unwrap();
    assert!(last.contains("Praise in public") && last.ends_with("And what if they disagree?"), "{last}");

    // Metered as a /chat turn would be, under the served model; no session was made.
    let usage = call(&services, false, "GET", "/usage", None, Some(&alice())).await.json();
    let models = usage["models"].as_array().unwrap();
    let served = models.iter().find(|m| m["model"] == Provider::OpenAi.served()).expect("the served model");
    assert_eq!((served["input_tokens"].as_u64(), served["requests"].as_u64()), (Some(input), Some(1)), "{usage}");
    // The surface is a dimension of the ledger: this call came through the OpenAI API.
    let surfaces = usage["surfaces"].as_array().unwrap();
    let openai = surfaces.iter().find(|s| s["surface"] == "openai").expect("the openai surface");
    assert_eq!(openai["input_tokens"].as_u64(), Some(input), "{usage}");
    assert!(surfaces.iter().all(|s| s["surface"] != "api" || s["input_tokens"] == 0), "{usage}");
    let sessions = call(&services, false, "GET", "/sessions", None, Some(&alice())).await.json();
    assert_eq!(sessions["sessions"], json!([]), "{sessions}");
}

#[tokio::test]
async fn streamed_completions_end_with_sources_usage_and_done_on_both_urls() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (_stack, services) = deployed(&provider, &[]).await;
    for streaming_url in [true, false] {
        let body = json!({"model": "coach", "messages": conversation(), "stream": true, "stream_options": {"include_usage": true}});
        let answer = call(&services, streaming_url, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let chunks = answer.chunks();
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
        assert!(
            text.starts_with("Name the behaviour") && text.ends_with("\n\nSources:\n[1] feedback-guide.md"),
            "{text}"
        );
        let finish = chunks.iter().find(|c| c["choices"][0]["finish_reason"] == "stop").expect("a finish chunk");
        assert_eq!(finish["sources"][0]["title"], "feedback-guide.md");
        let usage = &chunks[chunks.len() - 2];
        assert_eq!(
            (usage["choices"].as_array().map(Vec::len), usage["usage"]["prompt_tokens"].as_u64()),
            (Some(0), Some(FIXTURE_USAGE.0))
        );
    }
    // Without `include_usage`, no usage chunk.
    let body = json!({"model": "coach", "messages": conversation(), "stream": true});
    let chunks = call(&services, true, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await.chunks();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{chunks:?}");
    // The Function URL also answers whole completions and the model list.
    let body = json!({"model": "coach", "messages": conversation()});
    let whole = call(&services, true, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await;
    assert_eq!((whole.status, whole.json()["object"].as_str()), (StatusCode::OK, Some("chat.completion")));
    let models = call(&services, true, "GET", "/v1/models", None, Some(&alice())).await;
    assert_eq!(models.json()["data"][0]["id"], "coach");
}

#[tokio::test]
async fn callers_pick_among_the_allowed_models_and_nothing_else() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (_stack, services) = deployed(&provider, &[("COACH_ALLOWED_MODELS", "gpt-4o, o3-mini")]).await;
    let models = call(&services, false, "GET", "/v1/models", None, Some(&alice())).await.json();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["coach", Provider::OpenAi.requested(), "gpt-4o", "o3-mini"]);

    let one = call(&services, true, "GET", "/v1/models/o3-mini", None, Some(&alice())).await;
    assert_eq!((one.status, one.json()["id"].as_str()), (StatusCode::OK, Some("o3-mini")));
    let none = call(&services, false, "GET", "/v1/models/gpt-5-pro", None, Some(&alice())).await;
    assert_eq!((none.status, none.json()["error"]["type"].as_str()), (StatusCode::NOT_FOUND, Some("not_found_error")));

    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "How do I give feedback?"}]});
    let answer = call(&services, false, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await;
    assert_eq!((answer.status, answer.json()["model"].as_str()), (StatusCode::OK, Some("gpt-4o")));
    assert_eq!(sent(&provider).await.pop().unwrap()["model"], "gpt-4o");

    let body = json!({"model": "gpt-5-pro", "messages": [{"role": "user", "content": "hi"}]});
    let refused = call(&services, false, "POST", "/v1/chat/completions", Some(body), Some(&alice())).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "as OpenAI answers an unknown model");
    let error = &refused.json()["error"];
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), error["param"].as_str()),
        (Some("invalid_request_error"), Some("model_not_found"), Some("model"))
    );
    assert_eq!(sent(&provider).await.len(), 1, "refused before the model");
}

#[tokio::test]
async fn errors_take_openais_shape_with_the_statuses_the_sdks_map() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (stack, services) = deployed(&provider, &[("COACH_RATE_LIMIT_USER", "2")]).await;
    let hi = json!({"model": "coach", "messages": [{"role": "user", "content": "hi"}]});
    let error = |answer: &Answer| answer.json()["error"].clone();

    let anonymous = call(&services, false, "POST", "/v1/chat/completions", Some(hi.clone()), None).await;
    assert_eq!(
        (anonymous.status, error(&anonymous)["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("authentication_error"))
    );
    let streaming = call(&services, true, "GET", "/v1/models", None, Some("not-a-token")).await;
    assert_eq!(
        (streaming.status, error(&streaming)["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("authentication_error"))
    );
    let nowhere = call(&services, false, "GET", "/v1/nothing", None, Some(&alice())).await;
    assert_eq!((nowhere.status, error(&nowhere)["type"].as_str()), (StatusCode::NOT_FOUND, Some("not_found_error")));
    let wrong_method = call(&services, false, "GET", "/v1/chat/completions", None, Some(&alice())).await;
    assert_eq!(
        (wrong_method.status, error(&wrong_method)["message"].is_string()),
        (StatusCode::METHOD_NOT_ALLOWED, true)
    );
    let image = json!({"model": "coach", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]});
    let bad = call(&services, false, "POST", "/v1/chat/completions", Some(image), Some(&alice())).await;
    assert_eq!((bad.status, error(&bad)["param"].as_str()), (StatusCode::BAD_REQUEST, Some("messages[0].content")));
    // A long conversation is accepted (clients send all of it every time); what does not fit
    // the model's context is left out.
    let mut turns: Vec<Value> = (0..200)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "words ".repeat(100)}))
        .collect();
    turns.push(json!({"role": "user", "content": "hi"}));
    let long_chat = json!({"model": "coach", "messages": turns});
    assert!(long_chat.to_string().len() > 64 * 1024);
    let carol = tokens::for_test("carol", "acme", &["user"]);
    let answered = call(&services, false, "POST", "/v1/chat/completions", Some(long_chat), Some(&carol)).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
    let long = "Answer as a pirate. ".repeat(1_000);
    let verbose =
        json!({"model": "coach", "messages": [{"role": "system", "content": long}, {"role": "user", "content": "hi"}]});
    let too_long = call(&services, false, "POST", "/v1/chat/completions", Some(verbose), Some(&alice())).await;
    assert_eq!(
        (too_long.status, error(&too_long)["type"].as_str(), error(&too_long)["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("invalid_request_error"), Some("payload_too_large"))
    );
    // Coach's own routes keep Coach's shape.
    let own = call(&services, false, "GET", "/nothing/here", None, Some(&alice())).await;
    assert_eq!(error(&own)["code"], "not_found");
    assert!(error(&own).get("type").is_none());

    // The user's rate limit counts these requests as any other (two a minute here).
    for _ in 0..2 {
        let answer = call(&services, false, "POST", "/v1/chat/completions", Some(hi.clone()), Some(&alice())).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let limited = call(&services, false, "POST", "/v1/chat/completions", Some(hi.clone()), Some(&alice())).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
    assert_eq!(
        (error(&limited)["type"].as_str(), error(&limited)["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limited"))
    );
    assert!(limited.retry_after.is_some());

    // A used-up budget: OpenAI's `insufficient_quota`, and an audit event as on /chat.
    let budgeted = stack.with_more_env(&[("COACH_BUDGET_USER_MONTHLY", "0.000001"), ("COACH_RATE_LIMIT_USER", "0")]);
    let services = budgeted.deploy();
    let bob = tokens::for_test("bob", "acme", &["user"]);
    assert_eq!(
        call(&services, false, "POST", "/v1/chat/completions", Some(hi.clone()), Some(&bob)).await.status,
        StatusCode::OK
    );
    let over = call(&services, true, "POST", "/v1/chat/completions", Some(hi), Some(&bob)).await;
    assert_eq!(
        (over.status, error(&over)["type"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("insufficient_quota"))
    );
    let admin = tokens::for_test("ada", "acme", &["admin"]);
    let audit = call(&services, false, "GET", "/audit", None, Some(&admin)).await.json();
    let refused = audit["events"].as_array().unwrap().iter().find(|e| e["operation"] == "budget.exceeded").cloned();
    assert_eq!(refused.map(|e| e["resource"].clone()), Some(json!("POST /v1/chat/completions")), "{audit}");
}
