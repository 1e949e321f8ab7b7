"""The loop's timing on a FakeClock: what each pass returns (`Done` / `RequeueAfter`) and when every effect
runs, asserted to the exact clock time, without wall time.

Covered: crash backoff (exponential, capped, reset by lasting health), CrashLoopBackOff, transient vs
permanent failures side by side, dependsOn gating of starts and of stops, and the removal grace of a vanished
manifest. The world (recording effects over a real tmp state dir, injected watchers) is
tests/support/loop_world.py; the clock starts at 1000.0 and backoff jitter is 0.
"""

from __future__ import annotations

import pytest
from loop_world import Loop, Probe

from mcp_reconcile.errors import PermanentError, TransientError
from mcp_reconcile.loop.result import DONE, Done, RequeueAfter, soonest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def last_result(loop: Loop, name: str) -> Done | RequeueAfter:
    return [r for n, r in loop.results if n == name][-1]


async def crash(loop: Loop, name: str) -> None:
    """The runner of `name` records an exit and the exit watcher wakes the loop; the due passes run."""
    loop.effects.exit(name, 1)
    loop.controller.on_runner_exit(name)
    await loop.run_due()


# --- the pass's result --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("results", "expected"), [
    pytest.param([], DONE, id="nothing asked: done"),
    pytest.param([DONE, DONE], DONE, id="only done: done"),
    pytest.param([RequeueAfter(2.0), DONE, RequeueAfter(0.5)], RequeueAfter(0.5), id="the soonest requeue wins"),
    pytest.param([RequeueAfter(0.0), RequeueAfter(3.0)], RequeueAfter(0.0), id="at once beats any delay"),
])
def test_the_reasons_to_come_back_in_one_pass_collapse_into_the_soonest(
        results: list[Done | RequeueAfter], expected: Done | RequeueAfter) -> None:
    assert soonest(results) == expected


def test_a_requeue_cannot_be_in_the_past() -> None:
    with pytest.raises(ValueError, match="in the past"):
        RequeueAfter(-1.0)


# --- backoff timing and CrashLoopBackOff --------------------------------------------------------------------

async def test_crashes_back_off_exponentially_up_to_the_cap_and_lasting_health_resets_it(loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}, "
                    "restartBackoff: {initialSeconds: 1, maxSeconds: 4, resetAfterSeconds: 10}}")
    loop.load()
    await loop.run_due()
    assert loop.times_of("start", "a") == [1000.0]

    await crash(loop, "a")                          # the first crash restarts at once
    assert loop.times_of("start", "a") == [1000.0, 1000.0]
    assert loop.phase("a") == "Starting"

    for delay, restarted_at in ((2.0, 1002.0), (4.0, 1006.0), (4.0, 1010.0)):   # 1 * 2**(n-1), capped at 4
        await crash(loop, "a")
        assert last_result(loop, "a") == RequeueAfter(delay)
        assert loop.due_in("a") == delay
        entry = loop.controller.ledger.get("a")
        assert (entry["phase"], entry["message"]) == ("CrashLoopBackOff",
                                                      f"back-off {delay:.1f}s restarting failed server")
        assert (entry["in_crash_loop"], entry["backoff_delay_s"]) == (True, delay)
        await loop.run_for(delay - 0.5)
        assert loop.times_of("start", "a")[-1] < restarted_at   # not a moment early
        await loop.run_for(0.5)
        assert loop.times_of("start", "a")[-1] == restarted_at
    assert loop.controller.ledger.get("a")["restarts"] == 4

    loop.controller.on_probe("a", Probe(True))       # healthy from t=1010 ...
    await loop.run_due()
    assert loop.phase("a") == "Running"
    await loop.run_for(10.0)
    loop.controller.on_probe("a", Probe(True))       # ... for resetAfterSeconds: the backoff resets
    await crash(loop, "a")
    assert loop.times_of("start", "a")[-1] == 1020.0   # restarted at once again
    assert loop.phase("a") == "Starting"


