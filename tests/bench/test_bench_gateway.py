"""Gateway (SPEC §7, §13): latency and throughput of a forwarded `tools/call echo` on server-everything
through the runner's endpoint, against the same server over direct stdio, at 1 and 32 concurrent clients.

Each HTTP client does the handshake (POST initialize, take Mcp-Session-Id, notifications/initialized)
and then calls back to back on its session. Three HTTP clients are measured: a minimal HTTP/1.1 client on
asyncio streams, as lean as the raw JSON-lines client of the stdio baseline, so the latency it adds is
the runner's and not the client's (the headline figure); httpx.AsyncClient with keep-alive, one per
client; and wrk, the load generator of SPEC §13's peer figures, when it is installed. Everything
(clients, runner, server) shares the box's 2 cores, so a Python client caps the throughput it sees.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import benchlib
import httpx
import psutil
import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

ECHO = {"name": "echo", "arguments": {"message": "bench"}}
REQUESTS = {1: 1000, 32: 3200}      # measured calls per run, by concurrency
WARMUP = 64                         # calls before each measured run (JIT-free, but caches and pools fill)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# SPEC §13, measured there with wrk at 32 concurrent requests (not re-measured here).
SUPERGATEWAY_RPS = 4300
REQUEST_TIMEOUT_S = 30.0


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


def _echoed(answer: dict[str, Any]) -> None:
    assert "bench" in json.dumps(answer.get("result")), answer


# --- direct stdio ------------------------------------------------------------------------------------

async def _direct(argv: tuple[str, ...], env: dict[str, str], clients: int) -> Load:
    peer = await benchlib.StdioPeer.spawn(argv, env=env)
    try:
        await peer.initialize()
        _echoed(await peer.request("tools/call", ECHO))

        async def call(_: int) -> None:
            answer = await peer.request("tools/call", ECHO, timeout_s=REQUEST_TIMEOUT_S)
            assert "result" in answer, answer

        return await _measured(clients, call)
    finally:
        await peer.close()


# --- the endpoint through httpx ------------------------------------------------------------------------

def _body(message_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if message_id:
        message["id"] = message_id
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


async def _httpx_session(http: httpx.AsyncClient, endpoint: str) -> dict[str, str]:
    """The handshake; returns the headers of every later request of that session."""
    reply = await http.post(endpoint, content=_body(1, "initialize", benchlib.INIT_PARAMS), headers=HEADERS)
    assert reply.status_code == 200, reply.text
    headers = {**HEADERS, "Mcp-Session-Id": reply.headers["mcp-session-id"]}
    done = await http.post(endpoint, content=_body(0, "notifications/initialized"), headers=headers)
    assert done.status_code == 202, done.text
    return headers


async def _via_httpx(endpoint: str, clients: int) -> Load:
    """One httpx.AsyncClient (keep-alive) per client: a shared pool of 32 is 4x slower in httpx itself."""
    https = [httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) for _ in range(clients)]
    try:
        sessions = [await _httpx_session(http, endpoint) for http in https]
        body = _body(2, "tools/call", ECHO)
        _echoed((await https[0].post(endpoint, content=body, headers=sessions[0])).json())

        async def call(index: int) -> None:
            reply = await https[index].post(endpoint, content=body, headers=sessions[index])
            assert reply.status_code == 200, reply.text

        return await _measured(clients, call)
    finally:
        for http in https:
            await http.aclose()


# --- the endpoint through a minimal HTTP/1.1 client -------------------------------------------------------

class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads Content-Length bodies."""

    def __init__(self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(endpoint)
        self.reader, self.writer = reader, writer
        self.head = (f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                     f"Accept: {HEADERS['Accept']}\r\n")
        self.session: str | None = None

    @classmethod
    async def open(cls, endpoint: str) -> RawHttp:
        url = urlsplit(endpoint)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        return cls(endpoint, reader, writer)

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        session = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        self.writer.write(f"{self.head}{session}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        length = int(headers.get("content-length", "0"))
        return int(head[0].split()[1]), headers, await self.reader.readexactly(length) if length else b""

    async def handshake(self) -> None:
        status, headers, payload = await self.post(_body(1, "initialize", benchlib.INIT_PARAMS))
        assert status == 200, payload
        self.session = headers["mcp-session-id"]
        status, _, payload = await self.post(_body(0, "notifications/initialized"))
        assert status == 202, payload

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _via_raw_http(endpoint: str, clients: int) -> Load:
    connections = [await RawHttp.open(endpoint) for _ in range(clients)]
    try:
        for connection in connections:
            await connection.handshake()
        body = _body(2, "tools/call", ECHO)
        _echoed(json.loads((await connections[0].post(body))[2]))

        async def call(index: int) -> None:
            status, _, payload = await connections[index].post(body)
            assert status == 200, payload

        return await _measured(clients, call)
    finally:
        for connection in connections:
            await connection.close()


# --- the endpoint through wrk (when installed) ------------------------------------------------------------

WRK = shutil.which("wrk")
WRK_DURATION_S = 5
WRK_TIMEOUT_S = 60.0
_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class WrkRun:
    p50: float
    rps: float


async def _raw_session(endpoint: str) -> str:
    connection = await RawHttp.open(endpoint)
    try:
        await connection.handshake()
        assert connection.session is not None
        return connection.session
    finally:
        await connection.close()


def _via_wrk(endpoint: str, clients: int, script: Path) -> WrkRun:
    """wrk (the load generator of SPEC §13's peer figures) POSTing tools/call on one session; one thread,
    like the Python clients, since runner and server need the box's other core."""
    assert WRK is not None
    session = asyncio.run(_raw_session(endpoint))
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in {**HEADERS, "Mcp-Session-Id": session}.items())
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(_body(2, "tools/call", ECHO).decode())}\n'
                      f"{headers}")
    done = subprocess.run([WRK, "-t1", f"-c{clients}", f"-d{WRK_DURATION_S}s", "--latency",
                           "-s", str(script), endpoint], capture_output=True, text=True, timeout=WRK_TIMEOUT_S,
                          env=benchlib.bench_env())
    assert done.returncode == 0 and "Non-2xx" not in done.stdout and "Socket errors" not in done.stdout, done.stdout
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", done.stdout, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    assert p50 and rps, done.stdout
    return WrkRun(float(p50.group(1)) * _WRK_UNITS[p50.group(2)], float(rps.group(1)))


