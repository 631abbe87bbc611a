//! Retrieval for chat: the query (from the conversation), its embedding, the search index's
//! ranking, the optional reranker.
//!
//! The search itself belongs to the index store ([`PassageSearch`]): the S3 segments,
//! loaded and ranked in process ([`crate::index`]), or PostgreSQL with pgvector, ranked by
//! one SQL query ([`crate::index::PgIndex`]). Both rank a [`Query`] twice, by its weighted
//! terms (BM25) and (when it has an embedding) by vectors of the same model, fuse the two
//! rankings by reciprocal rank and cut them by [`Ranking`]. Either way only the tenant's own
//! documents and the shared docs are read. The query is made while the S3 store loads; the
//! reranker, if configured, reorders the fused candidates.
//!
//! **Conversations.** A follow-up ("And if they disagree?") names little of its topic: the
//! topic is in the turns before it. A turn's query is therefore a mixture of the latest
//! message and the session's recent user turns ([`shares`]): the earlier turns are a prior
//! that the latest message outweighs the more it says. Each search term of the latest
//! message is taken to name its topic with probability [`TOPIC_TERM`]; the conversation
//! counts as much as the chance that none does, `(1 - TOPIC_TERM)^n` for `n` terms (all of it
//! for a message without search terms, "Why?"; under 2% for a question of ten), the most
//! recent earlier turn most (each turn back half the one after it). The mixture is applied
//! alike to the terms (each text's term weights times its share) and to the embedding (the
//! texts' unit vectors times their shares). A question that says enough on its own is barely moved by what came before (a
//! topic switch), a message that says nothing searchable takes its topic from the
//! conversation. No model call and no extra round trip: the history is read for the prompt
//! anyway, and the earlier turns' embeddings are cached by the instance that made them (else
//! embedded in the same request as the latest message).

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    analysis::Analyzer,
    config::{ConfigError, Env},
    embeddings::{Embedder, Purpose},
    error::Error,
    model::{Clearance, ModelUsage, Passage, Query, Ranking},
    rerank::Reranker,
    store::PassageSearch,
};

/// Earlier user turns a query takes into account, at most.
pub const CONTEXT_TURNS: usize = 3;
/// The chance that a search term of the latest message names its topic. Chosen with the
/// conversational runs of `make eval` (docs/PERFORMANCE.md, Conversations): from 0.3 to 0.4
/// both a generic follow-up and a question after another topic keep their goals; 0.35 is
/// the middle.
pub const TOPIC_TERM: f32 = 0.35;
/// Each earlier turn counts this much of the turn after it.
pub const DECAY: f32 = 0.5;

/// Query embeddings an instance keeps (a conversation's earlier turns are embedded once).
const EMBEDDING_CACHE: u64 = 2_000;
const EMBEDDING_TTL: Duration = Duration::from_secs(30 * 60);

/// The weighted terms ([`Analyzer::weighted_terms`]) of each text of a conversation: the
/// latest message first, then the earlier user turns (most recent first). Each text is
/// analysed once; [`shares`] and [`mixed_terms`] read the result.
pub fn analyse(analyzer: &Analyzer, texts: &[&str]) -> Vec<Vec<(String, f32)>> {
    texts.iter().map(|text| analyzer.weighted_terms(text)).collect()
}

/// How much each text of a conversation counts in its query (`texts` as [`analyse`] gives
/// them): the latest message first, then the earlier turns (at most [`CONTEXT_TURNS`]);
/// the shares sum to 1. See the module's documentation.
pub fn shares(texts: &[Vec<(String, f32)>]) -> Vec<f32> {
    let Some((latest, earlier)) = texts.split_first() else { return Vec::new() };
    // Weights are counts: their sum is the number of search terms.
    let n: f32 = latest.iter().map(|(_, count)| count).sum();
    let mut decay = 1.0;
    let mut prior: Vec<f32> = earlier
        .iter()
        .take(CONTEXT_TURNS)
        .map(|terms| {
            let weight = if terms.is_empty() { 0.0 } else { decay };
            decay *= DECAY;
            weight
        })
        .collect();
    let total: f32 = prior.iter().sum();
    let conversation = if total > 0.0 { (1.0 - TOPIC_TERM).powf(n) } else { 0.0 };
    prior.iter_mut().for_each(|w| *w = if total > 0.0 { conversation * *w / total } else { 0.0 });
    let mut all = vec![1.0 - conversation];
    all.extend(prior);
    all
}

