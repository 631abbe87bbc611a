//! Authentication through the chat handler's `GET /me`, with real signed tokens: HS256 with
//! the key from the emulator's Secrets Manager, and RS256/ES256 against a local JWKS server
//! that rotates keys.

use coach_testkit::stack::Deployment;
use coach_testkit::{
    events,
    stack::{TestStack, TEST_HS256_KEY},
    tokens::{self, claims, now},
};
use lambda_http::{http::StatusCode, Body, Response};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

const JWKS_PATH: &str = "/.well-known/jwks.json";

async fn me(services: &Deployment, token: Option<&str>) -> Response<Body> {
    chat::handle(&services.chat, events::http_request_with_token("chat-me.json", token)).await
}

fn body(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

/// Asserts a 401 with the JSON error and the given message.
fn assert_unauthorized(response: &Response<Body>, message: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{:?}", body(response));
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="coach""#);
    let body = body(response);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["message"], message);
    assert_eq!(body["error"]["request_id"], "req-auth");
}

fn hs(claims: &Value) -> String {
    tokens::hs256(TEST_HS256_KEY.as_bytes(), claims)
}

// ------------------------------------------------------------------ HS256 mode

#[tokio::test]
async fn hs256_valid_token_gives_the_principal() {
    let services = TestStack::new().await.deploy();
    let response = me(&services, Some(&hs(&claims("alice", "acme", &["editor"], 300)))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(&response), json!({"user_id": "alice", "tenant": "acme", "roles": ["editor"], "groups": []}));
}

