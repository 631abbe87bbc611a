//! Hybrid retrieval over a tenant's documents plus the shared docs, in process.
//!
//! The index shards of the tenant's scope and the shared scope are listed through the
//! [`IndexStore`] (both scopes at once; each listing cached for `COACH_INDEX_REVALIDATE_SECS`),
//! loaded concurrently (at most [`LOAD_PARALLELISM`] at a time) once per ETag, decoded on
//! the blocking pool, and kept in memory with an inverted index and unit vectors (plus an
//! 8-bit copy of them). No other scope is ever read, so another tenant's documents cannot be
//! retrieved.
//!
//! A query is ranked twice: BM25 over chunk text (always), and cosine similarity against
//! chunk vectors when both the query and the shard have embeddings from the same model
//! (an 8-bit scan picks candidates, exact f32 cosine ranks them). The best 100 (or more for
//! a large `top_k`) of each ranking are fused with reciprocal rank fusion (k = 60); the top
//! `top_k` above `min_score` are returned with their sources.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt};
use moka::future::Cache;

use crate::{
    config::{ConfigError, Env},
    embeddings::Embedder,
    error::Error,
    model::{Passage, Scope, Shard, Source},
    store::{IndexStore, ShardRef, StoreError},
};

/// Retrieval settings (`COACH_RETRIEVAL_*`, `COACH_INDEX_REVALIDATE_SECS`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalConfig {
    pub top_k: usize,
    /// Least fused score a passage needs (0 keeps every match).
    pub min_score: f32,
    /// Least cosine similarity for a vector match to count.
    pub min_similarity: f32,
    /// Least time between listings of a scope's shards.
    pub revalidate: Duration,
}

impl RetrievalConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            top_k: env.number("COACH_RETRIEVAL_TOP_K", 5, 0, 50)? as usize,
            min_score: env.float("COACH_RETRIEVAL_MIN_SCORE", 0.0, 0.0, 1.0)?,
            min_similarity: env.float("COACH_RETRIEVAL_MIN_SIMILARITY", 0.3, -1.0, 1.0)?,
            revalidate: Duration::from_secs(env.number("COACH_INDEX_REVALIDATE_SECS", 5, 0, 3600)?),
        })
    }
}

/// Shards read from the store at once, at most, when an instance loads an index.
pub const LOAD_PARALLELISM: usize = 16;

/// Longest snippet stored with a source, in characters.
const SNIPPET_CHARS: usize = 300;
const RRF_K: f32 = 60.0;
const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;
/// How many of each ranking take part in fusion, at least (see [`window`]).
const RANK_WINDOW: usize = 100;
/// The 8-bit vector scan keeps this many candidates per window slot for exact re-ranking.
const RERANK_FACTOR: usize = 4;
/// How far below `min_similarity` an 8-bit estimate may be and still be re-checked exactly:
/// far above the worst quantisation error in the unit test (about 0.001 at 384 dimensions).
const QUANTISATION_SLACK: f32 = 0.05;

/// A shard ready for search.
pub struct LoadedShard {
    /// The shard as stored, except that its vectors are scaled to unit length.
    pub shard: Shard,
    /// term -> (chunk, term frequency)
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Tokens per chunk.
    lengths: Vec<u32>,
    /// The unit vectors quantised to 8 bits (`chunks * dims`), scanned first.
    quantised: Vec<i8>,
    /// Per chunk: the value of one quantisation step (0 for a zero vector, never matched).
    steps: Vec<f32>,
}