/// The weighted terms of `texts` (as [`analyse`] gives them) mixed by `shares` (one per
/// text).
pub fn mixed_terms(texts: &[Vec<(String, f32)>], shares: &[f32]) -> Vec<(String, f32)> {
    let mut terms: Vec<(String, f32)> = Vec::new();
    for (text, share) in texts.iter().zip(shares).filter(|(_, s)| **s > 0.0) {
        terms.extend(text.iter().map(|(t, w)| (t.clone(), w * share)));
    }
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, f32)> = Vec::with_capacity(terms.len());
    for (term, weight) in terms {
        match merged.last_mut() {
            Some((last, sum)) if *last == term => *sum += weight,
            _ => merged.push((term, weight)),
        }
    }
    merged
}

/// The unit vectors of texts mixed by `shares`; a text without a vector leaves its share
/// out. `None` without the latest message's vector (the first).
pub fn mixed_vector(vectors: &[Option<Arc<Vec<f32>>>], shares: &[f32]) -> Option<Vec<f32>> {
    let latest = vectors.first()?.as_ref()?;
    let mut mixed = vec![0.0f32; latest.len()];
    for (vector, share) in vectors.iter().zip(shares) {
        let Some(vector) = vector.as_ref().filter(|v| v.len() == mixed.len()) else { continue };
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            mixed.iter_mut().zip(vector.iter()).for_each(|(m, x)| *m += share * x / norm);
        }
    }
    Some(mixed)
}

impl Ranking {
    /// Settings from `COACH_RETRIEVAL_*`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            top_k: env.number("COACH_RETRIEVAL_TOP_K")? as usize,
            min_score: env.float("COACH_RETRIEVAL_MIN_SCORE")?,
            min_similarity: env.float("COACH_RETRIEVAL_MIN_SIMILARITY")?,
            // 1 by default: both rankings' scores are shares of their best, and neither is
            // preferred (docs/PERFORMANCE.md, Retrieval quality).
            vector_weight: env.float("COACH_RETRIEVAL_VECTOR_WEIGHT")?,
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
    analyzer: Analyzer,
    /// Query embeddings by text.
    embeddings: moka::future::Cache<String, Arc<Vec<f32>>>,
}

impl Retriever {
    /// Ranks by `ranking`, makes terms with `analyzer` (the index's); `index` is the
    /// configured store's search.
    pub fn new(
        ranking: Ranking,
        analyzer: Analyzer,
        index: Arc<dyn PassageSearch>,
        embedder: Embedder,
        reranker: Reranker,
    ) -> Self {
        Self {
            index,
            embedder,
            reranker,
            ranking,
            analyzer,
            embeddings: moka::future::Cache::builder()
                .max_capacity(EMBEDDING_CACHE)
                .time_to_live(EMBEDDING_TTL)
                .build(),
        }
    }

    /// The passages of `tenant`'s documents (those `clearance` may read) and the shared docs
    /// that best match `query`. Without a working embedding service the search is by words
    /// only.
    pub async fn retrieve(&self, tenant: &str, clearance: Clearance<'_>, query: &str) -> Result<Retrieved, Error> {
        self.retrieve_top(tenant, clearance, query, self.ranking.top_k).await
    }

    /// The configured number of passages (`COACH_RETRIEVAL_TOP_K`).
    pub fn top_k(&self) -> usize {
        self.ranking.top_k
    }

    /// What [`PassageSearch::version`] says of `tenant`'s index and the shared docs.
    pub async fn index_version(&self, tenant: &str) -> Result<String, Error> {
        Ok(self.index.version(tenant).await?)
    }

    /// Like [`Retriever::retrieve`], for `top_k` passages instead of the configured number.
    pub async fn retrieve_top(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        query: &str,
        top_k: usize,
    ) -> Result<Retrieved, Error> {
        self.retrieve_turn(tenant, clearance, query, async { Conversation::default() }, top_k).await
    }

