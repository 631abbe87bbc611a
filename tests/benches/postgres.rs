//! The Postgres index store at scale, against the PostgreSQL 18 + pgvector the test kit runs
//! (loopback), release build:
//!
//!     scripts/bench.sh          (or: COACH_MOTO_SERVER=.venv/bin/coach-moto-server \
//!                                cargo bench -p coach-integration-tests --bench postgres)
//!
//! A synthetic tenant of `DOCS` documents of 10 chunks (1,000,000 chunks by default;
//! `BENCH_PG_DOCS` sets it; `BENCH_PG_HOLD=1` keeps the server up after the searches, to
//! look at plans), each chunk 100 words drawn from a vocabulary of 50,000 made-up
//! words with Zipf's law (as in natural text: a few very common words, a long tail), plus a
//! marker word naming its document in its first chunk, and a 384-d vector near one of 2,000
//! cluster centres (real embeddings cluster by topic; cosine to the centre about 0.7).
//!
//! 1. **Load**: all but the last `INGEST_DOCS` documents are written with `COPY` (the rows
//!    Coach's ingest writes, its schema from Coach's migrations), then the HNSW index is
//!    built (as a team would after a bulk import).
//! 2. **Ingest throughput**: the last `INGEST_DOCS` documents through Coach's own
//!    `DocumentIndex::add` (one transaction per document, the source object checked in
//!    moto, the HNSW index updated), 8 at a time, into the loaded tenant.
//! 3. **Search**: `PassageSearch::search` (Coach's code path: the prepared hybrid statement,
//!    rows to passages), top-10, warm, p50/p99 over `QUERIES` queries: hybrid (a document's
//!    marker, three content words, a vector near that document's first chunk), the same by
//!    words only, and hybrid with a very common word in the query. Checked: the marked
//!    chunk ranks first.
//! 4. **Baseline, same run**: the S3 store at 100,000 chunks (the same generator's first
//!    10,000 documents, written as compaction leaves them), searched warm through its own
//!    `PassageSearch`, with the same queries.
//! 5. **Access groups**: 30% of the documents are restricted (a tenth each to `hr`, `board`
//!    and `legal`; written so by the load, as ingest writes a restricted document). The
//!    hybrid searches of 3. and 4., each store's, by a caller of group `hr` (who may read 80%
//!    of the documents) and by one of no group (70%), alternating query by query with the
//!    unrestricted search (an admin's) in the same run. Checked: no passage of a document the
//!    caller may not read.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use coach::{
    analysis::Analyzer,
    index::postgres::{chunk_vector, vector_table},
    model::{Chunk, Clearance, Query, Ranking, Scope, Shard},
    store::{IndexStore, ManifestRead, PassageSearch},
};
use coach_testkit::{
    bench::{report, DIMS, EMBEDDING_MODEL},
    postgres::Postgres,
    stack::{Store, TestStack},
};
use futures_util::{pin_mut, StreamExt};
use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};

const CHUNKS_PER_DOC: usize = 10;
const WORDS_PER_CHUNK: usize = 100;
const VOCABULARY: usize = 50_000;
const CENTRES: usize = 2_000;
/// Documents ingested through Coach's `add` (the rest are bulk-loaded).
const INGEST_DOCS: usize = 500;
const QUERIES: usize = 200;
/// Documents generated and copied at a time.
const BATCH: usize = 5_000;
const TENANT: &str = "big";

/// The made-up word of rank `i`: four consonant-vowel syllables.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ne", "pu", "ra", "so", "ti", "vu", "ze", "ba", "do", "fi", "gu", "ho", "ju"];
    (0..4).map(|k| SYLLABLES[(i >> (4 * k)) & 15]).collect()
}

/// Zipf's law over the vocabulary: draws a word rank (0 = the most common).
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|r| {
                total += 1.0 / r as f64;
                total
            })
            .collect::<Vec<_>>();
        Self { cumulative: cumulative.iter().map(|c| c / total).collect() }
    }

    fn rank(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64();
        self.cumulative.partition_point(|c| *c < x).min(self.cumulative.len() - 1)
    }
}

struct Corpus {
    words: Vec<String>,
    zipf: Zipf,
    centres: Vec<Vec<f32>>,
}

