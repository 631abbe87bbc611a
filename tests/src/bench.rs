//! What the benchmarks share: a clock on every AWS call (time waited on the emulator, call
//! count, spans, request paths) and a fake model/embedding server on loopback that answers
//! at once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Dimensions of the fake embeddings.
pub const DIMS: usize = 384;
/// The fake embedding model's name.
pub const EMBEDDING_MODEL: &str = "bench-384";

/// Words the benchmarks' synthetic documents are made of.
pub const WORDS: &[&str] = &[
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
    "coaching",
    "manager",
    "project",
    "budget",
    "hiring",
    "onboarding",
    "roadmap",
    "customer",
    "quality",
    "release",
];

/// An SDK HTTP client like the one the SDK builds by default (hyper, rustls with aws-lc),
/// with every request to the emulator timed by `clock` (a Bedrock model call is the model's,
/// as an HTTP provider's is).
pub fn timed_http_client(clock: &EmulatorClock) -> SharedHttpClient {
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    clock.wrap(inner)
}

/// Percentiles of `samples`, printed on one line.
pub fn report(label: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{label:<44} p50 {:>7.3} ms   p99 {:>7.3} ms", ms(at(0.50)), ms(at(0.99)));
}

/// Wall time with at least one AWS call in flight (overlapping calls count once), and the
/// number of calls, since the last reset.
#[derive(Clone, Default)]
pub struct EmulatorClock(Arc<Mutex<ClockState>>);

#[derive(Default)]
struct ClockState {
    in_flight: usize,
    since: Option<Instant>,
    busy: Duration,
    calls: usize,
    /// When each call started and ended.
    spans: Vec<(Instant, Instant)>,
    /// Method and path of each call.
    paths: Vec<String>,
}

/// What the clock saw since its last reset.
pub struct Taken {
    /// Wall time with at least one call in flight.
    pub busy: Duration,
    pub calls: usize,
    pub spans: Vec<(Instant, Instant)>,
    /// `METHOD /path` of each call, in the order they started.
    pub paths: Vec<String>,
}

impl std::fmt::Debug for EmulatorClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorClock")
    }
}

impl EmulatorClock {
    pub fn reset(&self) {
        let mut state = self.0.lock().expect("lock");
        state.busy = Duration::ZERO;
        state.calls = 0;
        state.spans.clear();
        state.paths.clear();
        state.since = (state.in_flight > 0).then(Instant::now);
    }

    pub fn take(&self) -> Taken {
        let mut state = self.0.lock().expect("lock");
        let busy = state.busy + state.since.map_or(Duration::ZERO, |s| s.elapsed());
        Taken {
            busy,
            calls: state.calls,
            spans: std::mem::take(&mut state.spans),
            paths: std::mem::take(&mut state.paths),
        }
    }

    fn start(&self, path: String) -> Instant {
        let mut state = self.0.lock().expect("lock");
        let now = Instant::now();
        state.calls += 1;
        state.paths.push(path);
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
    pub fn wrap(&self, inner: SharedHttpClient) -> SharedHttpClient {
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
        let path = format!("{} {}", request.method(), request.uri());
        // A Bedrock model call goes to the model's stand-in, not to the emulator: the
        // handler's time includes it, as it includes the HTTP providers' calls.
        if request.uri().contains("/model/") {
            return self.inner.call(request);
        }
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let started = clock.start(path);
            let response = call.await;
            clock.end(started);
            response
        })
    }
}

/// A minimal HTTP/1.1 server speaking the OpenAI chat completion and embedding formats,
/// answering at once (keep-alive, so the pooled client reuses its connection).
pub struct FakeModel {
    port: u16,
    /// When the last streamed reply's first token was written.
    pub first_token: Arc<Mutex<Option<Instant>>>,
    /// When the last whole reply was asked for.
    pub model_called: Arc<Mutex<Option<Instant>>>,
}

impl FakeModel {
    pub async fn start() -> Self {
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

    pub fn base_url(&self) -> String {
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
            respond_json(&mut socket, &json!({"object": "list", "data": data, "model": EMBEDDING_MODEL})).await
        } else if path.starts_with("/model/") && path.ends_with("/converse") {
            // Amazon Bedrock's Converse, the same reply and usage.
            *called.lock().expect("lock") = Some(arrived);
            let reply = json!({
                "output": {"message": {"role": "assistant", "content": [{"text": REPLY}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 900, "outputTokens": 60, "totalTokens": 960},
                "metrics": {"latencyMs": 1}
            });
            respond_json(&mut socket, &reply).await
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
