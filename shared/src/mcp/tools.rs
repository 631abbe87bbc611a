//! The MCP server's tools: what each is (its name, description, role and the JSON schema of
//! its arguments), and each run for its caller through [`Assist`], recorded under
//! [`Surface::Mcp`]. A tool that fails answers a result with `isError` and the reason.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, Tool, ToolAnnotations};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::{json, Map, Value};

use super::{Aftermath, RpcError};
use crate::{
    assist::{
        qa::{CacheUse, QaInput},
        summary::{Style, SummaryInput},
        Assist, MAX_TOP_K,
    },
    auth::{Principal, Role},
    deadline::Deadline,
    error::Error,
    model::{numbered_sources, Passage, Source, Surface},
};

/// Most documents `list_documents` returns at once.
const MAX_LIST: i32 = 100;

/// One of the server's tools: what it is, who may call it, the schema of its arguments.
pub(super) struct ToolSpec {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    role: Role,
    schema: fn() -> Value,
}

pub(super) const TOOLS: [ToolSpec; 4] = [
    ToolSpec {
        name: "search_documents",
        title: "Search documents",
        description: "The passages of the team's documents and the shared docs that best match a query, best \
            first, each with its source (document id, title, chunk, heading, pages, score).",
        role: Role::User,
        schema: || {
            object(
                json!({
                    "query": {"type": "string", "minLength": 1, "description": "What to look for, in words."},
                    "top_k": top_k_schema("How many passages (default: the deployment's)."),
                }),
                &["query"],
            )
        },
    },
    ToolSpec {
        name: "ask",
        title: "Ask the documents",
        description: "An answer to a question from the team's documents and the shared docs, written by the \
            deployment's model, with numbered sources ([n] in the answer).",
        role: Role::User,
        schema: || {
            object(
                json!({
                    "question": {"type": "string", "minLength": 1},
                    "top_k": top_k_schema("How many passages to ground the answer in (default: the deployment's)."),
                }),
                &["question"],
            )
        },
    },
    ToolSpec {
        name: "summarize_document",
        title: "Summarize a document",
        description: "A summary of one of the team's documents (its id from list_documents or a source).",
        role: Role::User,
        schema: || {
            object(
                json!({
                    "document_id": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"},
                    "style": {"type": "string", "enum": ["concise", "detailed", "bullets"], "default": "concise"},
                }),
                &["document_id"],
            )
        },
    },
    ToolSpec {
        name: "list_documents",
        title: "List documents",
        description: "The team's documents, newest first: id, file name, status. next_cursor, when there is \
            one, gives the next page.",
        role: Role::User,
        schema: || {
            object(
                json!({
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 20},
                    "cursor": {"type": "string", "description": "next_cursor of the previous page."},
                }),
                &[],
            )
        },
    },
];

fn top_k_schema(description: &str) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "description": description})
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The tools `who` may call.
pub(super) fn tools_for(who: &Principal) -> Vec<Tool> {
    TOOLS
        .iter()
        .filter(|t| who.has_role(t.role))
        .map(|t| {
            let schema: Map<String, Value> = match (t.schema)() {
                Value::Object(schema) => schema,
                _ => Map::new(),
            };
            Tool::new(t.name, t.description, Arc::new(schema)).with_title(t.title).with_annotations(
                ToolAnnotations::with_title(t.title)
                    .read_only(true)
                    .destructive(false)
                    .idempotent(true)
                    .open_world(false),
            )
        })
        .collect()
}

/// The name and the arguments of a `tools/call`.
fn tool_call(params: &Value) -> Result<(&str, Value), RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(ErrorCode::INVALID_PARAMS, "tools/call needs the tool's name"))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(arguments @ Value::Object(_)) => arguments.clone(),
        Some(_) => return Err(RpcError::new(ErrorCode::INVALID_PARAMS, "arguments must be an object")),
    };
    Ok((name, arguments))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    #[serde(default, deserialize_with = "crate::http::whole_opt")]
    top_k: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    question: String,
    #[serde(default, deserialize_with = "crate::http::whole_opt")]
    top_k: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SummarizeArgs {
    document_id: String,
    #[serde(default)]
    style: Style,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default, deserialize_with = "crate::http::whole_opt")]
    limit: Option<i32>,
    #[serde(default)]
    cursor: Option<String>,
}

fn arguments<T: DeserializeOwned>(tool: &ToolSpec, arguments: Value) -> Result<T, Error> {
    serde_json::from_value(arguments).map_err(|e| Error::BadRequest(format!("{} arguments: {e}", tool.name)))
}

/// Runs the tool a `tools/call`'s `params` name for `who`: its result, and what the handler
/// records of it (the error of a tool that failed, whose result says why; a guardrail's
/// intervention). An unknown tool or malformed params: a protocol error.
pub(super) async fn call(
    assist: &Assist,
    who: &Principal,
    params: &Value,
    deadline: Deadline,
) -> Result<(CallToolResult, Aftermath), RpcError> {
    let (name, arguments) = tool_call(params)?;
    let Some(tool) = TOOLS.iter().find(|t| t.name == name) else {
        return Err(RpcError::new(ErrorCode::INVALID_PARAMS, format!("Unknown tool: {name}")));
    };
    Ok(match run(assist, who, tool, arguments, deadline).await {
        Ok((result, intervened)) => (result, Aftermath { failed: None, intervened }),
        Err(err) => (tool_error(&err), Aftermath { failed: Some(err), intervened: false }),
    })
}

