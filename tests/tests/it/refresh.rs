//! docs-refresh: the system prompt rebuilt from docs/ in moto's S3, through the HTTP route
//! and the schedule event, and seen by the next chat turn.

use coach_testkit::stack::Deployment;
use coach_testkit::{events, stack::TestStack, tokens};
use lambda_http::{http::StatusCode, Context};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

fn token(roles: &[&str]) -> String {
    tokens::for_test("ada", "acme", roles)
}

/// `POST /docs/refresh` through the function's event entry point, as API Gateway calls it.
async fn refresh(services: &Deployment, token: Option<&str>) -> (u16, Value) {
    let mut event: Value = serde_json::from_str(&events::load("docs-refresh.json")).unwrap();
    match token {
        Some(t) => event["headers"]["authorization"] = format!("Bearer {t}").into(),
        None => {
            event["headers"].as_object_mut().unwrap().remove("authorization");
        }
    }
    let response = docs_refresh::handle(&services.refresh, event, Context::default()).await.unwrap();
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    (response["statusCode"].as_u64().unwrap() as u16, body)
}

#[tokio::test]
async fn refresh_combines_markdown_docs_in_key_order_with_the_base() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    stack.put("prompt/base.md", "You are Acme's coach.\n".as_bytes()).await;
    stack.put("docs/b-feedback.md", "# Feedback\n\nBe specific.\n".as_bytes()).await;
    stack.put("docs/a-goals.md", "# Goals\n\nThree a quarter.\n".as_bytes()).await;
    stack.put("docs/team/c-planning.md", "Plan on Mondays.\n".as_bytes()).await;
    stack.put("docs/logo.png", "\u{89}PNG".as_bytes()).await;
    stack.put("docs/notes.txt", "not markdown".as_bytes()).await;

    let (status, manifest) = refresh(&services, Some(&token(&["platform-admin"]))).await;
    assert_eq!(status, 200, "{manifest}");
    let prompt = stack.get_text("prompt/system_prompt.md").await;
    assert_eq!(
        prompt,
        "You are Acme's coach.\n\n---\n\n# Goals\n\nThree a quarter.\n\n---\n\n# Feedback\n\nBe specific.\n\n---\n\nPlan on Mondays."
    );
    let keys: Vec<&str> =
        manifest["documents"].as_array().unwrap().iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["docs/a-goals.md", "docs/b-feedback.md", "docs/team/c-planning.md"], "non-md files ignored");
    assert_eq!(manifest["documents"][0]["title"], "Goals");
    assert_eq!(manifest["documents"][2]["title"], "c-planning");
    assert_eq!(manifest["base_included"], true);
    assert_eq!(manifest["total_characters"], prompt.chars().count());
    assert_eq!(manifest["over_budget"], false);
    assert!(manifest["estimated_tokens"].as_u64().unwrap() > 0);
    assert!(manifest["version"].as_str().unwrap().len() == 26);

    // The manifest is written last and describes the prompt beside it.
    let stored: Value = serde_json::from_str(&stack.get_text("prompt/manifest.json").await).unwrap();
    assert_eq!(stored, manifest);
    let head =
        stack.aws.s3.head_object().bucket(&stack.config.bucket).key("prompt/system_prompt.md").send().await.unwrap();
    assert_eq!(stored["prompt_etag"].as_str(), head.e_tag());

    // Versions increase from one refresh to the next.
    let (_, again) = refresh(&services, Some(&token(&["platform-admin"]))).await;
    assert!(again["version"].as_str().unwrap() > manifest["version"].as_str().unwrap());
}

#[tokio::test]
async fn empty_docs_gives_a_clear_result_and_the_default_prompt() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let (status, manifest) = refresh(&services, Some(&token(&["platform-admin"]))).await;
    assert_eq!(status, 200);
    assert_eq!(manifest["documents"], json!([]));
    assert_eq!(manifest["notes"], json!(["docs/ has no markdown files", "the system prompt is the built-in default"]));
    assert!(stack.get_text("prompt/system_prompt.md").await.starts_with("You are Coach"));
}

