//! API keys: created by a tenant's admin and shown once, stored as a hash, accepted as
//! `Bearer coach_...` or `x-api-key` with the key's tenant and roles, refused once revoked.

use coach_testkit::{
    events,
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::{header, StatusCode};
use serde_json::{json, Value};

/// `method path` on the chat function with `headers`: status, `Cache-Control`, JSON body.
async fn call(
    services: &Deployment,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&'static str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut request = events::with("chat-post.json", method, path, body.as_ref(), None);
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let response = chat::handle(&services.chat, request).await;
    let cache = response.headers().get(header::CACHE_CONTROL).map(|v| v.to_str().unwrap().to_owned());
    (response.status(), cache, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn an_api_key_authenticates_as_its_tenant_and_roles_until_revoked() {
    let stack = TestStack::with_env(&[("COACH_API_KEY_CACHE_SECS", "1")]).await;
    let (services, other_instance) = (stack.deploy(), stack.deploy());
    let admin = bearer(&tokens::for_test("carol", "acme", &["admin"]));
    let auth = |value: &str| [("authorization", value.to_owned())];

    let (status, cache, created) = call(
        &services,
        "POST",
        "/api-keys",
        Some(json!({"name": "CI bot", "roles": ["user"]})),
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    assert!(key.starts_with(&format!("coach_{id}_")) && key.len() == "coach_".len() + 26 + 1 + 64, "{key}");
    let secret = &key[key.len() - 64..];
    assert_eq!((created["name"].as_str(), created["roles"].clone()), (Some("CI bot"), json!(["user"])));

    // Listed without the key; stored as a hash only.
    let (status, _, listed) = call(&services, "GET", "/api-keys", None, &[("authorization", &admin)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["api_keys"][0]["id"], id.as_str());
    assert_eq!(listed["api_keys"][0]["created_by"], "carol");
    assert!(!listed.to_string().contains(secret) && listed["api_keys"][0].get("key").is_none());
    let items = stack.items(&format!("APIKEY#{id}")).await;
    assert_eq!(items.len(), 1);
    assert!(!format!("{:?}", items[0]).contains(secret), "the secret is never stored");
    assert_eq!(items[0]["hash"].as_s().unwrap().len(), 64);

    // The key is the tenant's caller with its roles, as bearer or x-api-key.
    for headers in [vec![("authorization", bearer(&key))], vec![("x-api-key", key.clone())]] {
        let headers: Vec<(&'static str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, _, me) = call(&services, "GET", "/me", None, &headers).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me, json!({"user_id": format!("key:{id}"), "tenant": "acme", "roles": ["user"], "groups": []}));
    }
    let with_key = auth(&bearer(&key));
    let with_key: Vec<(&'static str, &str)> = with_key.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, _, _) = call(&services, "POST", "/chat", Some(json!({"message": "Plan my week"})), &with_key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!stack.items(&format!("TENANT#acme#RATE#USER#key:{id}")).await.is_empty(), "rate limits count per key");
    // Its roles and no more: no keys to manage, no uploads.
    let (status, _, _) = call(&services, "GET", "/api-keys", None, &with_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let upload = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 3});
    let request = events::with("uploads-create.json", "POST", "/uploads", Some(&upload), Some(&key));
    assert_eq!(upload_url::handle(&services.uploads, request).await.status(), StatusCode::FORBIDDEN);

    // Anything else that looks like a key is a 401.
    let wrong = format!("coach_{id}_{}", "0".repeat(64));
    let unknown = format!("coach_01ARZ3NDEKTSV4RRFFQ69G5FAV_{secret}");
    for bad in [wrong.as_str(), unknown.as_str(), "coach_", "coach_abc_def"] {
        let (status, _, error) = call(&services, "GET", "/me", None, &[("x-api-key", bad)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(error["error"]["message"], "invalid API key");
    }

    // Creating: admins only, known roles only, a name.
    let editor = bearer(&tokens::for_test("ed", "acme", &["editor"]));
    for (who, body, expected) in [
        (editor.as_str(), json!({"name": "x", "roles": ["user"]}), StatusCode::FORBIDDEN),
        (admin.as_str(), json!({"name": "x", "roles": ["root"]}), StatusCode::BAD_REQUEST),
        (admin.as_str(), json!({"name": "x", "roles": []}), StatusCode::BAD_REQUEST),
        (admin.as_str(), json!({"name": " ", "roles": ["user"]}), StatusCode::BAD_REQUEST),
        (admin.as_str(), json!({"name": "x", "roles": ["user"], "ttl": 5}), StatusCode::BAD_REQUEST),
    ] {
        let (status, _, error) =
            call(&services, "POST", "/api-keys", Some(body.clone()), &[("authorization", who)]).await;
        assert_eq!(status, expected, "{body}: {error}");
    }

    // Another tenant's admin sees nothing and cannot revoke it.
    let globex = bearer(&tokens::for_test("gina", "globex", &["admin"]));
    let (_, _, theirs) = call(&services, "GET", "/api-keys", None, &[("authorization", &globex)]).await;
    assert_eq!(theirs["api_keys"], json!([]));
    let path = format!("/api-keys/{id}");
    assert_eq!(call(&services, "DELETE", &path, None, &[("authorization", &globex)]).await.0, StatusCode::NOT_FOUND);

    // Revoked: refused at once here, and by another warm instance once its cache lets go.
    assert_eq!(call(&other_instance, "GET", "/me", None, &with_key).await.0, StatusCode::OK, "cached there");
    assert_eq!(call(&services, "DELETE", &path, None, &[("authorization", &admin)]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&services, "GET", "/me", None, &with_key).await.0, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call(&other_instance, "GET", "/me", None, &with_key).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&services, "DELETE", &path, None, &[("authorization", &admin)]).await.0, StatusCode::NOT_FOUND);
    let (_, _, listed) = call(&services, "GET", "/api-keys", None, &[("authorization", &admin)]).await;
    assert_eq!(listed["api_keys"], json!([]));
}

/// Keys expire (within the deployment's longest life), show their last use (written at most
/// once a minute), and are managed by signed-in admins only: not by a key, even an admin's,
/// and no key is a platform admin. No token may pass for a key.
#[tokio::test]
async fn keys_expire_show_their_last_use_and_are_managed_by_signed_in_admins_only() {
    let stack = TestStack::with_env(&[("COACH_API_KEY_MAX_DAYS", "30")]).await;
    let services = stack.deploy();
    let admin = bearer(&tokens::for_test("carol", "acme", &["admin"]));
    let create = |body: Value| {
        let admin = admin.clone();
        let services = &services;
        async move { call(services, "POST", "/api-keys", Some(body), &[("authorization", &admin)]).await }
    };
    for (body, why) in [
        (json!({"name": "k", "roles": ["user"], "expires_in_days": 31}), "past the deployment's 30 days"),
        (json!({"name": "k", "roles": ["user"], "expires_in_days": 0}), "zero days"),
        (json!({"name": "k", "roles": ["user"], "expires_in_days": -1}), "negative"),
        (json!({"name": "k", "roles": ["platform-admin"]}), "a platform admin key"),
    ] {
        assert_eq!(create(body).await.0, StatusCode::BAD_REQUEST, "{why}");
    }
    // Without a date, the deployment's longest life.
    let (status, _, key) = create(json!({"name": "ops", "roles": ["admin"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let expires = humantime::parse_rfc3339(key["expires_at"].as_str().unwrap()).unwrap();
    let days = expires.duration_since(std::time::SystemTime::now()).unwrap().as_secs() as f64 / 86_400.0;
    assert!((29.9..=30.0).contains(&days), "{days}");
    assert_eq!(key["last_used_at"], Value::Null);
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let with_key = bearer(&secret);

    // An admin's key may list keys, never create or revoke one.
    let (status, _, listed) = call(&services, "GET", "/api-keys", None, &[("authorization", &with_key)]).await;
    assert_eq!(status, StatusCode::OK);
    let used = listed["api_keys"][0]["last_used_at"].as_str().expect("a use recorded").to_owned();
    let body = json!({"name": "k2", "roles": ["user"]});
    let (status, _, refused) = call(&services, "POST", "/api-keys", Some(body), &[("authorization", &with_key)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("sign in as an admin"));
    let path = format!("/api-keys/{id}");
    assert_eq!(call(&services, "DELETE", &path, None, &[("authorization", &with_key)]).await.0, StatusCode::FORBIDDEN);

    // Used again, from another instance too, within the minute: its last use is not rewritten.
    let other = stack.deploy();
    assert_eq!(call(&other, "GET", "/me", None, &[("authorization", &with_key)]).await.0, StatusCode::OK);
    let stored = stack.items(&format!("APIKEY#{id}")).await;
    let written: u64 = stored[0]["last_used"].as_n().unwrap().parse().unwrap();
    assert_eq!(coach::ids::rfc3339(written), used);

    // Past its date (as if 30 days went by), refused.
    stack
        .aws
        .dynamodb
        .update_item()
        .table_name(&stack.config.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("APIKEY#{id}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("APIKEY".into()))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(":past", aws_sdk_dynamodb::types::AttributeValue::N("1000".into()))
        .send()
        .await
        .unwrap();
    let later = stack.deploy();
    let (status, _, expired) = call(&later, "GET", "/me", None, &[("authorization", &with_key)]).await;
    assert_eq!((status, expired["error"]["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("API key expired")));

    // A signed-in admin revokes it; a token whose subject looks like a key is refused.
    assert_eq!(call(&services, "DELETE", &path, None, &[("authorization", &admin)]).await.0, StatusCode::NO_CONTENT);
    let forged = bearer(&tokens::for_test(&format!("key:{id}"), "acme", &["admin"]));
    assert_eq!(call(&services, "GET", "/me", None, &[("authorization", &forged)]).await.0, StatusCode::UNAUTHORIZED);
}
