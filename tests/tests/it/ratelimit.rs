//! Per-user and per-tenant rate limits on the expensive routes, counted in moto's DynamoDB.
//! The tests use a one-day window so a window boundary cannot fall inside a test.

use coach_testkit::stack::Deployment;
use coach_testkit::{events, stack::TestStack, tokens};
use lambda_http::{http::StatusCode, Body, Response};
use serde_json::{json, Value};

async fn chat(services: &Deployment, user: &str, tenant: &str) -> Response<Body> {
    let token = tokens::for_test(user, tenant, &["user"]);
    chat::handle(
        &services.chat,
        events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": "hi"})), Some(&token)),
    )
    .await
}

fn assert_limited(response: &Response<Body>) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn each_user_has_a_limit_per_minute() {
    let stack = TestStack::with_env(&[("COACH_RATE_LIMIT_USER", "2"), ("COACH_RATE_LIMIT_WINDOW_SECS", "86400")]).await;
    let services = stack.deploy();
    assert_eq!(chat(&services, "alice", "acme").await.status(), StatusCode::OK);
    assert_eq!(chat(&services, "alice", "acme").await.status(), StatusCode::OK);
    assert_limited(&chat(&services, "alice", "acme").await);
    assert_eq!(chat(&services, "bob", "acme").await.status(), StatusCode::OK, "other users are not affected");
    assert_eq!(chat(&services, "alice", "globex").await.status(), StatusCode::OK, "same id, other tenant");

    // The streaming route counts against the same limit.
    let token = tokens::for_test("alice", "acme", &["user"]);
    let request =
        events::with("chat-stream.json", "POST", "/chat/stream", Some(&json!({"message": "hi"})), Some(&token));
    let response = chat::stream::handle(stack.deploy().stream, request).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_tenant_has_a_limit_across_its_users() {
    let stack = TestStack::with_env(&[
        ("COACH_RATE_LIMIT_USER", "0"),
        ("COACH_RATE_LIMIT_WINDOW_SECS", "86400"),
        ("COACH_RATE_LIMIT_TENANT", "3"),
    ])
    .await;
    let services = stack.deploy();
    for user in ["alice", "bob", "carol"] {
        assert_eq!(chat(&services, user, "acme").await.status(), StatusCode::OK);
    }
    assert_limited(&chat(&services, "dave", "acme").await);
    assert_eq!(chat(&services, "erin", "globex").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn uploads_are_limited_too() {
    let stack = TestStack::with_env(&[("COACH_RATE_LIMIT_USER", "1"), ("COACH_RATE_LIMIT_WINDOW_SECS", "86400")]).await;
    let services = stack.deploy();
    let token = tokens::for_test("erin", "acme", &["editor"]);
    let body = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 5});
    let upload = || events::with("uploads-create.json", "POST", "/uploads", Some(&body), Some(&token));
    assert_eq!(upload_url::handle(&services.uploads, upload()).await.status(), StatusCode::CREATED);
    assert_limited(&upload_url::handle(&services.uploads, upload()).await);
}
