//! Retrieval in the chat path: documents ingested (objects in moto's S3), then chat turns
//! with the `none` provider (which answers with the retrieved passages) and with an LLM
//! server that shows what the prompt carried.
//!
//! Every test but the one about the S3 store's revalidation interval runs over both index
//! stores (`s3::` and `postgres::`): segments in S3, and PostgreSQL with pgvector.

use std::sync::Arc;

use coach_testkit::{
    events,
    flows::{add, add_shared, chat, stream_call},
    stack::{Deployment, Store, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use wiremock::{matchers, Mock, MockServer, ResponseTemplate};

fn corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus");
    let mut docs: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    docs.sort();
    docs
}

async fn ask(services: &Deployment, tenant: &str, message: &str) -> Value {
    let (status, reply) = chat(services, tenant, message).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply
}

fn titles(reply: &Value) -> Vec<String> {
    reply["sources"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap().to_owned()).collect()
}

async fn the_relevant_document_ranks_first_lexically(store: Store) {
    let stack = TestStack::with_store(store, &[("COACH_RETRIEVAL_TOP_K", "3")]).await;
    let services = stack.deploy();
    let corpus = corpus();
    for (name, body) in &corpus {
        add_shared(&stack, &services, name, body).await;
    }
    // Indexed in the store asked for, and only there.
    let manifest = stack.manifest(&coach::model::Scope::Global).await;
    match store {
        Store::S3 => assert_eq!(manifest.map(|m| m.docs.len()), Some(corpus.len())),
        Store::Postgres => {
            assert!(manifest.is_none(), "no S3 index with the Postgres store");
            let stored = stack.sql("SELECT count(*) FROM coach_documents WHERE scope = '_global'");
            assert_eq!(stored, corpus.len().to_string());
        }
    }
    let cases = [
        ("A teammate keeps missing deadlines, what should I do?", "giving-feedback.md"),
        ("How do I hand over work without micromanaging?", "delegation.md"),
        ("They disagree with me in a tense conversation", "difficult-conversations.md"),
        ("How many goals should I set per quarter?", "setting-goals.md"),
        ("How should I block focus time in my calendar?", "weekly-planning.md"),
    ];
    for (question, expected) in cases {
        let reply = ask(&services, "acme", question).await;
        assert_eq!(titles(&reply)[0], expected, "{question}: {:?}", titles(&reply));
        assert!(reply["sources"].as_array().unwrap().len() <= 3);
    }

    // The none provider answers with the passages, numbered, and the reply stores its sources.
    let reply = ask(&services, "acme", "How often should I check in without micromanaging?").await;
    let answer = reply["answer"].as_str().unwrap();
    assert!(answer.starts_with("No language model is configured, so here are the most relevant passages"));
    assert!(answer.contains("[1] delegation.md"), "{answer}");
    let source = &reply["sources"][0];
    assert_eq!(source["chunk"].as_u64(), Some(2), "the 'checking in' section: {source}");
    assert!(source["snippet"].as_str().unwrap().contains("check-in points"));
    assert!(source["score"].as_f64().unwrap() > 0.0);
    assert!(source["document_id"].as_str().unwrap().starts_with("doc-"));
}

async fn tenants_never_retrieve_each_others_documents(store: Store) {
    let stack = TestStack::with_store(store, &[("COACH_INDEX_REVALIDATE_SECS", "0")]).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "acme-handbook.md", "# Expenses\n\nAcme reimburses travel within 30 days.\n").await;
    add(&stack, &services, "globex", "globex-handbook.md", "# Expenses\n\nGlobex reimburses travel within 10 days.\n")
        .await;

    let acme = ask(&services, "acme", "When is travel reimbursed?").await;
    assert_eq!(titles(&acme), vec!["acme-handbook.md"]);
    assert!(!acme["answer"].as_str().unwrap().contains("Globex"));
    let globex = ask(&services, "globex", "When is travel reimbursed?").await;
    assert_eq!(titles(&globex), vec!["globex-handbook.md"]);
    let other = ask(&services, "initech", "When is travel reimbursed?").await;
    assert_eq!(other["sources"], json!([]));
}

async fn a_new_upload_is_found_on_the_next_message(store: Store) {
    let stack = TestStack::with_store(store, &[("COACH_INDEX_REVALIDATE_SECS", "0")]).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "a.md", "# Onboarding\n\nNew hires get a buddy.\n").await;
    assert!(ask(&services, "acme", "What is the parental leave policy?").await["sources"]
        .as_array()
        .unwrap()
        .is_empty());
    add(&stack, &services, "acme", "leave.md", "# Parental leave\n\nParental leave is sixteen weeks.\n").await;
    assert_eq!(titles(&ask(&services, "acme", "What is the parental leave policy?").await), vec!["leave.md"]);
}