#[tokio::test]
async fn hs256_rejects_bad_tokens() {
    let stack =
        TestStack::with_env(&[("COACH_JWT_ISSUER", "https://issuer.test/"), ("COACH_JWT_AUDIENCE", "coach-api")]).await;
    let services = stack.deploy();
    let good = |extra: Value| {
        let mut c = claims("alice", "acme", &["user"], 300);
        c["iss"] = "https://issuer.test/".into();
        c["aud"] = "coach-api".into();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    assert_eq!(me(&services, Some(&hs(&good(json!({}))))).await.status(), StatusCode::OK);

    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", hs(&good(json!({"exp": now() - 120}))), "token expired"),
        ("not yet valid", hs(&good(json!({"nbf": now() + 600}))), "token not yet valid"),
        ("wrong issuer", hs(&good(json!({"iss": "https://evil.test/"}))), "token issuer not accepted"),
        ("wrong audience", hs(&good(json!({"aud": "another-api"}))), "token audience not accepted"),
        ("no audience", hs(&good(json!({"aud": null}))), "token lacks the \"aud\" claim"),
        ("no exp", hs(&good(json!({"exp": null}))), "token lacks the \"exp\" claim"),
        (
            "wrong signature",
            tokens::hs256(b"another-key-that-is-long-enough-0123456789", &good(json!({}))),
            "invalid token signature",
        ),
        ("alg none", tokens::raw(&json!({"alg": "none", "typ": "JWT"}), &good(json!({})), b""), "malformed token"),
        (
            "RS256 in HS256 mode",
            tokens::signed("rsa-1", Some("rsa-1"), &good(json!({}))),
            "token algorithm not accepted",
        ),
        ("malformed header", "not-a-jwt".to_owned(), "malformed token"),
        ("header not JSON", format!("e30x.{}.sig", "eyJzdWIiOiJ4In0"), "malformed token"),
        ("missing sub", hs(&good(json!({"sub": null}))), "token lacks the \"sub\" claim"),
        ("missing tenant", hs(&good(json!({"tenant_id": null}))), "token lacks the \"tenant_id\" claim"),
        (
            "unsafe tenant",
            hs(&good(json!({"tenant_id": "../other"}))),
            "token claim \"tenant_id\" is not a valid tenant id",
        ),
    ];
    for (case, token, message) in cases {
        let response = me(&services, Some(&token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "case {case}: {:?}", body(&response));
        assert_eq!(body(&response)["error"]["message"], message, "case {case}");
    }
}

#[tokio::test]
async fn small_clock_skew_is_tolerated() {
    let services = TestStack::new().await.deploy();
    let mut c = claims("alice", "acme", &["user"], 300);
    c["nbf"] = (now() + 10).into();
    assert_eq!(me(&services, Some(&hs(&c))).await.status(), StatusCode::OK);
    c["nbf"] = now().into();
    c["exp"] = (now() - 10).into();
    assert_eq!(me(&services, Some(&hs(&c))).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_or_malformed_authorization_header_is_401() {
    let services = TestStack::new().await.deploy();
    assert_unauthorized(&me(&services, None).await, "missing Authorization header");

    let mut request = events::http_request_with_token("chat-me.json", None);
    request.headers_mut().insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
    assert_unauthorized(&chat::handle(&services.chat, request).await, "expected Authorization: Bearer <token>");

    let mut request = events::http_request_with_token("chat-me.json", None);
    request.headers_mut().insert("authorization", "Bearer ".parse().unwrap());
    assert_unauthorized(&chat::handle(&services.chat, request).await, "expected Authorization: Bearer <token>");
}

#[tokio::test]
async fn wrong_role_is_403() {
    let services = TestStack::with_env(&[("COACH_DEFAULT_ROLE", "none")]).await.deploy();
    let response = me(&services, Some(&hs(&claims("bob", "acme", &["viewer"], 300)))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = body(&response);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["message"], "this action needs the user role");
}

#[tokio::test]
async fn configured_claim_names_and_default_role() {
    let services = TestStack::with_env(&[
        ("COACH_TENANT_CLAIM", "https://coach.example.com/tenant"),
        ("COACH_ROLES_CLAIM", "cognito:groups"),
        ("COACH_GROUPS_CLAIM", "cognito:groups"),
    ])
    .await
    .deploy();
    let c = json!({"sub": "u1", "https://coach.example.com/tenant": "globex", "cognito:groups": ["admin", "hr"], "exp": now() + 60});
    // Cognito's groups claim as both: `admin` is a role, and every name a group.
    assert_eq!(
        body(&me(&services, Some(&hs(&c))).await),
        json!({"user_id": "u1", "tenant": "globex", "roles": ["admin"], "groups": ["admin", "hr"]})
    );
    let c = json!({"sub": "u2", "https://coach.example.com/tenant": "globex", "exp": now() + 60});
    assert_eq!(body(&me(&services, Some(&hs(&c))).await)["roles"], json!(["user"]));
}

#[tokio::test]
async fn hs256_without_a_key_in_the_secret_is_503() {
    let stack = TestStack::without_resources(&[]).await;
    coach_testkit::stack::create_secret(&stack.aws.secrets, &stack.config.secret_id, &json!({"llm_api_key": "x"}))
        .await
        .unwrap();
    let response = me(&stack.deploy(), Some(&hs(&claims("alice", "acme", &["user"], 300)))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body(&response)["error"]["message"], "authentication is not configured");

    // No secret at all: also 503, and the secret's name is not revealed.
    let stack = TestStack::without_resources(&[]).await;
    let response = me(&stack.deploy(), Some(&hs(&claims("alice", "acme", &["user"], 300)))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body(&response).to_string().contains(&stack.config.secret_id));
}

// ------------------------------------------------------------------ JWKS mode

async fn jwks_server(keys: &[&str]) -> MockServer {
    let server = MockServer::start().await;
    serve_keys(&server, keys).await;
    server
}

async fn serve_keys(server: &MockServer, keys: &[&str]) {
    server.reset().await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens::jwks(keys)))
        .mount(server)
        .await;
}

async fn jwks_fetches(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

async fn jwks_services(server: &MockServer, extra: &[(&str, &str)]) -> Deployment {
    let url = format!("{}{JWKS_PATH}", server.uri());
    let mut vars = vec![
        ("COACH_AUTH_MODE", "jwks"),
        ("COACH_JWKS_URL", url.as_str()),
        ("COACH_JWT_ISSUER", "https://tenant.auth0.test/"),
        ("COACH_JWT_AUDIENCE", "https://coach.example.com/api"),
    ];
    vars.extend_from_slice(extra);
    TestStack::without_resources(&vars).await.deploy()
}

fn oidc_claims() -> Value {
    let mut c = claims("auth0|alice", "acme", &["user"], 300);
    c["iss"] = "https://tenant.auth0.test/".into();
    c["aud"] = json!(["https://coach.example.com/api", "https://tenant.auth0.test/userinfo"]);
    c
}

#[tokio::test]
async fn jwks_accepts_rs256_and_es256_and_caches_keys() {
    let server = jwks_server(&["rsa-1", "ec-1"]).await;
    let services = jwks_services(&server, &[]).await;

    let response = me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", body(&response));
    assert_eq!(body(&response)["user_id"], "auth0|alice");
    let response = me(&services, Some(&tokens::signed("ec-1", Some("ec-1"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", body(&response));
    assert_eq!(jwks_fetches(&server).await, 1, "keys are cached between requests");
}

#[tokio::test]
async fn jwks_rotation_refetches_once_on_unknown_kid() {
    let server = jwks_server(&["rsa-1"]).await;
    let services = jwks_services(&server, &[]).await;
    assert_eq!(
        me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims()))).await.status(),
        StatusCode::OK
    );

    // The issuer rotates in rsa-2: its first token triggers one refetch and is accepted.
    serve_keys(&server, &["rsa-1", "rsa-2"]).await;
    let response = me(&services, Some(&tokens::signed("rsa-2", Some("rsa-2"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", body(&response));
    assert_eq!(jwks_fetches(&server).await, 1, "one refetch after the reset");

    // Made-up key ids within the minute do not reach the issuer again.
    for kid in ["nope-1", "nope-2", "nope-3"] {
        let token = tokens::signed("rsa-2", Some(kid), &oidc_claims());
        assert_unauthorized(&me(&services, Some(&token)).await, "token signed with an unknown key");
    }
    assert_eq!(jwks_fetches(&server).await, 1);
}

#[tokio::test]
async fn jwks_unknown_kid_refetch_is_rate_limited_but_allowed_again_later() {
    let server = jwks_server(&["rsa-1"]).await;
    let services = jwks_services(&server, &[("COACH_JWKS_MIN_REFETCH_SECS", "0")]).await;
    let token = tokens::signed("rsa-1", Some("unknown"), &oidc_claims());
    assert_unauthorized(&me(&services, Some(&token)).await, "token signed with an unknown key");
    assert_unauthorized(&me(&services, Some(&token)).await, "token signed with an unknown key");
    // First load, then one refetch per unknown-kid request when the interval is zero.
    assert_eq!(jwks_fetches(&server).await, 3);
}

#[tokio::test]
async fn jwks_rejects_forged_and_confused_tokens() {
    let server = jwks_server(&["rsa-1", "ec-1"]).await;
    let services = jwks_services(&server, &[]).await;

    // HS256 "signed" with the RSA public key as the HMAC secret: the classic confusion.
    let public_pem = std::fs::read(tokens::key_path("rsa-1.pub.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&header, &oidc_claims(), &jsonwebtoken::EncodingKey::from_secret(&public_pem)).unwrap();
    assert_unauthorized(&me(&services, Some(&confused)).await, "token algorithm not accepted");

    // Signed by a key the issuer never published, claiming a published kid.
    let forged = tokens::signed("rsa-attacker", Some("rsa-1"), &oidc_claims());
    assert_unauthorized(&me(&services, Some(&forged)).await, "invalid token signature");

    // alg none.
    let none = tokens::raw(&json!({"alg": "none", "kid": "rsa-1"}), &oidc_claims(), b"");
    assert_unauthorized(&me(&services, Some(&none)).await, "malformed token");

    // An RSA-signed token pointing at the EC key.
    let mismatched = tokens::signed("rsa-1", Some("ec-1"), &oidc_claims());
    assert_unauthorized(&me(&services, Some(&mismatched)).await, "token algorithm does not match its signing key");

    // Wrong issuer and audience, and expiry, are checked in JWKS mode too.
    let mut c = oidc_claims();
    c["iss"] = "https://evil.test/".into();
    assert_unauthorized(
        &me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &c))).await,
        "token issuer not accepted",
    );
    let mut c = oidc_claims();
    c["aud"] = "https://other.example.com/api".into();
    assert_unauthorized(
        &me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &c))).await,
        "token audience not accepted",
    );
    let mut c = oidc_claims();
    c["exp"] = (now() - 3600).into();
    assert_unauthorized(&me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &c))).await, "token expired");
}

