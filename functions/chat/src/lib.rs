//! The chat function: routes API Gateway requests to Coach's chat operations.
//!
//! Two entry points share the chat turn ([`coach::chat::Chat`]), each with the state it
//! uses, built once per cold start: [`handle`] with [`State`] (binary `chat`, behind the
//! HTTP API) answers in one piece and serves sessions and health, and [`stream::handle`]
//! with [`stream::StreamState`] (binary `chat-stream`, behind a Function URL with response
//! streaming) answers `POST /chat/stream` with Server-Sent Events.
//!
//! | route | who |
//! |---|---|
//! | `GET /health`, `GET /health/ready` | anyone: 200 when every dependency answers, else 503 |
//! | `GET /health/live` | anyone: 200 while the function runs, no dependency called |
//! | `GET /openapi.yaml` | anyone: the API's OpenAPI document |
//! | `GET /me` | any authenticated caller |
//! | `POST /chat` | role `user` |
//! | `POST /qa`, `POST /summarize`, `POST /mindmap` | role `user` |
//! | `GET /sessions`, `POST /sessions` | role `user` |
//! | `GET /sessions/{id}/messages?limit=&cursor=` | role `user`, own sessions only |
//! | `PUT /sessions/{id}/messages/{message_id}/feedback` | role `user`, own replies only |
//! | `PATCH /sessions/{id}`, `DELETE /sessions/{id}` | role `user`, own sessions only |
//! | `GET /usage` | role `user` (own usage); `?scope=tenant` role `admin` |
//! | `POST /api-keys`, `GET /api-keys`, `DELETE /api-keys/{id}` | role `admin`, own tenant's keys |
//! | `GET /audit?from=&to=&cursor=&limit=` | role `admin`, own tenant's events |
//! | `GET /v1/models`, `POST /v1/chat/completions` | role `user`: the OpenAI-compatible API ([`openai`]) |
//! | `POST /mcp` | role `user`: the MCP server ([`mcp`]); each tool checks its own role |

pub mod mcp;
pub mod openai;
pub mod settings;
pub mod stream;

use std::sync::Arc;

use coach::{
    api::{Call, Endpoint, Pipeline},
    assist::{mindmap::MindmapInput, qa::CacheUse, qa::QaInput, summary::SummaryInput, Assist, AssistParts},
    audit::Operation,
    auth::{
        api_keys::{ApiKeys, NewApiKey},
        Principal, Role,
    },
    chat::{Chat, ChatInput, ChatParts, TurnKey},
    config::StartupError,
    deadline::Deadline,
    embeddings::Embedder,
    health::{self, Health},
    history::{FeedbackInput, History},
    http::{empty_response, error_object, json_body, json_response, outbound_client, query_limit, query_param},
    index::Index,
    llm::{Llm, LlmConfig},
    model::Surface,
    profile::Profiles,
    prompt::SystemPrompt,
    ratelimit::RateLimiter,
    rerank::Reranker,
    retrieval::Retriever,
    rewrite::QueryRewrite,
    secrets::Secrets,
    store::{AwsClients, Probe},
    usage::{Admission, Ledger},
    Error,
};
use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Request, RequestExt, Response,
};
use serde::Deserialize;
use serde_json::json;
use settings::TurnSettings;
pub use settings::{Settings, StreamSettings};

/// Most sessions or messages in one page.
const MAX_PAGE: i32 = 100;

/// What the `chat` function uses, built once per cold start.
pub struct State {
    pub pipeline: Pipeline,
    pub chat: Chat,
    /// `/qa`, `/summarize` and `/mindmap`.
    pub assist: Assist,
    /// The session routes (shared with the chat turn).
    pub history: Arc<History>,
    /// `GET /usage` (shared with the chat turn).
    pub ledger: Arc<Ledger>,
    /// `GET /me`'s profile, when configured (shared with the chat turn).
    pub profiles: Option<Arc<Profiles>>,
    pub health: Health,
}