#[tokio::test]
async fn the_index_listing_is_cached_within_its_interval() {
    let stack = TestStack::with_env(&[("COACH_INDEX_REVALIDATE_SECS", "3600")]).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "a.md", "# Onboarding\n\nNew hires get a buddy.\n").await;
    ask(&services, "acme", "buddy").await;
    add(&stack, &services, "acme", "leave.md", "# Parental leave\n\nParental leave is sixteen weeks.\n").await;
    assert!(ask(&services, "acme", "parental leave").await["sources"].as_array().unwrap().is_empty());
}

async fn embeddings_from_the_fake_provider_drive_semantic_matches(store: Store) {
    // Vectors by topic: anything about "vacation"/"time off"/"leave" points one way, the rest another.
    let server = MockServer::start().await;
    Mock::given(matchers::path("/embeddings"))
        .respond_with(|request: &wiremock::Request| {
            let body: Value = request.body_json().unwrap();
            let data: Vec<Value> = body["input"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let t = t.as_str().unwrap().to_lowercase();
                    let about_leave = ["vacation", "time off", "leave"].iter().any(|w| t.contains(w));
                    let v = if about_leave { [0.0, 1.0, 0.1] } else { [1.0, 0.0, 0.1] };
                    json!({"index": i, "embedding": v})
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"data": data, "model": "fake-embed"}))
        })
        .mount(&server)
        .await;
    let llm = MockServer::start().await;
    Mock::given(matchers::path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "m", "choices": [{"message": {"role": "assistant", "content": "See [1]."}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}})))
        .mount(&llm)
        .await;
    let (embed_uri, llm_uri) = (server.uri(), llm.uri());
    let stack = TestStack::with_store(
        store,
        &[
            ("COACH_EMBEDDING_PROVIDER", "openai"),
            ("COACH_EMBEDDING_BASE_URL", &embed_uri),
            ("COACH_EMBEDDING_MODEL", "fake-embed"),
            ("COACH_LLM_PROVIDER", "openai"),
            ("COACH_LLM_BASE_URL", &llm_uri),
            ("COACH_RETRIEVAL_TOP_K", "1"),
        ],
    )
    .await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "pto.md", "# Paid leave\n\nEveryone gets 25 days a year.\n").await;
    add(&stack, &services, "acme", "tools.md", "# Tools\n\nWe plan work in the tracker every Monday.\n").await;

    // No word in common with pto.md: only the vectors can find it.
    let reply = ask(&services, "acme", "How much vacation do I get?").await;
    assert_eq!(titles(&reply), vec!["pto.md"]);
    let prompt: Value = llm.received_requests().await.unwrap()[0].body_json().unwrap();
    // The passage opens the user's turn as quoted reference material, not the system text.
    let system = prompt["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("## Reference material") && !system.contains("25 days"), "{system}");
    let turn = prompt["messages"][1]["content"].as_str().unwrap();
    assert!(turn.starts_with("<<<REFERENCE "), "{turn}");
    assert!(turn.contains("[1] pto.md\n> Paid leave\n> Everyone gets 25 days a year.\nREFERENCE "), "{turn}");
    assert!(turn.ends_with(">>>\n\nHow much vacation do I get?"), "{turn}");
    // The stored reply carries the sources too.
    assert_eq!(reply["answer"], "See [1].");
}

async fn the_embedded_model_finds_a_document_with_no_word_in_common(store: Store) {
    // The default provider (`local`): no key, no server.
    let stack = TestStack::with_store(store, &[("COACH_RETRIEVAL_TOP_K", "1")]).await;
    let services = stack.deploy();
    let pto = "# Paid leave\n\nEveryone gets 25 days a year.\n";
    let id = add(&stack, &services, "acme", "pto.md", pto).await;
    add(&stack, &services, "acme", "tools.md", "# Tools\n\nWe plan work in the tracker every Monday.\n").await;
    let acme = coach::model::Scope::Tenant("acme".into());
    let stored = stack.document_index().document(&acme, &id).await.unwrap().unwrap();
    assert_eq!(stored.embedding_model.as_deref(), Some("all-minilm-l6-v2"));
    assert_eq!(stored.dims, 384);

    let reply = ask(&services, "acme", "How much vacation do I get?").await;
    assert_eq!(titles(&reply), vec!["pto.md"]);
}

