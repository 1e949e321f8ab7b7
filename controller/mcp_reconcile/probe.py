"""Lean MCP health probes through a runner's endpoint: raw JSON-RPC over one kept-alive connection.

The SDK keeps a session (task groups, streams) per server and costs ~1 ms of CPU and ~0.9 MB per probed
server (tests/bench: 4.5-5.6% of a core extrapolated to 100 servers at a 5 s interval, against a 3% target),
and importing it costs 0.55 s; httpx alone still costs ~0.9 ms per request. A probe is one small request,
so this module speaks it over a kept-alive connection with h11 (the runner's own HTTP library):
`server/discover` (with `_meta`) on a stateless (2026-07-28) server, `ping` on a handshake-era one after one
`initialize` that the runner answers from its cache. Every probe is a request the server itself answers:
the runner forwards ping, it never answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

HANDSHAKE = "handshake"
STATELESS = "stateless"
STATELESS_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"
_META = {"io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
         "io.modelcontextprotocol/clientCapabilities": {}}
# Largest answer a probe reads (a server/discover result is a few hundred bytes).
MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class ProbeResult:
    """One health probe: `era` is "handshake" or "stateless" once the server's era is known."""

    ok: bool
    latency_ms: float | None
    era: str | None
    protocol_version: str | None
    error: str | None


