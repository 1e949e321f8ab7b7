"""mcptest and protocol.py against real servers from the registries.

npm `@modelcontextprotocol/server-everything` (handshake era) and PyPI `mcp-server-time` (stateless era under
the SDK's auto mode) are installed once for this module. Streamable HTTP endpoints come from server-everything's
own `streamableHttp` mode and from a small server on the `mcp` SDK (stateless era, optionally behind a bearer
token), each started by the test and stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from mcp_reconcile.mcptest import ServerReport, Status, SuiteOptions, Target, run_suite, write_json_report, write_junit
from mcp_reconcile.mcptest.model import AUTH, COMMUNICATION, ERROR_HANDLING, STARTUP
from mcp_reconcile.model import LaunchSpec
from mcp_reconcile.probe import LeanProbe
from mcp_reconcile.protocol import list_tools_at

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EVERYTHING_PKG = "@modelcontextprotocol/server-everything@2026.8.31"
TIME_PKG = "mcp-server-time==2026.10.19"
# Bound on each install (npm ~4 s, uv ~2 s here; cold caches are slower).
INSTALL_TIMEOUT_S = 600.0
# Bound on an HTTP server printing that it listens, and on its exit after SIGTERM.
HTTP_READY_TIMEOUT_S = 60.0
HTTP_EXIT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 10.0
TOKEN = "e2e-secret-token"
# The suite's performance thresholds stay the manifest defaults but p95: other test runs share the 2 cores,
# and a test must not hinge on wall-clock latency.
OPTIONS = SuiteOptions(requests=50, p95_ms=5000.0)

MODERN_SERVER = '''\
"""A stateless-era server on the mcp SDK: stdio, or Streamable HTTP on PORT, optionally behind a bearer token."""
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("modern-e2e")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if sys.argv[1] == "stdio":
    server.run()
else:
    import uvicorn

    port, token = int(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "")
    app = server.streamable_http_app()

    async def guarded(scope, receive, send):
        if token and scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != (
                b"Bearer " + token.encode()):
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="info")
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Servers:
    everything: LaunchSpec
    everything_js: Path
    time: LaunchSpec
    modern_script: Path


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else (shutil.which("uv") or "uv")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Servers:
    """Both reference servers installed side by side (npm prefix, uv venv), in parallel."""
    root = tmp_path_factory.mktemp("mcptest-e2e")
    npm = subprocess.Popen(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root / "npm"),
                            EVERYTHING_PKG], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    venv = root / "venv"
    uv = subprocess.run([_uv(), "venv", "-q", str(venv)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert uv.returncode == 0, uv.stderr
    uv = subprocess.run([_uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), TIME_PKG],
                        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert uv.returncode == 0, uv.stderr
    npm_out, _ = npm.communicate(timeout=INSTALL_TIMEOUT_S)
    assert npm.returncode == 0, npm_out.decode(errors="replace")
    script = root / "modern_server.py"
    script.write_text(MODERN_SERVER)
    js = root / "npm" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    env = dict(os.environ)   # a LaunchSpec's env is the whole environment of the server
    return Servers(everything=LaunchSpec(("node", str(js)), env=env), everything_js=js,
                   time=LaunchSpec((str(venv / "bin" / "mcp-server-time"), "--local-timezone", "UTC"), env=env),
                   modern_script=script)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HttpServer:
    process: subprocess.Popen[bytes]
    url: str
    output: list[str]


@contextlib.contextmanager
def http_server(argv: Sequence[str], *, port: int, ready: str, env: Mapping[str, str] | None = None
                ) -> Iterator[HttpServer]:
    """Start an HTTP MCP server in its own group; ready once its output shows `ready`; stop the whole group."""
    process = subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    output: list[str] = []
    is_ready = threading.Event()

    def drain() -> None:  # reads until EOF, so the server never blocks on a full pipe
        assert process.stdout is not None
        for raw in process.stdout:
            output.append(raw.decode(errors="replace"))
            if ready in output[-1]:
                is_ready.set()
        is_ready.set()  # EOF: the server died; the poll below says so

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert is_ready.wait(HTTP_READY_TIMEOUT_S) and process.poll() is None, f"not ready: {''.join(output)}"
        yield HttpServer(process, f"http://127.0.0.1:{port}/mcp", output)
    finally:
        stop_group(process)
        reader.join(HTTP_EXIT_TIMEOUT_S)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(HTTP_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(HTTP_EXIT_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the server forked


def everything_http(servers: Servers, port: int) -> contextlib.AbstractContextManager[HttpServer]:
    return http_server(["node", str(servers.everything_js), "streamableHttp"], port=port, env={"PORT": str(port)},
                       ready=f"listening on port {port}")


def modern_http(servers: Servers, port: int, token: str = "") -> contextlib.AbstractContextManager[HttpServer]:
    return http_server([sys.executable, str(servers.modern_script), "http", str(port), token], port=port,
                       ready="Uvicorn running on")


def assert_every_check_passes(report: ServerReport) -> None:
    """Pass everywhere; error handling may warn (the reference servers stay silent on bad lines, SPEC 8)."""
    problems = {c.name: c.message for c in report.checks
                if c.status is not Status.passed
                and not (c.name == ERROR_HANDLING and c.status is Status.warned)
                and not (c.name == AUTH and c.status is Status.skipped)}
    assert report.passed and not problems, problems


REFERENCE = [
    pytest.param("everything", "handshake", {
        "expectTools": ["echo", "get-sum"],
        "calls": [{"tool": "get-sum", "arguments": {"a": 1, "b": 2}, "expect": {"contains": "3"}},
                  {"tool": "echo", "arguments": {"message": "hi"}, "expect": {"contains": "hi"}},
                  {"tool": "get-sum", "arguments": {"a": "x"}, "expect": {"isError": True}}],
    }, id="server-everything in the handshake era"),
    pytest.param("time", "stateless", {
        "expectTools": ["get_current_time", "convert_time"],
        "calls": [{"tool": "get_current_time", "arguments": {"timezone": "UTC"}, "expect": {"contains": "UTC"}},
                  {"tool": "get_current_time", "arguments": {"timezone": "UTC"},
                   "expect": {"jsonschema": {"type": "object", "required": ["timezone", "datetime"]}}}],
    }, id="mcp-server-time in the stateless era"),
]


@pytest.mark.parametrize(("name", "era", "tests"), REFERENCE)
async def test_a_reference_server_passes_every_check_and_reports_its_era(servers: Servers, tmp_path: Path,
                                                                         name: str, era: str, tests: dict) -> None:
    launch = servers.everything if name == "everything" else servers.time
    report = await run_suite(Target(name, launch, tests), SuiteOptions(requests=50, p95_ms=5000.0,
                                                                       log_dir=tmp_path / "logs"))
    assert_every_check_passes(report)
    assert report.era == era
    assert report.check(STARTUP).details["era"] == era
    assert report.protocol_version in (MODERN_PROTOCOL_VERSIONS if era == "stateless" else HANDSHAKE_PROTOCOL_VERSIONS)
    assert [c.name for c in report.checks][-len(tests["calls"]):] == [
        f"call[{i}] {call['tool']}" for i, call in enumerate(tests["calls"])]
    assert (tmp_path / "logs" / f"{name}.session.stderr.log").exists()

    write_junit([report], tmp_path / "junit.xml")
    write_json_report([report], tmp_path / "reports" / "test_report.json")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert (suite.get("name"), suite.get("failures"), suite.get("tests")) == (name, "0", str(len(report.checks)))


async def test_probes_of_server_everythings_own_endpoint_reuse_a_session_and_reconnect(servers: Servers) -> None:
    port = free_port()
    session = LeanProbe(f"http://127.0.0.1:{port}/mcp")
    try:
        with everything_http(servers, port) as server:
            first = await session.probe(PROBE_TIMEOUT_S)
            second = await session.probe(PROBE_TIMEOUT_S)
            assert "echo" in await list_tools_at(server.url)
        down = await session.probe(PROBE_TIMEOUT_S)
        with everything_http(servers, port):
            back = await session.probe(PROBE_TIMEOUT_S)
    finally:
        await session.aclose()
    for result in (first, second, back):
        assert result.ok, result
        assert result.era == "handshake" and result.latency_ms is not None and result.latency_ms > 0
    assert not down.ok and down.error and down.latency_ms is None
    # one MCP session served both probes: server-everything logs each new session it creates
    sessions = [line for line in server.output if "Session initialized" in line]
    assert len(sessions) == 2, server.output  # the probe session and list_tools_at's own


async def test_a_stateless_endpoint_is_probed_with_server_discover_and_guarded_by_its_token(servers: Servers) -> None:
    port = free_port()
    with modern_http(servers, port, TOKEN) as server:
        with_token = LeanProbe(server.url, token=TOKEN)
        without = LeanProbe(server.url)
        try:
            ok = await with_token.probe(PROBE_TIMEOUT_S)
            again = await with_token.probe(PROBE_TIMEOUT_S)
            refused = await without.probe(PROBE_TIMEOUT_S)
        finally:
            await with_token.aclose()
            await without.aclose()
        assert await list_tools_at(server.url, token=TOKEN) == ["add"]
    assert ok.ok and again.ok, (ok, again)
    assert (ok.era, ok.protocol_version) == ("stateless", "2026-07-28")
    assert not refused.ok and "HTTP 401" in (refused.error or ""), refused


async def test_with_an_endpoint_and_a_token_the_session_checks_use_the_endpoint_and_auth_runs(servers: Servers) -> None:
    port = free_port()
    launch = LaunchSpec((sys.executable, str(servers.modern_script), "stdio"), env=dict(os.environ))
    tests = {"expectTools": ["add"],
             "calls": [{"tool": "add", "arguments": {"a": 2, "b": 3}, "expect": {"contains": "5"}}]}
    with modern_http(servers, port, TOKEN) as server:
        report = await run_suite(Target("modern", launch, tests, endpoint=server.url, token=TOKEN), OPTIONS)
        requests_seen = sum("POST /mcp" in line for line in server.output)
    assert_every_check_passes(report)
    assert report.check(AUTH).status is Status.passed
    assert report.check(AUTH).message == "401 without a token and with a wrong one; the token opens a session"
    assert report.era == "stateless"
    assert requests_seen >= OPTIONS.requests  # performance went through the endpoint
    assert report.check(COMMUNICATION).details["tool_names"] == ["add"]


async def test_an_endpoint_that_ignores_the_token_fails_auth(servers: Servers) -> None:
    port = free_port()
    launch = LaunchSpec((sys.executable, str(servers.modern_script), "stdio"), env=dict(os.environ))
    with modern_http(servers, port) as server:  # no token guard
        report = await run_suite(Target("open", launch, {}, endpoint=server.url, token=TOKEN),
                                 SuiteOptions(requests=5, p95_ms=5000.0))
    auth = report.check(AUTH)
    assert auth.status is Status.failed
    assert auth.message.startswith("expected 401 without a token, got ")
    assert "expected 401 with a wrong token, got " in auth.message
    assert not report.passed
