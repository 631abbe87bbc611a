//! `POST /qa`, `POST /summarize` and `POST /mindmap` through the chat handler, against moto,
//! the index stores and a local server speaking the OpenAI wire format (or the `none`
//! provider).

use coach_testkit::{
    events,
    flows::{add, add_shared, erin, upload},
    stack::{Deployment, Store, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

// ------------------------------------------------------------------ helpers

fn alice(tenant: &str) -> String {
    tokens::for_test("alice", tenant, &["user"])
}

/// `method path` with a JSON body as `token`, with extra headers: the status and JSON body.
async fn call(
    services: &Deployment,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
    headers: &[(&'static str, &str)],
) -> (StatusCode, Value) {
    let mut request = events::with("chat-post.json", method, path, body.as_ref(), token);
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let response = chat::handle(&services.chat, request).await;
    let status = response.status();
    (status, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

async fn post(services: &Deployment, path: &str, body: Value, tenant: &str) -> (StatusCode, Value) {
    call(services, "POST", path, Some(body), Some(&alice(tenant)), &[]).await
}

/// An OpenAI-compatible server answering every chat completion with `reply(user message)`.
async fn model(reply: fn(&str) -> String) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(move |request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let user = body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned();
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0613",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply(&user)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
            }))
        })
        .mount(&server)
        .await;
    server
}

/// The user messages the model server received, in order.
async fn asked(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .map(|r| {
            let body: Value = r.body_json().unwrap();
            body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn llm_vars(server: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("COACH_LLM_PROVIDER", "openai".to_owned()),
        ("COACH_LLM_BASE_URL", server.uri()),
        ("COACH_LLM_MODEL", "test-model".to_owned()),
        ("COACH_LLM_BACKOFF_MS", "1".to_owned()),
    ]
}

fn vars<'a>(owned: &'a [(&'static str, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(more);
    all
}

fn titles(reply: &Value) -> Vec<&str> {
    reply["sources"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap()).collect()
}

// ------------------------------------------------------------------ /qa

async fn qa_answers_are_kept_until_a_document_or_the_prompt_changes(store: Store) {
    let server = model(|_| "Within 30 days [1].".to_owned()).await;
    let llm = llm_vars(&server);
    let stack = TestStack::with_store(
        store,
        &vars(&llm, &[("COACH_INDEX_REVALIDATE_SECS", "0"), ("COACH_PROMPT_REVALIDATE_SECS", "0")]),
    )
    .await;
    let services = stack.deploy();
    let id =
        add(&stack, &services, "acme", "expenses.md", "# Expenses\n\nAcme reimburses travel within 30 days.\n").await;
    let question = json!({"question": "When is travel reimbursed?"});

    let (status, first) = post(&services, "/qa", question.clone(), "acme").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["answer"], "Within 30 days [1].");
    assert_eq!(titles(&first), vec!["expenses.md"]);
    assert_eq!(first["usage"], json!({"input_tokens": 12, "output_tokens": 5}));
    assert_eq!((first["model"].as_str(), first["cached"].as_bool()), (Some("gpt-test-0613"), Some(false)));
    let prompts = asked(&server).await;
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains("> Acme reimburses travel within 30 days.")
            && prompts[0].ends_with("When is travel reimbursed?")
    );

    // The same question, differently written: the kept answer, no model call, no cost.
    let (status, again) = post(&services, "/qa", json!({"question": "  when is TRAVEL   reimbursed "}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        (again["answer"].clone(), again["sources"].clone()),
        (first["answer"].clone(), first["sources"].clone())
    );
    assert_eq!(again["usage"], json!({"input_tokens": 0, "output_tokens": 0}));
    assert_eq!(again["cached"], true);
    assert_eq!(asked(&server).await.len(), 1);

    // Kept in the table under the tenant, for five minutes, by a digest (no question text).
    let items = stack.items("TENANT#acme#ANSWERS").await;
    assert_eq!(items.len(), 1);
    let sk = items[0]["sk"].as_s().unwrap();
    assert!(sk.starts_with("QA#") && !sk.to_lowercase().contains("travel"), "{sk}");
    let expires: u64 = items[0]["expires_at"].as_n().unwrap().parse().unwrap();
    let now = coach::ids::now_ms() / 1000;
    assert!((now + 290..=now + 301).contains(&expires), "{expires} vs {now}");

    // The caller may ask for a fresh answer; `no-store` leaves nothing behind either.
    let fresh = |value: &'static str| {
        let services = &services;
        let question = question.clone();
        async move { call(services, "POST", "/qa", Some(question), Some(&alice("acme")), &[("cache-control", value)]).await }
    };
    let (status, refreshed) = fresh("no-cache").await;
    assert_eq!((status, refreshed["cached"].as_bool()), (StatusCode::OK, Some(false)));
    assert_eq!(asked(&server).await.len(), 2);
    assert_eq!(fresh("no-store").await.1["cached"], false);
    assert_eq!(asked(&server).await.len(), 3);
    assert_eq!(post(&services, "/qa", question.clone(), "acme").await.1["cached"], true);

    // Another tenant never gets acme's answer.
    let (_, globex) = post(&services, "/qa", question.clone(), "globex").await;
    assert_eq!((globex["cached"].as_bool(), globex["sources"].clone()), (Some(false), json!([])));
    assert_eq!(asked(&server).await.len(), 4);

    // A change to the tenant's documents, to the shared docs, or to the prompt: asked afresh.
    let changes =
        ["a new document of the tenant", "a document of the tenant deleted", "a new shared doc", "a new system prompt"];
    for (i, change) in changes.iter().enumerate() {
        match i {
            0 => {
                add(&stack, &services, "acme", "travel.md", "# Travel\n\nBook travel through the portal.\n").await;
            }
            1 => services.uploads.documents.delete(&erin("acme"), &id).await.unwrap(),
            2 => add_shared(&stack, &services, "policy.md", "# Policy\n\nTravel is reimbursed monthly.\n").await,
            _ => stack.put(coach::prompt::SYSTEM_PROMPT_KEY, b"You answer expense questions.").await,
        }
        let calls = asked(&server).await.len();
        let (status, after) = post(&services, "/qa", question.clone(), "acme").await;
        assert_eq!((status, after["cached"].as_bool()), (StatusCode::OK, Some(false)), "after {change}: {after}");
        assert_eq!(asked(&server).await.len(), calls + 1, "after {change}");
        assert_eq!(post(&services, "/qa", question.clone(), "acme").await.1["cached"], true, "after {change}");
        // A change elsewhere keeps the answer.
        if i == 0 {
            add(&stack, &services, "globex", "other.md", "# Travel\n\nGlobex books its own travel.\n").await;
            assert_eq!(post(&services, "/qa", question.clone(), "acme").await.1["cached"], true);
        }
    }
    let last = asked(&server).await;
    assert!(last.last().unwrap().contains("> Travel is reimbursed monthly."), "the shared doc is in the prompt");
}

over_both_stores!(qa_answers_are_kept_until_a_document_or_the_prompt_changes);

#[tokio::test]
async fn qa_without_a_model_answers_with_passages_and_checks_its_input() {
    let stack = TestStack::with_env(&[("COACH_MAX_MESSAGE_CHARS", "100")]).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "expenses.md", "# Expenses\n\nAcme reimburses travel within 30 days.\n").await;

    let (status, reply) =
        post(&services, "/qa", json!({"question": "When is travel reimbursed?", "top_k": 1}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["answer"].as_str().unwrap().starts_with("No language model is configured, so here are"));
    assert!(reply["answer"].as_str().unwrap().contains("Acme reimburses travel"));
    assert_eq!((titles(&reply), reply["model"].as_str()), (vec!["expenses.md"], Some("none")));
    let (status, plain) = post(&services, "/qa", json!({"question": "Hello?", "use_documents": false}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert!(plain["answer"].as_str().unwrap().contains("nothing to answer from"));
    assert_eq!(plain["sources"], json!([]));

    let bad = [
        (json!({"question": "  "}), StatusCode::BAD_REQUEST),
        (json!({"question": "q", "top_k": 0}), StatusCode::BAD_REQUEST),
        (json!({"question": "q", "top_k": 21}), StatusCode::BAD_REQUEST),
        (json!({"question": "q", "top_k": -1}), StatusCode::BAD_REQUEST),
        (json!({"question": "q", "session_id": "x"}), StatusCode::BAD_REQUEST),
        (json!({"top_k": 3}), StatusCode::BAD_REQUEST),
        (json!({"question": "q".repeat(101)}), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (body, expected) in bad {
        let (status, error) = post(&services, "/qa", body.clone(), "acme").await;
        assert_eq!(status, expected, "{body}: {error}");
        assert!(error["error"]["code"].is_string(), "{error}");
    }
    let question = Some(json!({"question": "q"}));
    assert_eq!(call(&services, "POST", "/qa", question.clone(), None, &[]).await.0, StatusCode::UNAUTHORIZED);
    let strict = stack.with_more_env(&[("COACH_DEFAULT_ROLE", "none")]).deploy();
    let no_role = tokens::for_test("alice", "acme", &[]);
    assert_eq!(call(&strict, "POST", "/qa", question, Some(&no_role), &[]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&services, "GET", "/qa", None, Some(&alice("acme")), &[]).await.0, StatusCode::METHOD_NOT_ALLOWED);
}

// ------------------------------------------------------------------ /summarize

/// The model's answers: a part's summary, a combination, or a whole text's summary.
fn summariser(user: &str) -> String {
    if user.contains("This is part") {
        "Part summary.".to_owned()
    } else if user.contains("summaries of consecutive parts") {
        "Combined summary.".to_owned()
    } else {
        "Whole summary.".to_owned()
    }
}

fn long_text(sentences: usize) -> String {
    (0..sentences).map(|i| format!("Sentence number {i} says something about feedback and goals. ")).collect()
}

#[tokio::test]
async fn long_texts_are_summarised_in_parts_and_combined() {
    let server = model(summariser).await;
    let llm = llm_vars(&server);
    // 1,500 tokens of context less 256 for the answer and 400 for the instructions: parts of
    // about 844 estimated tokens (3,376 characters).
    let stack = TestStack::with_env(&vars(
        &llm,
        &[("COACH_LLM_CONTEXT_TOKENS", "1500"), ("COACH_LLM_MAX_OUTPUT_TOKENS", "256")],
    ))
    .await;
    let services = stack.deploy();

    let (status, short) =
        post(&services, "/summarize", json!({"text": "Feedback should be specific.", "style": "bullets"}), "acme")
            .await;
    assert_eq!(status, StatusCode::OK, "{short}");
    assert_eq!(short["summary"], "Whole summary.");
    assert_eq!((short["style"].as_str(), short["parts"].as_u64()), (Some("bullets"), Some(1)));
    assert_eq!((short["input_characters"].as_u64(), short["output_characters"].as_u64()), (Some(28), Some(14)));
    assert!(short.get("note").is_none());
    let prompt = asked(&server).await.pop().unwrap();
    assert!(prompt.contains("> Feedback should be specific.") && prompt.contains("bullet points"), "{prompt}");

    let text = long_text(200); // about 12,400 characters: four parts
    let before = asked(&server).await.len();
    let (status, long) = post(&services, "/summarize", json!({"text": text}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{long}");
    assert_eq!(long["summary"], "Combined summary.");
    assert_eq!(long["style"], "concise");
    let parts = long["parts"].as_u64().unwrap();
    assert_eq!(parts, 4, "{long}");
    assert_eq!(long["input_characters"].as_u64(), Some(text.trim().chars().count() as u64));
    let calls = asked(&server).await.split_off(before);
    assert_eq!(calls.len() as u64, parts + 1, "a call per part, then one to combine");
    assert_eq!(long["usage"], json!({"input_tokens": 12 * (parts + 1), "output_tokens": 5 * (parts + 1)}));
    assert!(calls[..4].iter().all(|c| c.contains("This is part") && c.contains("of 4")));
    // Every sentence went to the model in some part.
    for i in [0, 99, 199] {
        assert!(calls.iter().any(|c| c.contains(&format!("Sentence number {i} says"))), "sentence {i}");
    }
    let combine = calls.last().unwrap();
    assert_eq!(combine.matches("> Part summary.").count(), 4, "{combine}");

    // More parts than allowed: a 413 before any model call.
    let limited = stack.with_more_env(&[("COACH_SUMMARIZE_MAX_PARTS", "2")]).deploy();
    let before = asked(&server).await.len();
    let (status, error) = post(&limited, "/summarize", json!({"text": long_text(200)}), "acme").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("COACH_SUMMARIZE_MAX_PARTS"));
    assert_eq!(asked(&server).await.len(), before);

    // A document of the tenant: its text from the index, headings included.
    let id = add(
        &stack,
        &services,
        "acme",
        "guide.md",
        "# Feedback\n\nBe specific and kind.\n\n## Praise\n\nPraise in public.\n",
    )
    .await;
    let (status, doc) = post(&services, "/summarize", json!({"document_id": id, "style": "detailed"}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!((doc["summary"].as_str(), doc["document_id"].as_str()), (Some("Whole summary."), Some(id.as_str())));
    let prompt = asked(&server).await.pop().unwrap();
    assert!(prompt.contains("> Feedback > Praise") && prompt.contains("> Praise in public."), "{prompt}");
}

#[tokio::test]
async fn summaries_without_a_model_are_extractive_and_requests_are_checked() {
    let stack = TestStack::with_env(&[("COACH_SUMMARIZE_MAX_CHARS", "2000")]).await;
    let services = stack.deploy();
    let body = "# Feedback\n\nFeedback helps people grow. The weather was nice on Tuesday. Good feedback is specific \
                feedback about behaviour. Ask for feedback on your own feedback too. Lunch was pasta.\n";
    let id = add(&stack, &services, "acme", "guide.md", body).await;

    let (status, summary) = post(&services, "/summarize", json!({"document_id": id}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["model"], "none");
    assert!(summary["note"].as_str().unwrap().contains("extractive summary"));
    let text = summary["summary"].as_str().unwrap();
    assert!(text.contains("Good feedback is specific feedback about behaviour."), "{text}");
    assert!(!text.contains("pasta"), "{text}");
    let (_, bullets) = post(&services, "/summarize", json!({"text": body, "style": "bullets"}), "acme").await;
    assert!(bullets["summary"].as_str().unwrap().lines().all(|l| l.starts_with("- ")), "{bullets}");

    // A shared doc can be summarised by its id too.
    add_shared(
        &stack,
        &services,
        "handbook.md",
        "# Handbook\n\nEvery team sets three goals each quarter and reviews them.\n",
    )
    .await;
    let shared = stack.indexed(&coach::model::Scope::Global).await;
    let shared_id = shared.keys().next().unwrap().clone();
    let (status, of_shared) = post(&services, "/summarize", json!({"document_id": shared_id}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{of_shared}");
    assert!(of_shared["summary"].as_str().unwrap().contains("three goals"));

    let (pending, _) = upload(&stack, &services, "acme", "later.md", "# Later\n\nNot ingested yet.\n").await;
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let cases = [
        (json!({"document_id": pending}), "acme", StatusCode::CONFLICT),
        (json!({"document_id": unknown}), "acme", StatusCode::NOT_FOUND),
        (json!({"document_id": id}), "globex", StatusCode::NOT_FOUND),
        (json!({"document_id": "../../x"}), "acme", StatusCode::BAD_REQUEST),
        (json!({"document_id": id, "text": "both"}), "acme", StatusCode::BAD_REQUEST),
        (json!({"style": "concise"}), "acme", StatusCode::BAD_REQUEST),
        (json!({"text": "x", "style": "poem"}), "acme", StatusCode::BAD_REQUEST),
        (json!({"text": " "}), "acme", StatusCode::BAD_REQUEST),
        (json!({"text": "x".repeat(2001)}), "acme", StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (body, tenant, expected) in cases {
        let (status, error) = post(&services, "/summarize", body.clone(), tenant).await;
        assert_eq!(status, expected, "{body} as {tenant}: {error}");
    }
}

// ------------------------------------------------------------------ /mindmap

fn mapper(user: &str) -> String {
    if user.contains("prose please") {
        "I would rather describe this topic in a paragraph.".to_owned()
    } else {
        "Sure! Here it is:\n\n- Feedback\n  - Giving\n    - Be specific\n    - Be kind\n  - Receiving\n    - Listen\n      - Too deep\n"
            .to_owned()
    }
}

#[tokio::test]
async fn mind_maps_come_from_the_model_s_list_or_from_headings() {
    let server = model(mapper).await;
    let llm = llm_vars(&server);
    let stack = TestStack::with_env(&vars(&llm, &[])).await;
    let services = stack.deploy();
    add(
        &stack,
        &services,
        "acme",
        "guide.md",
        "# Feedback\n\n## Giving\n\nBe specific.\n\n## Receiving\n\nListen first.\n",
    )
    .await;

    let (status, map) = post(&services, "/mindmap", json!({"topic": "feedback", "depth": 2}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{map}");
    assert_eq!(
        map["root"],
        json!({"title": "Feedback", "children": [
            {"title": "Giving", "children": [{"title": "Be specific", "children": []}, {"title": "Be kind", "children": []}]},
            {"title": "Receiving", "children": [{"title": "Listen", "children": []}]},
        ]})
    );
    assert_eq!(titles(&map)[0], "guide.md");
    assert_eq!(map["usage"], json!({"input_tokens": 12, "output_tokens": 5}));
    let prompt = asked(&server).await.pop().unwrap();
    assert!(prompt.contains("> Be specific.") && prompt.contains("at most 2 levels"), "{prompt}");

    let (status, error) = post(&services, "/mindmap", json!({"topic": "prose please"}), "acme").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    assert_eq!(error["error"]["code"], "unusable_model_output");

    for body in [json!({"topic": "x", "depth": 0}), json!({"topic": "x", "depth": 5}), json!({"topic": ""}), json!({})]
    {
        assert_eq!(post(&services, "/mindmap", body.clone(), "acme").await.0, StatusCode::BAD_REQUEST, "{body}");
    }

    // Without a model: the documents retrieval found and their headings.
    let offline = stack.with_more_env(&[("COACH_LLM_PROVIDER", "none")]).deploy();
    let (status, map) =
        post(&offline, "/mindmap", json!({"topic": "giving and receiving feedback", "depth": 3}), "acme").await;
    assert_eq!(status, StatusCode::OK, "{map}");
    assert_eq!(map["model"], "none");
    assert!(map["note"].as_str().unwrap().contains("headings"));
    let root = &map["root"];
    assert_eq!(root["title"], "giving and receiving feedback");
    assert_eq!(root["children"][0]["title"], "guide.md");
    let sections: Vec<&str> = root["children"][0]["children"][0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(root["children"][0]["children"][0]["title"], "Feedback");
    assert!(sections.contains(&"Giving") && sections.contains(&"Receiving"), "{root}");
}
