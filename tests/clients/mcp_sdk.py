"""The official MCP Python SDK against Coach's MCP server (`/mcp`), on the local stack.

Starts the stand-in model and `scripts/dev.sh` (tests/clients/stack.py), creates an API key
with the dev token, then connects `mcp.Client` over Streamable HTTP as an agent would, with
the key as its bearer token: in the SDK's default mode (it probes `server/discover` and
speaks the current revision, 2026-07-28) and in its `legacy` mode (the `initialize`
handshake, 2025-11-25). It lists the tools with their schemas and calls each one
(`search_documents`, `list_documents`, `summarize_document`, `ask`), reads a failing tool's
`isError` result and an unknown tool's protocol error, connects with the dev token (a JWT),
and is refused with a bad key. Stops everything at the end, whatever happened.

    .venv/bin/python tests/clients/mcp_sdk.py
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import check, request, stack_with_model, wait_for  # noqa: E402

TOOLS = ["search_documents", "ask", "summarize_document", "list_documents"]


def client(url, bearer, mode):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=120)
    return Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=120)


def text_of(result):
    return "".join(block.text for block in result.content if getattr(block, "type", None) == "text")


async def session(url, bearer, mode, expected_version):
    async with client(url, bearer, mode) as mcp:
        check(mcp.protocol_version == expected_version, f"{mode}: protocol {mcp.protocol_version}")
        tools = (await mcp.list_tools()).tools
        check([t.name for t in tools] == TOOLS, f"{mode}: the tools {[t.name for t in tools]}")
        search = next(t for t in tools if t.name == "search_documents")
        check(search.input_schema["required"] == ["query"], f"{mode}: the search schema {search.input_schema}")

        found = await mcp.call_tool("search_documents", {"query": "How do I give feedback?", "top_k": 3})
        passages = (found.structured_content or {}).get("passages") or []
        check(not found.is_error and passages and passages[0]["title"], f"{mode}: search {found}")
        check(text_of(found).startswith("[1] "), f"{mode}: numbered passages {text_of(found)[:200]!r}")

        listed = await mcp.call_tool("list_documents", {"limit": 5})
        documents = (listed.structured_content or {}).get("documents") or []
        check(not listed.is_error and documents, f"{mode}: list_documents {listed}")

        summary = await mcp.call_tool("summarize_document", {"document_id": documents[0]["document_id"]})
        check(not summary.is_error and text_of(summary).strip(), f"{mode}: summarize_document {summary}")

        answer = await mcp.call_tool("ask", {"question": "How do I give useful feedback to a colleague?"})
        check(not answer.is_error and "\n\nSources:\n[1] " in text_of(answer), f"{mode}: ask {text_of(answer)!r}")
        check(answer.structured_content["sources"], f"{mode}: the sources {answer.structured_content}")

        missing = await mcp.call_tool("summarize_document", {"document_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
        check(missing.is_error and "no such document" in text_of(missing), f"{mode}: a failing tool {missing}")
        try:
            await mcp.call_tool("delete_everything", {})
            raise AssertionError(f"{mode}: an unknown tool was called")
        except Exception as raised:
            error = mcp_error(raised)
            check(error is not None and error.error.code == -32602, f"{mode}: an unknown tool's error {raised!r}")
        await mcp.send_ping()
    print(f"mcp-sdk: {mode} mode ({expected_version}): tools listed and called, errors as the protocol says")


def mcp_error(raised):
    """The MCPError in `raised` (itself, or within exception groups), or None."""
    from mcp.shared.exceptions import MCPError

    if isinstance(raised, MCPError):
        return raised
    for inner in getattr(raised, "exceptions", ()):
        if (found := mcp_error(inner)) is not None:
            return found
    return None


async def drive(base, token):
    # A document of the tenant's own (the example docs are the shared ones), indexed.
    note = {"filename": "one-to-ones.md", "content_type": "text/markdown",
            "content": "# One-to-ones\n\nHold them weekly; the report sets the agenda and brings feedback."}
    status, uploaded = request(f"{base}/upload-url/documents", note, token)
    check(status in (200, 201, 202), f"an inline document: {status} {uploaded}")
    document = f"{base}/upload-url/documents/{uploaded['document_id']}"
    wait_for("the document indexed", lambda: (request(document, None, token)[1] or {}).get("status") == "ready", 300)

    status, created = request(f"{base}/chat/api-keys", {"name": "mcp-sdk", "roles": ["user"]}, token)
    check(status == 201 and created["key"].startswith("coach_"), f"an API key: {status} {created}")
    url = f"{base}/chat/mcp"
    await session(url, created["key"], "auto", "2026-07-28")
    await session(url, created["key"], "legacy", "2025-11-25")

    # A JWT is a bearer token too.
    async with client(url, token, "auto") as mcp:
        check(len((await mcp.list_tools()).tools) == len(TOOLS), "the tools with the dev token")
    try:
        async with client(url, "coach_" + "0" * 26 + "_" + "0" * 64, "auto") as mcp:
            await mcp.list_tools()
        raise AssertionError("a bad key was accepted")
    except Exception as raised:  # the SDK raises it within its task group
        error = mcp_error(raised)
        check(error is not None and error.error.data["status"] == 401, f"a bad key's error: {raised!r}")
    print("mcp-sdk: a JWT accepted, a bad key refused")


def main():
    with stack_with_model("mcp-sdk") as (base, token):
        asyncio.run(drive(base, token))
    print("mcp-sdk: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
