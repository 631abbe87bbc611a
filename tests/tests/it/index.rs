//! The tenant index at scale, against moto: manifest and segments, concurrent ingests,
//! races with deletes and second uploads, a crash between a segment and its manifest,
//! compaction, collection of old segments, damaged segments, a scope's first write,
//! read-your-writes, and an index larger than the cache.
//!
//! Races are staged deterministically with [`Gated`], the real S3 index store with one pause
//! (or one failure) at a chosen step, so the other party acts exactly in between.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use coach::{
    config::StartupError,
    embeddings::{Embedder, EmbeddingConfig},
    http::outbound_client,
    index::{IndexConfig, IndexWriter, MERGE_FACTOR},
    ingest::{IngestConfig, Ingestor, ObjectEvent, Outcome},
    model::Scope,
    retry::Retries,
    secrets::{Secrets, SecretsConfig},
    store::{Failure, IndexStore, Manifest, ManifestRead, S3Bucket, Segment, StoreError, StoreResult},
};
use coach_testkit::stack::ingest_deadline;
use coach_testkit::{
    events,
    flows::{add, cited, created, erin, upload},
    logs::Capture,
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::Value;
use tokio::sync::Notify;

/// Where a [`Gated`] store stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before writing a one-document segment (ingest's delta): after extraction, before
    /// anything is committed.
    DeltaWrite,
    /// Before writing a segment of several documents (a compaction's output).
    MergedWrite,
    /// Right after the first manifest write succeeded.
    AfterCommit,
    /// The first manifest write fails as if the process died (nothing written).
    FailCommit,
}

/// The S3 index store, pausing once at `at` until released.
struct Gated {
    inner: S3Bucket,
    at: At,
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
    /// The documents of each segment of several documents written, in order.
    merged: std::sync::Mutex<Vec<BTreeSet<String>>>,
}

