"""A POSTed JSON-RPC message between the two protocol eras: which era's client sent it, in which session
(`classify`), how the server's era wants it (`translate_in`), and how the client's era wants the answer
(`answer`). Pure functions over the message, its headers and the server's era; split from gateway.py, which
does the HTTP and the forwarding. Stdlib only: the runner imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_reconcile import eras, httpio
from mcp_reconcile.clientsessions import LOG_LEVELS, Session, SessionTable
from mcp_reconcile.httpio import Reply

# JSON-RPC error codes used here.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
SERVER_UNAVAILABLE = -32000   # the server process is gone or restarting (HTTP 503)
REQUEST_TIMED_OUT = -32001    # the server did not answer in time (HTTP 504)
HEADER_MISMATCH = -32020      # 2026-07-28: an HTTP header contradicts the body
UNSUPPORTED_VERSION = -32022  # 2026-07-28: the request names a protocol version not served here


@dataclass
class Call:
    """One POSTed JSON-RPC message, classified."""

    message: dict[str, Any]
    session_id: str | None
    session: Session | None
    modern: bool          # a 2026-07-28 client (the `_meta` envelope, no session)
    wants_stream: bool    # the client accepts text/event-stream


def is_error(body: bytes) -> bool:
    """A JSON-RPC error answer: its top-level "error" comes before any "result" (no parse of large results)."""
    error, result = body.find(b'"error":'), body.find(b'"result":')
    return error != -1 and (result == -1 or error < result)


def classify(message: dict[str, Any], headers: dict[str, str], *, era: str,
             sessions: SessionTable) -> Call | Reply:
    """Which era's client sent this, in which session; or the refusal that era's HTTP rules ask for."""
    wants_stream = "text/event-stream" in headers.get("accept", "")
    version_header = headers.get("mcp-protocol-version")
    session_id = headers.get("mcp-session-id")
    if message.get("method") == "initialize" and version_header != eras.MODERN_PROTOCOL_VERSION:
        return Call(message, None, None, modern=False, wants_stream=wants_stream)
    if session_id is not None:
        session = sessions.get(session_id)
        if session is None:
            return httpio.error_reply(404, message.get("id"), INVALID_REQUEST, "Session not found")
        if version_header is not None and version_header not in eras.HANDSHAKE_PROTOCOL_VERSIONS:
            return httpio.error_reply(400, message.get("id"), INVALID_REQUEST,
                                      f"Bad Request: unsupported MCP-Protocol-Version {version_header!r}")
        return Call(message, session_id, session, modern=False, wants_stream=wants_stream)
    if version_header == eras.MODERN_PROTOCOL_VERSION or eras.modern_version_of(message) is not None:
        if isinstance(message.get("method"), str) and "id" in message:
            refusal = eras.modern_refusal(message, headers)
            if refusal is not None:
                return httpio.error_reply(refusal.status, message.get("id"), refusal.code, refusal.message,
                                          data=refusal.data)
        return Call(message, None, None, modern=True, wants_stream=wants_stream)
    if version_header is not None and version_header not in (*eras.HANDSHAKE_PROTOCOL_VERSIONS,
                                                             eras.MODERN_PROTOCOL_VERSION):
        return httpio.error_reply(400, message.get("id"), INVALID_REQUEST,
                                  f"Bad Request: unsupported MCP-Protocol-Version {version_header!r}")
    if era == "handshake" and not (message.get("method") == "server/discover" or "method" not in message):
        return httpio.error_reply(400, message.get("id"), INVALID_REQUEST,
                                  "Bad Request: Mcp-Session-Id header is required (initialize first)")
    # a stateless server judges an envelope-less message itself; a discover probe is a modern client's
    return Call(message, None, None, modern=era == "stateless" or message.get("method") == "server/discover",
                wants_stream=wants_stream)


def translate_in(call: Call, method: str, *, era: str, serves_modern: bool) -> tuple[dict[str, Any], str]:
    """The message as the server's era wants it, and how to treat the answer ("as is", "pong",
    "discover", "modern")."""
    message = call.message
    if era == "handshake":
        if method == "server/discover":   # a handshake-only server refuses it itself, as it would natively
            if not serves_modern:
                return message, "as is"
            return {"jsonrpc": "2.0", "id": message["id"], "method": "ping"}, "discover"
        if call.modern:
            return eras.without_envelope(message), "modern"
        return message, "as is"
    if method == "ping" and not call.modern:   # removed in 2026-07-28: ask the server to discover instead
        return eras.with_envelope({"jsonrpc": "2.0", "id": message["id"], "method": "server/discover"},
                                  call.session.capabilities if call.session else {}), "pong"
    if not call.modern:
        return eras.with_envelope(message, call.session.capabilities if call.session else {}), "as is"
    return message, "as is"


def answer(call: Call, method: str, answer_as: str, response: dict[str, Any] | Reply, *,
           initialize_result: dict[str, Any] | None) -> Reply:
    """The server's response as the client's era wants it, with that era's HTTP status."""
    if isinstance(response, Reply):
        return response
    if "error" not in response:
        if answer_as == "pong":
            response = {"jsonrpc": "2.0", "id": response.get("id"), "result": {}}
        elif answer_as == "discover":
            response = {"jsonrpc": "2.0", "id": response.get("id"),
                        "result": eras.discover_from_initialize(initialize_result or {})}
        elif answer_as == "modern":
            response = eras.as_modern_result(method, response)
    status = 200
    code = (response.get("error") or {}).get("code")
    if call.modern and code in (HEADER_MISMATCH, UNSUPPORTED_VERSION):
        status = 400   # 2026-07-28 HTTP rules, when the server itself refused the envelope
    elif call.modern and code == eras.METHOD_NOT_FOUND:
        status = 404
    return httpio.json_reply(status, response)


def remember(call: Call, method: str) -> None:
    """What a successful request changes in the client's session: its subscriptions and its log level (the
    runner routes by them; a shared server keeps only the last client's)."""
    if call.session is None:
        return
    params = call.message.get("params") if isinstance(call.message.get("params"), dict) else {}
    if method == "resources/subscribe":
        call.session.subscriptions.add(str(params.get("uri")))
    elif method == "resources/unsubscribe":
        call.session.subscriptions.discard(str(params.get("uri")))
    elif method == "logging/setLevel":
        level = params.get("level")
        call.session.log_level = level if level in LOG_LEVELS else None
