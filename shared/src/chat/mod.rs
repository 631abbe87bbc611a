//! One chat turn, end to end: validate, then everything that only reads at once (rate
//! limits and budgets, the session and its recent history, the system prompt, the user's
//! profile, retrieval), then store the user's message (before anything that can fail
//! upstream, so it is never lost), assemble the prompt, call the model, store the reply with
//! its sources, usage and model, and beside it the usage ledger's counters and, on a
//! session's first exchange, its title (or the job that makes one). The HTTP shape (plain
//! JSON or SSE) is the function's business; this module is the flow.
//!
//! Storage calls before the model, in sequential levels (each level waits for the one
//! before): (1) both rate-limit counters, the month's usage totals (with budgets), the
//! session, its history, the prompt and the index manifests (conditional GETs), all at once;
//! (2) the index segments not yet in memory (with the query embedding); (3) one
//! transactional write of the message, its session and its turn's record.
//!
//! **Deadline.** A non-streaming turn answers within `COACH_TURN_TIMEOUT_SECS` (28 s, under
//! API Gateway's 29 s) or what is left of the Lambda invocation, whichever ends first,
//! model retries included: past it, a 504 `timeout`.
//!
//! **Retries.** A turn with an `Idempotency-Key` (kept a day), or without one a message sent
//! to an existing session (kept two minutes), gets a turn record written with the user's
//! message. The same turn sent again stores nothing: it gets the stored answer once there is
//! one; while the first attempt may still answer (its lease), a 409; after that attempt
//! gave up (a model failure, a timeout) or died, the retry takes its lease and answers the
//! message already stored.

pub mod exchange;
pub mod stream;
mod turn_key;

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

pub use stream::{Begun, Ended, ReplySink, Streaming, END_MARGIN};
pub use turn_key::TurnKey;

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    deadline::Deadline,
    error::Error,
    history::{History, Target},
    ids::now_ms,
    llm::{Completion, Llm, Prompt, Provider, Turn},
    model::{Author, Job, Message, ModelUsage, NewMessage, Passage, Source, TitleJob, Usage},
    profile::Profiles,
    prompt::SystemPrompt,
    retrieval::{Conversation, Retriever},
    rewrite::QueryRewrite,
    store::{JobQueue, TurnWrite},
    usage::{Admission, Ledger},
};

/// A lease outlives its turn's deadline by this much (a clock's worth of slack).
const LEASE_SLACK_MS: u64 = 2000;
/// The lease a turn is answered under.
#[derive(Debug, Clone)]
struct Lease {
    key: String,
    until: u64,
}

/// Body of `POST /chat` and `POST /chat/stream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatInput {
    pub message: String,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// The answer to a chat turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatReply {
    pub session_id: String,
    pub message_id: String,
    pub answer: String,
    pub sources: Vec<Source>,
    pub usage: Usage,
    pub model: String,
    /// A guardrail intervened: the answer is its message (audited by the caller's handler).
    #[serde(skip)]
    pub intervened: bool,
}

/// Chat limits (`COACH_HISTORY_LIMIT`, `COACH_MAX_MESSAGE_CHARS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Past messages sent to the model.
    pub history_limit: i32,
    /// Longest accepted message, in characters.
    pub max_message_chars: usize,
    /// Longest a non-streaming turn may take (`COACH_TURN_TIMEOUT_SECS`).
    pub turn_timeout: Duration,
}

impl ChatConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            history_limit: env.number("COACH_HISTORY_LIMIT")? as i32,
            max_message_chars: env.number("COACH_MAX_MESSAGE_CHARS")? as usize,
            turn_timeout: Duration::from_secs(env.number("COACH_TURN_TIMEOUT_SECS")?),
        })
    }
}

/// A turn whose user message is stored and whose prompt is ready for the model.
struct Prepared {
    session_id: String,
    user_message: Message,
    prompt: Prompt,
    passages: Vec<Passage>,
    sources: Vec<Source>,
    /// The turn's lease, when it has a record (its answer is recorded with the reply).
    lease: Option<Lease>,
    /// What retrieval's calls used (the query's embedding when metered, the query's
    /// rewrite), recorded with the reply's usage.
    retrieval: Vec<ModelUsage>,
    /// The session's first exchange: the reply titles it. `Some(true)` when the session was
    /// created empty (its title is still the default, so the message's first words replace
    /// it at once).
    first_exchange: Option<bool>,
}

