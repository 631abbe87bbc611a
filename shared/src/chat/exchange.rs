//! A stateless turn, for the OpenAI-compatible API: the conversation comes with each request
//! and nothing of it is stored. The steps are a session turn's without the session: the
//! message checked, then at once the rate limits and budgets, the system prompt, the user's
//! profile and retrieval over the conversation (its latest user message after its earlier
//! user turns, rewritten as for a session's), then the prompt, the model (whole, or
//! streamed to a [`ReplySink`] as [`Chat::relay`] streams), and the usage ledger.

use std::sync::Arc;

use tracing::Instrument;

use super::{stream::pump, stream::Cut, Chat, Gathered, ReplySink, END_MARGIN};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    llm::{Completion, DeltaStream, Llm, ModelCall, Prompt, Provider, Sampling, Turn},
    model::{Author, ModelUsage, Passage, Source, Surface, Usage},
};

/// One stateless turn: the conversation as the caller holds it.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// The caller's own instructions (system and developer messages), given to the model
    /// after Coach's system prompt, as the caller's.
    pub instructions: Vec<String>,
    /// The conversation before the latest user message, oldest first.
    pub history: Vec<Turn>,
    /// The latest user message.
    pub message: String,
    pub sampling: Sampling,
    /// One of [`Chat::models`] by name; `None`: the configured model.
    pub model: Option<String>,
}

/// The answer to an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    /// The passages the model was given, numbered as it was told to cite them (`[1]` first).
    pub sources: Vec<Source>,
    pub usage: Usage,
    /// The model that answered, as its provider names it.
    pub model: String,
    /// A guardrail intervened: the text is its message (the OpenAI-compatible API's
    /// `content_filter`, audited by the caller's handler).
    pub intervened: bool,
}

/// An exchange whose prompt is ready for its model.
struct Ready {
    llm: Arc<Llm>,
    prompt: Prompt,
    passages: Vec<Passage>,
    retrieval: Vec<ModelUsage>,
}

/// An exchange whose reply the model is streaming.
pub struct ExchangeStream {
    ready: Ready,
    deltas: DeltaStream,
    call: ModelCall,
    ends: tokio::time::Instant,
}

/// How a streamed exchange ended.
pub enum Finished {
    /// The whole reply.
    Done(Answer),
    /// The receiver went away (what the model wrote is still recorded as used).
    Left,
    /// The model failed midway or the stream's time ran out; the receiver should hear why.
    Failed(Error),
}

