//! The audit log: security-relevant operations of a tenant, as events.
//!
//! Recorded: documents uploaded (`POST /uploads`, `POST /documents`) and deleted, the prompt
//! refreshed, API keys created and revoked (each when it succeeds), refusals (a caller
//! without the role a route needs, a request over its budget), and a guardrail's intervention
//! in an answer. An event names the tenant, the actor (a user id, or `key:{id}`), the
//! operation, the resource (a document or key id, or for a refusal or an intervention the
//! route), the outcome, the time (its ULID) and the request id. It is written to
//! DynamoDB under the tenant, kept `COACH_AUDIT_RETENTION_DAYS` (365), and logged as a
//! structured line (target `coach::audit`). Writing is best effort: when DynamoDB refuses,
//! the event is logged at `error` with all its fields, so it is never lost silently, and the
//! operation itself stands.
//!
//! `GET /audit?from=&to=&cursor=&limit=` lists the caller's tenant's events (admins), newest
//! first.

use std::{sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    auth::Principal,
    config::{ConfigError, Env},
    error::Error,
    ids::{now_ms, rfc3339},
    model::Page,
    store::{AuditLog, AuditRecord},
};

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    DocumentUpload,
    DocumentDelete,
    /// Who may read a document changed (`PATCH /documents/{id}`).
    DocumentAccess,
    PromptRefresh,
    ApiKeyCreate,
    ApiKeyRevoke,
    /// A caller without the role the route needs.
    AccessDenied,
    /// A request refused for a used-up budget.
    BudgetExceeded,
    /// A guardrail (Amazon Bedrock's) intervened in a model's answer: the caller got its
    /// message.
    GuardrailIntervened,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::DocumentUpload => "document.upload",
            Operation::DocumentDelete => "document.delete",
            Operation::DocumentAccess => "document.access",
            Operation::PromptRefresh => "prompt.refresh",
            Operation::ApiKeyCreate => "api_key.create",
            Operation::ApiKeyRevoke => "api_key.revoke",
            Operation::AccessDenied => "access.denied",
            Operation::BudgetExceeded => "budget.exceeded",
            Operation::GuardrailIntervened => "guardrail.intervened",
        }
    }

    /// How the operation ended: a refusal, or done.
    fn outcome(self) -> &'static str {
        match self {
            Operation::AccessDenied | Operation::BudgetExceeded => "refused",
            Operation::GuardrailIntervened => "intervened",
            _ => "success",
        }
    }
}

/// An event as `GET /audit` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub event_id: String,
    pub at: String,
    pub actor: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub outcome: String,
    pub request_id: String,
}

/// A role refusal is audited at most once in this many seconds per user and route.
const REFUSAL_WINDOW_SECS: u64 = 60;

/// Longest range `GET /audit` reads at once, in days (the retention bounds it anyway).
const MAX_RANGE_DAYS: u64 = 366;

/// The audit log. Build once per cold start.
pub struct Audit {
    store: Arc<dyn AuditLog>,
    retention: Duration,
}

/// How long audit events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// `COACH_AUDIT_RETENTION_DAYS` (365).
    pub retention: Duration,
}

impl AuditConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self { retention: Duration::from_secs(env.number("COACH_AUDIT_RETENTION_DAYS")? * 86_400) })
    }
}

impl Audit {
    pub fn new(store: Arc<dyn AuditLog>, config: AuditConfig) -> Self {
        Self { store, retention: config.retention }
    }

    /// Records that `who` did `operation` on `resource`.
    pub async fn record(&self, who: &Principal, operation: Operation, resource: Option<&str>, request_id: &str) {
        let id = ulid::Ulid::generate();
        self.write(id, &who.tenant, &who.user_id, operation, resource, request_id).await;
    }

    /// Records a refusal worth auditing, when `err` is one: a role refusal or a budget one,
    /// on `route` (`METHOD /template`). A role refusal is recorded at most once a minute per
    /// user and route (a client retrying a forbidden call would flood the log): the first
    /// claims the minute in the table ([`AuditLog::claim`]), and the others, from any
    /// instance, are only logged at debug level. A claim that cannot be made records anyway.
    pub async fn refusal(&self, err: &Error, route: &str, request_id: &str) {
        let (operation, tenant, actor) = match err {
            Error::RoleRefused { tenant, user_id, .. } => (Operation::AccessDenied, tenant, user_id),
            Error::BudgetExceeded { tenant, user_id, .. } => (Operation::BudgetExceeded, tenant, user_id),
            _ => return,
        };
        if operation == Operation::AccessDenied {
            let now = now_ms() / 1000;
            let key = format!("{}#{actor}#{route}", operation.as_str());
            match self.store.claim(tenant, &key, now + REFUSAL_WINDOW_SECS, now).await {
                Ok(true) => {}
                Ok(false) => {
                    let operation = operation.as_str();
                    tracing::debug!(target: "coach::audit", tenant, operation, route, "refusal already audited this minute");
                    return;
                }
                Err(e) => tracing::warn!(target: "coach::audit", problem = %e, "could not claim the refusal's minute"),
            }
        }
        self.write(ulid::Ulid::generate(), tenant, actor, operation, Some(route), request_id).await;
    }

