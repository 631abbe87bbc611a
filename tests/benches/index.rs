//! The tenant index at scale, on the local stack (moto on loopback), release build:
//!
//!     scripts/bench.sh          (or: COACH_MOTO_SERVER=.venv/bin/coach-moto-server \
//!                                cargo bench -p coach-integration-tests --bench index)
//!
//! 1. **Ingest**: 1,000 documents uploaded at once (records and objects first), then every
//!    ingest event handled concurrently ([`INGEST_CONCURRENCY`] at a time, as concurrent
//!    Lambda invocations would); then 400 more, for a tenant of 1,400 small documents
//!    (about 1.2 KB of text each, like the case measured in the issue; embedded by a fake
//!    embedding API on loopback, 384-d). Checked: every record
//!    `ready`, and the index a cold chat instance loads holds each document exactly once.
//! 2. **Cold first chat** for that tenant: a fresh instance's first `POST /chat` (auth, rate
//!    limits, session, prompt, index load, retrieval, `none` model, message stored), with
//!    the S3 requests of the index load counted from the SDK's HTTP client.
//! 3. The same for a tenant of 10,000 documents / 100,000 chunks (about 800 characters each)
//!    with 384-d vectors, its index written the way compaction leaves it.
//! 4. **Warm** `POST /chat` p50 for both tenants on the instance the cold runs left.
//! 5. **Memory** of a loaded index, exactly: live heap bytes (a counting global allocator)
//!    held by a fresh instance after loading the 100,000-chunk tenant, with and without
//!    vectors.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeSet,
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use coach::{
    auth::Principal,
    config::Env,
    documents::UploadRequest,
    index::{IndexConfig, IndexReader},
    ingest::{ObjectEvent, Outcome},
    model::{Chunk, Scope, Shard},
    store::AwsClients,
};
use coach_testkit::stack::ingest_deadline;
use coach_testkit::{
    bench::{report, timed_http_client, EmulatorClock, FakeModel, DIMS, EMBEDDING_MODEL, WORDS},
    events,
    stack::{create_bucket, create_secret, create_table, Deployment, TestStack, TEST_HS256_KEY},
    tokens,
};
use futures_util::StreamExt;
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

