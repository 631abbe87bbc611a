//! What Coach logs never contains tokens, secrets or message text. The logs of a whole
//! session of use (auth failures, a chat turn through an LLM with an API key, a streamed
//! turn, an upload and its ingestion, a profile fetch, an API key created and used) are captured through production's
//! subscriber (log, span and metric lines) at debug level for Coach's own crates and
//! searched for every sensitive value. Also: the metric lines, and a request's trace.

use coach_testkit::stack::ingest_deadline;
use coach_testkit::{events, logs::Capture, stack::TestStack, tokens};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

const MESSAGE: &str = "my manager Zebediah reviews my private-salary-figure 987654 tomorrow";
const LLM_KEY: &str = "sk-live-SECRET-llm-key-0001";
const AUTH0_SECRET: &str = "auth0-client-SECRET-0002";
const REPLY: &str = "Confidential-reply-text-0003";

/// An OpenAI-compatible chat completion of `REPLY` with these token counts.
fn completion(prompt_tokens: u64, completion_tokens: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "model": "m", "choices": [{"message": {"role": "assistant", "content": REPLY}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}))
}

/// A deployment whose language model (`test-model`, OpenAI's wire format) is `upstream`.
async fn with_test_model(upstream: &MockServer) -> coach_testkit::stack::Deployment {
    let uri = upstream.uri();
    let vars =
        [("COACH_LLM_PROVIDER", "openai"), ("COACH_LLM_BASE_URL", uri.as_str()), ("COACH_LLM_MODEL", "test-model")];
    TestStack::with_env(&vars).await.deploy()
}

