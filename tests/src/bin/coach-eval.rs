//! Retrieval quality end to end (`make eval`): a test collection in the CISI format is
//! uploaded as one tenant's documents through the API (`POST /uploads`, the presigned PUT,
//! the ingest event), then every judged query is asked through `POST /chat` with the `none`
//! language model, and the ranked `sources` of each answer are written out for scoring
//! (`scripts/eval.py` scores them beside a plain BM25 library in the same run).
//!
//!     coach-eval COLLECTION_DIR OUT.json [NAME:VAR=VALUE,VAR=VALUE ...]
//!
//! The documents are ingested once, with the embedded model (`local`); the queries are then
//! asked by a chat function with `COACH_EMBEDDING_PROVIDER=none` (BM25-only Coach), by one
//! with `local` (hybrid Coach), and by one per extra argument, with those settings on top of
//! hybrid's (for tuning: `w2:COACH_RETRIEVAL_VECTOR_WEIGHT=2`). Runs against moto on loopback (`COACH_MOTO_SERVER`),
//! like the tests. Settings under test (`COACH_RETRIEVAL_*`, `COACH_CHUNK_*`,
//! `COACH_SEARCH_*`) are taken from this process's environment.
//!
//! Conversations (hybrid Coach, the default), each scored against the judgements of
//! query Q: `conv-b` asks Q, then in the same session a follow-up that names nothing of Q's
//! topic (`tests/fixtures/eval/follow-ups.txt`, in turn), and scores the follow-up's sources; `conv-c` asks another
//! judged query first (the next one), then Q in the same session, and scores Q's. The
//! single-turn runs are (a).

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use coach_testkit::stack::ingest_deadline;
use coach_testkit::{
    collection::{self, Collection},
    events,
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::{http::StatusCode, Request};
use serde_json::{json, Value};

/// Uploads and ingests in flight at once.
const CONCURRENCY: usize = 8;
/// Distinct documents scored per query.
const DEPTH: usize = 10;

fn main() -> Result<(), String> {
    // Ingest runs here, and reads documents in a child: this program, started again.
    coach::ingest::sandbox::serve_if_child();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [collection, out, variants @ ..] = args.as_slice() else {
        return Err("usage: coach-eval COLLECTION_DIR OUT.json [NAME:VAR=VALUE,VAR=VALUE ...]".into());
    };
    let mut runs: Vec<(String, Vec<(String, String)>)> = vec![
        ("coach-bm25".into(), vec![("COACH_EMBEDDING_PROVIDER".into(), "none".into())]),
        ("coach-hybrid".into(), vec![("COACH_EMBEDDING_PROVIDER".into(), "local".into())]),
    ];
    for variant in variants {
        let (name, settings) = variant.split_once(':').ok_or(format!("not NAME:VAR=VALUE,...: {variant}"))?;
        let mut vars = vec![("COACH_EMBEDDING_PROVIDER".to_owned(), "local".to_owned())];
        for setting in settings.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = setting.split_once('=').ok_or(format!("not VAR=VALUE: {setting}"))?;
            vars.push((k.to_owned(), v.to_owned()));
        }
        runs.push((name.to_owned(), vars));
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run(Path::new(collection), Path::new(out), &runs))
}

