//! Micro-benchmarks of Coach's CPU work on the request and ingest paths: prompt assembly,
//! text extraction and chunking throughput, index segment loading, and hybrid retrieval
//! (BM25 + cosine over 384-d vectors) at 10k and 100k chunks.
//!
//!     cargo bench -p coach-shared --bench core
//!
//! Inputs are synthetic but shaped like real use: English-like text drawn from a
//! 5,000-word vocabulary with a Zipf-like skew, chunks of about 1,000 characters, documents
//! in one compacted segment or one segment each, random unit-ish vectors. Seeded, so runs
//! are comparable.

use std::{hint::black_box, sync::Arc};

use coach::{
    analysis::Analyzer,
    index::{
        rank::search,
        segment::{build, Loaded},
        Part,
    },
    ingest::{
        chunk::{chunk_markdown, chunk_text, ChunkConfig},
        extract::{extract, html_to_text},
    },
    llm::Turn,
    model::{Author, Chunk, Kind, Passage, Query, Ranking, Shard, Source},
    prompt,
    store::Segment,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const DIMS: usize = 384;

/// A seeded, English-like text generator.
struct Words {
    rng: fastrand::Rng,
    vocabulary: Vec<String>,
}

impl Words {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let syllables =
            ["co", "ach", "ing", "feed", "back", "goal", "team", "plan", "re", "view", "ta", "lk", "on", "ex"];
        let vocabulary = (0..5000)
            .map(|_| (0..rng.usize(1..4)).map(|_| syllables[rng.usize(..syllables.len())]).collect::<String>())
            .collect();
        Self { rng, vocabulary }
    }

    /// A word, skewed towards the start of the vocabulary like natural text.
    fn word(&mut self) -> &str {
        let u = self.rng.f64();
        let i = ((u * u * u) * self.vocabulary.len() as f64) as usize;
        &self.vocabulary[i.min(self.vocabulary.len() - 1)]
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            let w = self.word().to_owned();
            s.push_str(&w);
        }
        s.push('.');
        s
    }

    /// A markdown document of about `bytes` bytes: sections with headings and paragraphs.
    fn markdown(&mut self, bytes: usize) -> String {
        let mut doc = String::with_capacity(bytes + 1024);
        let mut section = 0;
        while doc.len() < bytes {
            section += 1;
            doc.push_str(&format!("\n## Section {section}: {}\n\n", self.sentence(4)));
            for _ in 0..4 {
                for _ in 0..5 {
                    let n = self.rng.usize(8..20);
                    doc.push_str(&self.sentence(n));
                    doc.push(' ');
                }
                doc.push_str("\n\n");
            }
        }
        doc
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMS).map(|_| self.rng.f32() * 2.0 - 1.0).collect()
    }

    fn shard(&mut self, id: usize, chunks: usize, with_vectors: bool) -> Shard {
        let mut shard = Shard {
            document_id: format!("doc-{id:05}"),
            title: format!("document-{id}.md"),
            chunks: Vec::with_capacity(chunks),
            embedding_model: with_vectors.then(|| "bench-384".to_owned()),
            dims: if with_vectors { DIMS as u32 } else { 0 },
            vectors: Vec::new(),
        };
        for c in 0..chunks {
            let n = self.rng.usize(8..20);
            let text = (0..9).map(|_| self.sentence(n)).collect::<Vec<_>>().join(" ");
            shard.chunks.push(Chunk { heading: Some(format!("Section {c}")), text, span: None });
            if with_vectors {
                let v = self.vector();
                shard.vectors.extend(v);
            }
        }
        shard
    }
}

fn retrieval_config() -> Ranking {
    Ranking { top_k: 5, min_score: 0.0, min_similarity: 0.2, vector_weight: 1.0 }
}

/// Searchable parts of `docs`: one compacted segment, or one segment per document (deltas
/// not yet compacted), every document live.
fn parts(docs: Vec<Shard>, compacted: bool) -> Vec<Part> {
    let part = |docs: Vec<Shard>| {
        let live = Arc::new(vec![true; docs.len()]);
        let analyzer = Analyzer::default();
        Part { segment: Arc::new(Loaded::new(build(docs, &analyzer), &analyzer)), live }
    };
    if compacted {
        vec![part(docs)]
    } else {
        docs.into_iter().map(|d| part(vec![d])).collect()
    }
}

