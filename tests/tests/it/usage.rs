//! The usage ledger (`GET /usage`, the counters in DynamoDB) and monthly budgets, through the
//! chat and ingest functions, against moto and local servers speaking the OpenAI wire format.

use coach::store::{UsageEntry, UsageLedger};
use coach_testkit::{
    events,
    flows::{add, stream_call},
    providers::{pairs, FakeProvider, FIXTURE_USAGE, PROVIDERS},
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::{header, StatusCode};
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

/// $1,000 and $2,000 per million tokens: each fake completion (12 in, 5 out) costs $0.022.
const PRICES: &str = r#"{"gpt-test-0613": {"input": 1000, "output": 2000}}"#;

async fn model() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0613",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        })))
        .mount(&server)
        .await;
    server
}

async fn stack(server: &MockServer, more: &[(&str, &str)]) -> TestStack {
    let uri = server.uri();
    let mut vars = vec![
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", uri.as_str()),
        ("COACH_LLM_BACKOFF_MS", "1"),
        ("COACH_PRICES", PRICES),
    ];
    vars.extend_from_slice(more);
    TestStack::with_env(&vars).await
}

async fn call(
    services: &Deployment,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let request = events::with("chat-post.json", method, path, body.as_ref(), Some(token));
    let response = chat::handle(&services.chat, request).await;
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let mut body: Value = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
    if let Some(after) = retry_after {
        body["retry_after"] = after.into();
    }
    (status, body)
}

fn user(name: &str) -> String {
    tokens::for_test(name, "acme", &["user"])
}

