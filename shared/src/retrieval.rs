//! Retrieval for chat: the query's embedding, the search index's ranking, the optional
//! reranker.
//!
//! The search itself belongs to the index store ([`PassageSearch`]): the S3 segments,
//! loaded and ranked in process ([`crate::index`]), or PostgreSQL with pgvector, ranked by
//! one SQL query ([`crate::store::PgIndex`]). Both rank a query twice, by words and (when
//! the query has an embedding) by vectors of the same model, fuse the two rankings by
//! reciprocal rank and cut them by [`Ranking`]. Either way only the tenant's own documents
//! and the shared docs are read. The query is embedded while the S3 store loads; the
//! reranker, if configured, reorders the fused candidates.

use std::sync::Arc;

use crate::{
    config::{ConfigError, Env},
    embeddings::Embedder,
    error::Error,
    model::{ModelUsage, Passage, Ranking},
    rerank::Reranker,
    store::PassageSearch,
};

impl Ranking {
    /// Settings from `COACH_RETRIEVAL_*`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            top_k: env.number("COACH_RETRIEVAL_TOP_K", 5, 0, 50)? as usize,
            min_score: env.float("COACH_RETRIEVAL_MIN_SCORE", 0.0, 0.0, 1.0)?,
            min_similarity: env.float("COACH_RETRIEVAL_MIN_SIMILARITY", 0.3, -1.0, 1.0)?,
            // Tuned with `make eval` on CISI (docs/PERFORMANCE.md, Retrieval quality).
            vector_weight: env.float("COACH_RETRIEVAL_VECTOR_WEIGHT", 2.0, 0.1, 10.0)?,
        })
    }
}

/// Retrieval for chat: the search index, the query embedding, the ranking, the optional reranker.
/// Build once per cold start.
pub struct Retriever {
    index: Arc<dyn PassageSearch>,
    embedder: Embedder,
    reranker: Reranker,
    ranking: Ranking,
}

impl Retriever {
    /// Ranking settings from `COACH_RETRIEVAL_*`; `index` is the configured store's search.
    pub fn from_env(
        env: &Env,
        index: Arc<dyn PassageSearch>,
        embedder: Embedder,
        reranker: Reranker,
    ) -> Result<Self, ConfigError> {
        Ok(Self { index, embedder, reranker, ranking: Ranking::from_env(env)? })
    }

    /// The passages of `tenant`'s documents and the shared docs that best match `query`.
    /// Without a working embedding service the search is by words only.
    pub async fn retrieve(&self, tenant: &str, query: &str) -> Result<Retrieved, Error> {
        self.retrieve_top(tenant, query, self.ranking.top_k).await
    }

    /// The configured number of passages (`COACH_RETRIEVAL_TOP_K`).
    pub fn top_k(&self) -> usize {
        self.ranking.top_k
    }

    /// What [`PassageSearch::version`] says of `tenant`'s index and the shared docs.
    pub async fn index_version(&self, tenant: &str) -> Result<String, Error> {
        self.index.version(tenant).await
    }

    /// Like [`Retriever::retrieve`], for `top_k` passages instead of the configured number.
    pub async fn retrieve_top(&self, tenant: &str, query: &str, top_k: usize) -> Result<Retrieved, Error> {
        if top_k == 0 {
            return Ok(Retrieved::default());
        }
        use tracing::Instrument;
        let span =
            tracing::info_span!("retrieval", passages = tracing::field::Empty, latency_ms = tracing::field::Empty);
        let started = std::time::Instant::now();
        let retrieved = self.search(tenant, query, top_k).instrument(span.clone()).await?;
        span.record("passages", retrieved.passages.len());
        span.record("latency_ms", started.elapsed().as_millis() as u64);
        crate::metrics::retrieval(started.elapsed(), retrieved.passages.len());
        Ok(retrieved)
    }

    async fn search(&self, tenant: &str, query: &str, top_k: usize) -> Result<Retrieved, Error> {
        let metered = std::sync::Mutex::new(None);
        let embed = async {
            if !self.embedder.enabled() {
                return None;
            }
            let texts = [query.to_owned()];
            match self.embedder.embed(&texts).await {
                Ok(mut embedded) => {
                    *metered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = embedded.used;
                    embedded.vectors.pop().map(|v| (self.embedder.model(), v))
                }
                Err(e) => {
                    tracing::warn!(problem = ?e, "query embedding failed; searching words only");
                    None
                }
            }
        };
        let ranking = Ranking { top_k: top_k.max(self.reranker.candidates()), ..self.ranking.clone() };
        let mut passages = self.index.search(tenant, query, Box::pin(embed), &ranking).await?;
        if self.reranker.candidates() > 0 && passages.len() > 1 {
            let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
            if let Some(order) = self.reranker.rerank(query, &texts, top_k).await {
                let mut slots: Vec<Option<Passage>> = passages.into_iter().map(Some).collect();
                passages = order
                    .into_iter()
                    .filter_map(|(i, score)| {
                        let mut passage = slots[i].take()?;
                        passage.source.score = score;
                        Some(passage)
                    })
                    .collect();
            }
        }
        passages.truncate(top_k);
        let embedding = metered.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Retrieved { passages, embedding })
    }
}

/// What retrieval found, and what its query's embedding used when the embedding provider is
/// metered (for the usage ledger).
#[derive(Debug, Clone, Default)]
pub struct Retrieved {
    pub passages: Vec<Passage>,
    pub embedding: Option<ModelUsage>,
}
