//! The `bedrock` provider: Amazon Bedrock's Converse API through the AWS SDK
//! ([`ModelRuntime`]), with the function's IAM role instead of an API key. The system prompt
//! is Converse's `system`, the turns its `messages`; usage comes from the reply (or the
//! stream's metadata event). Throttling and a model not ready are retried by the SDK within
//! `COACH_LLM_MAX_ATTEMPTS` and `COACH_LLM_TIMEOUT_MS`; what remains becomes Coach's errors:
//! 429 or 503 with `Retry-After`, 413 for a conversation longer than the model's context, 503
//! naming what to enable when the account has no access to the model.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{ChatModel, Completion, Delta, DeltaStream, LlmConfig, Prompt};
use crate::{
    error::Error,
    model::{Passage, Usage},
    store::{ModelRuntime, RuntimeError, RuntimeEvent, RuntimeRequest, Stop},
};

/// `Retry-After` for a throttled or busy model (the service names no time).
const BUSY_RETRY_SECS: u64 = 5;

pub(super) struct Bedrock {
    config: LlmConfig,
    runtime: Arc<dyn ModelRuntime>,
}

impl Bedrock {
    pub(super) fn new(config: LlmConfig, runtime: Arc<dyn ModelRuntime>) -> Self {
        Self { config, runtime }
    }

    fn request(&self, prompt: &Prompt) -> RuntimeRequest {
        RuntimeRequest {
            model: self.config.model.clone(),
            system: prompt.system.clone(),
            turns: prompt.turns.iter().map(|t| (t.role, t.content.clone())).collect(),
            max_tokens: prompt.sampling.max_output_tokens(&self.config),
            // Converse's models take 0 to 1.
            temperature: prompt.sampling.temperature.map(|t| t.clamp(0.0, 1.0)),
            guardrail: self.config.guardrail.clone(),
        }
    }
}

/// What the caller of `model` is told of a failed call.
fn refusal(model: &str, e: RuntimeError) -> Error {
    let cause = |e: RuntimeError| Some(Arc::new(e) as crate::error::Cause);
    match e {
        RuntimeError::Throttled => Error::UpstreamBusy {
            message: "Amazon Bedrock is throttling requests to the language model; try again shortly".into(),
            retry_after_secs: BUSY_RETRY_SECS,
            overloaded: false,
            cause: cause(e),
        },
        RuntimeError::NotReady => Error::UpstreamBusy {
            message: "the language model is not ready yet on Amazon Bedrock; try again shortly".into(),
            retry_after_secs: BUSY_RETRY_SECS,
            overloaded: true,
            cause: cause(e),
        },
        RuntimeError::Invalid(ref message) if context_too_long(message) => Error::PayloadTooLarge(
            "the conversation is too long for the language model; start a new session or send a shorter message".into(),
        ),
        RuntimeError::Invalid(_) => Error::Upstream {
            message: "Amazon Bedrock refused the request to the language model".into(),
            cause: cause(e),
        },
        RuntimeError::AccessDenied(_) => Error::Unavailable {
            message: format!(
                "this deployment may not use the model {model} on Amazon Bedrock: enable access to it in the \
                     Bedrock console (Model access) for this account and region, and check the functions' IAM role"
            ),
            cause: cause(e),
        },
        RuntimeError::NotFound(_) => Error::Unavailable {
            message: format!("Amazon Bedrock has no model or inference profile {model} in this region"),
            cause: cause(e),
        },
        RuntimeError::Unavailable(_) => Error::UpstreamBusy {
            message: "Amazon Bedrock is unavailable; try again shortly".into(),
            retry_after_secs: BUSY_RETRY_SECS,
            overloaded: true,
            cause: cause(e),
        },
        RuntimeError::Failed(_) => {
            Error::Upstream { message: "the language model is unavailable; try again shortly".into(), cause: cause(e) }
        }
    }
}

/// A guardrail intervened: the caller gets its message (Bedrock's text of the reply), which
/// is counted and logged, never with the text (the caller's handler audits it).
fn counted(model: &str) {
    tracing::warn!(model, "the Bedrock guardrail intervened; its message is the answer");
    crate::metrics::guardrail_intervened(model);
}

/// Whether a `ValidationException`'s message says the input is longer than the model's
/// context ("Input is too long for requested model.", "prompt is too long: ...", "too many
/// input tokens").
fn context_too_long(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["too long", "too many input tokens", "context window", "context length"].iter().any(|m| message.contains(m))
}

#[async_trait]
impl ChatModel for Bedrock {
    async fn complete(&self, prompt: &Prompt, _passages: &[Passage]) -> Result<Completion, Error> {
        let reply = self.runtime.converse(&self.request(prompt)).await.map_err(|e| refusal(&self.config.model, e))?;
        // A guardrail's intervention: its own message is the answer, never the model's text.
        let intervened = reply.stop == Stop::Guardrail;
        if intervened {
            counted(&self.config.model);
        }
        if reply.text.is_empty() {
            return Err(Error::upstream("the language model returned no text"));
        }
        Ok(Completion {
            text: reply.text,
            usage: Usage { input_tokens: reply.input_tokens, output_tokens: reply.output_tokens },
            model: self.config.model.clone(),
            intervened,
        })
    }

    async fn stream(&self, prompt: &Prompt, _passages: &[Passage]) -> Result<DeltaStream, Error> {
        let model = self.config.model.clone();
        let events = self.runtime.converse_stream(&self.request(prompt)).await.map_err(|e| refusal(&model, e))?;
        let named = model.clone();
        let deltas = events.filter_map(move |event| {
            let delta = match event {
                Ok(RuntimeEvent::Text(text)) => Some(Ok(Delta::Text(text))),
                Ok(RuntimeEvent::Usage { input_tokens, output_tokens }) => {
                    Some(Ok(Delta::Usage(Usage { input_tokens, output_tokens })))
                }
                Ok(RuntimeEvent::Stop(Stop::Guardrail)) => {
                    counted(&named);
                    Some(Ok(Delta::Intervened))
                }
                Ok(RuntimeEvent::Stop(_)) => None,
                Err(e) => Some(Err(refusal(&named, e))),
            };
            std::future::ready(delta)
        });
        Ok(Box::pin(futures_util::stream::iter([Ok(Delta::Model(model))]).chain(deltas)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_too_long_input_is_recognised_in_the_services_words() {
        for message in [
            "Input is too long for requested model.",
            "The model returned the following errors: prompt is too long: 210000 tokens > 200000 maximum",
            "Too many input tokens. Max input tokens: 128000",
        ] {
            assert!(context_too_long(message), "{message}");
        }
        assert!(!context_too_long("The provided model identifier is invalid."));
    }
}
