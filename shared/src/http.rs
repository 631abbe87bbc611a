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

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Parses a JSON request body into `T`: 415 for a non-JSON content type, 413 past
/// [`MAX_BODY_BYTES`], 400 for bad JSON, unknown fields or wrong types. Error messages name
/// fields and positions, never echo the body (it may hold message text).
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Error> {
    json_body_within(req, MAX_BODY_BYTES)
}

/// [`json_body`] for a route that takes bodies up to `max_bytes` (a document's text).
pub fn json_body_within<T: serde::de::DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, Error> {
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Error::UnsupportedMediaType("send the body as application/json".into()));
        }
    }
    let body = req.body().as_ref();
    if body.len() > max_bytes {
        return Err(Error::PayloadTooLarge(format!("request body is over {max_bytes} bytes")));
    }
    if body.is_empty() {
        return Err(Error::BadRequest("request body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let detail = e.to_string();
        Error::BadRequest(match e.classify() {
            Category::Data if detail.starts_with("unknown field") || detail.starts_with("missing field") => {
                // "unknown field `x`, expected one of ..." -> keep the part naming the field.
                detail
                    .split(", expected")
                    .next()
                    .unwrap_or("invalid field")
                    .split(" at line")
                    .next()
                    .unwrap_or("")
                    .to_owned()
            }
            Category::Data => format!("a field has the wrong type (line {}, column {})", e.line(), e.column()),
            _ => "request body is not valid JSON".to_owned(),
        })
    })
}

/// The query parameter `name`, if present.
pub fn query_param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query_string_parameters_ref().and_then(|q| q.first(name))
}

/// `limit` from the query string: `default` when absent, 400 unless `1..=max`.
pub fn query_limit(req: &Request, default: i32, max: i32) -> Result<i32, Error> {
    match query_param(req, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| Error::BadRequest(format!("limit must be a whole number from 1 to {max}"))),
    }
}

/// An empty response with the given status (204 after a delete).
pub fn empty_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    response
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
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The JSON error object `{"code","message","request_id"}` for `err`.
pub fn error_object(err: &Error, request_id: &str) -> serde_json::Value {
    json!({ "code": err.code(), "message": err.public_message(), "request_id": request_id })
}

/// Maps an error to its HTTP response: status, JSON body and, where they apply,
/// `Retry-After` and `Allow` headers. This is where a failed request is logged, once, with
/// what caused it (dependency failures keep their cause for this line).
pub fn error_response(err: &Error, request_id: &str) -> Response<Body> {
    error_response_as(err, &json!({ "error": error_object(err, request_id) }))
}

/// Like [`error_response`], with another interface's error `body` (OpenAI's).
pub fn error_response_as(err: &Error, body: &serde_json::Value) -> Response<Body> {
    log_failure(err);
    let mut response = json_response(err.status(), body);
    let headers = response.headers_mut();
    match err {
        Error::RateLimited { retry_after_secs }
        | Error::BudgetExceeded { retry_after_secs, .. }
        | Error::UpstreamBusy { retry_after_secs, .. } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        Error::MethodNotAllowed { allow } => {
            if let Ok(allow) = HeaderValue::from_str(allow) {
                headers.insert(header::ALLOW, allow);
            }
        }
        Error::Unauthorized(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="coach""#));
        }
        _ => {}
    }
    response
}

/// Logs a failed request once: server-side failures with their cause chain, rejections
/// of the caller's request at `info`.
pub fn log_failure(err: &Error) {
    match err {
        Error::Internal { detail, .. } => tracing::error!(error = %detail, cause = %err.causes(), "internal error"),
        other if other.status().is_server_error() => {
            tracing::error!(code = other.code(), error = %other, cause = %other.causes(), "request failed")
        }
        other => tracing::info!(code = other.code(), status = other.status().as_u16(), "request rejected"),
    }
}

/// The outbound HTTPS client (JWKS, identity provider, model, embeddings), with connection
/// pooling. Build once per cold start and clone.
pub fn outbound_client() -> reqwest::Result<reqwest::Client> {
    outbound_builder().build()
}

