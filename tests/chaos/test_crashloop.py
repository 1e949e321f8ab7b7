"""Fault servers under the real controller: CrashLoopBackOff, hung servers, forked children, stop and removal.

Each test runs the CLI as a subprocess against a fresh state dir with a private copy of tests/fixtures/servers
(conftest.py: the e2e harness). Deaths are proven by loopback liveness sockets or by psutil, after waits on
status, run records or events; teardown runs stop-all and requires that no process is left.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from e2e_harness import load_fixture_module

pytestmark = pytest.mark.chaos

BACKOFF = {"initialSeconds": 0.2, "maxSeconds": 1, "resetAfterSeconds": 60}
JITTER = 0.1
# Enough consecutive failures to pass 0.2 -> 0.4 -> 0.8 and sit at the 1.0 cap.
FAILURES_TO_SEE = 5
# Bound on accepting a fault server's liveness connection / seeing it close.
LIVENESS_WAIT_S = 30.0


def base_delay_s(failures: int) -> float:
    """The un-jittered delay of the n-th consecutive failure under BACKOFF (SPEC §5: exponential, capped)."""
    return min(BACKOFF["maxSeconds"], BACKOFF["initialSeconds"] * 2 ** (failures - 1))


def write_crash_loop(local) -> None:  # type: ignore[no-untyped-def]
    local.write_manifest("crasher", {"source": {"path": str(local.fault_server("crash_on_start.py"))},
                                     "restartBackoff": BACKOFF})
    local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))}})


def test_a_crashing_server_backs_off_up_to_its_cap_while_a_healthy_one_is_ready(local) -> None:
    write_crash_loop(local)
    local.start_controller()

    backoffs = local.wait_event("server.backoff", server="crasher", count=FAILURES_TO_SEE)
    status = local.wait_until(local.status, lambda s: s["crasher"]["phase"] == "CrashLoopBackOff" and
                              s["steady"]["ready"], what="crasher in CrashLoopBackOff while steady is Ready")

    assert status["steady"]["phase"] == "Running" and status["steady"]["restarts"] == 0, status["steady"]
    assert status["crasher"]["ready"] is False
    assert 0 < status["crasher"]["backoff_delay_s"] <= BACKOFF["maxSeconds"], status["crasher"]
    assert "back-off" in status["crasher"]["message"], status["crasher"]
    failures = [e["failures"] for e in backoffs]
    assert failures == list(range(1, len(backoffs) + 1)), backoffs
    for event in backoffs[1:]:   # the first crash restarts at once (loop/controller.py); later ones back off
        base = base_delay_s(event["failures"])
        assert base * (1 - JITTER) <= event["delay_s"] <= min(base * (1 + JITTER), BACKOFF["maxSeconds"]), event
    delays = [e["delay_s"] for e in backoffs]
    assert delays[1] < delays[2] < delays[3], delays      # growing: 0.4, 0.8, then the cap (bands do not overlap)
    assert max(delays) <= BACKOFF["maxSeconds"] * (1 + JITTER), delays
    assert [e for e in local.events(server="steady") if e["event"] in ("server.backoff", "server.restarting")] == []
    alerts = [e["alert"] for e in local.events("server.phase_changed", server="crasher") if e.get("alert")] + \
        [e["kind"] for e in local.events("alert.raised", server="crasher")]   # (recoveries outside a transition)
    assert alerts.count("critical") == 1 and "recovered" not in alerts, alerts   # one incident, one alert


def test_each_crash_counts_as_one_failure_of_the_backoff(local) -> None:
    write_crash_loop(local)
    controller = local.start_controller()
    local.wait_event("server.backoff", server="crasher", count=FAILURES_TO_SEE)
    controller.stop()

    crashes = (local.state_dir / "logs" / "crasher.log").read_text().count("refusing to start")
    failures = [e["failures"] for e in local.events("server.backoff", server="crasher")]
    assert failures == list(range(1, crashes + 1)), f"{crashes} crashes, backoff failure counts {failures}"


def test_a_hung_server_fails_its_probes_and_is_restarted(local) -> None:
    local.write_manifest("hung", {"source": {"path": str(local.fault_server("hang_on_ping.py"))},
                                  "health": {"intervalSeconds": 0.5, "timeoutSeconds": 0.5, "failureThreshold": 2}})
    local.start_controller()
    first = local.wait_until(lambda: local.run_record("hung") or {}, lambda r: r.get("state") == "running",
                             what="hung serving")

    rows = local.wait_until(local.rows, lambda r: r["hung"]["restarts"] >= 1 and
                            r["hung"]["server_pid"] not in (None, first["server_pid"]),
                            what="hung restarted under a new server pid")

    assert rows["hung"]["ready"] is False
    failed = local.events("probe.failed", server="hung")
    restarting = local.events("server.restarting", server="hung")
    assert len(failed) >= 2, failed
    assert restarting and "unhealthy" in restarting[0]["reason"], restarting
    # the runner swapped a new process in (make-before-break); the hung one is stopped once drained
    local.wait_until(lambda: local.pid_alive(first["server_pid"]), lambda alive: not alive,
                     what="the hung process stopped after the swap")


def test_a_server_that_keeps_hanging_backs_off_like_one_that_keeps_crashing(local) -> None:
    local.write_manifest("hung", {"source": {"path": str(local.fault_server("hang_on_ping.py"))},
                                  "restartBackoff": BACKOFF,
                                  "health": {"intervalSeconds": 0.2, "timeoutSeconds": 0.3, "failureThreshold": 1}})
    local.start_controller()

    backoffs = local.wait_event("server.backoff", server="hung", count=3)

    assert [e["failures"] for e in backoffs] == [1, 2, 3], backoffs
    assert all("unhealthy" in e["error"] for e in backoffs), backoffs
    assert backoffs[0]["delay_s"] == 0 < backoffs[1]["delay_s"] < backoffs[2]["delay_s"], backoffs
    assert backoffs[2]["crash_loop"] is True, backoffs


def test_a_restarted_server_is_not_ready_until_its_new_process_answers_a_probe(local, tmp_path: Path) -> None:
    # healthy in its first life; after the crash it answers the runner's handshake but never a probe
    local.write_manifest("phoenix", {"source": {"path": str(local.fault_server("hang_on_ping.py"))},
                                     "env": {"HANG_MARKER": str(tmp_path / "first-start-done")},
                                     "health": {"intervalSeconds": 0.5, "timeoutSeconds": 0.5,
                                                "failureThreshold": 1000}})
    local.start_controller()
    local.wait_until(local.rows, lambda r: local.probed_ready(r, "phoenix"), what="phoenix Ready on a probe")
    before = local.run_record("phoenix")
    since = local.events_count()

    os.kill(before["server_pid"], signal.SIGKILL)
    serving = local.wait_until(lambda: local.run_record("phoenix") or {},
                               lambda r: r.get("state") == "running" and r.get("server_pid") != before["server_pid"],
                               what="phoenix serving under a new server pid")
    local.wait_event("probe.failed", server="phoenix", since=since, count=2)
    row = local.rows()["phoenix"]

    assert row["server_pid"] == serving["server_pid"]
    assert row["ready"] is False, row
    assert row["phase"] != "Running", row


def test_stop_all_leaves_no_server_and_no_forked_grandchild(local, tmp_path: Path) -> None:
    liveness = load_fixture_module("liveness")
    child_pid_file = tmp_path / "grandchild.pid"
    with liveness.LivenessListener() as listener:
        local.write_manifest("forker", {"source": {"path": str(local.fault_server("forks_child.py"))},
                                        "env": {"CHILD_PID_FILE": str(child_pid_file), **listener.env()}})
        local.cli("apply")
        server_conn = listener.accept(LIVENESS_WAIT_S)
        child_conn = listener.accept(LIVENESS_WAIT_S)
        record = local.run_record("forker")
        grandchild = int(child_pid_file.read_text())
        assert os.getpgid(grandchild) == record["server_pgid"]

        stopped = local.cli("stop-all")

        assert listener.wait_closed(server_conn, LIVENESS_WAIT_S), "the server outlived stop-all"
        assert listener.wait_closed(child_conn, LIVENESS_WAIT_S), "the forked grandchild outlived stop-all"
    assert "stop forker: stopped" in stopped.out, stopped.out
    assert not local.pid_alive(grandchild)
    assert not local.pid_alive(record["runner_pid"], record["runner_create_time"])
    local.wait_no_leftovers("after stop-all")
    assert local.run_record("forker") is None


def test_desired_state_absent_stops_and_removes_a_server_with_its_grandchild(local, tmp_path: Path) -> None:
    liveness = load_fixture_module("liveness")
    child_pid_file = tmp_path / "grandchild.pid"
    with liveness.LivenessListener() as listener:
        spec = {"source": {"path": str(local.fault_server("forks_child.py"))},
                "env": {"CHILD_PID_FILE": str(child_pid_file), **listener.env()}}
        local.write_manifest("forker", spec)
        local.cli("apply")
        conns = [listener.accept(LIVENESS_WAIT_S), listener.accept(LIVENESS_WAIT_S)]
        grandchild = int(child_pid_file.read_text())

        local.write_manifest("forker", {**spec, "desiredState": "absent"})
        applied = local.cli("apply")

        assert all(listener.wait_closed(c, LIVENESS_WAIT_S) for c in conns), "server or grandchild outlived absent"
    assert "- stop" in applied.out and "- uninstall" in applied.out, applied.out
    assert not local.pid_alive(grandchild)
    local.wait_no_leftovers("after desiredState: absent")
    assert not (local.state_dir / "installs" / "forker").exists()
    assert local.run_record("forker") is None
    local.cli("plan", "--detailed-exitcode", expect=0)


def test_a_runner_killed_by_sigkill_leaves_no_grandchild_and_its_server_is_restarted(local, tmp_path: Path) -> None:
    child_pid_file = tmp_path / "grandchild.pid"
    local.write_manifest("forker", {"source": {"path": str(local.fault_server("forks_child.py"))},
                                    "env": {"CHILD_PID_FILE": str(child_pid_file)}})
    local.start_controller()
    local.wait_ready("forker")
    before = local.run_record("forker")
    grandchild = int(local.wait_until(lambda: child_pid_file.read_text() if child_pid_file.exists() else "",
                                      lambda text: text.endswith("\n"), what="the grandchild's pid file"))
    child_pid_file.unlink()

    os.kill(before["runner_pid"], signal.SIGKILL)
    rows = local.wait_until(local.rows, lambda r: local.probed_ready(r, "forker", not_pid=before["server_pid"]),
                            what="forker restarted after its runner was killed")

    assert rows["forker"]["restarts"] == 1
    local.wait_until(lambda: local.pid_alive(grandchild), lambda alive: not alive,
                     what=f"the old grandchild {grandchild} reaped with its group")
    assert not local.pid_alive(before["server_pid"])


def test_a_server_that_prints_its_secrets_leaves_none_in_its_log(local) -> None:
    secret = "sk-live-7f3a9c2e51d84b06"
    local.env["LEAKY_API_KEY"] = secret
    local.write_manifest("leaky", {"source": {"path": str(local.fault_server("leaks_env.py"))},
                                   "env": {"API_KEY": "${LEAKY_API_KEY}", "REGION": "eu-west-1",
                                           "LEAK_ENV": "API_KEY,REGION"}})
    local.cli("apply")
    log_path = local.state_dir / "logs" / "leaky.log"
    text = local.wait_until(lambda: log_path.read_text() if log_path.exists() else "",
                            lambda t: "REGION=eu-west-1 loaded" in t, what="leaky's config lines in its log")

    assert "config API_KEY=(sensitive) loaded" in text, text
    logs = local.cli("logs", "leaky")
    for where in (text, logs.out, *(p.read_text() for p in (local.state_dir / "logs").glob("leaky*")),
                  (local.state_dir / "events.jsonl").read_text()):
        assert secret not in where and secret[:12] not in where


def test_a_secret_inside_a_composed_value_is_scrubbed_from_the_servers_log_too(local) -> None:
    secret = "tok-9d81c2aa7e4b"
    local.env["LEAKY_TOKEN"] = secret
    local.write_manifest("composed", {"source": {"path": str(local.fault_server("leaks_env.py"))},
                                      "env": {"AUTH": "Bearer ${LEAKY_TOKEN}", "LEAK_LAST_WORD": "AUTH"}})
    local.cli("apply")
    log_path = local.state_dir / "logs" / "composed.log"
    text = local.wait_until(lambda: log_path.read_text() if log_path.exists() else "",
                            lambda t: "as the credential" in t, what="the token's line in the log")
    assert secret not in text and secret[:10] not in text, text
    assert "(sensitive)" in text