impl LoadedShard {
    pub fn new(mut shard: Shard) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(shard.chunks.len());
        let mut counts: HashMap<String, u32> = HashMap::new();
        for (i, chunk) in shard.chunks.iter().enumerate() {
            let mut length = 0;
            let heading = chunk.heading.as_deref().unwrap_or_default();
            for token in tokens(heading).chain(tokens(&chunk.text)) {
                *counts.entry(token).or_default() += 1;
                length += 1;
            }
            lengths.push(length);
            for (term, tf) in counts.drain() {
                postings.entry(term).or_default().push((i as u32, tf));
            }
        }
        let dims = shard.dims as usize;
        let mut quantised = vec![0; shard.vectors.len()];
        let mut steps = Vec::with_capacity(shard.chunks.len());
        if dims > 0 {
            for (v, q) in shard.vectors.chunks_exact_mut(dims).zip(quantised.chunks_exact_mut(dims)) {
                normalise(v);
                steps.push(quantise(v, q));
            }
        }
        Self { shard, postings, lengths, quantised, steps }
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// Writes `v` as 8-bit steps of `max |v| / 127` into `out` and returns the step (0 when `v`
/// is zero).
fn quantise(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        out.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let step = max / 127.0;
    for (q, x) in out.iter_mut().zip(v) {
        *q = (x / step).round().clamp(-127.0, 127.0) as i8;
    }
    step
}

/// Dot product of two 8-bit vectors, written so the compiler vectorises it (16 lanes).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            lanes[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    lanes.iter().sum::<i32>() + tail
}

/// Dot product of two f32 vectors with eight running sums, so it vectorises.
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Lowercased words of two or more characters, without common English stop words, with a
/// plural `s` removed.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "has", "have", "how", "if", "in",
    "is", "it", "its", "me", "my", "not", "of", "on", "or", "so", "that", "the", "their", "them", "then", "there",
    "they", "this", "to", "was", "we", "what", "when", "which", "who", "will", "with", "you", "your", "can", "should",
    "would", "about", "into", "our", "us", "i",
];

/// A chunk: (shard index, chunk index).
type Hit = ((usize, u32), f32);