/// [`outbound_client`] that never follows a redirect: for fetches whose source is the
/// configuration (signing keys), where a redirect elsewhere must not be taken.
pub fn outbound_client_without_redirects() -> reqwest::Result<reqwest::Client> {
    outbound_builder().redirect(reqwest::redirect::Policy::none()).build()
}

/// The invocation's X-Ray trace header, which the Lambda runtime sets in `_X_AMZN_TRACE_ID`
/// for each invocation, added to an outbound request (the AWS SDK adds it to AWS calls
/// itself); the request as it was outside Lambda.
pub fn traced(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::config::lambda_trace_id() {
        Some(trace) if !trace.is_empty() && trace.len() <= 256 && trace.is_ascii() => {
            request.header("x-amzn-trace-id", trace)
        }
        _ => request,
    }
}

fn outbound_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("coach/", env!("CARGO_PKG_VERSION")))
}

/// One route a function serves: a method and a path template, where `{name}` stands for one
/// path segment. Each function lists its routes in a table (its `ROUTES`), which is what it
/// answers, what `openapi.yaml` documents (a test holds them equal) and what [`route`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

impl Route {
    pub const fn new(method: &'static str, path: &'static str) -> Self {
        Self { method, path }
    }
}

impl AsRef<Route> for Route {
    fn as_ref(&self) -> &Route {
        self
    }
}

/// The template of the route of `routes` a request asks for, as `METHOD /path/{id}` (no id
/// of the request in it), or `METHOD other` when none matches.
pub fn route_name<T: AsRef<Route>>(routes: &[T], method: &str, path: &str) -> String {
    match route(routes, method, path) {
        Ok((route, _)) => format!("{} {}", route.as_ref().method, route.as_ref().path),
        Err(_) => format!("{method} other"),
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/')
}

/// The route of `routes` a request for `method` and `path` asks for, with the values of the
/// template's parameters in order. Of the templates matching the path, the one with the most
/// literal segments wins (`/documents/reembed` before `/documents/{id}`). No template
/// matching: a 404; a template matching for other methods: a 405 naming them.
pub fn route<'a, 'p, T: AsRef<Route>>(
    routes: &'a [T],
    method: &str,
    path: &'p str,
) -> Result<(&'a T, Vec<&'p str>), Error> {
    let matches = |template: &str| -> Option<(usize, Vec<&'p str>)> {
        let (mut literal, mut params) = (0, Vec::new());
        let mut given = segments(path);
        for part in segments(template) {
            let value = given.next()?;
            if part.starts_with('{') && part.ends_with('}') {
                if value.is_empty() {
                    return None;
                }
                params.push(value);
            } else if part == value {
                literal += 1;
            } else {
                return None;
            }
        }
        given.next().is_none().then_some((literal, params))
    };
    let best = routes
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|r: &Route| matches(r.path).map(|m| (r.path, m)))
        .max_by_key(|(_, (literal, _))| *literal);
    let Some((template, (_, params))) = best else {
        return Err(Error::NotFound(format!("no route for {method} {path}")));
    };
    let same_path = routes.iter().filter(|r| r.as_ref().path == template);
    match same_path.clone().find(|r| r.as_ref().method == method) {
        Some(route) => Ok((route, params)),
        None => {
            Err(Error::MethodNotAllowed { allow: same_path.map(|r| r.as_ref().method).collect::<Vec<_>>().join(", ") })
        }
    }
}

/// A whole number as JSON may write it, `4` or `4.0` (JSON Schema's `integer` is both), for
/// `#[serde(deserialize_with = "crate::http::whole")]`; a fraction, a negative number or one
/// out of `T`'s range is refused.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number: serde_json::Number = serde::Deserialize::deserialize(deserializer)?;
    whole_number(number)
}

fn whole_number<T: TryFrom<u64>, E: serde::de::Error>(number: serde_json::Number) -> Result<T, E> {
    let value = number.as_u64().or_else(|| {
        number.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64)
    });
    value
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number in range, got {number}")))
}