impl Corpus {
    fn new() -> Self {
        let mut rng = fastrand::Rng::with_seed(7);
        let centres = (0..CENTRES)
            .map(|_| {
                let mut v: Vec<f32> = (0..DIMS).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                v
            })
            .collect();
        Self { words: (0..VOCABULARY).map(word).collect(), zipf: Zipf::new(VOCABULARY), centres }
    }

    /// A vector near centre `c`: cosine about 0.7 to it.
    fn near(&self, rng: &mut fastrand::Rng, c: usize, spread: f32) -> Vec<f32> {
        self.centres[c].iter().map(|x| x + (rng.f32() * 2.0 - 1.0) * spread).collect()
    }

    /// Document `d`, the same every time.
    fn document(&self, d: usize) -> Shard {
        let mut rng = fastrand::Rng::with_seed(d as u64 + 1);
        let mut vectors = Vec::with_capacity(CHUNKS_PER_DOC * DIMS);
        let chunks = (0..CHUNKS_PER_DOC)
            .map(|c| {
                let mut text: Vec<&str> =
                    (0..WORDS_PER_CHUNK).map(|_| self.words[self.zipf.rank(&mut rng)].as_str()).collect();
                let marker = format!("zq{d}x");
                if c == 0 {
                    text.insert(0, &marker);
                }
                let centre = rng.usize(..CENTRES);
                vectors.extend(self.near(&mut rng, centre, 0.088));
                Chunk { heading: Some(format!("Guide {d} > Section {c}")), text: text.join(" "), span: None }
            })
            .collect();
        Shard {
            document_id: format!("01BENCH{d:019}"),
            title: format!("guide-{d}.md"),
            chunks,
            embedding_model: Some(EMBEDDING_MODEL.to_owned()),
            dims: DIMS as u32,
            vectors,
        }
    }

    /// A query for document `d`: its marker, three content words (ranks past the 100 most
    /// common), plus `common` (a very common word) if given; and a vector near its first chunk.
    fn query(&self, rng: &mut fastrand::Rng, d: usize, common: bool) -> (String, Vec<f32>) {
        let doc = self.document(d);
        let mut words = vec![format!("zq{d}x")];
        while words.len() < 4 {
            let rank = self.zipf.rank(rng);
            if rank >= 100 {
                words.push(self.words[rank].clone());
            }
        }
        if common {
            words.push(self.words[2].clone());
        }
        let vector = doc.vectors[..DIMS].iter().map(|x| x + (rng.f32() * 2.0 - 1.0) * 0.04).collect();
        (words.join(" "), vector)
    }
}