    async fn write(
        &self,
        id: ulid::Ulid,
        tenant: &str,
        actor: &str,
        operation: Operation,
        resource: Option<&str>,
        request_id: &str,
    ) {
        let outcome = operation.outcome();
        let event = AuditRecord {
            event_id: id.to_string(),
            tenant: tenant.to_owned(),
            actor: actor.to_owned(),
            operation: operation.as_str().to_owned(),
            resource: resource.map(str::to_owned),
            outcome: outcome.to_owned(),
            request_id: request_id.to_owned(),
        };
        let expires_at = now_ms() / 1000 + self.retention.as_secs();
        let (operation, resource) = (operation.as_str(), resource.unwrap_or(""));
        match self.store.append(&event, expires_at).await {
            Ok(()) => tracing::info!(
                target: "coach::audit",
                tenant,
                actor,
                operation,
                resource,
                outcome,
                request_id,
                event_id = %event.event_id,
                "audit event"
            ),
            Err(e) => tracing::error!(
                target: "coach::audit",
                tenant,
                actor,
                operation,
                resource,
                outcome,
                request_id,
                event_id = %event.event_id,
                problem = %e,
                "audit event not stored"
            ),
        }
    }

    /// The events of `who`'s tenant from `from` to `to` (dates `YYYY-MM-DD` or RFC 3339
    /// times; by default the last 30 days), newest first, `limit` a page.
    pub async fn list(
        &self,
        who: &Principal,
        from: Option<&str>,
        to: Option<&str>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEvent>, Error> {
        let now = now_ms();
        let to = match to {
            Some(to) => instant(to, true).ok_or_else(|| bad("to"))?,
            None => now,
        };
        let from = match from {
            Some(from) => instant(from, false).ok_or_else(|| bad("from"))?,
            None => to.saturating_sub(30 * 86_400_000),
        };
        if from > to {
            return Err(Error::BadRequest("to must not be before from".into()));
        }
        if to - from > MAX_RANGE_DAYS * 86_400_000 {
            return Err(Error::BadRequest(format!("a page of the audit log covers at most {MAX_RANGE_DAYS} days")));
        }
        let first = ulid::Ulid::from_parts(from, 0).to_string();
        let last = ulid::Ulid::from_parts(to, u128::MAX).to_string();
        let page = self.store.events(&who.tenant, &first, &last, limit, cursor).await?;
        let items = page
            .items
            .into_iter()
            .map(|e| AuditEvent {
                at: ulid::Ulid::from_string(&e.event_id).map(|id| rfc3339(id.timestamp_ms())).unwrap_or_default(),
                event_id: e.event_id,
                actor: e.actor,
                operation: e.operation,
                resource: e.resource,
                outcome: e.outcome,
                request_id: e.request_id,
            })
            .collect();
        Ok(Page { items, next_cursor: page.next_cursor })
    }
}

fn bad(field: &str) -> Error {
    Error::BadRequest(format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 time"))
}

/// Epoch ms of a date (its first millisecond, or with `end` its last) or an RFC 3339 time.
fn instant(text: &str, end: bool) -> Option<u64> {
    let ms = |at: std::time::SystemTime| at.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64);
    if text.len() == 10 {
        let start = ms(humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?)?;
        // Dates that roll over (February 30th) are not dates.
        if rfc3339(start)[..10] != *text {
            return None;
        }
        return Some(if end { start + 86_400_000 - 1 } else { start });
    }
    ms(humantime::parse_rfc3339_weak(text).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_dates_or_times() {
        assert_eq!(instant("1970-01-02", false), Some(86_400_000));
        assert_eq!(instant("1970-01-02", true), Some(2 * 86_400_000 - 1));
        assert_eq!(instant("1970-01-01T00:00:01Z", false), Some(1000));
        for bad in ["2026-02-30", "yesterday", "", "2026-13-01"] {
            assert_eq!(instant(bad, false), None, "{bad}");
        }
    }
}
