//! The upload-url function: presigned upload URLs, and the tenant's documents and status.
//!
//! | route | who |
//! |---|---|
//! | `POST /uploads` `{filename, content_type, size_bytes}` | role `editor` |
//! | `GET /documents?limit=&cursor=` | role `user` |
//! | `GET /documents/{id}` | role `user` |
//! | `DELETE /documents/{id}` | role `editor` |
//!
//! Documents belong to the caller's tenant; another tenant's document id is a 404.

use coach::{
    auth::{Principal, Role},
    documents::UploadRequest,
    http::{empty_response, error_response, json_body, json_response, query_limit, query_param, request_id},
    services::Services,
    Error,
};
use lambda_http::{
    http::{Method, StatusCode},
    Body, Request, Response,
};
use serde_json::json;

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(services: &Services, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    match route(services, &req).await {
        Ok(response) => response,
        Err(err) => error_response(&err, &request_id),
    }
}

async fn route(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    match (segments.as_slice(), method) {
        (["uploads"], &Method::POST) => create_upload(services, req).await,
        (["uploads"], _) => Err(Error::MethodNotAllowed { allow: "POST" }),
        (["documents"], &Method::GET) => list(services, req).await,
        (["documents"], _) => Err(Error::MethodNotAllowed { allow: "GET" }),
        (["documents", id], &Method::GET) => get(services, req, id).await,
        (["documents", id], &Method::DELETE) => delete(services, req, id).await,
        (["documents", _], _) => Err(Error::MethodNotAllowed { allow: "GET, DELETE" }),
        _ => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

async fn caller(services: &Services, req: &Request, role: Role) -> Result<Principal, Error> {
    let who = services.auth.authenticate(req).await?;
    who.require(role)?;
    Ok(who)
}

/// `POST /uploads`: 201 with `{document_id, upload_url, method, headers, expires_at}`.
async fn create_upload(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(services, req, Role::Editor).await?;
    services.rate_limiter.check(&who).await?;
    let input: UploadRequest = json_body(req)?;
    let id = services.history.next_id().to_string();
    let upload = services.documents.create_upload(&who, &id, &input).await?;
    Ok(json_response(StatusCode::CREATED, &upload))
}

async fn list(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let who = caller(services, req, Role::User).await?;
    let limit = query_limit(req, 50, 100)?;
    let (documents, next_cursor) = services.documents.list(&who, limit, query_param(req, "cursor")).await?;
    Ok(json_response(StatusCode::OK, &json!({"documents": documents, "next_cursor": next_cursor})))
}

async fn get(services: &Services, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = caller(services, req, Role::User).await?;
    Ok(json_response(StatusCode::OK, &services.documents.get(&who, id).await?))
}

async fn delete(services: &Services, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = caller(services, req, Role::Editor).await?;
    services.documents.delete(&who, id).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}