impl State {
    /// Reads the settings from the environment and builds everything from them.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Settings::load, Self::new).await
    }

    /// Builds the state from its settings and ready clients (tests point them at the local
    /// emulator).
    pub fn new(settings: Settings, aws: &AwsClients) -> Result<Self, StartupError> {
        let (parts, index) = turn(settings.turn, aws)?;
        let table = Arc::new(aws.table());
        let assist = Assist::new(AssistParts {
            config: settings.assist,
            limits: parts.limits.clone(),
            llm: parts.llm.clone(),
            retriever: parts.retriever.clone(),
            system_prompt: parts.system_prompt.clone(),
            admission: parts.admission.clone(),
            ledger: parts.ledger.clone(),
            answers: table.clone(),
            records: table,
            index: index.writer(aws),
        });
        let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(aws.bucket()), Arc::new(aws.table())];
        probes.extend(index.probe());
        Ok(Self {
            pipeline: Pipeline::assemble("chat", ENDPOINTS, settings.pipeline, aws),
            history: parts.history.clone(),
            ledger: parts.ledger.clone(),
            profiles: parts.profiles.clone(),
            chat: Chat::new(parts),
            assist,
            health: Health::new(probes),
        })
    }
}

/// What both entry points use: the chat turn's parts (and the index store it searches).
fn turn(settings: TurnSettings, aws: &AwsClients) -> Result<(ChatParts, Index), StartupError> {
    let http = outbound_client()?;
    let secrets = Secrets::coach(aws, settings.secrets);
    let (table, bucket) = (Arc::new(aws.table()), Arc::new(aws.bucket()));
    let index = Index::new(settings.index, aws, &secrets);
    let rewrite =
        settings.rewrite.map(|config| QueryRewrite::new(config, &settings.llm, http.clone(), secrets.clone(), aws));
    let ledger = Arc::new(Ledger::new(table.clone(), settings.ledger, settings.budgets));
    let limiter = RateLimiter::new(table.clone(), settings.rate_limit);
    let retriever = Retriever::new(
        settings.ranking,
        settings.analyzer,
        index.search(aws),
        Embedder::new(settings.embeddings, http.clone(), secrets.clone(), aws),
        Reranker::new(settings.rerank, http.clone(), secrets.clone()),
    );
    // The models a caller may pick: the configured provider's, with its settings.
    let choices = (settings.allowed_models.into_iter())
        .map(|model| {
            Arc::new(Llm::new(LlmConfig { model, ..settings.llm.clone() }, http.clone(), secrets.clone(), aws))
        })
        .collect();
    let parts = ChatParts {
        limits: settings.chat,
        history: Arc::new(History::new(table, settings.history)),
        system_prompt: Arc::new(SystemPrompt::new(bucket, settings.prompt_revalidate)),
        profiles: settings.profiles.map(|config| Arc::new(Profiles::new(config, http.clone(), secrets.clone()))),
        retriever: Arc::new(retriever),
        llm: Arc::new(Llm::new(settings.llm, http, secrets, aws)),
        rewrite,
        admission: Arc::new(Admission::new(limiter, ledger.clone())),
        ledger,
        jobs: aws.job_queue(),
        choices,
    };
    Ok((parts, index))
}

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    state.pipeline.serve(&req, |call| route(state, call)).await
}

/// What the `chat` function answers (behind the HTTP API), and who may ask; `openapi.yaml`
/// documents each.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint::open("GET", "/health"),
    Endpoint::open("GET", "/health/ready"),
    Endpoint::open("GET", "/health/live"),
    Endpoint::open("GET", "/openapi.yaml"),
    Endpoint::new("GET", "/me", Role::User),
    Endpoint::new("POST", "/chat", Role::User),
    Endpoint::new("POST", "/qa", Role::User),
    Endpoint::new("POST", "/summarize", Role::User),
    Endpoint::new("POST", "/mindmap", Role::User),
    Endpoint::new("GET", "/sessions", Role::User),
    Endpoint::new("POST", "/sessions", Role::User),
    Endpoint::new("GET", "/sessions/{id}/messages", Role::User),
    Endpoint::new("PUT", "/sessions/{id}/messages/{message_id}/feedback", Role::User),
    Endpoint::new("PATCH", "/sessions/{id}", Role::User),
    Endpoint::new("DELETE", "/sessions/{id}", Role::User),
    // Role `admin` for `?scope=tenant`.
    Endpoint::new("GET", "/usage", Role::User),
    Endpoint::new("POST", "/api-keys", Role::Admin),
    Endpoint::new("GET", "/api-keys", Role::Admin),
    Endpoint::new("DELETE", "/api-keys/{id}", Role::Admin),
    Endpoint::new("GET", "/audit", Role::Admin),
    openai::MODELS,
    openai::MODEL,
    openai::COMPLETIONS,
    mcp::MCP,
];