/// Three documents about planning, found in this order by their words; the reranker
/// `responder` then has its say.
async fn reranked(
    store: Store,
    responder: ResponseTemplate,
    timeout_ms: &str,
) -> (Vec<String>, Vec<Value>, MockServer) {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/v2/rerank"))
        .respond_with(responder)
        .mount(&server)
        .await;
    let base = format!("{}/v2", server.uri());
    let stack = TestStack::with_store(
        store,
        &[
            ("COACH_EMBEDDING_PROVIDER", "none"),
            ("COACH_RERANK_PROVIDER", "cohere"),
            ("COACH_RERANK_BASE_URL", &base),
            ("COACH_RERANK_MODEL", "rerank-test"),
            ("COACH_RERANK_TIMEOUT_MS", timeout_ms),
            ("COACH_RETRIEVAL_TOP_K", "2"),
        ],
    )
    .await;
    let services = stack.deploy();
    for (name, body) in [
        ("a.md", "# A\n\nPlanning planning planning: the weekly planning meeting.\n"),
        ("b.md", "# B\n\nPlanning the quarter, planning the roadmap.\n"),
        ("c.md", "# C\n\nSome planning happens on Fridays.\n"),
    ] {
        add(&stack, &services, "acme", name, body).await;
    }
    let reply = ask(&services, "acme", "planning").await;
    let scores = reply["sources"].as_array().unwrap().iter().map(|s| s["score"].clone()).collect();
    (titles(&reply), scores, server)
}

async fn a_reranker_reorders_the_fused_candidates(store: Store) {
    // The reranker prefers the third candidate, then the first.
    let reply = json!({"results": [{"index": 2, "relevance_score": 0.91}, {"index": 0, "relevance_score": 0.42}]});
    let (titles, scores, server) = reranked(store, ResponseTemplate::new(200).set_body_json(reply), "2000").await;
    assert_eq!(titles, vec!["c.md", "a.md"]);
    let scores: Vec<f64> = scores.iter().map(|s| s.as_f64().unwrap()).collect();
    assert!((scores[0] - 0.91).abs() < 1e-6 && (scores[1] - 0.42).abs() < 1e-6, "the reranker's scores: {scores:?}");
    let sent: Value = server.received_requests().await.unwrap()[0].body_json().unwrap();
    assert_eq!(sent["model"], "rerank-test");
    assert_eq!(sent["query"], "planning");
    assert_eq!(sent["top_n"], 2);
    let documents: Vec<&str> = sent["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(documents.len(), 3, "every fused candidate (up to COACH_RERANK_CANDIDATES)");
    assert!(documents[0].contains("weekly planning meeting"), "{documents:?}");
}

async fn a_failing_slow_or_confused_reranker_leaves_the_fused_order(store: Store) {
    let (fused, _, _) = reranked(store, ResponseTemplate::new(503), "2000").await;
    assert_eq!(fused, vec!["a.md", "b.md"], "the word ranking");
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"results": [{"index": 2, "relevance_score": 0.9}]}))
        .set_delay(std::time::Duration::from_secs(3));
    assert_eq!(reranked(store, slow, "200").await.0, fused);
    let out_of_range = json!({"results": [{"index": 7, "relevance_score": 0.9}]});
    assert_eq!(reranked(store, ResponseTemplate::new(200).set_body_json(out_of_range), "2000").await.0, fused);
    assert_eq!(reranked(store, ResponseTemplate::new(200).set_body_string("<html>"), "2000").await.0, fused);
}

/// One turn of `alice` at acme, by `POST /chat` or `POST /chat/stream`, in `session` if
/// given: the session it went to and its sources' titles.
async fn turn(services: &Arc<Deployment>, message: &str, session: Option<&str>, stream: bool) -> (String, Vec<String>) {
    let token = tokens::for_test("alice", "acme", &["user"]);
    let mut body = json!({"message": message});
    if let Some(id) = session {
        body["session_id"] = json!(id);
    }
    if stream {
        let (status, text, events) = stream_call(services, body, &token).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let event = |name: &str| events.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone()).unwrap();
        let sources = event("sources");
        let titles = sources.as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap().to_owned()).collect();
        (event("done")["session_id"].as_str().unwrap().to_owned(), titles)
    } else {
        let request = events::with("chat-post.json", "POST", "/chat", Some(&body), Some(&token));
        let response = ::chat::handle(&services.chat, request).await;
        let reply: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{reply}");
        (reply["session_id"].as_str().unwrap().to_owned(), titles(&reply))
    }
}