async fn connect(stack: &TestStack) -> tokio_postgres::Client {
    let url = Postgres::shared().url(stack.database.as_deref().expect("a Postgres stack"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Writes documents `from..to` of the tenant with `COPY`, the rows ingest would have written
/// (documents with their analyser and length; chunks with their terms, length and access;
/// vectors in the model's table, whose HNSW index is dropped first).
async fn bulk_load(corpus: &Arc<Corpus>, stack: &TestStack, from: usize, to: usize) {
    let client = connect(stack).await;
    let table = vector_table(EMBEDDING_MODEL, DIMS as u32);
    client.batch_execute(&format!("DROP INDEX IF EXISTS {table}_hnsw")).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE staged (document_id text, chunk int4, heading text, body text, terms text,
                                            length int4, access text[], embedding vector({DIMS}))"
        ))
        .await
        .unwrap();
    let vector_type = client.prepare("SELECT $1::vector").await.unwrap().params()[0].clone();
    let analyzer = Analyzer::default();
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        let corpus = corpus.clone();
        let analyzing = analyzer.clone();
        // Generated and analysed as an add analyses (the CPU work, off the runtime).
        let docs: Vec<(Shard, Vec<(String, i32)>)> = tokio::task::spawn_blocking(move || {
            (start..end)
                .map(|d| {
                    let doc = corpus.document(d);
                    let terms = doc.chunks.iter().map(|c| chunk_vector(&analyzing, c)).collect();
                    (doc, terms)
                })
                .collect()
        })
        .await
        .unwrap();
        let sink = client
            .copy_in(
                "COPY coach_documents (scope, document_id, title, source_etag, embedding_model, dims, chunks, analyzer, \
                 length) FROM STDIN BINARY",
            )
            .await
            .unwrap();
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
            Type::TEXT,
            Type::INT8,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let analyzer_id = analyzer.id();
        for (doc, terms) in &docs {
            let (dims, chunks) = (DIMS as i32, doc.chunks.len() as i32);
            let length: i64 = terms.iter().map(|(_, l)| i64::from(*l)).sum();
            let row: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                &TENANT,
                &doc.document_id,
                &doc.title,
                &"bulk",
                &EMBEDDING_MODEL,
                &dims,
                &chunks,
                &analyzer_id,
                &length,
            ];
            writer.as_mut().write(&row).await.unwrap();
        }
        writer.finish().await.unwrap();
        let sink = client
            .copy_in(
                "COPY staged (document_id, chunk, heading, body, terms, length, access, embedding) FROM STDIN BINARY",
            )
            .await
            .unwrap();
        let types = [
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::TEXT_ARRAY,
            vector_type.clone(),
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for ((doc, terms), d) in docs.iter().zip(start..) {
            let access = restriction(d);
            for (c, (chunk, (vector, length))) in doc.chunks.iter().zip(terms).enumerate() {
                let embedding = pgvector::Vector::from(doc.vectors[c * DIMS..(c + 1) * DIMS].to_vec());
                let c = c as i32;
                let row: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                    [&doc.document_id, &c, &chunk.heading, &chunk.text, vector, length, &access, &embedding];
                writer.as_mut().write(&row).await.unwrap();
            }
        }
        writer.finish().await.unwrap();
        client
            .batch_execute(&format!(
                "INSERT INTO coach_chunks (scope, document_id, chunk, heading, body, terms, length, access)
                 SELECT '{TENANT}', document_id, chunk, heading, body, terms::tsvector, length, access FROM staged;
                 INSERT INTO {table} (chunk_id, scope, access, embedding)
                 SELECT c.id, '{TENANT}', c.access, s.embedding FROM staged s
                 JOIN coach_chunks c ON c.scope = '{TENANT}' AND c.document_id = s.document_id AND c.chunk = s.chunk;
                 TRUNCATE staged;"
            ))
            .await
            .unwrap();
        start = end;
    }
    // Every chunk findable by words, as after ingest (the load once wrote none: see
    // docs/PERFORMANCE.md, "Access groups").
    let unanalysed = client.query_one("SELECT count(*) FROM coach_chunks WHERE terms IS NULL", &[]).await.unwrap();
    assert_eq!(unanalysed.get::<_, i64>(0), 0, "chunks loaded without their terms");
    // The scope's statistics, as the adds would have counted them.
    client
        .batch_execute(&format!(
            "INSERT INTO coach_index_versions (scope, version, chunks, length)
             SELECT '{TENANT}', 1, count(*), coalesce(sum(length), 0) FROM coach_chunks WHERE scope = '{TENANT}'
             ON CONFLICT (scope) DO UPDATE SET version = coach_index_versions.version + 1,
                 chunks = excluded.chunks, length = excluded.length"
        ))
        .await
        .unwrap();
    // Who may read the restricted documents, as a PATCH (or an upload's `access`) records it.
    client
        .batch_execute(&format!(
            "INSERT INTO coach_document_access (scope, document_id, groups, rev, chunks, length)
             SELECT c.scope, c.document_id, min(c.access), 1, count(*), sum(c.length) FROM coach_chunks c
             WHERE c.scope = '{TENANT}' AND c.access IS NOT NULL
             GROUP BY c.scope, c.document_id
             ON CONFLICT (scope, document_id) DO NOTHING"
        ))
        .await
        .unwrap();
}

/// Who may read document `d` of the bench: a tenth each restricted to `hr`, `board` and
/// `legal`, the rest the whole tenant.
fn restriction(d: usize) -> Option<Vec<String>> {
    match d % 10 {
        1 => Some(vec!["hr".to_owned()]),
        2 => Some(vec!["board".to_owned()]),
        3 => Some(vec!["legal".to_owned()]),
        _ => None,
    }
}