fn bench_retrieval(c: &mut Criterion) {
    let mut group = c.benchmark_group("retrieval");
    group.sample_size(30);
    let mut words = Words::new(7);
    let text = "how do I give feedback on team goals coaching review";
    let terms = Analyzer::default().weighted_terms(text);
    for (documents, per_document) in [(100usize, 100usize), (100, 1000)] {
        let total = documents * per_document;
        let docs: Vec<Shard> = (0..documents).map(|d| words.shard(d, per_document, true)).collect();
        let query_vector = words.vector();
        let config = retrieval_config();
        for (layout, compacted) in [("segment", true), ("deltas", false)] {
            let parts = parts(docs.clone(), compacted);
            group.bench_with_input(BenchmarkId::new(format!("hybrid_top5_{layout}"), total), &parts, |b, parts| {
                let query = Query { terms: terms.clone(), vector: Some(("bench-384".into(), query_vector.clone())) };
                b.iter(|| search(black_box(parts), &query, &config))
            });
            group.bench_with_input(BenchmarkId::new(format!("bm25_top5_{layout}"), total), &parts, |b, parts| {
                let query = Query { terms: terms.clone(), vector: None };
                b.iter(|| search(black_box(parts), &query, &config))
            });
        }
    }
    group.finish();
}

fn bench_segment_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("segment_load");
    let mut words = Words::new(11);
    for (chunks, vectors) in [(100usize, false), (100, true), (1000, true)] {
        let analyzer = Analyzer::default();
        let bytes = build(vec![words.shard(0, chunks, vectors)], &analyzer).encode();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let name = format!("{chunks}_chunks{}", if vectors { "_384d" } else { "" });
        group.bench_with_input(BenchmarkId::new("verify_decode_prepare", name), &bytes, |b, bytes| {
            b.iter(|| Loaded::new(Segment::decode(black_box(bytes)).expect("valid segment"), &analyzer))
        });
    }
    group.finish();
}

fn bench_ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    let mut words = Words::new(3);
    let markdown = words.markdown(1 << 20);
    let html = format!(
        "<html><head><style>p{{}}</style></head><body>{}</body></html>",
        markdown
            .split("\n\n")
            .map(|p| match p.strip_prefix("\n## ") {
                Some(h) => format!("<h2>{h}</h2>"),
                None => format!("<p>{p} &amp; more</p>"),
            })
            .collect::<String>()
    );
    let config = ChunkConfig::default();
    group.throughput(Throughput::Bytes(markdown.len() as u64));
    group.bench_function("extract_and_chunk_markdown_1MiB", |b| {
        b.iter(|| chunk_markdown(&extract(Kind::Markdown, black_box(markdown.as_bytes())).expect("text"), config))
    });
    group.bench_function("extract_and_chunk_text_1MiB", |b| {
        b.iter(|| chunk_text(&extract(Kind::Text, black_box(markdown.as_bytes())).expect("text"), config))
    });
    group.bench_function("chunk_markdown_1MiB", |b| b.iter(|| chunk_markdown(black_box(&markdown), config)));
    group.throughput(Throughput::Bytes(html.len() as u64));
    group.bench_function("html_to_text_1MiB", |b| b.iter(|| html_to_text(black_box(&html))));
    // Hostile markup (issue 17): every tag opens a section to skip, and ampersands without
    // entities; both were quadratic in the file's length.
    let hostile = "<style></style>&&".repeat(html.len() / 17);
    group.throughput(Throughput::Bytes(hostile.len() as u64));
    group.bench_function("html_to_text_1MiB_hostile", |b| b.iter(|| html_to_text(black_box(&hostile))));
    group.finish();
}

fn bench_prompt(c: &mut Criterion) {
    let mut words = Words::new(5);
    let system = words.markdown(6_000);
    let passages: Vec<Passage> = (0..5)
        .map(|i| Passage {
            source: Source {
                document_id: format!("doc-{i}"),
                title: format!("document-{i}.md"),
                chunk: i,
                score: 0.5,
                snippet: words.sentence(20),
                ..Default::default()
            },
            heading: None,
            text: (0..9).map(|_| words.sentence(15)).collect::<Vec<_>>().join(" "),
        })
        .collect();
    let history: Vec<Turn> = (0..20)
        .map(|i| Turn { role: if i % 2 == 0 { Author::User } else { Author::Assistant }, content: words.sentence(60) })
        .collect();
    let profile = serde_json::json!({"name": "Ada", "role": "team lead", "goals": ["delegate more"]});
    let boundary = prompt::boundary();
    let mut group = c.benchmark_group("prompt");
    group.bench_function("build_20_turns_5_passages", |b| {
        b.iter(|| {
            prompt::build(black_box(&system), Some(&profile), &passages, &history, "How do I start?", 8_000, &boundary)
        })
    });
    group.bench_function("build_over_budget", |b| {
        b.iter(|| {
            prompt::build(black_box(&system), Some(&profile), &passages, &history, "How do I start?", 2_500, &boundary)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_prompt, bench_ingest, bench_segment_load, bench_retrieval);
criterion_main!(benches);
