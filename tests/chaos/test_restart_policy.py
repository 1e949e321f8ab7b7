"""The restart policy under the real controller (`run`) with fault servers: `Never` and `OnFailure` leave an
exit alone when they say so, `OnFailure` and `Always` restart a failure after each back-off, and an exit that
is not restarted is noted once and never shown as a crash loop.

Harness: tests/e2e/conftest.py via conftest.py (fresh state dir, private copy of the fault servers, stop-all
and a no-leftover check in teardown). Every wait is on an audit event, a record or a report, with a bound.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime
from typing import Any

import pytest

pytestmark = pytest.mark.chaos


def actions(local, server: str, *kinds: str, since: int = 0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """action.started events of `server` (of the given kinds), from the `since`-th event on."""
    return [e for e in local.events("action.started", server=server, since=since) if e.get("action") in kinds]


def epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


# A short resync keeps these tests about the restart policy, whatever the timing of exit and pass.
RESYNC = ("--resync-interval", "1")
FAST_BACKOFF = {"initialSeconds": 0.2, "maxSeconds": 0.4, "resetAfterSeconds": 60}
EXIT_ZERO_AFTER_N = """\
    \"\"\"exit_after_n.py, exiting with code 0 instead of 1 (a server that finished its job).\"\"\"
    import os

    import exit_after_n
    from _mcp_base import run

    exit_after_n.EXIT_CODE = 0

    if __name__ == "__main__":
        run(exit_after_n.ExitAfterN(int(os.environ.get("EXIT_AFTER_N") or 3)))
    """


def exiting_server(local, policy: str, *, exit_code: int) -> None:  # type: ignore[no-untyped-def]
    """Server `once`, which exits with `exit_code` on its first health probe (the runner's era check and
    initialize are its first two answers; EXIT_AFTER_N=3), every time it is started."""
    script = local.fault_server("exit_after_n.py")
    if exit_code == 0:
        script = local.fault_server("exit_zero_after_n.py")
        script.write_text(textwrap.dedent(EXIT_ZERO_AFTER_N))
    local.write_manifest("once", {"source": {"path": str(script)}, "env": {"EXIT_AFTER_N": "3"},
                                  "restartPolicy": policy, "restartBackoff": FAST_BACKOFF,
                                  "health": {"intervalSeconds": 0.5}})


def health_report(local) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    try:
        return json.loads((local.state_dir / "reports" / "health_report.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def report_after(local, event: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The first health report written after `event`. The controller refreshes it every few seconds, so it
    comes after the pass that `event`'s pass queued (and after a resync), which is where a restart would be."""
    return local.wait_until(lambda: health_report(local), lambda r: r.get("generated_at", 0) > epoch(event),
                            what=f"a health report written after {event['event']}")


@pytest.mark.parametrize(("policy", "exit_code"), [
    pytest.param("Never", 1, id="Never, exit code 1"),
    pytest.param("Never", 0, id="Never, exit code 0"),
    pytest.param("OnFailure", 0, id="OnFailure, exit code 0"),
])
def test_a_server_that_exits_is_not_restarted_when_its_policy_says_so(local, policy: str, exit_code: int) -> None:
    exiting_server(local, policy, exit_code=exit_code)
    local.start_controller(*RESYNC)

    noted = local.wait_event("server.backoff", server="once")[0]   # the pass that noted the exit
    report = report_after(local, noted)

    assert f"exit code {exit_code}" in noted["error"], noted
    assert len(actions(local, "once", "start", "restart")) == 1, local.events(server="once")
    assert local.run_record("once") is None
    assert report["servers"]["once"]["phase"] not in ("Running", "Starting"), report["servers"]["once"]
    row = local.rows()["once"]
    assert row["phase"] not in ("Running", "Starting") and not row["ready"], row


def test_a_server_that_exits_with_code_1_is_restarted_under_on_failure(local) -> None:
    """The control case: OnFailure does restart a failure (so the test above is not vacuous)."""
    exiting_server(local, "OnFailure", exit_code=1)
    local.start_controller(*RESYNC)

    local.wait_until(lambda: actions(local, "once", "start", "restart"), lambda found: len(found) >= 2,
                     what="a second start of once after its exit code 1")


def test_a_server_that_keeps_crashing_is_restarted_after_each_back_off(local) -> None:
    exiting_server(local, "Always", exit_code=1)
    local.start_controller(*RESYNC)

    local.wait_until(lambda: actions(local, "once", "start", "restart"), lambda found: len(found) >= 4,
                     timeout_s=15.0, what="once started four times (back-off capped at 0.4 s)")


def test_the_exit_of_a_never_server_is_noted_once_and_not_shown_as_a_crash_loop(local) -> None:
    exiting_server(local, "Never", exit_code=1)
    local.start_controller(*RESYNC)

    noted = local.wait_event("server.backoff", server="once")[0]
    report = report_after(local, noted)

    assert len(local.events("server.backoff", server="once")) == 1, local.events("server.backoff")
    assert report["servers"]["once"]["phase"] != "CrashLoopBackOff", report["servers"]["once"]


def test_a_server_that_crashes_at_start_is_not_restarted_under_never(local) -> None:
    local.write_manifest("crasher", {"source": {"path": str(local.fault_server("crash_on_start.py"))},
                                     "restartPolicy": "Never", "restartBackoff": FAST_BACKOFF})
    local.start_controller(*RESYNC)

    failed = local.wait_event("action.failed", server="crasher")[0]
    noted = local.wait_event("server.backoff", server="crasher")[0]
    report = report_after(local, noted)

    assert "exited during startup (code 3" in failed["error"], failed
    assert len(actions(local, "crasher", "start", "restart")) == 1, local.events(server="crasher")
    assert local.run_record("crasher") is None
    assert report["servers"]["crasher"]["phase"] not in ("Running", "Starting"), report["servers"]["crasher"]
