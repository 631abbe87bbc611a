//! The chat function: routes API Gateway requests to Coach's chat operations.
//!
//! State is [`Services`], built once per cold start. Two entry points share it:
//! [`handle`] (binary `chat`, behind the HTTP API) answers in one piece, and
//! [`stream::handle`] (binary `chat-stream`, behind a Function URL with response streaming)
//! answers `POST /chat/stream` with Server-Sent Events.
//!
//! | route | who |
//! |---|---|
//! | `GET /health` | anyone |
//! | `GET /me` | any authenticated caller |
//! | `POST /chat` | role `user` |
//! | `GET /sessions`, `POST /sessions` | role `user` |
//! | `GET /sessions/{id}/messages?limit=&cursor=` | role `user`, own sessions only |
//! | `DELETE /sessions/{id}` | role `user`, own sessions only |

pub mod stream;

use coach::{
    auth::{Principal, Role},
    chat::{self, ChatInput},
    health,
    http::{
        empty_response, error_object, error_response, json_body, json_response, query_limit, query_param, request_id,
    },
    services::Services,
    Error,
};
use lambda_http::{
    http::{Method, StatusCode},
    Body, Request, Response,
};
use serde::Deserialize;
use serde_json::json;

/// Most sessions or messages in one page.
const MAX_PAGE: i32 = 100;

/// Handles one HTTP request. Never fails: every error becomes a JSON error response.
pub async fn handle(services: &Services, req: Request) -> Response<Body> {
    let request_id = request_id(&req);
    match route(services, &req, &request_id).await {
        Ok(response) => response,
        Err(err) => error_response(&err, &request_id),
    }
}

async fn route(services: &Services, req: &Request, request_id: &str) -> Result<Response<Body>, Error> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method();
    match (segments.as_slice(), method) {
        (["health"], &Method::GET) => Ok(health(services, request_id).await),
        (["health"], _) => Err(Error::MethodNotAllowed { allow: "GET" }),
        (["me"], &Method::GET) => me(services, req).await,
        (["me"], _) => Err(Error::MethodNotAllowed { allow: "GET" }),
        (["chat"], &Method::POST) => post_chat(services, req).await,
        (["chat"], _) => Err(Error::MethodNotAllowed { allow: "POST" }),
        (["sessions"], &Method::GET) => list_sessions(services, req).await,
        (["sessions"], &Method::POST) => create_session(services, req).await,
        (["sessions"], _) => Err(Error::MethodNotAllowed { allow: "GET, POST" }),
        (["sessions", id, "messages"], &Method::GET) => session_messages(services, req, id).await,
        (["sessions", _, "messages"], _) => Err(Error::MethodNotAllowed { allow: "GET" }),
        (["sessions", id], &Method::DELETE) => delete_session(services, req, id).await,
        (["sessions", _], _) => Err(Error::MethodNotAllowed { allow: "DELETE" }),
        _ => Err(Error::NotFound(format!("no route for {method} {path}"))),
    }
}

/// Authenticates the caller and requires the `user` role.
pub async fn user(services: &Services, req: &Request) -> Result<Principal, Error> {
    let who = services.auth.authenticate(req).await?;
    who.require(Role::User)?;
    Ok(who)
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
    let principal = user(services, req).await?;
    let mut body = serde_json::to_value(&principal).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(profiles) = &services.profiles {
        body["profile"] = match profiles.get(&principal.user_id).await {
            Some(profile) => (*profile).clone(),
            None => serde_json::Value::Null,
        };
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /chat` `{message, session_id?}`.
async fn post_chat(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let who = user(services, req).await?;
    services.rate_limiter.check(&who).await?;
    let input: ChatInput = json_body(req)?;
    let reply = chat::chat(services, &who, input).await?;
    Ok(json_response(StatusCode::OK, &reply))
}

/// `GET /sessions?limit=&cursor=`: the caller's sessions, most recently active first.
async fn list_sessions(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let who = user(services, req).await?;
    let limit = query_limit(req, 20, MAX_PAGE)?;
    let page = services.history.sessions(&who, limit, query_param(req, "cursor")).await?;
    Ok(json_response(StatusCode::OK, &json!({"sessions": page.items, "next_cursor": page.next_cursor})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

/// `POST /sessions` `{title?}` (body optional): 201 with the new session.
async fn create_session(services: &Services, req: &Request) -> Result<Response<Body>, Error> {
    let who = user(services, req).await?;
    let input: NewSession = if req.body().is_empty() { NewSession::default() } else { json_body(req)? };
    let title = input.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).unwrap_or("New conversation");
    let session = services.history.create_session(&who, title).await?;
    Ok(json_response(StatusCode::CREATED, &session))
}

/// `GET /sessions/{id}/messages?limit=&cursor=`: newest first; `next_cursor` leads to older.
async fn session_messages(services: &Services, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = user(services, req).await?;
    let limit = query_limit(req, 50, MAX_PAGE)?;
    let session = services.history.session(&who, id).await?;
    let page = services.history.messages(&who, &session.session_id, limit, query_param(req, "cursor")).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"session_id": session.session_id, "messages": page.items, "next_cursor": page.next_cursor}),
    ))
}

/// `DELETE /sessions/{id}`: the session and all its messages; 204.
async fn delete_session(services: &Services, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let who = user(services, req).await?;
    services.history.delete_session(&who, id).await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}
