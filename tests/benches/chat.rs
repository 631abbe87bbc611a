//! Chat overhead without the model: the chat handlers in process, against moto, with a fake
//! model and embedding API on loopback that answer at once.
//!
//!     scripts/bench.sh          (or: COACH_MOTO_SERVER=.venv/bin/coach-moto-server \
//!                                cargo bench -p coach-integration-tests --bench chat)
//!
//! `POST /chat` turns run one after another in a session that already has history, for a
//! tenant with 20 documents of 50 chunks (384-d vectors), so each turn authenticates, checks
//! the rate limits, stores the message, loads history, embeds the question, retrieves,
//! builds the prompt, calls the model and stores the reply. Every AWS call goes through a
//! timing HTTP client, so the time spent waiting on the emulator is reported on its own and
//! subtracted: what remains is Coach's own time (the model's loopback round trip included).
//! The same client records when each AWS call started and ended, and the fake model when
//! it was asked, so the bench also prints how many *sequential levels* of AWS calls a turn
//! waits through before the model is called (calls that overlap count as one level; a call
//! that starts after another ended is one level deeper).
//!
//! Streaming: the fake model writes its first token and notes the instant; the time until
//! `POST /chat/stream` yields the matching `token` event is what streaming adds.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use coach::model::{Chunk, Scope, Shard};
use coach_testkit::{
    bench::{report, timed_http_client, EmulatorClock, FakeModel, DIMS, EMBEDDING_MODEL, WORDS},
    events,
    stack::{create_bucket, create_secret, create_table, Deployment, TestStack, TEST_HS256_KEY},
    tokens,
};
use http_body_util::BodyExt;
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
const TURNS: usize = 300;
const STREAM_TURNS: usize = 200;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let upstream = FakeModel::start().await;
    let base = upstream.base_url();
    let vars = [
        ("COACH_LLM_PROVIDER", "openai"),
        ("COACH_LLM_BASE_URL", base.as_str()),
        ("COACH_LLM_MODEL", "bench-model"),
        ("COACH_EMBEDDING_PROVIDER", "openai"),
        ("COACH_EMBEDDING_BASE_URL", base.as_str()),
        ("COACH_EMBEDDING_MODEL", EMBEDDING_MODEL),
        ("COACH_RATE_LIMIT_USER", "1000000"),
        ("COACH_RATE_LIMIT_TENANT", "1000000"),
    ];
    let stack = TestStack::without_resources(&vars).await;
    create_bucket(&stack.aws.s3, &stack.config.bucket).await.expect("bucket");
    create_table(&stack.aws.dynamodb, &stack.config.table).await.expect("table");
    let secret = json!({ "jwt_hs256_secret": TEST_HS256_KEY, "llm_api_key": "sk-bench" });
    create_secret(&stack.aws.secrets, &stack.config.secret_id, &secret).await.expect("secret");
    stack.put(coach::prompt::SYSTEM_PROMPT_KEY, SYSTEM_PROMPT.as_bytes()).await;
    let mut rng = fastrand::Rng::with_seed(9);
    let docs = (0..20).map(|d| shard(&mut rng, d)).collect();
    stack.seed_index(&Scope::Tenant("acme".into()), docs, 32 << 20).await;

    // The handler's clients, with every AWS call timed.
    let emulator = EmulatorClock::default();
    let sdk = stack.sdk.to_builder().http_client(timed_http_client(&emulator)).build();
    let aws = coach::store::AwsClients::from_sdk_config(&sdk, stack.config.clone());
    let services = Arc::new(stack.deploy_unchecked(&aws));
    let token = tokens::for_test("bench-user", "acme", &["user"]);

    // A session with history, and warm caches (secret, system prompt, index), as on a warm
    // Lambda instance.
    // (Numbered apart from the measured turns: the same message sent again to a session
    // within two minutes is a retry, answered from storage without the model.)
    let (_, first) = chat(&services, &token, None, 100_000).await;
    let session = first["session_id"].as_str().expect("session id").to_owned();
    for i in 1..12 {
        chat(&services, &token, Some(&session), 100_000 + i).await;
    }

    let mut total = Vec::with_capacity(TURNS);
    let mut waited = Vec::with_capacity(TURNS);
    let mut calls = 0;
    let mut depths = Vec::with_capacity(TURNS);
    for i in 0..TURNS {
        emulator.reset();
        let started = Instant::now();
        let (status, body) = chat(&services, &token, Some(&session), i).await;
        total.push(started.elapsed());
        let taken = emulator.take();
        waited.push(taken.busy);
        calls = taken.calls;
        assert_eq!(status, StatusCode::OK, "{body}");
        let asked = upstream.model_called.lock().expect("lock").take();
        let asked = asked.unwrap_or_else(|| panic!("turn {i}: the model was not called: {body}"));
        depths.push(depth_before(&taken.spans, asked));
        assert!(!body["sources"].as_array().expect("sources").is_empty(), "retrieval found passages: {body}");
    }
    let own: Vec<Duration> = total.iter().zip(&waited).map(|(t, w)| t.saturating_sub(*w)).collect();
    println!(
        "chat: {TURNS} turns of POST /chat (history {}, 1000 chunks of 384-d)",
        services.chat.chat.limits().history_limit
    );
    report("  total", &total);
    report("  emulator", &waited);
    report("  handler (total - emulator)", &own);
    println!("  AWS calls per turn: {calls}");
    depths.sort_unstable();
    println!(
        "  AWS call levels before the model call: {} (p50), {} (max)",
        depths[depths.len() / 2],
        depths[depths.len() - 1]
    );

    let mut added = Vec::with_capacity(STREAM_TURNS);
    for i in 0..STREAM_TURNS {
        added.push(stream_first_token(&services, &token, &session, &upstream, i).await);
    }
    println!("stream: {STREAM_TURNS} turns of POST /chat/stream");
    report("  model first token -> client first token", &added);

    // The OpenAI-compatible route over the same retrieval and model, with a conversation as
    // long as the session's history: what it adds to (or saves on) a /chat turn, same run.
    let history = services.chat.chat.limits().history_limit as usize;
    let mut openai_own = Vec::with_capacity(TURNS);
    for i in 0..TURNS {
        emulator.reset();
        let started = Instant::now();
        let (status, body) = completion(&services, &token, history, i).await;
        let elapsed = started.elapsed();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body["sources"].as_array().expect("sources").is_empty(), "retrieval found passages: {body}");
        openai_own.push(elapsed.saturating_sub(emulator.take().busy));
    }
    println!("openai: {TURNS} completions of POST /v1/chat/completions ({} messages before the question)", history);
    report("  handler (total - emulator)", &openai_own);
    let p50 = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        sorted[sorted.len() / 2].as_secs_f64() * 1000.0
    };
    println!("  added over POST /chat's handler, p50: {:+.3} ms", p50(&openai_own) - p50(&own));

    // The MCP server's search tool over the same index, and the search it wraps
    // (`Assist::search`: the admission and the retrieval, no model call), alternately in the
    // same run: what the protocol and the pipeline add.
    let caller = coach::auth::Principal {
        user_id: "bench-user".into(),
        tenant: "acme".into(),
        roles: vec![coach::auth::Role::User],
        groups: vec![],
    };
    let (mut mcp_own, mut search_own) = (Vec::with_capacity(TURNS), Vec::with_capacity(TURNS));
    for i in 0..TURNS {
        emulator.reset();
        let started = Instant::now();
        let query = format!("How do I give useful feedback to my team about goals? ({i})");
        let deadline = coach::deadline::Deadline::after(Duration::from_secs(30));
        let found = services.chat.assist.search(&caller, coach::model::Surface::Mcp, &query, None, deadline).await;
        let elapsed = started.elapsed();
        assert!(found.is_ok_and(|p| !p.is_empty()), "the search found passages");
        search_own.push(elapsed.saturating_sub(emulator.take().busy));
        emulator.reset();
        let started = Instant::now();
        let (status, body) = mcp_search(&services, &token, i).await;
        let elapsed = started.elapsed();
        assert_eq!(status, StatusCode::OK, "{body}");
        let passages = body["result"]["structuredContent"]["passages"].as_array();
        assert!(passages.is_some_and(|p| !p.is_empty()), "retrieval found passages: {body}");
        mcp_own.push(elapsed.saturating_sub(emulator.take().busy));
    }
    println!("mcp: {TURNS} calls of tools/call search_documents (POST /mcp, protocol 2026-07-28)");
    report("  handler (total - emulator)", &mcp_own);
    report("  the search it wraps, Assist::search (total - emulator)", &search_own);
    println!("  added over the search it wraps, p50: {:+.3} ms", p50(&mcp_own) - p50(&search_own));

    // The same one-shot question (`POST /qa`, not kept) through the OpenAI provider and
    // through the Bedrock one (the AWS SDK: SigV4 signing, its retry and timeout layers),
    // each against the same loopback stand-in, alternately in the same run.
    let bedrock_vars = [
        ("COACH_LLM_PROVIDER", "bedrock"),
        ("COACH_LLM_MODEL", "amazon.nova-lite-v1:0"),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", base.as_str()),
    ];
    let bedrock_stack = stack.with_more_env(&bedrock_vars);
    let bedrock = bedrock_stack.deploy_unchecked(&aws.with_config(bedrock_stack.config.clone()));
    let (mut openai_qa, mut bedrock_qa) = (Vec::with_capacity(TURNS), Vec::with_capacity(TURNS));
    for i in 0..TURNS {
        for (deployment, samples) in [(&*services, &mut openai_qa), (&bedrock, &mut bedrock_qa)] {
            emulator.reset();
            let started = Instant::now();
            let (status, body) = qa(deployment, &token, i).await;
            let elapsed = started.elapsed();
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["usage"]["output_tokens"], 60, "the model answered: {body}");
            samples.push(elapsed.saturating_sub(emulator.take().busy));
        }
    }
    println!("bedrock: {TURNS} questions of POST /qa each, OpenAI provider and Bedrock provider alternately");
    report("  openai provider, handler (total - emulator)", &openai_qa);
    report("  bedrock provider, handler (total - emulator)", &bedrock_qa);
    println!("  added by the Bedrock provider over the OpenAI one, p50: {:+.3} ms", p50(&bedrock_qa) - p50(&openai_qa));
}

