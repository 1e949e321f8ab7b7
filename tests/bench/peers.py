"""The gateway benchmark's peers, measured side by side with the runner (SPEC §13 "Gateway"): npm `supergateway`
in front of the same server-everything, and a trivial HTTP server (trivial_http.py) as the floor.

supergateway is installed under `<repo>/.cache/bench/supergateway-VERSION` (`MCP_RECONCILE_TEST_CACHE` moves
`.cache`) with tests/e2e/conformance.py's installer: idempotent (a marker written last), a file lock against
concurrent runs, bounded. Each peer runs in a session of its own with the bench tag in its environment; leaving
the context manager kills its process group (supergateway's stdio children are in it) and reaps it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import benchlib
import psutil

SUPERGATEWAY_VERSION = "4.0.0"      # `latest` on npm (2026-09-21); SPEC §13's earlier peer figure is of 4.0.0
TRIVIAL_HTTP = Path(__file__).with_name("trivial_http.py")
INSTALL_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 30.0              # a peer's port accepting
STOP_TIMEOUT_S = 10.0               # SIGTERM to exit, then SIGKILL


def _conformance() -> ModuleType:
    """tests/e2e/conformance.py, for its npm installer (tests/e2e is on pytest's pythonpath)."""
    import conformance

    return conformance


def ensure_supergateway(version: str = SUPERGATEWAY_VERSION) -> Path:
    """supergateway `version` under .cache/bench (installed once); returns its CLI script."""
    conformance = _conformance()
    cache = conformance.CACHE_DIR.parent / "bench"
    prefix = cache / f"supergateway-{version}"
    cli = prefix / "node_modules" / "supergateway" / "dist" / "index.js"
    if conformance._installed(prefix) and cli.exists():
        return cli
    with conformance._install_lock(cache, INSTALL_TIMEOUT_S):
        if not (conformance._installed(prefix) and cli.exists()):
            package = f"supergateway@{version}"
            conformance._npm_install(prefix, [package], package, INSTALL_TIMEOUT_S)
            assert cli.exists(), f"{package} has no {cli.relative_to(prefix)}"
            conformance._mark(prefix, {"package": package})
    return cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Peer:
    endpoint: str
    pid: int


@contextlib.contextmanager
def _serve(argv: Sequence[str], port: int, path: str, env: dict[str, str] | None = None) -> Iterator[Peer]:
    process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=benchlib.bench_env(env), start_new_session=True)
    try:
        benchlib.wait_until(lambda: process.poll() is not None or _accepting(port), timeout_s=READY_TIMEOUT_S,
                            what=f"port {port} of {argv[:3]}", interval_s=0.02)
        assert process.poll() is None, f"{shlex.join(argv)} exited with {process.returncode}"
        yield Peer(f"http://127.0.0.1:{port}{path}", process.pid)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(STOP_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)   # the group's stragglers (stdio children)


@contextlib.contextmanager
def supergateway(server_argv: Sequence[str], server_env: dict[str, str]) -> Iterator[Peer]:
    """`supergateway --stdio SERVER --outputTransport streamableHttp --stateful` (one child per session),
    `--logLevel none` so that it is not charged for logging every message to a pipe."""
    node = shutil.which("node")
    assert node, "node is not on PATH"
    port = free_port()
    argv = [node, str(ensure_supergateway()), "--stdio", shlex.join(server_argv), "--outputTransport",
            "streamableHttp", "--stateful", "--port", str(port), "--logLevel", "none"]
    with _serve(argv, port, "/mcp", server_env) as peer:
        yield peer


@contextlib.contextmanager
def trivial_http() -> Iterator[Peer]:
    port = free_port()
    with _serve([benchlib.PYTHON, str(TRIVIAL_HTTP), str(port)], port, "/mcp") as peer:
        yield peer


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_rss(pid: int) -> tuple[int, int]:
    """RSS summed over a process and its descendants, and how many processes that is."""
    total, count = 0, 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
            count += 1
    return total, count
