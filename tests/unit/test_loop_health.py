"""HealthMonitor behind its prober seam, on a FakeClock: one probe loop per live runner, ended with it, and a
result about a runner that is gone never delivered (issue 12: 188 failed probes against old ports).

The fake probers model the Python 3.11 `asyncio.wait_for` race that let a cancelled loop live on: a probe in
flight when its loop is cancelled returns its (failed) result instead of raising CancelledError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from mcp_reconcile.loop.clock import FakeClock
from mcp_reconcile.loop.health import HealthMonitor
from mcp_reconcile.probe import ProbeResult

pytestmark = pytest.mark.anyio

WAIT_S = 5.0          # bound on every wait; nothing here takes wall time beyond loop turns
LOOP_TURNS = 100      # loop iterations a condition gets to come true (no wall time involved)
INTERVAL_S = 5.0
TIMEOUT_S = 2.0
OLD, NEW = "http://127.0.0.1:40001/mcp", "http://127.0.0.1:40002/mcp"
OK = ProbeResult(True, 1.0, "handshake", "2025-11-25", None)
REFUSED = ProbeResult(False, None, None, None, "ConnectionRefusedError: connection refused")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeProber:
    """A probe session whose probes wait for the test to answer them; a cancel is swallowed like 3.11's
    wait_for does when the answer lands with it: the probe returns REFUSED instead of raising."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.probes = 0
        self.closed = False
        self.in_flight: asyncio.Future[ProbeResult] | None = None

    async def probe(self, timeout_s: float) -> ProbeResult:
        self.probes += 1
        self.in_flight = asyncio.get_running_loop().create_future()
        try:
            return await self.in_flight
        except asyncio.CancelledError:
            return REFUSED   # swallowed: the dead port's refusal arrived with the cancel
        finally:
            self.in_flight = None

    def answer(self, result: ProbeResult) -> None:
        assert self.in_flight is not None, f"no probe of {self.endpoint} in flight"
        self.in_flight.set_result(result)

    async def aclose(self) -> None:
        self.closed = True


class World:
    """The monitor under test, the probers it made (by endpoint, in order) and the results it delivered."""

    def __init__(self) -> None:
        self.clock = FakeClock(start=1000.0)
        self.probers: list[FakeProber] = []
        self.prober_class: type[FakeProber] = FakeProber   # what the next loop probes with
        self.results: list[tuple[str, ProbeResult]] = []
        self.monitor = HealthMonitor(self.clock, lambda name, result: self.results.append((name, result)),
                                     prober=self._make)

    def _make(self, endpoint: str, token: str | None) -> FakeProber:
        prober = self.prober_class(endpoint)
        self.probers.append(prober)
        return prober

    def ensure(self, endpoint: str, runner: tuple[int, float]) -> None:
        self.monitor.ensure("a", endpoint, runner=runner, interval_s=INTERVAL_S, timeout_s=TIMEOUT_S)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A fresh World; its loops are closed afterwards (a fake probe swallows the runner's own cancel)."""
    w = World()
    yield w
    await w.monitor.aclose()


def probe_loops(name: str = "a") -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"probe-{name}" and not t.done()]


async def settle_until(condition: Callable[[], object]) -> None:
    """Let the loop run until `condition` holds; fails after LOOP_TURNS turns (deterministic, no sleep)."""
    for _ in range(LOOP_TURNS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_a_probe_in_flight_when_its_runner_is_replaced_is_dropped_and_its_loop_ends(world: World) -> None:
    with anyio.fail_after(WAIT_S):
        world.ensure(OLD, (100, 1.0))
        await settle_until(lambda: world.probers and world.probers[0].in_flight)
        old, [old_loop] = world.probers[0], probe_loops()

        world.ensure(NEW, (200, 2.0))   # the runner exited and a new one serves elsewhere
        await settle_until(lambda: len(world.probers) == 2 and world.probers[1].in_flight)
        world.probers[1].answer(OK)
        await settle_until(lambda: world.results and old_loop.done())

        assert world.results == [("a", OK)]   # the old runner's refusal never counts against the new one
        assert (old.probes, old.closed) == (1, True)
        assert probe_loops() != [old_loop] and len(probe_loops()) == 1
        world.clock.advance(INTERVAL_S)
        await settle_until(lambda: world.probers[1].in_flight)
        assert [p.probes for p in world.probers] == [1, 2]


async def test_a_loop_ends_with_its_runner_even_when_its_probe_swallows_the_cancel(world: World) -> None:
    with anyio.fail_after(WAIT_S):
        world.ensure(OLD, (100, 1.0))
        await settle_until(lambda: world.probers and world.probers[0].in_flight)

        world.monitor.forget("a")   # the runner exited
        await settle_until(lambda: not probe_loops())

        assert world.results == []
        assert (world.probers[0].probes, world.probers[0].closed) == (1, True)
        assert world.clock.pending_sleepers() == 0


async def test_a_new_runner_on_the_same_endpoint_gets_a_loop_of_its_own(world: World) -> None:
    with anyio.fail_after(WAIT_S):
        world.ensure(OLD, (100, 1.0))
        world.ensure(OLD, (100, 1.0))   # the same runner, seen by a later pass: the loop carries on
        await settle_until(lambda: world.probers and world.probers[0].in_flight)
        assert len(world.probers) == 1
        [old_loop] = probe_loops()

        world.ensure(OLD, (300, 3.0))   # a fixed spec.port: same endpoint, new runner
        await settle_until(lambda: len(world.probers) == 2 and world.probers[1].in_flight)
        world.probers[1].answer(REFUSED)
        await settle_until(lambda: world.results and old_loop.done())

        assert world.results == [("a", REFUSED)]
        assert world.probers[0].probes == 1
        assert len(probe_loops()) == 1


class Stubborn(FakeProber):
    """A probe stuck where a cancel cannot reach it: it ignores the first cancellation, and a second ends it."""

    ignored_cancel = False

    async def probe(self, timeout_s: float) -> ProbeResult:
        self.probes += 1
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.ignored_cancel = True
        await asyncio.get_running_loop().create_future()
        raise AssertionError("never answered")


async def test_aclose_ends_every_loop_within_its_bound_and_names_one_that_outlives_it(world: World) -> None:
    with anyio.fail_after(WAIT_S):
        world.ensure(OLD, (100, 1.0))
        await settle_until(lambda: world.probers and world.probers[0].in_flight)
        world.prober_class = Stubborn
        world.monitor.ensure("c", NEW, runner=(300, 3.0), interval_s=INTERVAL_S, timeout_s=TIMEOUT_S)
        await settle_until(lambda: len(world.probers) == 2 and world.probers[1].probes)

        assert await world.monitor.aclose(timeout_s=0.05) == ["c"]

        stubborn = world.probers[1]
        assert isinstance(stubborn, Stubborn) and stubborn.ignored_cancel
        assert not probe_loops("a") and world.probers[0].closed
        assert world.results == []
        [task] = probe_loops("c")
        task.cancel()
        await settle_until(lambda: task.done())
