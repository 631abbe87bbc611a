//! The upload-url function: presigned upload URLs, and the tenant's documents and status.
//!
//! | route | who |
//! |---|---|
//! | `POST /uploads` `{filename, content_type, size_bytes, access?}` | role `editor` |
//! | `POST /documents` `{filename, content, content_type, metadata?, access?}` | role `editor`: a text document inline |
//! | `GET /documents?limit=&cursor=` | role `user` |
//! | `GET /documents/{id}` | role `user` |
//! | `PATCH /documents/{id}` `{access}` | role `editor`: who may read it (`"tenant"` or groups) |
//! | `GET /documents/{id}/chunks/{n}?context=` | role `user`: a cited passage with its neighbours (the tenant's documents and the shared docs) |
//! | `DELETE /documents/{id}` | role `editor` |
//! | `POST /documents/reembed` | role `admin`: re-embed the tenant's documents in the background |
//!
//! Documents belong to the caller's tenant; another tenant's document id is a 404, and so
//! is one restricted to groups the caller is not in (admins read every document of their
//! tenant).

use std::sync::Arc;

use coach::{
    api::{Call, Endpoint, Keys, Pipeline, PipelineConfig},
    audit::Operation,
    auth::Role,
    config::{ConfigError, Env, StartupError},
    documents::{DocumentChange, Documents, InlineDocument, UploadConfig, UploadRequest, MAX_CHUNK_CONTEXT},
    http::{empty_response, json_body, json_body_within, json_response, query_limit, query_param},
    index::{Index, IndexStoreConfig},
    ratelimit::{RateLimitConfig, RateLimiter},
    secrets::{Secrets, SecretsConfig},
    store::AwsClients,
    Error,
};
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde_json::json;

/// What the upload-url function uses, built once per cold start.
pub struct State {
    pub pipeline: Pipeline,
    pub limiter: RateLimiter,
    pub documents: Documents,
}

/// The upload-url function's settings, read from the environment once at cold start
/// (names, defaults and bounds: [`coach::config::settings::SETTINGS`]).
pub struct Settings {
    pub pipeline: PipelineConfig,
    pub rate_limit: RateLimitConfig,
    pub uploads: UploadConfig,
    /// Where deletes remove a document's passages.
    pub index: IndexStoreConfig,
    /// The Coach secret's cache (read only with the Postgres index store: its password).
    pub secrets: SecretsConfig,
}

impl Settings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            pipeline: PipelineConfig::from_env(env, Keys::Accepted)?,
            rate_limit: RateLimitConfig::from_env(env)?,
            uploads: UploadConfig::from_env(env)?,
            index: IndexStoreConfig::from_env(env)?,
            secrets: SecretsConfig::from_env(env)?,
        })
    }
}

impl State {
    /// Reads the settings from the environment and builds everything from them.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Settings::load, Self::new).await
    }

    /// Builds the state from its settings and ready clients (tests point them at the local
    /// emulator).
    pub fn new(settings: Settings, aws: &AwsClients) -> Result<Self, StartupError> {
        // The Coach secret only with the Postgres index store (its password), read on a
        // delete's first use of the database.
        let index = Index::new(settings.index, aws, &Secrets::coach(aws, settings.secrets)).writer(aws);
        let table = Arc::new(aws.table());
        Ok(Self {
            pipeline: Pipeline::assemble("upload-url", ENDPOINTS, settings.pipeline, aws),
            limiter: RateLimiter::new(table.clone(), settings.rate_limit),
            documents: Documents::new(table, Arc::new(aws.bucket()), index, settings.uploads)
                .with_jobs(aws.job_queue()),
        })
    }
}

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    state.pipeline.serve(&req, |call| route(state, call)).await
}

/// What the `upload-url` function answers, and who may ask; `openapi.yaml` documents each.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint::new("POST", "/uploads", Role::Editor),
    Endpoint::new("GET", "/documents", Role::User),
    Endpoint::new("POST", "/documents", Role::Editor),
    Endpoint::new("POST", "/documents/reembed", Role::Admin),
    Endpoint::new("GET", "/documents/{id}", Role::User),
    Endpoint::new("PATCH", "/documents/{id}", Role::Editor),
    Endpoint::new("DELETE", "/documents/{id}", Role::Editor),
    Endpoint::new("GET", "/documents/{id}/chunks/{n}", Role::User),
];

