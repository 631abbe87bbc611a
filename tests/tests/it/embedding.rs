//! The embedded embedding model (`COACH_EMBEDDING_PROVIDER=local`) as the functions build it
//! (its vectors against sentence-transformers' are `coach-embed`'s reference test,
//! `shared/embed/tests/reference.rs`); and large documents, whose vectors are computed in
//! queued steps after they are indexed by their words.

use coach::{
    auth::{Principal, Role},
    config::{ConfigError, StartupError},
    documents::UploadRequest,
    embeddings::{local::LocalModel, EmbedError, Embedder, EmbeddingConfig},
    http::outbound_client,
    ingest::{jobs::STEP, ObjectEvent, Outcome},
    retry::Retries,
    secrets::{Secrets, SecretsConfig},
};
use coach_testkit::stack::ingest_deadline;
use coach_testkit::{
    events,
    stack::{model_dir, Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// An embedder as the chat and ingest functions build it, over a stack with `vars`.
async fn build_embedder(vars: &[(&str, &str)]) -> Result<Embedder, ConfigError> {
    let stack = TestStack::with_env(vars).await;
    stack.build(&stack.aws, |env, aws| -> Result<_, StartupError> {
        let (secrets, http) = (Secrets::coach(aws, SecretsConfig::from_env(env)?), outbound_client()?);
        Ok(EmbeddingConfig::from_env(env, Retries::from_env(env)?)
            .map(|config| Embedder::new(config, http, secrets, aws)))
    })
}

#[tokio::test]
async fn local_is_the_default_provider_and_loads_its_model_on_the_first_embedding() {
    // The stack's environment names only the folder (COACH_EMBEDDING_MODEL_DIR).
    let embedder = build_embedder(&[]).await.unwrap();
    assert!(embedder.enabled());
    // Named after the folder: vectors of different models never meet in one ranking.
    assert_eq!(embedder.model(), "all-minilm-l6-v2");
    // The model's own vectors (held to sentence-transformers' by coach-embed's reference
    // test, on x86_64 and under qemu on arm64).
    let texts = vec!["How do I give feedback?".to_owned(), "Plan the week on Monday.".to_owned()];
    let model = LocalModel::load(&model_dir()).unwrap();
    let expected = model.embed(&[texts[0].as_str(), texts[1].as_str()]).unwrap();
    for (got, want) in embedder.embed(&texts).await.unwrap().vectors.iter().zip(&expected) {
        assert!(cosine(got, want) > 0.9999);
    }
}

#[tokio::test]
async fn a_missing_or_broken_model_is_reported_not_guessed() {
    let error = build_embedder(&[("COACH_EMBEDDING_MODEL_DIR", "/nonexistent/model")]).await.err().expect("an error");
    assert_eq!(error.var, "COACH_EMBEDDING_MODEL_DIR");
    assert!(error.reason.contains("model.safetensors"), "{}", error.reason);
    assert!(error.reason.contains("scripts/model.sh"), "{}", error.reason);

    // The files are there but the weights are not a safetensors file: the first embedding
    // fails as unavailable (a deployment fault, retried), and says nothing of the file.
    let broken = tempdir();
    for file in coach::embeddings::local::MODEL_FILES {
        let target = broken.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(model_dir().join(file), &target).unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"not weights").unwrap();
    let embedder = build_embedder(&[("COACH_EMBEDDING_MODEL_DIR", broken.to_str().unwrap())]).await.unwrap();
    let error = embedder.embed(&["hello".to_owned()]).await.unwrap_err();
    assert!(matches!(error, EmbedError::Unavailable { cause: Some(_), .. }), "{error:?}");
    assert!(!error.is_permanent());
    assert_eq!(error.to_string(), "the embedding model could not be loaded");
    std::fs::remove_dir_all(&broken).unwrap();

    // `none` keeps lexical-only retrieval and needs no model.
    let none = build_embedder(&[("COACH_EMBEDDING_PROVIDER", "none"), ("COACH_EMBEDDING_MODEL_DIR", "/nonexistent")])
        .await
        .unwrap();
    assert!(!none.enabled());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coach-model-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), fastrand::u64(..))
}

