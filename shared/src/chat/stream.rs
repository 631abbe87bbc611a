//! A turn whose reply streams, piece by piece, to a [`ReplySink`] as the model writes it:
//! the same steps as a whole reply ([`Chat::prepare`], then the model, then
//! [`Chat::finish`]), with what a stream adds: a stream cut short (the receiver gone, the
//! model failing midway, the stream's time running out [`END_MARGIN`] before the
//! invocation's deadline) keeps what was written, marked incomplete, with its usage, and
//! gives up the turn's lease so a retry answers afresh. How the pieces are framed (SSE
//! events, another API's chunks) is the sink's business.

use std::{future::Future, time::Duration};

use futures_util::StreamExt;
use tracing::Instrument;

use super::{Chat, ChatInput, ChatReply, Prepared, Step, TurnKey};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    ids::now_ms,
    llm::{Completion, Delta, DeltaStream, Llm, ModelCall, Prompt},
    model::Usage,
    prompt::streamed_usage,
};

/// How long before the invocation's deadline a stream stops, to store what it has and say so.
pub const END_MARGIN: Duration = Duration::from_secs(5);

/// Where a streamed reply goes.
pub trait ReplySink: Send {
    /// A piece of the reply, as the model wrote it; `false` once the receiver has gone.
    fn piece(&mut self, text: &str) -> impl Future<Output = bool> + Send;
}

/// A streamed turn begun: the model streaming its reply, or a retried turn's stored answer.
pub enum Begun {
    Streaming(Box<Streaming>),
    Answered(ChatReply),
}

/// A turn whose reply the model is streaming, until its end at the latest.
pub struct Streaming {
    prepared: Prepared,
    deltas: DeltaStream,
    call: ModelCall,
    ends: tokio::time::Instant,
}

/// How a streamed turn ended.
pub enum Ended {
    /// The whole reply, stored.
    Stored(ChatReply),
    /// The receiver went away; what was written is kept, marked incomplete.
    Left,
    /// The model failed midway, the stream's time ran out, or the reply could not be stored:
    /// what was written is kept (when the model stopped), and the receiver should hear why.
    Failed(Error),
}

/// Why the model's stream stopped before it finished.
pub(super) enum Cut {
    ReceiverLeft,
    Failed(Error),
}

/// Sends `llm`'s streamed reply to `prompt` to `sink` as it comes, until it ends, `sink`'s
/// receiver leaves, the model fails or `ends` comes: what was written (with its usage, as
/// the provider counted it or else estimated), and why it stopped early, if it did.
pub(super) async fn pump(
    llm: &Llm,
    prompt: &Prompt,
    mut deltas: DeltaStream,
    ends: tokio::time::Instant,
    sink: &mut impl ReplySink,
) -> (Completion, Option<Cut>) {
    let mut text = String::new();
    let mut usage = Usage::default();
    let mut model = llm.config().model.clone();
    let mut intervened = false;
    let cut = loop {
        let delta = tokio::select! {
            delta = deltas.next() => delta,
            () = tokio::time::sleep_until(ends) => {
                let message = "the reply took longer than a stream may last; what was written so far is kept";
                break Some(Cut::Failed(Error::Timeout(message.into())));
            }
        };
        match delta {
            None => break None,
            Some(Ok(Delta::Text(piece))) => {
                let heard = sink.piece(&piece).await;
                text.push_str(&piece);
                if !heard {
                    break Some(Cut::ReceiverLeft);
                }
            }
            Some(Ok(Delta::Usage(u))) => {
                usage.input_tokens = if u.input_tokens > 0 { u.input_tokens } else { usage.input_tokens };
                usage.output_tokens = if u.output_tokens > 0 { u.output_tokens } else { usage.output_tokens };
            }
            Some(Ok(Delta::Model(m))) => model = m,
            Some(Ok(Delta::Intervened)) => intervened = true,
            Some(Err(err)) => break Some(Cut::Failed(err)),
        }
    };
    // Dropping the model's stream closes its connection: generation stops.
    drop(deltas);
    (Completion { usage: streamed_usage(prompt, &text, usage), text, model, intervened }, cut)
}

impl Chat {
    /// Prepares the turn (the user's message stored, leased until `deadline`) and starts the
    /// model's stream, which ends [`END_MARGIN`] before `deadline` at the latest; or a
    /// retried turn's stored answer.
    pub async fn begin_stream(
        &self,
        who: &Principal,
        input: ChatInput,
        turn: Option<&TurnKey>,
        deadline: Deadline,
    ) -> Result<Begun, Error> {
        let left = deadline.remaining();
        let lease_until = now_ms() + left.as_millis() as u64;
        let ends = tokio::time::Instant::now() + left.saturating_sub(END_MARGIN);
        let prepared = match self.prepare(who, input, turn, lease_until).await? {
            Step::Answer(prepared) => *prepared,
            Step::Answered(reply) => return Ok(Begun::Answered(reply)),
        };
        // Ends with the stream (see `Llm::start_call`).
        let call = self.llm.start_call(&prepared.prompt);
        match self.llm.stream(&prepared.prompt, &prepared.passages).instrument(call.span.clone()).await {
            Ok(deltas) => Ok(Begun::Streaming(Box::new(Streaming { prepared, deltas, call, ends }))),
            Err(err) => {
                call.end(None);
                if let Some(lease) = &prepared.lease {
                    self.release(who, lease).await;
                }
                Err(err)
            }
        }
    }

    /// Sends the model's reply to `sink` as it comes, then stores it; a stream cut short
    /// keeps what was written (see the module's description).
    pub async fn relay(&self, who: &Principal, streaming: Streaming, sink: &mut impl ReplySink) -> Ended {
        let Streaming { prepared, deltas, call, ends } = streaming;
        let (completion, cut) = pump(&self.llm, &prepared.prompt, deltas, ends, sink).await;
        match cut {
            None => {
                call.end(Some(completion.usage));
                let lease = prepared.lease.clone();
                match self.finish(who, prepared, completion).await {
                    Ok(reply) => Ended::Stored(reply),
                    Err(err) => {
                        if let Some(lease) = &lease {
                            self.release(who, lease).await;
                        }
                        Ended::Failed(err)
                    }
                }
            }
            Some(Cut::ReceiverLeft) => {
                call.end(Some(completion.usage));
                tracing::info!("the receiver left the stream; the reply so far is kept, marked incomplete");
                self.keep_partial(who, &prepared, &completion).await;
                Ended::Left
            }
            Some(Cut::Failed(err)) => {
                call.end(None);
                self.keep_partial(who, &prepared, &completion).await;
                Ended::Failed(err)
            }
        }
    }
}