/// Runs `tool` for `who`: its result, and whether a guardrail intervened in it.
async fn run(
    assist: &Assist,
    who: &Principal,
    tool: &ToolSpec,
    args: Value,
    deadline: Deadline,
) -> Result<(CallToolResult, bool), Error> {
    who.require(tool.role)?;
    match tool.name {
        "search_documents" => {
            let args: SearchArgs = arguments(tool, args)?;
            let passages = assist.search(who, Surface::Mcp, &args.query, args.top_k, deadline).await?;
            Ok((search_result(&passages), false))
        }
        "ask" => {
            let args: AskArgs = arguments(tool, args)?;
            let input = QaInput { question: args.question, top_k: args.top_k, use_documents: true };
            let answer = assist.qa(who, Surface::Mcp, input, CacheUse::from_header(None), deadline).await?;
            let text = format!("{}{}", answer.answer, numbered_sources(&answer.sources, place));
            let structured = json!({
                "answer": answer.answer,
                "sources": answer.sources,
                "model": answer.model,
                "cached": answer.cached,
            });
            Ok((structured_result(text, structured), answer.intervened))
        }
        "summarize_document" => {
            let args: SummarizeArgs = arguments(tool, args)?;
            let input = SummaryInput { document_id: Some(args.document_id), text: None, style: args.style };
            let summary = assist.summarize(who, Surface::Mcp, input, deadline).await?;
            let structured = serde_json::to_value(&summary).map_err(|e| Error::internal(e.to_string()))?;
            Ok((structured_result(summary.summary, structured), summary.intervened))
        }
        "list_documents" => {
            let args: ListArgs = arguments(tool, args)?;
            let limit = match args.limit {
                None => 20,
                Some(limit) if (1..=MAX_LIST).contains(&limit) => limit,
                Some(_) => return Err(Error::BadRequest(format!("limit must be 1 to {MAX_LIST}"))),
            };
            let (documents, next) = assist.documents(who, limit, args.cursor.as_deref()).await?;
            let mut text: String = documents
                .iter()
                .map(|d| format!("{}  {}  {}\n", d.document_id, d.filename, d.status.as_str()))
                .collect();
            if documents.is_empty() {
                text.push_str("No documents.\n");
            }
            if let Some(next) = &next {
                text.push_str(&format!("More: call again with cursor {next:?}.\n"));
            }
            Ok((structured_result(text, json!({"documents": documents, "next_cursor": next})), false))
        }
        other => Err(Error::internal(format!("no handler for the tool {other}"))),
    }
}

/// Passages as a tool's result: numbered, each with where it is, then its text; and
/// machine-readable as `passages`.
fn search_result(passages: &[Passage]) -> CallToolResult {
    let text = if passages.is_empty() {
        "No passage matches.".to_owned()
    } else {
        passages
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[{}] {}\n{}\n", i + 1, place(&p.source), p.text))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let structured: Vec<Value> = passages
        .iter()
        .map(|p| {
            let mut source = serde_json::to_value(&p.source).unwrap_or_else(|_| json!({}));
            source["text"] = p.text.clone().into();
            source
        })
        .collect();
    structured_result(text, json!({"passages": structured}))
}

/// Where a source's passage is, for an agent that may ask for the document next: its
/// citation with the heading path, its document id and chunk.
fn place(source: &Source) -> String {
    format!("{} (document {}, chunk {})", source.citation(true), source.document_id, source.chunk)
}

fn structured_result(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// A failed tool call as the result the model reads: what went wrong, as the HTTP API would
/// say it (never a cause's internals).
fn tool_error(err: &Error) -> CallToolResult {
    crate::http::log_failure(err);
    let mut message = err.public_message();
    if let Error::RateLimited { retry_after_secs }
    | Error::BudgetExceeded { retry_after_secs, .. }
    | Error::UpstreamBusy { retry_after_secs, .. } = err
    {
        message.push_str(&format!(" (try again in {retry_after_secs} s)"));
    }
    CallToolResult::error(vec![ContentBlock::text(message)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_naming_its_required_arguments() {
        for tool in &TOOLS {
            let schema = (tool.schema)();
            assert_eq!(schema["type"], "object", "{}", tool.name);
            for required in schema["required"].as_array().unwrap() {
                assert!(schema["properties"].get(required.as_str().unwrap()).is_some(), "{}", tool.name);
            }
        }
    }

    #[test]
    fn a_caller_sees_only_the_tools_its_roles_allow() {
        let who = |roles: Vec<Role>| Principal { user_id: "u".into(), tenant: "t".into(), roles, groups: vec![] };
        let user = who(vec![Role::User]);
        let names: Vec<String> = tools_for(&user).into_iter().map(|t| t.name.into_owned()).collect();
        assert_eq!(names, ["search_documents", "ask", "summarize_document", "list_documents"]);
        let nobody = who(vec![]);
        assert!(tools_for(&nobody).is_empty());
    }
}