async fn a_follow_up_keeps_its_topic_and_a_new_question_is_not_pulled_back(store: Store) {
    let stack = TestStack::with_store(store, &[("COACH_RETRIEVAL_TOP_K", "2")]).await;
    let services = Arc::new(stack.deploy());
    for (name, body) in &corpus() {
        add_shared(&stack, &services, name, body).await;
    }
    for stream in [false, true] {
        // The README's conversation: the follow-up alone names nothing searchable
        // ("they" and "if" are stop words) or little ("disagree").
        let (session, first) = turn(&services, "How do I give feedback on missed deadlines?", None, stream).await;
        assert_eq!(first[0], "giving-feedback.md", "{first:?}");
        let (alone, _) = turn(&services, "Why?", None, stream).await;
        let (_, why) = turn(&services, "Why?", Some(&session), stream).await;
        assert_eq!(why.first().map(String::as_str), Some("giving-feedback.md"), "stream {stream}: {why:?}");
        assert_ne!(alone, session);
        let (_, disagree) = turn(&services, "And if they disagree?", Some(&session), stream).await;
        assert!(disagree.contains(&"giving-feedback.md".to_owned()), "stream {stream}: {disagree:?}");
        // Without the conversation "Why?" retrieves nothing at all.
        let (_, nothing) = turn(&services, "Why?", None, stream).await;
        assert!(nothing.is_empty(), "{nothing:?}");
        // A question that says enough on its own, in the same session: its own topic first.
        let question = "How many goals should I set per quarter, and how do I track the key results?";
        let (_, switched) = turn(&services, question, Some(&session), stream).await;
        assert_eq!(switched[0], "setting-goals.md", "stream {stream}: {switched:?}");
        let (_, fresh) = turn(&services, question, None, stream).await;
        assert_eq!(switched, fresh, "the earlier topic does not change the ranking");
    }
}

/// An OpenAI chat completion as the API answers it (a dated model name, usage).
fn completion(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
    }))
}

/// With `COACH_QUERY_REWRITE=llm`, a follow-up is rewritten by the model and the rewrite is
/// searched alone; the call is metered; a failed or slow rewrite falls back to the
/// conversation's mixed query; a first message is never rewritten.
#[tokio::test]
async fn the_model_rewrites_a_follow_up_and_a_failed_rewrite_falls_back_to_the_conversation() {
    let server = MockServer::start().await;
    let rewrite = || {
        Mock::given(matchers::path("/chat/completions")).and(matchers::body_string_contains("standalone search query"))
    };
    rewrite().respond_with(completion("\"weekly planning of focus time\"")).with_priority(1).mount(&server).await;
    // A streamed answer as OpenAI streams one: chunks, then the usage, then [DONE].
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": "An answer."}, "finish_reason": null}]});
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
        "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}});
    let streamed = format!("data: {chunk}\n\ndata: {usage}\n\ndata: [DONE]\n\n");
    Mock::given(matchers::path("/chat/completions"))
        .and(matchers::body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(streamed, "text/event-stream"))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(matchers::path("/chat/completions")).respond_with(completion("An answer.")).mount(&server).await;
    let uri = server.uri();
    let vars = [
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", uri.as_str()),
        ("COACH_LLM_MODEL", "gpt-4o-mini"),
        ("COACH_LLM_BACKOFF_MS", "1"),
        ("COACH_QUERY_REWRITE", "llm"),
        ("COACH_QUERY_REWRITE_TIMEOUT_MS", "500"),
        ("COACH_EMBEDDING_PROVIDER", "none"),
        ("COACH_RETRIEVAL_TOP_K", "2"),
    ];
    let stack = TestStack::with_store(Store::S3, &vars).await;
    let services = Arc::new(stack.deploy());
    for (name, body) in &corpus() {
        add_shared(&stack, &services, name, body).await;
    }
    let requests = || async { server.received_requests().await.unwrap_or_default() };
    let (session, first) = turn(&services, "How do I give feedback on missed deadlines?", None, false).await;
    assert_eq!(first[0], "giving-feedback.md");
    assert_eq!(requests().await.len(), 1, "a first message is not rewritten");
    for (stream, message) in [(false, "And if they disagree?"), (true, "And what if they still disagree?")] {
        let (_, followed) = turn(&services, message, Some(&session), stream).await;
        assert_eq!(followed[0], "weekly-planning.md", "the rewrite alone is searched: {followed:?}");
    }
    let sent = requests().await;
    let bodies: Vec<String> =
        sent.iter().map(|r| String::from_utf8_lossy(&r.body).chars().take(150).collect()).collect();
    assert_eq!(sent.len(), 5, "one rewrite and one answer per follow-up: {bodies:#?}");
    let asked: Value = sent[1].body_json().unwrap();
    let content = asked["messages"].to_string();
    assert!(
        content.contains("give feedback on missed deadlines") && content.contains("And if they disagree?"),
        "{content}"
    );
    // Metered like any call: three answers and two rewrites, under the served name.
    let alice = tokens::for_test("alice", "acme", &["user"]);
    let (status, usage) = coach_testkit::flows::chat_call(&services, "GET", "/usage", None, &alice).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let model = &usage["models"].as_array().unwrap().iter().find(|m| m["model"] == "gpt-4o-mini-2024-07-18").unwrap();
    assert_eq!(model["requests"], 5, "{usage}");

    // A failing rewrite, then a slow one: the turn is answered from the mixed query.
    for failure in [ResponseTemplate::new(500), completion("late").set_delay(std::time::Duration::from_secs(3))] {
        server.reset().await;
        rewrite().respond_with(failure).with_priority(1).mount(&server).await;
        Mock::given(matchers::path("/chat/completions")).respond_with(completion("An answer.")).mount(&server).await;
        let (session, _) = turn(&services, "How do I give feedback on missed deadlines?", None, false).await;
        let (_, why) = turn(&services, "Why?", Some(&session), false).await;
        assert_eq!(why.first().map(String::as_str), Some("giving-feedback.md"), "{why:?}");
        assert_eq!(requests().await.len(), 3, "the answer, one attempt at the rewrite, the answer");
    }
}

