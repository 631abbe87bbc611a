//! Chat end to end through the chat handlers, against moto (DynamoDB, S3, Secrets Manager)
//! and a local server speaking each LLM provider's wire format.

use std::sync::Arc;

use coach_testkit::stack::Deployment;
use coach_testkit::{
    events,
    stack::{create_secret, TestStack, TEST_HS256_KEY},
    tokens,
};
use lambda_http::{http::StatusCode, Request};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

// ------------------------------------------------------------------ helpers

fn token(user: &str, tenant: &str) -> String {
    tokens::for_test(user, tenant, &["user"])
}

fn alice() -> String {
    token("alice", "acme")
}

fn req(method: &str, path: &str, body: Option<Value>, token: &str) -> Request {
    events::with("chat-post.json", method, path, body.as_ref(), Some(token))
}

async fn call(services: &Deployment, request: Request) -> (StatusCode, Value) {
    let response = chat::handle(&services.chat, request).await;
    let status = response.status();
    let body = if response.body().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    };
    (status, body)
}

async fn chat_turn(services: &Deployment, token: &str, message: &str, session: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({ "message": message });
    if let Some(id) = session {
        body["session_id"] = id.into();
    }
    call(services, req("POST", "/chat", Some(body), token)).await
}

/// A stack whose secret also holds an LLM API key, with `vars` for the configuration.
async fn stack(vars: &[(&str, &str)]) -> TestStack {
    let stack = TestStack::without_resources(vars).await;
    coach_testkit::stack::create_bucket(&stack.aws.s3, &stack.config.bucket).await.unwrap();
    coach_testkit::stack::create_table(&stack.aws.dynamodb, &stack.config.table).await.unwrap();
    let fields = json!({ "jwt_hs256_secret": TEST_HS256_KEY, "llm_api_key": "sk-test-123" });
    create_secret(&stack.aws.secrets, &stack.config.secret_id, &fields).await.unwrap();
    stack
}

async fn llm_stack(provider: &str, server: &MockServer, extra: &[(&str, &str)]) -> Deployment {
    let uri = server.uri();
    let mut vars = vec![
        ("COACH_LLM_PROVIDER", provider),
        ("COACH_LLM_BASE_URL", uri.as_str()),
        ("COACH_LLM_MODEL", "test-model"),
        ("COACH_LLM_BACKOFF_MS", "1"),
    ];
    vars.extend_from_slice(extra);
    stack(&vars).await.deploy()
}

fn openai_reply(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    }))
}

async fn requests(server: &MockServer) -> Vec<Value> {
    server.received_requests().await.unwrap_or_default().iter().map(|r| r.body_json().unwrap_or(Value::Null)).collect()
}

/// How many items the table holds under alice's (tenant acme) session `id`: its messages.
async fn items_under(stack: &TestStack, id: &str) -> i32 {
    stack.items(&format!("TENANT#acme#USER#alice#SESSION#{id}")).await.len() as i32
}

