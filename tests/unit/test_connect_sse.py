"""What `mcp-reconcile connect` reads and sends on the wire: SSE events, and the headers of each era."""

from __future__ import annotations

import base64

import pytest

from mcp_reconcile import eras
from mcp_reconcile.connecthttp import SseEvent, header_value, message_headers, read_sse, retry_worthy


def lines(text: str) -> list[bytes]:
    return [line.encode() for line in text.splitlines(keepends=True)]


@pytest.mark.parametrize(("stream", "expected"), [
    pytest.param("event: message\ndata: {\"a\":1}\n\n", [SseEvent('{"a":1}')], id="one event"),
    pytest.param("data: a\ndata: b\n\n", [SseEvent("a\nb")], id="data lines are joined with newlines"),
    pytest.param("data: x\r\n\r\n", [SseEvent("x")], id="CRLF line ends"),
    pytest.param(": keep-alive\n\ndata: x\n\n", [SseEvent("x")], id="comments and empty events are skipped"),
    pytest.param("data:x\n\n", [SseEvent("x")], id="the space after the colon is optional"),
    pytest.param("data:  x\n\n", [SseEvent(" x")], id="only one leading space is removed"),
    pytest.param("id: 7\ndata: a\n\ndata: b\n\n", [SseEvent("a", id="7"), SseEvent("b", id="7")],
                 id="an id stays until it changes"),
    pytest.param("id: 1\ndata: a\n\nid\ndata: b\n\n", [SseEvent("a", id="1"), SseEvent("b")],
                 id="an empty id resets it"),
    pytest.param("event: ping\ndata: p\n\ndata: m\n\n", [SseEvent("p", event="ping"), SseEvent("m")],
                 id="the event type applies to one event only"),
    pytest.param("retry: 100\nfoo: bar\ndata: x\n\n", [SseEvent("x")], id="unknown fields are ignored"),
    pytest.param("data: done\n\ndata: cut sh", [SseEvent("done")], id="an unfinished last event is dropped"),
])
def test_sse_events_are_read_as_the_whatwg_rules_say(stream: str, expected: list[SseEvent]) -> None:
    assert list(read_sse(lines(stream))) == expected


def test_a_handshake_request_carries_the_session_and_the_negotiated_version_but_initialize_does_not() -> None:
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = message_headers(request, session_id="s1", protocol_version="2025-06-18", token=None)
    assert headers == {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                       "Mcp-Session-Id": "s1", "MCP-Protocol-Version": "2025-06-18"}
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    assert "Mcp-Session-Id" not in message_headers(initialize, session_id="s1", protocol_version="x", token=None)


def test_a_2026_request_mirrors_its_envelope_method_and_name_in_headers() -> None:
    meta = {eras.PROTOCOL_VERSION_KEY: eras.MODERN_PROTOCOL_VERSION, eras.CLIENT_CAPABILITIES_KEY: {}}
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": meta}}
    headers = message_headers(request, session_id=None, protocol_version=None, token="t0k")
    assert headers["MCP-Protocol-Version"] == eras.MODERN_PROTOCOL_VERSION
    assert headers["Mcp-Method"] == "tools/call"
    assert headers["Mcp-Name"] == "echo"
    assert headers["Authorization"] == "Bearer t0k"
    assert eras.modern_refusal(request, {k.lower(): v for k, v in headers.items()}) is None


def test_a_name_that_is_not_plain_ascii_is_sent_base64_encoded() -> None:
    assert header_value("plain-name") == "plain-name"
    encoded = header_value("héllo wörld")
    assert encoded.startswith("=?base64?") and encoded.endswith("?=")
    assert base64.b64decode(encoded[9:-2]).decode() == "héllo wörld"
    assert header_value(" padded ").startswith("=?base64?")


def test_only_the_runners_server_exited_answer_is_worth_a_retry() -> None:
    assert retry_worthy({"id": 1, "error": {"code": -32000, "message": "MCP server unavailable: server exited"}})
    assert not retry_worthy({"id": 1, "error": {"code": -32000, "message": "tool failed"}})
    assert not retry_worthy({"id": 1, "result": {}})
