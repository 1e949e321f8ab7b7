"""`mcp-reconcile apply` end to end: the bundled servers to Ready, idempotence, secrets, empty desired state;
with the local fault servers: a server that cannot be spawned fails only its own action, `apply --test` passes
against its own lock, `apply --install` never touches a running server, a server gets no other server's secret.

The CLI runs as a subprocess against a real state dir; see conftest.py for the harness and its teardown
(stop-all, then no process of the state dir may be left).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import anyio
import psutil
import pytest

# Bound on one MCP session to a runner's endpoint: connect, list tools, close.
SESSION_TIMEOUT_S = 30.0
SECRET = "sk-e2e-SECRET-9876"
ROTATED_SECRET = "sk-e2e-ROTATED-5432"
# One plan line as `plan` prints it: symbol, action, server, (reason).
ACTION_LINE = re.compile(r"^  ([+~?-]) (\w+)\s+(\S+)\s+\((.*)\)$")


def action_lines(text: str) -> list[tuple[str, str, str]]:
    """(symbol, action, server) of every plan line in `text`, in order."""
    return [m.group(1, 2, 3) for line in text.splitlines() if (m := ACTION_LINE.match(line))]


async def tool_names(endpoint: str) -> set[str]:
    from mcp import Client

    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with Client(endpoint) as client:
            result = await client.list_tools()
    return {tool.name for tool in result.tools}


async def tools_of(endpoints: dict[str, str]) -> dict[str, set[str]]:
    names = list(endpoints)
    found = await asyncio.gather(*(tool_names(endpoints[n]) for n in names))
    return dict(zip(names, found, strict=True))


@pytest.mark.e2e
def test_apply_brings_both_bundled_servers_to_ready_and_a_second_apply_changes_nothing(real) -> None:
    installed_at = {n: real.install_record(n)["installed_at"] for n in ("everything", "time")}

    first = real.cli("apply")

    assert sorted(action_lines(first.out)) == [("+", "start", "everything"), ("+", "start", "time")], first.out
    status = real.status()
    assert sorted(status) == ["everything", "time"]
    for name in ("everything", "time"):
        assert status[name]["ready"] is True, status[name]
        assert status[name]["phase"] == "Running", status[name]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/mcp", status[name]["endpoint"] or ""), status[name]
    tools = asyncio.run(tools_of({n: status[n]["endpoint"] for n in status}))
    assert {"echo", "get-sum"} <= tools["everything"]
    assert {"get_current_time", "convert_time"} <= tools["time"]

    since = real.events_count()
    second = real.cli("apply")

    assert "No changes." in second.out, second.out
    assert action_lines(second.out) == []
    assert {n: real.install_record(n)["installed_at"] for n in installed_at} == installed_at
    assert real.events("install.started", since=since) == []
    assert real.events("action.started", since=since) == []
    assert {n: r["server_pid"] for n, r in real.status().items()} == {n: r["server_pid"] for n, r in status.items()}
    real.cli("plan", "--detailed-exitcode", expect=0)


def test_a_secret_from_the_environment_appears_in_no_file_no_output_and_no_command_line(local) -> None:
    local.env["API_KEY"] = SECRET
    local.write_manifest("keyed", {"source": {"path": str(local.fault_server("well_behaved.py"))},
                                   "env": {"API_KEY": "${API_KEY}", "TZ": "UTC"}})

    local.cli("validate")
    local.cli("plan")
    local.cli("plan", "-o", "json")
    local.cli("apply")
    local.cli("status")
    local.cli("status", "-o", "json")
    controller = local.start_controller()
    local.wait_event("controller.ready")
    local.wait_ready("keyed")
    command_lines = {pid: " ".join(psutil.Process(pid).cmdline())
                     for pid in (controller.pid, local.run_record("keyed")["runner_pid"],
                                 local.run_record("keyed")["server_pid"])}
    local.env["API_KEY"] = ROTATED_SECRET   # a rotated key restarts the server: the plan names the field only
    rotated = local.cli("plan", "--detailed-exitcode", expect=2)
    local.env["API_KEY"] = SECRET
    assert controller.stop() == 0
    local.cli("events")
    local.cli("logs", "keyed")

    assert [(s, a, n) for s, a, n in action_lines(rotated.out)] == [("~", "restart", "keyed")], rotated.out
    assert "env.API_KEY (sensitive)" in rotated.out
    leaks = [str(p) for p in sorted(local.state_dir.rglob("*")) if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert [str(r) for r in local.outputs if SECRET in r.out + r.err or ROTATED_SECRET in r.out + r.err] == []
    assert SECRET not in controller.stderr() + controller.stdout_path.read_text()
    assert {pid: line for pid, line in command_lines.items() if SECRET in line} == {}


def test_an_empty_desired_state_removes_every_server_the_state_dir_knows(local) -> None:
    for name in ("alpha", "beta"):
        local.write_manifest(name, {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.cli("apply")
    assert all(row["ready"] for row in local.status().values())
    runners = {n: local.run_record(n)["runner_pid"] for n in ("alpha", "beta")}

    planned = local.cli("plan", "--detailed-exitcode", files=["/dev/null"], expect=2)
    applied = local.cli("apply", files=["/dev/null"])

    removals = [("-", "stop", "alpha"), ("-", "stop", "beta"), ("-", "uninstall", "alpha"), ("-", "uninstall", "beta")]
    assert action_lines(planned.out) == removals, planned.out
    assert action_lines(applied.out) == removals, applied.out
    assert "removed from manifests" in planned.out
    assert not [p for p in (local.state_dir / "run").glob("*.json")]
    assert not [p for p in (local.state_dir / "installs").iterdir()]
    assert "No servers known" in local.cli("status", files=["/dev/null"]).out
    assert json.loads(local.cli("status", "-o", "json", files=["/dev/null"]).out) == {"servers": []}
    assert [pid for pid in runners.values() if psutil.pid_exists(pid) and
            psutil.Process(pid).status() != psutil.STATUS_ZOMBIE] == []
    local.wait_no_leftovers("after apply -f /dev/null")
    local.cli("plan", "--detailed-exitcode", files=["/dev/null"], expect=0)


def test_an_invalid_manifest_fails_apply_and_leaves_the_other_servers_applied(local) -> None:
    local.write_manifest("good", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.write_text("broken.yaml", "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: [oops\n")

    result = local.cli("apply", expect=1)

    assert "broken.yaml" in result.err and "invalid YAML" in result.err, str(result)
    assert local.status()["good"]["ready"] is True
    assert local.events("manifest.rejected")


def test_every_applied_action_and_phase_change_is_an_audit_event(local) -> None:
    local.write_manifest("alpha", {"source": {"path": str(local.fault_server("well_behaved.py"))}})

    local.cli("apply")

    def done(event: str) -> list[tuple[str, str]]:
        return [(e["server"], e["action"]) for e in local.events(event)]

    assert done("action.started") == done("action.applied") == [("alpha", "install"), ("alpha", "start")]
    assert [e["phase"] for e in local.events("server.phase_changed", server="alpha")][-1:] == ["Running"]
    assert local.events("probe.succeeded", server="alpha")


def test_status_after_stop_all_shows_the_servers_stopped(local) -> None:
    local.write_manifest("alpha", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.cli("apply")

    local.cli("stop-all")

    row = local.status()["alpha"]
    assert (row["phase"], row["ready"], row["endpoint"]) == ("Stopped", False, None), row


WITHHELD = "sk-withheld-777"


def well_behaved(local) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {"source": {"path": str(local.fault_server("well_behaved.py"))}}


# --- a spawn error fails only its own action ----------------------------------------------------------------------

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


# --- apply --test runs inside its own lock --------------------------------------------------------------------

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


# --- apply --install never touches a running server ------------------------------------------------------

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


# --- a secret reaches only its own server -----------------------------------------------------------------

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