impl Gated {
    fn new(stack: &TestStack, at: At) -> Arc<Self> {
        Arc::new(Self {
            inner: stack.aws.bucket(),
            at,
            armed: AtomicBool::new(true),
            reached: Notify::new(),
            release: Notify::new(),
            merged: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Pauses here if this is the armed step, the first time.
    async fn checkpoint(&self, at: At) {
        if at == self.at && self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
    }
}

#[async_trait]
impl IndexStore for Gated {
    async fn manifest(&self, scope: &Scope, etag: Option<&str>) -> StoreResult<ManifestRead> {
        self.inner.manifest(scope, etag).await
    }
    async fn put_manifest(&self, scope: &Scope, manifest: &Manifest, expected: Option<&str>) -> StoreResult<String> {
        if self.at == At::FailCommit && self.armed.swap(false, Ordering::SeqCst) {
            let cause: Box<dyn std::error::Error + Send + Sync> = "the process died".into();
            return Err(StoreError::Service { action: "write index manifest", failure: Failure::Unreachable, cause });
        }
        let written = self.inner.put_manifest(scope, manifest, expected).await?;
        self.checkpoint(At::AfterCommit).await;
        Ok(written)
    }
    async fn read_segment(&self, scope: &Scope, id: &str) -> StoreResult<Option<Bytes>> {
        self.inner.read_segment(scope, id).await
    }
    async fn write_segment(&self, scope: &Scope, id: &str, bytes: Bytes) -> StoreResult<()> {
        let docs: BTreeSet<String> =
            Segment::decode(&bytes).map(|s| s.docs.into_iter().map(|d| d.document_id).collect()).unwrap_or_default();
        if docs.len() > 1 {
            self.merged.lock().unwrap().push(docs.clone());
        }
        self.checkpoint(if docs.len() == 1 { At::DeltaWrite } else { At::MergedWrite }).await;
        self.inner.write_segment(scope, id, bytes).await
    }
    async fn delete_segment(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        self.inner.delete_segment(scope, id).await
    }
    async fn segments(&self, scope: &Scope) -> StoreResult<Vec<(String, u64)>> {
        self.inner.segments(scope).await
    }
    async fn report_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        self.inner.report_damaged(scope, id).await
    }
    async fn damaged(&self, scope: &Scope) -> StoreResult<Vec<String>> {
        self.inner.damaged(scope).await
    }
    async fn clear_damaged(&self, scope: &Scope, id: &str) -> StoreResult<()> {
        self.inner.clear_damaged(scope, id).await
    }
}

/// These tests find documents by made-up marker words (`zq4x`) and test the index's
/// machinery, not ranking: embeddings would also match every document loosely, and embedding
/// the large documents of the cache test would only slow it down.
const LEXICAL: &[(&str, &str)] = &[("COACH_EMBEDDING_PROVIDER", "none")];

/// An ingestor as the ingest function builds it, over `index` instead of the bucket.
fn ingestor(stack: &TestStack, index: Arc<dyn IndexStore>) -> Ingestor {
    stack.build(&stack.aws, |env, aws| -> Result<Ingestor, StartupError> {
        let secrets = Secrets::coach(aws, SecretsConfig::from_env(env)?);
        let embeddings = EmbeddingConfig::from_env(env, Retries::from_env(env)?)?;
        let embedder = Embedder::new(embeddings, outbound_client()?, secrets, aws);
        let writer = Arc::new(IndexWriter::new(index, Arc::new(aws.bucket()), IndexConfig::from_env(env)?));
        let config = IngestConfig::from_env(env)?;
        Ok(Ingestor::new(config, Arc::new(aws.table()), Arc::new(aws.bucket()), writer, embedder, None))
    })
}

async fn status(services: &Deployment, tenant: &str, id: &str) -> Option<String> {
    let doc = services.uploads.documents.get(&erin(tenant), id).await.ok()?;
    Some(doc.status.as_str().to_owned())
}

async fn delete(services: &Deployment, tenant: &str, id: &str) -> StatusCode {
    let token = tokens::for_test("erin", tenant, &["editor"]);
    let request = events::with("chat-post.json", "DELETE", &format!("/documents/{id}"), None, Some(&token));
    upload_url::handle(&services.uploads, request).await.status()
}

fn acme() -> Scope {
    Scope::Tenant("acme".into())
}

/// Stored segment objects of a scope, and those its manifest references (served, or a live
/// document's delta).
async fn objects(stack: &TestStack, scope: &Scope) -> (BTreeSet<String>, BTreeSet<String>) {
    let prefix = match scope {
        Scope::Tenant(t) => format!("index/{t}/seg/"),
        Scope::Global => "index/_global/seg/".to_owned(),
    };
    let stored = stack.keys(&prefix).await.into_iter().map(|k| k[prefix.len()..].to_owned()).collect();
    let manifest = stack.manifest(scope).await.unwrap_or_default();
    let mut referenced: BTreeSet<String> = manifest.segments.iter().map(|s| s.id.clone()).collect();
    referenced.extend(manifest.docs.values().map(|d| d.delta.clone()));
    (stored, referenced)
}

/// Ids of every document stored in the segments a manifest serves (live or not).
async fn stored_docs(stack: &TestStack, manifest: &Manifest) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for info in &manifest.segments {
        let bytes = stack.aws.bucket().read_segment(&acme(), &info.id).await.unwrap().unwrap();
        ids.extend(Segment::decode(&bytes).unwrap().docs.into_iter().map(|d| d.document_id));
    }
    ids
}

fn topic(i: usize) -> String {
    format!("# Topic {i}\n\nThe keyword for this note is zq{i}x, and nothing else says it.\n")
}

/// Uploads a document and ingests it through a store that stops `at` a step, deletes the
/// document there (through `DELETE /documents/{id}`), then lets the ingest finish: (id, what
/// the ingest says).
async fn delete_while_ingesting(stack: &TestStack, services: &Deployment, at: At, i: usize) -> (String, Outcome) {
    let (id, key) = upload(stack, services, "acme", "late.md", &topic(i)).await;
    let gate = Gated::new(stack, at);
    let ingest = ingestor(stack, gate.clone());
    let event = created(&key);
    let racing = async {
        gate.reached.notified().await;
        assert_eq!(delete(services, "acme", &id).await, StatusCode::NO_CONTENT);
        gate.release.notify_one();
    };
    let (outcome, ()) = tokio::join!(ingest.handle(&event, ingest_deadline()), racing);
    (id, outcome.unwrap())
}

#[tokio::test]
async fn a_delete_between_extraction_and_indexing_leaves_nothing_searchable() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    let (id, outcome) = delete_while_ingesting(&stack, &services, At::DeltaWrite, 1).await;
    assert_eq!(outcome, Outcome::Skipped("the object was deleted while it was indexed"));

