//! A document's way through the functions, as the integration tests drive it: an upload
//! (record, then object), its ingest event, and what chat then cites.

use std::collections::BTreeSet;

use coach::{
    auth::Principal,
    documents::UploadRequest,
    ingest::{ObjectEvent, Outcome},
};
use lambda_http::http::StatusCode;
use serde_json::{json, Value};

use crate::{
    events,
    stack::{ingest_deadline, Deployment, TestStack},
    tokens,
};

/// The uploader of these flows: user `erin` of `tenant`.
pub fn erin(tenant: &str) -> Principal {
    Principal { user_id: "erin".into(), tenant: tenant.into(), roles: vec![], groups: vec![] }
}

/// Creates a markdown document's record and puts its object, without ingesting: (id, key).
pub async fn upload(
    stack: &TestStack,
    services: &Deployment,
    tenant: &str,
    name: &str,
    body: &str,
) -> (String, String) {
    let request = UploadRequest {
        filename: name.into(),
        content_type: "text/markdown".into(),
        size_bytes: body.len() as u64,
        access: None,
    };
    let id = services.uploads.documents.create_upload(&erin(tenant), &request).await.unwrap().document_id;
    let key = format!("uploads/{tenant}/{id}/{name}");
    stack.put(&key, body.as_bytes()).await;
    (id, key)
}

/// S3's ObjectCreated event for `key`.
pub fn created(key: &str) -> ObjectEvent {
    ObjectEvent { created: true, key: key.to_owned() }
}

/// Uploads and ingests a markdown document, which must end indexed; returns its id.
pub async fn add(stack: &TestStack, services: &Deployment, tenant: &str, name: &str, body: &str) -> String {
    let (id, key) = upload(stack, services, tenant, name, body).await;
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, Outcome::Indexed { .. }), "{outcome:?}");
    id
}

/// Puts `docs/{name}` and ingests it into the shared docs.
pub async fn add_shared(stack: &TestStack, services: &Deployment, name: &str, body: &str) {
    let key = format!("docs/{name}");
    stack.put(&key, body.as_bytes()).await;
    let outcome = services.ingest.ingestor.handle(&created(&key), ingest_deadline()).await.unwrap();
    assert!(matches!(outcome, Outcome::Indexed { .. }), "{outcome:?}");
}

/// `method path` on `services`' chat function as `token`, with a JSON body: the status and
/// the JSON answer (null when there is none).
pub async fn chat_call(
    services: &Deployment,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let request = events::with("chat-post.json", method, path, body.as_ref(), Some(token));
    let response = chat::handle(&services.chat, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// `method path` on `services`' upload-url function as `token`, with a JSON body: the status
/// and the JSON answer (null when there is none).
pub async fn uploads_call(
    services: &Deployment,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (StatusCode, Value) {
    let request = events::with("uploads-create.json", method, path, body.as_ref(), Some(token));
    let response = upload_url::handle(&services.uploads, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null))
}

/// `POST /chat/stream` on `services`' chat-stream function as `token`: the status, the
/// content type and the events (`("json", body)` for an answer that is not a stream).
pub async fn stream_call(
    services: &Deployment,
    body: Value,
    token: &str,
) -> (StatusCode, String, Vec<(String, Value)>) {
    let request = events::with("chat-stream.json", "POST", "/chat/stream", Some(&body), Some(token));
    let response = chat::stream::handle(services.stream.clone(), request).await;
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = response.into_body().collect().await.expect("stream body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    if !content_type.starts_with("text/event-stream") {
        return (status, content_type, vec![("json".into(), serde_json::from_str(&text).unwrap())]);
    }
    let events = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap().to_owned();
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (event, serde_json::from_str(data).unwrap())
        })
        .collect();
    (status, content_type, events)
}

/// `POST /chat` as user `alice` of `tenant`: the status and the JSON body.
pub async fn chat(services: &Deployment, tenant: &str, message: &str) -> (StatusCode, Value) {
    let token = tokens::for_test("alice", tenant, &["user"]);
    let request = events::with("chat-post.json", "POST", "/chat", Some(&json!({"message": message})), Some(&token));
    let response = chat::handle(&services.chat, request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).unwrap())
}

/// The document ids cited for `message` by `services`' chat instance (the `none` model
/// answers with the retrieved passages).
pub async fn cited(services: &Deployment, tenant: &str, message: &str) -> BTreeSet<String> {
    let (status, reply) = chat(services, tenant, message).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["sources"].as_array().unwrap().iter().map(|s| s["document_id"].as_str().unwrap().to_owned()).collect()
}
