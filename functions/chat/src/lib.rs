//! The chat function: routes API Gateway requests to Coach's chat operations.
//!
//! State is [`Services`], built once per cold start; [`handle`] serves one request.
//! Routes so far: `GET /health` (no auth) and `GET /me` (any authenticated caller).
//! Anything else is a JSON 404, or 405 for a known path with the wrong method.

use coach::{
    auth::Role,
    health,
    http::{error_object, error_response, json_response, request_id},
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
    match route(services, &req, &request_id).await {
        Ok(response) => response,
        Err(err) => error_response(&err, &request_id),
    }
}

async fn route(services: &Services, req: &Request, request_id: &str) -> Result<Response<Body>, Error> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => Ok(health(services, request_id).await),
        (_, "/health") => Err(Error::MethodNotAllowed { allow: "GET" }),
        (&Method::GET, "/me") => me(services, req).await,
        (_, "/me") => Err(Error::MethodNotAllowed { allow: "GET" }),
        (method, path) => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

/// `GET /health`: 200 with component statuses when every dependency answers, else 503
/// with the same report plus the JSON error object.
async fn health(services: &Services, request_id: &str) -> Response<Body> {
    let report = health::check(&services.aws, &services.config).await;
    match report.status {
        health::Status::Healthy => json_response(StatusCode::OK, &report),
        health::Status::Degraded => {
            let err = Error::Unavailable(format!("dependencies degraded: {}", report.degraded().join(", ")));
            let body = json!({
                "status": report.status,
                "components": report.components,
                "error": error_object(&err, request_id),
            });
            json_response(err.status(), &body)
        }
    }
}

/// `GET /me`: the caller as Coach sees them (user id, tenant, roles, and the profile when
/// one is configured and available), to check an identity provider's configuration.
async fn me(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let principal = services.auth.authenticate(req).await?;
    principal.require(Role::User)?;
    let mut body = serde_json::to_value(&principal).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(profiles) = &services.profiles {
        body["profile"] = match profiles.get(&principal.user_id).await {
            Some(profile) => (*profile).clone(),
            None => serde_json::Value::Null,
        };
    }
    Ok(json_response(StatusCode::OK, &body))
}
