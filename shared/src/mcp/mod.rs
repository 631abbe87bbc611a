//! The MCP server at `/mcp`: the Model Context Protocol over its Streamable HTTP transport,
//! stateless (no `Mcp-Session-Id`), so every POST stands alone and any Lambda instance
//! answers it. The protocol's types are the official Rust SDK's (`rmcp::model`); the
//! transport is Coach's own request pipeline (authentication, roles, rate limits, budgets,
//! the usage ledger with the surface `mcp`, audit of refusals).
//!
//! Both eras of the protocol are spoken:
//! - **2026-07-28**, the current revision: each request carries its protocol version and the
//!   client's capabilities in `params._meta`, mirrored in the `MCP-Protocol-Version`,
//!   `Mcp-Method` and (for `tools/call`) `Mcp-Name` headers; `server/discover` tells the
//!   versions and capabilities; results say `resultType`.
//! - **2025-11-25, 2025-06-18, 2025-03-26** through the `initialize` handshake, for clients
//!   of those revisions (the handshake needs no state here: `initialize` is answered, then
//!   each request on its own).
//!
//! Notifications and responses a client posts are acknowledged with 202 and no body.
//! Protocol errors are JSON-RPC errors (at HTTP 400/404 for the current revision, as its
//! transport maps them; at 200 for the handshake era, but a body that is not JSON-RPC at
//! all is 400). A tool that fails (a document not found, a budget spent, a bad argument)
//! answers a result with `isError` and the reason, so the model calling it can read it.

mod tools;

use lambda_http::http::StatusCode;
use rmcp::model::{
    CacheScope, DiscoverResult, ErrorCode, Implementation, InitializeResult, ListToolsResult, ProtocolVersion,
    ServerCapabilities, ServerResult, ToolsCapability,
};
use serde_json::{json, Value};

use crate::{assist::Assist, auth::Principal, deadline::Deadline, error::Error};

/// The current revision (per-request envelope, `server/discover`).
pub const MODERN_VERSIONS: [ProtocolVersion; 1] = [ProtocolVersion::V_2026_07_28];
/// The revisions reached through the `initialize` handshake, newest first.
pub const HANDSHAKE_VERSIONS: [ProtocolVersion; 3] =
    [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_03_26];

/// The version of `versions` named `name`.
fn version_in(versions: &[ProtocolVersion], name: &str) -> Option<ProtocolVersion> {
    versions.iter().find(|v| v.as_str() == name).cloned()
}

const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// What the server tells a client about itself.
const INSTRUCTIONS: &str = "Coach answers from the caller's team documents and the shared docs. \
    search_documents finds passages with their sources, ask answers a question from them with numbered \
    sources, summarize_document summarises one document (list_documents gives the ids).";

/// Which era of the protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28: the per-request envelope.
    Modern,
    /// Through the `initialize` handshake (2025-03-26 to 2025-11-25).
    Handshake,
}

/// A JSON-RPC request, admitted.
#[derive(Debug)]
pub struct Request {
    pub id: Value,
    pub method: String,
    pub params: Value,
    pub era: Era,
}

/// What a POST's body is.
#[derive(Debug)]
pub enum Message {
    /// A request to answer.
    Request(Request),
    /// A notification or a response: acknowledged with 202 and no body.
    Acknowledged,
    /// Refused before dispatch: the reply to send.
    Refused(Reply),
}

/// The HTTP answer to one POST.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The JSON-RPC response or error.
    pub body: Value,
}

