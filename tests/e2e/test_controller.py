"""`mcp-reconcile run` end to end with the bundled servers: crash recovery, re-adoption, manifest edits.

The controller runs in the background (conftest.Harness.start_controller); every wait polls status, run
records or events.jsonl with a deadline. Measured figures are printed (`-s` shows them), never asserted.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import yaml

pytestmark = pytest.mark.e2e

BUNDLED = ("everything", "time")


def server_pids(rows: dict) -> dict[str, int | None]:  # type: ignore[type-arg]
    return {name: rows[name]["server_pid"] for name in BUNDLED}


def test_a_killed_server_is_restarted_and_ready_again(real) -> None:
    real.start_controller()
    real.wait_ready(*BUNDLED)
    before = real.run_record("everything")
    since = real.events_count()

    killed_at = time.monotonic()
    os.kill(before["server_pid"], signal.SIGKILL)
    rows = real.wait_until(real.rows, lambda r: real.probed_ready(r, "everything", not_pid=before["server_pid"]),
                           what="everything Ready again, probed under a new server pid")
    crash_to_ready_s = time.monotonic() - killed_at

    print(f"\ncrash-to-ready (server-everything, kill -9 of the server): {crash_to_ready_s * 1000:.0f} ms")
    status = real.status()
    assert status["everything"]["ready"] is True, status["everything"]
    assert status["everything"]["restarts"] == 1, status["everything"]
    assert status["everything"]["server_pid"] == rows["everything"]["server_pid"]
    assert status["time"]["restarts"] == 0 and status["time"]["ready"] is True, status["time"]
    restarting = real.events("server.restarting", since=since)
    assert [e["server"] for e in restarting] == ["everything"], restarting


def test_a_restarted_controller_readopts_the_running_servers_without_duplicates(real) -> None:
    first = real.start_controller()
    real.wait_ready(*BUNDLED)
    records = {name: real.run_record(name) for name in BUNDLED}

    first.kill9()
    since, restarted_at = real.events_count(), time.time()
    real.start_controller()
    real.wait_event("controller.ready", since=since)
    real.wait_until(real.health_report, lambda report: all(
        ((report.get(n) or {}).get("last_probe") or {}).get("at", 0) >= restarted_at and report[n]["last_probe"]["ok"]
        for n in BUNDLED), what="both probed OK by the new controller (reports/health_report.json)")
    rows = real.wait_ready(*BUNDLED)

    assert {name: real.run_record(name) for name in BUNDLED} == records
    assert server_pids(rows) == {name: records[name]["server_pid"] for name in BUNDLED}
    assert real.events("action.started", since=since) == []
    for name in BUNDLED:
        # runners are forked from a template: each carries its server's name as its process name
        runners = [p.pid for p in psutil.process_iter(["name", "cmdline"])
                   if p.info["name"] == f"mcpr:{name}" and str(real.state_dir) in (p.info["cmdline"] or [])]
        assert runners == [records[name]["runner_pid"]], name
        server_argv = psutil.Process(records[name]["server_pid"]).cmdline()
        assert real.processes_running(server_argv) == [records[name]["server_pid"]], name

    # the re-adopted runner is watched: its server's crash is noticed and repaired
    os.kill(records["time"]["server_pid"], signal.SIGKILL)
    rows = real.wait_until(real.rows, lambda r: real.probed_ready(r, "time", not_pid=records["time"]["server_pid"]),
                           what="time restarted under the re-adopting controller")
    assert rows["time"]["restarts"] == 1
    assert rows["everything"]["server_pid"] == records["everything"]["server_pid"]


def test_a_manifest_edit_restarts_only_its_server_and_a_broken_manifest_changes_nothing(real) -> None:
    real.start_controller("--resync-interval", "1")
    rows = real.wait_ready(*BUNDLED)
    pids = server_pids(rows)
    everything_record = real.run_record("everything")
    edited = real.read_manifest("time")
    edited["spec"]["env"]["EXTRA"] = "1"

    edited_at = time.monotonic()
    real.write_text("time.yaml", yaml.safe_dump(edited, sort_keys=False))
    rows = real.wait_until(real.rows, lambda r: real.probed_ready(r, "time", not_pid=pids["time"]),
                           what="time restarted for its new env and probed")
    print(f"\nmanifest-edit-to-ready (mcp-server-time, env change): {(time.monotonic() - edited_at) * 1000:.0f} ms")

    assert rows["everything"]["server_pid"] == pids["everything"]
    assert real.run_record("everything") == everything_record
    pids = server_pids(rows)
    restarts = {name: rows[name]["restarts"] for name in BUNDLED}
    records = {name: real.run_record(name) for name in BUNDLED}
    since = real.events_count()

    real.write_text("time.yaml", "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: time\n")
    rejected = real.wait_event("manifest.rejected", since=since)
    real.wait_until(lambda: real.events("manifest.rejected", since=since),
                    lambda found: any(e.get("reason") == "resync" for e in found),
                    what="a resync pass while time.yaml is broken")
    real.write_text("time.yaml", yaml.safe_dump(edited, sort_keys=False))
    real.wait_until(lambda: real.cli("plan", "--detailed-exitcode", expect=None).code, lambda code: code == 0,
                    what="plan: no changes after the fix")
    rows = real.wait_ready(*BUNDLED)

    assert rejected[0]["file"].endswith("time.yaml"), rejected
    assert server_pids(rows) == pids
    assert {name: real.run_record(name) for name in BUNDLED} == records
    assert {name: rows[name]["restarts"] for name in BUNDLED} == restarts
    assert real.events("action.started", since=since) == []
