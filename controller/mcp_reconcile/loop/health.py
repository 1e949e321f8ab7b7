"""Periodic MCP health probes: one task and one kept-alive connection per running server (SPEC §7 probe budget).

The first probe runs at once (Starting -> Running needs it); then every `interval_s`. Results go to a
callback; the controller decides what they mean (thresholds, restarts, phases).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from mcp_reconcile.loop.clock import Clock
from mcp_reconcile.probe import LeanProbe


class HealthMonitor:
    def __init__(self, clock: Clock, on_result: Callable[[str, Any], None]) -> None:
        self._clock = clock
        self._on_result = on_result
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}

    def ensure(self, name: str, endpoint: str, *, interval_s: float, timeout_s: float,
               token: str | None = None) -> None:
        """Probe `name` at `endpoint` (with its bearer token); a new endpoint (new runner) replaces the old task."""
        key = (endpoint, interval_s, timeout_s, token)   # an edited health block restarts probing
        current = self._tasks.get(name)
        if current and current[0] == key and not current[1].done():
            return
        self.forget(name)
        task = asyncio.create_task(self._probe_loop(name, endpoint, interval_s, timeout_s, token),
                                   name=f"probe-{name}")
        self._tasks[name] = (key, task)

    def forget(self, name: str) -> None:
        current = self._tasks.pop(name, None)
        if current:
            current[1].cancel()

    async def _probe_loop(self, name: str, endpoint: str, interval_s: float, timeout_s: float,
                          token: str | None) -> None:
        session = LeanProbe(endpoint, token=token)
        try:
            while True:
                result = await session.probe(timeout_s)
                self._on_result(name, result)
                await self._clock.sleep(interval_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(session.aclose())

    async def aclose(self) -> None:
        tasks = [t for _, t in self._tasks.values()]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
