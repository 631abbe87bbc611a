//! One chat turn, end to end: validate, find or create the session, load recent history,
//! store the user's message (before anything that can fail upstream, so it is never lost),
//! assemble the prompt, call the model, store the reply with its sources, usage and model.
//! The HTTP shape (plain JSON or SSE) is the function's business; this module is the flow.

use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    error::Error,
    history::{Author, Message, NewMessage, Source},
    llm::{Completion, Prompt, Usage},
    retrieval::Passage,
    services::Services,
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

/// A turn whose user message is stored and whose prompt is ready for the model.
pub struct Prepared {
    pub session_id: String,
    pub user_message: Message,
    pub prompt: Prompt,
    pub passages: Vec<Passage>,
    pub sources: Vec<Source>,
}

/// Validates the input, stores the user's message and builds the prompt.
pub async fn prepare(services: &Services, who: &Principal, input: ChatInput) -> Result<Prepared, Error> {
    let limits = &services.config.chat;
    let message = input.message.trim();
    if message.is_empty() {
        return Err(Error::BadRequest("message must not be empty".into()));
    }
    let chars = message.chars().count();
    if chars > limits.max_message_chars {
        return Err(Error::PayloadTooLarge(format!(
            "message has {chars} characters; the limit is {}",
            limits.max_message_chars
        )));
    }
    let history = &services.history;
    let (session_id, past) = match input.session_id.as_deref() {
        Some(id) => {
            let session = history.session(who, id).await?;
            let past = history.recent_messages(who, &session.session_id, limits.history_limit).await?;
            (session.session_id, past)
        }
        None => (history.create_session(who, message).await?.session_id, Vec::new()),
    };
    let user_message = history.add_message(who, &session_id, NewMessage::user(message)).await?;

    let (system, profile) = tokio::join!(services.system_prompt.current(), async {
        match &services.profiles {
            Some(profiles) => profiles.get(&who.user_id).await,
            None => None,
        }
    });
    let passages = retrieve(services, who, message).await?;
    let sources = passages.iter().map(|p| p.source.clone()).collect();
    let budget = services.llm.config().context_tokens.saturating_sub(services.llm.config().max_output_tokens);
    let prompt = crate::prompt::build(&system, profile.as_deref(), &passages, &past, message, budget);
    Ok(Prepared { session_id, user_message, prompt, passages, sources })
}

/// The passages of the caller's tenant and the shared docs that best match the message.
/// Without a working embedding service the search is lexical only.
async fn retrieve(services: &Services, who: &Principal, message: &str) -> Result<Vec<Passage>, Error> {
    let config = &services.config.retrieval;
    if config.top_k == 0 {
        return Ok(Vec::new());
    }
    let shards = services.index.shards_for(&who.tenant).await?;
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let vector = if services.embedder.enabled() {
        match services.embedder.embed(&[message.to_owned()]).await {
            Ok(mut v) => v.pop(),
            Err(e) => {
                tracing::warn!(problem = ?e, "query embedding failed; searching words only");
                None
            }
        }
    } else {
        None
    };
    let query_vector = vector.as_deref().map(|v| (services.embedder.model(), v));
    Ok(crate::retrieval::search(&shards, message, query_vector, config))
}

/// Stores the model's reply and shapes the answer.
pub async fn finish(
    services: &Services,
    who: &Principal,
    prepared: Prepared,
    completion: Completion,
) -> Result<ChatReply, Error> {
    let reply = services
        .history
        .add_message(
            who,
            &prepared.session_id,
            NewMessage {
                role: Author::Assistant,
                content: &completion.text,
                sources: &prepared.sources,
                usage: Some(completion.usage),
                model: Some(&completion.model),
            },
        )
        .await?;
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
pub async fn chat(services: &Services, who: &Principal, input: ChatInput) -> Result<ChatReply, Error> {
    let prepared = prepare(services, who, input).await?;
    let completion = services.llm.complete(&prepared.prompt, &prepared.passages).await?;
    finish(services, who, prepared, completion).await
}
