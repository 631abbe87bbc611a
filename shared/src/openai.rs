//! The OpenAI-compatible API's wire format: `POST /v1/chat/completions` and `GET /v1/models`
//! as OpenAI's SDKs and the chat UIs built on them send and read them. A request becomes a
//! stateless [`Exchange`]; an [`Answer`] becomes a `chat.completion`, or the
//! `chat.completion.chunk`s of a stream (`data: {chunk}` lines ending with `data: [DONE]`);
//! an error becomes OpenAI's `{"error": {message, type, param, code}}`.
//!
//! What Coach adds: every answer ends with its numbered sources (`Sources:` then `[n] title,
//! pages`) so a plain client can show what `[n]` cites, and carries them machine-readable as
//! `sources` (on the completion, and on the stream's chunk with the `finish_reason`).
//! What Coach ignores, as OpenAI ignores fields it does not know: `user` (the caller is the
//! token's), `tools` and `tool_choice` (and `tool` messages), `logprobs`, `seed`, `stop`,
//! `response_format` and the penalties. `n` other than 1 and non-text content are refused.

use serde::Deserialize;
use serde_json::{json, Value};

use std::future::Future;

use crate::{
    auth::Principal,
    chat::{
        exchange::{Answer, Exchange, ExchangeStream, Finished},
        Chat, ReplySink,
    },
    error::Error,
    ids::now_ms,
    llm::{Sampling, Turn},
    model::{numbered_sources, Author, Source},
};

/// The model name that means "the deployment's model over the caller's documents".
pub const GROUNDED_MODEL: &str = "coach";

/// Body of `POST /v1/chat/completions`; fields not listed are ignored, and any may be
/// absent or null here (what must be there is checked in [`CompletionRequest::into_exchange`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[serde(deserialize_with = "crate::http::whole_opt")]
    pub max_tokens: Option<u32>,
    #[serde(deserialize_with = "crate::http::whole_opt")]
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    #[serde(deserialize_with = "crate::http::whole_opt")]
    pub n: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: text, or parts of which Coach reads the text ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// How the answer is to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// As `chat.completion.chunk`s.
    pub stream: bool,
    /// A last chunk with the usage (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The model name the answer carries: the one asked for.
    pub model: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidField { field: field.to_owned(), code: "invalid_value", message: message.into() }
}

impl CompletionRequest {
    /// The exchange the request asks for and how to send its answer; a 400 naming the field
    /// for what Coach cannot answer.
    pub fn into_exchange(self) -> Result<(Exchange, Delivery), Error> {
        let model = self.model.filter(|m| !m.trim().is_empty()).ok_or_else(|| Error::InvalidField {
            field: "model".into(),
            code: "missing_required_parameter",
            message: format!("model is required; {GROUNDED_MODEL:?} answers from your documents"),
        })?;
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n", "only one choice (n = 1) is supported"));
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Err(invalid("temperature", format!("temperature must be from 0 to 2, got {t}")));
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            return Err(invalid("max_tokens", "max_tokens must be at least 1"));
        }
        let mut exchange = Exchange {
            sampling: Sampling { max_output_tokens: max_tokens, temperature: self.temperature },
            model: (model != GROUNDED_MODEL).then(|| model.clone()),
            ..Exchange::default()
        };
        let mut turns = Vec::new();
        for (i, message) in self.messages.unwrap_or_default().into_iter().enumerate() {
            let text = match message.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut texts = Vec::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(text)) => texts.push(text),
                            (kind, _) => {
                                return Err(invalid(
                                    &format!("messages[{i}].content"),
                                    format!("only text content is supported, not {kind:?}"),
                                ))
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            match message.role.as_str() {
                "system" | "developer" => exchange.instructions.push(text),
                "user" => turns.push(Turn { role: Author::User, content: text }),
                "assistant" => turns.push(Turn { role: Author::Assistant, content: text }),
                // Coach calls no tools: their results are not part of the conversation.
                "tool" | "function" => {}
                other => return Err(invalid(&format!("messages[{i}].role"), format!("unknown role {other:?}"))),
            }
        }
        match turns.pop() {
            Some(Turn { role: Author::User, content }) => exchange.message = content,
            _ => return Err(invalid("messages", "the last message (other than system ones) must be the user's")),
        }
        exchange.history = turns;
        let delivery = Delivery {
            stream: self.stream.unwrap_or(false),
            include_usage: self.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
            model,
        };
        Ok((exchange, delivery))
    }
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "coach"})
}

