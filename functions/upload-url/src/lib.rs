//! The upload-url function: presigned upload URLs and the document list and status.
//!
//! Its routes (`POST /uploads`, `GET /documents`, `GET|DELETE /documents/{id}`) are
//! declared in template.yaml; their handlers arrive with the documents work (issue 5).
//! Until then every request gets a JSON 404 naming the route.

use coach::{
    http::{error_response, request_id},
    services::Services,
    Error,
};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(_services: &Services, req: Request) -> Response<Body> {
    let err = Error::NotFound(format!("no route for {} {}", req.method(), req.uri().path()));
    error_response(&err, &request_id(&req))
}