/// What a turn comes to before the model.
enum Step {
    /// The message is stored and the prompt ready.
    Answer(Box<Prepared>),
    /// A retry of a turn already answered: the stored answer.
    Answered(ChatReply),
}

/// What a retry of a turn comes to (when it is not a 409).
enum Retried {
    /// The turn's stored answer.
    Answered(ChatReply),
    /// The turn has no answer and its first attempt gave up: this attempt answers the
    /// message that one stored.
    TakenOver { session_id: String, message: Message },
}

/// What a chat turn uses, given once per cold start to [`Chat::new`]. The parts other
/// services share (the model, retrieval, the system prompt, the ledger) are shared, not
/// reached through the turn.
pub struct ChatParts {
    pub limits: ChatConfig,
    pub history: Arc<History>,
    pub system_prompt: Arc<SystemPrompt>,
    /// User profiles, when an Auth0 Management API client is configured.
    pub profiles: Option<Arc<Profiles>>,
    pub retriever: Arc<Retriever>,
    pub llm: Arc<Llm>,
    /// The model's rewrite of follow-ups into standalone queries (`COACH_QUERY_REWRITE=llm`).
    pub rewrite: Option<QueryRewrite>,
    /// Rate limits and budgets.
    pub admission: Arc<Admission>,
    /// Usage.
    pub ledger: Arc<Ledger>,
    /// Where a new session's title job goes (the ingest jobs queue); `None`: sessions keep
    /// their first message's first words.
    pub jobs: Option<Arc<dyn JobQueue>>,
    /// The models a caller of the OpenAI-compatible API may pick by name besides the
    /// configured one (`COACH_ALLOWED_MODELS`), each the configured provider's.
    pub choices: Vec<Arc<Llm>>,
}

/// One chat turn: whole ([`Chat::chat`]) or streamed ([`Chat::begin_stream`],
/// [`Chat::relay`]) over the same steps. Build once per cold start.
pub struct Chat {
    limits: ChatConfig,
    history: Arc<History>,
    system_prompt: Arc<SystemPrompt>,
    profiles: Option<Arc<Profiles>>,
    retriever: Arc<Retriever>,
    llm: Arc<Llm>,
    rewrite: Option<QueryRewrite>,
    admission: Arc<Admission>,
    ledger: Arc<Ledger>,
    jobs: Option<Arc<dyn JobQueue>>,
    choices: Vec<Arc<Llm>>,
}

impl Chat {
    pub fn new(parts: ChatParts) -> Self {
        let ChatParts {
            limits,
            history,
            system_prompt,
            profiles,
            retriever,
            llm,
            rewrite,
            admission,
            ledger,
            jobs,
            choices,
        } = parts;
        Self { limits, history, system_prompt, profiles, retriever, llm, rewrite, admission, ledger, jobs, choices }
    }

    /// The turn's limits (`COACH_HISTORY_LIMIT`, `COACH_MAX_MESSAGE_CHARS`,
    /// `COACH_TURN_TIMEOUT_SECS`).
    pub fn limits(&self) -> &ChatConfig {
        &self.limits
    }
}

/// The user's turns of `past` (oldest first, as the history reads them), most recent first,
/// for retrieval; a retry's own message, already stored, is not an earlier turn.
fn earlier_user_turns(past: &[Message], message: &str) -> Vec<String> {
    let mut turns: Vec<String> = past
        .iter()
        .rev()
        .filter(|m| m.role == Author::User)
        .map(|m| m.content.clone())
        .take(crate::retrieval::CONTEXT_TURNS + 1)
        .collect();
    if turns.first().is_some_and(|t| t.trim() == message) {
        turns.remove(0);
    }
    turns.truncate(crate::retrieval::CONTEXT_TURNS);
    turns
}

/// The model's reply as a message to store, with the passages it was given as its sources.
fn reply_message<'a>(completion: &'a Completion, sources: &'a [Source], incomplete: bool) -> NewMessage<'a> {
    NewMessage {
        role: Author::Assistant,
        content: &completion.text,
        sources,
        usage: Some(completion.usage),
        model: Some(&completion.model),
        incomplete,
    }
}

impl Chat {
    /// The user's message, trimmed: 400 when empty, 413 over `COACH_MAX_MESSAGE_CHARS`.
    fn checked<'m>(&self, message: &'m str) -> Result<&'m str, Error> {
        let message = message.trim();
        if message.is_empty() {
            return Err(Error::BadRequest("message must not be empty".into()));
        }
        let chars = message.chars().count();
        if chars > self.limits.max_message_chars {
            return Err(Error::PayloadTooLarge(format!(
                "message has {chars} characters; the limit is {}",
                self.limits.max_message_chars
            )));
        }
        Ok(message)
    }
}

