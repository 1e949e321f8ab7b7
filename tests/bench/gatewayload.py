"""Load for the gateway benchmark: the same MCP `tools/call echo` driven against any Streamable HTTP endpoint
(the runner's, supergateway's, the trivial floor's) by three clients, and against direct stdio.

- a minimal HTTP/1.1 client on asyncio streams (`RawHttp`), as lean as the raw JSON-lines client of the
  stdio baseline, so the latency it adds is the endpoint's and not the client's (the headline figure);
- httpx.AsyncClient with keep-alive, one per client;
- wrk, the load generator of SPEC §13's peer figures, when it is on PATH.
Each HTTP client does the handshake (POST initialize, take Mcp-Session-Id, notifications/initialized), calls
back to back on its session, and DELETEs the session at the end (supergateway keeps a stdio child per session).
An answer is a JSON body or an SSE stream (supergateway answers every POST as one); every call must carry a result.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import benchlib
import httpx

ECHO = {"name": "echo", "arguments": {"message": "bench"}}
REQUESTS = {1: 1000, 32: 3200}      # measured calls per run, by concurrency
WARMUP = 64                         # calls before each measured run (caches and pools fill)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
REQUEST_TIMEOUT_S = 30.0
RESULT = b'"result"'


@dataclass(frozen=True)
class Load:
    latencies: list[float]
    wall_s: float

    @property
    def p50(self) -> float:
        return benchlib.percentile(self.latencies, 50)

    @property
    def p95(self) -> float:
        return benchlib.percentile(self.latencies, 95)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s


async def _drive(clients: int, total: int, call: Callable[[int], Awaitable[None]]) -> Load:
    """`clients` workers, each making total/clients calls back to back; the latency of every call."""
    latencies: list[float] = []

    async def worker(index: int) -> None:
        for _ in range(total // clients):
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    return Load(latencies, time.perf_counter() - started)


async def _measured(clients: int, call: Callable[[int], Awaitable[None]]) -> Load:
    await _drive(clients, max(clients, WARMUP), call)
    return await _drive(clients, REQUESTS[clients], call)


def body(message_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if message_id:
        message["id"] = message_id
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def answer(content_type: str, payload: bytes) -> dict[str, Any]:
    """The JSON-RPC answer in a JSON body or in an SSE stream (its last `data:` line)."""
    if content_type.startswith("text/event-stream"):
        data = [line[5:] for line in payload.splitlines() if line.startswith(b"data:")]
        assert data, payload
        payload = data[-1]
    return json.loads(payload)


def echoed(message: dict[str, Any]) -> None:
    assert "bench" in json.dumps(message.get("result")), message


# --- direct stdio ------------------------------------------------------------------------------------

async def direct(argv: tuple[str, ...], env: dict[str, str], clients: int) -> Load:
    peer = await benchlib.StdioPeer.spawn(argv, env=env)
    try:
        await peer.initialize()
        echoed(await peer.request("tools/call", ECHO))

        async def call(_: int) -> None:
            reply = await peer.request("tools/call", ECHO, timeout_s=REQUEST_TIMEOUT_S)
            assert "result" in reply, reply

        return await _measured(clients, call)
    finally:
        await peer.close()


# --- httpx ---------------------------------------------------------------------------------------------

async def _httpx_session(http: httpx.AsyncClient, endpoint: str) -> dict[str, str]:
    """The handshake; returns the headers of every later request of that session."""
    reply = await http.post(endpoint, content=body(1, "initialize", benchlib.INIT_PARAMS), headers=HEADERS)
    assert reply.status_code == 200, reply.text
    headers = {**HEADERS, "Mcp-Session-Id": reply.headers["mcp-session-id"]}
    done = await http.post(endpoint, content=body(0, "notifications/initialized"), headers=headers)
    assert done.status_code == 202, done.text
    return headers


async def via_httpx(endpoint: str, clients: int) -> Load:
    """One httpx.AsyncClient (keep-alive) per client: a shared pool of 32 is 4x slower in httpx itself."""
    https = [httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) for _ in range(clients)]
    sessions: list[dict[str, str]] = []
    try:
        for http in https:
            sessions.append(await _httpx_session(http, endpoint))
        call_body = body(2, "tools/call", ECHO)
        first = await https[0].post(endpoint, content=call_body, headers=sessions[0])
        echoed(answer(first.headers.get("content-type", ""), first.content))

        async def call(index: int) -> None:
            reply = await https[index].post(endpoint, content=call_body, headers=sessions[index])
            assert reply.status_code == 200 and RESULT in reply.content, reply.text

        return await _measured(clients, call)
    finally:
        for http, session in zip(https, sessions, strict=False):
            await http.delete(endpoint, headers=session)
        for http in https:
            await http.aclose()


# --- a minimal HTTP/1.1 client -----------------------------------------------------------------------------

class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads Content-Length or chunked bodies."""

    def __init__(self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(endpoint)
        self.endpoint, self.reader, self.writer = endpoint, reader, writer
        self.head = (f"{url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                     f"Accept: {HEADERS['Accept']}\r\n")
        self.session: str | None = None

    @classmethod
    async def open(cls, endpoint: str) -> RawHttp:
        url = urlsplit(endpoint)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        return cls(endpoint, reader, writer)

    async def post(self, payload: bytes, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
        session = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        request = f"{method} {self.head}{session}Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            self.writer.write(request)
            try:
                head_bytes = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                # The server closed the idle keep-alive connection (Node's keepAliveTimeout is 5 s, and
                # supergateway's handshakes take a node start each): reconnect and send again, as httpx does.
                url = urlsplit(self.endpoint)
                self.writer.close()
                self.reader, self.writer = await asyncio.open_connection(url.hostname, url.port)
                self.writer.write(request)
                head_bytes = await self.reader.readuntil(b"\r\n\r\n")
            head = head_bytes.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            if headers.get("transfer-encoding") == "chunked":
                return int(head[0].split()[1]), headers, await self._chunks()
            length = int(headers.get("content-length", "0"))
            return int(head[0].split()[1]), headers, await self.reader.readexactly(length) if length else b""

    async def _chunks(self) -> bytes:
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await self.reader.readexactly(size + 2))[:-2])
        await self.reader.readuntil(b"\r\n")   # the (empty) trailer
        return b"".join(parts)

    async def handshake(self) -> None:
        status, headers, payload = await self.post(body(1, "initialize", benchlib.INIT_PARAMS))
        assert status == 200, payload
        self.session = headers["mcp-session-id"]
        status, _, payload = await self.post(body(0, "notifications/initialized"))
        assert status == 202, payload

    async def close(self) -> None:
        """DELETE the session (when there is one), then close the connection."""
        if self.session:
            await self.post(b"", "DELETE")
        self.writer.close()
        await self.writer.wait_closed()


async def via_raw_http(endpoint: str, clients: int,
                       after: Callable[[], Any] | None = None) -> tuple[Load, Any]:
    """The load, and what `after()` returns when called after it with every session still open."""
    connections = [await RawHttp.open(endpoint) for _ in range(clients)]
    try:
        for connection in connections:
            await connection.handshake()
        call_body = body(2, "tools/call", ECHO)
        _, headers, payload = await connections[0].post(call_body)
        echoed(answer(headers.get("content-type", ""), payload))

        async def call(index: int) -> None:
            status, _, payload = await connections[index].post(call_body)
            assert status == 200 and RESULT in payload, payload

        load = await _measured(clients, call)
        return load, after() if after else None
    finally:
        for connection in connections:
            await connection.close()


# --- wrk (when installed) --------------------------------------------------------------------------------

WRK = shutil.which("wrk")
WRK_DURATION_S = 3                  # per round (the bench runs several, taking turns)
WRK_TIMEOUT_S = 60.0
_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
# A request id of its own per call (supergateway maps answers to streams by id within a session), and a count
# of answers without a result (a JSON-RPC error is a 200 too), summed over threads in done().
_WRK_SCRIPT = """
local n = 0
unanswered = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"jsonrpc": "2.0", "id": ' .. n .. ', "method": "tools/call", "params": %s}')
end
response = function(status, headers, body)
  if not string.find(body, '"result"', 1, true) then unanswered = unanswered + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("unanswered") end
  io.write(string.format("unanswered: %%d\\n", total))
end
"""


@dataclass(frozen=True)
class WrkRun:
    p50: float
    rps: float


async def _wrk_session(endpoint: str) -> RawHttp:
    connection = await RawHttp.open(endpoint)
    await connection.handshake()
    return connection


def via_wrk(endpoint: str, clients: int, script: Path, *, accept: str = HEADERS["Accept"]) -> WrkRun:
    """wrk POSTing tools/call on one session (initialized first, DELETEd after); one thread, like the Python
    clients, since the endpoint and the server need the box's other core. `accept` "application/json" alone
    measures what offering SSE costs a call that produces no notification (it should cost nothing)."""
    assert WRK is not None
    loop = asyncio.new_event_loop()
    try:
        connection = loop.run_until_complete(_wrk_session(endpoint))
        try:
            headers = "".join(f'wrk.headers["{k}"] = "{v}"\n'
                              for k, v in {**HEADERS, "Accept": accept,
                                         "Mcp-Session-Id": connection.session}.items())
            script.write_text(f'wrk.method = "POST"\n{headers}{_WRK_SCRIPT % json.dumps(ECHO)}')
            done = subprocess.run([WRK, "-t1", f"-c{clients}", f"-d{WRK_DURATION_S}s", "--latency", "-s",
                                   str(script), endpoint], capture_output=True, text=True, timeout=WRK_TIMEOUT_S,
                                  env=benchlib.bench_env())
        finally:
            loop.run_until_complete(connection.close())
    finally:
        loop.close()
    assert done.returncode == 0 and "Non-2xx" not in done.stdout and "Socket errors" not in done.stdout, done.stdout
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", done.stdout, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    assert p50 and rps, done.stdout
    assert re.search(r"^unanswered: 0$", done.stdout, re.MULTILINE), f"calls without a result:\n{done.stdout}"
    return WrkRun(float(p50.group(1)) * _WRK_UNITS[p50.group(2)], float(rps.group(1)))