#[tokio::test]
async fn over_budget_docs_are_reported_not_silently_cut() {
    let stack = TestStack::with_env(&[("COACH_PROMPT_MAX_TOKENS", "100")]).await;
    let services = stack.deploy();
    stack.put("docs/a.md", format!("# Short\n\n{}", "word ".repeat(40)).as_bytes()).await; // ~52 tokens
    stack.put("docs/b.md", format!("# Long\n\n{}", "word ".repeat(200)).as_bytes()).await; // ~252 tokens
    stack.put("docs/c.md", "# Tiny\n\nok".as_bytes()).await;
    let (_, manifest) = refresh(&services, Some(&token(&["platform-admin"]))).await;
    assert_eq!(manifest["over_budget"], true);
    assert_eq!(manifest["omitted"], json!(["docs/b.md"]));
    assert_eq!(manifest["documents"][1]["included"], false);
    assert_eq!(manifest["documents"][2]["included"], true);
    assert!(manifest["notes"][0].as_str().unwrap().contains("retrieval still finds them"));
    let prompt = stack.get_text("prompt/system_prompt.md").await;
    assert!(prompt.contains("# Short") && prompt.contains("# Tiny") && !prompt.contains("# Long"));
    assert!(manifest["estimated_tokens"].as_u64().unwrap() <= 100);
}

#[tokio::test]
async fn listing_is_paginated() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    for i in 0..7 {
        stack.put(&format!("docs/{i:02}.md"), format!("# Doc {i}\n").as_bytes()).await;
    }
    let manifest = services.refresh.refresher.refresh(2).await.unwrap();
    assert_eq!(manifest.documents.len(), 7);
    assert_eq!(manifest.documents[6].key, "docs/06.md");
}

/// The shared prompt serves every tenant: only the deployment's operators may rebuild it (the
/// `platform-admin` role, or a subject in `COACH_PLATFORM_ADMINS`), never a tenant's admin or
/// an API key.
#[tokio::test]
async fn only_platform_admins_may_refresh() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    for roles in [&["editor"][..], &["admin"]] {
        let (status, body) = refresh(&services, Some(&token(roles))).await;
        assert_eq!(status, 403, "{roles:?}");
        assert_eq!(body["error"]["message"], "this action needs the platform-admin role");
    }
    let (status, body) = refresh(&services, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    // A tenant admin's API key is not accepted here at all.
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let created = events::with(
        "chat-post.json",
        "POST",
        "/api-keys",
        Some(&json!({"name": "k", "roles": ["admin"]})),
        Some(&admin),
    );
    let created: Value = serde_json::from_slice(chat::handle(&services.chat, created).await.body().as_ref()).unwrap();
    let (status, body) = refresh(&services, created["key"].as_str()).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("API keys are not accepted here")));
    let exists = stack.aws.s3.head_object().bucket(&stack.config.bucket).key("prompt/system_prompt.md").send().await;
    assert!(exists.is_err(), "nothing written for refused callers");

    // A subject the deployment names is a platform admin whatever the token's roles.
    let operators = stack.with_more_env(&[("COACH_PLATFORM_ADMINS", "someone-else, ada")]).deploy();
    let (status, body) = refresh(&operators, Some(&token(&["user"]))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_schedule_event_refreshes_without_a_caller() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    stack.put("docs/a.md", "# Goals\n".as_bytes()).await;
    let event: Value = serde_json::from_str(&events::load("schedule.json")).unwrap();
    let manifest = docs_refresh::handle(&services.refresh, event, Context::default()).await.unwrap();
    assert_eq!(manifest["documents"][0]["key"], "docs/a.md");
    assert_eq!(stack.get_text("prompt/system_prompt.md").await, "# Goals");
    assert!(docs_refresh::handle(&services.refresh, json!({"nonsense": true}), Context::default()).await.is_err());
}

#[tokio::test]
async fn chat_sees_the_new_prompt_after_a_refresh() {
    let llm = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}})))
        .mount(&llm)
        .await;
    let uri = llm.uri();
    let stack = TestStack::with_env(&[
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", &uri),
        ("COACH_PROMPT_REVALIDATE_SECS", "0"),
        ("COACH_RETRIEVAL_TOP_K", "0"),
    ])
    .await;
    let services = stack.deploy(); // one warm instance for both functions' work
    let ask = || async {
        let request =
            events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": "hi"})), Some(&token(&["user"])));
        assert_eq!(chat::handle(&services.chat, request).await.status(), StatusCode::OK);
    };
    stack.put("docs/a.md", "# Version one\n".as_bytes()).await;
    refresh(&services, Some(&token(&["platform-admin"]))).await;
    ask().await;
    stack.put("docs/a.md", "# Version two\n".as_bytes()).await;
    refresh(&services, Some(&token(&["platform-admin"]))).await;
    ask().await;
    let systems: Vec<String> = llm
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json::<Value>().unwrap()["messages"][0]["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(systems, vec!["# Version one", "# Version two"]);
}
