//! Fair streaming capacity and streams cut short: a tenant holds at most
//! `COACH_STREAMS_PER_TENANT` streams (slots in DynamoDB, given back on every path, freed on
//! their own when an instance dies); a stream whose client leaves stops and keeps what was
//! written, marked incomplete; a stream reaching its function's deadline ends with an
//! `error` event and keeps what was written.

use std::time::Duration;

use coach_testkit::{
    events,
    flows::{chat_call, stream_call},
    providers::{pairs, SlowStream},
    stack::{Deployment, TestStack},
    tokens,
};
use http_body_util::BodyExt;
use lambda_http::{http::StatusCode, RequestExt};
use serde_json::{json, Value};

fn pieces(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i} ")).collect()
}

fn token(user: &str, tenant: &str) -> String {
    tokens::for_test(user, tenant, &["user"])
}

fn request(token: &str) -> lambda_http::Request {
    events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": "Plan my week"})), Some(token))
}

async fn body_text(response: lambda_http::Response<lambda_http::lambda_runtime::streaming::Body>) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The slots held in `tenant`'s partition.
async fn slots(stack: &TestStack, tenant: &str) -> usize {
    stack.items(&format!("TENANT#{tenant}#STREAMS")).await.len()
}

/// `tenant`'s slots once the streams that left have given theirs back: a stream whose client
/// left stores its reply, then gives its slot back, with no body left to mark the moment.
async fn slots_once_settled(stack: &TestStack, tenant: &str) -> usize {
    for _ in 0..100 {
        let held = slots(stack, tenant).await;
        if held == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slots(stack, tenant).await
}

/// The only session of `user` in `tenant`, once its reply is stored (newest first).
async fn stored_reply(services: &Deployment, user: &str, tenant: &str) -> Vec<Value> {
    let token = token(user, tenant);
    for _ in 0..100 {
        let (_, list) = chat_call(services, "GET", "/sessions", None, &token).await;
        if let Some(id) = list["sessions"][0]["session_id"].as_str() {
            let (_, page) = chat_call(services, "GET", &format!("/sessions/{id}/messages"), None, &token).await;
            let messages = page["messages"].as_array().unwrap().clone();
            if messages.len() == 2 {
                return messages;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reply stored for {user}");
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_streams_and_gives_each_back() {
    let slow = SlowStream::start(pieces(3), Duration::from_millis(400)).await;
    let mut vars = slow.env();
    vars.push(("COACH_STREAMS_PER_TENANT", "2".to_owned()));
    let stack = TestStack::with_env(&pairs(&vars)).await;
    let services = stack.deploy();

    let first = chat::stream::handle(services.stream.clone(), request(&token("alice", "acme"))).await;
    let second = chat::stream::handle(services.stream.clone(), request(&token("bob", "acme"))).await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(slots(&stack, "acme").await, 2);
    // A third of the tenant's: refused before anything is stored.
    let (status, _, refused) =
        stream_call(&services, json!({"message": "Plan my week"}), &token("carol", "acme")).await;
    assert_eq!((status, refused[0].1["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    let response = chat::stream::handle(services.stream.clone(), request(&token("carol", "acme"))).await;
    assert_eq!(response.headers()["retry-after"], "2");
    let (_, sessions) = chat_call(&services, "GET", "/sessions", None, &token("carol", "acme")).await;
    assert_eq!(sessions["sessions"], json!([]), "nothing stored for a refused stream");
    // Another tenant's streams are its own.
    let other = chat::stream::handle(services.stream.clone(), request(&token("gina", "globex"))).await;
    assert_eq!(other.status(), StatusCode::OK);

    // Each stream gives its slot back before its body ends.
    for response in [first, second, other] {
        assert!(body_text(response).await.contains("event: done"));
    }
    assert_eq!((slots(&stack, "acme").await, slots(&stack, "globex").await), (0, 0));
    let (status, _, events) = stream_call(&services, json!({"message": "Plan my week"}), &token("carol", "acme")).await;
    assert_eq!((status, events.last().map(|e| e.0.as_str())), (StatusCode::OK, Some("done")));
    assert_eq!(slots(&stack, "acme").await, 0, "given back after a refusal-free stream too");
}

/// A slot whose instance died (its lease past) is free; a live one is not.
#[tokio::test]
async fn a_slot_past_its_lease_is_free_again() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let slow = SlowStream::start(pieces(2), Duration::from_millis(10)).await;
    let mut vars = slow.env();
    vars.push(("COACH_STREAMS_PER_TENANT", "1".to_owned()));
    let stack = TestStack::with_env(&pairs(&vars)).await;
    let services = stack.deploy();
    let now = coach::ids::now_ms();
    let slot = |until: u64| {
        stack
            .aws
            .dynamodb
            .put_item()
            .table_name(&stack.config.table)
            .item("pk", S("TENANT#acme#STREAMS".into()))
            .item("sk", S("SLOT#0000".into()))
            .item("holder", S("a-dead-instance".into()))
            .item("until", N(until.to_string()))
            .send()
    };
    slot(now + 60_000).await.unwrap();
    let ask = json!({"message": "Plan my week"});
    assert_eq!(stream_call(&services, ask.clone(), &token("alice", "acme")).await.0, StatusCode::TOO_MANY_REQUESTS);
    slot(now - 1).await.unwrap();
    let (status, _, events) = stream_call(&services, ask, &token("alice", "acme")).await;
    assert_eq!((status, events.last().map(|e| e.0.as_str())), (StatusCode::OK, Some("done")));
}

/// The client leaves after the first token: generation stops (the model's connection is
/// dropped) and what was written is stored, marked incomplete, with its usage.
#[tokio::test]
async fn a_client_that_leaves_stops_the_reply_and_it_is_kept_incomplete() {
    let slow = SlowStream::start(pieces(40), Duration::from_millis(100)).await;
    let stack = TestStack::with_env(&pairs(&slow.env())).await;
    let services = stack.deploy();
    let response = chat::stream::handle(services.stream.clone(), request(&token("alice", "acme"))).await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: token"));
    drop(body);

    let messages = stored_reply(&services, "alice", "acme").await;
    let reply = &messages[0];
    assert_eq!(reply["incomplete"], true, "{reply}");
    let text = reply["content"].as_str().unwrap();
    assert!(text.starts_with("w0") && !text.contains("w39"), "stopped early: {text}");
    assert_eq!(slots_once_settled(&stack, "acme").await, 0);
    let (_, usage) = chat_call(&services, "GET", "/usage", None, &token("alice", "acme")).await;
    assert_eq!(usage["totals"]["requests"], 1, "{usage}");
    assert!(usage["totals"]["output_tokens"].as_u64().unwrap() > 0);
}

/// A stream that would outlast its invocation ends `END_MARGIN` before the deadline with
/// an `error` event, and what was written is kept.
#[tokio::test]
async fn a_stream_ends_before_its_deadline_and_keeps_what_was_written() {
    let slow = SlowStream::start(pieces(10), Duration::from_millis(800)).await;
    let stack = TestStack::with_env(&pairs(&slow.env())).await;
    let services = stack.deploy();
    let mut context = lambda_http::Context::default();
    context.deadline = coach::ids::now_ms() + chat::stream::END_MARGIN.as_millis() as u64 + 1_500;
    let request = request(&token("alice", "acme")).with_lambda_context(context);
    let started = std::time::Instant::now();
    let text = body_text(chat::stream::handle(services.stream.clone(), request).await).await;
    assert!(started.elapsed() < Duration::from_secs(5), "ended at the deadline, not with the model");
    let last = text.split("\n\n").filter(|b| !b.trim().is_empty()).last().unwrap();
    assert!(last.starts_with("event: error") && last.contains("\"code\":\"timeout\""), "{text}");
    let messages = stored_reply(&services, "alice", "acme").await;
    assert_eq!(messages[0]["incomplete"], true);
    assert!(messages[0]["content"].as_str().unwrap().starts_with("w0"));
}
