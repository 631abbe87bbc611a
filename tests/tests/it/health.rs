//! `GET /health` through the chat handler, against moto's S3 and DynamoDB.

use coach_testkit::{events, stack::TestStack};
use lambda_http::{http::StatusCode, Body, Response};
use serde_json::{json, Value};

fn body(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

#[tokio::test]
async fn healthy_when_bucket_and_table_exist() {
    let state = TestStack::new().await.deploy();
    let response = chat::handle(&state.chat, events::http_request("chat-health.json", "req-healthy")).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = body(&response);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["components"]["s3"]["status"], "healthy");
    assert_eq!(body["components"]["dynamodb"]["status"], "healthy");
    assert!(body["components"]["s3"]["latency_ms"].is_u64());
    assert!(body.get("error").is_none());
}

#[tokio::test]
async fn missing_table_is_503_with_json_error() {
    let stack = TestStack::without_resources(&[]).await;
    coach_testkit::stack::create_bucket(&stack.aws.s3, &stack.config.bucket).await.unwrap();
    let state = stack.deploy();
    let response = chat::handle(&state.chat, events::http_request("chat-health.json", "req-no-table")).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body(&response);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["components"]["s3"]["status"], "healthy");
    assert_eq!(
        body["components"]["dynamodb"],
        json!({"status": "degraded", "latency_ms": body["components"]["dynamodb"]["latency_ms"], "reason": "not_found"})
    );
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert_eq!(body["error"]["message"], "dependencies degraded: dynamodb");
    assert_eq!(body["error"]["request_id"], "req-no-table");
}

#[tokio::test]
async fn missing_bucket_is_503() {
    let stack = TestStack::without_resources(&[]).await;
    coach_testkit::stack::create_table(&stack.aws.dynamodb, &stack.config.table).await.unwrap();
    let state = stack.deploy();
    let response = chat::handle(&state.chat, events::http_request("chat-health.json", "r")).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body(&response);
    assert_eq!(body["components"]["s3"]["reason"], "not_found");
    assert_eq!(body["components"]["dynamodb"]["status"], "healthy");
}

#[tokio::test]
async fn unreachable_emulator_is_503_not_500() {
    let mut moto = coach_testkit::moto::Moto::start();
    let endpoint = moto.endpoint.clone();
    moto.stop();
    let stack = TestStack::without_resources(&[]).await;
    let sdk = coach_testkit::stack::sdk_config(&endpoint).await;
    let aws = coach::store::AwsClients::from_sdk_config(&sdk, stack.config.clone());
    let state = stack.deploy_with(&aws);
    let response = chat::handle(&state.chat, events::http_request("chat-health.json", "r")).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body(&response);
    assert_eq!(body["components"]["s3"]["reason"], "unreachable");
    assert_eq!(body["components"]["dynamodb"]["reason"], "unreachable");
}

#[tokio::test]
async fn unknown_route_is_json_404_and_wrong_method_405() {
    let state = TestStack::without_resources(&[]).await.deploy();
    let request = events::http_request("chat-health.json", "r");
    let (mut parts, body_in) = request.into_parts();
    parts.uri = "https://example.com/nope".parse().unwrap();
    let response = chat::handle(&state.chat, lambda_http::Request::from_parts(parts, body_in)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(&response)["error"]["code"], "not_found");

    let request = events::http_request("chat-health.json", "r");
    let (mut parts, body_in) = request.into_parts();
    parts.method = lambda_http::http::Method::POST;
    let response = chat::handle(&state.chat, lambda_http::Request::from_parts(parts, body_in)).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(body(&response)["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn liveness_calls_no_dependency_and_readiness_checks_them_all() {
    // No bucket, no table: not ready, but alive.
    let state = TestStack::without_resources(&[]).await.deploy();
    let get = |path: &str| {
        let request = events::http_request("chat-health.json", "r");
        let (mut parts, body) = request.into_parts();
        parts.uri = format!("https://api.example.com{path}").parse().unwrap();
        lambda_http::Request::from_parts(parts, body)
    };
    let live = chat::handle(&state.chat, get("/health/live")).await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(body(&live), json!({"status": "live"}));
    let ready = chat::handle(&state.chat, get("/health/ready")).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report = body(&ready);
    assert_eq!(report["components"]["s3"]["reason"], "not_found");
    assert_eq!(report["components"]["dynamodb"]["reason"], "not_found");
    assert_eq!(report["error"]["code"], "service_unavailable");

    // With both: ready, with the same report as /health.
    let state = TestStack::new().await.deploy();
    let ready = chat::handle(&state.chat, get("/health/ready")).await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(body(&ready)["status"], "healthy");
    assert_eq!(body(&ready)["components"].as_object().unwrap().len(), 2);
    // Only GET.
    let mut post = get("/health/live");
    *post.method_mut() = lambda_http::http::Method::POST;
    let refused = chat::handle(&state.chat, post).await;
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.headers()["allow"], "GET");
}
