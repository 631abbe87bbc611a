//! Signed JWTs for tests and for local development (`coach-dev token`).

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
}

/// Claims for a user of a tenant with roles, valid from now for `ttl_secs`.
pub fn claims(user: &str, tenant: &str, roles: &[&str], ttl_secs: i64) -> Value {
    let now = now();
    json!({ "sub": user, "tenant_id": tenant, "roles": roles, "iat": now, "nbf": now, "exp": now + ttl_secs })
}

/// An HS256 token signed with `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).expect("sign HS256")
}

/// An HS256 token valid for 10 minutes, signed with the test stacks' key.
pub fn for_test(user: &str, tenant: &str, roles: &[&str]) -> String {
    hs256(crate::stack::TEST_HS256_KEY.as_bytes(), &claims(user, tenant, roles, 600))
}

/// Path of a test key in `tests/fixtures/keys/`.
pub fn key_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys").join(name)
}

/// A token signed with the fixture key `name` (`rsa-1`, `rsa-2`, `ec-1`, `rsa-attacker`),
/// RS256 for RSA keys and ES256 for EC keys, with `kid` in the header when given.
pub fn signed(name: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(key_path(&format!("{name}.pem"))).expect("fixture key");
    let (alg, key) = if name.starts_with("ec") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).expect("EC key"))
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).expect("RSA key"))
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).expect("sign")
}

/// A JWKS document with the public keys of the named fixture keys.
pub fn jwks(names: &[&str]) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(key_path("jwks.json")).expect("jwks.json")).expect("JSON");
    json!({ "keys": names.iter().map(|n| all[n].clone()).collect::<Vec<_>>() })
}

/// A token with an arbitrary header and claims and the given signature bytes, for
/// malformed-token cases (`alg: none`, forged algorithms).
pub fn raw(header: &Value, claims: &Value, signature: &[u8]) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD as b64, Engine};
    format!("{}.{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()), b64.encode(signature))
}
