"""`mcp-reconcile apply` end to end: the bundled servers to Ready, idempotence, secrets, empty desired state.

The CLI runs as a subprocess against a real state dir; see conftest.py for the harness and its teardown
(stop-all, then no process of the state dir may be left).
"""

from __future__ import annotations

import asyncio
import json
import re

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