/// The hybrid searches of `queries`, each one by every caller of `clearances` in turn (warm:
/// each statement prepared and the data read once before): the times per clearance. Checks
/// that no caller gets a passage of a document they may not read.
async fn search_as(
    index: &Arc<dyn PassageSearch>,
    queries: &[(String, Vec<f32>, String)],
    clearances: &[Clearance<'_>],
) -> Vec<Vec<Duration>> {
    for (text, vector, _) in queries.iter().take(10) {
        for clearance in clearances {
            hybrid(index, text, vector, *clearance).await;
        }
    }
    let mut times = vec![Vec::new(); clearances.len()];
    for (text, vector, _) in queries {
        for (i, clearance) in clearances.iter().enumerate() {
            let started = Instant::now();
            let passages = hybrid(index, text, vector, *clearance).await;
            times[i].push(started.elapsed());
            for p in &passages {
                let d: usize = p.source.document_id["01BENCH".len()..].parse().expect("a bench document id");
                assert!(
                    clearance.may_read(restriction(d).as_deref()),
                    "{} given to {clearance:?}",
                    p.source.document_id
                );
            }
        }
    }
    times
}

/// The hybrid top-10 of `text` and `vector` for a caller of `clearance`.
async fn hybrid(
    index: &Arc<dyn PassageSearch>,
    text: &str,
    vector: &[f32],
    clearance: Clearance<'_>,
) -> Vec<coach::model::Passage> {
    let ranking = Ranking { top_k: 10, min_score: 0.0, min_similarity: 0.3, vector_weight: 1.0 };
    let query = Query {
        terms: Analyzer::default().weighted_terms(text),
        vector: Some((EMBEDDING_MODEL.to_owned(), vector.to_vec())),
    };
    index.search(TENANT, clearance, Box::pin(async { query }), &ranking).await.expect("search")
}

/// p50 of `times`.
fn p50(times: &[Duration]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2].as_secs_f64() * 1000.0
}

/// Section 5 for one store: the unrestricted search and two callers' alternately.
async fn restricted_searches(label: &str, index: &Arc<dyn PassageSearch>, queries: &[(String, Vec<f32>, String)]) {
    let (hr, none) = (vec!["hr".to_owned()], Vec::new());
    let clearances = [Clearance::All, Clearance::Groups(&hr), Clearance::Groups(&none)];
    let times = search_as(index, queries, &clearances).await;
    report(&format!("  {label} hybrid, unrestricted (an admin)"), &times[0]);
    report(&format!("  {label} hybrid, a caller of group hr (80% readable)"), &times[1]);
    report(&format!("  {label} hybrid, a caller of no group (70% readable)"), &times[2]);
    let base = p50(&times[0]);
    println!(
        "  {label}: p50 restricted / unrestricted: hr {:.3}, no group {:.3}",
        p50(&times[1]) / base,
        p50(&times[2]) / base
    );
}

/// Builds the HNSW index of the model's table (as Coach's schema defines it) and analyses.
async fn build_index(stack: &TestStack) -> Duration {
    let client = connect(stack).await;
    let table = vector_table(EMBEDDING_MODEL, DIMS as u32);
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '4GB'; SET max_parallel_maintenance_workers = 1;
             CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops);
             ANALYZE;"
        ))
        .await
        .unwrap();
    started.elapsed()
}

/// Searches `queries` (warm: each statement prepared and the data read once before);
/// returns the times and how often the marked chunk ranked first.
async fn search(
    index: &Arc<dyn PassageSearch>,
    queries: &[(String, Vec<f32>, String)],
    vectors: bool,
) -> (Vec<Duration>, usize) {
    let ranking = Ranking { top_k: 10, min_score: 0.0, min_similarity: 0.3, vector_weight: 1.0 };
    let run = |text: &str, vector: &[f32]| {
        let query = Query {
            terms: Analyzer::default().weighted_terms(text),
            vector: vectors.then(|| (EMBEDDING_MODEL.to_owned(), vector.to_vec())),
        };
        let (index, ranking) = (index.clone(), ranking.clone());
        async move {
            index
                .search(TENANT, coach::model::Clearance::All, Box::pin(async { query }), &ranking)
                .await
                .expect("search")
        }
    };
    for (text, vector, _) in queries.iter().take(10) {
        run(text, vector).await;
    }
    let (mut times, mut first) = (Vec::new(), 0);
    for (text, vector, expected) in queries {
        let started = Instant::now();
        let passages = run(text, vector).await;
        times.push(started.elapsed());
        assert!(passages.len() <= 10);
        if passages.first().is_some_and(|p| &p.source.document_id == expected && p.source.chunk == 0) {
            first += 1;
        }
    }
    (times, first)
}

