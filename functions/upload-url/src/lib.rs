//! The upload-url function: presigned upload URLs and the document list and status.
//!
//! Its routes (`POST /uploads`, `GET /documents`, `GET|DELETE /documents/{id}`) are
//! declared in template.yaml; their handlers arrive with the documents work (issue 5).
//! Until then every request gets a JSON 404 naming the route.

use coach::{
    aws::AwsClients,
    config::{Config, ConfigError},
    http::{error_response, request_id},
    Error,
};
use lambda_http::{Body, Request, Response};

/// Everything a request needs, built once per cold start.
pub struct State {
    pub config: Config,
    pub aws: AwsClients,
}

impl State {
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let aws = AwsClients::new(&config).await;
        Ok(Self { config, aws })
    }
}

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(_state: &State, req: Request) -> Response<Body> {
    let err = Error::NotFound(format!("no route for {} {}", req.method(), req.uri().path()));
    error_response(&err, &request_id(&req))
}
