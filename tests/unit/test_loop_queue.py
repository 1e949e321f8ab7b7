"""WorkQueue on a FakeClock: de-duplication, one holder per name, delays, wake-ups, shutdown (exact times)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest

from mcp_reconcile.loop.clock import FakeClock
from mcp_reconcile.loop.queue import QueueShutDown, WorkQueue

pytestmark = pytest.mark.anyio

WAIT_S = 5.0            # bound on every wait; a pass takes microseconds
LOOP_TURNS = 100        # loop iterations a blocked get() gets to settle (no wall time involved)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock)


async def settle_until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds; fails after LOOP_TURNS turns (deterministic, no sleep)."""
    for _ in range(LOOP_TURNS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def settle() -> None:
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)


def test_repeated_adds_of_a_name_collapse_into_one(queue: WorkQueue) -> None:
    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert queue.pending() == ["a", "b"]
    assert len(queue) == 2


async def test_names_are_handed_out_in_fifo_order(queue: WorkQueue) -> None:
    for name in ["c", "a", "b"]:
        queue.add(name)
    with anyio.fail_after(WAIT_S):
        assert [await queue.get() for _ in range(3)] == ["c", "a", "b"]
    assert queue.pending() == []


async def test_a_name_added_during_its_pass_is_handed_out_again_after_done(queue: WorkQueue) -> None:
    queue.add("a")
    with anyio.fail_after(WAIT_S):
        assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert queue.pending() == []           # one worker per server: not handed out while processing
    assert len(queue) == 1
    queue.done("a")
    assert queue.pending() == ["a"]
    with anyio.fail_after(WAIT_S):
        assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_done_without_a_new_add_leaves_nothing_behind(queue: WorkQueue) -> None:
    queue.add("a")
    with anyio.fail_after(WAIT_S):
        await queue.get()
    queue.done("a")
    queue.done("a")                        # a second done is harmless
    assert queue.pending() == [] and len(queue) == 0 and queue.next_due_in() is None


def test_duplicate_delayed_adds_keep_the_earliest_due_time(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a", after_s=10)
    queue.add("a", after_s=5)
    queue.add("a", after_s=20)
    assert queue.next_due_in() == 5
    clock.advance(4)
    assert queue.pending() == [] and queue.next_due_in() == 1
    clock.advance(1)
    assert queue.pending() == ["a"]
    clock.advance(20)
    assert queue.pending() == ["a"]        # the later adds left no second entry
    assert len(queue) == 1


def test_an_immediate_add_cuts_a_delay_short(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a", after_s=30)
    queue.add("a")
    assert queue.pending() == ["a"]
    assert queue.next_due_in() == 0
    clock.advance(30)
    assert queue.pending() == ["a"]
    assert len(queue) == 1


def test_a_delayed_add_of_a_name_already_due_is_dropped(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a")
    queue.add("a", after_s=5)
    assert len(queue) == 1
    clock.advance(5)
    assert queue.pending() == ["a"]


def test_names_whose_delay_passed_join_the_queue_in_due_order(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("x", after_s=3)
    queue.add("y", after_s=2)
    clock.advance(5)
    queue.add("z")                         # added after x and y were due: it comes after them
    assert queue.pending() == ["y", "x", "z"]


async def test_a_delayed_add_during_a_pass_waits_for_its_time(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a")
    with anyio.fail_after(WAIT_S):
        await queue.get()
    queue.add("a", after_s=5)              # the pass said RequeueAfter(5)
    queue.done("a")
    assert queue.pending() == [] and queue.next_due_in() == 5
    clock.advance(5)
    assert queue.pending() == ["a"]


async def test_get_blocks_until_the_delay_has_passed_on_the_clock(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a", after_s=5)
    getter = asyncio.ensure_future(queue.get())
    await settle_until(lambda: clock.pending_sleepers() == 1)
    clock.advance(4.5)
    await settle()
    assert not getter.done()
    clock.advance(0.5)
    with anyio.fail_after(WAIT_S):
        assert await getter == "a"
    assert clock.pending_sleepers() == 0


async def test_an_immediate_add_wakes_a_blocked_getter(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("slow", after_s=60)
    getter = asyncio.ensure_future(queue.get())
    await settle_until(lambda: clock.pending_sleepers() == 1)
    queue.add("a")
    with anyio.fail_after(WAIT_S):
        assert await getter == "a"
    assert clock.pending_sleepers() == 0   # its clock sleep was cancelled, not left behind
    assert queue.next_due_in() == 60


async def test_an_earlier_delayed_add_shortens_a_blocked_getters_wait(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("late", after_s=10)
    getter = asyncio.ensure_future(queue.get())
    await settle_until(lambda: clock.pending_sleepers() == 1)
    queue.add("early", after_s=2)
    await settle_until(lambda: clock.pending_sleepers() == 1 and not getter.done())
    clock.advance(2)
    with anyio.fail_after(WAIT_S):
        assert await getter == "early"


async def test_an_idle_getter_waits_without_a_clock_sleep(queue: WorkQueue, clock: FakeClock) -> None:
    getter = asyncio.ensure_future(queue.get())
    await settle()
    assert not getter.done() and clock.pending_sleepers() == 0
    queue.add("a")
    with anyio.fail_after(WAIT_S):
        assert await getter == "a"


async def test_shutdown_wakes_every_blocked_getter(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("later", after_s=30)
    getters = [asyncio.ensure_future(queue.get()) for _ in range(2)]
    await settle_until(lambda: clock.pending_sleepers() == 2)
    queue.shutdown()
    with anyio.fail_after(WAIT_S):
        results = await asyncio.gather(*getters, return_exceptions=True)
    assert [type(r) for r in results] == [QueueShutDown, QueueShutDown]
    assert clock.pending_sleepers() == 0
    queue.add("a")                         # ignored once shut down
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_a_cancelled_getter_leaves_no_clock_sleep_behind(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add("a", after_s=5)
    getter = asyncio.ensure_future(queue.get())
    await settle_until(lambda: clock.pending_sleepers() == 1)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert clock.pending_sleepers() == 0
    clock.advance(5)
    assert queue.pending() == ["a"]
