"""The controller's per-server pass on a FakeClock, with recording effects behind the Effects seam (STYLE §5).

The world is tests/support/loop_world.py: a real tmp state dir, recording effects and watchers injected, and a
FakeClock; the pass observes, plans and records status as in production.
Covered here: one event per phase transition, retries decided by the error's kind, restart counts, the backoff
of a hung server, an edit closing the alert incident, a held server's crash alert, and ${VAR}s withheld.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog
from loop_world import HEAD, Loop, Probe

from mcp_reconcile.errors import PermanentError, TransientError
from mcp_reconcile.loop.controller import Controller
from mcp_reconcile.loop.exits import ExitWatcher
from mcp_reconcile.loop.health import HealthMonitor
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir

WELL_BEHAVED = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "servers" / "well_behaved.py"
# Bound on the controller looking at a server again after its runner exited (a pidfd wake takes milliseconds).
REQUEUE_WAIT_S = 5.0

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def events_named(logs: list[dict[str, Any]], *names: str) -> list[tuple[str, str | None, str | None]]:
    return [(e["event"], e.get("server"), e.get("phase")) for e in logs if e["event"] in names]


# --- one event per phase transition ------------------------------------------------------------------------

async def test_each_phase_transition_is_one_event_with_the_alert_it_raised(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.effects.errors[("install", "a")] = PermanentError("a", "install", "npm: pkg-a@1.0.0 not found (E404)")
    with structlog.testing.capture_logs() as logs:
        loop.load()
        await loop.run_due()
    transitions = [e for e in logs if e["event"] in ("server.phase_changed", "alert.raised")]
    assert [(e["event"], e["phase"], e.get("alert")) for e in transitions] == [
        ("server.phase_changed", "Failed", "critical")]


async def test_a_removed_server_changes_phase_once(loop: Loop) -> None:
    path = loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    path.unlink()
    loop.load()
    loop.clock.advance(3.0)   # past the removal grace
    with structlog.testing.capture_logs() as logs:
        loop.load()
        await loop.run_due()
        loop.controller.on_runner_exit("a")   # the stopped runner's exit wakes one more pass
        await loop.run_due()
    assert loop.effects.calls[-2:] == [("stop", "a"), ("uninstall", "a")]
    assert [(e["phase"], e["previous_phase"]) for e in logs if e["event"] == "server.phase_changed"] == [
        ("Stopped", "Starting")]
    assert loop.controller.ledger.names() == []


# --- retries by the error's kind ---------------------------------------------------------------------------

async def test_a_permanent_install_failure_is_failed_with_its_cause_and_not_retried_until_the_spec_changes(
        loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.effects.errors[("install", "a")] = PermanentError("a", "install", "local server file /srv/a.py not found")
    loop.load()
    assert await loop.run_due() == ["a"]

    entry = loop.controller.ledger.get("a")
    assert entry["phase"] == "Failed"
    assert "local server file /srv/a.py not found" in entry["message"]
    installed = next(c for c in entry["conditions"] if c["type"] == "Installed")
    assert (installed["status"], installed["reason"]) == ("False", "InstallFailed")
    assert "not found" in installed["message"]
    assert entry.get("restarts", 0) == 0
    assert loop.due_in("a") is None and loop.controller.queue.pending() == []   # no backoff retry

    loop.clock.advance(600.0)
    loop.controller._resync()   # the resync timer looks at it again: still not retried
    await loop.run_due()
    assert loop.effects.calls == [("install", "a")]

    del loop.effects.errors[("install", "a")]
    loop.write("a", "{source: {npm: 'pkg-a@1.0.1'}}")   # the spec changes: tried again
    loop.load()
    await loop.run_due()
    assert loop.effects.calls == [("install", "a"), ("install", "a"), ("start", "a")]
    assert loop.phase("a") == "Starting" and loop.controller.ledger.get("a").get("restarts", 0) == 0


async def test_a_transient_install_failure_backs_off_and_its_later_start_is_no_restart(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}, restartBackoff: {initialSeconds: 2, maxSeconds: 30}}")
    loop.effects.errors[("install", "a")] = TransientError("a", "install", "npm: ECONNRESET")
    loop.load()
    await loop.run_due()     # 1st failure: retried at once
    await loop.run_due()     # 2nd failure: initialSeconds * 2
    assert loop.due_in("a") == 4.0
    assert loop.phase("a") == "Failed" and "ECONNRESET" in loop.controller.ledger.get("a")["message"]
    loop.clock.advance(3.9)
    assert await loop.run_due() == []
    loop.clock.advance(0.1)
    assert await loop.run_due() == ["a"]   # 3rd failure: 8 s
    assert loop.due_in("a") == 8.0

    del loop.effects.errors[("install", "a")]
    loop.clock.advance(8.0)
    assert await loop.run_due() == ["a"]
    assert loop.effects.calls == [("install", "a")] * 4 + [("start", "a")]
    assert loop.controller.ledger.get("a").get("restarts", 0) == 0   # it never ran before: no restart
    assert loop.phase("a") == "Starting"


async def test_a_start_after_a_crash_counts_as_one_restart(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    loop.effects.exit("a", 1)
    loop.controller.on_runner_exit("a")
    await loop.run_due()
    await loop.run_due()
    assert loop.effects.calls == [("install", "a"), ("start", "a"), ("start", "a")]
    assert loop.controller.ledger.get("a")["restarts"] == 1


# --- the seed's flags end as apply does --------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "expected"), [
    pytest.param({"monitor": True, "test_after": True}, 1, id="--all exits 1 after a failed install"),
    pytest.param({"monitor": True}, 1, id="--monitor exits 1 after a failed install"),
    pytest.param({}, 0, id="plain run is a daemon and exits 0 when told to stop"),
])
async def test_a_failed_install_sets_the_exit_code_of_the_seeds_flags(
        loop: Loop, flags: dict[str, bool], expected: int) -> None:
    from mcp_reconcile.loop import ending

    for key, value in flags.items():
        setattr(loop.controller.opts, key, value)
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.write("b", "{source: {npm: 'pkg-b@1.0.0'}}")
    loop.effects.errors[("install", "a")] = PermanentError("a", "install", "uv: no-such-pkg was not found")
    loop.load()
    await loop.run_due()
    c = loop.controller
    assert ending.exit_code(c.opts, failed=c.failed, had_problems=c.had_problems, test_code=c.test_code) == expected
    text = ending.farewell(loop.state, failed=c.failed)
    assert "failed: a: install failed: uv: no-such-pkg was not found" in text
    assert "1 runner(s) keep running:\n  b  http://127.0.0.1:1/b" in text
    assert f"Stop them with: mcp-reconcile stop-all --state-dir {loop.state.root}" in text


async def test_a_clean_run_with_the_seeds_flags_exits_0_and_a_failed_suite_exits_1(loop: Loop) -> None:
    from mcp_reconcile.loop import ending

    loop.controller.opts.monitor = loop.controller.opts.test_after = True
    loop.write("b", "{source: {npm: 'pkg-b@1.0.0'}}")
    loop.load()
    await loop.run_due()
    c = loop.controller
    assert ending.exit_code(c.opts, failed=c.failed, had_problems=c.had_problems, test_code=0) == 0
    assert ending.exit_code(c.opts, failed=c.failed, had_problems=c.had_problems, test_code=1) == 1


# --- hung, edited and held servers; withheld variables -----------------------------------------------------

def hang(loop: Loop, name: str, probes: int = 3) -> None:
    """`probes` failed probes in a row (a server that stopped answering)."""
    for _ in range(probes):
        loop.controller.on_probe(name, Probe(False))


async def test_a_hung_servers_restarts_wait_out_its_backoff(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}, restartBackoff: {initialSeconds: 1, maxSeconds: 30}}")
    loop.load()
    await loop.run_due()
    restarts = [("stop", "a"), ("start", "a")]   # (no runner to swap generations in: stop, then start)

    hang(loop, "a")
    await loop.run_due()          # the first hang restarts at once
    assert loop.effects.calls[-2:] == restarts
    hang(loop, "a")
    await loop.run_due()          # so does the second; its backoff is 2 s from now
    assert loop.effects.calls.count(("stop", "a")) == 2
    assert loop.due_in("a") == 2.0

    loop.clock.advance(0.5)
    hang(loop, "a")
    await loop.run_due()          # the third hang within the backoff: not restarted yet
    assert loop.effects.calls.count(("stop", "a")) == 2
    assert loop.due_in("a") == 1.5
    loop.clock.advance(1.5)
    await loop.run_due()
    assert loop.effects.calls.count(("stop", "a")) == 3
    assert loop.controller.ledger.get("a")["restarts"] == 3


def alerts_of(logs: list[dict[str, Any]]) -> list[str]:
    return [e["alert"] for e in logs if e["event"] == "server.phase_changed" and e.get("alert")]


async def crash(loop: Loop, name: str) -> None:
    loop.effects.exit(name, 1)
    loop.controller.on_runner_exit(name)
    await loop.run_due()


async def test_an_edit_that_resets_the_backoff_ends_the_alert_incident(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    with structlog.testing.capture_logs() as logs:
        await crash(loop, "a")          # restarted at once
        await crash(loop, "a")          # CrashLoopBackOff: the incident opens
        assert loop.phase("a") == "CrashLoopBackOff"
        loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}, args: [--fixed]}")
        loop.controller.on_manifests_changed({loop.dir / "a.yaml"})   # the edit cuts the wait short
        await loop.run_due()
        await crash(loop, "a")
        await crash(loop, "a")          # the new generation crash-loops too: a new incident
    assert loop.phase("a") == "CrashLoopBackOff"
    assert alerts_of(logs).count("critical") == 2, alerts_of(logs)


async def test_a_held_servers_crash_raises_a_critical_alert(loop: Loop) -> None:
    path = loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    path.write_text(HEAD + "metadata: {name: a}\nspec: {source: {npm: [oops}\n")   # no longer parses
    loop.restart_controller()       # a controller started on the broken file: no spec for it at all
    loop.load()
    loop.controller.queue.add("a")
    await loop.run_due()
    assert "a" in loop.controller.held and loop.phase("a") == "Running"
    with structlog.testing.capture_logs() as logs:
        loop.effects.exit("a", 1)
        loop.controller.on_runner_exit("a")
        await loop.run_due()
    assert loop.phase("a") == "Failed"
    assert alerts_of(logs) == ["critical"]
    assert loop.effects.calls.count(("start", "a")) == 1   # (held: not restarted)


async def test_the_variables_of_blocked_and_unreadable_manifests_are_withheld_from_other_servers(
        loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOOD_TOKEN", "BLOCKED_TOKEN", "BROKEN_TOKEN"):
        monkeypatch.setenv(var, f"value-of-{var}")
    loop.write("good", "{source: {npm: 'pkg@1.0.0'}, env: {T: '${GOOD_TOKEN}'}}")
    loop.write("blocked", "{source: {npm: 'pkg@1.0.0'}, dependsOn: [nobody], env: {T: '${BLOCKED_TOKEN}'}}")
    (loop.dir / "broken.yaml").write_text(HEAD + "metadata: {name: broken}\nspec: {env: {T: '${BROKEN_TOKEN}'\n")
    loop.load()
    assert set(loop.controller.desired) == {"good"}
    inherited = loop.effects.inherited_env()
    for var in ("GOOD_TOKEN", "BLOCKED_TOKEN", "BROKEN_TOKEN"):
        assert var not in inherited, var


def test_after_a_failed_apply_install_status_says_failed_with_the_cause_not_installing(tmp_path: Path) -> None:
    """`apply` records what its outcomes mean as the loop does (readiness.record_outcomes), so that `status`
    shows a failed install as Failed with its cause, not as "Installing ... not installed"."""
    from mcp_reconcile import conditions
    from mcp_reconcile.apply import Outcome
    from mcp_reconcile.ledger import Ledger
    from mcp_reconcile.model import Action, ActionKind, ObservedServer
    from mcp_reconcile.readiness import memory_of, record_outcomes

    ledger = Ledger(StateDir(tmp_path / "state"))
    error = "nope: install failed: uv: mcp-no-such-pkg was not found in the package registry"
    record_outcomes(ledger, [Outcome(Action(ActionKind.install, "nope", "new server"), False, error=error,
                                     permanent=True),
                             Outcome(Action(ActionKind.start, "nope", "new server"), False, skipped=True,
                                     error="skipped: an earlier action on nope failed")])

    phase, conds, message = conditions.evaluate(None, ObservedServer("nope"), memory_of(ledger.get("nope")))
    assert (phase.value, message) == ("Failed", error)
    installed = next(c for c in conds if c.type == "Installed")
    assert (installed.status, installed.reason, installed.message) == ("False", "InstallFailed", error)


# --- an exit recorded during a pass ------------------------------------------------------------------------

async def _pass_that_sees_the_exit_late(state: StateDir, manifest: Path, runner: subprocess.Popen[bytes]) -> str:
    """A pass whose first look saw the runner serving and whose last look (`_after_pass`) sees the exit it
    recorded in between (a failed probe's pass races the runner's exit); then the runner exits. Returns the
    name the controller's queue hands out next."""
    controller = Controller(Options(state_dir=str(state.root), manifests=[str(manifest)]), state)
    controller.exits = ExitWatcher(asyncio.get_running_loop(), controller.on_runner_exit)
    controller.health = HealthMonitor(controller.clock, controller.on_probe)
    controller.reload("test")
    spec = controller.desired["a"]
    state.write_install({"server": "a", "source": str(spec.source), "resolved_version": "1", "installer": "local",
                         "generation": spec.install_generation, "digests": dict(spec.digests), "installed_at": 0.0})
    identity = psutil.Process(runner.pid)
    record = {"server": "a", "runner_pid": runner.pid, "runner_create_time": identity.create_time(),
              "runner_cmdline": identity.cmdline(), "server_pid": None, "endpoint": "http://127.0.0.1:1/mcp",
              "generation": spec.runtime_generation, "digests": dict(spec.digests), "started_at": 0.0,
              "state": "running"}
    state.write_run(record)  # type: ignore[arg-type]
    assert controller.exits.watch("a", runner.pid)   # what the pass that saw it serving did
    try:
        state.write_run({**record, "state": "exited", "exit": {"code": 1, "signal": None, "at": time.time()}})
        # the pass returns "again" (loop/result.py), which the worker applies to the queue
        controller.schedule("a", controller._after_pass("a", spec, controller.ledger.get("a").get("phase")))
        assert runner.stdin is not None
        runner.stdin.close()   # the runner leaves right after recording the exit
        return await asyncio.wait_for(controller.queue.get(), REQUEUE_WAIT_S)
    finally:
        controller.exits.close()
        await controller.health.aclose()


async def test_a_runner_exit_recorded_during_a_pass_is_still_reconciled(
        state_dir: StateDir, write_manifest: Callable[..., Path]) -> None:
    """Found while writing the review fixes: an exit recorded during a pass was lost until the next resync. With
    the real exit watcher (a pidfd) on a real process: the pass returns "again", or the exit wakes it."""
    manifest = write_manifest(HEAD + f"metadata: {{name: a}}\nspec: {{source: {{path: {WELL_BEHAVED}}}}}\n")
    runner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with structlog.testing.capture_logs():
            name = await _pass_that_sees_the_exit_late(state_dir, manifest, runner)
    finally:
        runner.kill()
        runner.wait(timeout=30)
    assert name == "a"