async fn chat(services: &Deployment, token: &str) -> (StatusCode, Value) {
    call(services, "POST", "/chat", Some(json!({"message": "Plan my week"})), token).await
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

fn today() -> String {
    coach::ids::rfc3339(coach::ids::now_ms())[..10].to_owned()
}

#[tokio::test]
async fn every_model_call_is_counted_per_user_and_tenant_by_day_and_model() {
    let server = model().await;
    let stack = stack(&server, &[]).await;
    let services = stack.deploy();
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(chat(&services, &alice).await.0, StatusCode::OK);
    assert_eq!(chat(&services, &alice).await.0, StatusCode::OK);
    assert_eq!(chat(&services, &bob).await.0, StatusCode::OK);
    let (status, _) = call(&services, "POST", "/qa", Some(json!({"question": "What now?"})), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let text = json!({"text": "Plans help. Review the week, then pick three priorities."});
    assert_eq!(call(&services, "POST", "/summarize", Some(text), &alice).await.0, StatusCode::OK);
    // A kept answer calls no model and costs nothing.
    let (_, kept) = call(&services, "POST", "/qa", Some(json!({"question": "What now?"})), &alice).await;
    assert_eq!(kept["cached"], true);
    assert_eq!(requests(&server).await, 5);

    let (status, own) = call(&services, "GET", "/usage", None, &alice).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!((own["scope"].as_str(), own["user_id"].as_str()), (Some("user"), Some("alice")));
    let four = json!({"input_tokens": 48, "output_tokens": 20, "cost_usd": 0.088, "requests": 4});
    assert_eq!(own["totals"], four);
    assert_eq!(own["currency"], "USD");
    assert_eq!(own["to"], today());
    assert_eq!(own["from"].as_str().unwrap(), format!("{}-01", &today()[..7]));
    assert_eq!(own["days"].as_array().unwrap().len(), 1);
    assert_eq!(own["days"][0]["date"], today());
    assert_eq!(own["days"][0]["models"][0]["model"], "gpt-test-0613");
    assert_eq!(
        own["models"],
        json!([{"model": "gpt-test-0613", "input_tokens": 48, "output_tokens": 20, "cost_usd": 0.088, "requests": 4}])
    );

    // The tenant's report needs the admin role and adds every user up.
    let (status, refused) = call(&services, "GET", "/usage?scope=tenant", None, &alice).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let (status, tenant) = call(&services, "GET", "/usage?scope=tenant", None, &admin).await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    assert_eq!(tenant["totals"]["requests"], 5);
    assert_eq!(tenant["totals"]["cost_usd"], 0.11);
    assert!(tenant.get("user_id").is_none());
    // Another tenant has nothing.
    let other = tokens::for_test("carol", "globex", &["admin"]);
    let (_, empty) = call(&services, "GET", "/usage?scope=tenant", None, &other).await;
    assert_eq!((empty["totals"]["requests"].as_u64(), empty["days"].as_array().map(Vec::len)), (Some(0), Some(0)));

    // What DynamoDB holds: the day's counters expire, the month's totals stay.
    let day = stack.items("TENANT#acme#USAGE").await;
    let by_sk =
        |sk: &str| day.iter().find(|i| i["sk"].as_s().unwrap() == sk).unwrap_or_else(|| panic!("{sk}: {day:?}"));
    let day_item = by_sk(&format!("DAY#{}#gpt-test-0613", today()));
    assert_eq!(day_item["requests"].as_n().unwrap(), "5");
    assert_eq!(day_item["cost_nanos"].as_n().unwrap(), "110000000");
    let expires: u64 = day_item["expires_at"].as_n().unwrap().parse().unwrap();
    let now = coach::ids::now_ms() / 1000;
    assert!((now + 399 * 86_400..=now + 400 * 86_400 + 5).contains(&expires), "{expires}");
    let month = by_sk(&format!("MONTH#{}", &today()[..7]));
    assert_eq!(month["input_tokens"].as_n().unwrap(), "60");
    assert!(!month.contains_key("expires_at"));
    assert_eq!(stack.items("TENANT#acme#USAGE#USER#bob").await.len(), 2, "bob's day and month");

    // Ranges: dates, order, at most 92 days; scopes.
    for (query, what) in [
        ("from=2026-02-30", "a date"),
        ("from=yesterday", "a date"),
        ("from=2026-01-01&to=2026-04-30", "at most 92 days"),
        ("from=2026-03-02&to=2026-03-01", "before from"),
        ("scope=everyone", "user or tenant"),
    ] {
        let (status, error) = call(&services, "GET", &format!("/usage?{query}"), None, &alice).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(error["error"]["message"].as_str().unwrap().contains(what), "{query}: {error}");
    }
    let (status, exact) = call(&services, "GET", "/usage?from=2026-01-01&to=2026-04-01", None, &alice).await;
    assert_eq!(
        (status, exact["totals"]["requests"].as_u64()),
        (StatusCode::OK, Some(0)),
        "92 days, none of them today"
    );
}

/// Counts alice's earlier use this month, as the ledger would have (another day).
async fn spent_earlier(stack: &TestStack, who: Option<&str>, nanos: u64, tokens: u64) {
    let month = &today()[..7];
    let earlier = format!("{month}-01");
    let entry = UsageEntry {
        tenant: "acme",
        user: who,
        day: &earlier,
        month,
        model: "gpt-test-0613",
        surface: coach::model::Surface::Api,
        counts: coach::model::UsageCounts { input_tokens: tokens, output_tokens: 0, cost_nanos: nanos, requests: 1 },
        day_expires_at: coach::ids::now_ms() / 1000 + 86_400,
    };
    UsageLedger::add(&stack.aws.table(), &entry).await.unwrap();
}

#[tokio::test]
async fn a_user_crossing_the_budget_mid_month_is_refused_before_the_model() {
    let server = model().await;
    let stack = stack(&server, &[("COACH_BUDGET_USER_MONTHLY", "0.05")]).await;
    let services = stack.deploy();
    let (alice, bob) = (user("alice"), user("bob"));
    // $0.025 spent earlier this month; each turn costs $0.022.
    spent_earlier(&stack, Some("alice"), 25_000_000, 0).await;
    assert_eq!(chat(&services, &alice).await.0, StatusCode::OK, "$0.025 spent");
    assert_eq!(chat(&services, &alice).await.0, StatusCode::OK, "$0.047 spent");
    assert_eq!(requests(&server).await, 2);

    let (status, refused) = chat(&services, &alice).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["error"]["code"], "budget_exceeded");
    let message = refused["error"]["message"].as_str().unwrap();
    let month: u32 = today()[5..7].parse().unwrap();
    let next = if month == 12 { "-01-01T00:00:00Z".to_owned() } else { format!("-{:02}-01T00:00:00Z", month + 1) };
    assert!(message.contains("user") && message.contains(&next), "{message}");
    let retry: u64 = refused["retry_after"].as_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 31 * 86_400, "{retry}");
    assert_eq!(requests(&server).await, 2, "refused before the model");
    // Every route that calls the model is refused; the stream's too.
    let (status, qa) = call(&services, "POST", "/qa", Some(json!({"question": "Now?"})), &alice).await;
    assert_eq!((status, qa["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("budget_exceeded")));
    let stream = events::with("chat-post.json", "POST", "/chat/stream", Some(&json!({"message": "hi"})), Some(&alice));
    assert_eq!(chat::stream::handle(services.stream.clone(), stream).await.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(requests(&server).await, 2);
    // The refusals used up no rate limit: the user's window counted only the two turns.
    let windows = stack.items("TENANT#acme#RATE#USER#alice").await;
    let counted: u64 = windows.iter().map(|w| w["count"].as_n().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(counted, 2, "{windows:?}");
    // Another user's budget is their own; reading one's usage is not a model call.
    assert_eq!(chat(&services, &bob).await.0, StatusCode::OK);
    assert_eq!(call(&services, "GET", "/usage", None, &alice).await.0, StatusCode::OK);

    // A tenant's budget stops every user of the tenant, and budgets may count tokens.
    let tenant = stack.with_more_env(&[
        ("COACH_BUDGET_USER_MONTHLY", "0"),
        ("COACH_BUDGET_TENANT_MONTHLY", "200"),
        ("COACH_BUDGET_UNIT", "tokens"),
    ]);
    let services = tenant.deploy();
    // The tenant used 51 tokens so far (three turns of 17): bob may go on; 150 more, counted
    // on an earlier day, make 218 of 200.
    assert_eq!(chat(&services, &bob).await.0, StatusCode::OK, "51 tokens of 200");
    spent_earlier(&stack, None, 0, 150).await;
    let (status, refused) = chat(&services, &user("dave")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("budget_exceeded")));
    assert!(refused["error"]["message"].as_str().unwrap().contains("tenant"));
}

#[tokio::test]
async fn calls_to_a_paid_embedding_api_are_counted_for_the_tenant_and_the_asking_user() {
    let embeddings = MockServer::start().await;
    Mock::given(matchers::path("/embeddings"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let inputs = body["input"].as_array().unwrap().len();
            let data: Vec<Value> =
                (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": [1.0, 0.0, 0.0]})).collect();
            // As OpenAI answers: the model it served, and the tokens it counted (7 a text here).
            let usage = json!({"prompt_tokens": 7 * inputs, "total_tokens": 7 * inputs});
            ResponseTemplate::new(200).set_body_json(
                json!({"object": "list", "data": data, "model": "test-embed-2024-07-18", "usage": usage}),
            )
        })
        .mount(&embeddings)
        .await;
    let uri = embeddings.uri();
    let stack = TestStack::with_env(&[
        ("COACH_EMBEDDING_PROVIDER", "openai"),
        ("COACH_EMBEDDING_BASE_URL", uri.as_str()),
        ("COACH_EMBEDDING_MODEL", "test-embed"),
        ("COACH_PRICES", r#"{"test-embed": {"input": 100, "output": 0}}"#),
    ])
    .await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "week.md", "# Week\n\nReview the week every Friday afternoon.\n").await;
    let (status, _) =
        call(&services, "POST", "/chat", Some(json!({"message": "When do I review the week?"})), &user("alice")).await;
    assert_eq!(status, StatusCode::OK);

    let admin = tokens::for_test("carol", "acme", &["admin"]);
    let (_, tenant) = call(&services, "GET", "/usage?scope=tenant", None, &admin).await;
    let models: Vec<(&str, u64)> = tenant["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["model"].as_str().unwrap(), m["requests"].as_u64().unwrap()))
        .collect();
    // The document's chunk (one call) and the question (one call), under the served name at
    // the requested name's price, with the tokens the API counted; the `none` model's turn.
    assert_eq!(models, vec![("test-embed-2024-07-18", 2), ("none", 1)], "{tenant}");
    let embedded = &tenant["models"][0];
    assert_eq!(
        (embedded["input_tokens"].as_u64(), embedded["cost_usd"].as_f64()),
        (Some(14), Some(0.0014)),
        "{tenant}"
    );
    let (_, own) = call(&services, "GET", "/usage", None, &user("alice")).await;
    let own_models: Vec<&str> =
        own["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(
        own_models,
        vec!["test-embed-2024-07-18", "none"],
        "the question's embedding is alice's; the document's the tenant's"
    );
    assert_eq!(own["models"][0]["requests"], 1);
}

/// What one fixture reply of `provider` costs at the default price of the model Coach asked
/// for, in dollars.
fn fixture_cost(provider: coach_testkit::providers::Provider) -> f64 {
    let (_, input, output) =
        coach::usage::DEFAULT_PRICES.iter().find(|(m, _, _)| *m == provider.requested()).expect("a default price");
    let (tokens_in, tokens_out) = FIXTURE_USAGE;
    (tokens_in as f64 * input + tokens_out as f64 * output) / 1e6
}

/// The providers answer under dated names the price table does not list (OpenAI's
/// `gpt-4o-mini-2024-07-18` for `gpt-4o-mini`, ...): the calls are still priced, so budgets
/// trip, for whole and streamed replies alike. Before prices were looked up by the requested
/// and the undated name, every call cost $0 and no budget refused anything.
#[tokio::test]
async fn budgets_trip_with_the_dated_model_names_providers_answer_under() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start(provider).await;
        let mut vars = fake.env();
        vars.push(("COACH_BUDGET_USER_MONTHLY", "0.0001".to_owned()));
        let stack = TestStack::with_env(&pairs(&vars)).await;
        let services = stack.deploy();
        let (alice, bob) = (user("alice"), user("bob"));

        let (status, reply) = chat(&services, &alice).await;
        assert_eq!((status, reply["model"].as_str()), (StatusCode::OK, Some(provider.served())), "{provider:?}");
        let (status, refused) = chat(&services, &alice).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{provider:?}: {refused}");
        assert_eq!(refused["error"]["code"], "budget_exceeded");

        let ask = json!({"message": "Plan my week"});
        let (status, _, events) = stream_call(&services, ask.clone(), &bob).await;
        let done = events.last().map(|(kind, data)| (kind.as_str(), data["model"].as_str()));
        assert_eq!((status, done), (StatusCode::OK, Some(("done", Some(provider.served())))), "{provider:?}");
        let (status, _, refused) = stream_call(&services, ask, &bob).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{provider:?}: {refused:?}");
        assert_eq!(fake.requests().await, 2, "{provider:?}: refused before the model");

        // What the user sees: the served name, at the requested model's price.
        let (tokens_in, tokens_out) = FIXTURE_USAGE;
        let (_, own) = call(&services, "GET", "/usage", None, &alice).await;
        let expected = json!([{"model": provider.served(), "input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost_usd": fixture_cost(provider), "requests": 1}]);
        assert_eq!(own["models"], expected, "{provider:?}");
    }
}

/// Every route that calls the model records its calls under the served name at a price:
/// `/chat`, `/qa`, `/summarize` and `/mindmap` (the fixture reply is no list, so the mind map
/// is a 502, and its call is still counted).
#[tokio::test]
async fn every_route_prices_the_served_model() {
    for provider in PROVIDERS {
        let fake = FakeProvider::start(provider).await;
        let stack = TestStack::with_env(&pairs(&fake.env())).await;
        let services = stack.deploy();
        let alice = user("alice");
        assert_eq!(chat(&services, &alice).await.0, StatusCode::OK);
        let (status, qa) = call(&services, "POST", "/qa", Some(json!({"question": "What now?"})), &alice).await;
        assert_eq!((status, qa["model"].as_str()), (StatusCode::OK, Some(provider.served())), "{provider:?}");
        let text = json!({"text": "Plans help. Review the week, then pick three priorities."});
        assert_eq!(call(&services, "POST", "/summarize", Some(text), &alice).await.0, StatusCode::OK);
        let (status, _) = call(&services, "POST", "/mindmap", Some(json!({"topic": "feedback"})), &alice).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{provider:?}");

        let calls = fake.requests().await as u64;
        assert!(calls >= 4, "{provider:?}: {calls}");
        let (_, own) = call(&services, "GET", "/usage", None, &alice).await;
        let models = own["models"].as_array().unwrap();
        assert_eq!(models.len(), 1, "{provider:?}: {own}");
        assert_eq!(
            (models[0]["model"].as_str(), models[0]["requests"].as_u64()),
            (Some(provider.served()), Some(calls))
        );
        let cost = models[0]["cost_usd"].as_f64().unwrap();
        assert!((cost - calls as f64 * fixture_cost(provider)).abs() < 1e-9, "{provider:?}: {cost}");
    }
}
