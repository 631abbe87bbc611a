//! Per-user and per-tenant rate limits on the expensive routes, counted in moto's DynamoDB;
//! the limiter's answers when the table is out of reach (a stopped emulator), throttling or
//! refusing (a server answering as DynamoDB does). The tests use a one-day window so a
//! window boundary cannot fall inside a test.

use coach_testkit::stack::Deployment;
use coach_testkit::{events, stack::TestStack, tokens};
use lambda_http::{http::StatusCode, Body, Response};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

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
    let streaming = stack.deploy();
    let response = chat::stream::handle(streaming.stream.clone(), request).await;
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

#[tokio::test]
async fn a_refused_request_uses_up_neither_limit() {
    let stack = TestStack::with_env(&[
        ("COACH_RATE_LIMIT_USER", "1"),
        ("COACH_RATE_LIMIT_TENANT", "3"),
        ("COACH_RATE_LIMIT_WINDOW_SECS", "86400"),
    ])
    .await;
    let services = stack.deploy();
    // Refused by her own limit, alice's requests leave the tenant's untouched...
    assert_eq!(chat(&services, "alice", "acme").await.status(), StatusCode::OK);
    assert_limited(&chat(&services, "alice", "acme").await);
    assert_limited(&chat(&services, "alice", "acme").await);
    assert_eq!(chat(&services, "bob", "acme").await.status(), StatusCode::OK);
    assert_eq!(chat(&services, "carol", "acme").await.status(), StatusCode::OK);
    // ...and refused by the tenant's, dave's leaves his own untouched.
    assert_limited(&chat(&services, "dave", "acme").await);
    let roomier = stack.with_more_env(&[("COACH_RATE_LIMIT_TENANT", "10")]).deploy();
    assert_eq!(chat(&roomier, "dave", "acme").await.status(), StatusCode::OK, "his one request is still his");
    assert_limited(&chat(&roomier, "dave", "acme").await);
}

#[tokio::test]
async fn counters_out_of_reach_are_kept_in_memory() {
    let mut moto = coach_testkit::moto::Moto::start();
    let vars =
        [("COACH_RATE_LIMIT_USER", "2"), ("COACH_RATE_LIMIT_WINDOW_SECS", "86400"), ("COACH_AWS_TIMEOUT_MS", "1000")];
    let stack = TestStack::on(&moto.endpoint, &vars).await;
    let services = stack.deploy();
    let token = tokens::for_test("erin", "acme", &["editor"]);
    let body = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 5});
    let upload = || events::with("uploads-create.json", "POST", "/uploads", Some(&body), Some(&token));
    assert_eq!(upload_url::handle(&services.uploads, upload()).await.status(), StatusCode::CREATED);

    // The table gone: the limit still holds, counted by the instance (which starts at zero).
    moto.stop();
    for _ in 0..2 {
        let response = upload_url::handle(&services.uploads, upload()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "past the limiter, the store is down");
    }
    assert_limited(&upload_url::handle(&services.uploads, upload()).await);
}

/// A limiter over the real DynamoDB client, talking to a server that answers every call
/// with `error` as DynamoDB sends it.
async fn limiter_answered_with(server: &MockServer, error: &str) -> coach::ratelimit::RateLimiter {
    let body = json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{error}"), "message": "refused"});
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(body.to_string(), "application/x-amz-json-1.0"))
        .mount(server)
        .await;
    let stack = TestStack::without_resources(&[]).await;
    let aws = coach::store::AwsClients::from_sdk_config(
        &coach_testkit::stack::sdk_config(&server.uri()).await,
        stack.config.clone(),
    );
    let config =
        coach::ratelimit::RateLimitConfig { per_user: 5, per_tenant: 50, window: std::time::Duration::from_secs(60) };
    coach::ratelimit::RateLimiter::new(std::sync::Arc::new(aws.table()), config)
}

#[tokio::test]
async fn throttled_counters_refuse_and_other_refusals_are_unavailable() {
    let who = coach::auth::Principal { user_id: "alice".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    let throttled = MockServer::start().await;
    let limiter = limiter_answered_with(&throttled, "ProvisionedThroughputExceededException").await;
    match limiter.check(&who).await {
        Err(coach::Error::RateLimited { retry_after_secs: 1 }) => {}
        other => panic!("a throttled table refuses the request: {other:?}"),
    }

    let denied = MockServer::start().await;
    let limiter = limiter_answered_with(&denied, "AccessDeniedException").await;
    let error = limiter.check(&who).await.unwrap_err();
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE, "{error:?}");
    assert_eq!(error.to_string(), "the rate limiter is unavailable");
}
