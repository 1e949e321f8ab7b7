"""One HTTP exchange of `mcp-reconcile connect` with a runner's endpoint (connect.py drives them).

An exchange is one request (POST a JSON-RPC message, GET the session's stream, DELETE the session) and its
response, read as JSON-RPC messages: one JSON body, or the events of an SSE stream. Failures come out as
three exceptions, so the bridge decides what to do with each: `Unreachable` (nobody answered, the connection
was cut, or the runner said its server is restarting: retry), `SessionGone` (a 404 for a session id: the runner
does not know the session, re-initialize) and `Refused` (an HTTP error without a JSON-RPC message in it).

Stdlib only (import-linter `runner-lean`): the bridge is launched by clients for every session, so its
imports are its start-up time.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mcp_reconcile import eras

ACCEPT = "application/json, text/event-stream"
# Opening a loopback connection: a live endpoint (or the keeper holding it after a crash) accepts at once.
CONNECT_TIMEOUT_S = 5.0
# HTTP statuses of a runner whose server is gone for now (or of a proxy in front of it): worth a retry.
RETRY_STATUSES = frozenset({502, 503})
# The JSON-RPC code a runner answers a request with when its server exited under it (gateway.py).
SERVER_UNAVAILABLE = -32000
_UNAVAILABLE_PREFIX = "MCP server unavailable"


class Unreachable(Exception):
    """Nobody answered, the answer was cut short, or the runner's server is restarting: worth a retry."""


class SessionGone(Exception):
    """The runner answered 404 for the session id sent: it does not know (any more) this session."""


class Refused(Exception):
    """The endpoint answered an HTTP error that carries no JSON-RPC message (401, 403, a wrong path...)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}" if text else f"HTTP {status}")
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where the endpoint is now, and the bearer token it wants (None: no token)."""

    port: int
    path: str
    token: str | None = None
    token_env: str | None = None   # where the token comes from (a name for messages, never the value)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None     # the stream's last event id when this event was dispatched


def read_sse(lines: Iterable[bytes]) -> Iterator[SseEvent]:
    """Events of an SSE stream given line by line (the WHATWG rules: `data:` lines joined by newlines, `id:`
    kept until changed, comments and unknown fields ignored, an unfinished last event dropped)."""
    data: list[str] = []
    event_type, last_id = "message", None
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent("\n".join(data), event_type, last_id)
            data, event_type = [], "message"
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value or "message"
        elif name == "id" and "\0" not in value:
            last_id = value or None


def header_value(value: str) -> str:
    """A header mirroring a body value: as is when it is plain visible ASCII, else `=?base64?...?=`."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def message_headers(message: dict[str, Any], *, session_id: str | None, protocol_version: str | None,
                    token: str | None) -> dict[str, str]:
    """Headers of a POST: the session's (handshake era), or the ones mirroring a 2026-07-28 body."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    modern = eras.modern_version_of(message)
    if modern is not None and session_id is None:
        method = message.get("method")
        headers["MCP-Protocol-Version"] = modern
        if isinstance(method, str):
            headers["Mcp-Method"] = method
            params = message.get("params")
            key = eras.NAME_BEARING_METHODS.get(method)
            if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
                headers["Mcp-Name"] = header_value(params[key])
    elif session_id is not None and message.get("method") != "initialize":
        headers["Mcp-Session-Id"] = session_id
        if protocol_version:
            headers["MCP-Protocol-Version"] = protocol_version
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def retry_worthy(message: dict[str, Any]) -> bool:
    """Is this the runner's answer for a request its server could not take (a 503 folded into an SSE stream)?
    Not when the server had the request in hand (`data.forwarded`): it may have acted on it, so the client
    decides whether to send it again."""
    error = message.get("error")
    forwarded = isinstance(error, dict) and isinstance(error.get("data"), dict) and error["data"].get("forwarded")
    return isinstance(error, dict) and error.get("code") == SERVER_UNAVAILABLE and not forwarded \
        and str(error.get("message", "")).startswith(_UNAVAILABLE_PREFIX)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)


class Exchange:
    """One request to the endpoint and its open response (`close` it; `abort` cuts it from another thread)."""

    def __init__(self, target: Target, method: str, *, headers: dict[str, str], body: bytes | None = None,
                 read_timeout_s: float | None = None, warn: Callable[[str], None] = lambda _: None) -> None:
        self.warn = warn
        self.last_event_id: str | None = None
        self.response: http.client.HTTPResponse | None = None
        self._conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=CONNECT_TIMEOUT_S)
        self._sock: socket.socket | None = None
        headers = {"Host": f"127.0.0.1:{target.port}", **headers}
        try:
            self._conn.connect()
            self._sock = self._conn.sock
            self._conn.sock.settimeout(read_timeout_s)   # None: a tool may run long; the runner bounds it
            self._conn.request(method, target.path, body=body, headers=headers)
            response = self.response = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unreachable(_reason(exc)) from None
        self.status = response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name) if self.response is not None else None

    def check(self, *, session_id: str | None) -> None:
        """Raise for a status that carries no message for the client: retry, session gone, refused."""
        if self.status in RETRY_STATUSES:
            raise Unreachable(f"HTTP {self.status} (the server is restarting)")
        if self.status == 404 and session_id is not None:
            raise SessionGone(session_id)
        if self.status >= 400 and not (self.header("Content-Type") or "").startswith("application/json"):
            raise Refused(self.status, self._text())

    def messages(self) -> Iterator[dict[str, Any]]:
        """The JSON-RPC messages of the response body, as they arrive."""
        assert self.response is not None   # set, or __init__ raised
        try:
            if (self.header("Content-Type") or "").startswith("text/event-stream"):
                for event in read_sse(self.response):
                    self.last_event_id = event.id
                    if event.event == "message" and event.data.strip():
                        yield from self._parsed(event.data)
            else:
                body = self.response.read()
                if body.strip():
                    yield from self._parsed(body)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"the response was cut short: {_reason(exc)}") from None

    def _parsed(self, text: str | bytes) -> list[dict[str, Any]]:
        try:
            parsed = json.loads(text)
        except ValueError:
            self.warn(f"ignored a message from the endpoint that is not JSON: {text[:200]!r}")
            return []
        items = parsed if isinstance(parsed, list) else [parsed]
        return [item for item in items if isinstance(item, dict)]

    def _text(self) -> str:
        try:
            return self.response.read(2000).decode(errors="replace").strip() if self.response else ""
        except (OSError, http.client.HTTPException):
            return ""

    def abort(self) -> None:
        """Cut the connection under a reader blocked in another thread (the GET stream at shutdown)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
        self._conn.close()
