//! Sample events from the repository's `events/` folder, as the Lambda runtime would
//! deliver them.

use lambda_http::{Context, Request, RequestExt};

/// Path of a file in `events/`.
pub fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events").join(name)
}

/// The raw JSON of an event file.
pub fn load(name: &str) -> String {
    let path = path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// An API Gateway event from `events/` as an HTTP request, with a Lambda context whose
/// request id is `request_id`.
pub fn http_request(name: &str, request_id: &str) -> Request {
    let request = lambda_http::request::from_str(&load(name)).unwrap_or_else(|e| panic!("parse events/{name}: {e}"));
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    request.with_lambda_context(context)
}

/// Like [`http_request`], with `Authorization: Bearer <token>` (or no such header for `None`).
pub fn http_request_with_token(name: &str, token: Option<&str>) -> Request {
    let mut request = http_request(name, "req-auth");
    let headers = request.headers_mut();
    headers.remove(lambda_http::http::header::AUTHORIZATION);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        headers.insert(lambda_http::http::header::AUTHORIZATION, value);
    }
    request
}

/// An API Gateway event from `events/` with its path, method, query, JSON body and bearer
/// token replaced: one event file serves every variation of a route.
pub fn with(
    name: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> Request {
    let request = http_request_with_token(name, token);
    let (mut parts, _) = request.into_parts();
    parts.method = method.parse().expect("method");
    parts.uri = format!("https://api.example.com{path_and_query}").parse().expect("uri");
    let query: std::collections::HashMap<String, String> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let body = match body {
        Some(json) => lambda_http::Body::Text(json.to_string()),
        None => lambda_http::Body::Empty,
    };
    if body.is_empty() {
        parts.headers.remove(lambda_http::http::header::CONTENT_TYPE);
    } else {
        parts.headers.insert(lambda_http::http::header::CONTENT_TYPE, "application/json".parse().expect("header"));
    }
    Request::from_parts(parts, body).with_query_string_parameters(query)
}
