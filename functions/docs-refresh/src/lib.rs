//! The docs-refresh function: rebuilds the system prompt from `docs/` in S3.
//!
//! Two triggers reach it: `POST /docs/refresh` through the HTTP API (role `platform-admin`:
//! the shared prompt serves every tenant, so no tenant's admin may rebuild it, and no API
//! key, which belongs to a tenant, is accepted; answers with the manifest) and the EventBridge schedule (no caller; returns the manifest to the
//! invocation). One binary serves both, so the event is told apart here: an EventBridge
//! scheduled event, or an API Gateway v2 / Function URL HTTP request.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use coach::{
    api::{Call, Endpoint, Keys, Pipeline, PipelineConfig},
    audit::Operation,
    auth::Role,
    config::{ConfigError, Env, StartupError},
    http::json_response,
    refresh::{self, Refresher},
    store::AwsClients,
    Error,
};
use lambda_http::{http::StatusCode, request::LambdaRequest, Body, Context, Request, RequestExt, Response};
use serde_json::{json, Value};

/// S3's page size for listing `docs/`.
const PAGE_SIZE: i32 = 1000;

/// What the docs-refresh function uses, built once per cold start.
pub struct State {
    pub pipeline: Pipeline,
    pub refresher: Refresher,
}

/// The docs-refresh function's settings, read from the environment once at cold start
/// (names, defaults and bounds: [`coach::config::settings::SETTINGS`]).
pub struct Settings {
    /// No API key: the shared prompt belongs to no tenant.
    pub pipeline: PipelineConfig,
    /// The generated prompt's token budget.
    pub prompt_budget: u32,
}

impl Settings {
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            pipeline: PipelineConfig::from_env(env, Keys::Refused)?,
            prompt_budget: refresh::prompt_budget(env)?,
        })
    }
}

impl State {
    /// Reads the settings from the environment and builds everything from them.
    pub async fn from_env() -> Result<Self, StartupError> {
        AwsClients::cold_start(Settings::load, Self::new).await
    }

    /// The signing key's secret alone: this function reads no other.
    /// Builds the state from its settings and ready clients (tests point them at the local
    /// emulator).
    pub fn new(settings: Settings, aws: &AwsClients) -> Result<Self, StartupError> {
        Ok(Self {
            pipeline: Pipeline::assemble("docs-refresh", ENDPOINTS, settings.pipeline, aws),
            refresher: Refresher::new(Arc::new(aws.bucket()), settings.prompt_budget),
        })
    }
}

/// Handles one invocation: a schedule event or an HTTP request.
pub async fn handle(state: &State, event: Value, context: Context) -> Result<Value, Error> {
    if event.get("source").and_then(Value::as_str) == Some("aws.events") {
        let manifest = state.refresher.refresh(PAGE_SIZE).await?;
        return serde_json::to_value(manifest).map_err(|e| Error::internal(e.to_string()));
    }
    let request: Request = match serde_json::from_value::<LambdaRequest>(event) {
        Ok(request) => Request::from(request).with_lambda_context(context),
        Err(_) => {
            tracing::error!("event is neither a schedule event nor an HTTP request");
            return Err(Error::BadRequest("unrecognised event".into()));
        }
    };
    Ok(to_api_gateway(handle_http(state, request).await))
}

/// What the `docs-refresh` function answers over HTTP; `openapi.yaml` documents it.
pub const ENDPOINTS: &[Endpoint] = &[Endpoint::new("POST", "/docs/refresh", Role::PlatformAdmin)];

/// Handles an HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle_http(state: &State, req: Request) -> Response<Body> {
    state.pipeline.serve(&req, |call| post_refresh(state, call)).await
}

async fn post_refresh(state: &State, call: Call<'_>) -> Result<Response<Body>, Error> {
    let manifest = state.refresher.refresh(PAGE_SIZE).await?;
    state.pipeline.record(&call, Operation::PromptRefresh, Some(&manifest.version)).await;
    Ok(json_response(StatusCode::OK, &manifest))
}

/// An HTTP response in the API Gateway v2 / Function URL response format.
fn to_api_gateway(response: Response<Body>) -> Value {
    let (parts, body) = response.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    out.body = Some(aws_lambda_events::encodings::Body::Text(String::from_utf8_lossy(body.as_ref()).into_owned()));
    out.is_base64_encoded = false;
    serde_json::to_value(out).unwrap_or_else(|_| json!({ "statusCode": 500 }))
}