class Response:
    """What a probe needs of an HTTP response."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, body


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to a runner's loopback endpoint, spoken with h11.

    httpx costs ~0.9 ms of CPU per request here; a probe needs one small POST, which this does in a
    fraction of that (tests/bench: controller CPU with N servers). Any error or timeout drops the
    connection; the next request opens a new one.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    async def request(self, method: str, headers: dict[str, str], body: bytes, timeout_s: float) -> Response:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that lands as the exchange ends
        try:
            async with asyncio.timeout(timeout_s):
                return await self._exchange(method, headers, body)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, method: str, headers: dict[str, str], body: bytes) -> Response:
        if self._writer is None or self._h11 is None or self._h11.our_state is not h11.IDLE:
            self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_BYTES)
        conn, reader, writer = self._h11, self._reader, self._writer
        assert reader is not None
        head = [("Host", f"{self.host}:{self.port}"), ("Content-Length", str(len(body))), *headers.items()]
        writer.write(conn.send(h11.Request(method=method, target=self.path, headers=head))  # type: ignore[arg-type]
                     + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status, response_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("the endpoint closed the connection")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the endpoint closed the connection")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()
        return Response(status, response_headers, b"".join(chunks))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = self._h11 = None


class ProbeFailed(Exception):
    """A probe got something other than a JSON-RPC result (the message says what)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _sse_data(text: str) -> list[str]:
    """The data of each server-sent event (multi-line data joined; priming events give "")."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if lines:
            events.append("\n".join(lines).strip())
    return events


def _result_of(response: Response, request_id: int) -> Any:
    """The JSON-RPC result in a response (JSON or an SSE stream), or ProbeFailed saying what came back."""
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(data) for data in _sse_data(response.content.decode(errors="replace")) if data]
        else:
            messages = [json.loads(response.content)] if response.content else []
    except ValueError:
        raise ProbeFailed(f"HTTP {response.status_code}: not JSON", status=response.status_code) from None
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id:
            if "error" in message:
                err = message["error"] or {}
                raise ProbeFailed(f"JSON-RPC error {err.get('code')}: {err.get('message')}"
                                  + (f" (HTTP {response.status_code})" if response.status_code >= 400 else ""),
                                  status=response.status_code, code=err.get("code"))
            return message.get("result")
    raise ProbeFailed(f"HTTP {response.status_code}: no JSON-RPC answer", status=response.status_code)


class LeanProbe:
    """Probes of one server's endpoint over one kept-alive connection; the era is learnt once and kept."""

    def __init__(self, endpoint: str, *, token: str | None = None) -> None:
        self.endpoint = endpoint
        self._http = HttpConnection(endpoint)
        self._ids = itertools.count(1)
        self._headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                         **({"Authorization": f"Bearer {token}"} if token else {})}
        self.era: str | None = None
        self.protocol_version: str | None = None
        self._session: str | None = None

    def _session_headers(self, method: str | None = None) -> dict[str, str]:
        if method == "server/discover":   # the 2026-07-28 HTTP transport names version and method in headers
            return {**self._headers, "MCP-Protocol-Version": STATELESS_VERSION, "Mcp-Method": method}
        if not self._session:
            return self._headers
        return {**self._headers, "Mcp-Session-Id": self._session,
                "MCP-Protocol-Version": self.protocol_version or HANDSHAKE_VERSION}

    async def _call(self, method: str, params: dict[str, Any] | None, timeout_s: float) -> Any:
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        response = await self._http.request("POST", self._session_headers(method), json.dumps(message).encode(),
                                            timeout_s)
        if method == "initialize" and response.status_code == 200:
            self._session = response.headers.get("mcp-session-id")
        return _result_of(response, request_id)

    async def _learn_era(self, timeout_s: float) -> bool:
        """Try server/discover; a result means stateless (and counts as the probe). False: handshake."""
        try:
            await self._call("server/discover", {"_meta": _META}, timeout_s)
        except ProbeFailed as exc:
            # a handshake-only server says -32601 (404 by the 2026-07-28 HTTP rules; 200 from older runners),
            # or a runner wants a session (400); anything else (503 while the server restarts, 504) is a
            # failed probe, era still unknown
            if exc.status not in (200, 400, 404):
                raise
            self.era = HANDSHAKE
            return False
        self.era, self.protocol_version = STATELESS, STATELESS_VERSION
        return True

    async def _handshake(self, timeout_s: float) -> None:
        result = await self._call("initialize", {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {},
                                                 "clientInfo": {"name": "mcp-reconcile-probe", "version": "1"}},
                                  timeout_s)
        self.protocol_version = (result or {}).get("protocolVersion", HANDSHAKE_VERSION)
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self._http.request("POST", self._session_headers(), json.dumps(note).encode(), timeout_s)

    async def _probe_once(self, timeout_s: float) -> None:
        if self.era is None and await self._learn_era(timeout_s):
            return
        if self.era == STATELESS:
            await self._call("server/discover", {"_meta": _META}, timeout_s)
            return
        if self._session is None:
            await self._handshake(timeout_s)
        await self._call("ping", None, timeout_s)

    async def probe(self, timeout_s: float) -> ProbeResult:
        """One probe within `timeout_s` (learning the era on the first); never raises."""
        started = time.perf_counter()
        try:
            try:
                await self._probe_once(timeout_s)
            except ProbeFailed as exc:
                if exc.status != 404:
                    raise
                self._session, self.era = None, None   # a new runner: its sessions and era are new
                await self._probe_once(max(0.001, timeout_s - (time.perf_counter() - started)))
        except ProbeFailed as exc:
            return self._failed(str(exc))
        except TimeoutError:
            return self._failed(f"no answer within {timeout_s:g} s")
        except (OSError, h11.ProtocolError) as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        return self._result(True, latency_ms=round((time.perf_counter() - started) * 1000, 3))

    def _failed(self, error: str) -> ProbeResult:
        """A failed probe; the next one starts afresh (a restarted server knows neither session nor era:
        some answer an unknown session with 404, others with 400)."""
        result = self._result(False, error=error)
        self._session, self.era = None, None
        return result

    def _result(self, ok: bool, *, latency_ms: float | None = None, error: str | None = None) -> ProbeResult:
        return ProbeResult(ok, latency_ms, self.era, self.protocol_version, error)

    async def aclose(self) -> None:
        """End the handshake-era session at the runner (best effort), then the connection."""
        if self._session:
            with contextlib.suppress(OSError, TimeoutError, h11.ProtocolError):
                await self._http.request("DELETE", self._session_headers(), b"", 1.0)
            self._session = None
        self._http.close()
