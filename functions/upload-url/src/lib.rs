//! The upload-url function: presigned upload URLs and the document list and status.
//!
//! Every route needs an authenticated caller. The routes (`POST /uploads`,
//! `GET /documents`, `GET|DELETE /documents/{id}`) are declared in template.yaml; their
//! handlers arrive with the documents work (issue 5). Until then an authenticated request
//! gets a JSON 404 naming the route.

use coach::{
    http::{error_response, request_id},
    services::Services,
    Error,
};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(services: &Services, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    match route(services, &req).await {
        Ok(response) => response,
        Err(err) => error_response(&err, &request_id),
    }
}

async fn route(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let _principal = services.auth.authenticate(req).await?;
    Err(Error::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    )))
}
