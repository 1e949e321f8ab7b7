"""`mcp-reconcile run` leaves promptly when told to (SIGTERM, or the end of --monitor-duration) while a health
probe hangs on a server that never answers ping and a start waits on a server that takes minutes to initialize.

Issue 12: after `controller.stopping` the process sometimes stayed for minutes. Every wait at shutdown is
bounded now; the runners are not stopped by it and live on for the next controller (teardown's stop-all ends
them).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from mcp_reconcile.loop.controller import SHUTDOWN_CANCEL_TIMEOUT_S, SHUTDOWN_PASS_GRACE_S
from mcp_reconcile.loop.health import PROBES_CLOSE_TIMEOUT_S

pytestmark = pytest.mark.chaos

# Bound on the controller's exit once told to stop: the shutdown's own bounds plus slack for 2 shared cores
# (a process start, the last health report, state.json).
EXIT_BOUND_S = SHUTDOWN_PASS_GRACE_S + SHUTDOWN_CANCEL_TIMEOUT_S + PROBES_CLOSE_TIMEOUT_S + 10.0
# How long the slow server takes to answer initialize: far beyond EXIT_BOUND_S (its start is in progress).
SLOW_INIT_S = 300
# --monitor-duration of the second case: long enough to see both faults in flight first.
MONITOR_DURATION_S = 8.0


def log_text(local, name: str) -> str:  # type: ignore[no-untyped-def]
    path: Path = local.state_dir / "logs" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def start_with_faults_in_flight(local, *args: str, duration_s: float = 900.0):  # type: ignore[no-untyped-def]
    """A controller probing `hung` (ping never answered within its 60 s timeout) and starting `slow`; returns
    once the server logs show both: a probe in flight and a start in progress."""
    local.write_manifest("hung", {"source": {"path": str(local.fault_server("hang_on_ping.py"))},
                                  "health": {"intervalSeconds": 0.2, "timeoutSeconds": 60},
                                  "stopTimeoutSeconds": 1})
    local.write_manifest("slow", {"source": {"path": str(local.fault_server("slow_initialize.py"))},
                                  "env": {"SLOW_INIT_S": str(SLOW_INIT_S)}, "stopTimeoutSeconds": 1,
                                  "tests": {"startupTimeoutSeconds": SLOW_INIT_S + 60}})
    controller = local.start_controller(*args, duration_s=duration_s)
    local.wait_until(lambda: log_text(local, "hung"), lambda text: "not answering ping" in text,
                     what="a probe of hung in flight (its server logs the ping it drops)")
    local.wait_until(lambda: log_text(local, "slow"), lambda text: "before answering initialize" in text,
                     what="slow's start in progress (its server logs the initialize it sits on)")
    return controller


def wait_exit(controller, bound_s: float) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The controller's exit code and how long it took from now; fails past `bound_s`."""
    began = time.monotonic()
    try:
        code = controller.process.wait(bound_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the controller did not exit within {bound_s:g}s:\n{controller.stderr()[-3000:]}")
    return code, time.monotonic() - began


def test_sigterm_ends_the_controller_within_a_bound_while_a_probe_hangs_and_a_start_waits(local) -> None:
    controller = start_with_faults_in_flight(local)
    runner_pid = local.run_record("hung")["runner_pid"]

    controller.process.send_signal(signal.SIGTERM)
    code, took_s = wait_exit(controller, EXIT_BOUND_S)

    print(f"\nSIGTERM to exit with a hung probe and a start in progress: {took_s * 1000:.0f} ms")
    assert code == 0, controller.stderr()[-3000:]
    [stopped] = local.events("controller.stopped")
    assert stopped["passes_cut_short"] == 1 and stopped["unfinished"] == [], stopped
    assert local.pid_alive(runner_pid)   # shutdown leaves the runners to the next controller


def test_the_end_of_monitor_duration_ends_the_controller_within_a_bound_while_faults_are_in_flight(local) -> None:
    began = time.monotonic()
    controller = start_with_faults_in_flight(local, duration_s=MONITOR_DURATION_S)
    assert time.monotonic() - began < MONITOR_DURATION_S, "both faults were in flight only after the duration"

    code, _ = wait_exit(controller, MONITOR_DURATION_S + EXIT_BOUND_S)

    assert code == 0, controller.stderr()[-3000:]
    assert [e["event"] for e in local.events() if e["event"].startswith("controller.stop")] == [
        "controller.stopping", "controller.stopped"]
