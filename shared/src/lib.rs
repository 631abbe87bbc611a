//! Coach's shared crate: everything the Lambda functions have in common.
//!
//! The functions under `functions/` are thin adapters: they parse their event, call into
//! this crate and shape the response. Each concern lives in a module named for it:
//!
//! - [`config`]: the typed configuration read from environment variables at cold start.
//! - [`aws`]: AWS SDK clients, built once per cold start with the endpoint from the
//!   environment, so the same code reaches AWS or a local emulator.
//! - [`error`]: the one error type, and its mapping to HTTP statuses and error codes.
//! - [`http`]: JSON responses and the JSON error body every HTTP route returns.
//! - [`health`]: dependency checks behind `GET /health`.
//! - [`logging`]: structured JSON logs with the Lambda request id.

pub mod aws;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod logging;

pub use error::{Error, Result};
