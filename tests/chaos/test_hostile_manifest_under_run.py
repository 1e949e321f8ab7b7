"""A YAML alias bomb dropped into the watched directory under `run` (issue 12, defect 3): the file is one
rejected manifest, the controller's memory stays bounded, and it keeps supervising the healthy server (a
killed server is restarted within its backoff).

The bomb is tests/unit/test_hostile_input.py's `alias_bomb` (9 levels of anchors under spec.env, 633 bytes),
which took the unbounded loader to 5.2 GB and stopped supervision.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.chaos

_spec = importlib.util.spec_from_file_location(
    "chaos_hostile_input", Path(__file__).resolve().parents[1] / "unit" / "test_hostile_input.py")
assert _spec is not None and _spec.loader is not None
hostile = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hostile
_spec.loader.exec_module(hostile)

BACKOFF = {"initialSeconds": 1, "maxSeconds": 5, "resetAfterSeconds": 0}
# The controller's resident memory bound while it holds the bomb (issue 12: under 200 MB; it took 5.2 GB).
RSS_LIMIT_MB = 200.0
# Scheduling slack between the backoff's end and the restart's start, on 2 shared cores.
RESTART_SLACK_S = 3.0


def high_water_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM of /proc/PID/status), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def _at(event: dict) -> datetime:  # type: ignore[type-arg]
    return datetime.fromisoformat(event["ts"])


def test_an_alias_bomb_in_the_watched_dir_is_rejected_while_a_killed_server_is_restarted_in_bounded_memory(
        local) -> None:
    local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))},
                                    "restartBackoff": BACKOFF, "tests": {"gate": False},
                                    "health": {"intervalSeconds": 0.5, "timeoutSeconds": 5, "failureThreshold": 3}})
    controller = local.start_controller()
    local.wait_until(local.rows, lambda r: local.probed_ready(r, "steady"), what="steady Ready")
    me = psutil.Process(controller.pid)
    peak_mb = [0.0]

    def rows_and_rss() -> dict:  # type: ignore[type-arg]
        peak_mb[0] = max(peak_mb[0], me.memory_info().rss / 2**20)
        return local.rows()

    def rejections() -> list[dict]:  # type: ignore[type-arg]
        rows_and_rss()
        return [e for e in local.events("manifest.rejected", since=since) if e.get("file") == str(bomb)]

    since = local.events_count()
    bomb = local.write_text("bomb.yaml", hostile.alias_bomb())
    assert len(bomb.read_bytes()) < 700
    rejected = local.wait_until(rejections, bool, what="bomb.yaml rejected")
    assert "aliases are expanded" in rejected[0]["error"], rejected

    pid = local.run_record("steady")["server_pid"]
    os.kill(pid, signal.SIGKILL)
    rows = local.wait_until(rows_and_rss, lambda r: local.probed_ready(r, "steady", not_pid=pid),
                            what="steady restarted and probed while bomb.yaml is in the watched dir")

    backoff = local.wait_event("server.backoff", server="steady", since=since)[0]
    restart = [e for e in local.events("action.started", server="steady", since=since) if e["action"] == "start"]
    assert restart, local.events(since=since)
    assert backoff["delay_s"] <= BACKOFF["initialSeconds"], backoff
    waited = (_at(restart[0]) - _at(backoff)).total_seconds()
    assert waited <= backoff["delay_s"] + RESTART_SLACK_S, (backoff, restart[0])
    assert rows["steady"]["restarts"] == 1, rows["steady"]
    assert controller.process.poll() is None, controller.stderr()[-3000:]
    rows_and_rss()
    assert peak_mb[0] < RSS_LIMIT_MB, f"controller RSS reached {peak_mb[0]:.0f} MB"
    assert high_water_mb(controller.pid) < RSS_LIMIT_MB   # the kernel's peak, between our samples too
    assert "a" not in local.rows(), "a server of the rejected bomb file was taken up"
