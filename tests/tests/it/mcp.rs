//! The MCP server (`POST /mcp`) through the chat function, over moto and a fake OpenAI
//! provider answering as the real API does: both eras of the protocol as clients speak them,
//! the tools' results, and what the ledger and the audit log hold afterwards. The official
//! Python SDK's client runs against the local stack in `tests/clients/mcp_sdk.py`.

use coach_testkit::{
    events,
    flows::add,
    providers::{pairs, FakeProvider, Provider},
    stack::{Deployment, TestStack},
    tokens,
};
use lambda_http::http::{header, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

const GUIDE: &str = "# Feedback\n\nName the behaviour, its effect, and what you would like instead. Praise in public.";
const MODERN: &str = "2026-07-28";

/// What a client reads.
struct Answer {
    status: StatusCode,
    headers: lambda_http::http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
}

/// `method /mcp` with `body` and extra headers.
async fn post(
    services: &Deployment,
    method: &str,
    body: Option<Value>,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut request = events::with("chat-post.json", method, "/mcp", body.as_ref(), token);
    for (name, value) in extra {
        request
            .headers_mut()
            .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let response = chat::handle(&services.chat, request).await;
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, text: String::from_utf8(body.to_vec()).unwrap() }
}

/// A request of the handshake era (after `initialize`, with its version header).
async fn legacy(services: &Deployment, token: &str, method: &str, params: Value) -> Answer {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    post(services, "POST", Some(body), Some(token), &[("mcp-protocol-version", "2025-11-25")]).await
}

/// A request of the current revision: the `_meta` envelope and its headers.
async fn modern(services: &Deployment, token: &str, method: &str, params: Value) -> Answer {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    });
    let name = params.get("name").and_then(Value::as_str).map(str::to_owned);
    let body = json!({"jsonrpc": "2.0", "id": "m-1", "method": method, "params": params});
    let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
    if let Some(name) = &name {
        headers.push(("mcp-name", name.as_str()));
    }
    post(services, "POST", Some(body), Some(token), &headers).await
}

/// The `result` of a JSON-RPC response at 200.
fn result(answer: &Answer) -> Value {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body.get("error").is_none(), "{body}");
    body["result"].clone()
}

fn alice() -> String {
    tokens::for_test("alice", "acme", &["user"])
}

async fn deployed(provider: &FakeProvider, more: &[(&str, &str)]) -> (TestStack, Deployment, String) {
    let vars = provider.env();
    let mut vars = pairs(&vars);
    vars.extend_from_slice(more);
    let stack = TestStack::with_env(&vars).await;
    let services = stack.deploy();
    let id = add(&stack, &services, "acme", "feedback-guide.md", GUIDE).await;
    (stack, services, id)
}

