"""The runner's gateway: many Streamable HTTP clients over one stdio server process (SPEC section 7).

`ServerLink` is the stdio side: it gives every forwarded request a runner-unique JSON-RPC id, so each
response goes back to the HTTP request that sent it, whatever ids the clients chose. `Gateway` is the
HTTP side (asyncio streams + h11): loopback only, Host/Origin checked (403), optional bearer token
(401); on a handshake-era server it answers each client's `initialize` from the server's own cached
result and gives each client its own `Mcp-Session-Id`; everything else, `ping` included, is forwarded
and never answered here, so a dead or stuck server never looks healthy.

Not forwarded, by design: server notifications (responses are single application/json bodies, so
there is no stream to carry them; progress and log notifications tied to a request are dropped too)
and server-to-client requests (sampling, roots, elicitation), which get -32601 back. No batches.

Stdlib + h11 only: one runner runs per server, so this module's imports are its memory floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

# JSON-RPC error codes used here.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
SERVER_UNAVAILABLE = -32000   # the server process is gone or restarting (HTTP 503)
REQUEST_TIMED_OUT = -32001    # the server did not answer in time (HTTP 504)

# Handshake-era protocol revisions (2026-07-28 and later are stateless: no initialize, no sessions).
HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

# How long a forwarded request may wait for the server's answer before the client gets 504.
REQUEST_TIMEOUT_S = 300.0
# Largest request body accepted (413 above it); a JSON-RPC message, not a file upload.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Largest request line + headers h11 buffers before giving up on the client.
MAX_HEADER_BYTES = 64 * 1024
# Bytes read from a client socket at a time.
READ_CHUNK = 64 * 1024
# Sessions kept at most; the oldest is forgotten first (clients that never DELETE their session).
MAX_SESSIONS = 10_000

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_LOOPBACK_ORIGIN = re.compile(r"http://(127\.0\.0\.1|localhost)(:\d{1,5})?")


class ServerUnavailable(Exception):
    """The server process is gone (or its pipes are): nothing can be forwarded."""


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    original_id: Any
    scope: str | None  # the client's session, so its cancel notifications find the request


class ServerLink:
    """JSON-RPC over the server's stdin/stdout with runner-unique ids."""

    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, *,
                 log: Callable[[str], None] | None = None) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._log = log or (lambda message: None)
        self.closed = False
        self.cancel_on_timeout = True  # handshake era: tell the server to drop a request we gave up on

    async def request(self, message: dict[str, Any], *, timeout_s: float,
                      scope: str | None = None) -> dict[str, Any]:
        """Send a request under a fresh id and return its response carrying the caller's id again.

        Raises TimeoutError after `timeout_s`, ServerUnavailable when the server is gone.
        """
        if self.closed:
            raise ServerUnavailable("server is not running")
        self._next_id += 1
        runner_id = self._next_id
        pending = _Pending(asyncio.get_running_loop().create_future(), message.get("id"), scope)
        self._pending[runner_id] = pending
        try:
            async with asyncio.timeout(timeout_s):  # covers a full stdin pipe as well as a silent server
                await self._send({**message, "id": runner_id})
                response = await pending.future
        except TimeoutError:
            if self.cancel_on_timeout:
                self._write_quietly({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                    "requestId": runner_id, "reason": "request timed out in the mcp-reconcile runner"}})
            raise
        finally:
            self._pending.pop(runner_id, None)
        response["id"] = pending.original_id
        return response

    async def notify(self, message: dict[str, Any], *, scope: str | None = None) -> None:
        """Forward a client notification; a cancel is re-addressed to the id the server knows (only
        within a session: without one, the request it names cannot be told apart from other clients')."""
        if message.get("method") == "notifications/cancelled":
            params = message.get("params") or {}
            runner_id = self._find(scope, params.get("requestId")) if scope is not None else None
            if runner_id is None:
                return
            message = {**message, "params": {**params, "requestId": runner_id}}
        await self._send(message)

    def _find(self, scope: str | None, original_id: Any) -> int | None:
        for runner_id, pending in self._pending.items():
            if pending.scope == scope and pending.original_id == original_id:
                return runner_id
        return None

    def _write(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ServerUnavailable("server is not running")
        try:
            self._stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (ConnectionError, RuntimeError) as exc:  # broken pipe; RuntimeError: transport closed
            self.close()
            raise ServerUnavailable(f"server stdin closed: {exc}") from exc

    def _write_quietly(self, message: dict[str, Any]) -> None:
        """Best effort, never waits: replies and cancels the server may or may not still read."""
        with contextlib.suppress(ServerUnavailable):
            self._write(message)

    async def _send(self, message: dict[str, Any]) -> None:
        self._write(message)
        try:
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.close()
            raise ServerUnavailable(f"server stdin closed: {exc}") from exc

    async def read_loop(self) -> None:
        """Dispatch the server's stdout lines until EOF, then fail whatever is still pending."""
        try:
            while True:
                try:
                    line = await self._stdout.readline()
                except ValueError:  # a line beyond the stream limit; the reader dropped it
                    self._log("server wrote an oversized stdout line; dropped")
                    continue
                if not line:
                    break
                self._dispatch(line)
        finally:
            self.close()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            if line.strip():
                self._log(f"server wrote a non-JSON stdout line; ignored: {line[:200]!r}")
            return
        if not isinstance(message, dict):
            return
        if "method" in message:
            if "id" in message:  # a server-to-client request: no client to carry it to
                error = {"code": METHOD_NOT_FOUND,
                         "message": "the mcp-reconcile runner does not forward server-to-client requests"}
                self._write_quietly({"jsonrpc": "2.0", "id": message["id"], "error": error})
            return  # notifications have no stream to go to: dropped
        runner_id = message.get("id")
        pending = self._pending.get(runner_id) if isinstance(runner_id, int) else None
        if pending is not None and not pending.future.done():
            pending.future.set_result(message)

    def close(self) -> None:
        """Stop forwarding: every waiting request fails with ServerUnavailable."""
        self.closed = True
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(ServerUnavailable("server exited"))
        self._pending.clear()


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_reply(status: int, message: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(message, separators=(",", ":")).encode()
    return Reply(status, body, [("Content-Type", "application/json"), *(headers or [])])


def _error_reply(status: int, request_id: Any, code: int, message: str,
                 headers: list[tuple[str, str]] | None = None) -> Reply:
    return _json_reply(status, {"jsonrpc": "2.0", "id": request_id,
                                "error": {"code": code, "message": message}}, headers)


def _same_secret(given: bytes, expected: bytes) -> bool:
    """Compare without an early exit (hmac.compare_digest would pull in OpenSSL: +4 MB per runner)."""
    if len(given) != len(expected):
        return False
    diff = 0
    for a, b in zip(given, expected, strict=True):
        diff |= a ^ b
    return diff == 0


class Gateway:
    """The loopback Streamable HTTP endpoint of one runner."""

    def __init__(self, link: ServerLink, *, era: str, initialize_result: dict[str, Any] | None,
                 token: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 path: str = "/mcp") -> None:
        self.link = link
        self.path = path.encode()
        self.era = era
        self.initialize_result = initialize_result
        self.request_timeout_s = request_timeout_s
        self.port = 0
        self._token = token.encode() if token else None
        self._sessions: dict[str, None] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        link.cancel_on_timeout = era == "handshake"

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port) and return the port."""
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def close(self) -> None:
        """Stop accepting and drop open connections (a stopping runner answers no one)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    # HTTP/1.1 ---------------------------------------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                reply = await self._handle(conn, reader, writer, event)
                await self._send(conn, writer, reply)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                reply = Reply(exc.error_status_hint, str(exc).encode(), [("Content-Type", "text/plain")])
                with contextlib.suppress(ConnectionError, h11.LocalProtocolError):
                    await self._send(conn, writer, reply)
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(READ_CHUNK))

    async def _handle(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: h11.Request) -> Reply:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        denied = self._check_access(request.target, headers)
        length = headers.get("content-length", "0")
        if denied is None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            denied = Reply(413, b"request body too large\n", [("Connection", "close")])
        if denied is not None:
            return denied
        if conn.they_are_waiting_for_100_continue:  # curl asks before sending a larger body
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))  # type: ignore[arg-type]
        body = await self._read_body(conn, reader)
        if body is None:
            return Reply(413, b"request body too large\n", [("Connection", "close")])
        if request.method == b"POST":
            return await self._post(headers, body)
        if request.method == b"DELETE":
            return self._delete(headers)
        return Reply(405, b"", [("Allow", "POST, DELETE")])

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(conn, reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise ConnectionError("client went away mid-request")

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = reply.headers if reply.status == 204 else [*reply.headers, ("Content-Length", str(len(reply.body)))]
        response = h11.Response(status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b""))
        parts = [conn.send(response)]
        if reply.body:
            parts.append(conn.send(h11.Data(data=reply.body)))
        parts.append(conn.send(h11.EndOfMessage()))
        writer.write(b"".join(parts))  # type: ignore[arg-type]  # one send(2) per response
        await writer.drain()

    # access -----------------------------------------------------------------------------------------------
    def _check_access(self, target: bytes, headers: dict[str, str]) -> Reply | None:
        """403 for a foreign Host or Origin (DNS rebinding), 401 without the token, 404 off /mcp."""
        if headers.get("host") not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return Reply(403, b"forbidden: Host must be 127.0.0.1 or localhost\n")
        origin = headers.get("origin")
        if origin is not None and not _LOOPBACK_ORIGIN.fullmatch(origin):
            return Reply(403, b"forbidden: Origin is not a loopback origin\n")
        if self._token is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not _same_secret(given.strip().encode(), self._token):
                return Reply(401, b"unauthorized\n", [("WWW-Authenticate", 'Bearer realm="mcp-reconcile"')])
        if target.split(b"?", 1)[0] != self.path:
            return Reply(404, b"not found: the endpoint is " + self.path + b"\n")
        return None

    # MCP --------------------------------------------------------------------------------------------------
    async def _post(self, headers: dict[str, str], body: bytes) -> Reply:
        try:
            message = json.loads(body)
        except ValueError:
            return _error_reply(400, None, PARSE_ERROR, "Parse error: body is not JSON")
        if isinstance(message, list):
            return _error_reply(400, None, INVALID_REQUEST, "JSON-RPC batches are not supported")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error_reply(400, None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        method = message.get("method")
        is_request = isinstance(method, str) and "id" in message
        if self.era == "handshake":
            if is_request and method == "initialize":
                return self._initialize(message)
            session = headers.get("mcp-session-id")
            if session is None:
                if not (is_request and method == "server/discover"):  # era probes of auto-mode clients
                    return _error_reply(400, message.get("id"), INVALID_REQUEST,
                                        "Bad Request: Mcp-Session-Id header is required")
            elif session not in self._sessions:
                return _error_reply(404, message.get("id"), INVALID_REQUEST, "Session not found")
        else:
            session = None
        if is_request:
            return await self._forward(message, session)
        if isinstance(method, str) and method != "notifications/initialized":
            try:
                await self.link.notify(message, scope=session)
            except ServerUnavailable:
                return Reply(503, b"", [("Retry-After", "1")])
        return Reply(202)  # notifications and client responses

    def _initialize(self, message: dict[str, Any]) -> Reply:
        """Answer from the server's own InitializeResult; the client gets a session of its own."""
        result = dict(self.initialize_result or {})
        requested = (message.get("params") or {}).get("protocolVersion")
        if result.get("protocolVersion") in HANDSHAKE_PROTOCOL_VERSIONS and \
                requested in HANDSHAKE_PROTOCOL_VERSIONS:
            result["protocolVersion"] = requested
        session = os.urandom(16).hex()
        self._sessions[session] = None
        if len(self._sessions) > MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return _json_reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result},
                           [("Mcp-Session-Id", session)])

    async def _forward(self, message: dict[str, Any], session: str | None) -> Reply:
        request_id = message["id"]
        try:
            response = await self.link.request(message, timeout_s=self.request_timeout_s, scope=session)
        except ServerUnavailable as exc:
            return _error_reply(503, request_id, SERVER_UNAVAILABLE, f"MCP server unavailable: {exc}",
                                [("Retry-After", "1")])
        except TimeoutError:
            return _error_reply(504, request_id, REQUEST_TIMED_OUT,
                                f"MCP server did not answer within {self.request_timeout_s:g} s")
        return _json_reply(200, response)

    def _delete(self, headers: dict[str, str]) -> Reply:
        if self.era != "handshake":
            return Reply(405, b"", [("Allow", "POST")])
        session = headers.get("mcp-session-id")
        if session is None:
            return Reply(400, b"Mcp-Session-Id header is required\n")
        if session not in self._sessions:
            return Reply(404, b"session not found\n")
        del self._sessions[session]
        return Reply(204)
