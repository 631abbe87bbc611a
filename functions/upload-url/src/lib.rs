//! The upload-url function: presigned upload URLs, and the tenant's documents and status.
//!
//! | route | who |
//! |---|---|
//! | `POST /uploads` `{filename, content_type, size_bytes}` | role `editor` |
//! | `POST /documents` `{filename, content, content_type, metadata?}` | role `editor`: a text document inline |
//! | `GET /documents?limit=&cursor=` | role `user` |
//! | `GET /documents/{id}` | role `user` |
//! | `GET /documents/{id}/chunks/{n}?context=` | role `user`: a cited passage with its neighbours (the tenant's documents and the shared docs) |
//! | `DELETE /documents/{id}` | role `editor` |
//! | `POST /documents/reembed` | role `admin`: re-embed the tenant's documents in the background |
//!
//! Documents belong to the caller's tenant; another tenant's document id is a 404.

use std::sync::Arc;

use coach::{
    audit::{Audit, Operation},
    auth::{ApiKeys, Authenticator, Principal, Role},
    config::{Env, StartupError},
    documents::{Documents, InlineDocument, UploadConfig, UploadRequest, MAX_CHUNK_CONTEXT},
    http::{
        self, empty_response, error_response, json_body, json_body_within, json_response, query_limit, query_param,
        request_id, Route,
    },
    index::Index,
    ratelimit::{RateLimitConfig, RateLimiter},
    secrets::Secrets,
    store::AwsClients,
    Error,
};
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde_json::json;

/// What the upload-url function uses, built once per cold start.
pub struct State {
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub documents: Documents,
    pub audit: Audit,
}

impl State {
    /// Reads the configuration from the environment and builds everything from it.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Self::build).await
    }

    /// Builds the state from a configuration and ready clients.
    pub fn build(env: &Env, aws: &AwsClients) -> Result<Self, StartupError> {
        // The signing key's secret; the Coach secret only with the Postgres index store (its
        // password), read on a delete's first use of the database.
        let signing_key = Secrets::from_env(env, Arc::new(aws.secrets_manager()), &aws.config.jwt_secret_id)?;
        let coach_secret = Secrets::from_env(env, Arc::new(aws.secrets_manager()), &aws.config.secret_id)?;
        let index = Index::from_env(env, aws, &coach_secret)?.writer(aws);
        let table = Arc::new(aws.table());
        Ok(Self {
            auth: Authenticator::from_env(env, signing_key)?
                .with_api_keys(Arc::new(ApiKeys::from_env(env, Arc::new(aws.table()))?)),
            limiter: RateLimiter::new(table.clone(), RateLimitConfig::from_env(env)?),
            documents: Documents::new(table.clone(), Arc::new(aws.bucket()), index, UploadConfig::from_env(env)?)
                .with_jobs(aws.job_queue(env)),
            audit: Audit::from_env(env, table)?,
        })
    }
}

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    let started = std::time::Instant::now();
    let request_id = request_id(&req);
    let response = match route(state, &req).await {
        Ok(response) => response,
        Err(err) => {
            let route = http::route_name(ROUTES, req.method().as_str(), req.uri().path());
            state.audit.refusal(&err, &route, &request_id).await;
            error_response(&err, &request_id)
        }
    };
    coach::metrics::request(
        "upload-url",
        req.method().as_str(),
        req.uri().path(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// What the `upload-url` function answers; `openapi.yaml` documents each.
pub const ROUTES: &[Route] = &[
    Route::new("POST", "/uploads"),
    Route::new("GET", "/documents"),
    Route::new("POST", "/documents"),
    Route::new("POST", "/documents/reembed"),
    Route::new("GET", "/documents/{id}"),
    Route::new("DELETE", "/documents/{id}"),
    Route::new("GET", "/documents/{id}/chunks/{n}"),
];

async fn route(state: &State, req: &Request) -> Result<Response<Body>, Error> {
    let (route, params) = http::route(ROUTES, req.method().as_str(), req.uri().path())?;
    match (route.method, route.path, params.as_slice()) {
        ("POST", "/uploads", _) => create_upload(state, req).await,
        ("GET", "/documents", _) => list(state, req).await,
        ("POST", "/documents", _) => create_inline(state, req).await,
        ("POST", "/documents/reembed", _) => reembed(state, req).await,
        ("GET", "/documents/{id}", [id]) => get(state, req, id).await,
        ("DELETE", "/documents/{id}", [id]) => delete(state, req, id).await,
        ("GET", "/documents/{id}/chunks/{n}", [id, n]) => chunk(state, req, id, n).await,
        _ => Err(Error::internal(format!("no handler for the route {} {}", route.method, route.path))),
    }
}

async fn caller(state: &State, req: &Request, role: Role) -> Result<Principal, Error> {
    let who = state.auth.authenticate(req).await?;
    who.require(role)?;
    Ok(who)
}

/// `POST /uploads`: 201 with `{document_id, upload_url, method, headers, expires_at}`.
async fn create_upload(state: &State, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::Editor).await?;
    state.limiter.check(&who).await?;
    let input: UploadRequest = json_body(req)?;
    let upload = state.documents.create_upload(&who, &input).await?;
    state.audit.record(&who, Operation::DocumentUpload, Some(&upload.document_id), &request_id(req)).await;
    Ok(json_response(StatusCode::CREATED, &upload))
}

/// `POST /documents` (editor): a text document sent inline, stored as an upload would be;
/// 202 with `{document_id, status, status_url}`: ingest reads it as it reads uploads, and
/// `GET /documents/{id}` follows it to `ready` or `failed`.
async fn create_inline(state: &State, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::Editor).await?;
    state.limiter.check(&who).await?;
    // The text, JSON-escaped, plus the other fields.
    let limit = state.documents.inline_max_bytes().saturating_mul(2).saturating_add(64 * 1024);
    let input: InlineDocument = json_body_within(req, limit)?;
    let id = state.documents.create_inline(&who, &input).await?;
    state.audit.record(&who, Operation::DocumentUpload, Some(&id), &request_id(req)).await;
    let body = json!({"document_id": id, "status": "pending", "status_url": format!("/documents/{id}")});
    Ok(json_response(StatusCode::ACCEPTED, &body))
}