#[tokio::test]
async fn a_handshake_client_lists_and_calls_every_tool_and_the_calls_are_metered_as_mcp() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (_stack, services, id) = deployed(&provider, &[]).await;
    let token = alice();

    let init =
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init});
    let answer = post(&services, "POST", Some(body), Some(&token), &[]).await;
    let init = result(&answer);
    assert_eq!(init["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(init["serverInfo"]["name"], "coach");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(answer.headers.get("mcp-session-id").is_none(), "stateless");
    assert_eq!(answer.json()["id"], 1);
    // An older or unknown revision asked: the newest of the handshake era.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "2024-01-01"}});
    assert_eq!(result(&post(&services, "POST", Some(body), Some(&token), &[]).await)["protocolVersion"], "2025-11-25");

    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let ack = post(&services, "POST", Some(initialized), Some(&token), &[]).await;
    assert_eq!((ack.status, ack.text.as_str()), (StatusCode::ACCEPTED, ""));
    assert_eq!(result(&legacy(&services, &token, "ping", json!({})).await), json!({}));

    let tools = result(&legacy(&services, &token, "tools/list", json!({})).await);
    let names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["search_documents", "ask", "summarize_document", "list_documents"]);
    assert!(tools.get("resultType").is_none(), "not in the handshake era: {tools}");
    let search = &tools["tools"][0];
    assert_eq!(search["inputSchema"]["required"], json!(["query"]), "{search}");
    assert_eq!(search["annotations"]["readOnlyHint"], true);

    let found = result(
        &legacy(&services, &token, "tools/call", json!({"name": "search_documents", "arguments": {"query": "praise"}}))
            .await,
    );
    assert_eq!(found["isError"], false, "{found}");
    let passages = found["structuredContent"]["passages"].as_array().unwrap();
    assert_eq!(passages[0]["title"], "feedback-guide.md", "{found}");
    assert_eq!(passages[0]["document_id"], id.as_str());
    assert!(passages[0]["text"].as_str().unwrap().contains("Praise in public"));
    let text = found["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("[1] feedback-guide.md > Feedback (document "), "{text}");

    let asked = result(
        &legacy(&services, &token, "tools/call", json!({"name": "ask", "arguments": {"question": "How do I praise?"}}))
            .await,
    );
    assert_eq!(asked["isError"], false, "{asked}");
    let text = asked["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("\n\nSources:\n[1] feedback-guide.md"), "{text}");
    assert_eq!(asked["structuredContent"]["sources"][0]["document_id"], id.as_str());

    let listed = result(&legacy(&services, &token, "tools/call", json!({"name": "list_documents"})).await);
    assert_eq!(listed["structuredContent"]["documents"][0]["document_id"], id.as_str(), "{listed}");
    assert!(listed["content"][0]["text"].as_str().unwrap().contains("feedback-guide.md  ready"), "{listed}");

    let summary = result(
        &legacy(
            &services,
            &token,
            "tools/call",
            json!({"name": "summarize_document", "arguments": {"document_id": id}}),
        )
        .await,
    );
    assert_eq!(summary["isError"], false, "{summary}");
    assert_eq!(summary["structuredContent"]["document_id"], id.as_str());

    // A tool's failure is a result the model can read; an unknown tool is a protocol error.
    let missing = result(
        &legacy(
            &services,
            &token,
            "tools/call",
            json!({"name": "summarize_document", "arguments": {"document_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}}),
        )
        .await,
    );
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(missing["content"][0]["text"].as_str().unwrap().contains("no such document"), "{missing}");
    let wrong = result(
        &legacy(&services, &token, "tools/call", json!({"name": "search_documents", "arguments": {"q": "x"}})).await,
    );
    assert_eq!(wrong["isError"], true);
    assert!(wrong["content"][0]["text"].as_str().unwrap().contains("unknown field"), "{wrong}");
    let unknown = legacy(&services, &token, "tools/call", json!({"name": "delete_everything"})).await;
    assert_eq!(unknown.status, StatusCode::OK, "the handshake era answers JSON-RPC errors at 200");
    assert_eq!(unknown.json()["error"]["code"], -32602);
    let nothing = legacy(&services, &token, "resources/list", json!({})).await;
    assert_eq!(nothing.json()["error"]["code"], -32601);

    // The model calls went into the ledger under the surface `mcp`.
    let usage = chat::handle(&services.chat, events::with("chat-post.json", "GET", "/usage", None, Some(&token))).await;
    let usage: Value = serde_json::from_slice(usage.body().as_ref()).unwrap();
    let surfaces = usage["surfaces"].as_array().unwrap();
    let mcp = surfaces.iter().find(|s| s["surface"] == "mcp").unwrap_or_else(|| panic!("{usage}"));
    assert!(mcp["input_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(surfaces.iter().all(|s| s["surface"] != "api" || s["input_tokens"] == 0), "{usage}");
}

#[tokio::test]
async fn the_current_revision_is_discovered_and_its_envelope_checked() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (_stack, services, _) = deployed(&provider, &[]).await;
    let token = alice();

    let discovered = result(&modern(&services, &token, "server/discover", json!({})).await);
    assert_eq!(discovered["supportedVersions"], json!([MODERN]), "{discovered}");
    assert_eq!(discovered["resultType"], "complete");
    assert_eq!(discovered["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "coach", "{discovered}");
    assert!(discovered["capabilities"]["tools"].is_object());

    let tools = result(&modern(&services, &token, "tools/list", json!({})).await);
    assert_eq!((tools["resultType"].as_str(), tools["cacheScope"].as_str()), (Some("complete"), Some("private")));
    assert_eq!(tools["tools"].as_array().map(Vec::len), Some(4));
    let found = result(
        &modern(&services, &token, "tools/call", json!({"name": "search_documents", "arguments": {"query": "praise"}}))
            .await,
    );
    assert_eq!((found["resultType"].as_str(), found["isError"].as_bool()), (Some("complete"), Some(false)));
    assert_eq!(result(&modern(&services, &token, "ping", json!({})).await), json!({"resultType": "complete"}));

    // Headers that disagree with the message, a revision the server does not speak, a
    // method it does not have: errors at the statuses the transport gives them.
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mismatch =
        post(&services, "POST", Some(body), Some(&token), &[("mcp-protocol-version", MODERN), ("mcp-method", "ping")])
            .await;
    assert_eq!((mismatch.status, mismatch.json()["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32020)));
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let future = post(
        &services,
        "POST",
        Some(body),
        Some(&token),
        &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "server/discover")],
    )
    .await;
    assert_eq!(future.status, StatusCode::BAD_REQUEST);
    let error = &future.json()["error"];
    assert_eq!((error["code"].as_i64(), error["data"]["requested"].as_str()), (Some(-32022), Some("2099-01-01")));
    assert!(error["data"]["supported"].as_array().unwrap().contains(&json!("2025-11-25")), "{error}");
    let unknown = modern(&services, &token, "prompts/list", json!({})).await;
    assert_eq!((unknown.status, unknown.json()["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!(-32601)));
    let garbage = post(&services, "POST", None, Some(&token), &[]).await;
    assert_eq!((garbage.status, garbage.json()["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32700)));
}

#[tokio::test]
async fn callers_are_admitted_limited_and_audited_as_on_the_native_routes() {
    let provider = FakeProvider::start(Provider::OpenAi).await;
    let (stack, services, _) = deployed(&provider, &[("COACH_RATE_LIMIT_USER", "2")]).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});

    // No token, a forged one: 401 with the JSON-RPC error clients read, and the challenge.
    let anonymous = post(&services, "POST", Some(ping.clone()), None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"]["code"], -32600);
    assert_eq!(anonymous.json()["error"]["data"]["status"], 401);
    assert_eq!(anonymous.json()["id"], Value::Null, "JSON-RPC: the id was not read");
    assert!(anonymous.headers.get(header::WWW_AUTHENTICATE).is_some());
    let forged = post(&services, "POST", Some(ping.clone()), Some("e30.e30.sig"), &[]).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    // The server keeps no stream and no session.
    let get = post(&services, "GET", None, Some(&alice()), &[]).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers.get(header::ALLOW).map(|v| v.to_str().unwrap()), Some("POST"));
    assert_eq!(get.json()["jsonrpc"], "2.0");
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(300_000)}});
    assert_eq!(post(&services, "POST", Some(big), Some(&alice()), &[]).await.status, StatusCode::PAYLOAD_TOO_LARGE);

    // The user's rate limit counts tool calls (two a minute here); the model reads why.
    let bob = tokens::for_test("bob", "acme", &["user"]);
    let search = json!({"name": "search_documents", "arguments": {"query": "feedback"}});
    for _ in 0..2 {
        assert_eq!(result(&legacy(&services, &bob, "tools/call", search.clone()).await)["isError"], false);
    }
    let limited = result(&legacy(&services, &bob, "tools/call", search.clone()).await);
    assert_eq!(limited["isError"], true, "{limited}");
    assert!(limited["content"][0]["text"].as_str().unwrap().contains("try again in"), "{limited}");

    // A used-up budget: refused, and an audit event as on /qa.
    let budgeted = stack.with_more_env(&[("COACH_BUDGET_USER_MONTHLY", "0.000001"), ("COACH_RATE_LIMIT_USER", "0")]);
    let services = budgeted.deploy();
    let carol = tokens::for_test("carol", "acme", &["user"]);
    let ask = json!({"name": "ask", "arguments": {"question": "How do I praise?"}});
    assert_eq!(result(&legacy(&services, &carol, "tools/call", ask.clone()).await)["isError"], false);
    let over = result(&legacy(&services, &carol, "tools/call", ask).await);
    assert_eq!(over["isError"], true, "{over}");
    let admin = tokens::for_test("ada", "acme", &["admin"]);
    let audit = chat::handle(&services.chat, events::with("chat-post.json", "GET", "/audit", None, Some(&admin))).await;
    let audit: Value = serde_json::from_slice(audit.body().as_ref()).unwrap();
    let refused = audit["events"].as_array().unwrap().iter().find(|e| e["operation"] == "budget.exceeded").cloned();
    assert_eq!(refused.map(|e| e["resource"].clone()), Some(json!("POST /mcp")), "{audit}");
}