/// The S3 segments and PostgreSQL rank alike: the same terms, the same BM25, the same fusion
/// by document (by words only, and with the embedded model's vectors), the same scores.
#[tokio::test]
async fn both_stores_rank_the_same_passages_in_the_same_order() {
    let questions = [
        "A teammate keeps missing deadlines, what should I do?",
        "How do I hand over work without micromanaging the outcome?",
        "They disagree with me in a tense conversation about goals",
        "How many goals should I set per quarter?",
        "planning focus time feedback delegation",
        "Why?",
    ];
    for embedding in ["none", "local"] {
        let (mut rankings, mut all_scores) = (Vec::new(), Vec::new());
        for store in [Store::S3, Store::Postgres] {
            let vars = [("COACH_RETRIEVAL_TOP_K", "5"), ("COACH_EMBEDDING_PROVIDER", embedding)];
            let stack = TestStack::with_store(store, &vars).await;
            let services = stack.deploy();
            for (name, body) in &corpus() {
                add_shared(&stack, &services, name, body).await;
            }
            let (mut ranking, mut scores) = (Vec::new(), Vec::new());
            for question in questions {
                let reply = ask(&services, "acme", question).await;
                scores.extend(reply["sources"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()));
                // Each passage, and where it is (heading path, character range).
                let passages: Vec<(String, u64, Value)> = reply["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        let (title, chunk) = (s["title"].as_str().unwrap().to_owned(), s["chunk"].as_u64().unwrap());
                        assert!(s["start"].as_u64().unwrap() < s["end"].as_u64().unwrap(), "{s}");
                        (title, chunk, json!([s["heading"], s["start"], s["end"], s["pages"]]))
                    })
                    .collect();
                ranking.push((question, passages));
            }
            rankings.push(ranking);
            all_scores.push(scores);
        }
        assert!(rankings[0].iter().filter(|(_, p)| !p.is_empty()).count() >= 5, "{:?}", rankings[0]);
        assert_eq!(rankings[0], rankings[1], "embedding {embedding}: S3 first, Postgres second");
        // The same fused scores, shares of the best (0 to 1), to float precision.
        let (s3, pg) = (&all_scores[0], &all_scores[1]);
        assert!(s3.iter().all(|s| *s > 0.0 && *s <= 1.0 + 1e-6), "{s3:?}");
        assert!(s3.iter().zip(pg).all(|(a, b)| (a - b).abs() < 1e-4), "S3 {s3:?}, Postgres {pg:?}");
    }
}

// Each test, over each index store.
over_both_stores!(
    a_follow_up_keeps_its_topic_and_a_new_question_is_not_pulled_back,
    the_relevant_document_ranks_first_lexically,
    tenants_never_retrieve_each_others_documents,
    a_new_upload_is_found_on_the_next_message,
    embeddings_from_the_fake_provider_drive_semantic_matches,
    the_embedded_model_finds_a_document_with_no_word_in_common,
    a_reranker_reorders_the_fused_candidates,
    a_failing_slow_or_confused_reranker_leaves_the_fused_order,
);