async fn messages(services: &Deployment, token: &str, session: &str) -> Vec<Value> {
    let (status, body) = call(services, req("GET", &format!("/sessions/{session}/messages"), None, token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

// ------------------------------------------------------------------ none provider, sessions

#[tokio::test]
async fn none_provider_answers_and_stores_the_turn() {
    let services = stack(&[]).await.deploy();
    let (status, reply) = chat_turn(&services, &alice(), "How do I give feedback?", None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["answer"].as_str().unwrap().starts_with("No language model is configured"));
    assert_eq!(reply["sources"], json!([]));
    assert_eq!(reply["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    assert_eq!(reply["model"], "none");
    let session = reply["session_id"].as_str().unwrap();

    let stored = messages(&services, &alice(), session).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["role"], "assistant", "newest first");
    assert_eq!(stored[0]["message_id"], reply["message_id"]);
    assert_eq!(stored[0]["model"], "none");
    assert_eq!(stored[1]["role"], "user");
    assert_eq!(stored[1]["content"], "How do I give feedback?");

    let (status, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["sessions"][0]["session_id"], session);
    assert_eq!(list["sessions"][0]["title"], "How do I give feedback?");
    assert_eq!(list["sessions"][0]["message_count"], 2);
    assert!(list["next_cursor"].is_null());
}

#[tokio::test]
async fn sessions_are_created_listed_most_recent_first_and_deleted() {
    let stack = stack(&[]).await;
    let services = stack.deploy();
    let (status, first) =
        call(&services, req("POST", "/sessions", Some(json!({"title": "Quarterly goals"})), &alice())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["title"], "Quarterly goals");
    assert_eq!(first["message_count"], 0);
    let (_, second) = call(&services, req("POST", "/sessions", None, &alice())).await;
    assert_eq!(second["title"], "New conversation");

    // Activity in the first session moves it to the top.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    chat_turn(&services, &alice(), "hello", first["session_id"].as_str()).await;
    let (_, list) = call(&services, req("GET", "/sessions?limit=1", None, &alice())).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["session_id"], first["session_id"]);
    let cursor = list["next_cursor"].as_str().expect("a second page");
    let (_, page2) = call(&services, req("GET", &format!("/sessions?limit=1&cursor={cursor}"), None, &alice())).await;
    assert_eq!(page2["sessions"][0]["session_id"], second["session_id"]);

    // Delete removes the session and every message item.
    let id = first["session_id"].as_str().unwrap();
    let (status, _) = call(&services, req("DELETE", &format!("/sessions/{id}"), None, &alice())).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&services, req("GET", &format!("/sessions/{id}/messages"), None, &alice())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&services, req("DELETE", &format!("/sessions/{id}"), None, &alice())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(items_under(&stack, id).await, 0, "messages deleted with the session");
}

#[tokio::test]
async fn messages_paginate_newest_first_without_gaps() {
    let services = stack(&[]).await.deploy();
    let (_, reply) = chat_turn(&services, &alice(), "one", None).await;
    let session = reply["session_id"].as_str().unwrap().to_owned();
    chat_turn(&services, &alice(), "two", Some(&session)).await;
    chat_turn(&services, &alice(), "three", Some(&session)).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/sessions/{session}/messages?limit=4&cursor={c}"),
            None => format!("/sessions/{session}/messages?limit=4"),
        };
        let (status, page) = call(&services, req("GET", &path, None, &alice())).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["messages"].as_array().unwrap().iter().map(|m| (m["role"].clone(), m["content"].clone())));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let users: Vec<_> = seen.iter().filter(|(r, _)| r == "user").map(|(_, c)| c.as_str().unwrap()).collect();
    assert_eq!(users, vec!["three", "two", "one"]);
    assert_eq!(seen.len(), 6);
}

#[tokio::test]
async fn other_users_and_tenants_get_404_never_data() {
    let services = stack(&[]).await.deploy();
    let (_, reply) = chat_turn(&services, &alice(), "private question", None).await;
    let session = reply["session_id"].as_str().unwrap();
    for intruder in [token("bob", "acme"), token("alice", "globex")] {
        let (status, body) = chat_turn(&services, &intruder, "let me in", Some(session)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!body.to_string().contains("private question"));
        let (status, _) = call(&services, req("GET", &format!("/sessions/{session}/messages"), None, &intruder)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(&services, req("DELETE", &format!("/sessions/{session}"), None, &intruder)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = call(&services, req("GET", "/sessions", None, &intruder)).await;
        assert!(list["sessions"].as_array().unwrap().iter().all(|s| s["session_id"] != session));
    }
    // Alice's session survived the attempts.
    assert_eq!(messages(&services, &alice(), session).await.len(), 2);
}

#[tokio::test]
async fn a_message_into_a_session_deleted_meanwhile_is_404_and_stores_nothing() {
    use coach::{history::Target, model::NewMessage};
    // The write that stores a message checks that its session still exists; a session
    // deleted between a turn's read and its write fails that condition, which means 404.
    let stack = stack(&[]).await;
    let services = stack.deploy();
    let who = coach::auth::Principal { user_id: "alice".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    let gone = "01JD3Q7Z8X4K2M9N5P6R7S8T9V";
    let history = &services.chat.history;
    let err = history.add_message(&who, Target::Session(gone), NewMessage::user("hello")).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err.to_string(), "no such session");
    assert_eq!(items_under(&stack, gone).await, 0, "no orphan message");
}

#[tokio::test]
async fn bad_input_is_4xx_with_json_errors() {
    let services = stack(&[("COACH_MAX_MESSAGE_CHARS", "50")]).await.deploy();
    let cases = [
        (req("POST", "/chat", Some(json!({"message": "   "})), &alice()), 400),
        (req("POST", "/chat", Some(json!({"message": "x".repeat(51)})), &alice()), 413),
        (req("POST", "/chat", Some(json!({"message": "hi", "extra": true})), &alice()), 400),
        (req("POST", "/chat", Some(json!({"message": 42})), &alice()), 400),
        (req("POST", "/chat", None, &alice()), 400),
        (req("POST", "/chat", Some(json!({"message": "hi", "session_id": "../../x"})), &alice()), 400),
        (
            req("POST", "/chat", Some(json!({"message": "hi", "session_id": "01JD3Q7Z8X4K2M9N5P6R7S8T9V"})), &alice()),
            404,
        ),
        (req("GET", "/sessions?limit=0", None, &alice()), 400),
        (req("GET", "/sessions?limit=abc", None, &alice()), 400),
        (req("GET", "/sessions?cursor=%%%", None, &alice()), 400),
        (req("GET", "/sessions?cursor=", None, &alice()), 400),
        // Crafted cursors (base64 of "|<ulid>", an activity part of the wrong shape, oversized).
        (
            req("GET", &format!("/sessions?cursor={}", crafted_cursor("|01JD3Q7Z8X4K2M9N5P6R7S8T9V")), None, &alice()),
            400,
        ),
        (
            req(
                "GET",
                &format!(
                    "/sessions?cursor={}",
                    crafted_cursor("x#01JD3Q7Z8X4K2M9N5P6R7S8T9V|01JD3Q7Z8X4K2M9N5P6R7S8T9V")
                ),
                None,
                &alice(),
            ),
            400,
        ),
        (req("GET", &format!("/sessions?cursor={}", crafted_cursor(&"9".repeat(5_000))), None, &alice()), 400),
        (req("GET", "/sessions/not-an-id/messages", None, &alice()), 400),
        (req("PUT", "/sessions", None, &alice()), 405),
        (req("POST", "/chat", Some(json!({"message": "hi"})), "garbage"), 401),
    ];
    for (i, (request, expected)) in cases.into_iter().enumerate() {
        let (status, body) = call(&services, request).await;
        assert_eq!(status.as_u16(), expected, "case {i}: {body}");
        assert!(body["error"]["code"].is_string(), "case {i}: {body}");
    }
}

/// A cursor as a client could craft it: `raw` in the encoding Coach's cursors use.
fn crafted_cursor(raw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

// ------------------------------------------------------------------ providers

#[tokio::test]
async fn openai_compatible_conversation_sends_history_in_order_with_limit() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/chat/completions"))
        .and(matchers::header("authorization", "Bearer sk-test-123"))
        .respond_with(openai_reply("Here is my advice."))
        .mount(&server)
        .await;
    let services = llm_stack("openai", &server, &[("COACH_HISTORY_LIMIT", "2")]).await;

    let (status, first) = chat_turn(&services, &alice(), "q1", None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["answer"], "Here is my advice.");
    assert_eq!(first["usage"], json!({"input_tokens": 12, "output_tokens": 5}));
    assert_eq!(first["model"], "gpt-test-0613");
    let session = first["session_id"].as_str().unwrap();
    chat_turn(&services, &alice(), "q2", Some(session)).await;
    chat_turn(&services, &alice(), "q3", Some(session)).await;

    let sent = requests(&server).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0]["model"], "test-model");
    assert_eq!(sent[0]["messages"][0]["role"], "system");
    let third: Vec<(String, String)> = sent[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        third,
        vec![
            ("user".into(), "q2".into()),
            ("assistant".into(), "Here is my advice.".into()),
            ("user".into(), "q3".into())
        ],
        "the last two stored messages, oldest first, then the new one"
    );

    let stored = messages(&services, &alice(), session).await;
    assert_eq!(stored.len(), 6);
    assert_eq!(stored[0]["usage"], json!({"input_tokens": 12, "output_tokens": 5}));
    assert_eq!(stored[0]["model"], "gpt-test-0613");
}

#[tokio::test]
async fn anthropic_wire_format() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/v1/messages"))
        .and(matchers::header("x-api-key", "sk-test-123"))
        .and(matchers::header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": "Start with "}, {"type": "text", "text": "one goal."}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 30, "output_tokens": 4}
        })))
        .mount(&server)
        .await;
    let services = llm_stack("anthropic", &server, &[]).await;
    let (status, reply) = chat_turn(&services, &alice(), "Where do I start?", None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["answer"], "Start with one goal.");
    assert_eq!(reply["usage"], json!({"input_tokens": 30, "output_tokens": 4}));
    assert_eq!(reply["model"], "claude-test");
    let sent = &requests(&server).await[0];
    assert!(sent["system"].as_str().unwrap().starts_with("You are Coach"), "built-in prompt without prompt/ in S3");
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "Where do I start?"}]));
    assert_eq!(sent["max_tokens"], 1024);
}

