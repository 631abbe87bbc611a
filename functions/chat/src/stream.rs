//! `POST /chat/stream`: one chat turn as Server-Sent Events, for Lambda response streaming.
//!
//! Events, in order: `token` (`{"text"}`) as the model streams, then `sources` (the list),
//! then `done` (`{session_id, message_id, usage, model}`) once the full reply is stored.
//! A failure after the stream has started ends it with one `error` event
//! (`{code, message, request_id}`); a failure before it starts is a plain JSON error with
//! its status. The user's message is stored before the model is called either way.
//!
//! A tenant holds at most `COACH_STREAMS_PER_TENANT` streams at once ([`coach::streams`]):
//! past that, 429 with `Retry-After`, before anything is stored. A stream ends early, and
//! what the model wrote until then is stored marked `incomplete` (with its usage, and the
//! turn's lease given up so a retry answers afresh), when the client goes away (the
//! model's stream is dropped, which stops generation), when the model fails midway (then an
//! `error` event), or [`END_MARGIN`] before the function's timeout (then an `error` event
//! `timeout`), so an invocation is never cut off with nothing kept.
//!
//! Retries are recognised as in `POST /chat` (`Idempotency-Key`, or the same message to the
//! same session): a retry of an answered turn gets the stored answer as one `token` event,
//! then `sources` and `done`.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use coach::{
    api::{Call, Endpoint, Keys, Pipeline},
    auth::{Principal, Role},
    chat::{Chat, ChatInput, ChatReply, Lease, Prepared, Step, TurnKey},
    config::{Env, StartupError},
    deadline::Deadline,
    http::{error_object, json_body},
    ids::now_ms,
    llm::{Completion, Delta, DeltaStream, ModelCall},
    model::Usage,
    prompt::streamed_usage,
    store::AwsClients,
    streams::Streams,
    Error,
};
use futures_util::StreamExt;
use lambda_http::{
    http::{header, HeaderValue},
    lambda_runtime::streaming::{channel, Body as StreamBody, Sender},
    Request, RequestExt, Response,
};
use serde_json::json;
use tracing::Instrument;

/// How long a streamed turn holds its lease: the chat-stream function's timeout.
const STREAM_LEASE_MS: u64 = 300_000;

/// How long before the function's timeout a stream stops, to store what it has and say so.
pub const END_MARGIN: Duration = Duration::from_secs(5);

/// What the `chat-stream` function answers (behind its Function URL), and who may ask.
pub const ENDPOINTS: &[Endpoint] = &[Endpoint::new("POST", "/chat/stream", Role::User)];

/// What the `chat-stream` function uses, built once per cold start.
pub struct StreamState {
    pub pipeline: Pipeline,
    pub chat: Chat,
    pub streams: Streams,
}

impl StreamState {
    /// Reads the configuration from the environment and builds everything from it.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Self::build).await
    }

    /// Builds the state from a configuration and ready clients.
    pub fn build(env: &Env, aws: &AwsClients) -> Result<Self, StartupError> {
        let (chat, _) = crate::turn(env, aws)?;
        let lease = Duration::from_millis(STREAM_LEASE_MS);
        Ok(Self {
            pipeline: Pipeline::from_env("chat-stream", ENDPOINTS, Keys::Accepted, env, aws)?,
            chat,
            streams: Streams::from_env(env, Arc::new(aws.table()), lease)?,
        })
    }
}

/// Handles one streaming request. Never fails: errors become JSON or an `error` event.
pub async fn handle(state: Arc<StreamState>, req: Request) -> Response<StreamBody> {
    state.pipeline.serve(&req, |call| start(state.clone(), call)).await
}

async fn start(state: Arc<StreamState>, call: Call<'_>) -> Result<Response<StreamBody>, Error> {
    let (req, who, request_id) = (call.req, call.who()?.clone(), call.request_id.clone());
    let input: ChatInput = json_body(req)?;
    let turn = TurnKey::for_turn(crate::idempotency_key(req)?, &input)?;
    let ends = stream_end(req);
    let slot = state.streams.acquire(&who.tenant).await?;
    let (prepared, deltas, model_call) = match begin(&state, &who, input, turn.as_ref()).await {
        Ok(Begun::Streaming(prepared, deltas, model_call)) => (prepared, deltas, model_call),
        Ok(Begun::Answered(reply)) => {
            state.streams.release(slot).await;
            return Ok(replay(reply));
        }
        Err(err) => {
            state.streams.release(slot).await;
            return Err(err);
        }
    };
    let (tx, body) = channel();
    tokio::spawn(async move {
        // The body ends when the client is dropped, at the end of this task: after the reply
        // (or what there is of it) is stored, so the invocation, which lasts as long as its
        // body, never ends before.
        let stream = Stream { prepared: *prepared, deltas, call: model_call, ends };
        let client = relay(&state, &who, stream, Client::new(tx), &request_id).await;
        // Given back before the body ends: a client that saw the end may start another.
        state.streams.release(slot).await;
        drop(client);
    });
    Ok(event_stream(body))
}

/// A turn begun: the model streaming, or the stored answer of a retried one.
enum Begun {
    Streaming(Box<Prepared>, DeltaStream, ModelCall),
    Answered(ChatReply),
}

/// A turn whose reply the model is streaming, until `ends` at the latest.
struct Stream {
    prepared: Prepared,
    deltas: DeltaStream,
    call: ModelCall,
    ends: tokio::time::Instant,
}

