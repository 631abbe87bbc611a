//! `openapi.yaml` against what the functions answer (their route tables, and each route
//! driven through its handler) and what `template.yaml` routes to them.

use std::collections::BTreeSet;

use coach::api::{Access, Endpoint};
use coach_testkit::{events, stack::TestStack};
use lambda_http::http::{header, StatusCode};
use serde_norway::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn read(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// (method, path, function, who may call it) of every operation the document describes:
/// `x-coach-role`, or `anyone` for an operation without security.
fn documented() -> BTreeSet<(String, String, String, String)> {
    let doc = read("openapi.yaml");
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, operation) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                continue; // servers, parameters
            }
            let function = operation["x-coach-function"].as_str().unwrap_or_else(|| panic!("{method} {path:?}"));
            let access = match operation["x-coach-role"].as_str() {
                Some(role) => role.to_owned(),
                None if operation["security"].as_sequence().is_some_and(Vec::is_empty) => "anyone".to_owned(),
                None => panic!("{method} {path:?} has neither x-coach-role nor an empty security"),
            };
            let path = path.as_str().unwrap().to_owned();
            // An operation both chat functions serve (the OpenAI-compatible API).
            if let Some(also) = operation["x-coach-also-function"].as_str() {
                operations.insert((method.clone(), path.clone(), also.to_owned(), access.clone()));
            }
            operations.insert((method, path, function.to_owned(), access));
        }
    }
    operations
}

/// (method, path, function, who may call it) of every endpoint in the functions' tables.
fn answered() -> BTreeSet<(String, String, String, String)> {
    let tables: [(&str, &[Endpoint]); 4] = [
        ("chat", chat::ENDPOINTS),
        ("chat-stream", chat::stream::ENDPOINTS),
        ("upload-url", upload_url::ENDPOINTS),
        ("docs-refresh", docs_refresh::ENDPOINTS),
    ];
    let access = |e: &Endpoint| match e.access {
        Access::Anyone => "anyone".to_owned(),
        Access::Role(role) => role.to_string(),
    };
    tables
        .iter()
        .flat_map(|(function, endpoints)| {
            endpoints
                .iter()
                .map(|e| (e.route.method.to_owned(), e.route.path.to_owned(), (*function).to_owned(), access(e)))
        })
        .collect()
}

#[test]
fn the_document_describes_exactly_the_routes_the_functions_answer_and_who_may_call_them() {
    let (documented, answered) = (documented(), answered());
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    let unanswered: Vec<_> = documented.difference(&answered).collect();
    assert!(
        undocumented.is_empty() && unanswered.is_empty(),
        "undocumented: {undocumented:?}; unanswered: {unanswered:?}"
    );
}

#[test]
fn the_template_routes_exactly_the_documented_http_api_operations() {
    let template = read("template.yaml");
    let function_of = |resource: &str| -> String {
        match resource {
            "ChatFunction" => "chat",
            "ChatStreamFunction" => "chat-stream",
            "UploadUrlFunction" => "upload-url",
            "DocsRefreshFunction" => "docs-refresh",
            other => other,
        }
        .to_owned()
    };
    let mut routed = BTreeSet::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let Some(events) = resource["Properties"]["Events"].as_mapping() else { continue };
        for event in events.values().filter(|e| e["Type"] == "HttpApi") {
            let properties = &event["Properties"];
            let method = properties["Method"].as_str().unwrap().to_owned();
            let path = properties["Path"].as_str().unwrap().to_owned();
            routed.insert((method, path, function_of(name.as_str().unwrap())));
        }
    }
    // The stream is a Function URL of its own, not an HTTP API route.
    let http_api: BTreeSet<_> =
        documented().into_iter().filter(|(_, _, f, _)| f != "chat-stream").map(|(m, p, f, _)| (m, p, f)).collect();
    assert_eq!(routed, http_api);
    assert!(template["Resources"]["ChatStreamFunction"]["Properties"]["FunctionUrlConfig"].is_mapping());
}

/// A request for `method path` without a token, answered by `function`: status and `Allow`.
async fn answer(
    services: &coach_testkit::stack::Deployment,
    function: &str,
    method: &str,
    path: &str,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let request = events::with("chat-post.json", method, path, None, None);
    let allow =
        |headers: &lambda_http::http::HeaderMap| headers.get(header::ALLOW).map(|v| v.to_str().unwrap().to_owned());
    match function {
        "chat" => {
            let response = chat::handle(&services.chat, request).await;
            (response.status(), allow(response.headers()), response.body().to_vec())
        }
        "chat-stream" => {
            let response = chat::stream::handle(services.stream.clone(), request).await;
            (response.status(), allow(response.headers()), Vec::new())
        }
        "upload-url" => {
            let response = upload_url::handle(&services.uploads, request).await;
            (response.status(), allow(response.headers()), response.body().to_vec())
        }
        "docs-refresh" => {
            let response = docs_refresh::handle_http(&services.refresh, request).await;
            (response.status(), allow(response.headers()), response.body().to_vec())
        }
        other => panic!("unknown function {other}"),
    }
}

#[tokio::test]
async fn every_documented_operation_reaches_its_handler_and_other_methods_are_refused() {
    let services = TestStack::new().await.deploy();
    let doc = read("openapi.yaml");
    let operations = documented();
    for (method, path, function, _) in &operations {
        let concrete = path.replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV");
        let (status, _, _) = answer(&services, function, method, &concrete).await;
        let public = doc["paths"][path.as_str()][method.to_ascii_lowercase().as_str()]["security"]
            .as_sequence()
            .is_some_and(|s| s.is_empty());
        // Reaching the handler: a public route answers, any other asks for a token.
        let expected = if public { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        assert_eq!(status, expected, "{method} {path} ({function})");
    }
    // Every other method on a documented path: 405, naming the documented ones.
    let paths: BTreeSet<(&str, &str)> = operations.iter().map(|(_, p, f, _)| (p.as_str(), f.as_str())).collect();
    for (path, function) in paths {
        let allowed: BTreeSet<&str> =
            operations.iter().filter(|(_, p, _, _)| p == path).map(|(m, _, _, _)| m.as_str()).collect();
        let concrete = path.replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV");
        for method in METHODS.iter().filter(|m| !allowed.contains(*m)) {
            let (status, allow, _) = answer(&services, function, method, &concrete).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let named: BTreeSet<&str> = allow.as_deref().unwrap_or("").split(", ").collect();
            assert_eq!(named, allowed, "Allow of {path}");
        }
    }
    // Anything else is a 404 from every function.
    for function in ["chat", "chat-stream", "upload-url", "docs-refresh"] {
        assert_eq!(answer(&services, function, "GET", "/nothing/here").await.0, StatusCode::NOT_FOUND, "{function}");
    }
    // The chat function serves the document itself, as committed.
    let (status, _, body) = answer(&services, "chat", "GET", "/openapi.yaml").await;
    assert_eq!(status, StatusCode::OK);
    let committed = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml")).unwrap();
    assert_eq!(body, committed);
}