    /// The passages for the latest message of a `conversation` (a future, so the index
    /// loads while the history is read): its earlier user turns are a prior (see the
    /// module's documentation), unless the model rewrote the message into a standalone
    /// query, which is then searched alone.
    pub async fn retrieve_in_conversation(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        latest: &str,
        conversation: impl Future<Output = Conversation> + Send,
    ) -> Result<Retrieved, Error> {
        self.retrieve_turn(tenant, clearance, latest, conversation, self.ranking.top_k).await
    }

    async fn retrieve_turn(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        latest: &str,
        conversation: impl Future<Output = Conversation> + Send,
        top_k: usize,
    ) -> Result<Retrieved, Error> {
        if top_k == 0 {
            return Ok(Retrieved::default());
        }
        use tracing::Instrument;
        let span = tracing::info_span!(
            "retrieval",
            passages = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            conversation_share = tracing::field::Empty
        );
        let started = std::time::Instant::now();
        let retrieved = self.search(tenant, clearance, latest, conversation, top_k).instrument(span.clone()).await?;
        span.record("passages", retrieved.passages.len());
        span.record("latency_ms", started.elapsed().as_millis() as u64);
        crate::metrics::retrieval(started.elapsed(), retrieved.passages.len());
        Ok(retrieved)
    }

    /// Embeddings of `texts` (cached ones from the cache, the others in one request), and
    /// what that request used when the provider is metered. A failure leaves them out.
    async fn embed(&self, texts: &[&str]) -> (Vec<Option<Arc<Vec<f32>>>>, Option<ModelUsage>) {
        let mut vectors = vec![None; texts.len()];
        if !self.embedder.enabled() {
            return (vectors, None);
        }
        let mut missing = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match self.embeddings.get(*text).await {
                Some(v) => vectors[i] = Some(v),
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            return (vectors, None);
        }
        let batch: Vec<String> = missing.iter().map(|&i| texts[i].to_owned()).collect();
        match self.embedder.embed_as(&batch, Purpose::Query).await {
            Ok(embedded) => {
                for (i, vector) in missing.into_iter().zip(embedded.vectors) {
                    let vector = Arc::new(vector);
                    self.embeddings.insert(texts[i].to_owned(), vector.clone()).await;
                    vectors[i] = Some(vector);
                }
                (vectors, embedded.used)
            }
            Err(e) => {
                tracing::warn!(problem = ?e, "query embedding failed; searching words only");
                (vectors, None)
            }
        }
    }

