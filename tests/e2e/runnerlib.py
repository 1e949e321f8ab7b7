"""The runner harness: real runner processes over fault servers, and the HTTP helpers to talk to them.

Shared by the e2e tests of the runner's endpoint (test_runner.py, test_sessions_isolated.py, test_mrtr.py,
test_session_stream.py, ...). Runners are started with proc.spawn_runner; waits are bounded (the runner's exit,
pidfds, the run record reaching a state); the `runners` fixture stops every runner and reaps every server group
it recorded, so a failing test leaves no process behind.
"""


from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from mcp_reconcile import proc
from mcp_reconcile.store import RunRecord, StateDir

SERVERS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
WAIT_S = 30.0  # bound on every wait for an event: generous, since other test runs share the 2 cores
EVERYTHING_PKG = "@modelcontextprotocol/server-everything@2026.8.31"
TIME_PKG = "mcp-server-time==2026.10.19"
DISCOVER_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                 "io.modelcontextprotocol/clientCapabilities": {}}


def fault_server(name: str) -> list[str]:
    return [sys.executable, "-u", str(SERVERS_DIR / f"{name}.py")]


def wait_until(predicate: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition") -> Any:
    """Poll a condition that has no event of its own (a record's state), with a bound."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        time.sleep(proc.POLL_INTERVAL_S)
    return value


def wait_gone(pid: int, timeout_s: float = WAIT_S) -> bool:
    """Wait for any pid (child or not) to exit, on its pidfd."""
    return proc.wait_pid_gone(pid, timeout_s)


def is_gone(pid: int) -> bool:
    """Dead for good: no such process, or a zombie waiting for its reaper (pid 1 here reaps late)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- runners -------------------------------------------------------------------------------------------------

@dataclass
class Runner:
    popen: subprocess.Popen[bytes]
    state: StateDir
    name: str
    log: Path

    def record(self) -> RunRecord:
        return self.state.read_run(self.name) or {}

    def wait_state(self, *states: str) -> RunRecord:
        try:
            return wait_until(lambda: (r := self.record()).get("state") in states and r,
                              what=f"run record state in {states}")
        except TimeoutError:
            raise AssertionError(f"runner log:\n{self.log.read_text(errors='replace')}") from None

    def wait_exit(self) -> int:
        return self.popen.wait(WAIT_S)

    @property
    def url(self) -> str:
        return str(self.record()["endpoint"])

    @property
    def port(self) -> int:
        return int(self.record()["port"] or 0)

    @property
    def server_pid(self) -> int:
        return int(self.record()["server_pid"] or 0)


@dataclass
class Runners:
    root: Path
    started: list[Runner] = field(default_factory=list)

    def start(self, command: Sequence[str], *, name: str = "srv", args: Sequence[str] = (),
              env: dict[str, str] | None = None, wait: bool = True) -> Runner:
        state = StateDir(self.root / "state")
        log = state.root / "logs" / f"{name}.runner.log"
        argv = [sys.executable, "-m", "mcp_reconcile.runner", "--state-dir", str(state.root), "--name", name,
                "--generation", "g1", *args, "--", *command]
        popen = proc.spawn_runner(argv, {**os.environ, **(env or {})}, log_path=log)
        runner = Runner(popen, state, name, log)
        self.started.append(runner)
        if wait:
            runner.wait_state("running", "exited")
        return runner

    def cleanup(self) -> None:
        for runner in self.started:
            proc.stop_runner(runner.popen, timeout_s=WAIT_S)
            pgid = runner.record().get("server_pgid")
            if pgid:
                proc.kill_group_and_wait(pgid, timeout_s=WAIT_S)


def post(runner: Runner, message: dict[str, Any], *, session: str | None = None,
         headers: dict[str, str] | None = None, timeout_s: float = WAIT_S) -> httpx.Response:
    all_headers = {"Accept": "application/json, text/event-stream", **(headers or {})}
    if session:
        all_headers["Mcp-Session-Id"] = session
    return httpx.post(runner.url, json=message, headers=all_headers, timeout=timeout_s)


def initialize(runner: Runner, version: str = "2025-06-18", *, capabilities: dict[str, Any] | None = None,
               **kwargs: Any) -> httpx.Response:
    return post(runner, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": capabilities or {},
        "clientInfo": {"name": "test", "version": "1"}}}, **kwargs)


def modern(method: str, version: str = "2026-07-28") -> dict[str, str]:
    """The headers a 2026-07-28 client sends with a request (they mirror the body)."""
    return {"MCP-Protocol-Version": version, "Mcp-Method": method}


def rpc(method: str, request_id: Any = 1, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


# --- the runner over fault servers (no registry) --------------------------------------------------------------


# Bound on a runner_endpoint() runner reaching "running" (cold npx servers, a loaded box).
ENDPOINT_WAIT_S = 60.0


@contextmanager
def runner_endpoint(command: Sequence[str], tmp_path: Path, *, args: Sequence[str] = ()) -> Iterator[str]:
    """A real runner over `command` (stdio); yields its endpoint URL; stops it and reaps its servers after."""
    state = StateDir(tmp_path / "state")
    argv = [sys.executable, "-m", "mcp_reconcile.runner", "--state-dir", str(state.root), "--name", "srv",
            "--generation", "g1", *args, "--", *command]
    log = state.root / "logs" / "srv.runner.log"
    runner = proc.spawn_runner(argv, dict(os.environ), log_path=log)
    try:
        deadline = time.monotonic() + ENDPOINT_WAIT_S
        while (record := state.read_run("srv") or {}).get("state") not in ("running", "exited"):
            assert runner.poll() is None, f"runner exited {runner.returncode}:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "runner not serving in time"
            time.sleep(proc.POLL_INTERVAL_S)
        assert record["state"] == "running", log.read_text(errors="replace")
        yield str(record["endpoint"])
    finally:
        proc.stop_runner(runner, timeout_s=ENDPOINT_WAIT_S)
        pgid = (state.read_run("srv") or {}).get("server_pgid")
        if pgid:
            proc.kill_group_and_wait(pgid, timeout_s=ENDPOINT_WAIT_S)
