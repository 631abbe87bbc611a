//! Coach's shared crate: everything the Lambda functions have in common.
//!
//! The functions under `functions/` are thin adapters: they build the state they use once
//! per cold start, parse their event, call into this crate and shape the response. The
//! crate has four layers, each importing only the ones below it:
//!
//! - **Interface**: [`api`] (the request pipeline every HTTP surface goes through: route,
//!   authentication, handler, refusal audit, error response, metric).
//! - **Domain** (what Coach does): [`chat`] (one chat turn), [`history`] (sessions and
//!   messages), [`prompt`] (the system prompt and prompt assembly), [`retrieval`] (hybrid
//!   search over the index), [`index`] (each scope's manifest and segments: writing,
//!   compaction, loading), [`documents`] (records and uploads), [`ingest`] (S3 events to
//!   indexed documents), [`refresh`] (the system prompt from `docs/`), [`ratelimit`],
//!   [`health`], [`auth`] (JWT verification, principals, roles), [`profile`] (Auth0 user
//!   profiles), [`llm`] (the language model), [`embeddings`] (text embeddings: the embedded
//!   model or an HTTP service), [`rerank`] (optional reranking of retrieved passages),
//!   [`assist`] (one-shot answers: `/qa`, `/summarize`, `/mindmap`), [`usage`] (the usage
//!   ledger and budgets).
//! - **Stores** ([`store`]): small traits the domain depends on (history, documents,
//!   counters, blobs, index manifests and segments, kept answers, usage, secrets), with the DynamoDB, S3, Secrets Manager and PostgreSQL
//!   implementations; the only place that names an SDK type.
//! - **Foundations**: [`model`] (the records), [`ids`] (ids and clocks), [`error`] (the one
//!   error type), [`config`] (reading environment variables), [`deadline`] (the invocation's
//!   deadline), [`secrets`] (the cached
//!   secret), [`retry`] (upstream calls with retries), [`http`] (JSON responses and errors),
//!   [`logging`], [`metrics`] (CloudWatch Embedded Metric Format).
//!
//! `docs/ARCHITECTURE.md` has the picture and the path of each route.

pub mod analysis;
pub mod api;
pub mod assist;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod config;
pub mod deadline;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod health;
pub mod history;
pub mod http;
pub mod ids;
pub mod index;
pub mod ingest;
pub mod llm;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod profile;
pub mod prompt;
pub mod ratelimit;
pub mod refresh;
pub mod rerank;
pub mod retrieval;
pub mod retry;
pub mod rewrite;
pub mod secrets;
pub mod store;
pub mod streams;
pub mod titles;
pub mod usage;

pub use error::{Error, Result};
