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
    Principal { user_id: "erin".into(), tenant: tenant.into(), roles: vec![] }
}

/// Creates a markdown document's record and puts its object, without ingesting: (id, key).
pub async fn upload(
    stack: &TestStack,
    services: &Deployment,
    tenant: &str,
    name: &str,
    body: &str,
) -> (String, String) {
    let request =
        UploadRequest { filename: name.into(), content_type: "text/markdown".into(), size_bytes: body.len() as u64 };
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