#[test]
fn logs_carry_no_tokens_secrets_or_message_text() {
    coach_testkit::logs::run_alone("logs::logs_carry_no_tokens_secrets_or_message_text_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by logs_carry_no_tokens_secrets_or_message_text"]
async fn logs_carry_no_tokens_secrets_or_message_text_alone() {
    let capture = Capture::default();
    // Production's subscriber (log lines, span close lines, metric lines), at debug.
    let filter = "debug,aws_config=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,hyper=warn,hyper_util=warn,h2=warn,rustls=warn,reqwest=warn,wiremock=warn";
    let _guard = capture.install_coach(Some(filter), None);

    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::body_partial_json(json!({"stream": false})))
        .respond_with(completion(1, 1))
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
    let streaming = stack.deploy();
    let streamed = chat::stream::handle(streaming.stream.clone(), request).await;
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

    // An API key: created, used, and presented wrong.
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let new_key = json!({"name": "bot", "roles": ["user"]});
    let response =
        chat::handle(&services.chat, events::with("chat-post.json", "POST", "/api-keys", Some(&new_key), Some(&admin)))
            .await;
    let created: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    let api_key = created["key"].as_str().unwrap().to_owned();
    let me = chat::handle(&services.chat, events::with("chat-post.json", "GET", "/me", None, Some(&api_key))).await;
    assert_eq!(me.status(), 200);
    let wrong_key = format!("{}ffff", &api_key[..api_key.len() - 4]);
    chat::handle(&services.chat, events::with("chat-post.json", "GET", "/me", None, Some(&wrong_key))).await;

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
        ("API key", &api_key[api_key.len() - 64..]),
        ("wrong API key", &wrong_key[wrong_key.len() - 64..]),
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
        let _guard = capture.install_coach(spec, lambda_level);
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

#[test]
fn metrics_are_embedded_metric_format_lines_whatever_the_level() {
    coach_testkit::logs::run_alone("logs::metrics_are_embedded_metric_format_lines_whatever_the_level_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by metrics_are_embedded_metric_format_lines_whatever_the_level"]
async fn metrics_are_embedded_metric_format_lines_whatever_the_level_alone() {
    let capture = coach_testkit::logs::Capture::default();
    // Production's subscriber, at `warn`: metrics come out all the same.
    let _guard = capture.install_coach(Some("warn"), None);

    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(completion(21, 4)).mount(&upstream).await;
    let uri = upstream.uri();
    let stack = TestStack::with_env(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", &uri),
        ("COACH_LLM_MODEL", "test-model"),
        ("COACH_RATE_LIMIT_USER", "2"),
        ("COACH_RATE_LIMIT_WINDOW_SECS", "86400"),
    ])
    .await;
    let services = stack.deploy();
    let token = tokens::for_test("alice", "acme", &["user", "editor"]);
    let chat = |body: Value| events::with("chat-post.json", "POST", "/chat", Some(&body), Some(&token));

    let reply = chat::handle(&services.chat, chat(json!({"message": MESSAGE}))).await;
    assert_eq!(reply.status(), 200);
    let reply: Value = serde_json::from_slice(reply.body().as_ref()).unwrap();
    let session = reply["session_id"].as_str().unwrap();
    let missing = "/sessions/01JD3Q7Z8X4K2M9N5P6R7S8T9V/messages";
    let response =
        chat::handle(&services.chat, events::with("chat-post.json", "GET", missing, None, Some(&token))).await;
    assert_eq!(response.status(), 404);
    chat::handle(&services.chat, chat(json!({"message": "second"}))).await;
    let refused = chat::handle(&services.chat, chat(json!({"message": "third"}))).await;
    assert_eq!(refused.status(), 429);
    // Another user's upload (alice's limit is spent), and its ingestion.
    let bob = tokens::for_test("bob", "acme", &["editor"]);
    let upload = json!({"filename": "notes.md", "content_type": "text/markdown", "size_bytes": MESSAGE.len()});
    let response = upload_url::handle(
        &services.uploads,
        events::with("uploads-create.json", "POST", "/uploads", Some(&upload), Some(&bob)),
    )
    .await;
    let created: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    let key = format!("uploads/acme/{}/notes.md", created["document_id"].as_str().unwrap());
    stack.put(&key, MESSAGE.as_bytes()).await;
    let mut event: Value = serde_json::from_str(&events::load("s3-put.json")).unwrap();
    event["Records"][0]["s3"]["object"]["key"] = key.replace(' ', "+").into();
    ingest::handle(&services.ingest, event, ingest_deadline()).await.unwrap();

    let logs = capture.text();
    let documents: Vec<Value> =
        logs.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|d| d.get("_aws").is_some()).collect();
    assert!(!logs.contains("\"level\":\"INFO\""), "at warn, no info log lines:\n{logs}");
    let find = |metric: &str, dimensions: &[(&str, &str)]| {
        documents.iter().find(|d| {
            let directive = &d["_aws"]["CloudWatchMetrics"][0];
            directive["Namespace"] == "Coach"
                && directive["Metrics"].as_array().unwrap().iter().any(|m| m["Name"] == metric)
                && d[metric].is_number()
                && dimensions.iter().all(|(name, value)| {
                    d[*name] == *value && directive["Dimensions"][0].as_array().unwrap().iter().any(|n| n == name)
                })
        })
    };
    let turn = find("Requests", &[("Function", "chat"), ("Route", "POST /chat"), ("Status", "200")]);
    assert!(turn.is_some_and(|d| d["Latency"].as_f64().unwrap() > 0.0), "{documents:#?}");
    assert!(find("Requests", &[("Route", "GET /sessions/{id}/messages"), ("Status", "404")]).is_some());
    assert!(find("Requests", &[("Route", "POST /chat"), ("Status", "429")]).is_some());
    let call = find("ModelCalls", &[("Model", "test-model"), ("Outcome", "ok")]).expect("a model call");
    assert_eq!((call["InputTokens"].as_f64(), call["OutputTokens"].as_f64()), (Some(21.0), Some(4.0)));
    assert!(find("RetrievalLatency", &[]).is_some());
    assert!(find("RateLimited", &[("Reason", "limit")]).is_some());
    assert!(find("IngestDocuments", &[("Outcome", "indexed")]).is_some());
    assert!(find("Requests", &[("Function", "upload-url"), ("Route", "POST /uploads"), ("Status", "201")]).is_some());
    // Never user data in a dimension or value.
    for document in &documents {
        let text = document.to_string();
        for private in ["alice", "bob", "acme", "Zebediah", session, "notes.md"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
    }
}

#[test]
fn a_request_leaves_its_trace_in_the_logs() {
    coach_testkit::logs::run_alone("logs::a_request_leaves_its_trace_in_the_logs_alone");
}

#[tokio::test]
#[ignore = "captures logs and sets _X_AMZN_TRACE_ID: run in a process of its own by a_request_leaves_its_trace_in_the_logs"]
async fn a_request_leaves_its_trace_in_the_logs_alone() {
    use tracing::Instrument;
    const TRACE: &str = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1";
    // What the Lambda runtime sets for each invocation (this process runs this test alone).
    std::env::set_var("_X_AMZN_TRACE_ID", TRACE);
    let capture = coach_testkit::logs::Capture::default();
    let _guard = capture.install_coach(Some("info"), None);

    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::header("x-amzn-trace-id", TRACE))
        .respond_with(completion(30, 6))
        .mount(&upstream)
        .await;
    let services = with_test_model(&upstream).await;
    let token = tokens::for_test("alice", "acme", &["user"]);
    // The span the Lambda runtime opens for an invocation.
    let invocation = tracing::info_span!("Lambda runtime invoke", requestId = "req-traced-1", xrayTraceId = TRACE);
    let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE})), Some(&token));
    let response = chat::handle(&services.chat, request).instrument(invocation).await;
    assert_eq!(response.status(), 200, "the model saw the trace header (the mock requires it)");

    let logs = capture.text();
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The spans that closed within the invocation (the stack's set-up made calls before it).
    let closed = |name: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["message"] == "close" && l["span"]["name"] == name)
            .filter(|l| l["spans"][0]["name"] == "Lambda runtime invoke")
            .collect()
    };
    for name in ["model_call", "retrieval", "aws_call"] {
        let spans = closed(name);
        assert!(!spans.is_empty(), "no {name} span in:\n{logs}");
        for span in spans {
            assert_eq!(span["spans"][0]["requestId"], "req-traced-1", "{span}");
            assert!(span["span"]["latency_ms"].is_number(), "{span}");
        }
    }
    let call = closed("model_call")[0];
    assert_eq!(call["span"]["model"], "test-model");
    assert_eq!(call["span"]["outcome"], "ok");
    assert_eq!((call["span"]["input_tokens"].as_u64(), call["span"]["output_tokens"].as_u64()), (Some(30), Some(6)));
    assert!(call["span"]["prompt_chars"].as_u64().unwrap() > MESSAGE.len() as u64);
    let write = closed("aws_call")
        .into_iter()
        .find(|s| s["span"]["operation"] == "TransactWriteItems")
        .expect("the turn's write has a span");
    assert_eq!((write["span"]["service"].as_str(), write["span"]["status"].as_u64()), (Some("DynamoDB"), Some(200)));
    assert_eq!(write["span"]["outcome"], "ok");
    for secret in ["Zebediah", REPLY] {
        assert!(!logs.contains(secret), "{secret} in the trace");
    }
}