async def test_a_transient_start_failure_retries_with_backoff_while_a_permanent_install_failure_waits_for_an_edit(
        loop: Loop) -> None:
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}, restartBackoff: {initialSeconds: 1, maxSeconds: 60}}")
    loop.write("b", "{source: {npm: 'pkg-b@1.0.0'}, restartBackoff: {initialSeconds: 1, maxSeconds: 60}}")
    loop.effects.errors[("start", "a")] = TransientError("a", "start", "runner did not answer in time")
    loop.effects.errors[("install", "b")] = PermanentError("b", "install", "npm: pkg-b@1.0.0 not found (E404)")
    loop.load()
    await loop.run_for(10.0)

    assert loop.times_of("start", "a") == [1000.0, 1000.0, 1002.0, 1006.0]   # at once, then 2, 4, 8 s
    assert loop.due_in("a") == 4.0                                           # next at 1014
    assert loop.controller.ledger.get("a").get("restarts", 0) == 0           # it never ran: no restart
    assert loop.times_of("install", "b") == [1000.0]                         # not retried
    assert loop.due_in("b") is None
    assert loop.phase("b") == "Failed" and "E404" in loop.controller.ledger.get("b")["message"]

    del loop.effects.errors[("install", "b")]
    loop.write("b", "{source: {npm: 'pkg-b@1.0.1'}, restartBackoff: {initialSeconds: 1, maxSeconds: 60}}")
    loop.controller.on_manifests_changed({loop.dir / "b.yaml"})
    await loop.run_due()
    assert loop.times_of("install", "b") == [1000.0, 1010.0]                 # the edit: tried again at once
    assert loop.times_of("start", "b") == [1010.0]


# --- dependsOn gating ---------------------------------------------------------------------------------------

STORE = "{source: {npm: 'pkg-store@1.0.0'}}"
APP = "{source: {npm: 'pkg-app@1.0.0'}, dependsOn: [store]}"


async def test_a_start_waits_for_its_dependency_to_be_ready_rechecking_every_second(loop: Loop) -> None:
    from mcp_reconcile.loop.controller import DEPENDENCY_WAIT_S

    loop.write("store", STORE)
    loop.write("app", APP)
    loop.load()
    await loop.run_due()
    assert loop.times_of("install", "app") == [1000.0]   # installing is not gated
    assert loop.times_of("start", "store") == [1000.0]
    assert loop.times_of("start", "app") == []           # store is Starting, not Ready
    assert last_result(loop, "app") == RequeueAfter(DEPENDENCY_WAIT_S) == RequeueAfter(1.0)

    await loop.run_for(2.5)                              # looked at again at 1001 and 1002, still waiting
    assert [r for n, r in loop.results if n == "app"] == [RequeueAfter(1.0)] * 3
    assert loop.due_in("app") == 0.5 and loop.times_of("start", "app") == []

    loop.controller.on_probe("store", Probe(True))       # store turns Ready: app is woken at once
    await loop.run_due()
    assert loop.phase("store") == "Running"
    assert loop.times_of("start", "app") == [1002.5]


async def test_a_stop_waits_for_the_dependents_that_stop_too(loop: Loop) -> None:
    loop.write("store", STORE)
    loop.write("app", APP)
    loop.load()
    await loop.run_due()
    loop.controller.on_probe("store", Probe(True))
    await loop.run_due()
    assert loop.times_of("start", "app") == [1000.0]

    loop.write("store", "{source: {npm: 'pkg-store@1.0.0'}, desiredState: stopped}")
    loop.write("app", "{source: {npm: 'pkg-app@1.0.0'}, dependsOn: [store], desiredState: stopped}")
    loop.controller.reload("test")
    result = await loop.controller.reconcile("store")    # store first: app still runs, so store waits
    assert result == RequeueAfter(1.0)
    assert loop.times_of("stop", "store") == []
    assert loop.controller.queue.pending() == ["app"]    # and app is woken to stop first
    loop.controller.schedule("store", result)
    await loop.run_due()
    assert loop.times_of("stop", "app") == [1000.0]
    await loop.run_for(1.0)
    assert loop.times_of("stop", "store") == [1001.0]


# --- removal grace ------------------------------------------------------------------------------------------

async def test_a_vanished_manifest_removes_its_server_exactly_when_the_grace_ends(loop: Loop) -> None:
    from mcp_reconcile.loop.controller import REMOVAL_GRACE_S

    path = loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    path.unlink()
    loop.controller.on_manifests_changed({path})
    assert loop.due_in("a") == REMOVAL_GRACE_S == 2.0
    await loop.run_for(1.5)
    assert loop.effects.calls == [("install", "a"), ("start", "a")]
    assert "a" in loop.controller.desired
    await loop.run_for(0.5)
    assert loop.effects.timeline[2:] == [(1002.0, "stop", "a"), (1002.0, "uninstall", "a")]
    assert "a" not in loop.controller.desired


async def test_a_manifest_rewritten_within_the_grace_keeps_its_server(loop: Loop) -> None:
    path = loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.load()
    await loop.run_due()
    path.unlink()
    loop.controller.on_manifests_changed({path})
    await loop.run_for(1.0)
    loop.write("a", "{source: {npm: 'pkg-a@1.0.0'}}")
    loop.controller.on_manifests_changed({path})
    await loop.run_for(10.0)
    assert loop.effects.calls == [("install", "a"), ("start", "a")]
    assert loop.controller.removal_due == {}
