//! The audit log: each security-relevant operation leaves exactly one event, in DynamoDB
//! under its tenant, and `GET /audit` lists only the caller's tenant's.

use coach::store::{UsageEntry, UsageLedger};
use coach_testkit::flows::chat_call;
use coach_testkit::{
    events,
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

fn body(response: lambda_http::Response<lambda_http::Body>) -> (StatusCode, Value) {
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

async fn upload_call(
    services: &Deployment,
    method: &str,
    path: &str,
    payload: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let request = events::with("uploads-create.json", method, path, payload.as_ref(), Some(token));
    body(upload_url::handle(&services.uploads, request).await)
}

/// Every event of the tenant `admin` administers, newest first, through `GET /audit` pages of 3.
async fn all_events(services: &Deployment, admin: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/audit?limit=3&cursor={c}"),
            None => "/audit?limit=3".to_owned(),
        };
        let (status, page) = chat_call(services, "GET", &path, None, admin).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
}

#[tokio::test]
async fn each_security_relevant_operation_leaves_exactly_one_event_of_its_tenant() {
    let stack = TestStack::with_env(&[("COACH_BUDGET_UNIT", "tokens"), ("COACH_BUDGET_USER_MONTHLY", "10")]).await;
    let services = stack.deploy();
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let editor = tokens::for_test("ed", "acme", &["editor"]);
    let user = tokens::for_test("uma", "acme", &["user"]);

    // Nothing security-relevant: no event.
    assert_eq!(chat_call(&services, "POST", "/chat", Some(json!({"message": "hi"})), &user).await.0, StatusCode::OK);
    assert_eq!(upload_call(&services, "GET", "/documents", None, &editor).await.0, StatusCode::OK);

    let presigned = json!({"filename": "a.md", "content_type": "text/markdown", "size_bytes": 10});
    let (status, upload) = upload_call(&services, "POST", "/uploads", Some(presigned.clone()), &editor).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    let inline = json!({"filename": "b.md", "content": "# B\n\nText.", "content_type": "text/markdown"});
    let (status, inline) = upload_call(&services, "POST", "/documents", Some(inline), &editor).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{inline}");
    let deleted = inline["document_id"].as_str().unwrap();
    let (status, _) = upload_call(&services, "DELETE", &format!("/documents/{deleted}"), None, &editor).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let operator = tokens::for_test("carol", "acme", &["platform-admin"]);
    let refresh = events::with("chat-post.json", "POST", "/docs/refresh", None, Some(&operator));
    assert_eq!(docs_refresh::handle_http(&services.refresh, refresh).await.status(), StatusCode::OK);
    let (status, key) =
        chat_call(&services, "POST", "/api-keys", Some(json!({"name": "bot", "roles": ["user"]})), &admin).await;
    assert_eq!(status, StatusCode::CREATED);
    let key_id = key["id"].as_str().unwrap();
    assert_eq!(
        chat_call(&services, "DELETE", &format!("/api-keys/{key_id}"), None, &admin).await.0,
        StatusCode::NO_CONTENT
    );
    // Refusals: a role (three times within a minute: audited once), a budget (uma used 20
    // tokens of her 10 earlier this month).
    for _ in 0..3 {
        assert_eq!(
            upload_call(&services, "POST", "/uploads", Some(presigned.clone()), &user).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let today = coach::ids::rfc3339(coach::ids::now_ms());
    let entry = UsageEntry {
        tenant: "acme",
        user: Some("uma"),
        day: &today[..10],
        month: &today[..7],
        model: "m",
        surface: coach::model::Surface::Api,
        counts: coach::model::UsageCounts { input_tokens: 20, output_tokens: 0, cost_nanos: 0, requests: 1 },
        day_expires_at: coach::ids::now_ms() / 1000 + 60,
    };
    UsageLedger::add(&stack.aws.table(), &entry).await.unwrap();
    let (status, refused) = chat_call(&services, "POST", "/chat", Some(json!({"message": "hi"})), &user).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("budget_exceeded")));
    // Another tenant's upload.
    let other = tokens::for_test("otto", "globex", &["editor"]);
    assert_eq!(upload_call(&services, "POST", "/uploads", Some(presigned), &other).await.0, StatusCode::CREATED);

    let events = all_events(&services, &admin).await;
    let summary: Vec<(String, String, String, String)> = events
        .iter()
        .rev()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or("").to_owned();
            (field("operation"), field("actor"), field("resource"), field("outcome"))
        })
        .collect();
    let upload_id = upload["document_id"].as_str().unwrap().to_owned();
    let expected = vec![
        ("document.upload", "ed", upload_id.as_str(), "success"),
        ("document.upload", "ed", deleted, "success"),
        ("document.delete", "ed", deleted, "success"),
        ("prompt.refresh", "carol", "", "success"),
        ("api_key.create", "carol", key_id, "success"),
        ("api_key.revoke", "carol", key_id, "success"),
        ("access.denied", "uma", "POST /uploads", "refused"),
        ("budget.exceeded", "uma", "POST /chat", "refused"),
    ];
    assert_eq!(summary.len(), expected.len(), "{summary:?}");
    for (got, want) in summary.iter().zip(&expected) {
        assert_eq!(got.0, want.0, "{summary:?}");
        assert_eq!((got.1.as_str(), got.3.as_str()), (want.1, want.3), "{got:?}");
        if !want.2.is_empty() {
            assert_eq!(got.2, want.2, "{got:?}");
        }
    }
    assert!(events.iter().all(|e| e["request_id"] == "req-auth" && e["at"].as_str().unwrap().ends_with('Z')));
    // Kept a year.
    let stored = stack.items("TENANT#acme#AUDIT").await;
    assert_eq!(stored.len(), expected.len());
    let expires: u64 = stored[0]["expires_at"].as_n().unwrap().parse().unwrap();
    let now = coach::ids::now_ms() / 1000;
    assert!((now + 364 * 86_400..=now + 365 * 86_400 + 5).contains(&expires), "{expires}");

    // Another tenant lists only its own; listing needs the admin role (a refusal, audited).
    let globex = tokens::for_test("gina", "globex", &["admin"]);
    let theirs = all_events(&services, &globex).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!((theirs[0]["operation"].as_str(), theirs[0]["actor"].as_str()), (Some("document.upload"), Some("otto")));
    assert_eq!(chat_call(&services, "GET", "/audit", None, &editor).await.0, StatusCode::FORBIDDEN);
    let after = all_events(&services, &admin).await;
    assert_eq!(
        (after.len(), after[0]["operation"].as_str(), after[0]["resource"].as_str()),
        (9, Some("access.denied"), Some("GET /audit"))
    );

    // Ranges.
    let (status, none) = chat_call(&services, "GET", "/audit?from=2020-01-01&to=2020-01-31", None, &admin).await;
    assert_eq!((status, none["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    for query in ["from=yesterday", "from=2026-02-30", "from=2026-03-02&to=2026-03-01", "from=2020-01-01&to=2026-01-01"]
    {
        assert_eq!(
            chat_call(&services, "GET", &format!("/audit?{query}"), None, &admin).await.0,
            StatusCode::BAD_REQUEST,
            "{query}"
        );
    }
    // A valid cursor used with a range it does not belong to is the caller's mistake.
    let (_, page) = chat_call(&services, "GET", "/audit?limit=1", None, &admin).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let path = format!("/audit?from=2020-01-01&to=2020-01-31&cursor={cursor}");
    let (status, refused) = chat_call(&services, "GET", &path, None, &admin).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{refused}"
    );
}