#[tokio::test]
async fn gemini_wire_format() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/v1beta/models/test-model:generateContent"))
        .and(matchers::header("x-goog-api-key", "sk-test-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Block two hours."}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 3, "totalTokenCount": 43},
            "modelVersion": "gemini-test-001"
        })))
        .mount(&server)
        .await;
    let services = llm_stack("gemini", &server, &[]).await;
    let (status, reply) = chat_turn(&services, &alice(), "Plan my week", None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["answer"], "Block two hours.");
    assert_eq!(reply["usage"], json!({"input_tokens": 40, "output_tokens": 3}));
    assert_eq!(reply["model"], "gemini-test-001");
    let sent = &requests(&server).await[0];
    assert_eq!(sent["contents"], json!([{"role": "user", "parts": [{"text": "Plan my week"}]}]));
    assert!(sent["systemInstruction"]["parts"][0]["text"].is_string());
}

#[tokio::test]
async fn retries_429_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(openai_reply("ok"))
        .with_priority(2)
        .mount(&server)
        .await;
    let services = llm_stack("openai", &server, &[]).await;
    let (status, reply) = chat_turn(&services, &alice(), "hi", None).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["answer"], "ok");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn persistent_5xx_is_502_after_three_tries_and_the_message_stays_stored() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let services = llm_stack("openai", &server, &[]).await;
    let (status, body) = chat_turn(&services, &alice(), "please keep this", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(requests(&server).await.len(), 3);

    let (_, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
    let session = list["sessions"][0]["session_id"].as_str().unwrap();
    let stored = messages(&services, &alice(), session).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["role"], "user");
    assert_eq!(stored[0]["content"], "please keep this");
}

