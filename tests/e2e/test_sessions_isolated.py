"""`sessions: isolated` end to end: one server process per client session, behind one real runner.

The fixture server `remembers.py` keeps a value per process, so a value one client stored and another can read
is a leak between sessions. Every wait is bounded (pidfds, the run record); teardown stops the runner, which
stops every session's server, and the last test checks that nothing is left even after 50 sessions.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import runnerlib as harness

Runner, Runners = harness.Runner, harness.Runners
post, rpc, initialize, fault_server = harness.post, harness.rpc, harness.initialize, harness.fault_server
wait_until, wait_gone, is_gone = harness.wait_until, harness.wait_gone, harness.is_gone


def _isolated(runners: Runners, *extra: str) -> Runner:
    runner = runners.start(fault_server("remembers"), args=["--sessions", "isolated", *extra])
    assert runner.record()["state"] == "running"
    return runner


def _call(runner: Runner, session: str, tool: str, **arguments: Any) -> str:
    answer = post(runner, rpc("tools/call", 7, {"name": tool, "arguments": arguments}), session=session).json()
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


def _session(runner: Runner) -> str:
    response = initialize(runner)
    assert response.status_code == 200, response.text
    return str(response.headers["mcp-session-id"])


def _delete(runner: Runner, session: str) -> None:
    assert httpx.delete(runner.url, headers={"Mcp-Session-Id": session}, timeout=harness.WAIT_S).status_code == 204


def test_each_session_has_a_server_process_and_state_of_its_own(runners: Runners) -> None:
    runner = _isolated(runners)
    a, b = _session(runner), _session(runner)
    _call(runner, a, "remember", value="only for a")
    assert _call(runner, b, "recall") == ""            # b's own process never heard of it
    assert _call(runner, a, "recall") == "only for a"
    pid_a, pid_b = int(_call(runner, a, "whoami")), int(_call(runner, b, "whoami"))
    assert len({pid_a, pid_b, runner.server_pid}) == 3
    assert sorted(runner.record().get("session_pids") or []) == sorted([pid_a, pid_b])


def test_a_deleted_session_stops_its_server_and_the_others_keep_theirs(runners: Runners) -> None:
    runner = _isolated(runners)
    a, b = _session(runner), _session(runner)
    pid_a, pid_b = int(_call(runner, a, "whoami")), int(_call(runner, b, "whoami"))
    _delete(runner, a)
    assert wait_gone(pid_a)
    assert post(runner, rpc("tools/list"), session=a).status_code == 404   # the client starts a new session
    assert int(_call(runner, b, "whoami")) == pid_b
    wait_until(lambda: runner.record().get("session_pids") == [pid_b], what="the record lists b's server only")


def test_the_maximum_is_enforced_with_a_clear_error_and_a_freed_slot_is_usable(runners: Runners) -> None:
    runner = _isolated(runners, "--max-sessions", "2")
    first, _second = _session(runner), _session(runner)
    refused = initialize(runner)
    assert refused.status_code == 503
    message = refused.json()["error"]["message"]
    assert "session limit" in message and "maxSessions" in message, message
    _delete(runner, first)
    assert _session(runner)


def test_fifty_sessions_opened_and_closed_leave_no_server_process(runners: Runners) -> None:
    runner = _isolated(runners, "--max-sessions", "4")
    pids = []
    for _ in range(50):
        session = _session(runner)
        pids.append(int(_call(runner, session, "whoami")))
        _delete(runner, session)
    assert len(set(pids)) == 50
    assert all(wait_gone(pid) for pid in pids)
    wait_until(lambda: runner.record().get("session_pids") == [], what="no session server in the record")


def test_an_idle_session_ends_and_its_server_stops(runners: Runners) -> None:
    runner = _isolated(runners, "--session-idle", "0.5")
    session = _session(runner)
    pid = int(_call(runner, session, "whoami"))
    assert wait_gone(pid)
    assert post(runner, rpc("tools/list"), session=session).status_code == 404


def test_a_session_whose_server_crashed_gets_a_new_one_on_its_next_request(runners: Runners) -> None:
    runner = _isolated(runners)
    session = _session(runner)
    pid = int(_call(runner, session, "whoami"))
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    wait_until(lambda: int(_call(runner, session, "whoami")) != pid, what="a new server for the same session")
    assert runner.server_pid and not is_gone(runner.server_pid)   # the main server was never touched


def test_stopping_or_killing_the_runner_takes_every_session_server_with_it(runners: Runners) -> None:
    stopped = _isolated(runners)
    pids = [int(_call(stopped, _session(stopped), "whoami")) for _ in range(3)]
    stopped.popen.send_signal(signal.SIGTERM)
    assert stopped.wait_exit() == 0
    assert all(wait_gone(pid) for pid in pids)

    killed = runners.start(fault_server("remembers"), name="other", args=["--sessions", "isolated"])
    pids = [int(_call(killed, _session(killed), "whoami")) for _ in range(3)]
    killed.popen.kill()   # kill -9: PR_SET_PDEATHSIG takes each session's server down too
    killed.popen.wait(harness.WAIT_S)
    assert all(wait_gone(pid) for pid in pids)


def test_status_counts_the_isolated_sessions_of_a_server_applied_from_a_manifest(tmp_path: Path) -> None:
    import json
    import subprocess

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "mem.yaml").write_text(
        "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: mem}\nspec:\n"
        f"  source: {{path: {harness.SERVERS_DIR / 'remembers.py'}}}\n  sessions: isolated\n  maxSessions: 3\n")
    env = {**os.environ, "MCP_RECONCILE_STATE_DIR": str(tmp_path / "state")}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_reconcile", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    try:
        applied = cli("apply", "-f", str(manifests))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        (row,) = json.loads(cli("status", "-f", str(manifests), "-o", "json").stdout)["servers"]
        url = row["url"]
        sessions = [httpx.post(url, json=rpc("initialize", 0, {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            headers={"Accept": "application/json, text/event-stream"}, timeout=harness.WAIT_S)
            .headers["mcp-session-id"] for _ in range(2)]
        assert len(set(sessions)) == 2
        (row,) = json.loads(cli("status", "-f", str(manifests), "-o", "json").stdout)["servers"]
        assert row["isolated_sessions"] == 2 and "2 isolated session(s)" in row["message"]
    finally:
        cli("stop-all")


def test_a_request_the_server_died_holding_is_marked_forwarded_so_no_client_resends_it(runners: Runners) -> None:
    runner = _isolated(runners)
    session = _session(runner)
    answer = post(runner, rpc("tools/call", 5, {"name": "crash", "arguments": {}}), session=session)
    assert answer.status_code == 503
    assert answer.json()["error"]["data"] == {"forwarded": True}
    assert "may have acted on it" in answer.json()["error"]["message"]


def test_a_session_opened_before_isolation_gets_404_and_a_new_session_works(runners: Runners) -> None:
    shared = runners.start(fault_server("remembers"), name="mem")
    old = _session(shared)
    shared.popen.send_signal(signal.SIGTERM)
    assert shared.wait_exit() == 0
    shared.state.remove_run("mem")   # the next runner's record, not this one's exit, is what start() waits for
    isolated = runners.start(fault_server("remembers"), name="mem", args=["--sessions", "isolated"])
    assert post(isolated, rpc("tools/list"), session=old).status_code == 404   # nothing to replay: start over
    assert _call(isolated, _session(isolated), "recall") == ""


def test_a_session_deleted_while_its_server_restarts_leaves_no_process(runners: Runners) -> None:
    import threading

    import psutil

    runner = runners.start(fault_server("slow_initialize"), args=["--sessions", "isolated"],
                           env={"SLOW_INIT_S": "1.5"})
    session = _session(runner)
    (first,) = wait_until(lambda: runner.record().get("session_pids"), what="the session's server")
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first)
    runner_process = psutil.Process(runner.popen.pid)

    def servers() -> set[int]:
        found = set()
        for child in runner_process.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "slow_initialize" in " ".join(child.cmdline()):
                    found.add(child.pid)
            except psutil.Error:   # exited (or reaped) while looked at
                continue
        return found

    known = servers()
    pending = threading.Thread(target=lambda: post(runner, rpc("tools/list"), session=session))
    pending.start()   # the session's next request starts a new server (1.5 s to initialize)
    (starting,) = wait_until(lambda: servers() - known, what="the session's new server starting")
    _delete(runner, session)   # ... and the session ends before it is up
    pending.join(harness.WAIT_S)
    assert wait_gone(starting)
    assert runner.record().get("session_pids") == []