/// Ingest events handled at once.
const INGEST_CONCURRENCY: usize = 32;
const COLD_RUNS: usize = 5;
const WARM_TURNS: usize = 100;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let model = FakeModel::start().await;
    let base = model.base_url();
    let vars = [
        ("COACH_RATE_LIMIT_USER", "0"),
        ("COACH_RATE_LIMIT_TENANT", "0"),
        ("COACH_EMBEDDING_PROVIDER", "openai"),
        ("COACH_EMBEDDING_BASE_URL", base.as_str()),
        ("COACH_EMBEDDING_MODEL", EMBEDDING_MODEL),
        ("COACH_INDEX_CACHE_MB", "2048"),
    ];
    let stack = TestStack::without_resources(&vars).await;
    create_bucket(&stack.aws.s3, &stack.config.bucket).await.expect("bucket");
    create_table(&stack.aws.dynamodb, &stack.config.table).await.expect("table");
    let secret = json!({ "jwt_hs256_secret": TEST_HS256_KEY, "llm_api_key": "sk-bench" });
    create_secret(&stack.aws.secrets, &stack.config.secret_id, &secret).await.expect("secret");
    let services = stack.deploy_unchecked(&stack.aws);
    let mut rng = fastrand::Rng::with_seed(15);

    // 1. Ingest.
    let mut ids = ingest_at_once(&stack, &services, &mut rng, 0, 1000).await;
    verify(&stack, &services, "acme", &ids).await;
    ids.extend(ingest_at_once(&stack, &services, &mut rng, 1000, 400).await);
    verify(&stack, &services, "acme", &ids).await;

    // 2. and 3. Cold first chats. Chat reads no document records, but moto copies the whole
    // table for every TransactWriteItems (the message write), so on the table that holds
    // 1,400 records a turn waits hundreds of ms on the emulator alone. The chat instances
    // get a table of their own (same bucket, same index) so the figures are Coach's.
    let clock = EmulatorClock::default();
    let sdk = stack.sdk.to_builder().http_client(timed_http_client(&clock)).build();
    let mut config = stack.config.clone();
    config.table = format!("{}-chat", config.table);
    create_table(&stack.aws.dynamodb, &config.table).await.expect("chat table");
    let aws = AwsClients::from_sdk_config(&sdk, config);
    let small = cold_runs(&stack, &aws, &clock, "acme", "How do I give feedback on goals? zq77x", "1,400 docs").await;

    let big = Scope::Tenant("big".into());
    let started = Instant::now();
    let docs: Vec<Shard> = (0..10_000).map(|d| document(&mut rng, d, 10, true)).collect();
    let manifest = stack.seed_index(&big, docs, 32 << 20).await;
    let bytes: u64 = manifest.segments.iter().map(|s| s.bytes).sum();
    let memory: u64 = manifest.segments.iter().map(|s| s.memory).sum();
    println!(
        "seeded tenant big: 10,000 docs, 100,000 chunks, 384-d vectors: {} segments, {:.1} MiB stored, \
         {:.1} MiB estimated in memory ({:.1} s)",
        manifest.segments.len(),
        mib(bytes),
        mib(memory),
        started.elapsed().as_secs_f64()
    );
    let large = cold_runs(&stack, &aws, &clock, "big", "How do I give feedback on goals? zq77x", "10,000 docs").await;

    // 4. Warm.
    for (services, tenant) in [(&small, "acme"), (&large, "big")] {
        let (mut total, mut own) = (Vec::with_capacity(WARM_TURNS), Vec::with_capacity(WARM_TURNS));
        for i in 0..WARM_TURNS {
            clock.reset();
            let started = Instant::now();
            let reply = chat(services, tenant, &format!("How do I plan the weekly review? ({i})")).await;
            total.push(started.elapsed());
            own.push(started.elapsed().saturating_sub(clock.take().busy));
            assert!(!reply["sources"].as_array().expect("sources").is_empty());
        }
        report(&format!("warm POST /chat, tenant {tenant}: total"), &total);
        report("  handler (total - emulator)", &own);
    }
    drop((small, large));

    // 5. Memory of a loaded index.
    let text_only = Scope::Tenant("big-text".into());
    let docs: Vec<Shard> = (0..10_000).map(|d| document(&mut rng, d, 10, false)).collect();
    stack.seed_index(&text_only, docs, 32 << 20).await;
    for tenant in ["big", "big-text"] {
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let reader = reader(&aws);
        let parts = reader.parts_for(tenant, coach::model::Clearance::All).await.expect("index loads");
        let held = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
        let chunks: usize = parts.iter().map(|p| p.segment.segment.chunks.len()).sum();
        let text: usize = parts.iter().flat_map(|p| &p.segment.segment.chunks).map(|c| c.text.len()).sum();
        println!(
            "memory, tenant {tenant} ({chunks} chunks of {} bytes of text on average{}): {:.1} MiB held by the \
             instance ({:.0} bytes a chunk); the cache's estimate {:.1} MiB",
            text / chunks,
            if tenant == "big" { ", 384-d vectors" } else { ", no vectors" },
            mib(held as u64),
            held as f64 / chunks as f64,
            mib(reader.cached_bytes())
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A document of `chunks` chunks of about 800 characters (or one of about 1.2 KB), with a
/// word no other document has (`zq{d}x`) and, optionally, 384-d vectors.
fn document(rng: &mut fastrand::Rng, d: usize, chunks: usize, vectors: bool) -> Shard {
    let words = if chunks == 1 { 150 } else { 100 };
    let chunks: Vec<Chunk> = (0..chunks)
        .map(|c| {
            let mut text = (0..words).map(|_| WORDS[rng.usize(..WORDS.len())]).collect::<Vec<_>>().join(" ");
            if c == 0 {
                text = format!("zq{d}x {text}");
            }
            Chunk { heading: Some(format!("Guide {d} > Section {c}")), text, span: None }
        })
        .collect();
    let vectors = if vectors { (0..chunks.len() * DIMS).map(|_| rng.f32() * 2.0 - 1.0).collect() } else { Vec::new() };
    Shard {
        document_id: format!("01BENCH{d:019}"),
        title: format!("guide-{d}.md"),
        embedding_model: (!vectors.is_empty()).then(|| EMBEDDING_MODEL.to_owned()),
        dims: if vectors.is_empty() { 0 } else { DIMS as u32 },
        chunks,
        vectors,
    }
}

/// Uploads `count` small markdown documents at once, then handles every ingest event
/// concurrently; returns their ids.
async fn ingest_at_once(
    stack: &TestStack,
    services: &Deployment,
    rng: &mut fastrand::Rng,
    first: usize,
    count: usize,
) -> Vec<String> {
    let who = Principal { user_id: "erin".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    let bodies: Vec<String> = (first..first + count)
        .map(|d| {
            let doc = document(rng, d, 1, false);
            format!("# Guide {d}\n\n{}\n", doc.chunks[0].text)
        })
        .collect();
    let uploads = bodies.iter().enumerate().map(|(i, body)| {
        let who = &who;
        async move {
            let name = format!("guide-{}.md", first + i);
            let request = UploadRequest {
                filename: name.clone(),
                content_type: "text/markdown".into(),
                size_bytes: body.len() as u64,
                access: None,
            };
            let id = services.uploads.documents.create_upload(who, &request).await.expect("upload").document_id;
            let key = format!("uploads/acme/{id}/{name}");
            stack.put(&key, body.as_bytes()).await;
            (id, key)
        }
    });
    let uploaded: Vec<(String, String)> =
        futures_util::stream::iter(uploads).buffered(INGEST_CONCURRENCY).collect().await;

    let started = Instant::now();
    let events: Vec<ObjectEvent> =
        uploaded.iter().map(|(_, key)| ObjectEvent { created: true, key: key.clone() }).collect();
    let ingests = events.iter().map(|event| services.ingest.ingestor.handle(event, ingest_deadline()));
    let outcomes: Vec<_> = futures_util::stream::iter(ingests).buffer_unordered(INGEST_CONCURRENCY).collect().await;
    let elapsed = started.elapsed();
    for outcome in outcomes {
        assert!(matches!(outcome, Ok(Outcome::Indexed { .. })), "{outcome:?}");
    }
    println!(
        "ingest: {count} documents uploaded at once, {INGEST_CONCURRENCY} ingests at a time: {:.1} s ({:.0} documents/s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    uploaded.into_iter().map(|(id, _)| id).collect()
}

/// Every document `ready`, and each exactly once in the index as stored and as a cold
/// instance loads it.
async fn verify(stack: &TestStack, services: &Deployment, tenant: &str, ids: &[String]) {
    let who = Principal { user_id: "erin".into(), tenant: tenant.into(), roles: vec![], groups: vec![] };
    for id in ids {
        let doc = services.uploads.documents.get(&who, id).await.expect("record");
        assert_eq!(doc.status.as_str(), "ready", "{id}");
    }
    let scope = Scope::Tenant(tenant.into());
    let stored = stack.indexed(&scope).await;
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(stored.keys().map(String::as_str).collect::<BTreeSet<_>>(), expected);
    let parts = reader(&stack.aws).parts_for(tenant, coach::model::Clearance::All).await.expect("index loads");
    let mut loaded = Vec::new();
    for part in &parts {
        let docs = part.segment.segment.docs.iter().zip(part.live.iter()).filter(|(_, live)| **live);
        loaded.extend(docs.map(|(d, _)| d.document_id.clone()));
    }
    let distinct: BTreeSet<&str> = loaded.iter().map(String::as_str).collect();
    assert_eq!(loaded.len(), distinct.len(), "no document loaded twice");
    assert_eq!(distinct, expected, "no document lost");
    let manifest = stack.manifest(&scope).await.expect("manifest");
    println!(
        "  checked: {} records ready; {} distinct documents in the loaded index, none twice; {} segments",
        ids.len(),
        distinct.len(),
        manifest.segments.len()
    );
}

/// A chat instance's index reader, fresh (as a cold start builds it), over `aws`'s bucket.
fn reader(aws: &AwsClients) -> IndexReader {
    IndexReader::new(Arc::new(aws.bucket()), &IndexConfig::from_env(&Env::process()).expect("index settings"))
}

async fn chat(services: &Deployment, tenant: &str, message: &str) -> Value {
    let token = tokens::for_test("bench-user", tenant, &["user"]);
    let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({ "message": message })), Some(&token));
    let response = chat::handle(&services.chat, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(response.body().as_ref()).expect("json")
}

/// Fresh instances' first `POST /chat` for `tenant`: time, and S3 requests of the index
/// load. Returns the last instance (warm).
async fn cold_runs(
    stack: &TestStack,
    aws: &AwsClients,
    clock: &EmulatorClock,
    tenant: &str,
    message: &str,
    label: &str,
) -> Deployment {
    let (mut times, mut waited, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    let mut index_requests = 0;
    for _ in 0..COLD_RUNS {
        // The index load alone, on a fresh instance: manifests, then segments.
        let reader = reader(aws);
        let started = Instant::now();
        let parts = reader.parts_for(tenant, coach::model::Clearance::All).await.expect("index loads");
        loads.push(started.elapsed());
        assert!(!parts.is_empty());
        // The whole first POST /chat of another fresh instance.
        let services = stack.deploy_unchecked(aws);
        clock.reset();
        let started = Instant::now();
        let reply = chat(&services, tenant, message).await;
        times.push(started.elapsed());
        let taken = clock.take();
        waited.push(taken.busy);
        index_requests = taken.paths.iter().filter(|p| p.contains("/index/")).count();
        assert!(!reply["sources"].as_array().expect("sources").is_empty(), "retrieval found passages");
        last = Some(services);
    }
    report(&format!("cold first POST /chat, {label}"), &times);
    report("  of which waiting on the emulator", &waited);
    report(&format!("cold index load alone, {label}"), &loads);
    println!("  S3 requests to load the index (manifests + segments): {index_requests}");
    let worst = times.iter().max().copied().unwrap_or(Duration::ZERO);
    println!("  slowest first POST /chat of {COLD_RUNS}: {:.0} ms", worst.as_secs_f64() * 1000.0);
    last.expect("at least one run")
}
