"""A de-duplicating, delaying work queue of server names (client-go workqueue semantics, on asyncio).

Every wake (manifest edit, runner exit, failed probe, resync, requeue-after) only adds a server name;
the pass itself is level-based, so repeated wakes collapse into one pass. The bookkeeping:

    _ready       names due now and not being processed, in the order `get()` hands them out (FIFO)
    _dirty       names due now: everything in `_ready`, plus names being processed that were added
                 again during their pass (handed out once more after `done()`)
    _processing  names a worker holds between `get()` and `done()`; one worker per server at a time
    _waiting     name -> due time of delayed adds; never dirty at the same time (an immediate add
                 moves a name out of `_waiting`, a delayed add of a dirty name is dropped)

Delayed names become due lazily: every public method first moves the names whose due time has passed
(on the injected Clock) into `_ready`, in due-time order, so the order is exact under `FakeClock`. A
blocked `get()` waits on a future that `add()`/`done()`/`shutdown()` resolve, raced against one
`Clock.sleep` until the earliest due time: there is no polling and no background task to clean up.

Not thread-safe: call it from the event loop's thread (the watcher delivers on the loop already).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque

from mcp_reconcile.loop.clock import Clock


class QueueShutDown(Exception):
    """Raised by `WorkQueue.get()` once the queue is shut down (named after client-go's ShutDown)."""


class WorkQueue:
    """Per-server work queue: de-duplicated, one holder per name, delayed adds keep the earliest time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ready: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiting: dict[str, float] = {}
        self._due_heap: list[tuple[float, int, str]] = []   # may hold stale entries; _waiting decides
        self._seq = itertools.count()
        self._wakeups: set[asyncio.Future[None]] = set()
        self._shut_down = False

    def add(self, name: str, *, after_s: float = 0.0) -> None:
        """Ask for a pass over `name`, now or after `after_s` seconds (ignored once shut down).

        An immediate add of a delayed name makes it due now: an edit cuts the backoff wait short.
        """
        if self._shut_down:
            return
        self._promote_due()
        if after_s > 0:
            self._add_later(name, self._clock.now() + after_s)
        else:
            self._add_now(name)

    async def get(self) -> str:
        """Wait for the next due name and hand it out; the caller owns it until `done(name)`."""
        while True:
            if self._shut_down:
                raise QueueShutDown
            self._promote_due()
            if self._ready:
                name = self._ready.popleft()
                self._dirty.discard(name)
                self._processing.add(name)
                return name
            await self._wait_for_change(self._next_delay())

    def done(self, name: str) -> None:
        """Release `name`; if it was added again during its pass, it is due again now."""
        self._promote_due()
        if name not in self._processing:
            return
        self._processing.discard(name)
        if name in self._dirty:
            self._ready.append(name)
            self._wake_getters()

    def pending(self) -> list[str]:
        """Names `get()` would hand out now, in order (dirty names still being processed excluded)."""
        self._promote_due()
        return list(self._ready)

    def next_due_in(self) -> float | None:
        """Seconds until a name is ready: 0.0 if one is, None if nothing is ready or delayed."""
        self._promote_due()
        if self._ready:
            return 0.0
        return self._next_delay()

    def delayed(self) -> dict[str, float]:
        """Delayed names and the Clock time each becomes due (for status and for tests on a FakeClock)."""
        self._promote_due()
        return dict(self._waiting)

    def shutdown(self) -> None:
        """Stop handing out names: every blocked and future `get()` raises QueueShutDown.

        Names still queued are dropped, which is safe for level-based passes: the next start plans
        every server from scratch.
        """
        self._shut_down = True
        self._wake_getters()

    def __len__(self) -> int:
        """Names the queue will still hand out: due now (also those being processed) or delayed."""
        self._promote_due()
        return len(self._dirty) + len(self._waiting)

    def _add_now(self, name: str) -> None:
        self._waiting.pop(name, None)          # its heap entry goes stale
        if name in self._dirty:
            return
        self._dirty.add(name)
        if name not in self._processing:
            self._ready.append(name)
            self._wake_getters()

    def _add_later(self, name: str, due: float) -> None:
        if name in self._dirty:
            return                             # already due now, which is earlier
        current = self._waiting.get(name)
        if current is not None and current <= due:
            return                             # the earliest due time wins
        self._waiting[name] = due
        heapq.heappush(self._due_heap, (due, next(self._seq), name))
        self._wake_getters()                   # a blocked get() may need to wake earlier

    def _promote_due(self) -> None:
        """Make every delayed name whose time has come due now, earliest first."""
        now = self._clock.now()
        while (due := self._earliest_due()) is not None and due <= now:
            _, _, name = heapq.heappop(self._due_heap)
            self._add_now(name)

    def _earliest_due(self) -> float | None:
        """Earliest live due time, dropping stale heap entries on the way."""
        heap = self._due_heap
        while heap and self._waiting.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _next_delay(self) -> float | None:
        due = self._earliest_due()
        return None if due is None else max(0.0, due - self._clock.now())

    async def _wait_for_change(self, delay_s: float | None) -> None:
        """Block until add/done/shutdown wakes us, or until `delay_s` has passed on the Clock."""
        loop = asyncio.get_running_loop()
        wakeup: asyncio.Future[None] = loop.create_future()
        self._wakeups.add(wakeup)
        timer: asyncio.Task[None] | None = None
        if delay_s is not None:
            timer = loop.create_task(self._clock.sleep(delay_s))
            timer.add_done_callback(lambda _: _resolve(wakeup))
        try:
            await wakeup
        finally:
            self._wakeups.discard(wakeup)
            if timer is not None:
                timer.cancel()

    def _wake_getters(self) -> None:
        for wakeup in self._wakeups:
            _resolve(wakeup)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
