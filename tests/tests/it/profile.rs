//! Optional user profiles from a local server speaking the Auth0 Management API, seen
//! through `GET /me`: fetched with a cached client-credentials token, cached per user, and
//! never a reason to fail a request.

use coach_testkit::stack::Deployment;
use coach_testkit::{
    events,
    stack::{create_secret, TestStack, TEST_HS256_KEY},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, Request, ResponseTemplate};

async fn services(auth0: &MockServer) -> Deployment {
    let stack =
        TestStack::without_resources(&[("COACH_AUTH0_DOMAIN", &auth0.uri()), ("COACH_AUTH0_CLIENT_ID", "client-123")])
            .await;
    let fields = json!({ "jwt_hs256_secret": TEST_HS256_KEY, "auth0_client_secret": "s3cret-value" });
    create_secret(&stack.aws.secrets, &stack.config.secret_id, &fields).await.unwrap();
    stack.deploy()
}

async fn me(services: &Deployment, user: &str) -> Value {
    let token = tokens::hs256(TEST_HS256_KEY.as_bytes(), &tokens::claims(user, "acme", &["user"], 300));
    let response = chat::handle(&services.chat, events::http_request_with_token("chat-me.json", Some(&token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(response.body().as_ref()).unwrap()
}

async fn mount_token_endpoint(server: &MockServer) {
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/oauth/token"))
        .and(matchers::body_partial_json(json!({
            "grant_type": "client_credentials",
            "client_id": "client-123",
            "client_secret": "s3cret-value",
            "audience": format!("{}/api/v2/", server.uri()),
        })))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "mgmt-token", "expires_in": 86400, "token_type": "Bearer"})),
        )
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, prefix: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn profile_is_fetched_once_per_user_with_one_cached_token() {
    let auth0 = MockServer::start().await;
    mount_token_endpoint(&auth0).await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path_regex("^/api/v2/users/"))
        .and(matchers::header("authorization", "Bearer mgmt-token"))
        .and(matchers::query_param("fields", "user_metadata"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"user_metadata": {"goal": "delegate more", "timezone": "Europe/Paris"}})),
        )
        .mount(&auth0)
        .await;
    let services = services(&auth0).await;

    let first = me(&services, "auth0|alice").await;
    assert_eq!(first["profile"], json!({"goal": "delegate more", "timezone": "Europe/Paris"}));
    assert_eq!(me(&services, "auth0|alice").await["profile"], first["profile"]);
    me(&services, "auth0|bob").await;

    let users = requests_to(&auth0, "/api/v2/users/").await;
    assert_eq!(users.len(), 2, "one fetch per user, then the cache");
    assert_eq!(users[0].url.path(), "/api/v2/users/auth0%7Calice", "user id is percent-encoded");
    assert_eq!(requests_to(&auth0, "/oauth/token").await.len(), 1, "the management token is cached");
}

#[tokio::test]
async fn user_without_metadata_has_no_profile_and_is_not_asked_again() {
    let auth0 = MockServer::start().await;
    mount_token_endpoint(&auth0).await;
    Mock::given(matchers::path_regex("^/api/v2/users/")).respond_with(ResponseTemplate::new(404)).mount(&auth0).await;
    let services = services(&auth0).await;
    assert_eq!(me(&services, "auth0|ghost").await["profile"], Value::Null);
    assert_eq!(me(&services, "auth0|ghost").await["profile"], Value::Null);
    assert_eq!(requests_to(&auth0, "/api/v2/users/").await.len(), 1);
}

#[tokio::test]
async fn auth0_failures_degrade_to_no_profile_and_are_retried_later() {
    let auth0 = MockServer::start().await;
    mount_token_endpoint(&auth0).await;
    Mock::given(matchers::path_regex("^/api/v2/users/")).respond_with(ResponseTemplate::new(503)).mount(&auth0).await;
    let services = services(&auth0).await;
    assert_eq!(me(&services, "auth0|alice").await["profile"], Value::Null);
    assert_eq!(me(&services, "auth0|alice").await["profile"], Value::Null);
    assert_eq!(requests_to(&auth0, "/api/v2/users/").await.len(), 2, "failures are not cached");
}

#[tokio::test]
async fn token_endpoint_failure_degrades_to_no_profile() {
    let auth0 = MockServer::start().await;
    Mock::given(matchers::path("/oauth/token")).respond_with(ResponseTemplate::new(401)).mount(&auth0).await;
    let services = services(&auth0).await;
    assert_eq!(me(&services, "auth0|alice").await["profile"], Value::Null);
    assert!(requests_to(&auth0, "/api/v2/users/").await.is_empty());
}

#[tokio::test]
async fn rejected_management_token_is_dropped_and_renewed() {
    let auth0 = MockServer::start().await;
    mount_token_endpoint(&auth0).await;
    Mock::given(matchers::path_regex("^/api/v2/users/")).respond_with(ResponseTemplate::new(401)).mount(&auth0).await;
    let services = services(&auth0).await;
    assert_eq!(me(&services, "auth0|alice").await["profile"], Value::Null);
    assert_eq!(me(&services, "auth0|alice").await["profile"], Value::Null);
    assert_eq!(requests_to(&auth0, "/oauth/token").await.len(), 2, "a rejected token is fetched anew");
}

#[tokio::test]
async fn no_profile_key_without_auth0_configuration() {
    let services = TestStack::new().await.deploy();
    assert!(me(&services, "alice").await.get("profile").is_none());
}
