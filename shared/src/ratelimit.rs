//! Rate limiting per user and per tenant with counters in fixed windows
//! (`COACH_RATE_LIMIT_WINDOW_SECS`, one minute by default). A request counts against the
//! user's window, then the tenant's (so a user over their limit does not use up the
//! tenant's); when a window is full the request gets 429 with `Retry-After` (seconds to the
//! next window). Counters expire through the table's TTL. If the counter store cannot be
//! reached the request is let through (and logged): the limiter protects cost, it must not
//! become an outage of its own.

use std::{sync::Arc, time::Duration};

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::now_ms,
    store::{Counter, Counters},
};

/// Requests allowed per window (`COACH_RATE_LIMIT_USER`, `COACH_RATE_LIMIT_TENANT`; 0 turns
/// a limit off) and the window (`COACH_RATE_LIMIT_WINDOW_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_user: u64,
    pub per_tenant: u64,
    pub window: Duration,
}

impl RateLimitConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            per_user: env.number("COACH_RATE_LIMIT_USER", 30, 0, 1_000_000)?,
            per_tenant: env.number("COACH_RATE_LIMIT_TENANT", 600, 0, 10_000_000)?,
            window: Duration::from_secs(env.number("COACH_RATE_LIMIT_WINDOW_SECS", 60, 1, 86_400)?),
        })
    }
}

pub struct RateLimiter {
    counters: Arc<dyn Counters>,
    config: RateLimitConfig,
}

impl RateLimiter {
    pub fn new(counters: Arc<dyn Counters>, config: RateLimitConfig) -> Self {
        Self { counters, config }
    }

    /// Counts one request of `who`; 429 when the user's or the tenant's window is full.
    pub async fn check(&self, who: &Principal) -> Result<(), Error> {
        let now = now_ms();
        let window_ms = (self.config.window.as_millis() as u64).max(1000);
        let window = now / window_ms * window_ms;
        let retry_after_secs = ((window + window_ms).saturating_sub(now)).div_ceil(1000).max(1);
        let expires_at = (window + 2 * window_ms) / 1000;
        let limits = [
            (Counter::User(who.owner()), self.config.per_user),
            (Counter::Tenant(&who.tenant), self.config.per_tenant),
        ];
        for (counter, limit) in limits {
            if limit == 0 {
                continue;
            }
            match self.counters.take(counter, window, limit, expires_at).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(tenant = %who.tenant, limit, "rate limit reached");
                    return Err(Error::RateLimited { retry_after_secs });
                }
                Err(e) => {
                    tracing::warn!(failure = ?e.failure(), "rate limiter unavailable; letting the request through");
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
