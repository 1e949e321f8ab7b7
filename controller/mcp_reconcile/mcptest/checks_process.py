"""Checks about the server's process: startup, shutdown, restart.

Each of them owns a process spawned through `raw.ServerProcess`: startup measures spawn to the
first answer of `server/discover` or `initialize`; shutdown closes stdin and wants an exit within
the stop timeout and no process left in the server's group; restart starts a fresh process after
the shutdown and wants it ready again.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import anyio
import psutil

from mcp_reconcile.mcptest.model import RESTART, SHUTDOWN, STARTUP, STATELESS, CheckResult, Settings, Status
from mcp_reconcile.mcptest.raw import ServerProcess
from mcp_reconcile.mcptest.sdk import Session, SessionRun, describe_error, run_session, stdio_client
from mcp_reconcile.model import LaunchSpec
from mcp_reconcile.protocol import cheap_request

# How many leftover processes a shutdown failure names.
NAMED_LEFTOVERS = 5


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def spawn_failed(name: str, launch: LaunchSpec, exc: OSError) -> CheckResult:
    return CheckResult(name, Status.failed, f"expected the server to start; spawning {launch.argv[0]!r} failed: "
                       f"{exc}", 0.0, {"argv": list(launch.argv)})


def startup_passed(proc: ServerProcess, session: Session) -> CheckResult:
    """Spawn to the first answer of the era's opening request."""
    ms = (session.connected_at - proc.started_at) * 1000
    opening = "server/discover" if session.era == STATELESS else "initialize"
    info = session.server_info or {}
    who = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    details = {"startup_ms": ms, "era": session.era, "protocol_version": session.protocol_version,
               "server_info": info}
    return CheckResult(STARTUP, Status.passed, f"{who} answered {opening} {ms:.0f} ms after spawn: era "
                       f"{session.era}, protocol {session.protocol_version}", ms, details)


async def startup_failed(proc: ServerProcess, run: SessionRun, settings: Settings) -> CheckResult:
    """Why no session came up; says whether the server exited or still runs without answering."""
    state = await proc.describe_exit()
    return CheckResult(STARTUP, Status.failed, f"expected an answer to server/discover or initialize within "
                       f"{settings.startup_timeout_s:g} s of spawn; got {run.error}; the server {state}",
                       elapsed_ms(proc.started_at), {"error": run.error, "server": state})


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# How much of a leftover's command line a shutdown failure shows.
LEFTOVER_CMDLINE_CHARS = 120


def _name(process: psutil.Process) -> str:
    """`pid cmdline` with directories dropped from paths, so the program and its script both fit."""
    try:
        words = [Path(word).name if word.startswith("/") else word for word in process.cmdline()]
    except psutil.Error:
        return str(process.pid)
    return f"{process.pid} {' '.join(words)[:LEFTOVER_CMDLINE_CHARS]}"


async def check_shutdown(proc: ServerProcess, *, timeout_s: float) -> CheckResult:
    """Close stdin: the server must exit within `timeout_s` and leave nothing in its group.

    Whatever happens, the process group is stopped afterwards, and descendants that left the
    group (a new session of their own) are killed too, so the suite leaves no orphan.
    """
    started = time.monotonic()
    before = _descendants(proc.pid)
    already = proc.returncode is not None
    proc.close_stdin()
    code = await proc.wait_exit(timeout_s)
    exit_ms = elapsed_ms(started)
    in_group = {pid: p for pid in proc.survivors() if (p := _process(pid)) is not None} if code is not None else {}
    left = list(in_group.values()) + [p for p in before if p.pid not in in_group and _alive(p)]
    named = [_name(p) for p in left[:NAMED_LEFTOVERS]]
    await proc.stop(0.0)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    details = {"exit_code": code, "exit_ms": exit_ms if code is not None else None,
               "timeout_s": timeout_s, "left_behind": named}
    if code is None:
        return CheckResult(SHUTDOWN, Status.failed, f"expected an exit within {timeout_s:g} s of stdin closing; "
                           f"the server was still running (stopped it with SIGTERM/SIGKILL)", exit_ms, details)
    if left:
        names = ", ".join(named)
        return CheckResult(SHUTDOWN, Status.failed, f"expected no process left after the server exits; it exited "
                           f"with code {code} {exit_ms:.0f} ms after stdin closed but left {len(left)} behind: "
                           f"{names}", exit_ms, details)
    exited = (f"had already exited with code {code} before its stdin closed" if already else
              f"exited with code {code} {exit_ms:.0f} ms after stdin closed (limit {timeout_s:g} s)")
    return CheckResult(SHUTDOWN, Status.passed, f"{exited}; nothing left in its process group", exit_ms, details)


async def check_restart(launch: LaunchSpec, settings: Settings, *, stderr_path: Path) -> CheckResult:
    """After the shutdown, a fresh process must come up and answer the era's cheap request."""
    started = time.monotonic()
    try:
        proc = await ServerProcess.start(launch, stderr_path=stderr_path)
    except OSError as exc:
        return spawn_failed(RESTART, launch, exc)
    answered: list[float] = []
    errors: list[str] = []

    async def body(session: Session) -> None:
        try:
            with anyio.fail_after(settings.request_timeout_s):
                await cheap_request(session.client)
        except Exception as exc:
            errors.append(describe_error(exc, timeout_s=settings.request_timeout_s))
            return
        answered.append(time.monotonic())

    try:
        run = await run_session(stdio_client(proc), connect_timeout_s=settings.startup_timeout_s, body=body)
    finally:
        await proc.stop(settings.shutdown_timeout_s)
    if run.session is None:
        return CheckResult(RESTART, Status.failed, f"expected the server to be ready again after a restart within "
                           f"{settings.startup_timeout_s:g} s; got {run.error}", elapsed_ms(started))
    what = "server/discover" if run.session.era == STATELESS else "ping"
    if not answered:
        return CheckResult(RESTART, Status.failed, f"expected the restarted server to answer {what}; got {errors[0]}",
                           elapsed_ms(started))
    ready_ms = (answered[0] - proc.started_at) * 1000
    return CheckResult(RESTART, Status.passed, f"started again and answered {what} {ready_ms:.0f} ms after spawn",
                       elapsed_ms(started), {"ready_ms": ready_ms, "era": run.session.era})