/// `GET /v1/models`: `coach`, then `names`, as OpenAI's model list.
pub fn model_list<'a>(names: impl Iterator<Item = &'a str>) -> Value {
    let data: Vec<Value> = std::iter::once(GROUNDED_MODEL).chain(names).map(model_object).collect();
    json!({"object": "list", "data": data})
}

/// `GET /v1/models/{id}`: the model `id` when it is `coach` or one of `names`, else a 404.
pub fn model<'a>(mut names: impl Iterator<Item = &'a str>, id: &str) -> Result<Value, Error> {
    if id == GROUNDED_MODEL || names.any(|name| name == id) {
        Ok(model_object(id))
    } else {
        Err(Error::NotFound(format!("the model {id:?} is not offered here; GET /v1/models lists those that are")))
    }
}

/// The answer's numbered sources as text a plain client shows after the answer (empty
/// without sources): `[n] title, pages`.
pub fn references(sources: &[Source]) -> String {
    numbered_sources(sources, |source| source.citation(false))
}

fn usage(answer: &Answer) -> Value {
    let (input, output) = (answer.usage.input_tokens, answer.usage.output_tokens);
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// A completion's id (`chatcmpl-...`) and creation time (Unix seconds).
fn stamp() -> (String, u64) {
    (format!("chatcmpl-{}", ulid::Ulid::generate()), now_ms() / 1000)
}

/// Why the answer ended, as OpenAI names it: `content_filter` when a guardrail intervened
/// (the text is its message), else `stop`.
fn finish_reason(answer: &Answer) -> &'static str {
    if answer.intervened {
        "content_filter"
    } else {
        "stop"
    }
}

/// A whole answer as a `chat.completion`.
pub fn completion(answer: &Answer, delivery: &Delivery) -> Value {
    let (id, created) = stamp();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": delivery.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("{}{}", answer.text, references(&answer.sources)), "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(answer),
        }],
        "usage": usage(answer),
        "system_fingerprint": null,
        "sources": answer.sources,
    })
}

/// The `data:` lines of one streamed answer, chunk by chunk.
pub struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    pub fn new(delivery: &Delivery) -> Self {
        let (id, created) = stamp();
        Self { id, created, model: delivery.model.clone(), include_usage: delivery.include_usage }
    }

    /// A `chat.completion.chunk` with `choices`.
    fn envelope(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, extra: Option<(&str, Value)>) -> String {
        let mut chunk = self.envelope(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]));
        if let Some((key, value)) = extra {
            chunk[key] = value;
        }
        line(&chunk)
    }

    /// The first chunk: the assistant's role.
    pub fn start(&self) -> String {
        self.chunk(json!({"role": "assistant", "content": ""}), None, None)
    }

    /// A piece of the answer.
    pub fn piece(&self, text: &str) -> String {
        self.chunk(json!({"content": text}), None, None)
    }

    /// The end of a whole answer: its references, the chunk with the `finish_reason` and
    /// the sources, the usage chunk when asked for, and `[DONE]`.
    pub fn end(&self, answer: &Answer) -> String {
        let mut end = String::new();
        let references = references(&answer.sources);
        if !references.is_empty() {
            end.push_str(&self.piece(&references));
        }
        let sources = serde_json::to_value(&answer.sources).unwrap_or(Value::Null);
        end.push_str(&self.chunk(json!({}), Some(finish_reason(answer)), Some(("sources", sources))));
        if self.include_usage {
            let mut chunk = self.envelope(json!([]));
            chunk["usage"] = usage(answer);
            end.push_str(&line(&chunk));
        }
        end.push_str("data: [DONE]\n\n");
        end
    }

    /// A failure after the stream began, as OpenAI reports one: an `error` object.
    pub fn error(&self, err: &Error, request_id: &str) -> String {
        crate::http::log_failure(err);
        line(&error_body(err, request_id))
    }
}

