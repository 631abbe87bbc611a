//! The OpenAI-compatible API in both chat functions ([`coach::openai`] is its wire format):
//!
//! | route | who |
//! |---|---|
//! | `GET /v1/models` | role `user`: `coach`, then `COACH_ALLOWED_MODELS` |
//! | `GET /v1/models/{id}` | role `user`: one of them |
//! | `POST /v1/chat/completions` | role `user`: a stateless turn over the request's conversation |
//!
//! Behind the HTTP API (the `chat` function) a `stream: true` request gets its chunks in one
//! body, as the HTTP API cannot stream; behind the streaming Function URL (`chat-stream`)
//! they stream as the model writes, within the tenant's stream slots.

use coach::{
    api::{Call, Endpoint, Pipeline},
    auth::Role,
    chat::{
        exchange::{Exchange, ExchangeStream},
        Chat,
    },
    deadline::Deadline,
    http::{json_body_within, json_response},
    openai::{self, CompletionRequest, Delivery},
    Error,
};
use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Response,
};

/// The API's endpoints, in both functions' tables.
pub const MODELS: Endpoint = Endpoint::new("GET", "/v1/models", Role::User).openai();
pub const MODEL: Endpoint = Endpoint::new("GET", "/v1/models/{id}", Role::User).openai();
pub const COMPLETIONS: Endpoint = Endpoint::new("POST", "/v1/chat/completions", Role::User).openai();

/// `GET /v1/models`.
pub fn models(chat: &Chat) -> Response<Body> {
    json_response(StatusCode::OK, &openai::model_list(chat.models()))
}

/// `GET /v1/models/{id}`.
pub fn model(chat: &Chat, id: &str) -> Result<Response<Body>, Error> {
    Ok(json_response(StatusCode::OK, &openai::model(chat.models(), id)?))
}

/// Largest `POST /v1/chat/completions` body: clients send the whole conversation each time
/// (its oldest turns are left out of the prompt when they do not fit the model's context).
pub const MAX_COMPLETION_BYTES: usize = 1 << 20;

/// The exchange a `POST /v1/chat/completions` asks for, and how to answer it.
pub fn request(call: &Call<'_>) -> Result<(Exchange, Delivery), Error> {
    json_body_within::<CompletionRequest>(call.req, MAX_COMPLETION_BYTES)?.into_exchange()
}

/// A whole answer as a `chat.completion` (a guardrail's intervention audited in `pipeline`).
pub async fn whole(
    chat: &Chat,
    pipeline: &Pipeline,
    call: &Call<'_>,
    exchange: Exchange,
    delivery: &Delivery,
    deadline: Deadline,
) -> Result<Response<Body>, Error> {
    let answer = chat.exchange(call.who()?, exchange, deadline).await?;
    crate::audit_guardrail(pipeline, call, answer.intervened).await?;
    Ok(json_response(StatusCode::OK, &openai::completion(&answer, delivery)))
}

/// A streamed answer's chunks, all in one body.
pub async fn buffered(
    chat: &Chat,
    pipeline: &Pipeline,
    call: &Call<'_>,
    stream: ExchangeStream,
    delivery: &Delivery,
) -> Result<Response<Body>, Error> {
    let mut body = String::new();
    let intervened = openai::relay(chat, call.who()?, stream, delivery, &call.request_id, &mut body).await;
    crate::audit_guardrail(pipeline, call, intervened).await?;
    let mut response = Response::new(Body::Text(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(response)
}