/// `POST /qa`, not answered from or kept in the answer cache.
async fn qa(services: &Deployment, token: &str, i: usize) -> (StatusCode, Value) {
    let body = json!({"question": format!("How do I give useful feedback to my team about goals? ({i})")});
    let mut request = events::with("chat-post.json", "POST", "/qa", Some(&body), Some(token));
    request.headers_mut().insert("cache-control", lambda_http::http::HeaderValue::from_static("no-store"));
    let response = chat::handle(&services.chat, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// `tools/call search_documents` as a client of the current protocol revision sends it.
async fn mcp_search(services: &Deployment, token: &str, i: usize) -> (StatusCode, Value) {
    let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "search_documents",
        "arguments": {"query": format!("How do I give useful feedback to my team about goals? ({i})")},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    }});
    let mut request = events::with("chat-post.json", "POST", "/mcp", Some(&body), Some(token));
    for (name, value) in
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "search_documents")]
    {
        request.headers_mut().insert(name, lambda_http::http::HeaderValue::from_static(value));
    }
    let response = chat::handle(&services.chat, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// `POST /v1/chat/completions` with `history` earlier messages, alternating user and
/// assistant, before the question.
async fn completion(services: &Deployment, token: &str, history: usize, i: usize) -> (StatusCode, Value) {
    let mut messages: Vec<Value> = (0..history)
        .map(|m| {
            let role = if m % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("Earlier message {m} about goals and feedback.")})
        })
        .collect();
    messages.push(
        json!({"role": "user", "content": format!("How do I give useful feedback to my team about goals? ({i})")}),
    );
    let body = json!({"model": "coach", "messages": messages});
    let request = events::with("chat-post.json", "POST", "/v1/chat/completions", Some(&body), Some(token));
    let response = chat::handle(&services.chat, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

async fn chat(services: &Deployment, token: &str, session: Option<&str>, i: usize) -> (StatusCode, Value) {
    let mut body = json!({ "message": format!("How do I give useful feedback to my team about goals? ({i})") });
    if let Some(id) = session {
        body["session_id"] = id.into();
    }
    let response =
        chat::handle(&services.chat, events::with("chat-post.json", "POST", "/chat", Some(&body), Some(token))).await;
    let status = response.status();
    (status, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// Time from the fake model writing its first token to the handler's body yielding it.
async fn stream_first_token(
    services: &Arc<Deployment>,
    token: &str,
    session: &str,
    upstream: &FakeModel,
    i: usize,
) -> Duration {
    let body = json!({ "message": format!("And how do I follow up? ({i})"), "session_id": session });
    let request = events::with("chat-stream.json", "POST", "/chat/stream", Some(&body), Some(token));
    let response = chat::stream::handle(services.stream.clone(), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("stream frame");
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
            if first.is_none() && seen.contains("event: token") {
                first = Some(Instant::now());
            }
        }
    }
    assert!(seen.contains("event: done"), "stream finished: {seen}");
    let wrote = upstream.first_token.lock().expect("lock").take().expect("the model streamed");
    first.expect("a token event").saturating_duration_since(wrote)
}

/// Sequential levels of the AWS calls that ended before `asked`: a call is one level deeper
/// than the deepest call that had ended when it started.
fn depth_before(spans: &[(Instant, Instant)], asked: Instant) -> usize {
    let mut before: Vec<(Instant, Instant)> = spans.iter().copied().filter(|(_, end)| *end <= asked).collect();
    before.sort();
    let mut levels: Vec<usize> = Vec::with_capacity(before.len());
    for (i, (start, _)) in before.iter().enumerate() {
        let deepest = (0..i).filter(|&j| before[j].1 <= *start).map(|j| levels[j]).max().unwrap_or(0);
        levels.push(deepest + 1);
    }
    levels.into_iter().max().unwrap_or(0)
}

// ------------------------------------------------------------------ data

const SYSTEM_PROMPT: &str = "You are Coach, a practical workplace coach. Answer from the documents \
when they help, cite them, and ask one clarifying question when the request is vague.";

fn shard(rng: &mut fastrand::Rng, d: usize) -> Shard {
    // The first 20 words: the workload the earlier figures were measured on.
    let words = &WORDS[..20];
    let chunks: Vec<Chunk> = (0..50)
        .map(|c| {
            let text = (0..150).map(|_| words[rng.usize(..words.len())]).collect::<Vec<_>>().join(" ");
            Chunk { heading: Some(format!("Section {c}")), text, span: None }
        })
        .collect();
    let vectors = (0..chunks.len() * DIMS).map(|_| rng.f32() * 2.0 - 1.0).collect();
    Shard {
        document_id: format!("doc-{d:02}"),
        title: format!("guide-{d:02}.md"),
        chunks,
        embedding_model: Some(EMBEDDING_MODEL.into()),
        dims: DIMS as u32,
        vectors,
    }
}