#[tokio::test]
async fn jwks_algorithms_can_be_pinned_to_one() {
    let server = jwks_server(&["rsa-1", "ec-1"]).await;
    let services = jwks_services(&server, &[("COACH_JWT_ALGORITHMS", "RS256")]).await;
    let es = tokens::signed("ec-1", Some("ec-1"), &oidc_claims());
    assert_unauthorized(&me(&services, Some(&es)).await, "token algorithm not accepted");
}

#[tokio::test]
async fn jwks_without_kid_uses_the_only_matching_key() {
    let server = jwks_server(&["rsa-1", "ec-1"]).await;
    let services = jwks_services(&server, &[]).await;
    let response = me(&services, Some(&tokens::signed("rsa-1", None, &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", body(&response));
}

#[tokio::test]
async fn jwks_endpoint_failure_is_502() {
    let server = MockServer::start().await;
    Mock::given(matchers::path(JWKS_PATH)).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let services = jwks_services(&server, &[]).await;
    let response = me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(body(&response)["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_last_good_keys_and_backs_off() {
    let server = jwks_server(&["rsa-1"]).await;
    let services = jwks_services(&server, &[("COACH_JWKS_CACHE_TTL_SECS", "1")]).await;
    let token = tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims());
    assert_eq!(me(&services, Some(&token)).await.status(), StatusCode::OK);

    // The issuer fails; once the keys' TTL has passed, a refresh is tried and fails.
    server.reset().await;
    Mock::given(matchers::path(JWKS_PATH)).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = me(&services, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK, "the last good keys still verify: {:?}", body(&response));
    assert_eq!(jwks_fetches(&server).await, 1, "one refresh was tried");
    // Within the backoff no request reaches the issuer, not even for an unknown key id.
    assert_eq!(me(&services, Some(&token)).await.status(), StatusCode::OK);
    let unknown = tokens::signed("rsa-1", Some("rsa-9"), &oidc_claims());
    assert_unauthorized(&me(&services, Some(&unknown)).await, "token signed with an unknown key");
    assert_eq!(jwks_fetches(&server).await, 1);
}

#[tokio::test]
async fn jwks_redirects_are_refused_not_followed() {
    let server = MockServer::start().await;
    Mock::given(matchers::path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/elsewhere/jwks.json"))
        .mount(&server)
        .await;
    Mock::given(matchers::path("/elsewhere/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(tokens::jwks(&["rsa-1"])))
        .expect(0)
        .mount(&server)
        .await;
    let services = jwks_services(&server, &[]).await;
    let response = me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(jwks_fetches(&server).await, 1, "the redirect's target is never fetched");
}

#[tokio::test]
async fn an_oversized_jwks_document_is_refused() {
    let server = MockServer::start().await;
    let mut document = tokens::jwks(&["rsa-1"]);
    document["padding"] = "x".repeat(1024 * 1024).into();
    Mock::given(matchers::path(JWKS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(document))
        .mount(&server)
        .await;
    let services = jwks_services(&server, &[]).await;
    let response = me(&services, Some(&tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims()))).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn upload_url_function_authenticates_too() {
    let services = TestStack::new().await.deploy();
    let response =
        upload_url::handle(&services.uploads, events::http_request_with_token("documents-list.json", None)).await;
    assert_unauthorized(&response, "missing Authorization header");
    let token = hs(&claims("alice", "acme", &["user"], 300));
    let response =
        upload_url::handle(&services.uploads, events::http_request_with_token("documents-list.json", Some(&token)))
            .await;
    assert_eq!(response.status(), StatusCode::OK, "authenticated callers reach the route");
}

#[tokio::test]
async fn the_signing_key_can_live_in_a_secret_of_its_own() {
    // As deployed: the key in its own secret (COACH_JWT_SECRET_ID), the Coach secret holding
    // the provider keys. Every HTTP function verifies with the key from the signing secret.
    let stack = TestStack::new().await;
    let jwt_secret = format!("{}-own-jwt", stack.config.secret_id);
    let own_key = "a-signing-key-of-its-own-at-least-32-bytes-long";
    let fields = json!({ coach::auth::HS256_SECRET_FIELD: own_key });
    coach_testkit::stack::create_secret(&stack.aws.secrets, &jwt_secret, &fields).await.unwrap();
    let services = stack.with_more_env(&[("COACH_JWT_SECRET_ID", &jwt_secret)]).deploy();

    let token = tokens::hs256(own_key.as_bytes(), &claims("alice", "acme", &["admin"], 300));
    assert_eq!(me(&services, Some(&token)).await.status(), StatusCode::OK);
    let upload = events::with("uploads-create.json", "GET", "/documents", None, Some(&token));
    assert_eq!(upload_url::handle(&services.uploads, upload).await.status(), StatusCode::OK);
    // The Coach secret's key (TEST_HS256_KEY) is not the signing key any more.
    let other = tokens::hs256(TEST_HS256_KEY.as_bytes(), &claims("alice", "acme", &["admin"], 300));
    assert_unauthorized(&me(&services, Some(&other)).await, "invalid token signature");
    let upload = events::with("uploads-create.json", "GET", "/documents", None, Some(&other));
    assert_eq!(upload_url::handle(&services.uploads, upload).await.status(), StatusCode::UNAUTHORIZED);
}