# --- the benchmark ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    endpoint: str
    run: dict[str, Any]
    argv: tuple[str, ...]
    env: dict[str, str]


@pytest.fixture(scope="module")
def served(installed_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`everything` started by `mcp-reconcile apply` (no gate tests), and how to start it directly."""
    manifests = benchlib.write_manifests(tmp_path_factory.mktemp("gateway") / "manifests", [
        benchlib.server_doc("everything", {"npm": benchlib.EVERYTHING_NPM}, args=["stdio"]),
        benchlib.server_doc("time", {"pypi": benchlib.TIME_PYPI}, desiredState="installed")])
    try:
        applied = benchlib.cli("apply", "-f", str(manifests), "--state-dir", str(installed_state))
        assert applied.code == 0, applied.describe()
        run = benchlib.run_record(installed_state, "everything")
        assert run.get("state") == "running" and run.get("endpoint"), run
        argv, env = benchlib.launch_argv(installed_state, manifests, "everything")
        yield Served(run["endpoint"], run, argv, env)
    finally:
        stopped = benchlib.stop_all(installed_state)
        assert stopped.code == 0, stopped.describe()


def _server_processes(run: dict[str, Any]) -> set[int]:
    server = psutil.Process(run["server_pid"])
    return {server.pid, *(child.pid for child in server.children(recursive=True))}


@pytest.mark.parametrize("clients", sorted(REQUESTS))
def test_forwarded_tools_call_latency_through_the_runner_vs_direct_stdio(served: Served, clients: int,
                                                                         tmp_path: Path) -> None:
    processes = _server_processes(served.run)
    direct = asyncio.run(_direct(served.argv, served.env, clients))
    raw = asyncio.run(_via_raw_http(served.endpoint, clients))
    via_httpx = asyncio.run(_via_httpx(served.endpoint, clients))
    wrk = _via_wrk(served.endpoint, clients, tmp_path / "echo.lua") if WRK else None
    assert _server_processes(served.run) == processes, "the runner spawned server processes per session"
    runner_rss = benchlib.rss_of(served.run["runner_pid"])

    added = raw.p50 - direct.p50
    target = f"added p50 < 100 µs: {benchlib.verdict(added < 100e-6)}"
    if clients == max(REQUESTS):
        rps, by = (wrk.rps, "wrk") if wrk else (raw.rps, "the minimal client")
        target += (f"; >= 2x supergateway's {SUPERGATEWAY_RPS / 1000:.1f}k req/s (SPEC's wrk figure): "
                   f"{rps:,.0f} req/s by {by}: {benchlib.verdict(rps >= 2 * SUPERGATEWAY_RPS)}")
    wrk_note = (f"wrk -c{clients}, {WRK_DURATION_S} s: p50 {benchlib.fmt_s(wrk.p50)} (added "
                f"{benchlib.fmt_s(wrk.p50 - direct.p50)}), {wrk.rps:,.0f} req/s" if wrk else
                "wrk: not installed (apt-get install wrk), skipped")
    benchlib.emit(benchlib.Block(
        what=f"gateway: tools/call echo on everything, {clients} concurrent client(s), {len(raw.latencies)} calls",
        figure=f"p50 {benchlib.fmt_s(raw.p50)} (p95 {benchlib.fmt_s(raw.p95)}), {raw.rps:,.0f} req/s through the "
               "runner endpoint, minimal HTTP/1.1 client",
        baseline=f"p50 {benchlib.fmt_s(direct.p50)} (p95 {benchlib.fmt_s(direct.p95)}), {direct.rps:,.0f} req/s "
                 "direct stdio, raw JSON lines",
        ratio=f"{benchlib.times(raw.p50, direct.p50)}; added p50 {benchlib.fmt_s(added)}; throughput "
              f"{benchlib.times(raw.rps, direct.rps)}",
        target=target,
        notes=[wrk_note,
               f"httpx.AsyncClient per client (keep-alive): p50 {benchlib.fmt_s(via_httpx.p50)} (added "
               f"{benchlib.fmt_s(via_httpx.p50 - direct.p50)}), {via_httpx.rps:,.0f} req/s",
               f"one server process throughout (pid {served.run['server_pid']}); runner RSS after the load "
               f"{benchlib.fmt_mb(runner_rss)}"]))