    assert!(stack.indexed_doc("acme", &id).await.is_none());
    assert!(stack.manifest(&acme()).await.unwrap().is_deleted(&id), "a tombstone");
    assert!(cited(&services, "acme", "zq1x").await.is_empty());
    assert_eq!(delete(&services, "acme", &id).await, StatusCode::NOT_FOUND);
    // The delta it wrote was never named by a manifest, and is gone.
    let (stored, referenced) = objects(&stack, &acme()).await;
    assert_eq!(stored, referenced);
}

#[tokio::test]
async fn a_delete_right_after_the_commit_is_caught_by_the_record_check() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    // Committed and searchable for a moment, then the delete tombstones it.
    let (id, outcome) = delete_while_ingesting(&stack, &services, At::AfterCommit, 2).await;
    assert_eq!(outcome, Outcome::Skipped("the document was deleted while it was indexed"));
    assert!(stack.indexed_doc("acme", &id).await.is_none());
    assert!(cited(&services, "acme", "zq2x").await.is_empty());
    assert_eq!(status(&services, "acme", &id).await, None);
}

#[tokio::test]
async fn two_puts_through_one_upload_url_end_with_what_s3_holds() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    let first = "# Version one\n\nThe old wording says alphaword.\n";
    // The same length: S3 holds a PUT through the URL to the size signed into it.
    let second = "# Version two\n\nThe new wording says: betaword.\n";
    assert_eq!(first.len(), second.len());
    let (id, key) = upload(&stack, &services, "acme", "policy.md", first).await;
    // The first upload's ingest reads version one and stalls before indexing it; meanwhile
    // the second PUT lands and its own ingest completes.
    let gate = Gated::new(&stack, At::DeltaWrite);
    let slow = ingestor(&stack, gate.clone());
    let event = created(&key);
    let racing = async {
        gate.reached.notified().await;
        stack.put(&key, second.as_bytes()).await;
        let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
        assert!(matches!(outcome, Outcome::Indexed { .. }), "{outcome:?}");
        gate.release.notify_one();
    };
    let (outcome, ()) = tokio::join!(slow.handle(&event, ingest_deadline()), racing);
    // The stale ingest saw the newer version, went round again and found it indexed.
    assert_eq!(outcome.unwrap(), Outcome::Skipped("this version is already indexed"));

    let indexed = stack.indexed_doc("acme", &id).await.unwrap();
    assert_eq!(indexed.chunks[0].text, "The new wording says: betaword.");
    assert_eq!(cited(&services, "acme", "betaword").await, BTreeSet::from([id.clone()]));
    assert!(cited(&services, "acme", "alphaword").await.is_empty());
    let record = services.uploads.documents.get(&erin("acme"), &id).await.unwrap();
    assert_eq!(record.status.as_str(), "ready");
    let head = stack.aws.s3.head_object().bucket(&stack.config.bucket).key(&key).send().await.unwrap();
    assert_eq!(stack.manifest(&acme()).await.unwrap().docs[&id].etag, head.e_tag().unwrap());
}