/// Prepares the turn (the user's message stored) and starts the model's stream.
async fn begin(state: &StreamState, who: &Principal, input: ChatInput, turn: Option<&TurnKey>) -> Result<Begun, Error> {
    let lease_until = now_ms() + STREAM_LEASE_MS;
    let prepared = match state.chat.prepare(who, input, turn, lease_until).await? {
        Step::Answer(prepared) => prepared,
        Step::Answered(reply) => return Ok(Begun::Answered(reply)),
    };
    // Ends with the stream (see `Llm::start_call`).
    let call = state.chat.llm.start_call(&prepared.prompt);
    match state.chat.llm.stream(&prepared.prompt, &prepared.passages).instrument(call.span.clone()).await {
        Ok(deltas) => Ok(Begun::Streaming(prepared, deltas, call)),
        Err(err) => {
            call.end(None);
            release(&state.chat, who, prepared.lease.as_ref()).await;
            Err(err)
        }
    }
}

/// When the stream must stop: [`END_MARGIN`] before the invocation's deadline (the
/// function's timeout from now where the context gives none, as in tests).
fn stream_end(req: &Request) -> tokio::time::Instant {
    let deadline = Deadline::from_epoch_ms(req.lambda_context_ref().map_or(0, |c| c.deadline));
    let left = match deadline.remaining() {
        Duration::ZERO => Duration::from_millis(STREAM_LEASE_MS),
        left => left,
    };
    tokio::time::Instant::now() + left.saturating_sub(END_MARGIN)
}

/// Why a stream stopped before the model finished.
enum Cut {
    /// The client went away: nothing more to send.
    ClientLeft,
    /// The model failed midway, or the stream's time ran out: said in an `error` event.
    Failed(Error),
}

/// Sends the model's tokens as they come, then stores the reply and sends the end; a
/// stream cut short keeps what was written (see the module's description). The client is
/// handed back, to be dropped (ending the body) once the stream's slot is given back.
async fn relay(state: &StreamState, who: &Principal, stream: Stream, mut client: Client, request_id: &str) -> Client {
    let Stream { prepared, mut deltas, call, ends } = stream;
    let mut text = String::new();
    let mut usage = Usage::default();
    let mut model = state.chat.llm.config().model.clone();
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
                client.send("token", &json!({ "text": piece })).await;
                text.push_str(&piece);
                if client.gone {
                    break Some(Cut::ClientLeft);
                }
            }
            Some(Ok(Delta::Usage(u))) => {
                usage.input_tokens = if u.input_tokens > 0 { u.input_tokens } else { usage.input_tokens };
                usage.output_tokens = if u.output_tokens > 0 { u.output_tokens } else { usage.output_tokens };
            }
            Some(Ok(Delta::Model(m))) => model = m,
            Some(Err(err)) => break Some(Cut::Failed(err)),
        }
    };
    // Dropping the model's stream closes its connection: generation stops.
    drop(deltas);
    let completion = Completion { usage: streamed_usage(&prepared.prompt, &text, usage), text, model };
    match cut {
        None => {
            call.end(Some(completion.usage));
            let lease = prepared.lease.clone();
            match state.chat.finish(who, prepared, completion).await {
                Ok(reply) => send_end(&mut client, &reply).await,
                Err(err) => {
                    release(&state.chat, who, lease.as_ref()).await;
                    client.send("error", &error_object(&err, request_id)).await;
                }
            }
        }
        Some(Cut::ClientLeft) => {
            call.end(Some(completion.usage));
            tracing::info!("client left the stream; the reply so far is kept, marked incomplete");
            state.chat.keep_partial(who, &prepared, &completion).await;
        }
        Some(Cut::Failed(err)) => {
            call.end(None);
            state.chat.keep_partial(who, &prepared, &completion).await;
            client.send("error", &error_object(&err, request_id)).await;
        }
    }
    client
}

fn event_stream(body: StreamBody) -> Response<StreamBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A retried turn's stored answer, as the events of a stream.
fn replay(reply: ChatReply) -> Response<StreamBody> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        let mut client = Client::new(tx);
        client.send("token", &json!({ "text": reply.answer })).await;
        send_end(&mut client, &reply).await;
    });
    event_stream(body)
}

/// The events that end a stream once the reply is stored: `sources`, then `done`.
async fn send_end(client: &mut Client, reply: &ChatReply) {
    client.send("sources", &json!(reply.sources)).await;
    let done = json!({
        "session_id": reply.session_id,
        "message_id": reply.message_id,
        "usage": reply.usage,
        "model": reply.model,
    });
    client.send("done", &done).await;
}

/// Gives up a failed turn's lease, if it has one, so a retry can answer it at once.
async fn release(chat: &Chat, who: &Principal, lease: Option<&Lease>) {
    if let Some(lease) = lease {
        chat.release(who, lease).await;
    }
}

/// The stream's sending end. It is kept until the turn is over, even once writing fails,
/// so the body never ends early.
struct Client {
    tx: Sender,
    gone: bool,
}

impl Client {
    fn new(tx: Sender) -> Self {
        Self { tx, gone: false }
    }

    /// Writes one SSE event, unless a write already failed (the client left).
    async fn send(&mut self, event: &str, data: &serde_json::Value) {
        if self.gone {
            return;
        }
        let frame = Bytes::from(format!("event: {event}\ndata: {data}\n\n"));
        if self.tx.send_data(frame).await.is_err() {
            self.gone = true;
        }
    }
}
