//! Hybrid retrieval over a tenant's documents plus the shared docs, in process.
//!
//! Index shards (see [`crate::ingest::index`]) of `index/{tenant}/` and `index/_global/` are
//! listed (the listing is cached for `COACH_INDEX_REVALIDATE_SECS`), loaded once per ETag
//! and kept in memory with an inverted index and vector norms. No other prefix is ever
//! read, so another tenant's documents cannot be retrieved.
//!
//! A query is ranked twice: BM25 over chunk text (always), and cosine similarity against
//! chunk vectors when both the query and the shard have embeddings from the same model.
//! The two rankings are fused with reciprocal rank fusion (k = 60); the top `top_k` above
//! `min_score` are returned with their sources.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use moka::future::Cache;

use crate::{aws::classify, documents::Scope, error::Error, history::Source, ingest::index::Shard};

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

/// A retrieved passage: what to cite, and the text to put in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub source: Source,
    pub text: String,
}

/// Longest snippet stored with a source, in characters.
const SNIPPET_CHARS: usize = 300;
const RRF_K: f32 = 60.0;
const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;

/// A shard ready for search.
pub struct LoadedShard {
    pub shard: Shard,
    /// term -> (chunk, term frequency)
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Tokens per chunk.
    lengths: Vec<u32>,
    /// Euclidean norm of each chunk vector.
    norms: Vec<f32>,
}

impl LoadedShard {
    pub fn new(shard: Shard) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(shard.chunks.len());
        for (i, chunk) in shard.chunks.iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut length = 0;
            let heading = chunk.heading.as_deref().unwrap_or_default();
            for token in tokens(heading).chain(tokens(&chunk.text)) {
                *counts.entry(token).or_default() += 1;
                length += 1;
            }
            lengths.push(length);
            for (term, tf) in counts {
                postings.entry(term).or_default().push((i as u32, tf));
            }
        }
        let dims = shard.dims as usize;
        let norms = if dims == 0 {
            Vec::new()
        } else {
            shard.vectors.chunks(dims).map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt()).collect()
        };
        Self { shard, postings, lengths, norms }
    }
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