/// [`whole`] for an optional field (with `#[serde(default)]`): `null` is absent.
pub fn whole_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number: Option<serde_json::Number> = serde::Deserialize::deserialize(deserializer)?;
    number.map(whole_number).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_may_be_written_as_json_writes_it() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[serde(default, deserialize_with = "whole_opt")]
            n: Option<u8>,
        }
        let n = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.n).map_err(|e| e.to_string());
        assert_eq!(n(r#"{"n": 4}"#), Ok(Some(4)));
        assert_eq!(n(r#"{"n": 4.0}"#), Ok(Some(4)));
        assert_eq!(n(r#"{"n": null}"#), Ok(None));
        assert_eq!(n(r#"{}"#), Ok(None));
        for refused in [r#"{"n": 4.5}"#, r#"{"n": -1}"#, r#"{"n": 256}"#, r#"{"n": "4"}"#] {
            assert!(n(refused).is_err(), "{refused}");
        }
    }

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
        let response = error_response(&Error::MethodNotAllowed { allow: "GET".into() }, "r");
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }

    fn post(body: &str, content_type: Option<&str>) -> Request {
        let mut req = Request::new(Body::Text(body.to_owned()));
        if let Some(ct) = content_type {
            req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        req
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        message: String,
    }

    #[test]
    fn json_body_errors_are_4xx_and_do_not_echo_the_body() {
        let err = |body: &str, ct: Option<&str>| json_body::<Input>(&post(body, ct)).unwrap_err();
        assert_eq!(err(r#"{"message": 5}"#, None).status().as_u16(), 400);
        assert!(!err(r#"{"message": 5}"#, None).to_string().contains('5'));
        assert_eq!(err(r#"{"message":"secret text","x":1}"#, None).to_string(), "unknown field `x`");
        assert_eq!(err(r#"{}"#, None).to_string(), "missing field `message`");
        assert_eq!(err("{not json", None).to_string(), "request body is not valid JSON");
        assert_eq!(err("", None).status().as_u16(), 400);
        assert_eq!(err(r#"{"message":"hi"}"#, Some("text/plain")).status().as_u16(), 415);
        let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        assert_eq!(err(&big, None).status().as_u16(), 413);
        assert!(json_body::<Input>(&post(r#"{"message":"hi"}"#, Some("application/json; charset=utf-8"))).is_ok());
    }

    #[test]
    fn request_id_prefers_the_lambda_context() {
        let mut ctx = lambda_http::Context::default();
        ctx.request_id = "lambda-req".into();
        let req = Request::default().with_lambda_context(ctx);
        assert_eq!(request_id(&req), "lambda-req");
        assert_eq!(request_id(&Request::default()), "unknown");
    }

    #[test]
    fn routes_match_by_template_the_most_literal_first() {
        const ROUTES: &[Route] = &[
            Route::new("GET", "/documents"),
            Route::new("POST", "/documents"),
            Route::new("POST", "/documents/reembed"),
            Route::new("GET", "/documents/{id}"),
            Route::new("DELETE", "/documents/{id}"),
            Route::new("GET", "/sessions/{id}/messages"),
        ];
        let found = |method, path| route(ROUTES, method, path).map(|(r, params)| (r.path, params));
        assert_eq!(found("GET", "/documents/"), Ok(("/documents", vec![])));
        assert_eq!(found("POST", "/documents/reembed"), Ok(("/documents/reembed", vec![])));
        assert_eq!(found("DELETE", "/documents/01J"), Ok(("/documents/{id}", vec!["01J"])));
        assert_eq!(found("GET", "/sessions/s1/messages"), Ok(("/sessions/{id}/messages", vec!["s1"])));
        let status = |method, path| route(ROUTES, method, path).unwrap_err();
        assert_eq!(status("GET", "/documents/reembed"), Error::MethodNotAllowed { allow: "POST".into() });
        assert_eq!(status("PUT", "/documents"), Error::MethodNotAllowed { allow: "GET, POST".into() });
        assert_eq!(status("PATCH", "/documents/x"), Error::MethodNotAllowed { allow: "GET, DELETE".into() });
        for path in ["/", "/documents/x/y", "/sessions//messages", "/nope", "/documents/x/messages"] {
            assert_eq!(status("GET", path).status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