async fn run(dir: &Path, out: &Path, variants: &[(String, Vec<(String, String)>)]) -> Result<(), String> {
    let Collection { docs, queries, .. } = Collection::read(dir)?;
    let follow_ups = collection::follow_ups();
    eprintln!("eval: {} documents, {} judged queries", docs.len(), queries.len());

    // Everything else from this process's environment (the settings under test), then the
    // eval's own: the answer is the retrieved passages, DEPTH of them, no rate limit.
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| ["RETRIEVAL", "CHUNK", "SEARCH"].iter().any(|m| k.starts_with(&format!("COACH_{m}_"))))
        .collect();
    vars.extend(
        [
            ("COACH_LLM_PROVIDER", "none"),
            ("COACH_RATE_LIMIT_USER", "1000000"),
            ("COACH_RATE_LIMIT_TENANT", "1000000"),
            ("COACH_MAX_MESSAGE_CHARS", "20000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    if !vars.iter().any(|(k, _)| k == "COACH_RETRIEVAL_TOP_K") {
        vars.push(("COACH_RETRIEVAL_TOP_K".into(), DEPTH.to_string()));
    }
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let stack = Arc::new(TestStack::with_env(&borrowed).await);
    let services = Arc::new(stack.deploy());
    let editor = tokens::for_test("eval", "cisi", &["editor"]);

    let started = Instant::now();
    let mut titles: BTreeMap<String, String> = BTreeMap::new();
    for batch in docs.chunks(CONCURRENCY) {
        let mut tasks = tokio::task::JoinSet::new();
        for (id, text) in batch {
            let (stack, services, editor) = (stack.clone(), services.clone(), editor.clone());
            let filename = format!("cisi-{id}.txt");
            titles.insert(filename.clone(), id.clone());
            let text = text.clone();
            tasks.spawn(async move { upload_and_ingest(&stack, &services, &editor, &filename, &text).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    eprintln!("eval: ingested {} documents in {ingest_secs:.0} s", docs.len());

    let mut runs = serde_json::Map::new();
    let mut run_settings = serde_json::Map::new();
    // Conversations of the default (hybrid) Coach: each turn of a session makes the
    // emulator's table larger, and moto copies the table for every transaction.
    let conversations = ["coach-hybrid"];
    for (name, settings) in variants {
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let asking = stack.with_more_env(&pairs);
        run_settings.insert(name.clone(), json!(settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()));
        let chat = asking.start(&stack.aws, chat::Settings::load, chat::State::new);
        let user = tokens::for_test("reader", "cisi", &["user"]);
        let started = Instant::now();
        let mut run = serde_json::Map::new();
        for (qid, text) in &queries {
            let body = ask(&chat, &user, text, None).await.map_err(|e| format!("query {qid}: {e}"))?;
            run.insert(qid.clone(), json!(ranked(&body, &titles)));
        }
        eprintln!("eval: {name}: {} queries in {:.1} s", queries.len(), started.elapsed().as_secs_f64());
        runs.insert(name.clone(), Value::Object(run));
        if !conversations.contains(&name.as_str()) {
            continue;
        }
        // (b): Q, then a follow-up in its session; (c): the next query, then Q.
        let (mut follow_up, mut after_other) = (serde_json::Map::new(), serde_json::Map::new());
        for (i, (qid, text)) in queries.iter().enumerate() {
            let user = tokens::for_test(&format!("reader-b{i}"), "cisi", &["user"]);
            let first = ask(&chat, &user, text, None).await.map_err(|e| format!("query {qid}: {e}"))?;
            let session = first["session_id"].as_str().map(str::to_owned);
            let next = follow_ups[i % follow_ups.len()];
            let body = ask(&chat, &user, next, session.as_deref()).await.map_err(|e| format!("query {qid}: {e}"))?;
            follow_up.insert(qid.clone(), json!(ranked(&body, &titles)));
            let other = &queries[(i + 1) % queries.len()].1;
            let user = tokens::for_test(&format!("reader-c{i}"), "cisi", &["user"]);
            let first = ask(&chat, &user, other, None).await.map_err(|e| format!("query {qid}: {e}"))?;
            let session = first["session_id"].as_str().map(str::to_owned);
            let body = ask(&chat, &user, text, session.as_deref()).await.map_err(|e| format!("query {qid}: {e}"))?;
            after_other.insert(qid.clone(), json!(ranked(&body, &titles)));
        }
        eprintln!("eval: {name}: conversations in {:.1} s", started.elapsed().as_secs_f64());
        runs.insert(format!("{name}/conv-b"), Value::Object(follow_up));
        runs.insert(format!("{name}/conv-c"), Value::Object(after_other));
        run_settings.insert(format!("{name}/conv-b"), run_settings[name].clone());
        run_settings.insert(format!("{name}/conv-c"), run_settings[name].clone());
    }
    let settings: BTreeMap<&str, &str> = borrowed.iter().copied().filter(|(k, _)| k.starts_with("COACH_")).collect();
    let report = json!({
        "runs": runs,
        "run_settings": run_settings,
        "settings": settings,
        "ingest_seconds": ingest_secs,
        "documents": docs.len(),
    });
    std::fs::write(out, serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(())
}

async fn upload_and_ingest(
    stack: &TestStack,
    services: &Deployment,
    token: &str,
    filename: &str,
    text: &str,
) -> Result<(), String> {
    let body = json!({"filename": filename, "content_type": "text/plain", "size_bytes": text.len()});
    let request = events::with("uploads-create.json", "POST", "/uploads", Some(&body), Some(token));
    let response = upload_url::handle(&services.uploads, request).await;
    let upload: Value = serde_json::from_slice(response.body().as_ref()).map_err(|e| e.to_string())?;
    if response.status() != StatusCode::CREATED {
        return Err(format!("POST /uploads for {filename}: {upload}"));
    }
    let mut put = reqwest::Client::new().put(upload["upload_url"].as_str().unwrap_or_default()).body(text.to_owned());
    for (name, value) in upload["headers"].as_object().into_iter().flatten() {
        put = put.header(name, value.as_str().unwrap_or_default());
    }
    let put = put.send().await.map_err(|e| e.to_string())?;
    if !put.status().is_success() {
        return Err(format!("PUT of {filename}: {}", put.status()));
    }
    let key = format!("uploads/cisi/{}/{filename}", upload["document_id"].as_str().unwrap_or_default());
    let mut event: Value = serde_json::from_str(&events::load("s3-put.json")).map_err(|e| e.to_string())?;
    event["Records"][0]["s3"]["object"]["key"] = key.into();
    event["Records"][0]["s3"]["bucket"]["name"] = stack.config.bucket.clone().into();
    // As Lambda does for an S3 event: a transient failure is retried.
    let mut outcome = Ok(json!({}));
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
        }
        outcome = ingest::handle(&services.ingest, event.clone(), ingest_deadline()).await;
        if outcome.is_ok() {
            break;
        }
    }
    outcome.map(|_| ()).map_err(|e| format!("ingest of {filename}: {e}"))
}

/// Asks `text` through `POST /chat` (in `session`, if given) as a client would: a 503 (the
/// emulator slow under load), a 504 (no answer in time, for the same reason) or a 409 (a turn
/// still being answered) is asked again, after 2, 4, 8 and 16 s.
async fn ask(chat: &chat::State, user: &str, text: &str, session: Option<&str>) -> Result<Value, String> {
    let (mut status, mut body) = (StatusCode::SERVICE_UNAVAILABLE, Value::Null);
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
        }
        let question = match session {
            Some(id) => json!({"message": text, "session_id": id}),
            None => json!({"message": text}),
        };
        let request = events::with("chat-post.json", "POST", "/chat", Some(&question), Some(user));
        (status, body) = call_chat(chat, request).await;
        let again = [StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT, StatusCode::CONFLICT];
        if !again.contains(&status) {
            break;
        }
        eprintln!("eval: POST /chat answered {status}; asking again");
    }
    if status != StatusCode::OK {
        return Err(format!("POST /chat answered {status}: {body}"));
    }
    Ok(body)
}

/// The collection's document ids of a reply's sources, first occurrence of each, at most
/// [`DEPTH`].
fn ranked(body: &Value, titles: &BTreeMap<String, String>) -> Vec<String> {
    let mut ranked: Vec<String> = Vec::new();
    for source in body["sources"].as_array().into_iter().flatten() {
        let Some(id) = source["title"].as_str().and_then(|t| titles.get(t)) else { continue };
        if !ranked.contains(id) && ranked.len() < DEPTH {
            ranked.push(id.clone());
        }
    }
    ranked
}

async fn call_chat(state: &chat::State, request: Request) -> (StatusCode, Value) {
    let response = chat::handle(state, request).await;
    let status = response.status();
    (status, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}