#[tokio::test]
async fn slow_upstream_times_out_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(openai_reply("too late").set_delay(std::time::Duration::from_secs(3)))
        .mount(&server)
        .await;
    let services =
        llm_stack("openai", &server, &[("COACH_LLM_TIMEOUT_MS", "200"), ("COACH_LLM_MAX_ATTEMPTS", "2")]).await;
    let (status, body) = chat_turn(&services, &alice(), "hi", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn client_errors_from_the_provider_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "bad key sk-test-123"}})))
        .mount(&server)
        .await;
    let services = llm_stack("openai", &server, &[]).await;
    let (status, body) = chat_turn(&services, &alice(), "hi", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.to_string().contains("sk-test"), "no upstream detail or key in the error: {body}");
    assert_eq!(requests(&server).await.len(), 1);
}

// ------------------------------------------------------------------ system prompt

#[tokio::test]
async fn system_prompt_comes_from_s3_and_is_revalidated() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(openai_reply("ok")).mount(&server).await;
    let uri = server.uri();
    let stack = stack(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", uri.as_str()),
        ("COACH_PROMPT_REVALIDATE_SECS", "0"),
    ])
    .await;
    let put = |text: &'static str| {
        stack
            .aws
            .s3
            .put_object()
            .bucket(&stack.config.bucket)
            .key("prompt/system_prompt.md")
            .body(text.as_bytes().to_vec().into())
            .send()
    };
    put("Prompt version one.").await.unwrap();
    let services = stack.deploy();
    chat_turn(&services, &alice(), "a", None).await;
    chat_turn(&services, &alice(), "b", None).await; // revalidated: not modified
    put("Prompt version two.").await.unwrap();
    chat_turn(&services, &alice(), "c", None).await;

    let systems: Vec<String> =
        requests(&server).await.iter().map(|r| r["messages"][0]["content"].as_str().unwrap().to_owned()).collect();
    assert_eq!(systems, vec!["Prompt version one.", "Prompt version one.", "Prompt version two."]);
}

