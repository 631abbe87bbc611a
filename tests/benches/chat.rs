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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
};
use coach::model::{Chunk, Shard};
use coach_testkit::{
    events,
    stack::{create_bucket, create_secret, create_table, Deployment, TestStack, TEST_HS256_KEY},
    tokens,
};
use http_body_util::BodyExt;
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const DIMS: usize = 384;
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
        ("COACH_EMBEDDING_MODEL", "bench-384"),
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
    for d in 0..20 {
        stack.put(&format!("index/acme/doc-{d:02}"), &shard(&mut rng, d).encode()).await;
    }

    // The handler's clients, with every AWS call timed.
    let emulator = EmulatorClock::default();
    // The same client the SDK builds by default (hyper, rustls with aws-lc).
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let sdk = stack.sdk.to_builder().http_client(emulator.wrap(inner)).build();
    let aws = coach::store::AwsClients::from_sdk_config(&sdk, stack.config.clone());
    let services = Arc::new(stack.deploy_with(&aws));
    let token = tokens::for_test("bench-user", "acme", &["user"]);

    // A session with history, and warm caches (secret, system prompt, index), as on a warm
    // Lambda instance.
    let (_, first) = chat(&services, &token, None, 0).await;
    let session = first["session_id"].as_str().expect("session id").to_owned();
    for i in 1..12 {
        chat(&services, &token, Some(&session), i).await;
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
        let (time, count, spans) = emulator.take();
        waited.push(time);
        calls = count;
        let asked = upstream.model_called.lock().expect("lock").take().expect("the model was called");
        depths.push(depth_before(&spans, asked));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body["sources"].as_array().expect("sources").is_empty(), "retrieval found passages: {body}");
    }
    let own: Vec<Duration> = total.iter().zip(&waited).map(|(t, w)| t.saturating_sub(*w)).collect();
    println!(
        "chat: {TURNS} turns of POST /chat (history {}, 1000 chunks of 384-d)",
        services.chat.chat.limits.history_limit
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

fn report(label: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{label:<44} p50 {:>7.3} ms   p99 {:>7.3} ms", ms(at(0.50)), ms(at(0.99)));
}

// ------------------------------------------------------------------ data

const SYSTEM_PROMPT: &str = "You are Coach, a practical workplace coach. Answer from the documents \
when they help, cite them, and ask one clarifying question when the request is vague.";

fn shard(rng: &mut fastrand::Rng, d: usize) -> Shard {
    const WORDS: &[&str] = &[
        "feedback",
        "goals",
        "team",
        "review",
        "meeting",
        "priorities",
        "delegate",
        "growth",
        "career",
        "conflict",
        "deadline",
        "planning",
        "weekly",
        "one-on-one",
        "praise",
        "specific",
        "behaviour",
        "impact",
        "listen",
        "ask",
    ];
    let chunks: Vec<Chunk> = (0..50)
        .map(|c| {
            let text = (0..150).map(|_| WORDS[rng.usize(..WORDS.len())]).collect::<Vec<_>>().join(" ");
            Chunk { heading: Some(format!("Section {c}")), text }
        })
        .collect();
    let vectors = (0..chunks.len() * DIMS).map(|_| rng.f32() * 2.0 - 1.0).collect();
    Shard {
        document_id: format!("doc-{d:02}"),
        title: format!("guide-{d:02}.md"),
        chunks,
        embedding_model: Some("bench-384".into()),
        dims: DIMS as u32,
        vectors,
    }
}

// ------------------------------------------------------------------ emulator clock

/// Wall time with at least one AWS call in flight (overlapping calls count once), and the
/// number of calls, since the last reset.
#[derive(Clone, Default)]
struct EmulatorClock(Arc<Mutex<ClockState>>);

#[derive(Default)]
struct ClockState {
    in_flight: usize,
    since: Option<Instant>,
    busy: Duration,
    calls: usize,
    /// When each call started and ended.
    spans: Vec<(Instant, Instant)>,
}

impl std::fmt::Debug for EmulatorClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorClock")
    }
}

impl EmulatorClock {
    fn reset(&self) {
        let mut state = self.0.lock().expect("lock");
        state.busy = Duration::ZERO;
        state.calls = 0;
        state.spans.clear();
        state.since = (state.in_flight > 0).then(Instant::now);
    }

    fn take(&self) -> (Duration, usize, Vec<(Instant, Instant)>) {
        let mut state = self.0.lock().expect("lock");
        let busy = state.busy + state.since.map_or(Duration::ZERO, |s| s.elapsed());
        (busy, state.calls, std::mem::take(&mut state.spans))
    }