#[tokio::test]
async fn concurrent_ingests_of_one_tenant_lose_nothing() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    let count = 3 * MERGE_FACTOR;
    let mut uploads = Vec::new();
    for i in 0..count {
        uploads.push(upload(&stack, &services, "acme", &format!("note-{i}.md"), &topic(i)).await);
    }
    // Every event at once, as S3 delivers them to concurrent invocations.
    let events: Vec<ObjectEvent> = uploads.iter().map(|(_, key)| created(key)).collect();
    let ingests: Vec<_> =
        events.iter().map(|event| services.ingest.ingestor.handle(event, ingest_deadline())).collect();
    for outcome in futures_util::future::join_all(ingests).await {
        assert!(matches!(outcome.unwrap(), Outcome::Indexed { .. }));
    }
    let indexed = stack.indexed(&acme()).await;
    let expected: BTreeSet<String> = uploads.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(indexed.keys().cloned().collect::<BTreeSet<_>>(), expected, "each exactly once");
    for (i, (id, _)) in uploads.iter().enumerate() {
        assert_eq!(status(&services, "acme", id).await.as_deref(), Some("ready"));
        assert_eq!(cited(&services, "acme", &format!("zq{i}x")).await, BTreeSet::from([id.clone()]), "note {i}");
    }
    // Compaction ran: far fewer segments to load than documents.
    let manifest = stack.manifest(&acme()).await.unwrap();
    assert!(manifest.segments.len() < MERGE_FACTOR, "{} segments", manifest.segments.len());
    assert_eq!(manifest.compacting_until_ms, 0, "no lease left behind");
}

#[tokio::test]
async fn a_delete_during_compaction_is_not_undone_and_its_data_leaves_the_segments() {
    let stack = TestStack::with_env(&[LEXICAL[0], ("COACH_INDEX_GC_GRACE_SECS", "0")]).await;
    let services = stack.deploy();
    let mut ids = Vec::new();
    for i in 0..MERGE_FACTOR - 1 {
        ids.push(add(&stack, &services, "acme", &format!("n{i}.md"), &topic(i)).await);
    }
    // The next ingest triggers a compaction, which stalls before writing its output.
    let (last, key) = upload(&stack, &services, "acme", "last.md", &topic(99)).await;
    let gate = Gated::new(&stack, At::MergedWrite);
    let ingest = ingestor(&stack, gate.clone());
    let event = created(&key);
    let racing = async {
        gate.reached.notified().await;
        assert_eq!(delete(&services, "acme", &ids[3]).await, StatusCode::NO_CONTENT);
        gate.release.notify_one();
    };
    let (outcome, ()) = tokio::join!(ingest.handle(&event, ingest_deadline()), racing);
    assert!(matches!(outcome.unwrap(), Outcome::Indexed { .. }));
    ids.push(last);

    let manifest = stack.manifest(&acme()).await.unwrap();
    assert_eq!(manifest.segments.len(), 1, "compacted into one segment");
    let indexed = stack.indexed(&acme()).await;
    assert_eq!(indexed.len(), MERGE_FACTOR - 1);
    assert!(!indexed.contains_key(&ids[3]) && manifest.is_deleted(&ids[3]));
    assert!(cited(&services, "acme", "zq3x").await.is_empty());
    assert_eq!(cited(&services, "acme", "zq99x").await.len(), 1);
    // The merge had written the deleted document's data; the same maintenance went round
    // again and rewrote the segment without it.
    assert!(!stored_docs(&stack, &manifest).await.contains(&ids[3]));
    assert_eq!(manifest.segments[0].docs as usize, MERGE_FACTOR - 1);
    let merges = gate.merged.lock().unwrap().clone();
    assert!(merges.len() >= 2, "{merges:?}");
    assert!(merges[0].contains(&ids[3]), "the racing compaction wrote the deleted document");
    assert!(!merges[1].contains(&ids[3]), "the next round wrote it no more");

    // Retired objects go at the next maintenance past the grace period (0 here).
    add(&stack, &services, "acme", "again.md", &topic(101)).await;
    let (stored, referenced) = objects(&stack, &acme()).await;
    assert_eq!(stored, referenced, "only what the manifest references is left");
    assert!(stack.manifest(&acme()).await.unwrap().retired.is_empty());
}

