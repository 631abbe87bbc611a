//! Optional reranking of the fused candidates by a cross-encoder behind an HTTP `/rerank`
//! API, in Cohere's request shape (also served by Hugging Face TEI's and vLLM's
//! Cohere-compatible routes).
//!
//! `COACH_RERANK_PROVIDER`: `none` (default) or `cohere`. The `COACH_RERANK_CANDIDATES` best
//! fused passages are sent as `{"model", "query", "documents": [text...], "top_n"}` to
//! `POST {COACH_RERANK_BASE_URL}/rerank`; the reply's `results[] {index, relevance_score}`
//! orders them. One attempt, bounded by `COACH_RERANK_TIMEOUT_MS`: on any failure (no
//! connection, timeout, an error status, an unreadable reply) the fused order stands, so
//! reranking can only improve an answer, never block it. Key: the secret's
//! `rerank_api_key` field, if set.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    config::{ConfigError, Env},
    retry::{self, RetryPolicy},
    secrets::Secrets,
};

/// Field of the Coach secret with the reranker's key (optional: self-hosted servers need none).
pub const RERANK_KEY_FIELD: &str = "rerank_api_key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerankConfig {
    /// `None` when reranking is off.
    pub base_url: Option<String>,
    pub model: String,
    /// How many of the fused passages are reranked (at least `top_k` are fused).
    pub candidates: usize,
    pub timeout: Duration,
}

impl RerankConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = env.text("COACH_RERANK_PROVIDER").to_ascii_lowercase();
        let base_url = match provider.as_str() {
            "none" => None,
            "cohere" => {
                let url = env.text("COACH_RERANK_BASE_URL");
                let url = url.trim_end_matches('/').to_owned();
                if reqwest::Url::parse(&url).is_err() {
                    return Err(ConfigError { var: "COACH_RERANK_BASE_URL", reason: format!("not a URL: {url:?}") });
                }
                Some(url)
            }
            other => {
                return Err(ConfigError {
                    var: "COACH_RERANK_PROVIDER",
                    reason: format!("expected none or cohere, got {other:?}"),
                })
            }
        };
        Ok(Self {
            base_url,
            model: env.text("COACH_RERANK_MODEL"),
            candidates: env.number("COACH_RERANK_CANDIDATES")? as usize,
            timeout: Duration::from_millis(env.number("COACH_RERANK_TIMEOUT_MS")?),
        })
    }
}

pub struct Reranker {
    config: RerankConfig,
    http: reqwest::Client,
    secrets: Secrets,
}

impl Reranker {
    pub fn new(config: RerankConfig, http: reqwest::Client, secrets: Secrets) -> Self {
        Self { config, http, secrets }
    }

    /// How many fused candidates to fetch for reranking, 0 when reranking is off.
    pub fn candidates(&self) -> usize {
        if self.config.base_url.is_some() {
            self.config.candidates
        } else {
            0
        }
    }

    /// `texts` reordered by relevance to `query`, as (index into `texts`, relevance score),
    /// at most `top_n`; `None` when reranking is off or failed (the caller keeps its order).
    pub async fn rerank(&self, query: &str, texts: &[&str], top_n: usize) -> Option<Vec<(usize, f32)>> {
        let base = self.config.base_url.as_ref()?;
        if texts.is_empty() {
            return Some(Vec::new());
        }
        let key = self.secrets.field(RERANK_KEY_FIELD).await.ok().flatten();
        let url = format!("{base}/rerank");
        let body = json!({"model": self.config.model, "query": query, "documents": texts, "top_n": top_n});
        let build = || {
            let request = self.http.post(&url).json(&body);
            match &key {
                Some(k) => request.bearer_auth(k),
                None => request,
            }
        };
        let policy = RetryPolicy { timeout: self.config.timeout, max_attempts: 1, backoff: Duration::ZERO };
        let started = std::time::Instant::now();
        let outcome = match retry::send(&policy, "reranker", self.config.timeout, build).await {
            Ok(response) => match tokio::time::timeout(self.config.timeout, response.json::<Value>()).await {
                Ok(Ok(reply)) => parse(&reply, texts.len(), top_n).ok_or("an unexpected reply"),
                Ok(Err(_)) => Err("an unreadable reply"),
                Err(_) => Err("a timeout reading the reply"),
            },
            Err(_) => Err("no usable response"),
        };
        match outcome {
            Ok(order) => {
                tracing::debug!(candidates = texts.len(), ms = started.elapsed().as_millis() as u64, "reranked");
                Some(order)
            }
            Err(problem) => {
                tracing::warn!(problem, candidates = texts.len(), "reranking failed; keeping the fused order");
                None
            }
        }
    }
}

/// `results[] {index, relevance_score}` (Cohere, vLLM), or a bare list of `{index, score}`
/// (TEI's native route); indexes must be in range and distinct.
fn parse(reply: &Value, count: usize, top_n: usize) -> Option<Vec<(usize, f32)>> {
    let items = reply.get("results").unwrap_or(reply).as_array()?;
    let mut seen = vec![false; count];
    let mut order = Vec::with_capacity(items.len());
    for item in items {
        let index = usize::try_from(item.get("index")?.as_u64()?).ok()?;
        let score = item.get("relevance_score").or_else(|| item.get("score"))?.as_f64()? as f32;
        if index >= count || std::mem::replace(&mut seen[index], true) || !score.is_finite() {
            return None;
        }
        order.push((index, score));
    }
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.truncate(top_n);
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_either_shape_are_ordered_by_score_and_bad_ones_rejected() {
        let cohere = json!({"results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.95}]});
        assert_eq!(parse(&cohere, 3, 5), Some(vec![(0, 0.95), (2, 0.9)]));
        let tei = json!([{"index": 1, "score": 0.2}, {"index": 0, "score": 0.7}, {"index": 2, "score": 0.1}]);
        assert_eq!(parse(&tei, 3, 2), Some(vec![(0, 0.7), (1, 0.2)]));
        assert_eq!(parse(&json!({"results": [{"index": 3, "relevance_score": 1.0}]}), 3, 5), None);
        assert_eq!(
            parse(
                &json!({"results": [{"index": 0, "relevance_score": 1.0}, {"index": 0, "relevance_score": 0.5}]}),
                3,
                5
            ),
            None
        );
        assert_eq!(parse(&json!({"results": [{"index": 0}]}), 3, 5), None);
        assert_eq!(parse(&json!({"error": "x"}), 3, 5), None);
    }
}