/// A JSON-RPC error: its code, message and data.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// The HTTP status the current revision's transport gives this error; the handshake era
    /// answers JSON-RPC errors at 200, but a message that is not JSON-RPC at all at 400.
    fn status(&self, era: Option<Era>) -> StatusCode {
        match (era, self.code) {
            (_, ErrorCode::PARSE_ERROR | ErrorCode::INVALID_REQUEST) => StatusCode::BAD_REQUEST,
            (Some(Era::Handshake), _) => StatusCode::OK,
            (
                _,
                ErrorCode::INVALID_PARAMS
                | ErrorCode::HEADER_MISMATCH
                | ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
                | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
            ) => StatusCode::BAD_REQUEST,
            (_, ErrorCode::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }

    fn reply(self, id: Option<&Value>, era: Option<Era>) -> Reply {
        let status = self.status(era);
        let mut error = json!({"code": self.code.0, "message": self.message});
        if let Some(data) = self.data {
            error["data"] = data;
        }
        // JSON-RPC 2.0: `id` is null when the request's could not be read.
        Reply { status, body: json!({"jsonrpc": "2.0", "id": id, "error": error}) }
    }
}

/// A Coach error refused before the MCP handler (authentication, role, route) as a JSON-RPC
/// error body, at the error's own HTTP status: clients read the error from it.
pub fn error_body(err: &Error, request_id: &str) -> Value {
    let code = if err.status().is_server_error() { ErrorCode::INTERNAL_ERROR } else { ErrorCode::INVALID_REQUEST };
    json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": code.0,
            "message": err.public_message(),
            "data": {"status": err.status().as_u16(), "code": err.code(), "request_id": request_id},
        },
    })
}

/// Reads a POST's body, with its headers by lowercase name, into the request to answer (or
/// what to answer instead).
pub fn read(body: &[u8], header: impl Fn(&str) -> Option<String>) -> Message {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => return Message::Refused(RpcError::new(ErrorCode::PARSE_ERROR, "Parse error").reply(None, None)),
    };
    let invalid =
        |message: &str| Message::Refused(RpcError::new(ErrorCode::INVALID_REQUEST, message).reply(None, None));
    let Some(object) = value.as_object() else {
        return invalid("a message is one JSON-RPC object (batches are not part of this protocol)");
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("jsonrpc must be \"2.0\"");
    }
    let id = match object.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(_) => return invalid("id must be a string or a number"),
    };
    let method = object.get("method").and_then(Value::as_str);
    let (id, method) = match (id, method) {
        (Some(id), Some(method)) => (id, method.to_owned()),
        // A notification, or a response to a request the server never sends.
        (None, Some(_)) => return Message::Acknowledged,
        (Some(_), None) if object.contains_key("result") || object.contains_key("error") => {
            return Message::Acknowledged
        }
        _ => return invalid("a request has a method and an id"),
    };
    let params = object.get("params").cloned().unwrap_or_else(|| json!({}));
    if !params.is_object() {
        let error = RpcError::new(ErrorCode::INVALID_PARAMS, "params must be an object");
        return Message::Refused(error.reply(Some(&id), None));
    }
    match era(&method, &params, &header) {
        Ok(era) => Message::Request(Request { id, method, params, era }),
        Err((error, era)) => Message::Refused(error.reply(Some(&id), Some(era))),
    }
}

/// Every version the server speaks, for an unsupported version's error.
fn supported() -> Value {
    json!(MODERN_VERSIONS.iter().chain(HANDSHAKE_VERSIONS.iter()).map(ProtocolVersion::as_str).collect::<Vec<_>>())
}

