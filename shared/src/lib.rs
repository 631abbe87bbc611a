//! Coach's shared crate: everything the Lambda functions have in common.
//!
//! The functions under `functions/` are thin adapters: they parse their event, call into
//! this crate and shape the response. Each concern lives in a module named for it:
//!
//! - [`auth`]: JWT verification (JWKS or HS256), principals, roles and route guards.
//! - [`profile`]: optional user profiles (Auth0 `user_metadata`), cached.
//! - [`secrets`]: JSON secrets from Secrets Manager, cached with a TTL.
//! - [`chat`]: one chat turn end to end.
//! - [`history`]: sessions and messages in DynamoDB, scoped to the caller.
//! - [`prompt`]: the cached system prompt from S3 and prompt assembly with a token budget.
//! - [`retrieval`]: hybrid BM25 + vector search over the tenant's and the shared docs.
//! - [`ratelimit`]: per-user and per-tenant request limits (DynamoDB counters, 429).
//! - [`refresh`]: rebuilding the system prompt from `docs/` (docs-refresh).
//! - [`llm`]: the language model over HTTP (OpenAI-compatible, Anthropic, Gemini, none).
//! - [`documents`]: document records, upload validation and presigned uploads.
//! - [`embeddings`]: text embeddings over HTTP (OpenAI-compatible, Gemini), optional.
//! - [`ingest`]: S3 events to extracted, chunked, indexed documents with a status.
//! - [`config`]: the typed configuration read from environment variables at cold start.
//! - [`aws`]: AWS SDK clients, built once per cold start with the endpoint from the
//!   environment, so the same code reaches AWS or a local emulator.
//! - [`error`]: the one error type, and its mapping to HTTP statuses and error codes.
//! - [`http`]: JSON responses and the JSON error body every HTTP route returns.
//! - [`health`]: dependency checks behind `GET /health`.
//! - [`services`]: all of the above bundled as the per-cold-start state handlers borrow.
//! - [`logging`]: structured JSON logs with the Lambda request id.

pub mod auth;
pub mod aws;
pub mod chat;
pub mod config;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod health;
pub mod history;
pub mod http;
pub mod ingest;
pub mod llm;
pub mod logging;
pub mod profile;
pub mod prompt;
pub mod ratelimit;
pub mod refresh;
pub mod retrieval;
pub mod retry;
pub mod secrets;
pub mod services;

pub use error::{Error, Result};