#[tokio::test]
async fn a_crash_between_segment_and_manifest_leaves_the_old_index_and_the_orphan_is_collected() {
    let stack =
        TestStack::with_env(&[LEXICAL[0], ("COACH_INDEX_GC_GRACE_SECS", "0"), ("COACH_INDEX_ORPHAN_SECS", "0")]).await;
    let services = stack.deploy();
    let kept = add(&stack, &services, "acme", "kept.md", &topic(1)).await;
    let before = stack.manifest(&acme()).await.unwrap();

    let (id, key) = upload(&stack, &services, "acme", "crash.md", &topic(2)).await;
    let crashing = ingestor(&stack, Gated::new(&stack, At::FailCommit));
    assert!(
        crashing.handle(&created(&key), ingest_deadline()).await.is_err(),
        "a transient failure: the event is retried"
    );
    // Readers see exactly the previous manifest; the new delta is an orphan.
    assert_eq!(stack.manifest(&acme()).await.unwrap(), before);
    assert_eq!(cited(&services, "acme", "zq1x").await, BTreeSet::from([kept]));
    assert!(cited(&services, "acme", "zq2x").await.is_empty());
    let (stored, referenced) = objects(&stack, &acme()).await;
    assert_eq!(stored.difference(&referenced).count(), 1, "one orphan");

    // The retried event indexes it, and maintenance collects the orphan.
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, Outcome::Indexed { .. }));
    assert_eq!(cited(&services, "acme", "zq2x").await, BTreeSet::from([id]));
    let (stored, referenced) = objects(&stack, &acme()).await;
    assert_eq!(stored, referenced);
}

#[tokio::test]
async fn a_damaged_segment_is_skipped_reported_and_rebuilt() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    let mut ids = Vec::new();
    for i in 0..MERGE_FACTOR {
        ids.push(add(&stack, &services, "acme", &format!("n{i}.md"), &topic(i)).await);
    }
    let manifest = stack.manifest(&acme()).await.unwrap();
    assert_eq!(manifest.segments.len(), 1);
    let merged = manifest.segments[0].id.clone();
    // Truncated in storage.
    let key = format!("index/acme/seg/{merged}");
    let bytes = stack.aws.bucket().read_segment(&acme(), &merged).await.unwrap().unwrap();
    stack.put(&key, &bytes[..bytes.len() / 2]).await;

    // A cold instance answers without it (no 500), and reports it.
    let cold = stack.deploy();
    assert!(cited(&cold, "acme", "zq5x").await.is_empty());
    assert_eq!(stack.keys("index/acme/damaged/").await, vec![format!("index/acme/damaged/{merged}")]);

    // The next ingest rebuilds it from the documents' deltas; nothing is lost.
    let extra = add(&stack, &services, "acme", "extra.md", &topic(50)).await;
    assert!(stack.keys("index/acme/damaged/").await.is_empty());
    let indexed = stack.indexed(&acme()).await;
    assert_eq!(indexed.len(), MERGE_FACTOR + 1);
    assert!(indexed.contains_key(&extra));
    let fresh = stack.deploy();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(cited(&fresh, "acme", &format!("zq{i}x")).await, BTreeSet::from([id.clone()]));
    }
}

#[tokio::test]
async fn a_warm_instance_reads_its_writes() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    assert!(cited(&services, "acme", "zq7x").await.is_empty(), "warm, index loaded");
    let id = add(&stack, &services, "acme", "seven.md", &topic(7)).await;
    assert_eq!(status(&services, "acme", &id).await.as_deref(), Some("ready"));
    assert_eq!(cited(&services, "acme", "zq7x").await, BTreeSet::from([id.clone()]), "found at once");
    assert_eq!(delete(&services, "acme", &id).await, StatusCode::NO_CONTENT);
    assert!(cited(&services, "acme", "zq7x").await.is_empty(), "gone at once");
}