async fn list(state: &State, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::User).await?;
    let limit = query_limit(req, 50, 100)?;
    let (documents, next_cursor) = state.documents.list(&who, limit, query_param(req, "cursor")).await?;
    Ok(json_response(StatusCode::OK, &json!({"documents": documents, "next_cursor": next_cursor})))
}

async fn get(state: &State, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::User).await?;
    Ok(json_response(StatusCode::OK, &state.documents.get(&who, id).await?))
}

/// `GET /documents/{id}/chunks/{n}?context=` (user): chunk `n` (from 0, as sources number
/// them) with up to `context` chunks (default 1, at most 5) on each side.
async fn chunk(state: &State, req: &Request, id: &str, n: &str) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::User).await?;
    let number: u32 = n.parse().map_err(|_| Error::BadRequest("n must be a chunk number (0 or more)".into()))?;
    let context = match query_param(req, "context") {
        None => 1,
        Some(value) => value
            .parse::<u32>()
            .ok()
            .filter(|c| *c <= MAX_CHUNK_CONTEXT)
            .ok_or_else(|| Error::BadRequest(format!("context must be 0 to {MAX_CHUNK_CONTEXT}")))?,
    };
    Ok(json_response(StatusCode::OK, &state.documents.chunk(&who, id, number, context).await?))
}

/// `POST /documents/reembed` (admin): 202; the tenant's documents gain the current model's
/// vectors in the background (progress in each document's `embedded_chunks`).
async fn reembed(state: &State, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::Admin).await?;
    state.limiter.check(&who).await?;
    state.documents.reembed(&who).await?;
    Ok(json_response(StatusCode::ACCEPTED, &json!({"status": "queued"})))
}

async fn delete(state: &State, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = caller(state, req, Role::Editor).await?;
    state.documents.delete(&who, id).await?;
    state.audit.record(&who, Operation::DocumentDelete, Some(id), &request_id(req)).await;
    Ok(empty_response(StatusCode::NO_CONTENT))
}
