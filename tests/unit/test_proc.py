"""proc.py: process groups, the stop sequence, PR_SET_PDEATHSIG, identity, runner and group helpers.

Deaths are proven by events, never by sleeps: a pidfd that turns readable (proc.pidfd_wait) or the loopback
liveness socket of the fault servers in tests/fixtures/servers/. Every wait has a bound, and every test
kills what it started even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import liveness  # tests/fixtures/servers is on pytest's pythonpath (pyproject)
import psutil
import pytest

from mcp_reconcile import proc

SERVERS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
WAIT_S = 15.0  # bound on every wait for an event: generous, since other test runs share the 2 cores



def fault_server(name: str) -> list[str]:
    return [sys.executable, "-u", str(SERVERS_DIR / f"{name}.py")]


def is_gone(pid: int) -> bool:
    """Dead for good: no such process, or a zombie waiting for its reaper (pid 1 here reaps late)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate: Callable[[], object], timeout_s: float = WAIT_S) -> None:
    """Poll a condition that has no event of its own (a file's content), with a bound."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        time.sleep(proc.POLL_INTERVAL_S)


def wait_gone(pid: int, timeout_s: float = WAIT_S) -> bool:
    """Wait for any pid (child or not) to exit, on its pidfd."""
    return proc.wait_pid_gone(pid, timeout_s)


@pytest.fixture
def pgids() -> Iterator[list[int]]:
    """Process groups a test started; SIGKILLed at teardown whatever happened."""
    started: list[int] = []
    yield started
    for pgid in started:
        proc.signal_group(pgid, signal.SIGKILL)


@pytest.fixture
def listener() -> Iterator[object]:
    with liveness.LivenessListener() as live:
        yield live


# --- run_command -------------------------------------------------------------------------------------------

def test_run_command_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    result = asyncio.run(proc.run_command(["sh", "-c", script], timeout_s=3.0))
    grandchild = int(pid_file.read_text())
    assert result.timed_out
    assert wait_gone(grandchild)
    assert is_gone(grandchild)


# --- spawn_server / stop_server -----------------------------------------------------------------------------

async def _request(server: proc.ServerProcess, message: dict[str, object]) -> dict[str, object]:
    assert server.process.stdin is not None and server.process.stdout is not None
    server.process.stdin.write(json.dumps(message).encode() + b"\n")
    await server.process.stdin.drain()
    return json.loads(await asyncio.wait_for(server.process.stdout.readline(), WAIT_S))


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}}


def test_spawn_server_puts_the_server_in_its_own_group_with_stderr_in_the_log(
        tmp_path: Path, pgids: list[int]) -> None:
    log = tmp_path / "logs" / "srv.log"

    async def scenario() -> tuple[int, int | None]:
        server = await proc.spawn_server(fault_server("well_behaved"), dict(os.environ), None, log)
        pgids.append(server.pgid)
        assert os.getpgid(server.pid) == server.pid == server.pgid
        assert (await _request(server, INITIALIZE))["id"] == 1
        return server.pid, await proc.stop_server(server, stop_timeout_s=WAIT_S)

    _, returncode = asyncio.run(scenario())
    assert returncode == 0  # exited by itself once stdin closed
    assert "stdin closed, exiting" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600


def test_stopping_a_forking_server_leaves_no_grandchild(tmp_path: Path, pgids: list[int], listener) -> None:
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, **listener.env(), "CHILD_PID_FILE": str(pid_file)}

    async def scenario() -> tuple[int, list[object]]:
        server = await proc.spawn_server(fault_server("forks_child"), env, None, tmp_path / "srv.log")
        pgids.append(server.pgid)
        await _request(server, INITIALIZE)  # the pid file exists once initialize is answered
        # both connected (the server first, then its grandchild): both are surely running
        conns = [await asyncio.to_thread(listener.accept, WAIT_S) for _ in range(2)]
        await proc.stop_server(server, stop_timeout_s=WAIT_S)
        return int(pid_file.read_text()), conns

    grandchild, (server_conn, child_conn) = asyncio.run(scenario())
    assert listener.wait_closed(server_conn, WAIT_S)
    assert listener.wait_closed(child_conn, WAIT_S)
    assert is_gone(grandchild)


def test_a_server_that_ignores_stdin_close_and_sigterm_is_killed(
        tmp_path: Path, pgids: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "SIGTERM_GRACE_S", 0.5)
    log = tmp_path / "srv.log"

    async def scenario() -> int | None:
        server = await proc.spawn_server(fault_server("ignore_sigterm"), dict(os.environ), None, log)
        pgids.append(server.pgid)
        await _request(server, INITIALIZE)  # its SIGTERM handler is installed by now
        return await proc.stop_server(server, stop_timeout_s=0.5)

    assert asyncio.run(scenario()) == -signal.SIGKILL
    assert "ignoring SIGTERM" in log.read_text()


def test_kill_9_of_the_spawning_parent_makes_the_server_die_by_pdeathsig(tmp_path: Path, listener) -> None:
    # the server survives stdin EOF, so only the parent-death signal can end it when its parent dies
    parent_script = textwrap.dedent(f"""
        import asyncio, os, sys
        from mcp_reconcile import proc
        async def main():
            server = await proc.spawn_server({fault_server("ignore_stdin_close")!r}, dict(os.environ), None,
                                             {str(tmp_path / "srv.log")!r})
            print(server.pid, flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_script], env={**os.environ, **listener.env()},
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        conn = listener.accept(WAIT_S)
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(WAIT_S)
        assert listener.wait_closed(conn, WAIT_S)
        assert wait_gone(server_pid) and is_gone(server_pid)
    finally:
        proc.signal_group(parent.pid, signal.SIGKILL)
        parent.kill()
        parent.wait(WAIT_S)