#[tokio::test]
async fn shared_docs_have_the_same_index() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    for i in 0..MERGE_FACTOR {
        stack.put(&format!("docs/guide-{i}.md"), topic(i).as_bytes()).await;
    }
    let events: Vec<ObjectEvent> = (0..MERGE_FACTOR).map(|i| created(&format!("docs/guide-{i}.md"))).collect();
    let ingests: Vec<_> =
        events.iter().map(|event| services.ingest.ingestor.handle(event, ingest_deadline())).collect();
    for outcome in futures_util::future::join_all(ingests).await {
        assert!(matches!(outcome.unwrap(), Outcome::Indexed { .. }));
    }
    assert_eq!(stack.indexed(&Scope::Global).await.len(), MERGE_FACTOR);
    assert_eq!(stack.manifest(&Scope::Global).await.unwrap().segments.len(), 1, "compacted");
    assert_eq!(cited(&services, "any-tenant", "zq4x").await.len(), 1);
    // Removed from docs/: tombstoned at once.
    stack.aws.s3.delete_object().bucket(&stack.config.bucket).key("docs/guide-4.md").send().await.unwrap();
    let removed = ObjectEvent { created: false, key: "docs/guide-4.md".into() };
    assert_eq!(services.ingest.ingestor.handle(&removed, ingest_deadline()).await.unwrap(), Outcome::Removed);
    assert!(cited(&services, "any-tenant", "zq4x").await.is_empty());
    assert_eq!(stack.indexed(&Scope::Global).await.len(), MERGE_FACTOR - 1);
    // Put back: indexed again (the tombstone is lifted).
    stack.put("docs/guide-4.md", topic(4).as_bytes()).await;
    services.ingest.ingestor.handle(&created("docs/guide-4.md"), ingest_deadline()).await.unwrap();
    assert_eq!(cited(&services, "any-tenant", "zq4x").await.len(), 1);
}

#[tokio::test]
async fn a_scope_without_a_manifest_is_empty_until_its_first_write() {
    let stack = TestStack::with_env(LEXICAL).await;
    let services = stack.deploy();
    // An object beside where the manifest goes is not an index (the layout before manifests
    // is no longer read).
    stack.put("index/acme/01JLEGACY00000000000000000", b"COACHIX1 not an index").await;
    assert!(stack.manifest(&acme()).await.is_none());
    assert_eq!(cited(&services, "acme", "zq3x").await, BTreeSet::new());
    let new = add(&stack, &services, "acme", "new.md", &topic(3)).await;
    let indexed = stack.indexed(&acme()).await;
    assert_eq!(indexed.keys().cloned().collect::<Vec<_>>(), vec![new.clone()]);
    assert_eq!(cited(&stack.deploy(), "acme", "zq3x").await, BTreeSet::from([new]));
}

#[test]
fn an_index_larger_than_the_cache_answers_from_what_fits() {
    coach_testkit::logs::run_alone("index::an_index_larger_than_the_cache_answers_from_what_fits_alone");
}

#[tokio::test]
#[ignore = "captures logs: run in a process of its own by an_index_larger_than_the_cache_answers_from_what_fits"]
async fn an_index_larger_than_the_cache_answers_from_what_fits_alone() {
    let stack = TestStack::with_env(&[LEXICAL[0], ("COACH_INDEX_CACHE_MB", "1")]).await;
    let services = stack.deploy();
    // Two documents of ~700 KB of text each: both segments cannot be held in 1 MiB.
    let big = |word: &str| {
        let line = format!("Filler words about planning and feedback, line for {word}.\n");
        format!("# {word}\n\n{}", line.repeat(12_000))
    };
    let first = add(&stack, &services, "acme", "first.md", &big("zqfirstx")).await;
    add(&stack, &services, "acme", "second.md", &big("zqsecondx")).await;
    let cold = stack.deploy();
    let capture = Capture::default();
    let guard = capture.install("coach=info");
    assert_eq!(cited(&cold, "acme", "zqfirstx").await, BTreeSet::from([first]));
    drop(guard);
    let logs = capture.text();
    let line = logs.lines().find(|l| l.contains("does not fit")).unwrap_or_else(|| panic!("an error line:\n{logs}"));
    let line: Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["fields"]["tenant"], "acme");
    assert!(line["fields"]["needed_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(cited(&cold, "acme", "zqsecondx").await.is_empty(), "the part that did not fit");
}
