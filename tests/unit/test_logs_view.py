"""`logs NAME`: the server's stderr with a marker line at each exit, failed start and start (from the audit
log), placed by time among lines that carry one; -n, --since, --follow."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mcp_reconcile.events import JsonLinesFile
from mcp_reconcile.logsview import Entry, markers, merge
from mcp_reconcile.store import StateDir

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
FOLLOW_BOUND_S = 20.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    """`srv` started, wrote two lines, crashed (exit 1), started again and wrote one line; times in its lines."""
    state = StateDir(tmp_path / "state").ensure()
    t0 = time.time() - 3600
    sink = JsonLinesFile(state.events_file)
    sink.write({"event": "action.applied", "level": "info", "ts": iso(t0), "server": "srv", "action": "start",
                "detail": "serving at http://127.0.0.1:24001/mcp"})
    sink.write({"event": "server.backoff", "level": "warning", "ts": iso(t0 + 20), "server": "srv",
                "error": "server exited (exit code 1)"})
    sink.write({"event": "action.failed", "level": "error", "ts": iso(t0 + 21), "server": "srv", "action": "start",
                "error": "srv: start failed: port 24001 is in use by pid 812 (python3)"})
    sink.write({"event": "action.applied", "level": "info", "ts": iso(t0 + 3000), "server": "srv",
                "action": "start", "detail": "serving again"})
    sink.write({"event": "action.applied", "level": "info", "ts": iso(t0 + 3000), "server": "other",
                "action": "start"})
    sink.close()
    state.log_path("srv").write_text(
        f"{iso(t0 + 1)} listening\n{iso(t0 + 19)} fatal: out of memory\n  at Object.<anonymous>\n"
        f"{iso(t0 + 3001)} listening\n")
    return state


def run(run_cli: RunCli, state: StateDir, *flags: str) -> list[str]:
    code, out, err = run_cli(["logs", "srv", "--state-dir", str(state.root), *flags])
    assert code == 0, err
    return out.splitlines()


def test_markers_fall_between_the_lines_of_each_run(run_cli: RunCli, state: StateDir) -> None:
    lines = run(run_cli, state)

    assert [line.split(" ", 2)[-1] if line.startswith("──") else line.split(" ", 1)[1].strip() for line in lines] == [
        "started: serving at http://127.0.0.1:24001/mcp ──", "listening", "fatal: out of memory",
        "at Object.<anonymous>", "exited: server exited (exit code 1) ──",
        "start failed: port 24001 is in use by pid 812 (python3) ──", "started: serving again ──", "listening"]
    assert all(line.startswith("──") or line[:4].isdigit() or line.startswith("  at") for line in lines), lines


def test_n_and_since_choose_the_last_lines(run_cli: RunCli, state: StateDir) -> None:
    assert run(run_cli, state, "-n", "2")[0].endswith("started: serving again ──")
    assert len(run(run_cli, state, "-n", "2")) == 2
    since = run(run_cli, state, "--since", "20m")
    assert len(since) == 2 and since[-1].endswith(" listening")


def test_a_log_without_times_keeps_its_order_and_lists_the_markers_after_it() -> None:
    entries = merge(["a", "b"], [Entry(10.0, "exited: x", marker=True)])

    assert [e.text for e in entries] == ["a", "b", "exited: x"]


def test_markers_are_only_the_servers_own() -> None:
    events = [{"event": "action.applied", "server": "other", "action": "start", "ts": iso(1.0)},
              {"event": "action.applied", "server": "srv", "action": "install", "ts": iso(2.0)},
              {"event": "server.exited_unsupervised", "server": "srv", "reason": "exit code 2", "ts": iso(3.0)}]

    assert [m.text for m in markers(events, "srv")] == ["exited: exit code 2"]


def test_a_missing_log_exits_1_naming_it(run_cli: RunCli, state: StateDir) -> None:
    code, _, err = run_cli(["logs", "nope", "--state-dir", str(state.root)])

    assert code == 1 and "nope.log does not exist" in err


def test_follow_prints_the_last_lines_then_new_ones(state: StateDir) -> None:
    follower = subprocess.Popen([sys.executable, "-m", "mcp_reconcile", "logs", "srv", "--follow", "-n", "1",
                                 "--state-dir", str(state.root)], stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert follower.stdout is not None
    try:
        ready, _, _ = select.select([follower.stdout], [], [], FOLLOW_BOUND_S)
        assert ready, "nothing printed"
        assert follower.stdout.readline().rstrip().endswith(b" listening")   # -n 1: the last line so far
        seen: list[bytes] = []
        deadline = time.monotonic() + FOLLOW_BOUND_S
        with open(state.log_path("srv"), "a") as log:
            log.write(f"{iso(time.time())} appended\n")
            log.flush()
            while not seen and time.monotonic() < deadline:
                ready, _, _ = select.select([follower.stdout], [], [], 0.5)
                if ready:
                    seen.append(follower.stdout.readline())
        assert seen and seen[0].rstrip().endswith(b" appended"), seen
    finally:
        follower.terminate()
        follower.wait(10)