fn line(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// Where a stream's `data:` lines go: a response body as it streams, or a buffer.
pub trait Lines: Send {
    /// Writes `line`; `false` once the receiver has gone.
    fn write(&mut self, line: String) -> impl Future<Output = bool> + Send;
}

/// A whole stream in one buffer (a response that cannot stream: API Gateway's HTTP API).
impl Lines for String {
    async fn write(&mut self, line: String) -> bool {
        self.push_str(&line);
        true
    }
}

/// The model's pieces as chunks.
struct ChunkSink<'a, L> {
    chunks: &'a Chunks,
    lines: &'a mut L,
}

impl<L: Lines> ReplySink for ChunkSink<'_, L> {
    async fn piece(&mut self, text: &str) -> bool {
        self.lines.write(self.chunks.piece(text)).await
    }
}

/// Sends `stream`'s answer to `lines` as OpenAI streams one: the role chunk, the pieces as
/// the model writes them, then the end ([`Chunks::end`]), or an `error` chunk when the
/// model fails midway or the stream's time runs out. Whether a guardrail intervened (for
/// the caller to audit).
pub async fn relay(
    chat: &Chat,
    who: &Principal,
    stream: ExchangeStream,
    delivery: &Delivery,
    request_id: &str,
    lines: &mut impl Lines,
) -> bool {
    let chunks = Chunks::new(delivery);
    // A receiver gone already is found at the first piece, where what the model used is
    // still recorded.
    lines.write(chunks.start()).await;
    let finished = chat.relay_exchange(who, stream, &mut ChunkSink { chunks: &chunks, lines }).await;
    match finished {
        Finished::Done(answer) => {
            lines.write(chunks.end(&answer)).await;
            answer.intervened
        }
        Finished::Left => false,
        Finished::Failed(err) => {
            lines.write(chunks.error(&err, request_id)).await;
            false
        }
    }
}