fn queries(corpus: &Corpus, docs: usize, common: bool) -> Vec<(String, Vec<f32>, String)> {
    let mut rng = fastrand::Rng::with_seed(if common { 99 } else { 42 });
    (0..QUERIES)
        .map(|_| {
            let d = rng.usize(..docs);
            let (text, vector) = corpus.query(&mut rng, d, common);
            (text, vector, format!("01BENCH{d:019}"))
        })
        .collect()
}

fn first(label: &str, hits: usize) {
    println!("  {label}: the marked chunk first in {hits} of {QUERIES}");
}

#[tokio::main]
async fn main() {
    let docs: usize = std::env::var("BENCH_PG_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // Memory for the server, as a database instance for this size would have.
    Postgres::configure(&["shared_buffers=4GB", "max_wal_size=8GB", "checkpoint_timeout=30min"]);
    let corpus = Arc::new(Corpus::new());
    println!(
        "postgres index store: tenant of {docs} documents, {} chunks, {WORDS_PER_CHUNK} words each (Zipf over \
         {VOCABULARY}), {DIMS}-d vectors in {CENTRES} clusters",
        docs * CHUNKS_PER_DOC
    );
    let lexical = ("COACH_EMBEDDING_PROVIDER", "none");
    let stack = TestStack::with_store(Store::Postgres, &[lexical]).await;
    let index = stack.document_index();

    // The documents `add` writes below are restricted as the load restricts the others: set
    // before they are indexed, as an upload's `access` is.
    for d in docs - INGEST_DOCS..docs {
        if let Some(groups) = restriction(d) {
            let id = format!("01BENCH{d:019}");
            index.set_access(&Scope::Tenant(TENANT.into()), &id, Some(&groups), 1).await.expect("access");
        }
    }
    // Coach's schema and the model's vector table, from a first document through `add`.
    let seed = corpus.document(docs - 1);
    let key = format!("uploads/{TENANT}/{}/seed.md", seed.document_id);
    stack.put(&key, b"seed").await;
    let etag = head(&stack, &key).await;
    index.add(&Scope::Tenant(TENANT.into()), seed, &key, &etag).await.expect("first document");

    // 1. Load.
    let bulk = docs - INGEST_DOCS;
    let started = Instant::now();
    bulk_load(&corpus, &stack, 0, bulk).await;
    let loaded = started.elapsed();
    let built = build_index(&stack).await;
    println!(
        "1. bulk load of {bulk} documents ({} chunks): {:.0} s ({:.0} chunks/s); HNSW build: {:.0} s",
        bulk * CHUNKS_PER_DOC,
        loaded.as_secs_f64(),
        (bulk * CHUNKS_PER_DOC) as f64 / loaded.as_secs_f64(),
        built.as_secs_f64()
    );

    // 2. Ingest through Coach's `add`.
    let mut sources = Vec::new();
    for d in bulk..docs - 1 {
        let key = format!("uploads/{TENANT}/01BENCH{d:019}/guide.md");
        stack.put(&key, b"source").await;
        sources.push((d, key.clone(), head(&stack, &key).await));
    }
    let started = Instant::now();
    let adds = sources.iter().map(|(d, key, etag)| {
        let (index, corpus) = (index.clone(), corpus.clone());
        async move {
            let doc = corpus.document(*d);
            index.add(&Scope::Tenant(TENANT.into()), doc, key, etag).await.expect("add")
        }
    });
    let added: Vec<_> = futures_util::stream::iter(adds).buffer_unordered(8).collect().await;
    let took = started.elapsed();
    assert!(added.iter().all(|a| *a == coach::store::Added::Indexed));
    println!(
        "2. ingest through DocumentIndex::add, 8 at a time, into the loaded tenant: {} documents ({} chunks, \
         {DIMS}-d) in {:.1} s: {:.1} documents/s, {:.0} chunks/s",
        added.len(),
        added.len() * CHUNKS_PER_DOC,
        took.as_secs_f64(),
        added.len() as f64 / took.as_secs_f64(),
        (added.len() * CHUNKS_PER_DOC) as f64 / took.as_secs_f64()
    );
    let rows = stack.sql(&format!("SELECT count(*) FROM coach_chunks WHERE scope = '{TENANT}'"));
    println!(
        "   rows: {rows} chunks; database size {}",
        stack.sql("SELECT pg_size_pretty(pg_database_size(current_database()))")
    );

    // 3. Search.
    let search_pg = stack.passage_search();
    let plain = queries(&corpus, docs, false);
    let common = queries(&corpus, docs, true);
    println!("3. PassageSearch::search top-10, warm, {QUERIES} queries each:");
    let (times, hits) = search(&search_pg, &plain, true).await;
    report("  postgres hybrid (marker + 3 content words + vector)", &times);
    first("hybrid", hits);
    let (times, hits) = search(&search_pg, &plain, false).await;
    report("  postgres words only", &times);
    first("words only", hits);
    let (times, hits) = search(&search_pg, &common, true).await;
    report("  postgres hybrid, with a very common word", &times);
    first("hybrid, common word", hits);
    let pg_plain = plain.clone();

    // To look at the plans: the server stays up until the bench is stopped.
    if std::env::var("BENCH_PG_HOLD").is_ok_and(|v| v == "1") {
        println!(
            "holding: {} (until SIGINT or SIGTERM)",
            Postgres::shared().url(stack.database.as_deref().unwrap_or_default())
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Returning stops the server and removes its directory.
        return;
    }

    // 4. The S3 store at 100,000 chunks, same run, same queries over its documents.
    let s3 = TestStack::with_env(&[lexical]).await;
    let small = 10_000.min(docs);
    let shards: Vec<Shard> = (0..small).map(|d| corpus.document(d)).collect();
    s3.seed_index(&Scope::Tenant(TENANT.into()), shards, 32 << 20).await;
    let search_s3 = s3.passage_search();
    let plain = queries(&corpus, small, false);
    let common = queries(&corpus, small, true);
    println!("4. baseline: the S3 store, tenant of {small} documents ({} chunks), warm:", small * CHUNKS_PER_DOC);
    let (times, hits) = search(&search_s3, &plain, true).await;
    report("  s3 hybrid", &times);
    first("s3 hybrid", hits);
    let (times, hits) = search(&search_s3, &common, true).await;
    report("  s3 hybrid, with a very common word", &times);
    first("s3 hybrid, common word", hits);

    // 5. Access groups: the S3 store's documents restricted as the load restricted them in
    // PostgreSQL (one manifest write, as PATCHes would leave it).
    let scope = Scope::Tenant(TENANT.into());
    let store = s3.aws.bucket();
    let ManifestRead::Changed { etag, mut manifest } = store.manifest(&scope, None).await.expect("manifest") else {
        panic!("the seeded tenant has a manifest")
    };
    for d in 0..small {
        if let Some(groups) = restriction(d) {
            manifest.set_access(&format!("01BENCH{d:019}"), Some(&groups), 1);
        }
    }
    store.put_manifest(&scope, &manifest, Some(&etag)).await.expect("manifest written");
    println!("5. access groups, 30% of the documents restricted; each query by each caller in turn, warm:");
    restricted_searches(&format!("postgres ({} chunks)", docs * CHUNKS_PER_DOC), &search_pg, &pg_plain).await;
    restricted_searches(&format!("s3 ({} chunks)", small * CHUNKS_PER_DOC), &search_s3, &plain).await;
}

async fn head(stack: &TestStack, key: &str) -> String {
    let head = stack.aws.s3.head_object().bucket(&stack.config.bucket).key(key).send().await.unwrap();
    head.e_tag().unwrap().to_owned()
}
