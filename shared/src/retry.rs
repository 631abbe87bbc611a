//! Calling an upstream HTTP API with bounded time and retries: up to `max_attempts` tries,
//! each bounded by `timeout`, on 429, 5xx, timeouts and connection failures, with
//! exponential backoff and full jitter (a `Retry-After` of up to 10 s is honoured). Other
//! 4xx answers are final. Used for the language model and the embedding service, which
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
            max_attempts: env.number("COACH_LLM_MAX_ATTEMPTS", 3, 1, 10)? as u32,
            backoff: Duration::from_millis(env.number("COACH_LLM_BACKOFF_MS", 250, 0, 10_000)?),
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

/// Why no usable response came back; the cause of the 502 the caller answers, logged there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The upstream answered with a final client error (not 429).
    #[error("{upstream} refused the request with status {status} on attempt {attempt}")]
    Refused { upstream: &'static str, status: u16, attempt: u32 },
    /// Every attempt failed with 429, 5xx, a timeout or a connection failure.
    #[error("{upstream} failed {attempts} attempt(s) with 429, 5xx, a timeout or no connection")]
    Unavailable { upstream: &'static str, attempts: u32 },
}

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
        let retry_after = match outcome {
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if status != 429 && status < 500 {
                    return Err(SendError::Refused { upstream, status, attempt });
                }
                tracing::warn!(upstream, status, attempt, "upstream call failed");
                retry_after(&response)
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    upstream,
                    attempt,
                    timeout = e.is_timeout(),
                    connect = e.is_connect(),
                    "upstream unreachable"
                );
                None
            }
            Err(_) => {
                tracing::warn!(upstream, attempt, "upstream timed out");
                None
            }
        };
        if attempt >= policy.max_attempts {
            return Err(SendError::Unavailable { upstream, attempts: attempt });
        }
        tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(policy, attempt))).await;
        attempt += 1;
    }
}

/// Full jitter: a random wait up to `backoff * 2^(attempt-1)`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let cap = policy.backoff.saturating_mul(1 << (attempt - 1).min(16));
    cap.mul_f64(fastrand::f64())
}

/// A `Retry-After` of up to 10 s, in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (secs <= 10).then(|| Duration::from_secs(secs))
}