#[tokio::test]
async fn cached_system_prompt_is_not_refetched_within_the_interval() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(openai_reply("ok")).mount(&server).await;
    let uri = server.uri();
    let stack = stack(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", uri.as_str()),
        ("COACH_PROMPT_REVALIDATE_SECS", "3600"),
    ])
    .await;
    let put = |text: &'static str| {
        stack
            .aws
            .s3
            .put_object()
            .bucket(&stack.config.bucket)
            .key("prompt/system_prompt.md")
            .body(text.as_bytes().to_vec().into())
            .send()
    };
    put("First.").await.unwrap();
    let services = stack.deploy();
    chat_turn(&services, &alice(), "a", None).await;
    put("Second.").await.unwrap();
    chat_turn(&services, &alice(), "b", None).await;
    let systems: Vec<Value> = requests(&server).await.iter().map(|r| r["messages"][0]["content"].clone()).collect();
    assert_eq!(systems, vec![json!("First."), json!("First.")]);
}

// ------------------------------------------------------------------ streaming

async fn stream(services: Arc<Deployment>, body: Value, token: &str) -> (StatusCode, String, Vec<(String, Value)>) {
    coach_testkit::flows::stream_call(&services, body, token).await
}

fn sse(events: &[(&str, Value)]) -> ResponseTemplate {
    let body: String =
        events
            .iter()
            .map(|(event, data)| {
                if event.is_empty() {
                    format!("data: {data}\n\n")
                } else {
                    format!("event: {event}\ndata: {data}\n\n")
                }
            })
            .collect();
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_raw(body, "text/event-stream")
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

#[tokio::test]
async fn openai_stream_gives_tokens_then_sources_then_done_and_stores_the_reply() {
    let server = MockServer::start().await;
    let chunk = |content: Value| json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": content}}]});
    let body = "data: ".to_owned()
        + &[
            chunk(json!("Hel")).to_string(),
            chunk(json!("lo")).to_string(),
            json!({"id": "c", "model": "gpt-test", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}).to_string(),
            "[DONE]".to_owned(),
        ]
        .join("\n\ndata: ")
        + "\n\n";
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::body_partial_json(json!({"stream": true, "stream_options": {"include_usage": true}})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let services = Arc::new(llm_stack("openai", &server, &[]).await);
    let (status, content_type, events) = stream(services.clone(), json!({"message": "hi"}), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(kinds(&events), vec!["token", "token", "sources", "done"]);
    assert_eq!(events[0].1, json!({"text": "Hel"}));
    assert_eq!(events[1].1, json!({"text": "lo"}));
    assert_eq!(events[2].1, json!([]));
    let done = &events[3].1;
    assert_eq!(done["usage"], json!({"input_tokens": 9, "output_tokens": 2}));
    assert_eq!(done["model"], "gpt-test");

    let stored = messages(&services, &alice(), done["session_id"].as_str().unwrap()).await;
    assert_eq!(stored[0]["message_id"], done["message_id"]);
    assert_eq!(stored[0]["content"], "Hello");
    assert_eq!(stored[0]["usage"], json!({"input_tokens": 9, "output_tokens": 2}));
}

#[tokio::test]
async fn anthropic_stream_and_gemini_stream() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/v1/messages"))
        .respond_with(sse(&[
            ("message_start", json!({"type": "message_start", "message": {"model": "claude-test", "usage": {"input_tokens": 20, "output_tokens": 1}}})),
            ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ("ping", json!({"type": "ping"})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "One "}})),
            ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "step."}})),
            ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}})),
            ("message_stop", json!({"type": "message_stop"})),
        ]))
        .mount(&server)
        .await;
    Mock::given(matchers::path("/v1beta/models/test-model:streamGenerateContent"))
        .and(matchers::query_param("alt", "sse"))
        .respond_with(sse(&[
            ("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Two "}]}}], "modelVersion": "gemini-test"})),
            ("", json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "steps."}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 3}, "modelVersion": "gemini-test"})),
        ]))
        .mount(&server)
        .await;

    let anthropic = Arc::new(llm_stack("anthropic", &server, &[]).await);
    let (_, _, events) = stream(anthropic.clone(), json!({"message": "hi"}), &alice()).await;
    assert_eq!(kinds(&events), vec!["token", "token", "sources", "done"]);
    assert_eq!(events[3].1["usage"], json!({"input_tokens": 20, "output_tokens": 6}));
    assert_eq!(events[3].1["model"], "claude-test");
    let stored = messages(&anthropic, &alice(), events[3].1["session_id"].as_str().unwrap()).await;
    assert_eq!(stored[0]["content"], "One step.");

    let gemini = Arc::new(llm_stack("gemini", &server, &[]).await);
    let (_, _, events) = stream(gemini.clone(), json!({"message": "hi"}), &alice()).await;
    assert_eq!(kinds(&events), vec!["token", "token", "sources", "done"]);
    assert_eq!(events[3].1["usage"], json!({"input_tokens": 11, "output_tokens": 3}));
    let stored = messages(&gemini, &alice(), events[3].1["session_id"].as_str().unwrap()).await;
    assert_eq!(stored[0]["content"], "Two steps.");
}