/// The era of a request, checked: the current revision's (an envelope, its version header or
/// `server/discover`) with its envelope and headers agreeing, or the handshake era's, whose
/// version header, when there is one, must be a version the server speaks.
fn era(method: &str, params: &Value, header: &impl Fn(&str) -> Option<String>) -> Result<Era, (RpcError, Era)> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let version_header = header(VERSION_HEADER);
    let enveloped = meta.is_some_and(|m| m.contains_key(PROTOCOL_VERSION_KEY));
    let modern_header = version_header.as_deref().is_some_and(|v| version_in(&MODERN_VERSIONS, v).is_some());
    if !enveloped && !modern_header && method != "server/discover" {
        return match version_header {
            Some(v) if version_in(&HANDSHAKE_VERSIONS, &v).is_none() => Err((
                RpcError {
                    data: Some(json!({"supported": supported(), "requested": v})),
                    ..RpcError::new(ErrorCode::INVALID_REQUEST, format!("unsupported MCP-Protocol-Version {v:?}"))
                },
                Era::Handshake,
            )),
            _ => Ok(Era::Handshake),
        };
    }
    let refuse = |code: ErrorCode, message: String| Err((RpcError::new(code, message), Era::Modern));
    let Some(meta) = meta.filter(|m| m.contains_key(PROTOCOL_VERSION_KEY) && m.contains_key(CLIENT_CAPABILITIES_KEY))
    else {
        return refuse(
            ErrorCode::INVALID_PARAMS,
            format!("params._meta must carry {PROTOCOL_VERSION_KEY:?} and {CLIENT_CAPABILITIES_KEY:?}"),
        );
    };
    let version = &meta[PROTOCOL_VERSION_KEY];
    if version_header.as_deref() != version.as_str() {
        return refuse(ErrorCode::HEADER_MISMATCH, "MCP-Protocol-Version does not match params._meta".into());
    }
    if header(METHOD_HEADER).as_deref() != Some(method) {
        return refuse(ErrorCode::HEADER_MISMATCH, "Mcp-Method does not match the method".into());
    }
    if method == "tools/call" {
        let name = params.get("name").and_then(Value::as_str);
        if name.is_some() && header(NAME_HEADER).as_deref() != name {
            return refuse(ErrorCode::HEADER_MISMATCH, "Mcp-Name does not match the tool's name".into());
        }
    }
    match version.as_str() {
        Some(v) if version_in(&MODERN_VERSIONS, v).is_some() => Ok(Era::Modern),
        Some(v) => Err((
            RpcError {
                data: Some(json!({"supported": supported(), "requested": v})),
                ..RpcError::new(ErrorCode::UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
            },
            Era::Modern,
        )),
        None => refuse(ErrorCode::INVALID_PARAMS, format!("{PROTOCOL_VERSION_KEY} must be a string")),
    }
}

fn capabilities() -> ServerCapabilities {
    let mut capabilities = ServerCapabilities::default();
    capabilities.tools = Some(ToolsCapability::default());
    capabilities
}

fn server_info() -> Implementation {
    Implementation::new("coach", env!("CARGO_PKG_VERSION"))
}

/// What the handler of a message audits of its answer.
#[derive(Debug, Default)]
pub struct Aftermath {
    /// The error of a tool that failed (its result says why).
    pub failed: Option<Error>,
    /// A guardrail intervened in the tool's answer.
    pub intervened: bool,
}

/// Answers an admitted request for `who`, through `assist`. With the reply, what the caller
/// audits of it.
pub async fn answer(assist: &Assist, who: &Principal, request: Request, deadline: Deadline) -> (Reply, Aftermath) {
    let Request { id, method, params, era } = request;
    let mut aftermath = Aftermath::default();
    let mut result = match method.as_str() {
        "initialize" => {
            let requested = params.get("protocolVersion").and_then(Value::as_str);
            let version = requested.and_then(|v| version_in(&HANDSHAKE_VERSIONS, v));
            let result = InitializeResult::new(capabilities())
                .with_protocol_version(version.unwrap_or(ProtocolVersion::LATEST_WITH_INITIALIZE))
                .with_server_info(server_info())
                .with_instructions(INSTRUCTIONS);
            ServerResult::InitializeResult(result)
        }
        "server/discover" => {
            let mut result = DiscoverResult::new(MODERN_VERSIONS.to_vec(), capabilities());
            result.instructions = Some(INSTRUCTIONS.to_owned());
            result.set_server_info(server_info());
            ServerResult::DiscoverResult(result)
        }
        "ping" => ServerResult::empty(()),
        "tools/list" => {
            let mut result = ListToolsResult::with_all_items(tools::tools_for(who));
            // Who may call which tool depends on the caller.
            result.ttl_ms = Some(0);
            result.cache_scope = Some(CacheScope::Private);
            ServerResult::ListToolsResult(result)
        }
        "tools/call" => match tools::call(assist, who, &params, deadline).await {
            Ok((result, after)) => {
                aftermath = after;
                ServerResult::CallToolResult(result)
            }
            Err(error) => return (error.reply(Some(&id), Some(era)), Aftermath::default()),
        },
        _ => {
            let error = RpcError::new(ErrorCode::METHOD_NOT_FOUND, format!("Method not found: {method}"));
            return (error.reply(Some(&id), Some(era)), Aftermath::default());
        }
    };
    let mut value = match era {
        Era::Handshake => {
            result.strip_result_type_for_legacy_peer();
            to_value(&result)
        }
        Era::Modern => to_value(&result),
    };
    // The current revision says `resultType` in every result, an empty one's too.
    if era == Era::Modern && value.get("resultType").is_none() {
        value["resultType"] = "complete".into();
    }
    (Reply { status: StatusCode::OK, body: json!({"jsonrpc": "2.0", "id": id, "result": value}) }, aftermath)
}