async fn route(state: &State, call: Call<'_>) -> Result<Response<Body>, Error> {
    match (call.route.method, call.route.path, call.params.as_slice()) {
        ("POST", "/uploads", _) => create_upload(state, &call).await,
        ("GET", "/documents", _) => list(state, &call).await,
        ("POST", "/documents", _) => create_inline(state, &call).await,
        ("POST", "/documents/reembed", _) => reembed(state, &call).await,
        ("GET", "/documents/{id}", [id]) => get(state, &call, id).await,
        ("PATCH", "/documents/{id}", [id]) => change(state, &call, id).await,
        ("DELETE", "/documents/{id}", [id]) => delete(state, &call, id).await,
        ("GET", "/documents/{id}/chunks/{n}", [id, n]) => chunk(state, &call, id, n).await,
        (method, path, _) => Err(Error::internal(format!("no handler for the route {method} {path}"))),
    }
}

/// `POST /uploads`: 201 with `{document_id, upload_url, method, headers, expires_at}`.
async fn create_upload(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    state.limiter.check(who).await?;
    let input: UploadRequest = json_body(req)?;
    let upload = state.documents.create_upload(who, &input).await?;
    state.pipeline.record(call, Operation::DocumentUpload, Some(&upload.document_id)).await;
    Ok(json_response(StatusCode::CREATED, &upload))
}

/// `POST /documents` (editor): a text document sent inline, stored as an upload would be;
/// 202 with `{document_id, status, status_url}`: ingest reads it as it reads uploads, and
/// `GET /documents/{id}` follows it to `ready` or `failed`.
async fn create_inline(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    state.limiter.check(who).await?;
    // The text, JSON-escaped, plus the other fields.
    let limit = state.documents.inline_max_bytes().saturating_mul(2).saturating_add(64 * 1024);
    let input: InlineDocument = json_body_within(req, limit)?;
    let id = state.documents.create_inline(who, &input).await?;
    state.pipeline.record(call, Operation::DocumentUpload, Some(&id)).await;
    let body = json!({"document_id": id, "status": "pending", "status_url": format!("/documents/{id}")});
    Ok(json_response(StatusCode::ACCEPTED, &body))
}

async fn list(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let limit = query_limit(req, 50, 100)?;
    let (documents, next_cursor) = state.documents.list(who, limit, query_param(req, "cursor")).await?;
    Ok(json_response(StatusCode::OK, &json!({"documents": documents, "next_cursor": next_cursor})))
}

async fn get(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let who = call.who()?;
    Ok(json_response(StatusCode::OK, &state.documents.get(who, id).await?))
}

/// `GET /documents/{id}/chunks/{n}?context=` (user): chunk `n` (from 0, as sources number
/// them) with up to `context` chunks (default 1, at most 5) on each side.
async fn chunk(state: &State, call: &Call<'_>, id: &str, n: &str) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    let number: u32 = n.parse().map_err(|_| Error::BadRequest("n must be a chunk number (0 or more)".into()))?;
    let context = match query_param(req, "context") {
        None => 1,
        Some(value) => value
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= MAX_CHUNK_CONTEXT)
            .ok_or_else(|| Error::BadRequest(format!("context must be 0 to {MAX_CHUNK_CONTEXT}")))?,
    };
    Ok(json_response(StatusCode::OK, &state.documents.chunk(who, id, number, context).await?))
}

/// `POST /documents/reembed` (admin): 202; the tenant's documents gain the current model's
/// vectors in the background (progress in each document's `embedded_chunks`).
async fn reembed(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let who = call.who()?;
    state.limiter.check(who).await?;
    state.documents.reembed(who).await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"status": "queued"})))
}

/// `PATCH /documents/{id}` `{access}` (editor): who may read the document, effective for
/// search within seconds (no re-embedding); 200 with the document. Audited when it changed.
async fn change(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let (req, who) = (call.req, call.who()?);
    state.limiter.check(who).await?;
    let input: DocumentChange = json_body(req)?;
    let (doc, before) = state.documents.set_access(who, id, &input).await?;
    if before != doc.access {
        state.pipeline.record(call, Operation::DocumentAccess, Some(&doc.document_id)).await;
    }
    Ok(json_response(StatusCode::OK, &doc))
}

async fn delete(state: &State, call: &Call<'_>, id: &str) -> Result<Response<Body>, Error> {
    let who = call.who()?;
    state.documents.delete(who, id).await?;
    state.pipeline.record(call, Operation::DocumentDelete, Some(id)).await;
    Ok(empty_response(StatusCode::NO_CONTENT))
}
