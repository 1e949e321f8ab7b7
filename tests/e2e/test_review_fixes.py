"""Regression tests for review findings fixed in ff6c3eb, end to end with the local fault servers: a server
that cannot be spawned fails only its own action, `apply --test` passes against its own lock,
`apply --install` never touches a running server, and a server gets no other server's secret.

The CLI runs as a subprocess against a fresh state dir (conftest.py: the `local` harness; teardown runs
stop-all and requires that no process of the state dir is left).
"""

from __future__ import annotations

import json
import shutil

import psutil
import pytest

WITHHELD = "sk-withheld-777"


def well_behaved(local) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {"source": {"path": str(local.fault_server("well_behaved.py"))}}


# --- 4. a spawn error fails one action ----------------------------------------------------------------------

def test_a_missing_cwd_fails_only_its_server_with_a_message_naming_it(local) -> None:
    local.write_manifest("lost", {**well_behaved(local), "cwd": "/nonexistent-dir"})
    local.write_manifest("fine", well_behaved(local))

    result = local.cli("apply", expect=1)

    assert "Traceback" not in result.err, str(result)
    failed = [line for line in result.out.splitlines() if line.lstrip().startswith("FAILED")]
    assert len(failed) == 1 and "start" in failed[0] and "lost" in failed[0], str(result)
    assert "/nonexistent-dir" in failed[0], str(result)
    assert "Apply complete:" in result.out and "1 failed" in result.out, str(result)
    assert local.run_record("lost") is None
    status = local.status()
    assert status["fine"]["ready"] is True, status["fine"]
    assert status["lost"]["ready"] is False, status["lost"]
    [event] = [e for e in local.events("action.failed", server="lost")]
    assert event["action"] == "start" and "/nonexistent-dir" in event["error"], event


# --- 6. apply --test inside its own lock --------------------------------------------------------------------

@pytest.mark.parametrize("absent_beside", [
    pytest.param(False, id="one server"),
    pytest.param(True, id="beside a server desired absent (nothing to install for it under the lock)"),
])
def test_apply_with_test_passes_and_writes_the_test_report(local, absent_beside: bool) -> None:
    local.write_manifest("alpha", well_behaved(local))
    if absent_beside:
        local.write_manifest("gone", {**well_behaved(local), "desiredState": "absent"})

    result = local.cli("apply", "--test")

    assert "Traceback" not in result.err and "holds the lock" not in result.err, str(result)
    report = json.loads((local.state_dir / "reports" / "test_report.json").read_text())
    assert report["passed"] is True, report
    assert [(s["server"], s["passed"]) for s in report["servers"]] == [("alpha", True)], report
    assert local.status()["alpha"]["ready"] is True


# --- 7. apply --install never touches a running server ------------------------------------------------------

def test_apply_install_leaves_a_running_server_with_a_changed_source_alone(local) -> None:
    local.write_manifest("alpha", well_behaved(local))
    local.cli("apply")
    record, install = local.run_record("alpha"), local.install_record("alpha")
    moved = shutil.copy(local.fault_server("well_behaved.py"), local.fault_server("well_behaved_moved.py"))
    local.write_manifest("alpha", {"source": {"path": str(moved)}})
    since = local.events_count()

    result = local.cli("apply", "--install")

    assert "stop" not in result.out and "uninstall" not in result.out and "upgrade" not in result.out, str(result)
    assert local.run_record("alpha") == record
    assert local.pid_alive(record["server_pid"])
    assert local.install_record("alpha") == install
    assert local.events("action.started", since=since) == []
    # the change is not lost: a full apply still upgrades and restarts it
    planned = local.cli("plan", "--detailed-exitcode", expect=2)
    assert "upgrade   alpha" in planned.out and "restart   alpha" in planned.out, str(planned)


# --- 8. secrets withheld from other servers -----------------------------------------------------------------

def test_a_secret_reaches_only_the_server_that_references_it(local) -> None:
    local.env["A_SECRET"] = WITHHELD
    local.write_manifest("a", {**well_behaved(local), "env": {"A_SECRET": "${A_SECRET}"}})
    local.write_manifest("b", well_behaved(local))

    local.cli("apply")

    environ = {name: psutil.Process(local.run_record(name)["server_pid"]).environ() for name in ("a", "b")}
    assert environ["a"].get("A_SECRET") == WITHHELD
    assert "A_SECRET" not in sorted(environ["b"])   # names only in a failure message
    assert environ["b"].get("PATH"), "the withheld set must not take the ordinary environment with it"
    for name in ("a", "b"):   # nor does it reach a runner's environment (forked or spawned)
        runner_environ = psutil.Process(local.run_record(name)["runner_pid"]).environ()
        assert WITHHELD not in runner_environ.values(), name