/// What a turn reads before the model, beside what the caller reads with it.
struct Gathered {
    system: Arc<str>,
    profile: Option<Arc<serde_json::Value>>,
    passages: Vec<Passage>,
    /// What retrieval's calls used (the query's embedding when metered, the rewrite).
    retrieval: Vec<ModelUsage>,
}

impl Chat {
    /// Everything a turn only reads, at once, with `also` (the session's reads): the rate
    /// limits and budgets, the system prompt, the user's profile and retrieval for `message`
    /// after the `earlier` user turns (most recent first). With the model's rewrite, a
    /// message with earlier turns is rewritten once the turn is admitted, so a refused turn
    /// costs nothing. The first failure ends the turn.
    async fn gather<T>(
        &self,
        who: &Principal,
        message: &str,
        earlier: impl std::future::Future<Output = Vec<String>> + Send,
        also: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<(T, Gathered), Error> {
        let (admitted, admission) = tokio::sync::oneshot::channel::<()>();
        let rewrite_used = std::sync::Mutex::new(None);
        let conversation = async {
            let earlier = earlier.await;
            let mut standalone = None;
            if let Some(rewrite) = self.rewrite.as_ref().filter(|_| !earlier.is_empty()) {
                if admission.await.is_ok() {
                    let rewritten = rewrite.standalone(message, &earlier).await;
                    *rewrite_used.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = rewritten.used;
                    standalone = rewritten.query;
                }
            }
            Conversation { earlier, standalone }
        };
        let admit = async {
            self.admission.admit(who).await?;
            let _ = admitted.send(());
            Ok::<_, Error>(())
        };
        let context = async {
            let profile = async {
                match &self.profiles {
                    Some(profiles) => profiles.get(&who.user_id).await,
                    None => None,
                }
            };
            Ok::<_, Error>(tokio::join!(self.system_prompt.current(), profile))
        };
        let ((), also, (system, profile), retrieved) = tokio::try_join!(
            admit,
            also,
            context,
            self.retriever.retrieve_in_conversation(&who.tenant, who.clearance(), message, conversation)
        )?;
        let mut retrieval: Vec<ModelUsage> = retrieved.embedding.into_iter().collect();
        retrieval.extend(rewrite_used.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner));
        Ok((also, Gathered { system, profile, passages: retrieved.passages, retrieval }))
    }

    /// Validates the input, counts the request, stores the user's message (with the turn's
    /// record under `turn`, leased until `lease_until`) and builds the prompt; or, for a
    /// retry, the stored answer or the message the first attempt stored.
    async fn prepare(
        &self,
        who: &Principal,
        input: ChatInput,
        turn: Option<&TurnKey>,
        lease_until: u64,
    ) -> Result<Step, Error> {
        let message = self.checked(&input.message)?;

        // Retrieval takes the session's earlier user turns from the history read (and loads
        // the index meanwhile).
        let (turns_read, earlier_turns) = tokio::sync::oneshot::channel::<Vec<String>>();
        let session = async {
            let Some(id) = input.session_id.as_deref() else {
                let _ = turns_read.send(Vec::new());
                return Ok(None);
            };
            let (session, past) = tokio::try_join!(
                self.history.session(who, id),
                self.history.recent_messages(who, id, self.limits.history_limit)
            )?;
            let _ = turns_read.send(earlier_user_turns(&past, message));
            let empty = session.message_count == 0 && session.auto_title;
            Ok(Some((session.session_id, past, empty)))
        };
        let earlier = async { earlier_turns.await.unwrap_or_default() };
        let (session, Gathered { system, profile, passages, retrieval }) =
            self.gather(who, message, earlier, session).await?;

        let (existing, mut past, first_exchange) = match session {
            Some((id, past, empty)) => (Some(id), past, empty.then_some(true)),
            None => (None, Vec::new(), Some(false)),
        };
        let target = match &existing {
            Some(id) => Target::Session(id),
            None => Target::NewSession { title: message },
        };
        let claim = turn.map_or(TurnWrite::None, |turn| TurnWrite::Claim {
            key: &turn.key,
            lease_until,
            expires_at: now_ms() / 1000 + turn.ttl_secs,
        });
        let added = self.history.add_turn_message(who, target, NewMessage::user(message), claim).await?;
        let mut taken_over = false;
        let (session_id, user_message) = match (added, turn) {
            (Some(added), _) => added,
            (None, Some(turn)) => match self.retry(who, turn, input.session_id.as_deref(), lease_until).await? {
                Retried::Answered(reply) => {
                    // Answered from storage: what retrieval used this time is still spent.
                    self.ledger.record_for(who, &retrieval).await;
                    return Ok(Step::Answered(reply));
                }
                Retried::TakenOver { session_id, message } => {
                    taken_over = true;
                    // The history was read before; it may hold the message itself.
                    past.retain(|m| m.message_id != message.message_id);
                    (session_id, message)
                }
            },
            (None, None) => return Err(Error::internal("a turn without a key was refused as a retry")),
        };
        let sources = passages.iter().map(|p| p.source.clone()).collect();
        let config = self.llm.config();
        let budget = config.context_tokens.saturating_sub(config.max_output_tokens);
        let boundary = crate::prompt::boundary();
        let past: Vec<Turn> = past.into_iter().map(|m| Turn { role: m.role, content: m.content }).collect();
        let prompt = crate::prompt::build(&system, profile.as_deref(), &passages, &past, message, budget, &boundary);
        let lease = turn.map(|turn| Lease { key: turn.key.clone(), until: lease_until });
        // A retry that takes over a stored message answers a turn already begun.
        let first_exchange = first_exchange.filter(|_| !taken_over);
        Ok(Step::Answer(Box::new(Prepared {
            session_id,
            user_message,
            prompt,
            passages,
            sources,
            lease,
            retrieval,
            first_exchange,
        })))
    }

