//! The request pipeline every HTTP surface goes through: a surface is its endpoint table and
//! its handlers, and [`Pipeline::serve`] does the rest, in this order:
//!
//! 1. the request's id (the invocation's);
//! 2. the route: the endpoint of the table the method and path ask for (404 when none, 405
//!    naming the methods when the path is served for others);
//! 3. authentication, as the endpoint asks ([`Access`]): a bearer token or an API key, and
//!    the endpoint's role (401, 403);
//! 4. the handler, with the [`Call`]: the request, the path's parameters, the caller;
//! 5. on any error: a refusal worth auditing (a role refused, a budget spent) is recorded,
//!    and the error becomes its JSON error response ([`crate::http::error_response`]);
//! 6. one `Requests`/`Latency` metric for the route template and status.
//!
//! So no handler authenticates, audits a refusal, maps an error or counts a request itself;
//! the endpoint tables are what each function answers and what `openapi.yaml` documents (a
//! test holds them equal).

use std::{future::Future, sync::Arc, time::Instant};

use bytes::Bytes;
use lambda_http::{
    http::StatusCode,
    lambda_runtime::streaming::{channel, Body as StreamBody},
    Body, Request, Response,
};

use crate::{
    audit::{Audit, AuditConfig, Operation},
    auth::{api_keys::ApiKeyConfig, ApiKeys, AuthConfig, Authenticator, Principal, Role},
    config::{ConfigError, Env},
    error::Error,
    http::{error_response, error_response_as, request_id, route, route_name, Route},
    metrics,
    secrets::{Secrets, SecretsConfig},
    store::AwsClients,
};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated (health, the OpenAPI document).
    Anyone,
    /// An authenticated caller holding this role or a higher one.
    Role(Role),
}

/// The interface an endpoint belongs to, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Coach's own API: `{"error": {code, message, request_id}}`.
    Coach,
    /// The OpenAI-compatible API: OpenAI's `{"error": {message, type, param, code}}`.
    OpenAi,
    /// The MCP server: a JSON-RPC error, at the error's HTTP status.
    Mcp,
}

impl Dialect {
    fn error_response(self, err: &Error, request_id: &str) -> Response<Body> {
        match self {
            Dialect::Coach => error_response(err, request_id),
            Dialect::OpenAi => error_response_as(err, &crate::openai::error_body(err, request_id)),
            Dialect::Mcp => error_response_as(err, &crate::mcp::error_body(err, request_id)),
        }
    }
}

/// One endpoint of a surface: its route, who may call it and its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub route: Route,
    pub access: Access,
    pub dialect: Dialect,
}

impl Endpoint {
    /// An endpoint for callers holding `role`.
    pub const fn new(method: &'static str, path: &'static str, role: Role) -> Self {
        Self { route: Route::new(method, path), access: Access::Role(role), dialect: Dialect::Coach }
    }

    /// An endpoint anyone may call.
    pub const fn open(method: &'static str, path: &'static str) -> Self {
        Self { route: Route::new(method, path), access: Access::Anyone, dialect: Dialect::Coach }
    }

    /// The same endpoint, of the OpenAI-compatible API.
    pub const fn openai(self) -> Self {
        Self { dialect: Dialect::OpenAi, ..self }
    }

    /// The endpoint, of the MCP server.
    pub const fn mcp(self) -> Self {
        Self { dialect: Dialect::Mcp, ..self }
    }
}

/// The dialect of the endpoints under the first segment of `path` (`/v1/...`), so a path
/// no endpoint serves is answered in the dialect of its neighbours.
fn dialect_of(endpoints: &[Endpoint], path: &str) -> Dialect {
    let first = |p: &str| p.trim_start_matches('/').split('/').next().unwrap_or_default().to_owned();
    let segment = first(path);
    endpoints
        .iter()
        .find(|e| e.dialect != Dialect::Coach && first(e.route.path) == segment)
        .map_or(Dialect::Coach, |e| e.dialect)
}

impl AsRef<Route> for Endpoint {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// A request matched to its endpoint, its caller admitted.
#[derive(Debug)]
pub struct Call<'r> {
    pub req: &'r Request,
    /// The endpoint's route (the template, not the request's path).
    pub route: Route,
    /// The values of the route's `{parameters}`, in order.
    pub params: Vec<&'r str>,
    pub request_id: String,
    who: Option<Principal>,
}

impl Call<'_> {
    /// The caller, authenticated and holding the endpoint's role. An endpoint open to anyone
    /// has none: asking is a bug, a 500.
    pub fn who(&self) -> Result<&Principal, Error> {
        self.who
            .as_ref()
            .ok_or_else(|| Error::internal(format!("{} {} has no caller", self.route.method, self.route.path)))
    }

    /// Who asked what, owned: for work that outlives the request (a stream's body).
    pub fn asked(&self) -> Result<Asked, Error> {
        Ok(Asked { who: self.who()?.clone(), route: self.route, request_id: self.request_id.clone() })
    }
}

/// A call's caller, route and request id, kept past the request (see [`Call::asked`]).
#[derive(Debug, Clone)]
pub struct Asked {
    pub who: Principal,
    pub route: Route,
    pub request_id: String,
}

/// A response body the pipeline can put an error response in: a buffered one as it is, a
/// streamed one as a stream of its bytes.
pub trait ResponseBody: Sized {
    fn from_buffered(response: Response<Body>) -> Response<Self>;
}

impl ResponseBody for Body {
    fn from_buffered(response: Response<Body>) -> Response<Body> {
        response
    }
}

