"""`mcp-reconcile connect` start-up: a client launches one bridge per session, so its start is the session's.

Two figures against a bare `python -c pass` measured interleaved in the same run: spawn -> exit on an empty
stdin (imports and the state dir read), and spawn -> the first answer on stdout (an `initialize` forwarded to a
loopback endpoint: a small stdlib HTTP server here, so only the bridge is measured, not an MCP server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import benchlib
import psutil
import pytest

pytestmark = pytest.mark.bench

RUNS = 15
MCP_RECONCILE = str(Path(sys.executable).parent / "mcp-reconcile")   # the console script clients launch
# Bound on one bridge run (it exits at once on stdin's end; generous for a loaded box).
RUN_TIMEOUT_S = 30.0
TARGET_S = 0.2


class _Initialize(BaseHTTPRequestHandler):
    """Answers every POST as an initialize would be, with a session id; DELETE with 204."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "bench", "version": "0"}}})
        self.send_response(200 if "id" in body else 202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Mcp-Session-Id", "bench")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self) -> None:
        self.send_response(204)
        self.end_headers()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir whose `bench` server is at a loopback endpoint that answers initialize."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Initialize)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("connect")
    (root / "ports.json").write_text(json.dumps({"bench": server.server_address[1]}))
    yield root
    server.shutdown()
    server.server_close()


def _spawn_to_exit(state: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([MCP_RECONCILE, "connect", "bench", "--state-dir", str(state)], capture_output=True,
                          timeout=RUN_TIMEOUT_S, env=benchlib.bench_env(), stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr.decode()
    return wall


def _spawn_to_first_answer(state: Path, rss: list[int]) -> float:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": benchlib.INIT_PARAMS}
    started = time.perf_counter()
    bridge = subprocess.Popen([MCP_RECONCILE, "connect", "bench", "--state-dir", str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=benchlib.bench_env())
    assert bridge.stdin is not None and bridge.stdout is not None
    bridge.stdin.write(json.dumps(initialize).encode() + b"\n")
    bridge.stdin.flush()
    answer = bridge.stdout.readline()
    wall = time.perf_counter() - started
    rss.append(psutil.Process(bridge.pid).memory_info().rss)
    bridge.stdin.close()
    assert bridge.wait(RUN_TIMEOUT_S) == 0
    assert json.loads(answer)["result"]["serverInfo"]["name"] == "bench", answer
    return wall


def test_connect_starts_fast_compared_with_a_bare_interpreter(state_dir: Path) -> None:
    _spawn_to_exit(state_dir)   # warm the page cache and .pyc files
    exits, answers, floors, rss = [], [], [], []
    for _ in range(RUNS):   # interleaved, so all three see the same load on the box
        exits.append(_spawn_to_exit(state_dir))
        answers.append(_spawn_to_first_answer(state_dir, rss))
        floors.append(benchlib.python_pass_s())
    exit_s, answer_s, floor_s = (benchlib.median(v) for v in (exits, answers, floors))
    benchlib.emit(benchlib.Block(
        what="connect: `mcp-reconcile connect NAME` start-up (spawn -> exit on an empty stdin)",
        figure=f"{benchlib.fmt_s(exit_s)} median of {RUNS} (min {benchlib.fmt_s(min(exits))})",
        baseline=f"{benchlib.fmt_s(floor_s)} bare `python -c pass`",
        ratio=f"{benchlib.times(exit_s, floor_s)} (cost above the interpreter: {benchlib.fmt_s(exit_s - floor_s)})",
        target=f"< {TARGET_S:g} s: {benchlib.verdict(exit_s < TARGET_S)}",
        notes=[f"spawn -> first answer (initialize forwarded to a loopback endpoint): "
               f"{benchlib.fmt_s(answer_s)} median, {benchlib.times(answer_s, floor_s)} the baseline",
               f"bridge RSS after its first answer: {benchlib.fmt_mb(benchlib.median(rss))} median"]))
