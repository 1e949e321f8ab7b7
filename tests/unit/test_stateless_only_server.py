"""tests/fixtures/servers/stateless_only.py speaks 2026-07-28 and nothing else, as the official SDK client sees it.

Why: the endpoint's era translation (spec section 7) is tested against this server, so the server itself must be
right: the SDK client's `auto` and pinned `2026-07-28` modes work against it, the handshake is refused with an
error that names the supported version, and its results validate against the SDK's own 2026-07-28 wire models.
Every wait is bounded (`asyncio.timeout`, `subprocess.run(timeout=)`); the raw tests write all requests, close
stdin and read the answers the server wrote before it exited at EOF.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "servers" / "stateless_only.py"
WAIT_S = 20.0   # bound on one SDK session or raw exchange: generous, the 2 cores are shared
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
SERVER_INFO = {"io.modelcontextprotocol/serverInfo": {"name": "stateless-only", "version": "1.0.0"}}
Json = dict[str, Any]


def exchange(*messages: Json) -> list[Json]:
    """Write every message, close stdin, and return what the server wrote before exiting (exit code 0)."""
    lines = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run([sys.executable, "-u", str(SERVER)], input=lines, capture_output=True, text=True,
                          timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def request(request_id: int, method: str, params: Json | None = None) -> Json:
    message: Json = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


# -- the official SDK client -----------------------------------------------------------------------------------

async def _session(mode: str) -> Json:
    from mcp import Client, StdioServerParameters  # the SDK costs 0.5 s to import: only these tests pay

    async with asyncio.timeout(WAIT_S):
        params = StdioServerParameters(command=sys.executable, args=["-u", str(SERVER)])
        async with Client(params, mode=mode) as client:
            tools = await client.list_tools()
            echoed = await client.call_tool("echo", {"message": "hi"})
            added = await client.call_tool("add", {"a": 1, "b": 2.5})
            return {"version": client.protocol_version, "server": client.server_info,
                    "tools": [tool.name for tool in tools.tools],
                    "echo": echoed.content[0].text, "echo_error": echoed.is_error,  # type: ignore[union-attr]
                    "add": added.content[0].text, "sum": added.structured_content}  # type: ignore[union-attr]


def test_the_sdk_client_in_auto_mode_probes_discover_and_lands_on_2026_07_28() -> None:
    got = asyncio.run(_session("auto"))
    assert got["version"] == MODERN
    assert (got["server"].name, got["server"].version) == ("stateless-only", "1.0.0")
    assert got["tools"] == ["echo", "add"]
    assert (got["echo"], got["echo_error"], got["add"], got["sum"]) == ("hi", False, "3.5", {"sum": 3.5})


def test_the_sdk_client_pinned_to_2026_07_28_works() -> None:
    got = asyncio.run(_session(MODERN))
    assert (got["version"], got["tools"], got["echo"], got["add"]) == (MODERN, ["echo", "add"], "hi", "3.5")


def test_the_sdk_client_in_legacy_mode_is_refused_with_the_supported_version_named() -> None:
    from mcp.shared.exceptions import MCPError

    with pytest.raises(BaseException) as caught:   # the SDK wraps it in an ExceptionGroup
        asyncio.run(_session("legacy"))
    error: BaseException = caught.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, MCPError), repr(error)
    assert error.code == -32601 and MODERN in error.message
    assert error.data["supported"] == [MODERN]


# -- the wire, checked against the SDK's 2026-07-28 models -------------------------------------------------------

def test_results_carry_the_2026_07_28_fields_and_validate_against_the_sdk_wire_models() -> None:
    from mcp_types import _v2026_07_28 as wire

    discover, listed, called, unknown, bad_args = exchange(
        request(1, "server/discover", {"_meta": META}),
        request(2, "tools/list", {"_meta": META}),
        request(3, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}, "_meta": META}),
        request(4, "tools/call", {"name": "nope", "arguments": {}, "_meta": META}),
        request(5, "tools/call", {"name": "add", "arguments": {"a": "1", "b": 2}, "_meta": META}),
    )
    assert discover["result"] == {"supportedVersions": [MODERN], "capabilities": {"tools": {"listChanged": True}},
                                  "resultType": "complete", "ttlMs": 0, "cacheScope": "private", "_meta": SERVER_INFO}
    wire.DiscoverResult.model_validate(discover["result"])
    assert {k: listed["result"][k] for k in ("resultType", "ttlMs", "cacheScope", "_meta")} == {
        "resultType": "complete", "ttlMs": 0, "cacheScope": "private", "_meta": SERVER_INFO}
    wire.ListToolsResult.model_validate(listed["result"])
    assert called["result"]["resultType"] == "complete" and called["result"]["content"][0]["text"] == "3"
    wire.CallToolResult.model_validate(called["result"])
    assert unknown["error"]["code"] == -32602          # an unknown tool is a protocol error (server/tools.mdx)
    assert bad_args["result"]["isError"] is True        # bad arguments are a tool execution error


def test_handshake_methods_are_unknown_and_the_envelope_is_required() -> None:
    initialize, ping, bare, half, old, bare_discover, unknown = exchange(
        request(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "0"}}),
        request(2, "ping", {"_meta": META}),
        request(3, "tools/list"),
        request(4, "tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}),
        request(5, "tools/list", {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "2025-06-18"}}),
        request(6, "server/discover", {}),
        request(7, "resources/list", {"_meta": META}),
    )
    assert initialize["error"]["code"] == -32601 and MODERN in initialize["error"]["message"]
    assert initialize["error"]["data"] == {"supported": [MODERN], "requested": "2025-06-18"}
    assert ping["error"]["code"] == -32601
    assert [r["error"]["code"] for r in (bare, half, bare_discover)] == [-32602, -32602, -32602]
    assert old["error"] == {"code": -32022, "message": "Unsupported protocol version",
                            "data": {"supported": [MODERN], "requested": "2025-06-18"}}
    assert unknown["error"]["code"] == -32601
    assert [r["id"] for r in (initialize, ping, bare, half, old, bare_discover, unknown)] == list(range(1, 8))


def test_subscriptions_listen_is_acknowledged_and_held_open() -> None:
    ack, listed = exchange(
        request(1, "subscriptions/listen", {"notifications": {"toolsListChanged": True, "promptsListChanged": True},
                                            "_meta": META}),
        request(2, "tools/list", {"_meta": META}),
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
    )
    assert ack == {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                   "params": {"notifications": {"toolsListChanged": True},
                              "_meta": {"io.modelcontextprotocol/subscriptionId": 1}}}
    assert listed["id"] == 2 and "tools" in listed["result"]   # the open stream blocks nothing