#[tokio::test]
async fn upstream_error_mid_stream_ends_with_an_error_event_and_keeps_what_was_written() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/v1/messages"))
        .respond_with(sse(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "claude-test", "usage": {"input_tokens": 5}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial"}}),
            ),
            ("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        ]))
        .mount(&server)
        .await;
    let services = Arc::new(llm_stack("anthropic", &server, &[]).await);
    let (status, _, events) = stream(services.clone(), json!({"message": "keep me"}), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&events), vec!["token", "error"]);
    assert_eq!(events[1].1["code"], "upstream_error");
    assert_eq!(events[1].1["request_id"], "req-auth");

    let (_, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
    let stored = messages(&services, &alice(), list["sessions"][0]["session_id"].as_str().unwrap()).await;
    // Newest first: the half reply, marked incomplete, after the user's message.
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!((stored[0]["content"].as_str(), stored[0]["incomplete"].as_bool()), (Some("Partial"), Some(true)));
    assert_eq!(stored[1]["content"], "keep me");
    assert!(stored[1].get("incomplete").is_none(), "only a reply cut short says so");
}

#[tokio::test]
async fn stream_failures_before_the_first_byte_are_json_errors() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let services = Arc::new(llm_stack("openai", &server, &[]).await);
    let (status, content_type, events) = stream(services.clone(), json!({"message": "hi"}), &alice()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(content_type, "application/json");
    assert_eq!(events[0].1["error"]["code"], "upstream_error");
    assert_eq!(requests(&server).await.len(), 3);

    let (status, _, events) = stream(services.clone(), json!({"message": ""}), &alice()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(events[0].1["error"]["code"], "bad_request");
    let (status, _, _) = stream(services, json!({"message": "hi"}), "bad-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn none_provider_streams_the_offline_answer() {
    let services = Arc::new(stack(&[]).await.deploy());
    let (status, _, events) = stream(services, json!({"message": "hi"}), &alice()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&events), vec!["token", "sources", "done"]);
    assert!(events[0].1["text"].as_str().unwrap().starts_with("No language model is configured"));
    assert_eq!(events[2].1["model"], "none");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_stops_the_reply_and_what_was_written_is_kept() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/v1/messages"))
        .respond_with(sse(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "claude-test", "usage": {"input_tokens": 5}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Whole "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "reply."}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]))
        .mount(&server)
        .await;
    let services = Arc::new(llm_stack("anthropic", &server, &[]).await);
    let request =
        events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": "hi"})), Some(&alice()));
    let response = chat::stream::handle(services.stream.clone(), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(response); // the client hangs up before reading anything

    let mut stored = Vec::new();
    for _ in 0..100 {
        let (_, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
        if list["sessions"][0]["message_count"] == 2 {
            stored = messages(&services, &alice(), list["sessions"][0]["session_id"].as_str().unwrap()).await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(stored.len(), 2, "reply stored after the client left");
    // The first token could not be sent: the model is read no further.
    assert_eq!((stored[0]["content"].as_str(), stored[0]["incomplete"].as_bool()), (Some("Whole "), Some(true)));
}

#[tokio::test]
async fn a_streamed_body_ends_only_once_the_reply_is_stored() {
    // The runtime drives the body frame by frame and ends the invocation when it ends (the
    // environment may be frozen from then on): the stored reply must exist by then.
    use http_body_util::BodyExt;
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(sse(&[
            ("", json!({"id": "c", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": "Stored "}}]})),
            ("", json!({"id": "c", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": "first."}}]})),
        ]))
        .mount(&server)
        .await;
    let uri = server.uri();
    let stack = stack(&[("COACH_LLM_PROVIDER", "openai"), ("COACH_LLM_BASE_URL", &uri)]).await;
    let services = stack.deploy();
    let request =
        events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": "hi"})), Some(&alice()));
    let mut body = chat::stream::handle(services.stream.clone(), request).await.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("a frame").into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    // The body has just ended: read DynamoDB at once, no waiting.
    let done = text.split("\n\n").find(|e| e.starts_with("event: done")).expect("a done event");
    let done: Value = serde_json::from_str(done.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
    let session = done["session_id"].as_str().unwrap();
    let pk = aws_sdk_dynamodb::types::AttributeValue::S(format!("TENANT#acme#USER#alice#SESSION#{session}"));
    let sk = aws_sdk_dynamodb::types::AttributeValue::S(format!("MSG#{}", done["message_id"].as_str().unwrap()));
    let item = stack.aws.dynamodb.get_item().table_name(&stack.config.table).key("pk", pk).key("sk", sk);
    let stored = item.consistent_read(true).send().await.unwrap().item.expect("the reply is stored");
    assert_eq!(stored["content"].as_s().unwrap(), "Stored first.");
}

// ------------------------------------------------------------------ deadline and retries

/// A `POST /chat` with an `Idempotency-Key` and, when given, a Lambda deadline that far away.
fn keyed_turn(body: Value, key: Option<&str>, deadline_in: Option<std::time::Duration>) -> Request {
    use lambda_http::RequestExt;
    let mut request = req("POST", "/chat", Some(body), &alice());
    if let Some(key) = key {
        request.headers_mut().insert("idempotency-key", key.parse().unwrap());
    }
    match deadline_in {
        Some(left) => {
            let mut context = lambda_http::Context::default();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            context.deadline = (now + left).as_millis() as u64;
            request.with_lambda_context(context)
        }
        None => request,
    }
}

/// The user's messages sent to the model in each request it received.
async fn user_turns_sent(server: &MockServer) -> Vec<Vec<String>> {
    requests(server)
        .await
        .iter()
        .map(|r| {
            let messages = r["messages"].as_array().cloned().unwrap_or_default();
            messages
                .iter()
                .filter(|m| m["role"] == "user")
                .map(|m| m["content"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_turn_past_its_deadline_is_a_504_and_its_retry_answers_it_once() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(openai_reply("too late").set_delay(std::time::Duration::from_secs(20)))
        .mount(&server)
        .await;
    let services = llm_stack("openai", &server, &[("COACH_LLM_TIMEOUT_MS", "30000")]).await;
    let body = json!({"message": "How do I run a retro?"});
    // Four seconds left of the invocation: the turn gives up in time to answer.
    let four = Some(std::time::Duration::from_secs(4));
    let (status, error) = call(&services, keyed_turn(body.clone(), Some("turn-1"), four)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{error}");
    assert_eq!(error["error"]["code"], "timeout");

    // The model recovers; the client retries the same turn.
    server.reset().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(openai_reply("Start with what went well."))
        .mount(&server)
        .await;
    let (status, reply) = call(&services, keyed_turn(body.clone(), Some("turn-1"), None)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["answer"], "Start with what went well.");
    let session = reply["session_id"].as_str().unwrap();
    let stored = messages(&services, &alice(), session).await;
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["assistant", "user"], "the message is stored once: {stored:?}");
    assert_eq!(user_turns_sent(&server).await, [["How do I run a retro?"]], "and sent to the model once");

    // Once answered, the same turn gets the stored answer, without the model.
    let (status, again) = call(&services, keyed_turn(body, Some("turn-1"), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, reply);
    assert_eq!(requests(&server).await.len(), 1);
    let (_, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "one session: {list}");
    assert_eq!(list["sessions"][0]["message_count"], 2);
}

#[tokio::test]
async fn a_context_already_past_its_deadline_is_no_deadline() {
    // cargo lambda watch (`make dev`) hands every invocation the deadline 600000: ten minutes
    // into 1970. A turn under it is answered, not timed out at once.
    use lambda_http::RequestExt;
    let services = stack(&[]).await.deploy();
    let mut context = lambda_http::Context::default();
    context.deadline = 600_000;
    let request = req("POST", "/chat", Some(json!({"message": "hello"})), &alice()).with_lambda_context(context);
    let (status, reply) = call(&services, request).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

#[tokio::test]
async fn the_same_message_to_the_same_session_is_answered_once() {
    let services = stack(&[]).await.deploy();
    let (_, first) = chat_turn(&services, &alice(), "hello", None).await;
    let session = first["session_id"].as_str().unwrap();
    let (status, reply) = chat_turn(&services, &alice(), "How do I delegate?", Some(session)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, repeated) = chat_turn(&services, &alice(), "  How do I delegate?  ", Some(session)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repeated, reply, "a client's retry gets the stored answer");
    assert_eq!(messages(&services, &alice(), session).await.len(), 4);
    // Another message is another turn; so is the same one from another user.
    let (_, other) = chat_turn(&services, &alice(), "And how do I follow up?", Some(session)).await;
    assert_ne!(other["message_id"], reply["message_id"]);
    assert_eq!(messages(&services, &alice(), session).await.len(), 6);
}

#[tokio::test]
async fn a_retry_while_the_turn_is_answered_is_a_409_and_a_failed_turn_is_retried_at_once() {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(openai_reply("Listen first.").set_delay(std::time::Duration::from_millis(1500)))
        .mount(&server)
        .await;
    let services = llm_stack("openai", &server, &[]).await;
    let body = json!({"message": "How do I coach a new lead?"});
    let ((a, first), (b, second)) = tokio::join!(
        call(&services, keyed_turn(body.clone(), Some("turn-2"), None)),
        call(&services, keyed_turn(body.clone(), Some("turn-2"), None))
    );
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{first} {second}");
    let conflict = if a == StatusCode::CONFLICT { &first } else { &second };
    assert_eq!(conflict["error"]["code"], "conflict");
    assert_eq!(requests(&server).await.len(), 1);

    // A turn whose model call failed gives up its lease: the retry answers at once.
    server.reset().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let body = json!({"message": "What is a good first week?"});
    let (status, _) = call(&services, keyed_turn(body.clone(), Some("turn-3"), None)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    server.reset().await;
    Mock::given(matchers::path("/chat/completions")).respond_with(openai_reply("Meet the team.")).mount(&server).await;
    let (status, reply) = call(&services, keyed_turn(body, Some("turn-3"), None)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let stored = messages(&services, &alice(), reply["session_id"].as_str().unwrap()).await;
    assert_eq!(stored.len(), 2, "{stored:?}");

    // A key names one turn: used for another session, it is refused.
    let (_, other) = chat_turn(&services, &alice(), "elsewhere", None).await;
    let moved = json!({"message": "What is a good first week?", "session_id": other["session_id"]});
    let (status, error) = call(&services, keyed_turn(moved, Some("turn-3"), None)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");

    // Keys are short visible text.
    for bad in ["", "with space", &"k".repeat(256)] {
        let (status, error) = call(&services, keyed_turn(json!({"message": "hi"}), Some(bad), None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {error}");
    }
}

#[tokio::test]
async fn a_streamed_retry_of_an_answered_turn_replays_the_answer() {
    let services = Arc::new(stack(&[]).await.deploy());
    let (_, first) = chat_turn(&services, &alice(), "hello", None).await;
    let session = first["session_id"].clone();
    let body = json!({"message": "How do I say no?", "session_id": session});
    let (status, reply) = call(&services, req("POST", "/chat", Some(body.clone()), &alice())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, events) = stream(services.clone(), body, &alice()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&events), ["token", "sources", "done"]);
    assert_eq!(events[0].1["text"], reply["answer"]);
    assert_eq!(events[2].1["message_id"], reply["message_id"]);
    assert_eq!(messages(&services, &alice(), session.as_str().unwrap()).await.len(), 4);
}

#[tokio::test]
async fn two_turns_at_once_in_one_session_are_both_stored_in_order() {
    let services = stack(&[]).await.deploy();
    let (_, first) = chat_turn(&services, &alice(), "hello", None).await;
    let session = first["session_id"].as_str().unwrap();
    let token = alice();
    let (a, b) = tokio::join!(
        chat_turn(&services, &token, "first question", Some(session)),
        chat_turn(&services, &token, "second question", Some(session))
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{} {}", a.1, b.1);
    let stored = messages(&services, &alice(), session).await;
    assert_eq!(stored.len(), 6);
    // Listed newest first: each reply after its own question.
    for (question, reply) in [("first question", &a.1), ("second question", &b.1)] {
        let asked = stored.iter().position(|m| m["content"] == question).unwrap();
        let answered = stored.iter().position(|m| m["message_id"] == reply["message_id"]).unwrap();
        assert!(answered < asked, "{question}: the reply is newer than the question");
    }
    let (_, list) = call(&services, req("GET", "/sessions", None, &alice())).await;
    assert_eq!(list["sessions"][0]["message_count"], 6);
}
