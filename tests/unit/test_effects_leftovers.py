"""Leftover process groups of a dead runner: reaped when they are the runner's, never when the number is reused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psutil
import pytest
from structlog.testing import capture_logs

from mcp_reconcile.effects import HostEffects
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.store import RunRecord, StateDir

WAIT_S = 10.0


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """A process group leading its own session, as a runner's server group would be (it plays both parts)."""
    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield leader
    leader.kill()
    leader.wait(WAIT_S)


def record(group: subprocess.Popen[bytes], *, runner_pid: int, runner_create_time: float) -> RunRecord:
    return RunRecord(server="srv", runner_pid=runner_pid, runner_create_time=runner_create_time,
                     runner_cmdline=["mcp-reconcile", "runner", "--name", "srv"], server_pid=group.pid,
                     server_pgid=group.pid, state="running")


def test_the_group_of_a_dead_runner_is_reaped_and_reported(tmp_path, group) -> None:
    state = StateDir(tmp_path / "state")
    started = psutil.Process(group.pid).create_time()
    with capture_logs() as logs:
        reaped = HostEffects(state, Ledger(state)).reap_leftovers(
            "srv", record(group, runner_pid=group.pid, runner_create_time=started))
    assert reaped and group.wait(WAIT_S) is not None
    assert [(e["event"], e["processes"]) for e in logs] == [("server.leftovers_reaped", 1)]


@pytest.mark.parametrize(("session_offset", "age_s"), [
    pytest.param(1, 0.0, id="another session"),
    pytest.param(0, 3600.0, id="a group older than the runner (a reboot or a pid wrap)"),
])
def test_a_recorded_group_number_that_names_someone_elses_group_is_left_alone(
        tmp_path, group, session_offset, age_s) -> None:
    state = StateDir(tmp_path / "state")
    started = psutil.Process(group.pid).create_time()
    stale = record(group, runner_pid=group.pid + session_offset, runner_create_time=started + age_s)
    with capture_logs() as logs:
        assert HostEffects(state, Ledger(state)).reap_leftovers("srv", stale) is False
    assert group.poll() is None and logs == []


def test_a_start_never_clears_the_record_of_a_live_runner_it_raced(tmp_path, group) -> None:
    from mcp_reconcile.errors import TransientError

    state = StateDir(tmp_path / "state")
    state.ensure()
    live = psutil.Process(group.pid)   # stands in for a runner another controller just started
    state.write_run(RunRecord(server="srv", runner_pid=group.pid, runner_create_time=live.create_time(),
                              runner_cmdline=live.cmdline(), server_pid=None, server_pgid=None, state="starting"))
    effects = HostEffects(state, Ledger(state))

    with capture_logs() as logs, pytest.raises(TransientError, match=r"srv: .*a runner \(pid \d+\) already "
                                                                     r"serves it; adopting it"):
        effects._remove_dead_run("srv")
    assert state.read_run("srv")["runner_pid"] == group.pid
    assert [e["event"] for e in logs] == ["runner.already_serving"]

    group.kill()
    group.wait(WAIT_S)
    effects._remove_dead_run("srv")   # its runner is gone: the record goes
    assert state.read_run("srv") is None
