//! Retrieval quality in process, for tuning (`make eval` measures the same end to end,
//! through the API): a CISI-format collection chunked as ingest does (plain text), embedded
//! with the embedded model, built into one segment and ranked by `rank::search`, with the
//! conversational runs of `make eval` ((a) the query alone, (b) the query then a follow-up,
//! (c) another query then the query). Prints nDCG@10 of each run.
//!
//!     cargo run -p coach-integration-tests --example rank_eval -- ../shared/eval/cisi [models/all-minilm-l6-v2]
//!
//! `COACH_SEARCH_LANGUAGE`, `COACH_CHUNK_*` and `COACH_RETRIEVAL_*` (but ten passages) are
//! read as Coach reads them. Chunk vectors are cached in `target/eval/` (keyed by the
//! collection's size and chunk count).

use std::{path::Path, sync::Arc};

use coach::{
    analysis::Analyzer,
    embeddings::local::LocalModel,
    index::{
        rank::search,
        segment::{build, Loaded},
        Part,
    },
    ingest::chunk::{chunk_text, ChunkConfig},
    model::{Query, Ranking, Shard},
    retrieval::{analyse, mixed_terms, mixed_vector, shares},
};
use coach_testkit::collection::{follow_ups, ndcg, Collection};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(args.first().map_or("../shared/eval/cisi", String::as_str));
    let model_dir = Path::new(args.get(1).map_or("models/all-minilm-l6-v2", String::as_str));
    let Collection { docs, queries, relevant } = Collection::read(dir).expect("a CISI-format collection");
    let follow_ups = follow_ups();
    let model = LocalModel::load(model_dir).expect("model");
    let env = coach::config::Env::process();
    let analyzer = Analyzer::from_env(&env).expect("COACH_SEARCH_LANGUAGE");
    let chunking = ChunkConfig::from_env(&env).expect("COACH_CHUNK_*");
    let mut shards: Vec<Shard> = docs
        .iter()
        .map(|(id, text)| Shard {
            document_id: id.clone(),
            title: format!("cisi-{id}.txt"),
            chunks: chunk_text(text, chunking),
            embedding_model: Some("m".into()),
            dims: model.dims() as u32,
            vectors: Vec::new(),
        })
        .collect();
    let total: usize = shards.iter().map(|s| s.chunks.len()).sum();
    let cache = Path::new("target/eval").join(format!("rank-eval-{}-{total}.f32", docs.len()));
    let flat: Vec<f32> = match std::fs::read(&cache) {
        Ok(bytes) if bytes.len() == total * model.dims() * 4 => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        _ => {
            eprintln!("embedding {total} chunks");
            let texts: Vec<&str> = shards.iter().flat_map(|s| s.chunks.iter().map(|c| c.text.as_str())).collect();
            let flat: Vec<f32> = model.embed(&texts).expect("embed").concat();
            std::fs::create_dir_all("target/eval").expect("target/eval");
            std::fs::write(&cache, flat.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).expect("cache");
            flat
        }
    };
    let mut offset = 0;
    for shard in &mut shards {
        let n = shard.chunks.len() * model.dims();
        shard.vectors = flat[offset..offset + n].to_vec();
        offset += n;
    }
    let segment = build(shards, &analyzer);
    let live = Arc::new(vec![true; segment.docs.len()]);
    let parts = vec![Part { segment: Arc::new(Loaded::new(segment, &analyzer)), live }];
    let ranking = Ranking { top_k: 10, ..Ranking::from_env(&env).expect("COACH_RETRIEVAL_*") };
    let embed = |text: &str| Some(Arc::new(model.embed(&[text]).expect("embed").remove(0)));

    let rank = |texts: &[&str], vectors: bool| -> Vec<String> {
        let analysed = analyse(&analyzer, texts);
        let shares = shares(&analysed);
        let vector = if vectors {
            let vs: Vec<Option<Arc<Vec<f32>>>> = texts.iter().map(|t| embed(t)).collect();
            mixed_vector(&vs, &shares).map(|v| ("m".to_owned(), v))
        } else {
            None
        };
        let query = Query { terms: mixed_terms(&analysed, &shares), vector };
        let mut ranked: Vec<String> = Vec::new();
        for p in search(&parts, &query, &ranking) {
            if !ranked.contains(&p.source.document_id) {
                ranked.push(p.source.document_id);
            }
        }
        ranked
    };
    let mean = |f: &dyn Fn(usize, &str, &str) -> Vec<String>| -> f64 {
        let sum: f64 = queries.iter().enumerate().map(|(i, (id, text))| ndcg(&f(i, id, text), &relevant[id], 10)).sum();
        sum / queries.len() as f64
    };
    let bm25 = mean(&|_, _, q| rank(&[q], false));
    let a = mean(&|_, _, q| rank(&[q], true));
    let b = mean(&|i, _, q| rank(&[follow_ups[i % follow_ups.len()], q], true));
    let c = mean(&|i, _, q| rank(&[q, &queries[(i + 1) % queries.len()].1], true));
    let b_bm25 = mean(&|i, _, q| rank(&[follow_ups[i % follow_ups.len()], q], false));
    let c_bm25 = mean(&|i, _, q| rank(&[q, &queries[(i + 1) % queries.len()].1], false));
    println!(
        "{} documents, {} chunks, {} judged queries, analyser {}",
        docs.len(),
        total,
        queries.len(),
        analyzer.id()
    );
    println!("BM25 only: {bm25:.3}");
    println!("hybrid: (a) {a:.3}  (b) {b:.3} = {:.0}%  (c) {c:.3} = {:.0}%", 100.0 * b / a, 100.0 * c / a);
    println!(
        "BM25 only: (b) {b_bm25:.3} = {:.0}%  (c) {c_bm25:.3} = {:.0}%",
        100.0 * b_bm25 / bm25,
        100.0 * c_bm25 / bm25
    );
}
