//! One chat turn, end to end: validate, then everything that only reads at once (rate
//! limits, the session and its recent history, the system prompt, the user's profile,
//! retrieval), then store the user's message (before anything that can fail upstream, so it
//! is never lost), assemble the prompt, call the model, store the reply with its sources,
//! usage and model. The HTTP shape (plain JSON or SSE) is the function's business; this
//! module is the flow.
//!
//! Storage calls before the model, in sequential levels (each level waits for the one
//! before): (1) the user's rate-limit counter, the session, its history, the prompt and the
//! index manifests (conditional GETs), all at once; (2) the tenant's counter, and the index
//! segments not yet in memory (with the query embedding); (3) one transactional write of the
//! message and its session.

use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    history::{History, Target},
    llm::{Completion, Llm, Prompt},
    model::{Author, Message, NewMessage, Passage, Source, Usage},
    profile::Profiles,
    prompt::SystemPrompt,
    ratelimit::RateLimiter,
    retrieval::Retriever,
};

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
}

/// Chat limits (`COACH_HISTORY_LIMIT`, `COACH_MAX_MESSAGE_CHARS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// Past messages sent to the model.
    pub history_limit: i32,
    /// Longest accepted message, in characters.
    pub max_message_chars: usize,
}

impl ChatConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            history_limit: env.number("COACH_HISTORY_LIMIT", 10, 0, 100)? as i32,
            max_message_chars: env.number("COACH_MAX_MESSAGE_CHARS", 4000, 1, 100_000)? as usize,
        })
    }
}

/// A turn whose user message is stored and whose prompt is ready for the model.
pub struct Prepared {
    pub session_id: String,
    pub user_message: Message,
    pub prompt: Prompt,
    pub passages: Vec<Passage>,
    pub sources: Vec<Source>,
}

/// Everything a chat turn uses. Build once per cold start.
pub struct Chat {
    pub limits: ChatConfig,
    pub history: History,
    pub system_prompt: SystemPrompt,
    /// User profiles, when an Auth0 Management API client is configured.
    pub profiles: Option<Profiles>,
    pub retriever: Retriever,
    pub llm: Llm,
    pub limiter: RateLimiter,
}

impl Chat {
    /// Validates the input, counts the request, stores the user's message and builds the prompt.
    pub async fn prepare(&self, who: &Principal, input: ChatInput) -> Result<Prepared, Error> {
        let message = input.message.trim();
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

        // Everything that only reads, at once; the first failure ends the turn.
        let session = async {
            let Some(id) = input.session_id.as_deref() else { return Ok(None) };
            let (session, past) = tokio::try_join!(
                self.history.session(who, id),
                self.history.recent_messages(who, id, self.limits.history_limit)
            )?;
            Ok(Some((session.session_id, past)))
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
        let ((), session, (system, profile), passages) =
            tokio::try_join!(self.limiter.check(who), session, context, self.retriever.retrieve(&who.tenant, message))?;

        let (target, past) = match &session {
            Some((id, past)) => (Target::Session(id), past.as_slice()),
            None => (Target::NewSession { title: message }, [].as_slice()),
        };
        let (session_id, user_message) = self.history.add_message(who, target, NewMessage::user(message)).await?;
        let sources = passages.iter().map(|p| p.source.clone()).collect();
        let config = self.llm.config();
        let budget = config.context_tokens.saturating_sub(config.max_output_tokens);
        let boundary = crate::prompt::boundary();
        let prompt = crate::prompt::build(&system, profile.as_deref(), &passages, past, message, budget, &boundary);
        Ok(Prepared { session_id, user_message, prompt, passages, sources })
    }

    /// Stores the model's reply and shapes the answer.
    pub async fn finish(
        &self,
        who: &Principal,
        prepared: Prepared,
        completion: Completion,
    ) -> Result<ChatReply, Error> {
        let reply = NewMessage {
            role: Author::Assistant,
            content: &completion.text,
            sources: &prepared.sources,
            usage: Some(completion.usage),
            model: Some(&completion.model),
        };
        let (_, reply) = self.history.add_message(who, Target::Session(&prepared.session_id), reply).await?;
        Ok(ChatReply {
            session_id: prepared.session_id,
            message_id: reply.message_id,
            answer: completion.text,
            sources: prepared.sources,
            usage: completion.usage,
            model: completion.model,
        })
    }

    /// A whole chat turn, answered in one piece.
    pub async fn chat(&self, who: &Principal, input: ChatInput) -> Result<ChatReply, Error> {
        let prepared = self.prepare(who, input).await?;
        let completion = self.llm.complete(&prepared.prompt, &prepared.passages).await?;
        self.finish(who, prepared, completion).await
    }
}
