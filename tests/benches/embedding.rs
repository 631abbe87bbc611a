//! The embedded embedding model (`COACH_EMBEDDING_PROVIDER=local`): load time, query
//! embedding latency, chunks embedded per second at ingest, and peak memory.
//!
//!     scripts/bench.sh   (or: RAYON_NUM_THREADS=1 cargo bench -p coach-integration-tests --bench embedding)
//!
//! `RAYON_NUM_THREADS` sets the threads the model may use (the bench script runs it with 1,
//! for figures per core, and with every core). The ingest figure embeds real prose: this
//! repository's README and docs, chunked as ingest chunks them (default sizes), each chunk
//! with its heading path as ingest sends it. Peak memory is the process's high-water RSS
//! (`VmHWM`), read before the model loads and at the end.

use std::time::{Duration, Instant};

use coach::{
    embeddings::local::{Kernels, LocalModel},
    ingest::chunk::{chunk_markdown, ChunkConfig},
};
use coach_testkit::stack::model_dir;

const QUERIES: [&str; 8] = [
    "How do I give feedback to a colleague?",
    "What is the refund policy for annual plans?",
    "plan my week",
    "Which regions is the service available in, and how is data residency handled?",
    "reset password admin console",
    "Who approves travel expenses over the limit?",
    "How are documents indexed after upload?",
    "What should a one-on-one agenda contain?",
];
const QUERY_ROUNDS: usize = 50;
/// At least this many chunks are embedded for the ingest figure.
const MIN_CHUNKS: usize = 256;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    println!("embedding: all-MiniLM-L6-v2 on CPU, threads: {threads}");
    let rss_before = status_kib("VmHWM:");

    let dir = model_dir();
    let started = Instant::now();
    let model = LocalModel::load(&dir).expect("scripts/model.sh installs the model");
    let first_load = started.elapsed();
    println!("load: {:.0} ms, RSS {:.0} MiB after it", ms(first_load), status_kib("VmRSS:") as f64 / 1024.0);
    println!("kernels: {}", model.kernels());
    // Query embedding: one short text at a time, as chat embeds a question.
    let started = Instant::now();
    model.embed(&[QUERIES[0]]).unwrap();
    println!("first embedding after load: {:.1} ms", ms(started.elapsed()));
    let queries = |model: &LocalModel| {
        let mut times = Vec::new();
        for _ in 0..QUERY_ROUNDS {
            for query in QUERIES {
                let started = Instant::now();
                std::hint::black_box(model.embed(&[query]).unwrap());
                times.push(started.elapsed());
            }
        }
        times.sort();
        println!(
            "query: p50 {:.2} ms, p95 {:.2} ms over {} questions of 3-16 words ({} kernels)",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            times.len(),
            model.kernels()
        );
    };
    queries(&model);

    // Ingest: real prose, chunked and labelled as ingest does it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs")).unwrap().flatten().map(|e| e.path()).collect();
    docs.sort();
    sources.extend(docs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    let mut texts: Vec<String> = Vec::new();
    for source in &sources {
        let text = std::fs::read_to_string(source).unwrap();
        for chunk in chunk_markdown(&text, ChunkConfig::default()) {
            texts.push(match &chunk.heading {
                Some(h) => format!("{h}\n\n{}", chunk.text),
                None => chunk.text,
            });
        }
    }
    let distinct = texts.len();
    while texts.len() < MIN_CHUNKS {
        texts.extend_from_within(..distinct);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let chars: usize = refs.iter().map(|t| t.len()).sum();
    let ingest = |model: &LocalModel| {
        model.embed(&refs[..32]).unwrap();
        let started = Instant::now();
        let vectors = model.embed(&refs).unwrap();
        let elapsed = started.elapsed();
        assert_eq!(vectors.len(), refs.len());
        println!(
            "ingest: {} chunks ({} distinct, {:.0} chars on average) in {:.2} s: {:.1} chunks/s ({} kernels)",
            refs.len(),
            distinct,
            chars as f64 / refs.len() as f64,
            elapsed.as_secs_f64(),
            refs.len() as f64 / elapsed.as_secs_f64(),
            model.kernels()
        );
    };
    ingest(&model);
    println!(
        "memory: peak RSS {:.0} MiB with the model ({:.0} MiB before it loaded)",
        status_kib("VmHWM:") as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );

    // The baseline in the same run: the same chunks through the f32 kernels.
    if model.kernels() != "f32" {
        let f32_model = LocalModel::load_with(&dir, Kernels::F32).unwrap();
        queries(&f32_model);
        ingest(&f32_model);
    }

    // Loading again, the model dropped first: the first load above read the file from disk
    // (or the page cache, if a run before left it there); these read it from the page cache.
    drop(model);
    let mut loads = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        drop(LocalModel::load(&dir).unwrap());
        loads.push(started.elapsed());
    }
    loads.sort();
    println!("load: first {:.0} ms, again p50 {:.0} ms", ms(first_load), ms(percentile(&loads, 0.5)));
}