impl ResponseBody for StreamBody {
    fn from_buffered(response: Response<Body>) -> Response<StreamBody> {
        let mut response = streamed(response);
        if response.status() == StatusCode::OK {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        response
    }
}

/// A whole response as the body of a streamed one (a surface that streams some answers and
/// not others).
pub fn streamed(response: Response<Body>) -> Response<StreamBody> {
    let (parts, body) = response.into_parts();
    let (mut tx, stream_body) = channel();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    tokio::spawn(async move {
        // The client may have gone: nothing more to do for it.
        let _ = tx.send_data(bytes).await;
    });
    Response::from_parts(parts, stream_body)
}

/// Whether a surface accepts API keys besides tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Tokens and the tenant's API keys.
    Accepted,
    /// Tokens only (a surface that concerns every tenant, where no tenant's key belongs).
    Refused,
}

/// The settings of a surface's pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub auth: AuthConfig,
    /// `None` where API keys are refused.
    pub api_keys: Option<ApiKeyConfig>,
    pub audit: AuditConfig,
    /// The signing key's secret's cache.
    pub secrets: SecretsConfig,
}

impl PipelineConfig {
    /// `COACH_AUTH_*`, `COACH_JWT_*`, `COACH_JWKS_*`, the claim variables, `COACH_API_KEY_*`
    /// (when `keys` accepts them) and `COACH_AUDIT_RETENTION_DAYS`.
    pub fn from_env(env: &Env, keys: Keys) -> Result<Self, ConfigError> {
        Ok(Self {
            auth: AuthConfig::from_env(env)?,
            api_keys: match keys {
                Keys::Accepted => Some(ApiKeyConfig::from_env(env)?),
                Keys::Refused => None,
            },
            audit: AuditConfig::from_env(env)?,
            secrets: SecretsConfig::from_env(env)?,
        })
    }
}

/// One function's HTTP surface: its name (in metrics), its endpoints, and what admits and
/// audits its callers. Built once per cold start.
pub struct Pipeline {
    function: &'static str,
    endpoints: &'static [Endpoint],
    auth: Authenticator,
    audit: Audit,
}

impl Pipeline {
    pub fn new(function: &'static str, endpoints: &'static [Endpoint], auth: Authenticator, audit: Audit) -> Self {
        Self { function, endpoints, auth, audit }
    }

    /// The pipeline of `function` as `config` says: its authenticator (the signing key's
    /// secret, and the tenants' API keys where they are accepted) and audit log.
    pub fn assemble(
        function: &'static str,
        endpoints: &'static [Endpoint],
        config: PipelineConfig,
        aws: &AwsClients,
    ) -> Self {
        let auth = Authenticator::new(config.auth, Secrets::signing_key(aws, config.secrets));
        let auth = match config.api_keys {
            Some(keys) => auth.with_api_keys(Arc::new(ApiKeys::new(Arc::new(aws.table()), keys))),
            None => auth,
        };
        Self::new(function, endpoints, auth, Audit::new(Arc::new(aws.table()), config.audit))
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Records in the audit log what the caller of `call` did (an open endpoint's anonymous
    /// caller is not recorded).
    pub async fn record(&self, call: &Call<'_>, operation: Operation, resource: Option<&str>) {
        if let Some(who) = &call.who {
            self.audit.record(who, operation, resource, &call.request_id).await;
        }
    }

    /// Records that a guardrail intervened in the answer to what was `asked` (its resource:
    /// the route).
    pub async fn intervened(&self, asked: &Asked) {
        let route = format!("{} {}", asked.route.method, asked.route.path);
        self.audit.record(&asked.who, Operation::GuardrailIntervened, Some(&route), &asked.request_id).await;
    }

    /// Records a refusal worth auditing (a role refused, a budget spent) that the handler of
    /// `call` answered itself rather than failing (an MCP tool's, which the model reads).
    pub async fn refused(&self, call: &Call<'_>, err: &Error) {
        let route = route_name(self.endpoints, call.route.method, call.route.path);
        self.audit.refusal(err, &route, &call.request_id).await;
    }

    /// Serves one request: routes and admits it, hands it to `answer`, and turns any error
    /// into its JSON response (see the module's description). Never fails.
    pub async fn serve<'r, B, F, Fut>(&self, req: &'r Request, answer: F) -> Response<B>
    where
        B: ResponseBody,
        F: FnOnce(Call<'r>) -> Fut,
        Fut: Future<Output = Result<Response<B>, Error>>,
    {
        let started = Instant::now();
        let request_id = request_id(req);
        let result = match self.admit(req, request_id.clone()).await {
            Ok(call) => answer(call).await,
            Err(err) => Err(err),
        };
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                let route = route_name(self.endpoints, req.method().as_str(), req.uri().path());
                self.audit.refusal(&err, &route, &request_id).await;
                let dialect = dialect_of(self.endpoints, req.uri().path());
                B::from_buffered(dialect.error_response(&err, &request_id))
            }
        };
        // For a stream, the status and the time to its first byte.
        let (method, path) = (req.method().as_str(), req.uri().path());
        metrics::request(self.function, method, path, response.status().as_u16(), started.elapsed());
        response
    }

    /// The request matched to its endpoint, its caller authenticated as the endpoint asks.
    async fn admit<'r>(&self, req: &'r Request, request_id: String) -> Result<Call<'r>, Error> {
        let (endpoint, params) = route(self.endpoints, req.method().as_str(), req.uri().path())?;
        let who = match endpoint.access {
            Access::Anyone => None,
            Access::Role(role) => {
                let who = self.auth.authenticate(req).await?;
                who.require(role)?;
                Some(who)
            }
        };
        Ok(Call { req, route: endpoint.route, params, request_id, who })
    }
}