    /// A retry of `turn`: its stored answer, or, when the attempt that stored its message
    /// gave up, that message with the lease moved to this attempt; a 409 while that attempt
    /// may still answer.
    async fn retry(
        &self,
        who: &Principal,
        turn: &TurnKey,
        session: Option<&str>,
        lease_until: u64,
    ) -> Result<Retried, Error> {
        let in_progress = || Error::Conflict("this message is still being answered; retry in a few seconds".into());
        // Gone since the write refused it: it expired in between.
        let Some(record) = self.history.turn(who, &turn.key).await? else { return Err(in_progress()) };
        if session.is_some_and(|s| s != record.session_id) {
            return Err(Error::Conflict("this Idempotency-Key was used for a message to another session".into()));
        }
        let gone = || Error::NotFound("no such session".into());
        if let Some(reply_id) = &record.reply_id {
            let reply = self.history.message(who, &record.session_id, reply_id).await?.ok_or_else(gone)?;
            return Ok(Retried::Answered(ChatReply {
                session_id: record.session_id,
                message_id: reply.message_id,
                answer: reply.content,
                sources: reply.sources,
                usage: reply.usage.unwrap_or_default(),
                model: reply.model.unwrap_or_default(),
                // Audited when it was answered.
                intervened: false,
            }));
        }
        if record.lease_until > now_ms()
            || !self.history.move_lease(who, &turn.key, record.lease_until, lease_until).await?
        {
            return Err(in_progress());
        }
        let message = self.history.message(who, &record.session_id, &record.message_id).await?.ok_or_else(gone)?;
        Ok(Retried::TakenOver { session_id: record.session_id, message })
    }

