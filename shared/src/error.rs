//! The one error type of Coach, and what each error means to an HTTP caller.
//!
//! Handlers return [`Error`]; [`crate::http::error_response`] turns it into the JSON body
//! `{"error":{"code","message","request_id"}}` with the matching status, and logs it once,
//! with its cause. Messages are written for the caller: they never carry internals, tokens,
//! secrets or message text. The failures of dependencies ([`Error::Upstream`],
//! [`Error::Unavailable`], [`Error::Internal`]) keep what caused them as their
//! [`std::error::Error::source`], for the log line at the edge; the caller sees the message.

use std::sync::Arc;

use lambda_http::http::StatusCode;

/// Result with Coach's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What caused a dependency failure: a store error, an HTTP error, a parse error.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or fails validation (400).
    #[error("{0}")]
    BadRequest(String),
    /// One field of the request is invalid (400): `field` names it, `code` says how (an
    /// interface that reports the field and a code, like OpenAI's, shows them).
    #[error("{message}")]
    InvalidField { field: String, code: &'static str, message: String },
    /// One field of the request names something that is not there (404), as
    /// [`Error::InvalidField`] names the field and a code (OpenAI's unknown model).
    #[error("{message}")]
    UnknownField { field: String, code: &'static str, message: String },
    /// Missing or invalid credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The caller lacks the role the action needs (403): an audit event, naming who was
    /// refused (never shown to the caller beyond the message).
    #[error("this action needs the {role} role")]
    RoleRefused { role: String, tenant: String, user_id: String },
    /// No such resource, or not visible to the caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405); `allow` lists the methods it takes.
    #[error("method not allowed; this route accepts {allow}")]
    MethodNotAllowed { allow: String },
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body or a declared size is over a limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The content type is not one Coach accepts (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests; retry after the given number of seconds (429).
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The user's or the tenant's monthly budget is used up (429), until `reset_at`.
    #[error("the monthly budget of this {scope} is used up; it resets at {reset_at}")]
    BudgetExceeded { scope: &'static str, reset_at: String, retry_after_secs: u64, tenant: String, user_id: String },
    /// An upstream service (the LLM, an embedding service, an identity provider) failed (502).
    #[error("{message}")]
    Upstream {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The model's provider is rate limiting Coach (429) or is overloaded (503), after the
    /// retries; the caller is told when to try again (`Retry-After`, the provider's when it
    /// said).
    #[error("{message}")]
    UpstreamBusy {
        message: String,
        retry_after_secs: u64,
        overloaded: bool,
        #[source]
        cause: Option<Cause>,
    },
    /// The model answered, but not in a form Coach can use (502): a mind map with no list
    /// in it, for instance. Distinct from [`Error::Upstream`], where the call itself failed.
    #[error("{0}")]
    UnusableModelOutput(String),
    /// The answer was not ready within the request's deadline (504).
    #[error("{0}")]
    Timeout(String),
    /// A dependency Coach needs (S3, DynamoDB, Secrets Manager) is unavailable (503).
    #[error("{message}")]
    Unavailable {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
    /// A bug or an unexpected state (500). The detail is logged, never sent.
    #[error("internal error: {detail}")]
    Internal {
        detail: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl Error {
    /// A 502 with no further cause than its message.
    pub fn upstream(message: impl Into<String>) -> Self {
        Error::Upstream { message: message.into(), cause: None }
    }

    /// A 503 caused by `cause`.
    pub fn unavailable(message: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Unavailable { message: message.into(), cause: Some(Arc::new(cause)) }
    }

    /// A 500 whose `detail` is logged, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Error::Internal { detail: detail.into(), cause: None }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::RoleRefused { .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) | Error::UnknownField { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RateLimited { .. } | Error::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamBusy { overloaded: false, .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamBusy { overloaded: true, .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Upstream { .. } | Error::UnusableModelOutput(_) => StatusCode::BAD_GATEWAY,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for clients to branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::InvalidField { .. } => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) | Error::RoleRefused { .. } => "forbidden",
            Error::NotFound(_) | Error::UnknownField { .. } => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::RateLimited { .. } => "rate_limited",
            Error::BudgetExceeded { .. } => "budget_exceeded",
            Error::Upstream { .. } => "upstream_error",
            Error::UpstreamBusy { overloaded: false, .. } => "upstream_rate_limited",
            Error::UpstreamBusy { overloaded: true, .. } => "upstream_overloaded",
            Error::UnusableModelOutput(_) => "unusable_model_output",
            Error::Unavailable { .. } => "service_unavailable",
            Error::Timeout(_) => "timeout",
            Error::Internal { .. } => "internal_error",
        }
    }

    /// The message shown to the caller: the error text, except for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal { .. } => "internal error; the request id identifies it in the logs".to_owned(),
            other => other.to_string(),
        }
    }

    /// The chain of causes below this error, outermost first, joined for one log field.
    /// Causes are Coach's own errors and the SDK's, which carry operation names, error codes
    /// and statuses, never request data.
    pub fn causes(&self) -> String {
        let mut chain = Vec::new();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        chain.join(": ")
    }
}

/// Errors are equal when a caller could not tell them apart: same status, code and message.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code() == other.code() && self.to_string() == other.to_string()
    }
}

impl Eq for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_is_never_public() {
        let err = Error::internal("dynamodb said: table arn:aws:... missing");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.public_message().contains("arn:aws"));
    }

    #[test]
    fn statuses_follow_the_design() {
        assert_eq!(Error::BadRequest("x".into()).status().as_u16(), 400);
        assert_eq!(Error::Unauthorized("x".into()).status().as_u16(), 401);
        assert_eq!(Error::Forbidden("x".into()).status().as_u16(), 403);
        assert_eq!(Error::NotFound("x".into()).status().as_u16(), 404);
        assert_eq!(Error::Conflict("x".into()).status().as_u16(), 409);
        assert_eq!(Error::PayloadTooLarge("x".into()).status().as_u16(), 413);
        assert_eq!(Error::UnsupportedMediaType("x".into()).status().as_u16(), 415);
        assert_eq!(Error::RateLimited { retry_after_secs: 3 }.status().as_u16(), 429);
        assert_eq!(Error::upstream("x").status().as_u16(), 502);
        assert_eq!(Error::unavailable("x", std::fmt::Error).status().as_u16(), 503);
    }

    #[test]
    fn causes_are_kept_for_the_logs_not_the_caller() {
        let err = Error::unavailable("storage is unavailable", std::fmt::Error);
        assert_eq!(err.public_message(), "storage is unavailable");
        assert_eq!(err.causes(), "an error occurred when formatting an argument");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(Error::upstream("x").causes(), "");
    }
}
