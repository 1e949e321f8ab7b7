"""The one injected clock of the loop (STYLE §2): monotonic time plus a sleep that tests control.

Decisions never read `time.time()`: a wall-clock jump must not fire or stall a backoff. The loop and the
queue read a `Clock`; production passes `SystemClock`, tests pass `FakeClock` and move time by hand, so
backoff and requeue timing are asserted exactly, without wall time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and a sleep measured on the same scale."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock for tests: `now()` moves only through `advance()`, which wakes the sleepers that are due.

    Sleepers wake in deadline order (ties in the order they went to sleep). A sleeper whose task is
    cancelled leaves at once: its future is cancelled synchronously by `Task.cancel()`, so
    `pending_sleepers()` is exact right after the cancel.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and wake, in deadline order, every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Return once `advance()` has moved time past now + seconds; a due sleep still yields once."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def pending_sleepers(self) -> int:
        """How many sleeps are waiting for time to move (cancelled ones do not count)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())


def wall_now() -> float:
    """Wall time, for the timestamps people read (state.json, reports); never for a decision."""
    return time.time()
