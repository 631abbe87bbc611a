//! `POST /qa`: one question answered from the tenant's documents, without a session.
//!
//! Answers are kept (`COACH_QA_CACHE_SECS`, 5 minutes by default) in the table, per tenant,
//! under a digest of everything the answer depends on: the normalised question, `top_k`,
//! `use_documents`, the index version of the tenant and the shared docs
//! ([`crate::store::PassageSearch::version`], which a document's access change moves too),
//! what the caller may read ([`crate::model::Clearance::key`]: their groups, or everything
//! for an admin), the system prompt's text and the model. A repeated question therefore
//! costs no model call (and no embedding call) until a document, an access or the prompt
//! changes; the kept answer is shared by every instance. The answer does not depend on who
//! asks beyond what they may read (no profile, no history), which is what makes it
//! shareable among callers of the same groups, and never beyond them. A caller's `Cache-Control: no-cache` skips the lookup (the fresh answer is
//! kept); `no-store` skips both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{offline, required_text, within, Assist, Tally, MAX_TOP_K};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    ids::{digest, now_ms},
    llm::Completion,
    model::{Source, Surface, Usage},
    prompt,
};

/// Body of `POST /qa`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaInput {
    pub question: String,
    /// Passages to ground the answer in (1 to [`MAX_TOP_K`]; `COACH_RETRIEVAL_TOP_K` by default).
    #[serde(default, deserialize_with = "crate::http::whole_opt")]
    pub top_k: Option<usize>,
    /// Whether to search the documents at all (default true).
    #[serde(default = "yes")]
    pub use_documents: bool,
}

fn yes() -> bool {
    true
}

/// The answer to `POST /qa`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaAnswer {
    pub answer: String,
    pub sources: Vec<Source>,
    /// Tokens this request cost: none when the answer was kept.
    pub usage: Usage,
    pub model: String,
    /// Whether the answer is one kept from an earlier identical question.
    pub cached: bool,
    /// A guardrail intervened: the answer is its message (audited by the caller's handler).
    #[serde(skip)]
    pub intervened: bool,
}

/// An answer as kept in the cache.
#[derive(Serialize, Deserialize)]
struct Kept {
    answer: String,
    sources: Vec<Source>,
    model: String,
}

/// What a caller's `Cache-Control` allows the answer cache to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    /// Answer from a kept answer (not with `no-cache`, `no-store` or `max-age=0`).
    pub read: bool,
    /// Keep the fresh answer (not with `no-store`).
    pub write: bool,
}

impl CacheUse {
    /// From a `Cache-Control` request header's value, if any.
    pub fn from_header(value: Option<&str>) -> Self {
        let mut use_ = CacheUse { read: true, write: true };
        for directive in value.unwrap_or("").split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.replace(' ', "").as_str() {
                "no-cache" | "max-age=0" => use_.read = false,
                "no-store" => use_ = CacheUse { read: false, write: false },
                _ => {}
            }
        }
        use_
    }
}

/// The question as the cache knows it: lower case, runs of white space as one space, without
/// the closing punctuation (`What is X?` and `what is  x` are one question).
pub fn normalise(question: &str) -> String {
    let words: Vec<String> = question.split_whitespace().map(str::to_lowercase).collect();
    words.join(" ").trim_end_matches(['?', '!', '.', '？', '。', ' ']).to_owned()
}

impl Assist {
    /// Answers `input` for `who`, asked through `via`; a kept answer when `cache` allows and
    /// one is there.
    pub async fn qa(
        &self,
        who: &Principal,
        via: Surface,
        input: QaInput,
        cache: CacheUse,
        deadline: Deadline,
    ) -> Result<QaAnswer, Error> {
        let question = required_text(&input.question, "question", self.limits.max_message_chars)?;
        let top_k = match (input.use_documents, input.top_k) {
            (false, _) => 0,
            (true, None) => self.retriever.top_k().min(MAX_TOP_K),
            (true, Some(k)) if (1..=MAX_TOP_K).contains(&k) => k,
            (true, Some(_)) => return Err(Error::BadRequest(format!("top_k must be 1 to {MAX_TOP_K}"))),
        };
        let tally = Tally::via(via);
        let answer = within(self, deadline, "the answer", self.answer(who, question, top_k, cache, &tally)).await;
        tally.record(self, who).await;
        answer
    }