/// Best first; ties by position, so rankings are stable.
fn by_score(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The best `n` of `hits`, best first.
fn best(mut hits: Vec<Hit>, n: usize) -> Vec<Hit> {
    if hits.len() > n && n > 0 {
        hits.select_nth_unstable_by(n - 1, by_score);
    }
    hits.truncate(n);
    hits.sort_unstable_by(by_score);
    hits
}

/// How many of each ranking to fuse for `top_k` results: enough that a chunk outside both
/// windows, scoring at most 2 / (RRF_K + window + 1), could not beat the `top_k`-th chunk
/// of either ranking, which scores at least 1 / (RRF_K + top_k).
fn window(top_k: usize) -> usize {
    RANK_WINDOW.max(2 * top_k + RRF_K as usize)
}

/// Ranks the chunks of `shards` for a query (and its embedding, if any).
pub fn search(
    shards: &[Arc<LoadedShard>],
    query: &str,
    query_vector: Option<(&str, &[f32])>,
    config: &RetrievalConfig,
) -> Vec<Passage> {
    let window = window(config.top_k);
    let lexical = best(bm25(shards, query), window);
    let semantic = match query_vector {
        Some((model, vector)) => best(similar(shards, model, vector, config.min_similarity, window), window),
        None => Vec::new(),
    };

    // Reciprocal rank fusion.
    let mut fused: HashMap<(usize, u32), f32> = HashMap::new();
    for ranking in [&lexical, &semantic] {
        for (rank, (id, _)) in ranking.iter().enumerate() {
            *fused.entry(*id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let fused: Vec<Hit> = fused.into_iter().filter(|(_, s)| *s >= config.min_score).collect();
    best(fused, config.top_k)
        .into_iter()
        .map(|((si, ci), score)| {
            let shard = &shards[si].shard;
            let chunk = &shard.chunks[ci as usize];
            let text = match &chunk.heading {
                Some(h) => format!("{h}\n{}", chunk.text),
                None => chunk.text.clone(),
            };
            let snippet: String = chunk.text.chars().take(SNIPPET_CHARS).collect();
            Passage {
                source: Source {
                    document_id: shard.document_id.clone(),
                    title: shard.title.clone(),
                    chunk: ci,
                    score,
                    snippet,
                },
                text,
            }
        })
        .collect()
}

/// BM25 scores of every chunk that has a query term, over all `shards` as one collection.
fn bm25(shards: &[Arc<LoadedShard>], query: &str) -> Vec<Hit> {
    let mut terms: Vec<String> = tokens(query).collect();
    terms.sort();
    terms.dedup();
    let total_chunks: usize = shards.iter().map(|s| s.lengths.len()).sum();
    let total_length: u64 = shards.iter().flat_map(|s| s.lengths.iter()).map(|&l| u64::from(l)).sum();
    let avg_length = if total_chunks == 0 { 1.0 } else { (total_length as f32 / total_chunks as f32).max(1.0) };
    let idfs: Vec<f32> = terms
        .iter()
        .map(|term| {
            let df: usize = shards.iter().map(|s| s.postings.get(term).map_or(0, Vec::len)).sum();
            ((total_chunks as f32 - df as f32 + 0.5) / (df as f32 + 0.5) + 1.0).ln()
        })
        .collect();
    let mut hits = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    for (si, shard) in shards.iter().enumerate() {
        let mut any = false;
        for (term, idf) in terms.iter().zip(&idfs) {
            let Some(postings) = shard.postings.get(term) else { continue };
            if !any {
                scores.clear();
                scores.resize(shard.lengths.len(), 0.0);
                any = true;
            }
            for &(chunk, tf) in postings {
                let tf = tf as f32;
                let length = shard.lengths[chunk as usize] as f32;
                scores[chunk as usize] +=
                    idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * length / avg_length));
            }
        }
        if any {
            // Every matched term adds a positive score (idf > 0), so zero means no match.
            hits.extend(scores.iter().enumerate().filter(|(_, s)| **s > 0.0).map(|(ci, s)| ((si, ci as u32), *s)));
        }
    }
    hits
}

/// Chunks whose vector (from `model`) has cosine similarity of at least `min_similarity`
/// to `vector`: a scan of the 8-bit vectors picks candidates, exact f32 cosine ranks them.
fn similar(shards: &[Arc<LoadedShard>], model: &str, vector: &[f32], min_similarity: f32, window: usize) -> Vec<Hit> {
    let mut unit = vector.to_vec();
    normalise(&mut unit);
    let mut query = vec![0i8; unit.len()];
    let query_step = quantise(&unit, &mut query);
    if query_step == 0.0 {
        return Vec::new();
    }
    let floor = min_similarity - QUANTISATION_SLACK;
    let mut estimates = Vec::new();
    for (si, shard) in shards.iter().enumerate() {
        let dims = shard.shard.dims as usize;
        if dims != unit.len() || shard.shard.embedding_model.as_deref() != Some(model) {
            continue;
        }
        for (ci, (row, step)) in shard.quantised.chunks_exact(dims).zip(&shard.steps).enumerate() {
            let estimate = dot_i8(row, &query) as f32 * step * query_step;
            if *step > 0.0 && estimate >= floor {
                estimates.push(((si, ci as u32), estimate));
            }
        }
    }
    best(estimates, window * RERANK_FACTOR)
        .into_iter()
        .filter_map(|((si, ci), _)| {
            let shard = &shards[si].shard;
            let dims = shard.dims as usize;
            let row = &shard.vectors[ci as usize * dims..(ci as usize + 1) * dims];
            let cosine = dot_f32(row, &unit);
            (cosine >= min_similarity).then_some(((si, ci), cosine))
        })
        .collect()
}

/// A scope's shards as listed, and when.
struct Listing {
    at: Instant,
    shards: Vec<ShardRef>,
}

/// What the index is unavailable because of (for the log line at the edge).
const INDEX_UNAVAILABLE: &str = "the document index is unavailable";

fn unavailable(cause: StoreError) -> Error {
    Error::unavailable(INDEX_UNAVAILABLE, cause)
}

/// The shards of each scope, loaded from the [`IndexStore`] and cached in memory.
pub struct Index {
    store: Arc<dyn IndexStore>,
    revalidate: Duration,
    /// Per scope: when it was listed, and its shards.
    listings: Cache<String, Arc<Listing>>,
    /// Per shard key: the ETag loaded, and the shard.
    shards: Cache<String, Arc<(String, Arc<LoadedShard>)>>,
}

impl Index {
    pub fn new(store: Arc<dyn IndexStore>, revalidate: Duration) -> Self {
        Self {
            store,
            revalidate,
            listings: Cache::builder().max_capacity(1_000).build(),
            shards: Cache::builder().max_capacity(100_000).build(),
        }
    }

    /// The shards a caller of `tenant` may search, as listed: the tenant's and the shared
    /// docs' (both listings at once).
    pub async fn listed_for(&self, tenant: &str) -> Result<Vec<ShardRef>, Error> {
        let (own, shared) =
            tokio::try_join!(self.listing(Scope::Tenant(tenant.to_owned())), self.listing(Scope::Global))?;
        Ok(own.shards.iter().chain(&shared.shards).cloned().collect())
    }

    /// The listed shards, from memory when their ETag is unchanged, else read at most
    /// [`LOAD_PARALLELISM`] at a time; in listing order. A damaged or vanished shard is
    /// skipped (and logged), never a failed chat.
    pub async fn load(&self, listed: Vec<ShardRef>) -> Result<Vec<Arc<LoadedShard>>, Error> {
        let loaded: Vec<Option<Arc<LoadedShard>>> =
            futures_util::stream::iter(listed.into_iter().map(|r| async move { self.shard(r).await }))
                .buffered(LOAD_PARALLELISM)
                .try_collect()
                .await?;
        Ok(loaded.into_iter().flatten().collect())
    }

    async fn listing(&self, scope: Scope) -> Result<Arc<Listing>, Error> {
        let name = match &scope {
            Scope::Tenant(t) => t.clone(),
            Scope::Global => "_global".to_owned(),
        };
        if let Some(cached) = self.listings.get(&name).await {
            if cached.at.elapsed() < self.revalidate {
                return Ok(cached);
            }
        }
        let shards = self.store.list(&scope).await.map_err(unavailable)?;
        let listing = Arc::new(Listing { at: Instant::now(), shards });
        self.listings.insert(name, listing.clone()).await;
        Ok(listing)
    }

    async fn shard(&self, listed: ShardRef) -> Result<Option<Arc<LoadedShard>>, Error> {
        if let Some(cached) = self.shards.get(&listed.key).await {
            if cached.0 == listed.etag {
                return Ok(Some(cached.1.clone()));
            }
        }
        let Some((etag, bytes)) = self.store.read(&listed).await.map_err(unavailable)? else { return Ok(None) };
        // Decoding and building the inverted index is CPU work: off the event loop.
        let decoded = tokio::task::spawn_blocking(move || Shard::decode(&bytes).map(LoadedShard::new))
            .await
            .map_err(|e| Error::Internal { detail: "shard decoding task failed".into(), cause: Some(Arc::new(e)) })?;
        let shard = match decoded {
            Ok(shard) => Arc::new(shard),
            Err(_) => {
                tracing::warn!(key = %listed.key, "skipping a damaged index shard");
                return Ok(None);
            }
        };
        self.shards.insert(listed.key, Arc::new((etag, shard.clone()))).await;
        Ok(Some(shard))
    }
}

/// Retrieval for chat: the index, the query embedding, the ranking. Build once per cold start.
pub struct Retriever {
    index: Index,
    embedder: Embedder,
    config: RetrievalConfig,
}

impl Retriever {
    /// Settings from `COACH_RETRIEVAL_*` and `COACH_INDEX_REVALIDATE_SECS`.
    pub fn from_env(env: &Env, store: Arc<dyn IndexStore>, embedder: Embedder) -> Result<Self, ConfigError> {
        let config = RetrievalConfig::from_env(env)?;
        Ok(Self { index: Index::new(store, config.revalidate), embedder, config })
    }

    /// The passages of `tenant`'s documents and the shared docs that best match `query`.
    /// The listing comes first; the shards it names load while the query is embedded.
    /// Without a working embedding service the search is lexical only.
    pub async fn retrieve(&self, tenant: &str, query: &str) -> Result<Vec<Passage>, Error> {
        if self.config.top_k == 0 {
            return Ok(Vec::new());
        }
        let listed = self.index.listed_for(tenant).await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let embed = async {
            if !self.embedder.enabled() {
                return None;
            }
            match self.embedder.embed(&[query.to_owned()]).await {
                Ok(mut v) => v.pop(),
                Err(e) => {
                    tracing::warn!(problem = ?e, "query embedding failed; searching words only");
                    None
                }
            }
        };
        let (shards, vector) = tokio::join!(self.index.load(listed), embed);
        let shards = shards?;
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let query_vector = vector.as_deref().map(|v| (self.embedder.model(), v));
        Ok(search(&shards, query, query_vector, &self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Chunk;

    fn shard(id: &str, texts: &[&str], vectors: Option<(&str, Vec<Vec<f32>>)>) -> Arc<LoadedShard> {
        let (model, dims, flat) = match vectors {
            Some((m, v)) => (Some(m.to_owned()), v[0].len() as u32, v.concat()),
            None => (None, 0, Vec::new()),
        };
        Arc::new(LoadedShard::new(Shard {
            document_id: id.into(),
            title: format!("{id}.md"),
            chunks: texts.iter().map(|t| Chunk { heading: None, text: (*t).into() }).collect(),
            embedding_model: model,
            dims,
            vectors: flat,
        }))
    }

    fn config() -> RetrievalConfig {
        RetrievalConfig { top_k: 3, min_score: 0.0, min_similarity: 0.3, revalidate: Duration::ZERO }
    }

    #[test]
    fn the_fusion_window_is_wide_enough_for_any_top_k() {
        for top_k in [1, 5, 20, 21, 50, 100] {
            let w = window(top_k) as f32;
            assert!(2.0 / (RRF_K + w + 1.0) < 1.0 / (RRF_K + top_k as f32), "top_k {top_k}");
        }
    }

    #[test]
    fn tokens_drop_stop_words_and_plurals() {
        let t: Vec<String> = tokens("How do I handle missed Deadlines? The team's goals!").collect();
        assert_eq!(t, vec!["handle", "missed", "deadline", "team", "goal"]);
    }

    #[test]
    fn bm25_ranks_the_relevant_chunk_first() {
        let shards = vec![
            shard("a", &["Plan your week around three priorities.", "Block focus time in the calendar."], None),
            shard("b", &["When someone keeps missing deadlines, raise it early and ask what gets in the way."], None),
        ];
        let hits = search(&shards, "teammate missing deadlines", None, &config());
        assert_eq!(hits[0].source.document_id, "b");
        assert_eq!(hits.len(), 1, "only chunks that match");
        assert!(search(&shards, "zebra", None, &config()).is_empty());
    }

    #[test]
    fn vectors_find_what_words_miss_and_fusion_keeps_both() {
        let shards = vec![
            shard(
                "a",
                &["Praise specific behaviour.", "Unrelated text."],
                Some(("m", vec![vec![1.0, 0.0], vec![0.0, 1.0]])),
            ),
            shard("b", &["Deadlines slip when work in progress grows."], Some(("m", vec![vec![0.6, 0.8]]))),
        ];
        let hits = search(&shards, "deadlines", Some(("m", &[1.0, 0.0])), &config());
        let ids: Vec<(&str, u32)> = hits.iter().map(|h| (h.source.document_id.as_str(), h.source.chunk)).collect();
        assert!(ids.contains(&("a", 0)), "semantic match without shared words: {ids:?}");
        assert!(ids.contains(&("b", 0)), "lexical match: {ids:?}");
        assert!(!ids.contains(&("a", 1)), "below the similarity floor: {ids:?}");
        // A vector from another model is ignored.
        let hits = search(&shards, "deadlines", Some(("other", &[1.0, 0.0])), &config());
        assert_eq!(hits.len(), 1);
    }

    #[test]
    fn the_8_bit_scan_finds_the_same_neighbours_as_exact_cosine() {
        let mut rng = fastrand::Rng::with_seed(42);
        let dims = 384;
        let query: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
        // Query plus noise of every strength, so similarities spread from about 0 to 1.
        let vectors: Vec<Vec<f32>> = (0..3000)
            .map(|i| {
                let noise = i as f32 / 300.0;
                query.iter().map(|q| q + noise * (rng.f32() * 2.0 - 1.0)).collect()
            })
            .collect();
        let all_exact: Vec<(u32, f64)> = {
            let qn = query.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let mut all: Vec<(u32, f64)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let dot: f64 = v.iter().zip(&query).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                    let vn = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                    (i as u32, dot / (vn * qn))
                })
                .filter(|(_, c)| *c >= 0.2)
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            all
        };
        let exact = &all_exact[..100];
        let texts = vec!["x"; vectors.len()];
        let shards = vec![shard("a", &texts, Some(("m", vectors)))];
        // The 8-bit estimates stay well inside the slack the scan allows them.
        let mut unit = query.clone();
        normalise(&mut unit);
        let mut q8 = vec![0i8; dims];
        let q_step = quantise(&unit, &mut q8);
        let loaded = &shards[0];
        let worst = loaded
            .shard
            .vectors
            .chunks_exact(dims)
            .zip(loaded.quantised.chunks_exact(dims).zip(&loaded.steps))
            .map(|(exact, (row, step))| (dot_i8(row, &q8) as f32 * step * q_step - dot_f32(exact, &unit)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < QUANTISATION_SLACK / 2.0, "worst 8-bit error {worst}");
        let got = best(similar(&shards, "m", &query, 0.2, 100), 100);
        assert_eq!(got.len(), exact.len());
        for (((_, ci), cosine), (i, expected)) in got.iter().zip(exact) {
            assert_eq!(ci, i);
            assert!((f64::from(*cosine) - expected).abs() < 1e-4, "{cosine} vs {expected}");
        }
        // At the similarity floor too: everything at or above it, and nothing below.
        // (Compared as sets: near-ties may order differently in f32 and f64.)
        let mut above: Vec<u32> = all_exact.iter().filter(|(_, c)| *c >= 0.5).map(|(i, _)| *i).collect();
        assert!(above.len() > 100 && above.len() < 1000, "a floor inside the data: {}", above.len());
        let mut got: Vec<u32> =
            best(similar(&shards, "m", &query, 0.5, 1000), 1000).iter().map(|(id, _)| id.1).collect();
        above.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, above);
    }

    #[test]
    fn zero_and_broken_vectors_never_match() {
        let shards = vec![shard(
            "a",
            &["zero", "nan", "fine"],
            Some(("m", vec![vec![0.0, 0.0], vec![f32::NAN, 1.0], vec![1.0, 0.0]])),
        )];
        let hits = best(similar(&shards, "m", &[1.0, 0.0], 0.0, 10), 10);
        assert_eq!(hits.iter().map(|(id, _)| id.1).collect::<Vec<_>>(), vec![2]);
        assert!(similar(&shards, "m", &[0.0, 0.0], 0.0, 10).is_empty());
        assert!(similar(&shards, "m", &[f32::INFINITY, 0.0], 0.0, 10).is_empty());
    }

    #[test]
    fn top_k_and_min_score_bound_the_result() {
        let texts: Vec<String> = (0..10).map(|i| format!("feedback note {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let shards = vec![shard("a", &refs, None)];
        assert_eq!(search(&shards, "feedback", None, &config()).len(), 3);
        let strict = RetrievalConfig { min_score: 1.0, ..config() };
        assert!(search(&shards, "feedback", None, &strict).is_empty());
    }
}
