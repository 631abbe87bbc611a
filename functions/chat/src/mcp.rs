//! The MCP server at `POST /mcp` (role `user`; [`coach::mcp`] is its protocol): Streamable
//! HTTP, stateless, each POST one JSON-RPC message answered in one JSON body. `GET` and
//! `DELETE /mcp` (a notification stream, a session's end) are 405: the server keeps no
//! session and sends no requests of its own.
//!
//! Tools: `search_documents`, `ask`, `summarize_document`, `list_documents`, each counted
//! against the caller's rate limits and budget and recorded in the usage ledger as the
//! surface `mcp`, like the routes they stand for (`/qa`, `/summarize`, `GET /documents`).

use coach::{
    api::{Call, Endpoint},
    auth::Role,
    http::{empty_response, json_response},
    mcp::{self, Message},
    Error,
};
use lambda_http::{http::StatusCode, Body, Response};

use crate::{deadline, State};

/// The endpoint, in the chat function's table.
pub const MCP: Endpoint = Endpoint::new("POST", "/mcp", Role::User).mcp();

/// Largest message: a tool's arguments are a query, a question or an id.
pub const MAX_MCP_BYTES: usize = 256 * 1024;

/// `POST /mcp`: one JSON-RPC message.
pub async fn serve(state: &State, call: &Call<'_>) -> Result<Response<Body>, Error> {
    let req = call.req;
    let body = req.body().as_ref();
    if body.len() > MAX_MCP_BYTES {
        return Err(Error::PayloadTooLarge(format!("request body is over {MAX_MCP_BYTES} bytes")));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = match mcp::read(body, header) {
        Message::Acknowledged => return Ok(empty_response(StatusCode::ACCEPTED)),
        Message::Refused(reply) => return Ok(json_response(reply.status, &reply.body)),
        Message::Request(request) => request,
    };
    let (reply, aftermath) = mcp::answer(&state.assist, call.who()?, request, deadline(req)).await;
    if let Some(err) = aftermath.failed {
        state.pipeline.refused(call, &err).await;
    }
    if aftermath.intervened {
        state.pipeline.intervened(&call.asked()?).await;
    }
    Ok(json_response(reply.status, &reply.body))
}