    /// Gives up a turn's lease after a failure, so a retry can answer it at once. Best
    /// effort: otherwise the retry waits for the lease to end.
    async fn release(&self, who: &Principal, lease: &Lease) {
        let released = self.history.move_lease(who, &lease.key, lease.until, 0);
        match tokio::time::timeout(Duration::from_secs(1), released).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not give up a failed turn's lease"),
            Err(_) => tracing::warn!("giving up a failed turn's lease took too long"),
        }
    }

    /// Stores the model's reply and shapes the answer.
    async fn finish(&self, who: &Principal, prepared: Prepared, completion: Completion) -> Result<ChatReply, Error> {
        let reply = reply_message(&completion, &prepared.sources, false);
        let turn = prepared.lease.as_ref().map_or(TurnWrite::None, |lease| TurnWrite::Answer { key: &lease.key });
        let mut used = vec![self.llm.used(&completion)];
        used.extend(prepared.retrieval.iter().cloned());
        // The ledger and the session's title are written beside the reply (best effort, never
        // failing the turn).
        let (stored, (), ()) = tokio::join!(
            self.history.add_turn_message(who, Target::Session(&prepared.session_id), reply, turn),
            self.ledger.record_for(who, &used),
            self.title(who, &prepared)
        );
        let (_, reply) = stored?.ok_or_else(|| Error::internal("a reply was refused as a retry"))?;
        Ok(ChatReply {
            session_id: prepared.session_id,
            message_id: reply.message_id,
            answer: completion.text,
            sources: prepared.sources,
            usage: completion.usage,
            model: completion.model,
            intervened: completion.intervened,
        })
    }

    /// A streamed reply cut short (the client left, the stream's time ran out, the model
    /// failed midway): what was generated is stored, marked incomplete, when there is any;
    /// what the call used is recorded; and the turn's lease is given up, so a retry answers
    /// it afresh. Best effort: a failure is logged.
    async fn keep_partial(&self, who: &Principal, prepared: &Prepared, partial: &Completion) {
        let store = async {
            if partial.text.trim().is_empty() {
                return;
            }
            let reply = reply_message(partial, &prepared.sources, true);
            let target = Target::Session(&prepared.session_id);
            if let Err(e) = self.history.add_turn_message(who, target, reply, TurnWrite::None).await {
                tracing::warn!(problem = %e, "could not store a reply cut short");
            }
        };
        let mut used = vec![self.llm.used(partial)];
        used.extend(prepared.retrieval.iter().cloned());
        let release = async {
            if let Some(lease) = &prepared.lease {
                self.release(who, lease).await;
            }
        };
        tokio::join!(store, self.ledger.record_for(who, &used), release);
    }

    /// On a session's first exchange: its first title (the message's first words, when it
    /// still has the default one) and, with a model, the job that asks the model for a
    /// better one. Best effort: a failure is logged.
    async fn title(&self, who: &Principal, prepared: &Prepared) {
        let Some(created_empty) = prepared.first_exchange else { return };
        let first_words = async {
            if created_empty {
                let title = crate::history::title_from(&prepared.user_message.content);
                if let Err(e) = self.history.set_auto_title(who, &prepared.session_id, &title).await {
                    tracing::warn!(problem = %e, "could not title a session");
                }
            }
        };
        let job = async {
            let Some(jobs) = self.jobs.as_ref().filter(|_| self.llm.config().provider != Provider::None) else {
                return;
            };
            let job = Job::Title(TitleJob {
                tenant: who.tenant.clone(),
                user_id: who.user_id.clone(),
                session_id: prepared.session_id.clone(),
            });
            if let Err(e) = jobs.send(&job).await {
                tracing::warn!(problem = %e, "could not queue a session's title; it keeps its first words");
            }
        };
        tokio::join!(first_words, job);
    }

    /// A whole chat turn, answered in one piece before `deadline` (and within
    /// `COACH_TURN_TIMEOUT_SECS`), or a 504.
    pub async fn chat(
        &self,
        who: &Principal,
        input: ChatInput,
        turn: Option<TurnKey>,
        deadline: Deadline,
    ) -> Result<ChatReply, Error> {
        let budget = deadline.budget(self.limits.turn_timeout);
        let lease = turn
            .as_ref()
            .map(|t| Lease { key: t.key.clone(), until: now_ms() + budget.as_millis() as u64 + LEASE_SLACK_MS });
        let lease_until = lease.as_ref().map_or(0, |l| l.until);
        // Whether this attempt holds the turn (its message stored, or taken over).
        let holds = std::sync::atomic::AtomicBool::new(false);
        let work = async {
            let prepared = match self.prepare(who, input, turn.as_ref(), lease_until).await? {
                Step::Answered(reply) => return Ok(reply),
                Step::Answer(prepared) => *prepared,
            };
            holds.store(true, std::sync::atomic::Ordering::Relaxed);
            let completion = self.llm.complete(&prepared.prompt, &prepared.passages).await?;
            self.finish(who, prepared, completion).await
        };
        let (result, timed_out) = match tokio::time::timeout(budget, work).await {
            Ok(result) => (result, false),
            Err(_) => (
                Err(Error::Timeout(format!(
                    "no answer within {} s; to retry without storing the message twice, send it again with the \
                     same Idempotency-Key (or to the same session within two minutes)",
                    budget.as_secs().max(1)
                ))),
                true,
            ),
        };
        // Given up, so that a retry answers at once (past the deadline, the turn may have
        // been stored just before it).
        let failed = result.is_err() && (timed_out || holds.load(std::sync::atomic::Ordering::Relaxed));
        if let (true, Some(lease)) = (failed, &lease) {
            self.release(who, lease).await;
        }
        result
    }
}