/// Ranks the chunks of `shards` for a query (and its embedding, if any).
pub fn search(
    shards: &[Arc<LoadedShard>],
    query: &str,
    query_vector: Option<(&str, &[f32])>,
    config: &RetrievalConfig,
) -> Vec<Passage> {
    let terms: Vec<String> = {
        let mut t: Vec<String> = tokens(query).collect();
        t.sort();
        t.dedup();
        t
    };
    // BM25 over every loaded chunk.
    let total_chunks: usize = shards.iter().map(|s| s.lengths.len()).sum();
    let total_length: u64 = shards.iter().flat_map(|s| s.lengths.iter()).map(|&l| u64::from(l)).sum();
    let avg_length = if total_chunks == 0 { 1.0 } else { (total_length as f32 / total_chunks as f32).max(1.0) };
    let mut lexical: HashMap<(usize, u32), f32> = HashMap::new();
    for term in &terms {
        let df: usize = shards.iter().map(|s| s.postings.get(term).map_or(0, Vec::len)).sum();
        if df == 0 {
            continue;
        }
        let idf = ((total_chunks as f32 - df as f32 + 0.5) / (df as f32 + 0.5) + 1.0).ln();
        for (si, shard) in shards.iter().enumerate() {
            for &(chunk, tf) in shard.postings.get(term).map_or(&[][..], Vec::as_slice) {
                let tf = tf as f32;
                let length = shard.lengths[chunk as usize] as f32;
                let score = idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * length / avg_length));
                *lexical.entry((si, chunk)).or_default() += score;
            }
        }
    }
    let mut lexical: Vec<((usize, u32), f32)> = lexical.into_iter().collect();
    lexical.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));

    // Cosine similarity where the shard's vectors come from the query's model.
    let mut semantic: Vec<((usize, u32), f32)> = Vec::new();
    if let Some((model, vector)) = query_vector {
        let qnorm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (si, shard) in shards.iter().enumerate() {
            let dims = shard.shard.dims as usize;
            if qnorm == 0.0 || dims != vector.len() || shard.shard.embedding_model.as_deref() != Some(model) {
                continue;
            }
            for (ci, v) in shard.shard.vectors.chunks(dims).enumerate() {
                let norm = shard.norms[ci];
                if norm == 0.0 {
                    continue;
                }
                let dot: f32 = v.iter().zip(vector).map(|(a, b)| a * b).sum();
                let cosine = dot / (norm * qnorm);
                if cosine >= config.min_similarity {
                    semantic.push(((si, ci as u32), cosine));
                }
            }
        }
        semantic.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }

    // Reciprocal rank fusion.
    let mut fused: HashMap<(usize, u32), f32> = HashMap::new();
    for ranking in [&lexical, &semantic] {
        for (rank, (id, _)) in ranking.iter().enumerate() {
            *fused.entry(*id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<((usize, u32), f32)> = fused.into_iter().filter(|(_, s)| *s >= config.min_score).collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
        .into_iter()
        .take(config.top_k)
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

/// A scope's shards as listed: when, and the (key, ETag) of each.
struct Listing {
    at: Instant,
    objects: Vec<(String, String)>,
}

/// The shards of each scope, loaded from S3 and cached in memory.
pub struct Index {
    s3: aws_sdk_s3::Client,
    bucket: String,
    revalidate: Duration,
    /// Per scope prefix: when it was listed, and (key, etag) of its shards.
    listings: Cache<String, Arc<Listing>>,
    /// Per shard key: the ETag loaded, and the shard.
    shards: Cache<String, Arc<(String, Arc<LoadedShard>)>>,
}

impl Index {
    pub fn new(s3: aws_sdk_s3::Client, bucket: String, revalidate: Duration) -> Self {
        Self {
            s3,
            bucket,
            revalidate,
            listings: Cache::builder().max_capacity(1_000).build(),
            shards: Cache::builder().max_capacity(100_000).build(),
        }
    }

    /// The shards a caller of `tenant` may search: the tenant's and the shared docs'.
    pub async fn shards_for(&self, tenant: &str) -> Result<Vec<Arc<LoadedShard>>, Error> {
        let mut out = Vec::new();
        for scope in [Scope::Tenant(tenant.to_owned()), Scope::Global] {
            for (key, etag) in &self.listing(&scope.index_prefix()).await?.objects {
                if let Some(shard) = self.shard(key, etag).await? {
                    out.push(shard);
                }
            }
        }
        Ok(out)
    }

    async fn listing(&self, prefix: &str) -> Result<Arc<Listing>, Error> {
        if let Some(cached) = self.listings.get(prefix).await {
            if cached.at.elapsed() < self.revalidate {
                return Ok(cached);
            }
        }
        let mut objects = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                tracing::error!(failure = ?classify(&e), "cannot list index shards");
                Error::Unavailable("the document index is unavailable".into())
            })?;
            for object in page.contents() {
                if let (Some(key), Some(etag)) = (object.key(), object.e_tag()) {
                    objects.push((key.to_owned(), etag.to_owned()));
                }
            }
        }
        let listing = Arc::new(Listing { at: Instant::now(), objects });
        self.listings.insert(prefix.to_owned(), listing.clone()).await;
        Ok(listing)
    }

    /// The shard at `key`, from memory when its ETag is unchanged. A damaged or vanished
    /// shard is skipped (and logged), never a failed chat.
    async fn shard(&self, key: &str, etag: &str) -> Result<Option<Arc<LoadedShard>>, Error> {
        if let Some(cached) = self.shards.get(key).await {
            if cached.0 == etag {
                return Ok(Some(cached.1.clone()));
            }
        }
        let object = match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => {
                tracing::error!(failure = ?classify(&e), "cannot read an index shard");
                return Err(Error::Unavailable("the document index is unavailable".into()));
            }
        };
        let etag = object.e_tag().unwrap_or(etag).to_owned();
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|_| Error::Unavailable("the document index is unavailable".into()))?
            .into_bytes();
        let shard = match Shard::decode(&bytes) {
            Ok(shard) => Arc::new(LoadedShard::new(shard)),
            Err(_) => {
                tracing::warn!(key, "skipping a damaged index shard");
                return Ok(None);
            }
        };
        self.shards.insert(key.to_owned(), Arc::new((etag, shard.clone()))).await;
        Ok(Some(shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::chunk::Chunk;

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
    fn top_k_and_min_score_bound_the_result() {
        let texts: Vec<String> = (0..10).map(|i| format!("feedback note {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let shards = vec![shard("a", &refs, None)];
        assert_eq!(search(&shards, "feedback", None, &config()).len(), 3);
        let strict = RetrievalConfig { min_score: 1.0, ..config() };
        assert!(search(&shards, "feedback", None, &strict).is_empty());
    }
}