def test_the_log_rotates_by_size_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "srv.log"
    log = proc.RotatingLog(path, max_bytes=100, backups=2)
    for index in range(5):
        log.write(bytes([ord("a") + index]) * 60)
    log.close()
    assert path.read_bytes() == b"e" * 60
    assert Path(f"{path}.1").read_bytes() == b"d" * 60
    assert Path(f"{path}.2").read_bytes() == b"c" * 60
    assert not Path(f"{path}.3").exists()


def test_a_reopened_log_continues_counting_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "srv.log"
    path.write_bytes(b"x" * 90)
    log = proc.RotatingLog(path, max_bytes=100, backups=1)
    log.write(b"y" * 20)
    log.close()
    assert path.read_bytes() == b"y" * 20
    assert Path(f"{path}.1").read_bytes() == b"x" * 90


def test_two_writers_of_one_log_follow_each_others_rotation_and_lose_no_line(tmp_path: Path) -> None:
    path = tmp_path / "srv.log"
    loud, quiet = (proc.RotatingLog(path, max_bytes=100, backups=5) for _ in range(2))
    quiet.write(b"q1\n")
    for _ in range(4):
        loud.write(b"L" * 59 + b"\n")   # rotates the file under the quiet writer's feet
    quiet.write(b"q2\n")
    loud.close()
    quiet.close()
    text = b"".join(p.read_bytes() for p in tmp_path.glob("srv.log*"))
    assert text.count(b"q1\n") == 1 and text.count(b"q2\n") == 1 and text.count(b"L" * 59) == 4
    assert path.read_bytes().endswith(b"q2\n")   # the quiet writer writes to the current file, not a backup


# --- identity ----------------------------------------------------------------------------------------------

def test_own_create_time_and_cmdline_equal_what_psutil_reports() -> None:
    me = psutil.Process()
    assert proc.own_create_time() == me.create_time()
    assert proc.own_cmdline() == me.cmdline()


