//! HTTP plumbing shared by the HTTP functions: request ids, JSON responses and the JSON
//! error body. Routing stays in each function; this module knows nothing of routes.

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Request, RequestExt, Response,
};
use serde::Serialize;
use serde_json::json;

use crate::error::Error;

/// The id a caller quotes to find a request in the logs: the Lambda request id, which the
/// runtime puts on every log line of the invocation. Falls back to the API Gateway request
/// id, then to `"unknown"` (for example when a handler is called outside a runtime).
pub fn request_id(req: &Request) -> String {
    if let Some(ctx) = req.lambda_context_ref() {
        if !ctx.request_id.is_empty() {
            return ctx.request_id.clone();
        }
    }
    match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "unknown".to_owned())
}

/// A JSON response with the given status.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    // Serialising our own response types cannot fail (string keys, no foreign maps); if it
    // ever did, answer with a well-formed error instead of panicking.
    let body = serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal_error","message":"response could not be encoded"}}"#.to_owned()
    });
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The JSON error object `{"code","message","request_id"}` for `err`.
pub fn error_object(err: &Error, request_id: &str) -> serde_json::Value {
    json!({ "code": err.code(), "message": err.public_message(), "request_id": request_id })
}

/// Maps an error to its HTTP response: status, JSON body and, where they apply,
/// `Retry-After` and `Allow` headers. Internal errors are logged here with their detail.
pub fn error_response(err: &Error, request_id: &str) -> Response<Body> {
    match err {
        Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
        other if other.status().is_server_error() => {
            tracing::warn!(code = other.code(), error = %other, "request failed")
        }
        other => tracing::info!(
            code = other.code(),
            status = other.status().as_u16(),
            "request rejected"
        ),
    }
    let mut response = json_response(err.status(), &json!({ "error": error_object(err, request_id) }));
    let headers = response.headers_mut();
    match err {
        Error::RateLimited { retry_after_secs } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        Error::MethodNotAllowed { allow } => {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        Error::Unauthorized(_) => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="coach""#),
            );
        }
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn error_body_has_code_message_and_request_id() {
        let response = error_response(&Error::NotFound("no such session".into()), "req-1");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(&response),
            json!({"error": {"code": "not_found", "message": "no such session", "request_id": "req-1"}})
        );
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response = error_response(&Error::RateLimited { retry_after_secs: 7 }, "r");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn unauthorized_carries_www_authenticate() {
        let response = error_response(&Error::Unauthorized("token expired".into()), "r");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], r#"Bearer realm="coach""#);
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let response = error_response(&Error::MethodNotAllowed { allow: "GET" }, "r");
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn request_id_prefers_the_lambda_context() {
        let mut ctx = lambda_http::Context::default();
        ctx.request_id = "lambda-req".into();
        let req = Request::default().with_lambda_context(ctx);
        assert_eq!(request_id(&req), "lambda-req");
        assert_eq!(request_id(&Request::default()), "unknown");
    }
}