    fn start(&self) -> Instant {
        let mut state = self.0.lock().expect("lock");
        let now = Instant::now();
        state.calls += 1;
        state.in_flight += 1;
        if state.in_flight == 1 {
            state.since = Some(now);
        }
        now
    }

    fn end(&self, started: Instant) {
        let mut state = self.0.lock().expect("lock");
        state.spans.push((started, Instant::now()));
        state.in_flight -= 1;
        if state.in_flight == 0 {
            if let Some(since) = state.since.take() {
                state.busy += since.elapsed();
            }
        }
    }

    /// `inner` with every request timed by this clock.
    fn wrap(&self, inner: SharedHttpClient) -> SharedHttpClient {
        let clock = self.clone();
        http_client_fn(move |settings, components| {
            SharedHttpConnector::new(Timed { inner: inner.http_connector(settings, components), clock: clock.clone() })
        })
    }
}

#[derive(Debug)]
struct Timed {
    inner: SharedHttpConnector,
    clock: EmulatorClock,
}

impl HttpConnector for Timed {
    fn call(&self, request: aws_smithy_runtime_api::client::orchestrator::HttpRequest) -> HttpConnectorFuture {
        let clock = self.clock.clone();
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let started = clock.start();
            let response = call.await;
            clock.end(started);
            response
        })
    }
}

// ------------------------------------------------------------------ fake model

/// A minimal HTTP/1.1 server speaking the OpenAI chat completion and embedding formats,
/// answering at once (keep-alive, so the pooled client reuses its connection).
struct FakeModel {
    port: u16,
    /// When the last streamed reply's first token was written.
    first_token: Arc<Mutex<Option<Instant>>>,
    /// When the last whole reply was asked for.
    model_called: Arc<Mutex<Option<Instant>>>,
}

impl FakeModel {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("address").port();
        let first_token = Arc::new(Mutex::new(None));
        let model_called = Arc::new(Mutex::new(None));
        let (stamp, called) = (first_token.clone(), model_called.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, stamp.clone(), called.clone()));
            }
        });
        Self { port, first_token, model_called }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

async fn serve(mut socket: TcpStream, first_token: Arc<Mutex<Option<Instant>>>, called: Arc<Mutex<Option<Instant>>>) {
    socket.set_nodelay(true).ok();
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut socket, &mut buffer).await else { return };
        let arrived = Instant::now();
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let written = if path.ends_with("/embeddings") {
            let inputs = request["input"].as_array().map_or(1, Vec::len);
            let vector: Vec<f32> = (0..DIMS).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let data: Vec<Value> =
                (0..inputs).map(|i| json!({"object": "embedding", "index": i, "embedding": vector})).collect();
            respond_json(&mut socket, &json!({"object": "list", "data": data, "model": "bench-384"})).await
        } else if request["stream"] == true {
            respond_stream(&mut socket, &first_token).await
        } else {
            *called.lock().expect("lock") = Some(arrived);
            let reply = json!({
                "id": "chatcmpl-bench", "object": "chat.completion", "model": "bench-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 60, "total_tokens": 960}
            });
            respond_json(&mut socket, &reply).await
        };
        if written.is_err() {
            return;
        }
    }
}

const REPLY: &str = "Start with one specific behaviour you saw, say what its impact was, and ask \
what they think. Agree on one next step and write it down [1].";

/// Reads one request (head and `content-length` body); `None` when the client hung up.
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                read_more(socket, buffer).await?;
            }
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            return Some((head, body));
        }
        read_more(socket, buffer).await?;
    }
}

async fn read_more(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn respond_json(socket: &mut TcpStream, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    socket.write_all(format!("{head}{body}").as_bytes()).await
}

/// A streamed reply: headers and the first token, the instant noted, then the rest.
async fn respond_stream(socket: &mut TcpStream, first_token: &Mutex<Option<Instant>>) -> std::io::Result<()> {
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    let delta = |text: &str| {
        let event = json!({"id": "c", "object": "chat.completion.chunk", "model": "bench-model",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        chunk(&format!("data: {event}\n\n"))
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    socket.write_all(format!("{head}{}", delta("Start")).as_bytes()).await?;
    *first_token.lock().expect("lock") = Some(Instant::now());
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "bench-model", "choices": [],
        "usage": {"prompt_tokens": 900, "completion_tokens": 60, "total_tokens": 960}});
    let rest = format!(
        "{}{}{}{}0\r\n\r\n",
        delta(" with one specific behaviour."),
        delta(" Then ask."),
        chunk(&format!("data: {usage}\n\n")),
        chunk("data: [DONE]\n\n")
    );
    socket.write_all(rest.as_bytes()).await
}
