//! Rate limiting per user and per tenant with DynamoDB atomic counters in fixed windows
//! (`COACH_RATE_LIMIT_WINDOW_SECS`, one minute by default). A request is counted with one conditional `UpdateItem` per limit; when a counter
//! is full the request gets 429 with `Retry-After` (seconds to the next window). Counter items
//! expire through the table's TTL. If DynamoDB cannot be reached the request is let through
//! (and logged): the limiter protects cost, it must not become an outage of its own.

use std::time::Duration;

use crate::{
    auth::Principal,
    aws::{classify, n, s},
    error::Error,
    history::{key_part, now_ms},
};

/// Requests allowed per window (`COACH_RATE_LIMIT_USER`, `COACH_RATE_LIMIT_TENANT`; 0 turns
/// a limit off) and the window (`COACH_RATE_LIMIT_WINDOW_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_user: u64,
    pub per_tenant: u64,
    pub window: Duration,
}

pub struct RateLimiter {
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    config: RateLimitConfig,
}

impl RateLimiter {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, table: String, config: RateLimitConfig) -> Self {
        Self { dynamodb, table, config }
    }

    /// Counts one request of `who`; 429 when the user's or the tenant's window is full.
    pub async fn check(&self, who: &Principal) -> Result<(), Error> {
        let now = now_ms();
        let window_ms = (self.config.window.as_millis() as u64).max(1000);
        let window = now / window_ms * window_ms;
        let retry_after_secs = ((window + window_ms).saturating_sub(now)).div_ceil(1000).max(1);
        let tenant_key = format!("TENANT#{}#RATE", who.tenant);
        let user_key = format!("TENANT#{}#RATE#USER#{}", who.tenant, key_part(&who.user_id));
        for (pk, limit) in [(user_key, self.config.per_user), (tenant_key, self.config.per_tenant)] {
            if limit == 0 {
                continue;
            }
            let result = self
                .dynamodb
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(&format!("WINDOW#{window}")))
                .update_expression("ADD #count :one SET expires_at = :expires")
                .condition_expression("attribute_not_exists(#count) OR #count < :limit")
                .expression_attribute_names("#count", "count")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":limit", n(limit))
                .expression_attribute_values(":expires", n((window + 2 * window_ms) / 1000))
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    tracing::info!(tenant = %who.tenant, limit, "rate limit reached");
                    return Err(Error::RateLimited { retry_after_secs });
                }
                Err(e) => {
                    tracing::warn!(failure = ?classify(&e), "rate limiter unavailable; letting the request through");
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