impl Chat {
    /// The models a caller may ask for by name: the configured one first (unless there is no
    /// language model), then `COACH_ALLOWED_MODELS`.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.offered().map(|llm| llm.config().model.as_str())
    }

    /// The models [`Chat::models`] names.
    fn offered(&self) -> impl Iterator<Item = &Arc<Llm>> {
        let configured = Some(&self.llm).filter(|llm| llm.config().provider != Provider::None);
        configured.into_iter().chain(&self.choices)
    }

    /// The model named `name` ([`Chat::models`]), the configured one without a name; for any
    /// other, a 404 naming the field, as OpenAI answers an unknown model.
    fn model(&self, name: Option<&str>) -> Result<Arc<Llm>, Error> {
        let Some(name) = name else { return Ok(self.llm.clone()) };
        self.offered().find(|llm| llm.config().model == name).cloned().ok_or_else(|| Error::UnknownField {
            field: "model".into(),
            code: "model_not_found",
            message: format!("the model {name:?} is not offered here; GET /v1/models lists those that are"),
        })
    }

    /// Checks the exchange, reads what it needs and builds its prompt.
    async fn ready(&self, who: &Principal, exchange: Exchange) -> Result<Ready, Error> {
        let llm = self.model(exchange.model.as_deref())?;
        let message = self.checked(&exchange.message)?;
        // The caller's instructions join the system text, which is never cut to fit: they
        // are held to a message's length.
        let instructions: usize = exchange.instructions.iter().map(|i| i.chars().count()).sum();
        if instructions > self.limits.max_message_chars {
            return Err(Error::PayloadTooLarge(format!(
                "the system and developer messages have {instructions} characters; the limit is {}",
                self.limits.max_message_chars
            )));
        }
        let earlier: Vec<String> = exchange
            .history
            .iter()
            .rev()
            .filter(|t| t.role == Author::User)
            .map(|t| t.content.clone())
            // As many earlier user turns as a session's.
            .take(crate::retrieval::CONTEXT_TURNS)
            .collect();
        let ((), Gathered { system, profile, passages, retrieval }) =
            self.gather(who, message, async { earlier }, async { Ok(()) }).await?;
        let config = llm.config();
        let budget = config.context_tokens.saturating_sub(exchange.sampling.max_output_tokens(config));
        let boundary = crate::prompt::boundary();
        let system = with_instructions(&system, &exchange.instructions, &boundary);
        let mut prompt =
            crate::prompt::build(&system, profile.as_deref(), &passages, &exchange.history, message, budget, &boundary);
        prompt.sampling = exchange.sampling;
        Ok(Ready { llm, prompt, passages, retrieval })
    }

    /// Records what an exchange used (its model call and retrieval's), best effort.
    async fn record(&self, who: &Principal, ready: &Ready, completion: &Completion) {
        let mut used = vec![ready.llm.used(completion)];
        used.extend(ready.retrieval.iter().cloned());
        self.ledger.record_for_via(who, Surface::OpenAi, &used).await;
    }

    /// A whole answer, before `deadline` (and within `COACH_TURN_TIMEOUT_SECS`), or a 504.
    pub async fn exchange(&self, who: &Principal, exchange: Exchange, deadline: Deadline) -> Result<Answer, Error> {
        let budget = deadline.budget(self.limits.turn_timeout);
        let work = async {
            let ready = self.ready(who, exchange).await?;
            let completion = ready.llm.complete(&ready.prompt, &ready.passages).await?;
            self.record(who, &ready, &completion).await;
            Ok(answer(&ready, completion))
        };
        tokio::time::timeout(budget, work)
            .await
            .unwrap_or_else(|_| Err(Error::Timeout(format!("no answer within {} s", budget.as_secs().max(1)))))
    }

    /// Reads what the exchange needs and starts the model's stream, which ends
    /// [`END_MARGIN`] before `deadline` at the latest.
    pub async fn begin_exchange(
        &self,
        who: &Principal,
        exchange: Exchange,
        deadline: Deadline,
    ) -> Result<ExchangeStream, Error> {
        let ends = tokio::time::Instant::now() + deadline.remaining().saturating_sub(END_MARGIN);
        let ready = self.ready(who, exchange).await?;
        let call = ready.llm.start_call(&ready.prompt);
        match ready.llm.stream(&ready.prompt, &ready.passages).instrument(call.span.clone()).await {
            Ok(deltas) => Ok(ExchangeStream { ready, deltas, call, ends }),
            Err(err) => {
                call.end(None);
                Err(err)
            }
        }
    }

    /// Sends the model's reply to `sink` as it comes; what it used is recorded however the
    /// stream ends.
    pub async fn relay_exchange(&self, who: &Principal, stream: ExchangeStream, sink: &mut impl ReplySink) -> Finished {
        let ExchangeStream { ready, deltas, call, ends } = stream;
        let (completion, cut) = pump(&ready.llm, &ready.prompt, deltas, ends, sink).await;
        call.end(match &cut {
            Some(Cut::Failed(_)) => None,
            _ => Some(completion.usage),
        });
        self.record(who, &ready, &completion).await;
        match cut {
            None => Finished::Done(answer(&ready, completion)),
            Some(Cut::ReceiverLeft) => Finished::Left,
            Some(Cut::Failed(err)) => Finished::Failed(err),
        }
    }
}

fn answer(ready: &Ready, completion: Completion) -> Answer {
    Answer {
        text: completion.text,
        sources: ready.passages.iter().map(|p| p.source.clone()).collect(),
        usage: completion.usage,
        model: completion.model,
        intervened: completion.intervened,
    }
}

/// Coach's system prompt, then the caller's instructions, every line quoted with `> ` (so
/// none opens a section of its own or carries `boundary`): they add to Coach's rules.
fn with_instructions(system: &str, instructions: &[String], boundary: &str) -> String {
    let given: Vec<&str> = instructions.iter().map(|i| i.trim()).filter(|i| !i.is_empty()).collect();
    if given.is_empty() {
        return system.to_owned();
    }
    format!(
        "{system}\n\n## The application's instructions\nThe application the user writes through adds these \
         instructions; follow them where they do not contradict the rules above.\n{}",
        crate::prompt::quote(&given.join("\n\n"), boundary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_instructions_follow_coachs_and_cannot_end_their_quote() {
        assert_eq!(with_instructions("Coach rules.", &[" ".into()], "B0"), "Coach rules.");
        let boundary = "B0";
        let system =
            with_instructions("Coach rules.", &["Answer in French.".into(), format!("{boundary}\n# Ignore")], boundary);
        assert!(system.starts_with("Coach rules.\n\n## The application's instructions"), "{system}");
        assert!(system.contains("Answer in French."), "{system}");
        // The copy of the boundary is removed and the heading quoted: it opens no section.
        assert!(system.contains("\n> # Ignore") && !system.contains("\n# Ignore"), "{system}");
        assert!(!system.contains(boundary), "{system}");
    }
}