// ------------------------------------------------------------------ large documents

/// A stack whose ingest embeds at most 4 chunks inline and queues the rest in steps of one
/// model call each (`COACH_EMBED_JOB_SECS=0`), on a queue of its own.
async fn stepped_stack() -> (TestStack, String) {
    let base = TestStack::with_env(&[("COACH_CHUNK_SIZE", "200"), ("COACH_CHUNK_OVERLAP", "0")]).await;
    let queue = base
        .aws
        .sqs
        .create_queue()
        .queue_name(format!("{}-jobs", base.config.bucket))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let stack = base.with_more_env(&[
        ("COACH_INGEST_QUEUE_URL", &queue),
        ("COACH_EMBED_INLINE_CHUNKS", "4"),
        ("COACH_EMBED_JOB_SECS", "0"),
    ]);
    (stack, queue)
}

/// A text of `sentences` distinct sentences, chunked at 200 characters.
fn long_text(sentences: usize) -> String {
    (0..sentences).map(|i| format!("Paragraph {i} covers topic number {i} of the handbook in a sentence. ")).collect()
}

async fn upload(stack: &TestStack, services: &Deployment, name: &str, text: &str) -> (String, String) {
    let who = Principal { user_id: "erin".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    let request = UploadRequest {
        filename: name.into(),
        content_type: "text/plain".into(),
        size_bytes: text.len() as u64,
        access: None,
    };
    let id = services.uploads.documents.create_upload(&who, &request).await.unwrap().document_id;
    let key = format!("uploads/acme/{id}/{name}");
    stack.put(&key, text.as_bytes()).await;
    (id, key)
}

async fn record(services: &Deployment, id: &str) -> Option<Value> {
    let who = Principal { user_id: "erin".into(), tenant: "acme".into(), roles: vec![], groups: vec![] };
    services.uploads.documents.get(&who, id).await.ok().map(|d| serde_json::to_value(d).unwrap())
}

/// Takes the queue's messages and hands them to the ingest function as SQS delivers them;
/// the number of messages handled.
async fn deliver(stack: &TestStack, services: &Deployment, queue: &str) -> usize {
    coach_testkit::queues::deliver(&stack.aws.sqs, &services.ingest, queue).await
}

#[tokio::test]
async fn a_large_document_is_searchable_at_once_and_gains_its_vectors_over_several_invocations() {
    let (stack, queue) = stepped_stack().await;
    let services = stack.deploy();
    let (id, key) = upload(&stack, &services, "handbook.txt", &long_text(400)).await;
    let outcome =
        services.ingest.ingestor.handle(&ObjectEvent { created: true, key }, ingest_deadline()).await.unwrap();
    let Outcome::Embedding { done: 0, total } = outcome else { panic!("{outcome:?}") };
    assert!(total > 2 * STEP, "{total} chunks: three steps at least");

    // Ready and searchable by its words at once; no vectors yet.
    let status = record(&services, &id).await.unwrap();
    assert_eq!(status["status"], "ready");
    assert_eq!(status["chunks"], total);
    assert_eq!(status["embedded_chunks"], 0);
    assert_eq!(stack.indexed_doc("acme", &id).await.unwrap().embedding_model, None);
    let token = tokens::for_test("alice", "acme", &["user"]);
    let question = json!({"message": "What does paragraph 217 cover?"});
    let request = events::with("chat-post.json", "POST", "/chat", Some(&question), Some(&token));
    let reply: Value = serde_json::from_slice(chat::handle(&services.chat, request).await.body().as_ref()).unwrap();
    assert_eq!(reply["sources"][0]["title"], "handbook.txt", "{reply}");
    assert!(reply["sources"][0]["snippet"].as_str().unwrap().contains("Paragraph 217"), "{reply}");

    // Each invocation embeds one step and queues the next; the status shows the progress.
    let mut invocations = 0;
    let mut seen = Vec::new();
    while deliver(&stack, &services, &queue).await > 0 {
        invocations += 1;
        seen.push(record(&services, &id).await.unwrap()["embedded_chunks"].as_u64().unwrap());
        assert!(invocations < 20, "the chain ends");
    }
    let expected: Vec<u64> = (1..=total.div_ceil(STEP)).map(|i| (i * STEP).min(total) as u64).collect();
    assert_eq!(seen, expected);
    assert!(invocations >= 3);

    // The index holds every chunk's vector, as the model computes it for that chunk alone.
    let stored = stack.indexed_doc("acme", &id).await.unwrap();
    assert_eq!(stored.chunks.len(), total);
    assert_eq!(stored.embedding_model.as_deref(), Some("all-minilm-l6-v2"));
    assert_eq!(stored.vectors.len(), total * 384);
    let model = LocalModel::load(&model_dir()).unwrap();
    for chunk in [0, STEP, total - 1] {
        let expected = model.embed(&[stored.chunks[chunk].text.as_str()]).unwrap().remove(0);
        let similarity = cosine(&stored.vectors[chunk * 384..(chunk + 1) * 384], &expected);
        assert!(similarity > 0.9999, "chunk {chunk}: cosine {similarity}");
    }
    // The parts are gone.
    assert!(stack.keys("index/acme/work/").await.is_empty());
}

#[tokio::test]
async fn a_document_deleted_while_it_is_embedded_ends_its_chain_and_leaves_nothing() {
    let (stack, queue) = stepped_stack().await;
    let services = stack.deploy();
    let (id, key) = upload(&stack, &services, "big.txt", &long_text(400)).await;
    services.ingest.ingestor.handle(&ObjectEvent { created: true, key }, ingest_deadline()).await.unwrap();
    assert_eq!(deliver(&stack, &services, &queue).await, 1);
    assert_eq!(stack.keys("index/acme/work/").await.len(), 1, "the first part");

    let who = Principal { user_id: "erin".into(), tenant: "acme".into(), roles: vec![Role::Editor], groups: vec![] };
    services.uploads.documents.delete(&who, &id).await.unwrap();
    assert_eq!(deliver(&stack, &services, &queue).await, 1, "the next job runs, finds the record gone");
    assert_eq!(deliver(&stack, &services, &queue).await, 0, "and queues nothing");
    assert!(stack.keys("index/acme/work/").await.is_empty());
    assert!(stack.indexed_doc("acme", &id).await.is_none());
    assert!(record(&services, &id).await.is_none());
}

async fn reembed_request(services: &Deployment, roles: &[&str]) -> (StatusCode, Value) {
    let token = tokens::for_test("ada", "acme", roles);
    let request = events::with("uploads-create.json", "POST", "/documents/reembed", None, Some(&token));
    let response = upload_url::handle(&services.uploads, request).await;
    let status = response.status();
    (status, serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_admin_re_embeds_documents_indexed_without_vectors() {
    let (stack, queue) = stepped_stack().await;
    // Indexed while embeddings were off: words only.
    let lexical = stack.with_more_env(&[("COACH_EMBEDDING_PROVIDER", "none")]).deploy();
    let mut ids = Vec::new();
    for (name, text) in [("pto.txt", "Everyone gets 25 days of paid leave a year."), ("big.txt", &long_text(40))] {
        let (id, key) = upload(&stack, &lexical, name, text).await;
        let outcome =
            lexical.ingest.ingestor.handle(&ObjectEvent { created: true, key }, ingest_deadline()).await.unwrap();
        assert!(matches!(outcome, Outcome::Indexed { .. }), "{outcome:?}");
        assert_eq!(stack.indexed_doc("acme", &id).await.unwrap().embedding_model, None);
        ids.push(id);
    }

    let services = stack.deploy();
    assert_eq!(reembed_request(&services, &["editor"]).await.0, StatusCode::FORBIDDEN);
    let (status, body) = reembed_request(&services, &["admin"]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut invocations = 0;
    while deliver(&stack, &services, &queue).await > 0 {
        invocations += 1;
        assert!(invocations < 20, "the jobs end");
    }
    for id in &ids {
        let stored = stack.indexed_doc("acme", id).await.unwrap();
        assert_eq!(stored.embedding_model.as_deref(), Some("all-minilm-l6-v2"));
        assert_eq!(stored.vectors.len(), stored.chunks.len() * 384);
        let status = record(&services, id).await.unwrap();
        assert_eq!(status["embedded_chunks"], status["chunks"]);
    }
    // A second request finds nothing left to do: no document is embedded again.
    assert_eq!(reembed_request(&services, &["admin"]).await.0, StatusCode::ACCEPTED);
    let before = stack.indexed(&coach::model::Scope::Tenant("acme".into())).await;
    while deliver(&stack, &services, &queue).await > 0 {}
    assert_eq!(stack.indexed(&coach::model::Scope::Tenant("acme".into())).await, before);

    // Without a jobs queue the request is refused, saying why.
    let plain = TestStack::new().await.deploy();
    let (status, body) = reembed_request(&plain, &["admin"]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"]["message"].as_str().unwrap().contains("COACH_INGEST_QUEUE_URL"), "{body}");
}

/// Documents indexed before chunks recorded where they are: the re-embedding request reads
/// them again and finds their chunks in the text; vectors and chunks stay as they were.
#[tokio::test]
async fn re_embedding_gives_documents_indexed_before_spans_their_spans() {
    let (stack, queue) = stepped_stack().await;
    let services = stack.deploy();
    let (id, key) = upload(&stack, &services, "big.txt", &long_text(12)).await;
    services.ingest.ingestor.handle(&ObjectEvent { created: true, key: key.clone() }, ingest_deadline()).await.unwrap();
    let indexed = stack.indexed_doc("acme", &id).await.unwrap();
    assert!(indexed.chunks.len() > 2 && indexed.chunks.iter().all(|c| c.span.is_some()));
    // As an older Coach indexed it: no spans.
    let mut old = indexed.clone();
    old.chunks.iter_mut().for_each(|c| c.span = None);
    let etag = record(&services, &id).await.unwrap()["etag"].as_str().map(str::to_owned);
    let etag = match etag {
        Some(etag) => etag,
        None => stack.aws.s3.head_object().bucket(&stack.config.bucket).key(&key).send().await.unwrap().e_tag.unwrap(),
    };
    let scope = coach::model::Scope::Tenant("acme".into());
    stack.document_index().add(&scope, old, &key, &etag).await.unwrap();
    assert!(stack.indexed_doc("acme", &id).await.unwrap().chunks.iter().all(|c| c.span.is_none()));

    assert_eq!(reembed_request(&services, &["admin"]).await.0, StatusCode::ACCEPTED);
    while deliver(&stack, &services, &queue).await > 0 {}
    let again = stack.indexed_doc("acme", &id).await.unwrap();
    assert_eq!(again.chunks, indexed.chunks, "the same chunks with the same spans as chunking gives");
    assert_eq!(again.embedding_model, indexed.embedding_model);
    let drift = again.vectors.iter().zip(&indexed.vectors).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(again.vectors.len() == indexed.vectors.len() && drift < 1e-5, "the vectors kept, not embedded again");
}

#[tokio::test]
async fn an_unknown_job_is_reported_as_failed_not_dropped() {
    let stack = TestStack::new().await;
    let services = stack.deploy();
    let event = json!({"Records": [{
        "messageId": "m-1", "receiptHandle": "r-1",
        "body": json!({"job": "compact-everything", "tenant": "acme"}).to_string(),
        "attributes": {}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"
    }]});
    let reply = ingest::handle(&services.ingest, event, ingest_deadline()).await.unwrap();
    assert_eq!(reply["batchItemFailures"], json!([{"itemIdentifier": "m-1"}]), "left for the dead-letter queue");
}