def test_identity_check_rejects_a_pid_whose_create_time_or_cmdline_differs() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        # right after a vfork+exec the new cmdline is not yet visible in /proc for a moment
        wait_until(lambda: (proc.process_identity(sleeper.pid) or (0, []))[1])
        identity = proc.process_identity(sleeper.pid)
        assert identity is not None
        create_time, cmdline = identity
        assert cmdline == ["sleep", "300"]
        assert proc.is_same_process(sleeper.pid, create_time, cmdline)
        assert not proc.is_same_process(sleeper.pid, create_time + 5.0, cmdline)
        assert not proc.is_same_process(sleeper.pid, create_time - 5.0, cmdline)
        assert not proc.is_same_process(sleeper.pid, create_time, ["sleep", "301"])
    finally:
        sleeper.kill()
        sleeper.wait(WAIT_S)
    assert proc.process_identity(sleeper.pid) is None
    assert not proc.is_same_process(sleeper.pid, create_time, cmdline)


# --- runners and leftover groups -----------------------------------------------------------------------------

RUNNER_LIKE = textwrap.dedent("""
    import signal, sys, time
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        signal.pause()
""")


def _runner_like(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    log = tmp_path / "logs" / "x.runner.log"
    runner = proc.spawn_runner([sys.executable, "-u", "-c", RUNNER_LIKE, mode], dict(os.environ), log_path=log)
    wait_until(lambda: log.exists() and log.read_bytes())  # "ready": its SIGTERM disposition is set
    return runner


def test_spawn_runner_starts_a_session_of_its_own_and_stop_runner_reaps_it(tmp_path: Path) -> None:
    runner = _runner_like(tmp_path, "default")
    try:
        assert os.getsid(runner.pid) == runner.pid
        assert (tmp_path / "logs" / "x.runner.log").read_bytes() == b"ready\n"
        assert proc.stop_runner(runner, timeout_s=WAIT_S)
        assert runner.returncode == -signal.SIGTERM
    finally:
        runner.kill()
        runner.wait(WAIT_S)


def test_stop_runner_kills_a_runner_that_overstays_and_says_so(tmp_path: Path) -> None:
    runner = _runner_like(tmp_path, "ignore")
    try:
        assert not proc.stop_runner(runner.pid, timeout_s=0.3)  # by pid: the re-adopted path, via pidfd
        assert is_gone(runner.pid)
    finally:
        runner.kill()
        runner.wait(WAIT_S)


def test_pidfd_turns_readable_when_a_process_exits() -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    fd = proc.pidfd_wait(sleeper.pid)
    assert fd is not None
    try:
        assert not select.select([fd], [], [], 0)[0]
        sleeper.kill()
        assert select.select([fd], [], [], WAIT_S)[0]
    finally:
        os.close(fd)
        sleeper.wait(WAIT_S)


def test_kill_group_and_wait_reaps_a_leftover_group(pgids: list[int]) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    pgids.append(leader.pid)
    try:
        assert proc.group_members(leader.pid)  # the leader at least; its sleeps join as they start
        assert proc.kill_group_and_wait(leader.pid, timeout_s=WAIT_S)
        assert proc.group_members(leader.pid) == []
    finally:
        leader.kill()
        leader.wait(WAIT_S)


def test_a_group_counts_as_ours_only_in_the_runners_session_and_after_its_start(pgids: list[int]) -> None:
    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)   # its own session, like a runner's
    pgids.append(leader.pid)
    try:
        started = psutil.Process(leader.pid).create_time()
        assert proc.our_group_members(leader.pid, session=leader.pid, not_before=started) == [leader.pid]
        assert not proc.our_group_members(leader.pid, session=os.getpid(), not_before=started)  # another session
        assert not proc.our_group_members(leader.pid, session=leader.pid, not_before=started + 60)  # older than it
    finally:
        leader.kill()
        leader.wait(WAIT_S)
    assert not proc.our_group_members(leader.pid, session=leader.pid, not_before=started)  # gone
