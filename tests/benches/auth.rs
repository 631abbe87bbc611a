//! JWT verification with the key already cached, as on a warm Lambda instance: HS256 with
//! the key from Secrets Manager (moto), RS256 and ES256 with keys from a JWKS endpoint on
//! loopback. Each first call fetches the key; the measured calls never leave the process.
//!
//!     COACH_MOTO_SERVER=.venv/bin/coach-moto-server cargo bench -p coach-integration-tests --bench auth

use coach_testkit::{stack::TestStack, tokens};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

const ISSUER: &str = "https://tenant.auth0.test/";
const AUDIENCE: &str = "https://coach.example.com/api";

fn oidc_claims() -> Value {
    let mut claims = tokens::claims("auth0|bench", "acme", &["user"], 3600);
    claims["iss"] = ISSUER.into();
    claims["aud"] = AUDIENCE.into();
    claims
}

fn bench_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (hs256, jwks, _server) = runtime.block_on(async {
        let stack = TestStack::new().await;
        let hs256 = stack.start(&stack.aws, chat::Settings::load, chat::State::new);
        let server = MockServer::start().await;
        Mock::given(matchers::method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(tokens::jwks(&["rsa-1", "ec-1"])))
            .mount(&server)
            .await;
        let url = format!("{}/.well-known/jwks.json", server.uri());
        let vars = [
            ("COACH_AUTH_MODE", "jwks"),
            ("COACH_JWKS_URL", url.as_str()),
            ("COACH_JWT_ISSUER", ISSUER),
            ("COACH_JWT_AUDIENCE", AUDIENCE),
        ];
        let stack = TestStack::without_resources(&vars).await;
        let jwks = stack.start(&stack.aws, chat::Settings::load, chat::State::new);
        (hs256, jwks, server)
    });
    let cases: [(&str, &chat::State, String); 3] = [
        ("hs256", &hs256, tokens::for_test("bench", "acme", &["user"])),
        ("rs256", &jwks, tokens::signed("rsa-1", Some("rsa-1"), &oidc_claims())),
        ("es256", &jwks, tokens::signed("ec-1", Some("ec-1"), &oidc_claims())),
    ];
    let mut group = c.benchmark_group("jwt_verify_cached_key");
    for (name, services, token) in &cases {
        // Fetches and caches the key; the benchmark then measures only the cached path.
        let principal = runtime.block_on(services.pipeline.auth().verify(token)).expect("a valid token");
        assert_eq!(principal.tenant, "acme");
        group.bench_function(*name, |b| b.to_async(&runtime).iter(|| services.pipeline.auth().verify(token)));
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