/// An error in OpenAI's shape: `{"error": {message, type, param, code}}`, with the request's
/// id beside them. The type is the one OpenAI gives the status.
pub fn error_body(err: &Error, request_id: &str) -> Value {
    let status = err.status().as_u16();
    let kind = match status {
        // OpenAI's unknown model: a 404 of the request's own.
        _ if matches!(err, Error::UnknownField { .. }) => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 if matches!(err, Error::BudgetExceeded { .. }) => "insufficient_quota",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let (param, code) = match err {
        Error::InvalidField { field, code, .. } | Error::UnknownField { field, code, .. } => {
            (Some(field.as_str()), *code)
        }
        Error::BudgetExceeded { .. } => (None, "insufficient_quota"),
        other => (None, other.code()),
    };
    json!({"error": {
        "message": err.public_message(),
        "type": kind,
        "param": param,
        "code": code,
        "request_id": request_id,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<(Exchange, Delivery), Error> {
        serde_json::from_value::<CompletionRequest>(body).expect("a request").into_exchange()
    }

    fn field(err: Error) -> String {
        match err {
            Error::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_conversation_becomes_an_exchange() {
        let (exchange, delivery) = request(json!({
            "model": "coach",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Who reviews?"},
                {"role": "assistant", "content": "Managers."},
                {"role": "developer", "content": [{"type": "text", "text": "Use lists."}]},
                {"role": "user", "content": [{"type": "text", "text": "And if they"}, {"type": "text", "text": "disagree?"}]},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 50,
            "max_completion_tokens": 40,
            "temperature": 0.2,
            "user": "ignored",
            "tools": [{"type": "function"}],
            "seed": 7,
        }))
        .unwrap();
        assert_eq!(exchange.instructions, ["Be brief.", "Use lists."]);
        assert_eq!(exchange.message, "And if they\ndisagree?");
        assert_eq!(exchange.history.len(), 2);
        assert_eq!(exchange.history[1], Turn { role: Author::Assistant, content: "Managers.".into() });
        assert_eq!(exchange.model, None, "coach is the deployment's model");
        assert_eq!(exchange.sampling, Sampling { max_output_tokens: Some(40), temperature: Some(0.2) });
        assert_eq!(delivery, Delivery { stream: true, include_usage: true, model: "coach".into() });
        let (exchange, delivery) =
            request(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(exchange.model.as_deref(), Some("gpt-4o"));
        assert!(!delivery.stream);
    }

    #[test]
    fn what_coach_cannot_answer_is_a_400_naming_the_field() {
        let hi = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(field(request(json!({"messages": hi})).unwrap_err()), "model");
        assert_eq!(field(request(json!({"model": "coach", "messages": hi, "n": 2})).unwrap_err()), "n");
        assert_eq!(
            field(request(json!({"model": "coach", "messages": hi, "temperature": 3})).unwrap_err()),
            "temperature"
        );
        assert_eq!(
            field(request(json!({"model": "coach", "messages": hi, "max_tokens": 0})).unwrap_err()),
            "max_tokens"
        );
        assert_eq!(field(request(json!({"model": "coach", "messages": []})).unwrap_err()), "messages");
        let ends_with_reply = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]);
        assert_eq!(field(request(json!({"model": "coach", "messages": ends_with_reply})).unwrap_err()), "messages");
        let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert_eq!(field(request(json!({"model": "coach", "messages": image})).unwrap_err()), "messages[0].content");
        let odd = json!([{"role": "narrator", "content": "hi"}]);
        assert_eq!(field(request(json!({"model": "coach", "messages": odd})).unwrap_err()), "messages[0].role");
    }

    #[test]
    fn errors_take_openais_shape() {
        let body = error_body(&Error::RateLimited { retry_after_secs: 3 }, "r1");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["param"], Value::Null);
        let body = error_body(&invalid("temperature", "too hot"), "r1");
        assert_eq!(
            (body["error"]["type"].as_str(), body["error"]["param"].as_str()),
            (Some("invalid_request_error"), Some("temperature"))
        );
        assert_eq!(body["error"]["message"], "too hot");
        let budget = Error::BudgetExceeded {
            scope: "user",
            reset_at: "2026-01-01T00:00:00Z".into(),
            retry_after_secs: 60,
            tenant: "t".into(),
            user_id: "u".into(),
        };
        assert_eq!(error_body(&budget, "r1")["error"]["code"], "insufficient_quota");
        assert_eq!(error_body(&Error::Unauthorized("no".into()), "r1")["error"]["type"], "authentication_error");
    }

    #[test]
    fn a_stream_ends_with_the_sources_the_usage_and_done() {
        let source = Source {
            document_id: "d1".into(),
            title: "Handbook".into(),
            chunk: 0,
            score: 1.0,
            snippet: "s".into(),
            heading: None,
            pages: Some([3, 4]),
            start: None,
            end: None,
        };
        let answer = Answer {
            text: "Talk [1].".into(),
            sources: vec![source],
            usage: crate::model::Usage { input_tokens: 10, output_tokens: 3 },
            model: "gpt-4o-mini-2024-07-18".into(),
            intervened: false,
        };
        let chunks = Chunks::new(&Delivery { stream: true, include_usage: true, model: "coach".into() });
        let end = chunks.end(&answer);
        let lines: Vec<&str> = end.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 4, "{end}");
        let parse = |l: &str| serde_json::from_str::<Value>(l.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(parse(lines[0])["choices"][0]["delta"]["content"], "\n\nSources:\n[1] Handbook, pages 3-4");
        assert_eq!(parse(lines[1])["choices"][0]["finish_reason"], "stop");
        assert_eq!(parse(lines[1])["sources"][0]["document_id"], "d1");
        assert_eq!(parse(lines[2])["usage"]["total_tokens"], 13);
        assert_eq!(parse(lines[2])["choices"], json!([]));
        assert_eq!(lines[3], "data: [DONE]");
        let whole = completion(&answer, &Delivery { stream: false, include_usage: false, model: "coach".into() });
        assert_eq!(whole["choices"][0]["message"]["content"], "Talk [1].\n\nSources:\n[1] Handbook, pages 3-4");
        assert_eq!(whole["model"], "coach");
    }
}