/// The API's OpenAPI document, served at `GET /openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../openapi.yaml");

async fn route(state: &State, call: Call<'_>) -> Result<Response<Body>, Error> {
    let call = &call;
    match (call.route.method, call.route.path, call.params.as_slice()) {
        // Readiness: every dependency answers (`/health` is the same check, kept for callers
        // of the first API).
        ("GET", "/health" | "/health/ready", _) => Ok(health(state, &call.request_id).await),
        // Liveness: the process answers; no dependency is called.
        ("GET", "/health/live", _) => Ok(json_response(StatusCode::OK, &json!({"status": "live"}))),
        ("GET", "/openapi.yaml", _) => Ok(openapi()),
        ("GET", "/me", _) => me(state, call).await,
        ("POST", "/chat", _) => post_chat(state, call).await,
        ("POST", "/qa", _) => post_qa(state, call).await,
        ("POST", "/summarize", _) => post_summarize(state, call).await,
        ("POST", "/mindmap", _) => post_mindmap(state, call).await,
        ("GET", "/sessions", _) => list_sessions(state, call).await,
        ("POST", "/sessions", _) => create_session(state, call).await,
        ("GET", "/sessions/{id}/messages", [id]) => session_messages(state, call, id).await,
        ("PUT", "/sessions/{id}/messages/{message_id}/feedback", [id, message]) => rate(state, call, id, message).await,
        ("PATCH", "/sessions/{id}", [id]) => rename_session(state, call, id).await,
        ("DELETE", "/sessions/{id}", [id]) => delete_session(state, call, id).await,
        ("GET", "/usage", _) => usage(state, call).await,
        ("POST", "/api-keys", _) => create_api_key(state, call).await,
        ("GET", "/api-keys", _) => list_api_keys(state, call).await,
        ("DELETE", "/api-keys/{id}", [id]) => revoke_api_key(state, call, id).await,
        ("GET", "/audit", _) => audit(state, call).await,
        ("GET", "/v1/models", _) => Ok(openai::models(&state.chat)),
        ("GET", "/v1/models/{id}", [id]) => openai::model(&state.chat, id),
        ("POST", "/v1/chat/completions", _) => completions(state, call).await,
        ("POST", "/mcp", _) => mcp::serve(state, call).await,
        (method, path, _) => Err(Error::internal(format!("no handler for the route {method} {path}"))),
    }
}

