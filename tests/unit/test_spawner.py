"""Runners forked from the warm template behave like runners started from scratch: own session, ready
signal, exit record, and they outlive the template (and so the controller)."""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

import psutil

from mcp_reconcile import proc
from mcp_reconcile.spawner import READY_FD_PLACEHOLDER, RunnerSpawner
from mcp_reconcile.store import StateDir

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "servers" / "well_behaved.py"
# Bound on a forked runner answering its ready fd (no interpreter start: a fork and a tiny server).
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def _wait_readable(fd: int) -> bytes:
    readable, _, _ = select.select([fd], [], [], READY_TIMEOUT_S)
    assert readable, "the runner never signalled on its ready fd"
    return os.read(fd, 1)


def test_a_forked_runner_serves_in_its_own_session_and_outlives_the_template(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state").ensure()
    spawner = RunnerSpawner(tmp_path / "state")
    ready_r, ready_w = os.pipe()
    args = ["--state-dir", str(state.root), "--name", "steady", "--generation", "g1", "--ready-fd",
            READY_FD_PLACEHOLDER, "--", sys.executable, str(SERVER)]
    env = dict(os.environ, MARKER_FOR_TEST="forked")
    try:
        pid = spawner.spawn("steady", args, env, cwd=str(tmp_path), log_path=tmp_path / "steady.runner.log",
                            ready_fd=ready_w)
    finally:
        os.close(ready_w)
    try:
        assert _wait_readable(ready_r) == b"1"
        record = state.read_run("steady")
        assert record and record["state"] == "running" and record["runner_pid"] == pid
        assert proc.is_same_process(pid, record["runner_create_time"], record["runner_cmdline"])
        runner = psutil.Process(pid)
        assert os.getsid(pid) == pid and runner.cwd() == str(tmp_path)
        assert psutil.Process(record["server_pid"]).environ().get("MARKER_FOR_TEST") == "forked"
        assert "MARKER_FOR_TEST" not in runner.environ()   # the template's own, minimal environment
        assert runner.name() == "mcpr:steady" and str(state.root) in runner.cmdline()

        spawner.close()   # the template leaves; the runner must not
        assert runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE

        assert proc.stop_runner(pid, timeout_s=STOP_TIMEOUT_S)
        record = state.read_run("steady")
        assert record["state"] == "exited" and record["exit"]["code"] is not None
        assert not proc.group_members(record["server_pgid"])
    finally:
        os.close(ready_r)
        spawner.close()
        if psutil.pid_exists(pid):
            proc.stop_runner(pid, timeout_s=STOP_TIMEOUT_S)


def test_a_template_that_cannot_start_is_an_os_error_the_caller_can_fall_back_on(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    spawner = RunnerSpawner(tmp_path / "state")
    ready_r, ready_w = os.pipe()
    try:
        try:
            spawner.spawn("x", ["--name", "x"], {}, cwd=None, log_path=tmp_path / "x.log", ready_fd=ready_w)
        except OSError:
            pass
        else:
            raise AssertionError("spawn without a template did not fail")
    finally:
        os.close(ready_r)
        os.close(ready_w)
        spawner.close()