#[test]
fn people_and_secrets_are_scrubbed_from_log_lines() {
    coach_testkit::logs::run_alone("logs::people_and_secrets_are_scrubbed_from_log_lines_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by people_and_secrets_are_scrubbed_from_log_lines"]
async fn people_and_secrets_are_scrubbed_from_log_lines_alone() {
    use coach::logging::privacy::{PiiMode, Privacy};
    const ADMIN: &str = "dana.admin@example.com";
    let admin = tokens::for_test(ADMIN, "acme", &["admin"]);
    let user = tokens::for_test("eve@example.com", "acme", &["user"]);
    let leak = "upstream said: Bearer abcdef123456789 for card 4111 1111 1111 1111, ssn 123-45-6789, \
                client_secret=s3cr3t-value and key sk-live0123456789abcdef";
    for mode in [PiiMode::Hashed, PiiMode::None, PiiMode::Full] {
        // A deployment each: the same refusal is audited once a minute per deployment.
        let services = TestStack::new().await.deploy();
        let privacy = Privacy::new(mode, "test-log-key");
        let capture = Capture::default();
        let guard = capture.install_coach_with(Some("info"), privacy.clone());
        // Audited: a key created and revoked by the admin, an upload refused to a user.
        let created = chat::handle(
            &services.chat,
            events::with(
                "chat-post.json",
                "POST",
                "/api-keys",
                Some(&json!({"name": "b", "roles": ["user"]})),
                Some(&admin),
            ),
        )
        .await;
        let created: Value = serde_json::from_slice(created.body().as_ref()).unwrap();
        let path = format!("/api-keys/{}", created["id"].as_str().unwrap());
        chat::handle(&services.chat, events::with("chat-post.json", "DELETE", &path, None, Some(&admin))).await;
        let upload = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 3});
        upload_url::handle(
            &services.uploads,
            events::with("uploads-create.json", "POST", "/uploads", Some(&upload), Some(&user)),
        )
        .await;
        // What an upstream's error might carry, logged as a field.
        tracing::warn!(problem = leak, "upstream failure");
        drop(guard);

        let logs = capture.text();
        let audit: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "audit event")
            .collect();
        assert_eq!(audit.len(), 3, "{mode:?}:\n{logs}");
        for secret in ["abcdef123456789", "4111 1111 1111 1111", "123-45-6789", "s3cr3t-value", "sk-live0123"] {
            assert!(!logs.contains(secret), "{mode:?} leaked {secret}:\n{logs}");
        }
        assert!(logs.contains("client_secret=[redacted]"), "{logs}");
        match mode {
            PiiMode::Hashed => {
                assert!(!logs.contains(ADMIN) && !logs.contains("eve@example.com"), "{logs}");
                // Stable: both of the admin's lines carry the same hash.
                assert_eq!(audit[0]["actor"], privacy.hash_id(ADMIN));
                assert_eq!(audit[1]["actor"], privacy.hash_id(ADMIN));
                assert_eq!(audit[2]["actor"], privacy.hash_id("eve@example.com"));
            }
            PiiMode::None => {
                assert!(!logs.contains(ADMIN) && !logs.contains("eve@example.com"), "{logs}");
                assert!(audit.iter().all(|line| line.get("actor").is_none()), "{logs}");
            }
            PiiMode::Full => assert_eq!(audit[0]["actor"], ADMIN),
        }
    }
}

