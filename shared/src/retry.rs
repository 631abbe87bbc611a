//! Calling an upstream HTTP API with bounded time and retries: up to `max_attempts` tries,
//! each bounded by `timeout`, on 429, 5xx, timeouts and connection failures, with
//! exponential backoff and full jitter (a `Retry-After` of up to 10 s is waited out; a longer
//! one ends the tries, and is reported). Other 4xx answers are final, with the start of
//! their body for the caller to classify. Used for the language model and the embedding service, which
//! share one set of retry settings ([`Retries`]).

use std::time::Duration;

use crate::config::{ConfigError, Env};

/// How often and how patiently upstream calls are retried (`COACH_LLM_MAX_ATTEMPTS`,
/// `COACH_LLM_BACKOFF_MS`): read once, shared by the model and the embedding service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts.
    pub backoff: Duration,
}

impl Retries {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_attempts: env.number("COACH_LLM_MAX_ATTEMPTS")? as u32,
            backoff: Duration::from_millis(env.number("COACH_LLM_BACKOFF_MS")?),
        })
    }

    /// The policy for calls bounded by `timeout` each.
    pub fn policy(self, timeout: Duration) -> RetryPolicy {
        RetryPolicy { timeout, max_attempts: self.max_attempts, backoff: self.backoff }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Bound on one attempt (until the response headers, or the whole body for non-streams).
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Base of the exponential backoff.
    pub backoff: Duration,
}

/// Why no usable response came back; the cause of the error the caller answers, logged there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The upstream answered with a final client error (not 429). `body` is the start of its
    /// error body (at most [`ERROR_BODY_BYTES`]), for the caller to classify; never logged.
    #[error("{upstream} refused the request with status {status} on attempt {attempt}")]
    Refused { upstream: &'static str, status: u16, attempt: u32, body: String },
    /// Every attempt failed with 429, 5xx, a timeout or a connection failure. `last_status`
    /// is the last attempt's status, if it answered; `retry_after` what it asked for.
    #[error("{upstream} failed {attempts} attempt(s) with 429, 5xx, a timeout or no connection")]
    Unavailable { upstream: &'static str, attempts: u32, last_status: Option<u16>, retry_after: Option<Duration> },
}

/// How much of a refusal's body is kept (an error body; a longer one is cut).
pub const ERROR_BODY_BYTES: usize = 4096;

/// Sends the request `build` makes, retrying per `policy`. `total` bounds a whole attempt
/// including its body (set it to `policy.timeout` for plain requests, longer for streams).
pub async fn send(
    policy: &RetryPolicy,
    upstream: &'static str,
    total: Duration,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, SendError> {
    let mut attempt = 1;
    loop {
        let outcome = tokio::time::timeout(policy.timeout, crate::http::traced(build()).timeout(total).send()).await;
        let (last_status, asked) = match outcome {
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if status != 429 && status < 500 {
                    let body = error_body(response, policy.timeout).await;
                    return Err(SendError::Refused { upstream, status, attempt, body });
                }
                tracing::warn!(upstream, status, attempt, "upstream call failed");
                (Some(status), retry_after(&response))
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    upstream,
                    attempt,
                    timeout = e.is_timeout(),
                    connect = e.is_connect(),
                    "upstream unreachable"
                );
                (None, None)
            }
            Err(_) => {
                tracing::warn!(upstream, attempt, "upstream timed out");
                (None, None)
            }
        };
        // A wait of more than a few seconds is not waited out within a request: the caller
        // is told it instead.
        let wait = asked.filter(|after| *after <= MAX_WAIT);
        if attempt >= policy.max_attempts || (asked.is_some() && wait.is_none()) {
            return Err(SendError::Unavailable { upstream, attempts: attempt, last_status, retry_after: asked });
        }
        tokio::time::sleep(wait.unwrap_or_else(|| backoff(policy, attempt))).await;
        attempt += 1;
    }
}

/// The longest `Retry-After` waited out between attempts.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// The start of a refusal's body, within `timeout`; empty when it does not come.
async fn error_body(mut response: reqwest::Response, timeout: Duration) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_BYTES - body.len())]);
            if body.len() >= ERROR_BODY_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// Full jitter: a random wait up to `backoff * 2^(attempt-1)`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let cap = policy.backoff.saturating_mul(1 << (attempt - 1).min(16));
    cap.mul_f64(fastrand::f64())
}

/// A `Retry-After` in seconds (the HTTP-date form is not used by the model providers),
/// at most an hour.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}
