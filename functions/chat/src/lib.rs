//! The chat function: routes API Gateway requests to Coach's chat operations.
//!
//! Built once per cold start ([`State::from_env`]) and called per request ([`handle`]).
//! Routes so far: `GET /health`. Anything else is a JSON 404 (or 405 for a known path
//! with the wrong method).

use coach::{
    aws::AwsClients,
    config::{Config, ConfigError},
    health,
    http::{error_object, error_response, json_response, request_id},
    Error,
};
use lambda_http::{
    http::{Method, StatusCode},
    Body, Request, Response,
};
use serde_json::json;

/// Everything a request needs, built once per cold start.
pub struct State {
    pub config: Config,
    pub aws: AwsClients,
}

impl State {
    /// Reads the configuration from the environment and builds the SDK clients.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let aws = AwsClients::new(&config).await;
        Ok(Self { config, aws })
    }
}

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(state: &State, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    match route(state, &req, &request_id).await {
        Ok(response) => response,
        Err(err) => error_response(&err, &request_id),
    }
}

async fn route(state: &State, req: &Request, request_id: &str) -> Result<Response<Body>, Error> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => Ok(health(state, request_id).await),
        (_, "/health") => Err(Error::MethodNotAllowed { allow: "GET" }),
        (method, path) => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

/// `GET /health`: 200 with component statuses when every dependency answers, else 503
/// with the same report plus the JSON error object.
async fn health(state: &State, request_id: &str) -> Response<Body> {
    let report = health::check(&state.aws, &state.config).await;
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