#[test]
fn trace_logs_never_print_request_or_response_bodies() {
    coach_testkit::logs::run_alone("logs::trace_logs_never_print_request_or_response_bodies_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by trace_logs_never_print_request_or_response_bodies"]
async fn trace_logs_never_print_request_or_response_bodies_alone() {
    let capture = Capture::default();
    // As an operator would set it to see everything.
    let _guard = capture.install_coach(Some("trace"), None);
    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(completion(3, 4)).mount(&upstream).await;
    let uri = upstream.uri();
    let stack = TestStack::with_env(&[("COACH_LLM_PROVIDER", "openai"), ("COACH_LLM_BASE_URL", uri.as_str())]).await;
    let services = stack.deploy();
    // The message goes to DynamoDB and the model, the reply comes back from both; the second
    // turn reads the first back from DynamoDB (a response body the SDK prints at trace).
    let token = tokens::for_test("alice", "acme", &["user"]);
    let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE})), Some(&token));
    let first = chat::handle(&services.chat, request).await;
    assert_eq!(first.status(), 200);
    let session = serde_json::from_slice::<Value>(first.body().as_ref()).unwrap()["session_id"].clone();
    let again = json!({"message": "And then?", "session_id": session});
    let request = events::with("chat-post.json", "POST", "/chat", Some(&again), Some(&token));
    assert_eq!(chat::handle(&services.chat, request).await.status(), 200);
    // An object's body, through S3.
    stack.put("docs/private.md", format!("# Private\n\n{MESSAGE}").as_bytes()).await;
    assert!(stack.get_text("docs/private.md").await.contains(MESSAGE));

    let logs = capture.text();
    assert!(logs.contains("\"aws_call\"") || logs.contains("aws_call"), "Coach's own trace lines are kept");
    assert!(logs.contains("model_call"), "{logs}");
    for secret in [MESSAGE, "Zebediah", REPLY, coach_testkit::stack::TEST_HS256_KEY] {
        let leaks: Vec<&str> = logs.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged at trace in {} lines, the first:\n{}", leaks.len(), leaks[0]);
    }
}