/// `GET /openapi.yaml`: the document, cacheable for five minutes.
fn openapi() -> Response<Body> {
    let mut response = Response::new(Body::Text(OPENAPI.to_owned()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// `GET /health`: 200 with component statuses when every dependency answers, else 503
/// with the same report plus the JSON error object.
async fn health(state: &State, request_id: &str) -> Response<Body> {
    let report = state.health.check().await;
    match report.status {
        health::Status::Healthy => json_response(StatusCode::OK, &report),
        health::Status::Degraded => {
            let message = format!("dependencies degraded: {}", report.degraded().join(", "));
            let err = Error::Unavailable { message, cause: None };
            let body = json!({
                "status": report.status,
                "components": report.components,
                "error": error_object(&err, request_id),
            });
            json_response(err.status(), &body)
        }
    }
}

/// `GET /me`: the caller as Coach sees them (user id, tenant, roles, and the profile when
/// one is configured and available), to check an identity provider's configuration.
async fn me(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let principal = call.who()?;
    let mut body = serde_json::to_value(principal).map_err(|e| Error::internal(e.to_string()))?;
    if let Some(profiles) = &state.profiles {
        body["profile"] = match profiles.get(&principal.user_id).await {
            Some(profile) => (*profile).clone(),
            None => serde_json::Value::Null,
        };
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /chat` `{message, session_id?}`, with an optional `Idempotency-Key` header.
async fn post_chat(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: ChatInput = json_body(req)?;
    let turn = TurnKey::for_turn(idempotency_key(req)?, &input)?;
    let reply = state.chat.chat(who, input, turn, deadline(req)).await?;
    audit_guardrail(&state.pipeline, call, reply.intervened).await?;
    Ok(json_response(StatusCode::OK, &reply))
}

/// Audits a guardrail's intervention in the answer to `call`, when one intervened.
pub(crate) async fn audit_guardrail(pipeline: &Pipeline, call: &Call<'_>, intervened: bool) -> Result<(), Error> {
    if intervened {
        pipeline.intervened(&call.asked()?).await;
    }
    Ok(())
}

/// `POST /v1/chat/completions`: whole, or the chunks of a stream in one body (the HTTP API
/// cannot stream; the streaming Function URL does).
async fn completions(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (exchange, delivery) = openai::request(call)?;
    if !delivery.stream {
        return openai::whole(&state.chat, &state.pipeline, call, exchange, &delivery, deadline(call.req)).await;
    }
    let stream = state.chat.begin_exchange(call.who()?, exchange, deadline(call.req)).await?;
    openai::buffered(&state.chat, &state.pipeline, call, stream, &delivery).await
}

/// The invocation's deadline.
pub(crate) fn deadline(req: &Request) -> Deadline {
    Deadline::of_invocation(req.lambda_context_ref().map_or(0, |c| c.deadline))
}

/// `POST /qa` `{question, top_k?, use_documents?}`, with an optional `Cache-Control`.
async fn post_qa(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: QaInput = json_body(req)?;
    let cache = CacheUse::from_header(req.headers().get("cache-control").and_then(|v| v.to_str().ok()));
    let answer = state.assist.qa(who, Surface::Api, input, cache, deadline(req)).await?;
    audit_guardrail(&state.pipeline, call, answer.intervened).await?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// `POST /summarize` `{document_id | text, style?}`.
async fn post_summarize(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: SummaryInput = json_body(req)?;
    let summary = state.assist.summarize(who, Surface::Api, input, deadline(req)).await?;
    audit_guardrail(&state.pipeline, call, summary.intervened).await?;
    Ok(json_response(StatusCode::OK, &summary))
}

/// `POST /mindmap` `{topic, depth?, use_documents?}`.
async fn post_mindmap(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: MindmapInput = json_body(req)?;
    let mindmap = state.assist.mindmap(who, input, deadline(req)).await?;
    audit_guardrail(&state.pipeline, call, mindmap.intervened).await?;
    Ok(json_response(StatusCode::OK, &mindmap))
}

/// `GET /usage?from=&to=&scope=user|tenant`: the caller's own usage (role `user`), or with
/// `scope=tenant` the whole tenant's (role `admin`), by day and by model.
async fn usage(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let (from, to) = (query_param(req, "from"), query_param(req, "to"));
    let (scope, user) = match query_param(req, "scope").unwrap_or("user") {
        "user" => ("user", Some(who.user_id.as_str())),
        "tenant" => {
            who.require(Role::Admin)?;
            ("tenant", None)
        }
        _ => return Err(Error::BadRequest("scope must be user or tenant".into())),
    };
    let report = state.ledger.report(&who.tenant, user, from, to).await?;
    let mut body = serde_json::to_value(&report).map_err(|e| Error::internal(e.to_string()))?;
    body["scope"] = scope.into();
    if let Some(user) = user {
        body["user_id"] = user.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// The caller (an admin of their tenant: the endpoints' role), and the API keys.
fn key_admin<'s, 'c>(state: &'s State, call: &'c Call<'_>) -> Result<(&'c Principal, &'s ApiKeys), Error> {
    let keys = state.pipeline.auth().api_keys().ok_or_else(|| Error::internal("the chat function has no API keys"))?;
    Ok((call.who()?, keys))
}

/// `POST /api-keys` `{name, roles}` (admin): 201 with the key, shown this once.
async fn create_api_key(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (who, keys) = key_admin(state, call)?;
    let input: NewApiKey = json_body(call.req)?;
    let created = keys.create(who, input).await?;
    state.pipeline.record(call, Operation::ApiKeyCreate, Some(&created.info.id)).await;
    let mut response = json_response(StatusCode::CREATED, &created);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api-keys` (admin): the tenant's keys, without secrets.
async fn list_api_keys(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (who, keys) = key_admin(state, call)?;
    Ok(json_response(StatusCode::OK, &json!({"api_keys": keys.list(who).await?})))
}

/// `DELETE /api-keys/{id}` (admin): 204; the key is refused from now on.
async fn revoke_api_key(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let (who, keys) = key_admin(state, call)?;
    keys.revoke(who, id).await?;
    state.pipeline.record(call, Operation::ApiKeyRevoke, Some(id)).await;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `GET /audit?from=&to=&cursor=&limit=` (admin): the tenant's audit events, newest first.
async fn audit(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let limit = query_limit(req, 50, MAX_PAGE)?;
    let (from, to, cursor) = (query_param(req, "from"), query_param(req, "to"), query_param(req, "cursor"));
    let page = state.pipeline.audit().list(who, from, to, limit, cursor).await?;
    Ok(json_response(StatusCode::OK, &json!({"events": page.items, "next_cursor": page.next_cursor})))
}

/// The `Idempotency-Key` header, if any (400 when it is not text).
pub fn idempotency_key(req: &Request) -> Result<Option<&str>, Error> {
    req.headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map_err(|_| Error::BadRequest("Idempotency-Key must be visible ASCII characters".into())))
        .transpose()
}

/// `GET /sessions?limit=&cursor=`: the caller's sessions, most recently active first.
async fn list_sessions(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let limit = query_limit(req, 20, MAX_PAGE)?;
    let page = state.history.sessions(who, limit, query_param(req, "cursor")).await?;
    Ok(json_response(StatusCode::OK, &json!({"sessions": page.items, "next_cursor": page.next_cursor})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

/// `POST /sessions` `{title?}` (body optional): 201 with the new session.
async fn create_session(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: NewSession = if req.body().is_empty() { NewSession::default() } else { json_body(req)? };
    let title = input.title.as_deref().filter(|t| !t.trim().is_empty());
    let session = state.history.create_session(who, title).await?;
    Ok(json_response(StatusCode::CREATED, &session))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    title: String,
}

/// `PATCH /sessions/{id}` `{title}`: the session, renamed by its user.
async fn rename_session(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: Rename = json_body(req)?;
    let session = state.history.rename(who, id, &input.title).await?;
    Ok(json_response(StatusCode::OK, &session))
}

/// `GET /sessions/{id}/messages?limit=&cursor=`: newest first; `next_cursor` leads to older.
async fn session_messages(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let limit = query_limit(req, 50, MAX_PAGE)?;
    let session = state.history.session(who, id).await?;
    let page = state.history.messages(who, &session.session_id, limit, query_param(req, "cursor")).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"session_id": session.session_id, "messages": page.items, "next_cursor": page.next_cursor}),
    ))
}

/// `PUT /sessions/{id}/messages/{message_id}/feedback` `{rating, reason?, comment?}`: the
/// reply with its feedback.
async fn rate(state: &State, call: &Call<'_>, session: &str, message: &str) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let input: FeedbackInput = json_body(req)?;
    let message = state.history.rate(who, session, message, input).await?;
    Ok(json_response(StatusCode::OK, &message))
}

/// `DELETE /sessions/{id}`: the session and all its messages; 204.
async fn delete_session(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let who = call.who()?;
    state.history.delete_session(who, id).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}