fn to_value(result: &ServerResult) -> Value {
    // The SDK's types serialise to JSON without fail (maps with string keys, no floats NaN).
    serde_json::to_value(result).unwrap_or_else(|_| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn modern(method: &str, params: Value) -> Value {
        let mut params = params;
        params["_meta"] = json!({PROTOCOL_VERSION_KEY: "2026-07-28", CLIENT_CAPABILITIES_KEY: {}});
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    }

    fn refused(message: Message) -> Reply {
        match message {
            Message::Refused(reply) => reply,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn notifications_and_responses_are_acknowledged() {
        let none = headers(&[]);
        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        assert!(matches!(read(notification.as_bytes(), &none), Message::Acknowledged));
        let response = json!({"jsonrpc": "2.0", "id": 3, "result": {}}).to_string();
        assert!(matches!(read(response.as_bytes(), &none), Message::Acknowledged));
    }

    #[test]
    fn what_is_not_json_rpc_is_400_with_its_error() {
        let none = headers(&[]);
        for (body, code) in [
            ("{", -32700),
            ("[]", -32600),
            (r#"{"jsonrpc": "1.0", "id": 1, "method": "ping"}"#, -32600),
            (r#"{"jsonrpc": "2.0", "id": {}, "method": "ping"}"#, -32600),
            (r#"{"jsonrpc": "2.0", "id": 1}"#, -32600),
        ] {
            let reply = refused(read(body.as_bytes(), &none));
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(reply.body["error"]["code"], code, "{body}");
        }
    }

    #[test]
    fn the_handshake_era_needs_no_envelope() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
        let Message::Request(request) = read(body.as_bytes(), headers(&[("mcp-protocol-version", "2025-06-18")]))
        else {
            panic!("a request");
        };
        assert_eq!(request.era, Era::Handshake);
    }

    #[test]
    fn the_current_revision_checks_its_envelope_and_headers() {
        let ok = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "ask")];
        let body = modern("tools/call", json!({"name": "ask"})).to_string();
        let Message::Request(request) = read(body.as_bytes(), headers(&ok)) else { panic!("a request") };
        assert_eq!(request.era, Era::Modern);

        let unknown = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
        let reply = refused(read(unknown.as_bytes(), headers(&[("mcp-protocol-version", "2024-11-05")])));
        assert_eq!((reply.status, reply.body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32600)));
        assert_eq!(reply.body["error"]["data"]["requested"], "2024-11-05");

        let mismatched = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "other")];
        let reply = refused(read(body.as_bytes(), headers(&mismatched)));
        assert_eq!((reply.status, reply.body["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32020)));

        let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string();
        let reply = refused(read(bare.as_bytes(), headers(&[("mcp-protocol-version", "2026-07-28")])));
        assert_eq!(reply.body["error"]["code"], -32602);

        let mut future = modern("server/discover", json!({}));
        future["params"]["_meta"][PROTOCOL_VERSION_KEY] = json!("2099-01-01");
        let future = future.to_string();
        let reply = refused(read(
            future.as_bytes(),
            headers(&[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "server/discover")]),
        ));
        assert_eq!(reply.body["error"]["code"], -32022);
        assert_eq!(reply.body["error"]["data"]["supported"][0], "2026-07-28");
        assert_eq!(reply.body["id"], 1);
    }
}
