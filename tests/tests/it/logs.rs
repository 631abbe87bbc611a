//! What Coach logs never contains tokens, secrets or message text. The logs of a whole
//! session of use (auth failures, a chat turn through an LLM with an API key, a streamed
//! turn, an upload and its ingestion, a profile fetch) are captured at debug level for
//! Coach's own crates and searched for every sensitive value.

use coach_testkit::stack::ingest_deadline;
use coach_testkit::{events, logs::Capture, stack::TestStack, tokens};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

const MESSAGE: &str = "my manager Zebediah reviews my private-salary-figure 987654 tomorrow";
const LLM_KEY: &str = "sk-live-SECRET-llm-key-0001";
const AUTH0_SECRET: &str = "auth0-client-SECRET-0002";
const REPLY: &str = "Confidential-reply-text-0003";

#[test]
fn logs_carry_no_tokens_secrets_or_message_text() {
    coach_testkit::logs::run_alone("logs::logs_carry_no_tokens_secrets_or_message_text_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by logs_carry_no_tokens_secrets_or_message_text"]
async fn logs_carry_no_tokens_secrets_or_message_text_alone() {
    let capture = Capture::default();
    let _guard = capture.install("debug,aws_config=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,hyper=warn,hyper_util=warn,h2=warn,rustls=warn,reqwest=warn,wiremock=warn");

    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::body_partial_json(json!({"stream": false})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "m", "choices": [{"message": {"role": "assistant", "content": REPLY}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}})))
        .mount(&upstream)
        .await;
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!("data: {}\n\ndata: [DONE]\n\n", json!({"model": "m", "choices": [{"delta": {"content": REPLY}}]})),
            "text/event-stream",
        ))
        .mount(&upstream)
        .await;
    Mock::given(matchers::path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "mgmt-SECRET-token-0004", "expires_in": 3600})),
        )
        .mount(&upstream)
        .await;
    Mock::given(matchers::path_regex("^/api/v2/users/"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let uri = upstream.uri();
    let stack = TestStack::without_resources(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", &uri),
        ("COACH_AUTH0_DOMAIN", &uri),
        ("COACH_AUTH0_CLIENT_ID", "client"),
    ])
    .await;
    coach_testkit::stack::create_bucket(&stack.aws.s3, &stack.config.bucket).await.unwrap();
    coach_testkit::stack::create_table(&stack.aws.dynamodb, &stack.config.table).await.unwrap();
    let fields = json!({"jwt_hs256_secret": coach_testkit::stack::TEST_HS256_KEY, "llm_api_key": LLM_KEY, "auth0_client_secret": AUTH0_SECRET});
    coach_testkit::stack::create_secret(&stack.aws.secrets, &stack.config.secret_id, &fields).await.unwrap();
    let services = stack.deploy();

    let token = tokens::for_test("alice", "acme", &["user", "editor"]);
    let bad_token = format!("{}tampered", &token[..token.len() - 8]);
    // Auth failures.
    chat::handle(
        &services.chat,
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE})), Some(&bad_token)),
    )
    .await;
    // A chat turn and a streamed turn.
    let response = chat::handle(
        &services.chat,
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE})), Some(&token)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request =
        events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": MESSAGE})), Some(&token));
    let streamed = chat::stream::handle(stack.deploy().stream, request).await;
    let body = streamed.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("event: done"));
    // A bad request body that contains the message.
    chat::handle(
        &services.chat,
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE, "x": 1})), Some(&token)),
    )
    .await;
    // An upload and its ingestion.
    let upload = json!({"filename": "private notes.md", "content_type": "text/markdown", "size_bytes": MESSAGE.len()});
    let response = upload_url::handle(
        &services.uploads,
        events::with("uploads-create.json", "POST", "/uploads", Some(&upload), Some(&token)),
    )
    .await;
    let created: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    let key = format!("uploads/acme/{}/private notes.md", created["document_id"].as_str().unwrap());
    stack.put(&key, MESSAGE.as_bytes()).await;
    services
        .ingest
        .ingestor
        .handle(&coach::ingest::ObjectEvent { created: true, key }, ingest_deadline())
        .await
        .unwrap();

    let logs = capture.text();
    assert!(logs.lines().count() > 5, "logs were captured:\n{logs}");
    assert!(
        logs.contains("request rejected") && logs.contains("user profile unavailable"),
        "Coach's own events are captured:\n{logs}"
    );
    for (what, secret) in [
        ("message text", "Zebediah"),
        ("message text", "private-salary-figure"),
        ("reply text", REPLY),
        ("bearer token", &token[token.len() - 20..]),
        ("tampered token", &bad_token[bad_token.len() - 20..]),
        ("HS256 key", coach_testkit::stack::TEST_HS256_KEY),
        ("LLM API key", LLM_KEY),
        ("Auth0 client secret", AUTH0_SECRET),
        ("management token", "mgmt-SECRET-token-0004"),
    ] {
        let leaks: Vec<&str> = logs.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} found in {} log lines, the first:\n{}", leaks.len(), leaks[0]);
    }
}

#[test]
fn the_lambda_runtime_never_logs_raw_events_whatever_the_level() {
    coach_testkit::logs::run_alone("logs::the_lambda_runtime_never_logs_raw_events_whatever_the_level_alone");
}

#[test]
#[ignore = "captures logs: run in a process of its own by the_lambda_runtime_never_logs_raw_events_whatever_the_level"]
fn the_lambda_runtime_never_logs_raw_events_whatever_the_level_alone() {
    // RUST_LOG at trace, even naming the runtime's crates; or Lambda's level at TRACE.
    for (spec, lambda_level) in [
        (Some("trace"), None),
        (Some("trace,lambda_runtime=trace,lambda_runtime_api_client=trace,lambda_http=trace"), None),
        (None, Some("TRACE")),
    ] {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(coach::logging::subscriber(spec, lambda_level, capture.clone()));
        // What the runtime prints below info: the raw event, headers and body.
        tracing::trace!(target: "lambda_runtime", "event: authorization: Bearer {LLM_KEY}");
        tracing::debug!(target: "lambda_runtime_api_client", "response body {MESSAGE}");
        tracing::debug!(target: "lambda_http", "request {MESSAGE}");
        tracing::info!(target: "lambda_runtime", "runtime info line");
        tracing::trace!(target: "coach::chat", "coach trace line");
        let logs = capture.text();
        assert!(logs.contains("coach trace line") && logs.contains("runtime info line"), "{spec:?}: {logs}");
        for secret in [LLM_KEY, "Zebediah"] {
            assert!(!logs.contains(secret), "{spec:?} {lambda_level:?}: raw event logged:\n{logs}");
        }
    }
}
