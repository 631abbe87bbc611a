//! One-shot work over a tenant's documents, without a session: a question answered
//! (`POST /qa`, [`qa`]), a document or a text summarised (`POST /summarize`, [`summary`]), a
//! topic laid out as a mind map (`POST /mindmap`, [`mindmap`]), passages found without an
//! answer and the tenant's documents listed ([`search`], for the MCP server's tools).
//!
//! Each counts against the caller's rate limits like a chat turn, uses the chat turn's model,
//! retrieval and system prompt (shared with [`crate::chat::Chat`]), and answers within the
//! same deadline
//! (`COACH_TURN_TIMEOUT_SECS`, or what is left of the invocation): past it, a 504. With the
//! `none` provider each answers from the documents alone, labelled in `note`: the passages,
//! an extractive summary, a tree of the passages' headings.

pub mod mindmap;
pub mod qa;
pub mod search;
pub mod summary;

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{
    auth::Principal,
    chat::ChatConfig,
    config::{ConfigError, Env},
    deadline::Deadline,
    error::Error,
    llm::{Completion, Llm, Prompt, Provider},
    model::{ModelUsage, Passage, Surface, Usage},
    prompt::SystemPrompt,
    retrieval::Retriever,
    store::{AnswerCache, DocumentIndex, DocumentStore},
    usage::{Admission, Ledger},
};

/// Most passages a caller may ask `POST /qa` for.
pub const MAX_TOP_K: usize = 20;

/// Settings of the one-shot routes (`COACH_QA_CACHE_SECS`, `COACH_SUMMARIZE_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssistConfig {
    /// How long a `POST /qa` answer is kept (0: not at all).
    pub qa_cache: Duration,
    /// Longest `text` `POST /summarize` accepts, in characters.
    pub summarize_max_chars: usize,
    /// Most parts a text is summarised in (map calls of the map-reduce).
    pub summarize_max_parts: usize,
}

impl AssistConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            qa_cache: Duration::from_secs(env.number("COACH_QA_CACHE_SECS")?),
            summarize_max_chars: env.number("COACH_SUMMARIZE_MAX_CHARS")? as usize,
            summarize_max_parts: env.number("COACH_SUMMARIZE_MAX_PARTS")? as usize,
        })
    }
}

/// What the one-shot routes use, given once per cold start to [`Assist::new`]: the chat
/// turn's limits, model, retrieval, system prompt, admission and ledger (shared with it),
/// and their own stores.
pub struct AssistParts {
    pub config: AssistConfig,
    /// The chat turn's limits: the longest message (a question), the turn's timeout.
    pub limits: ChatConfig,
    pub llm: Arc<Llm>,
    pub retriever: Arc<Retriever>,
    pub system_prompt: Arc<SystemPrompt>,
    pub admission: Arc<Admission>,
    pub ledger: Arc<Ledger>,
    /// Keeps `/qa` answers.
    pub answers: Arc<dyn AnswerCache>,
    /// A document's status, for `/summarize`.
    pub records: Arc<dyn DocumentStore>,
    /// A document's text, for `/summarize`.
    pub index: Arc<dyn DocumentIndex>,
}

/// The one-shot routes. Build once per cold start.
pub struct Assist {
    config: AssistConfig,
    limits: ChatConfig,
    llm: Arc<Llm>,
    retriever: Arc<Retriever>,
    system_prompt: Arc<SystemPrompt>,
    admission: Arc<Admission>,
    ledger: Arc<Ledger>,
    answers: Arc<dyn AnswerCache>,
    records: Arc<dyn DocumentStore>,
    index: Arc<dyn DocumentIndex>,
}

impl Assist {
    pub fn new(parts: AssistParts) -> Self {
        let AssistParts { config, limits, llm, retriever, system_prompt, admission, ledger, answers, records, index } =
            parts;
        Self { config, limits, llm, retriever, system_prompt, admission, ledger, answers, records, index }
    }
}

/// The model and embedding calls of one request, added up model by model as they return,
/// and recorded in the usage ledger once the request ends, whatever its outcome (a failed
/// part of a summary, a mind map the model answered unusably, a timeout); and whether a
/// guardrail intervened in any of them.
#[derive(Default)]
struct Tally(Mutex<Vec<ModelUsage>>, Surface, AtomicBool);

impl Tally {
    /// A tally of calls that came through `surface`.
    fn via(surface: Surface) -> Self {
        Self(Mutex::default(), surface, AtomicBool::new(false))
    }

    /// Whether a guardrail intervened in a call of the request.
    fn intervened(&self) -> bool {
        self.2.load(Ordering::Relaxed)
    }

    fn add(&self, used: ModelUsage) {
        let mut all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match all.iter_mut().find(|u| u.model == used.model) {
            Some(known) => {
                add_usage(&mut known.usage, used.usage);
                known.calls += used.calls;
            }
            None => all.push(used),
        }
    }

    /// One model call: the completion, tallied.
    async fn complete(&self, assist: &Assist, prompt: &Prompt, passages: &[Passage]) -> Result<Completion, Error> {
        let completion = assist.llm.complete(prompt, passages).await?;
        self.add(assist.llm.used(&completion));
        if completion.intervened {
            self.2.store(true, Ordering::Relaxed);
        }
        Ok(completion)
    }

    /// Records the tally for `who`.
    async fn record(self, assist: &Assist, who: &Principal) {
        let used = self.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !used.is_empty() {
            assist.ledger.record_for_via(who, self.1, &used).await;
        }
    }
}

/// Usage of every model call behind one answer, added up.
fn add_usage(total: &mut Usage, more: Usage) {
    total.input_tokens += more.input_tokens;
    total.output_tokens += more.output_tokens;
}

/// Whether the configured model is the `none` provider.
fn offline(assist: &Assist) -> bool {
    assist.llm.config().provider == Provider::None
}

/// The model's input budget for one call, in estimated tokens.
fn input_budget(assist: &Assist) -> u32 {
    let config = assist.llm.config();
    config.context_tokens.saturating_sub(config.max_output_tokens)
}

/// `work`, within the turn's time (the invocation's deadline and `COACH_TURN_TIMEOUT_SECS`),
/// or a 504 naming what took too long.
async fn within<T>(
    assist: &Assist,
    deadline: Deadline,
    what: &str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let budget = deadline.budget(assist.limits.turn_timeout);
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(format!("{what} took longer than {} s", budget.as_secs().max(1)))),
    }
}

/// A required text field: trimmed, not empty, at most `max` characters (413 above).
fn required_text<'a>(value: &'a str, field: &str, max: usize) -> Result<&'a str, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::BadRequest(format!("{field} must not be empty")));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(Error::PayloadTooLarge(format!("{field} has {chars} characters; the limit is {max}")));
    }
    Ok(value)
}