#[test]
fn on_a_terminal_a_request_is_one_line_for_people() {
    coach_testkit::logs::run_alone("logs::on_a_terminal_a_request_is_one_line_for_people_alone");
}

/// `COACH_LOG_FORMAT=text` (`make dev`): a request is one line (function, route, status, time,
/// request id); a refusal's warning is a line with its fields, people's ids hashed as in the
/// JSON lines; AWS calls, model calls and metrics stay out at `info` and come in at `debug`.
#[tokio::test]
#[ignore = "captures logs: run in a process of its own by on_a_terminal_a_request_is_one_line_for_people"]
async fn on_a_terminal_a_request_is_one_line_for_people_alone() {
    use coach::logging::LogFormat;
    use tracing::Instrument;
    let text = LogFormat::Text { function: "chat".into(), ansi: false };
    let upstream = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(completion(30, 6)).mount(&upstream).await;
    let services = with_test_model(&upstream).await;
    let token = tokens::for_test("alice", "acme", &["user"]);
    let turn = |id: &'static str| {
        let invocation = tracing::info_span!("Lambda runtime invoke", requestId = id, xrayTraceId = "Root=1-2-3");
        let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": MESSAGE})), Some(&token));
        chat::handle(&services.chat, request).instrument(invocation)
    };

    let capture = Capture::default();
    let guard = capture.install_coach_as(text.clone(), Some("info"));
    assert_eq!(turn("3f9c2a71-req-one").await.status(), 200);
    let refused = events::with("chat-post.json", "GET", "/audit", None, Some(&token));
    let invocation = tracing::info_span!("Lambda runtime invoke", requestId = "77aa01bc-req-two");
    assert_eq!(chat::handle(&services.chat, refused).instrument(invocation).await.status(), 403);
    drop(guard);
    let logs = capture.text();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(lines.iter().all(|l| !l.starts_with('{')), "no JSON line:\n{logs}");
    let requests: Vec<&str> = lines.iter().copied().filter(|l| l.contains(" chat  POST /chat  ")).collect();
    assert_eq!(requests.len(), 1, "one line for the turn:\n{logs}");
    let line = requests[0];
    assert!(line.contains(" INFO ") && line.contains("  200  ") && line.contains(" ms  req=3f9c2a71"), "{line}");
    let refusal = lines.iter().find(|l| l.contains("GET /audit  403")).unwrap_or_else(|| panic!("{logs}"));
    assert!(refusal.ends_with("req=77aa01bc"), "{refusal}");
    let rejected = lines.iter().find(|l| l.contains("request rejected")).unwrap_or_else(|| panic!("{logs}"));
    assert!(rejected.contains("status=403") && rejected.contains("req=77aa01bc"), "{rejected}");
    for quiet in ["aws_call", "model_call", "_aws", "TransactWriteItems"] {
        assert!(!logs.contains(quiet), "{quiet} at info:\n{logs}");
    }
    for secret in [MESSAGE, REPLY, "alice"] {
        assert!(!logs.contains(secret), "{secret} in:\n{logs}");
    }

    // At debug: the spans as they close, with their fields, and the metrics.
    let capture = Capture::default();
    let guard = capture.install_coach_as(
        text,
        Some("debug,aws_config=warn,aws_smithy_runtime=warn,hyper=warn,h2=warn,rustls=warn,reqwest=warn,wiremock=warn"),
    );
    assert_eq!(turn("5e5e5e5e-req-three").await.status(), 200);
    drop(guard);
    let logs = capture.text();
    let done = |name: &str| logs.lines().filter(|l| l.contains(&format!("  {name} done"))).collect::<Vec<_>>();
    let model = done("model_call");
    assert!(
        model.len() == 1 && model[0].contains("model=test-model") && model[0].contains("input_tokens=30"),
        "{logs}"
    );
    assert!(done("aws_call").iter().any(|l| l.contains("operation=TransactWriteItems")), "{logs}");
    assert!(logs.lines().any(|l| l.contains("metric {") && l.contains("ModelCalls")), "{logs}");
    assert!(!logs.contains(MESSAGE) && !logs.contains(REPLY), "{logs}");
}
