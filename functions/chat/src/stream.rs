//! `POST /chat/stream`: one chat turn as Server-Sent Events, for Lambda response streaming.
//! The turn's steps are [`coach::chat::stream`]'s; this module frames them as events.
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
//! `error` event), or [`END_MARGIN`] before the invocation's deadline (then an `error`
//! event `timeout`), so an invocation is never cut off with nothing kept. The turn's lease
//! and the stream's slot last until the invocation's deadline.
//!
//! Retries are recognised as in `POST /chat` (`Idempotency-Key`, or the same message to the
//! same session): a retry of an answered turn gets the stored answer as one `token` event,
//! then `sources` and `done`.

use std::sync::Arc;

use bytes::Bytes;
use coach::{
    api::{streamed, Call, Endpoint, Pipeline},
    auth::Role,
    chat::{Begun, Chat, ChatInput, ChatReply, Ended, ReplySink, TurnKey},
    config::StartupError,
    deadline::Deadline,
    http::{error_object, json_body},
    store::AwsClients,
    streams::{Slot, Streams},
    Error,
};
use lambda_http::{
    http::{header, HeaderValue},
    lambda_runtime::streaming::{channel, Body as StreamBody, Sender},
    Request, Response,
};
use serde_json::json;

use crate::{deadline, settings::StreamSettings};

pub use coach::chat::END_MARGIN;

/// What the `chat-stream` function answers (behind its Function URL), and who may ask:
/// the stream, and the OpenAI-compatible API, whose answers stream here.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new("POST", "/chat/stream", Role::User),
    crate::openai::MODELS,
    crate::openai::MODEL,
    crate::openai::COMPLETIONS,
];

/// What the `chat-stream` function uses, built once per cold start.
pub struct StreamState {
    pub pipeline: Pipeline,
    pub chat: Chat,
    pub streams: Streams,
}

impl StreamState {
    /// Reads the settings from the environment and builds everything from them.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(StreamSettings::load, Self::new).await
    }

    /// Builds the state from its settings and ready clients (tests point them at the local
    /// emulator).
    pub fn new(settings: StreamSettings, aws: &AwsClients) -> Result<Self, StartupError> {
        let (parts, _) = crate::turn(settings.turn, aws)?;
        Ok(Self {
            pipeline: Pipeline::assemble("chat-stream", ENDPOINTS, settings.pipeline, aws),
            chat: Chat::new(parts),
            streams: Streams::new(Arc::new(aws.table()), settings.streams_per_tenant),
        })
    }
}

/// Handles one streaming request. Never fails: errors become JSON or an `error` event.
pub async fn handle(state: Arc<StreamState>, req: Request) -> Response<StreamBody> {
    state.pipeline.serve(&req, |call| route(state.clone(), call)).await
}

async fn route(state: Arc<StreamState>, call: Call<'_>) -> Result<Response<StreamBody>, Error> {
    match (call.route.method, call.route.path, call.params.as_slice()) {
        ("POST", "/chat/stream", _) => start(state, call).await,
        ("GET", "/v1/models", _) => Ok(streamed(crate::openai::models(&state.chat))),
        ("GET", "/v1/models/{id}", [id]) => Ok(streamed(crate::openai::model(&state.chat, id)?)),
        ("POST", "/v1/chat/completions", _) => completions(state, call).await,
        (method, path, _) => Err(Error::internal(format!("no handler for the route {method} {path}"))),
    }
}

/// `POST /v1/chat/completions`: chunks as the model writes them (within the tenant's stream
/// slots), or a whole answer.
async fn completions(state: Arc<StreamState>, call: Call<'_>) -> Result<Response<StreamBody>, Error> {
    let (exchange, delivery) = crate::openai::request(&call)?;
    let deadline = deadline(call.req);
    if !delivery.stream {
        let whole = crate::openai::whole(&state.chat, &state.pipeline, &call, exchange, &delivery, deadline);
        return Ok(streamed(whole.await?));
    }
    let asked = call.asked()?;
    let begin = state.chat.begin_exchange(&asked.who, exchange, deadline);
    let (slot, stream) = in_slot(&state, &asked.who.tenant, deadline, begin).await?;
    let (tx, body) = channel();
    tokio::spawn(async move {
        let mut client = Client::new(tx);
        let relayed = coach::openai::relay(&state.chat, &asked.who, stream, &delivery, &asked.request_id, &mut client);
        if relayed.await {
            state.pipeline.intervened(&asked).await;
        }
        state.streams.release(slot).await;
        drop(client);
    });
    Ok(event_stream(body))
}

/// Runs `begin` holding a stream slot of `tenant`'s (until `deadline`), given back when it
/// fails; 429 when every slot is taken.
async fn in_slot<T>(
    state: &StreamState,
    tenant: &str,
    deadline: Deadline,
    begin: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<(Option<Slot>, T), Error> {
    let slot = state.streams.acquire(tenant, deadline).await?;
    match begin.await {
        Ok(begun) => Ok((slot, begun)),
        Err(err) => {
            state.streams.release(slot).await;
            Err(err)
        }
    }
}

async fn start(state: Arc<StreamState>, call: Call<'_>) -> Result<Response<StreamBody>, Error> {
    let (req, asked) = (call.req, call.asked()?);
    let input: ChatInput = json_body(req)?;
    let turn = TurnKey::for_turn(crate::idempotency_key(req)?, &input)?;
    let deadline = deadline(req);
    let begin = state.chat.begin_stream(&asked.who, input, turn.as_ref(), deadline);
    let (slot, streaming) = match in_slot(&state, &asked.who.tenant, deadline, begin).await? {
        (slot, Begun::Streaming(streaming)) => (slot, streaming),
        (slot, Begun::Answered(reply)) => {
            state.streams.release(slot).await;
            return Ok(replay(reply));
        }
    };
    let (tx, body) = channel();
    tokio::spawn(async move {
        // The body ends when the client is dropped, at the end of this task: after the reply
        // (or what there is of it) is stored, so the invocation, which lasts as long as its
        // body, never ends before.
        let mut client = Client::new(tx);
        match state.chat.relay(&asked.who, *streaming, &mut client).await {
            Ended::Stored(reply) => {
                send_end(&mut client, &reply).await;
                if reply.intervened {
                    state.pipeline.intervened(&asked).await;
                }
            }
            Ended::Left => {}
            Ended::Failed(err) => client.send("error", &error_object(&err, &asked.request_id)).await,
        }
        // Given back before the body ends: a client that saw the end may start another.
        state.streams.release(slot).await;
        drop(client);
    });
    Ok(event_stream(body))
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
        self.write_frame(format!("event: {event}\ndata: {data}\n\n")).await;
    }

    /// Writes `frame`, unless a write already failed; `false` once the client has left.
    async fn write_frame(&mut self, frame: String) -> bool {
        if !self.gone && self.tx.send_data(Bytes::from(frame)).await.is_err() {
            self.gone = true;
        }
        !self.gone
    }
}

/// The OpenAI-compatible API's `data:` lines.
impl coach::openai::Lines for Client {
    async fn write(&mut self, line: String) -> bool {
        self.write_frame(line).await
    }
}

/// The model's pieces as `token` events.
impl ReplySink for Client {
    async fn piece(&mut self, text: &str) -> bool {
        self.send("token", &json!({ "text": text })).await;
        !self.gone
    }
}