    async fn answer(
        &self,
        who: &Principal,
        question: &str,
        top_k: usize,
        cache: CacheUse,
        tally: &Tally,
    ) -> Result<QaAnswer, Error> {
        let tenant = who.tenant.as_str();
        let version = async {
            match top_k {
                0 => Ok(String::new()),
                _ => self.retriever.index_version(tenant).await,
            }
        };
        let system = async { Ok(self.system_prompt.current().await) };
        let ((), system, version) = tokio::try_join!(self.admission.admit(who), system, version)?;
        let config = self.llm.config();
        // Keyed by what the caller may read too: an answer built from restricted passages is
        // never served to a caller outside their groups (with no documents searched, none is).
        let clearance = if top_k == 0 { String::new() } else { who.clearance().key() };
        let key = digest(&[
            "qa",
            &normalise(question),
            &top_k.to_string(),
            &version,
            &clearance,
            &digest(&[&system]),
            &format!("{:?}", config.provider),
            &config.model,
        ]);
        let kept = self.config.qa_cache > Duration::ZERO;
        if kept && cache.read {
            if let Some(answer) = self.kept(tenant, &key).await {
                return Ok(answer);
            }
        }

        let retrieved = self.retriever.retrieve_top(tenant, who.clearance(), question, top_k).await?;
        if let Some(embedding) = retrieved.embedding {
            tally.add(embedding);
        }
        let passages = retrieved.passages;
        let completion = if offline(self) && top_k == 0 {
            Completion {
                text: "No language model is configured and no documents were searched, so there is nothing to \
                       answer from."
                    .to_owned(),
                model: "none".to_owned(),
                ..Completion::default()
            }
        } else {
            let boundary = prompt::boundary();
            let budget = super::input_budget(self);
            let prompt = prompt::build(&system, None, &passages, &[], question, budget, &boundary);
            tally.complete(self, &prompt, &passages).await?
        };
        let answer = QaAnswer {
            answer: completion.text,
            sources: passages.into_iter().map(|p| p.source).collect(),
            usage: completion.usage,
            model: completion.model,
            cached: false,
            intervened: completion.intervened,
        };
        // A guardrail's message is no answer to keep: the question meets the guardrail (and
        // its audit) each time.
        if kept && cache.write && !answer.intervened {
            self.keep(tenant, &key, &answer).await;
        }
        Ok(answer)
    }

    /// The answer kept under `key`, if any: marked as kept, at no cost. A failed or damaged
    /// read is a miss (logged): the cache only ever saves work.
    async fn kept(&self, tenant: &str, key: &str) -> Option<QaAnswer> {
        let stored = match self.answers.cached(tenant, key, now_ms() / 1000).await {
            Ok(stored) => stored?,
            Err(e) => {
                tracing::warn!(problem = %e, "could not read the answer cache; answering afresh");
                return None;
            }
        };
        match serde_json::from_str::<Kept>(&stored) {
            Ok(kept) => Some(QaAnswer {
                answer: kept.answer,
                sources: kept.sources,
                usage: Usage::default(),
                model: kept.model,
                cached: true,
                intervened: false,
            }),
            Err(e) => {
                tracing::warn!(problem = %e, "a kept answer is damaged; answering afresh");
                None
            }
        }
    }

    /// Keeps `answer` under `key` (best effort: a failure is logged, the caller still gets it).
    async fn keep(&self, tenant: &str, key: &str, answer: &QaAnswer) {
        let expires_at = now_ms() / 1000 + self.config.qa_cache.as_secs();
        let kept = Kept { answer: answer.answer.clone(), sources: answer.sources.clone(), model: answer.model.clone() };
        let stored = match serde_json::to_string(&kept) {
            Ok(stored) => stored,
            Err(e) => return tracing::warn!(problem = %e, "could not encode an answer to keep"),
        };
        if let Err(e) = self.answers.keep(tenant, key, &stored, expires_at).await {
            tracing::warn!(problem = %e, "could not keep an answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_differing_in_case_spacing_or_final_punctuation_are_one() {
        assert_eq!(normalise("  What is   Coach? "), "what is coach");
        assert_eq!(normalise("what is coach"), "what is coach");
        assert_eq!(normalise("WHAT IS COACH ?!"), "what is coach");
        assert_ne!(normalise("what is coaching"), normalise("what is coach"));
        assert_eq!(normalise("?"), "");
    }

    #[test]
    fn cache_control_decides_what_the_cache_may_do() {
        let both = CacheUse { read: true, write: true };
        assert_eq!(CacheUse::from_header(None), both);
        assert_eq!(CacheUse::from_header(Some("max-age=60")), both);
        assert_eq!(CacheUse::from_header(Some("No-Cache")), CacheUse { read: false, write: true });
        assert_eq!(CacheUse::from_header(Some("max-age = 0")), CacheUse { read: false, write: true });
        assert_eq!(CacheUse::from_header(Some("private, no-store")), CacheUse { read: false, write: false });
    }
}
