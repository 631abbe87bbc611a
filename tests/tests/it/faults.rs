//! Fault injection: the emulator stopped in the middle of use, and a language model that
//! hangs. Every request fails fast with a JSON 5xx (never a panic or a hang), and what was
//! accepted before the fault is still there afterwards.

use std::{sync::Arc, time::Duration};

use coach_testkit::stack::ingest_deadline;
use coach_testkit::{events, moto::Moto, stack::TestStack, tokens};
use lambda_http::{http::StatusCode, Body, Context, Response};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

fn body(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_route_answers_json_5xx_when_the_emulator_is_gone() {
    let mut moto = Moto::start();
    // Secrets are cached, so auth keeps working while S3 and DynamoDB are gone.
    let stack = TestStack::on(&moto.endpoint, &[("COACH_AWS_TIMEOUT_MS", "1000")]).await;
    let services = stack.deploy();
    let token = tokens::for_test("alice", "acme", &["user", "editor", "admin"]);
    let chat = |message: &str| {
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": message})), Some(&token))
    };
    let reply = chat::handle(&services.chat, chat("before the fault")).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let session = body(&reply)["session_id"].as_str().unwrap().to_owned();

    moto.stop();
    let started = std::time::Instant::now();
    let requests = [
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": "during"})), Some(&token)),
        events::with("chat-post.json", "GET", "/sessions", None, Some(&token)),
        events::with("chat-post.json", "GET", &format!("/sessions/{session}/messages"), None, Some(&token)),
        events::with("chat-post.json", "DELETE", &format!("/sessions/{session}"), None, Some(&token)),
        events::with("chat-health.json", "GET", "/health", None, None),
    ];
    for request in requests {
        let response = chat::handle(&services.chat, request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", body(&response));
        assert!(body(&response)["error"]["code"].is_string());
    }
    let upload = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 5});
    for request in [
        events::with("uploads-create.json", "POST", "/uploads", Some(&upload), Some(&token)),
        events::with("uploads-create.json", "GET", "/documents", None, Some(&token)),
    ] {
        let response = upload_url::handle(&services.uploads, request).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", body(&response));
    }
    let mut refresh: Value = serde_json::from_str(&events::load("docs-refresh.json")).unwrap();
    refresh["headers"]["authorization"] = format!("Bearer {token}").into();
    let response = docs_refresh::handle(&services.refresh, refresh, Context::default()).await.unwrap();
    assert_eq!(response["statusCode"], 503);
    // Ingest fails the event so that it is retried.
    let event = coach::ingest::ObjectEvent { created: true, key: "docs/a.md".into() };
    assert!(services.ingest.ingestor.handle(&event, ingest_deadline()).await.is_err());
    // A guard against hanging, not a performance figure: the bound is generous.
    assert!(started.elapsed() < Duration::from_secs(120), "requests did not hang: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_hanging_model_ends_the_stream_request_with_a_502() {
    let llm = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&llm)
        .await;
    let uri = llm.uri();
    let stack = TestStack::with_env(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", &uri),
        ("COACH_LLM_TIMEOUT_MS", "300"),
        ("COACH_LLM_MAX_ATTEMPTS", "2"),
        ("COACH_LLM_BACKOFF_MS", "1"),
    ])
    .await;
    let services = Arc::new(stack.deploy());
    let token = tokens::for_test("alice", "acme", &["user"]);
    let started = std::time::Instant::now();
    let request =
        events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": "hi"})), Some(&token));
    let response = chat::stream::handle(services.stream.clone(), request).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    // The model would answer after 30 s; two 300 ms attempts must end well before that.
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // The user's message was kept.
    let list =
        chat::handle(&services.chat, events::with("chat-post.json", "GET", "/sessions", None, Some(&token))).await;
    assert_eq!(body(&list)["sessions"][0]["message_count"], 1);
}