    async fn search(
        &self,
        tenant: &str,
        clearance: Clearance<'_>,
        latest: &str,
        conversation: impl Future<Output = Conversation> + Send,
        top_k: usize,
    ) -> Result<Retrieved, Error> {
        let metered = std::sync::Mutex::new(None);
        let reranked_query = std::sync::Mutex::new(latest.to_owned());
        let make = async {
            let Conversation { mut earlier, standalone } = conversation.await;
            let latest = match &standalone {
                Some(query) => {
                    earlier.clear();
                    *reranked_query.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = query.clone();
                    query.as_str()
                }
                None => latest,
            };
            earlier.truncate(CONTEXT_TURNS);
            let texts: Vec<&str> = std::iter::once(latest).chain(earlier.iter().map(String::as_str)).collect();
            let analysed = analyse(&self.analyzer, &texts);
            let shares = shares(&analysed);
            // Texts that count: the latest message always, earlier turns with a share.
            let counted: Vec<usize> = (0..texts.len()).filter(|&i| i == 0 || shares[i] > 0.0).collect();
            let wanted: Vec<&str> = counted.iter().map(|&i| texts[i]).collect();
            let (embedded, used) = self.embed(&wanted).await;
            let mut vectors = vec![None; texts.len()];
            for (i, vector) in counted.iter().zip(embedded) {
                vectors[*i] = vector;
            }
            *metered.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = used;
            let conversation = 1.0 - shares[0];
            tracing::Span::current().record("conversation_share", f64::from(conversation));
            if conversation > 0.0 {
                // A reranker reads the conversation as it went, oldest turn first.
                let mut context: Vec<&str> = counted.iter().rev().map(|&i| texts[i]).collect();
                context.dedup();
                *reranked_query.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = context.join("\n");
            }
            Query {
                terms: mixed_terms(&analysed, &shares),
                vector: mixed_vector(&vectors, &shares).map(|v| (self.embedder.model().to_owned(), v)),
            }
        };
        let ranking = Ranking { top_k: top_k.max(self.reranker.candidates()), ..self.ranking.clone() };
        let mut passages = self.index.search(tenant, clearance, Box::pin(make), &ranking).await?;
        if self.reranker.candidates() > 0 && passages.len() > 1 {
            let query = reranked_query.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            let texts: Vec<&str> = passages.iter().map(|p| p.text.as_str()).collect();
            if let Some(order) = self.reranker.rerank(&query, &texts, top_k).await {
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

/// What a turn's retrieval knows of its conversation.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The session's earlier user turns, most recent first.
    pub earlier: Vec<String>,
    /// The latest message rewritten by the model as a standalone query
    /// ([`crate::rewrite`]), when it was.
    pub standalone: Option<String>,
}

/// What retrieval found, and what its query's embedding used when the embedding provider is
/// metered (for the usage ledger).
#[derive(Debug, Clone, Default)]
pub struct Retrieved {
    pub passages: Vec<Passage>,
    pub embedding: Option<ModelUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn english() -> Analyzer {
        Analyzer::default()
    }

    /// The shares of `latest` after `earlier` (most recent first).
    fn shares_of(latest: &str, earlier: &[String]) -> Vec<f32> {
        let texts: Vec<&str> = std::iter::once(latest).chain(earlier.iter().map(String::as_str)).collect();
        shares(&analyse(&english(), &texts))
    }

    #[test]
    fn a_message_alone_is_its_own_query() {
        assert_eq!(shares_of("How do teams give feedback?", &[]), vec![1.0]);
        let terms = mixed_terms(&analyse(&english(), &["feedback, feedback and teams"]), &[1.0]);
        assert_eq!(terms, vec![("feedback".to_owned(), 2.0), ("team".to_owned(), 1.0)]);
    }

    #[test]
    fn the_less_a_message_says_the_more_the_conversation_counts() {
        let earlier = vec!["How should a manager give feedback on missed deadlines?".to_owned()];
        let generic = shares_of("Why?", &earlier);
        assert_eq!(generic, vec![0.0, 1.0], "nothing searchable: the conversation's topic");
        let short = shares_of("And if they disagree?", &earlier);
        assert!((short[0] - TOPIC_TERM).abs() < 1e-6, "one term: {short:?}");
        let long = shares_of(
            "What do studies of citation indexing say about the growth of the scientific literature?",
            &earlier,
        );
        assert!(long[0] > 0.95, "a question that says enough stands on its own: {long:?}");
        for s in [&generic, &short, &long] {
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn recent_turns_count_more_and_empty_ones_not_at_all() {
        let earlier: Vec<String> =
            ["deadlines slip", "Why is that?", "feedback on goals", "oldest topic", "older still"]
                .map(String::from)
                .into();
        let s = shares_of("Why?", &earlier);
        assert_eq!(s.len(), 1 + CONTEXT_TURNS);
        assert_eq!(s[2], 0.0, "no searchable words");
        assert!(s[1] > s[3] && s[3] > 0.0, "{s:?}");
        // Mixed terms: each text's weights times its share.
        let analysed = analyse(&english(), &["Why?", "deadlines slip", "Why is that?", "feedback"]);
        let terms = mixed_terms(&analysed, &s);
        let weight = |t: &str| terms.iter().find(|(x, _)| x == t).map(|(_, w)| *w).unwrap();
        assert!((weight("deadlin") - s[1]).abs() < 1e-6);
        assert!((weight("feedback") - s[3]).abs() < 1e-6);
    }

    #[test]
    fn vectors_mix_at_unit_length_and_need_the_latest() {
        let a = Some(Arc::new(vec![2.0, 0.0]));
        let b = Some(Arc::new(vec![0.0, 3.0]));
        assert_eq!(mixed_vector(&[a.clone(), b.clone()], &[0.25, 0.75]), Some(vec![0.25, 0.75]));
        assert_eq!(mixed_vector(&[a.clone(), None], &[0.25, 0.75]), Some(vec![0.25, 0.0]));
        assert_eq!(mixed_vector(&[None, b], &[0.25, 0.75]), None);
    }
}
