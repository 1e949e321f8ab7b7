"""Bounded parallelism whose slots are given back while an action waits between retries.

`apply` bounds installs (and starts, tests) by slots, and the long-running controller bounds installs across
its passes. A package-manager run that failed transiently sleeps before its next try (install/retry.py);
holding its slot through that sleep made other servers' installs wait for one server's retries (issue 12).
`sleep_between_tries` releases the slot the current task holds, sleeps, and takes a slot again before the
next try. A task cancelled while waiting for its slot back holds none, and its `held()` block releases none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Lease:
    semaphore: asyncio.Semaphore
    held: bool = True


_LEASE: ContextVar[_Lease | None] = ContextVar("mcp_reconcile_slot", default=None)


class Slots:
    """At most `limit` holders at a time (an asyncio.Semaphore that knows which task holds a slot)."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(max(1, limit))

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold one slot for the block (given back by `sleep_between_tries` while it sleeps)."""
        await self._semaphore.acquire()
        lease = _Lease(self._semaphore)
        token = _LEASE.set(lease)
        try:
            yield
        finally:
            _LEASE.reset(token)
            if lease.held:
                self._semaphore.release()


async def sleep_between_tries(seconds: float, *,
                              sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Sleep `seconds` without the slot the current task holds (if any); hold one again on return."""
    lease = _LEASE.get()
    if lease is None or not lease.held:
        await sleep(seconds)
        return
    lease.semaphore.release()
    lease.held = False
    try:
        await sleep(seconds)
    finally:
        await lease.semaphore.acquire()
        lease.held = True
