"""Periodic MCP health probes: one task and one kept-alive connection per live runner (SPEC §7 probe budget).

The first probe runs at once (Starting -> Running needs it); then every `interval_s`. Results go to a
callback; the controller decides what they mean (thresholds, restarts, phases).

A probe loop belongs to one runner, named by its identity (pid + create time, and the server pid it serves)
and endpoint: a new runner gets a new loop, and a loop whose runner was forgotten or replaced ends without
delivering what it got.
Cancelling is not enough on its own: Python 3.11's `asyncio.wait_for` swallows a cancellation that lands as
its inner await completes, and such a loop went on probing a dead port forever, its failures counted
against the server's next runner (issue 12).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_reconcile.loop.clock import Clock
from mcp_reconcile.probe import LeanProbe

# Bound on ending one probe session (its DELETE to the runner) when its loop ends.
PROBE_CLOSE_TIMEOUT_S = 1.0
# Bound on every probe loop ending once cancelled, at shutdown.
PROBES_CLOSE_TIMEOUT_S = 3.0


class Prober(Protocol):
    """What a probe loop needs of a probe session (LeanProbe; tests pass fakes)."""

    async def probe(self, timeout_s: float) -> Any: ...

    async def aclose(self) -> None: ...


ProberFactory = Callable[[str, str | None], Prober]   # (endpoint, bearer token) -> a session


def lean_prober(endpoint: str, token: str | None) -> Prober:
    return LeanProbe(endpoint, token=token)


@dataclass(frozen=True, eq=False)
class _Loop:
    """One runner's probe loop; compared by identity, so a replaced loop knows it is no longer current."""

    key: Hashable
    task: asyncio.Task[None]


class HealthMonitor:
    def __init__(self, clock: Clock, on_result: Callable[[str, Any], None], *,
                 prober: ProberFactory = lean_prober) -> None:
        self._clock = clock
        self._on_result = on_result
        self._prober = prober
        self._loops: dict[str, _Loop] = {}

    def ensure(self, name: str, endpoint: str, *, runner: Hashable, interval_s: float, timeout_s: float,
               token: str | None = None) -> None:
        """Probe `name`'s live process at `endpoint`; `runner` is its identity (the controller passes runner pid,
        create time and server pid). Another identity, endpoint or health block replaces the loop (an edited
        health block restarts probing)."""
        key = (runner, endpoint, interval_s, timeout_s, token)
        current = self._loops.get(name)
        if current and current.key == key and not current.task.done():
            return
        self.forget(name)
        # registered before its first step runs (create_task only schedules it), so it can tell it is current
        task = asyncio.create_task(self._probe_loop(name, endpoint, interval_s, timeout_s, token),
                                   name=f"probe-{name}")
        self._loops[name] = _Loop(key, task)

    def forget(self, name: str) -> None:
        """End `name`'s loop (its runner exited, stopped or was replaced); what it is probing is dropped."""
        current = self._loops.pop(name, None)
        if current:
            current.task.cancel()

    def _is_current(self, name: str) -> bool:
        current = self._loops.get(name)
        return current is not None and current.task is asyncio.current_task()

    async def _probe_loop(self, name: str, endpoint: str, interval_s: float, timeout_s: float,
                          token: str | None) -> None:
        session = self._prober(endpoint, token)
        try:
            while self._is_current(name):
                result = await session.probe(timeout_s)
                if not self._is_current(name):
                    return   # a result about a runner that is gone never counts against the next one
                self._on_result(name, result)
                await self._clock.sleep(interval_s)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(PROBE_CLOSE_TIMEOUT_S):
                    await asyncio.shield(session.aclose())

    async def aclose(self, *, timeout_s: float = PROBES_CLOSE_TIMEOUT_S) -> list[str]:
        """Cancel every loop and wait for them within `timeout_s`; returns the names of loops still running
        then (they deliver nothing more: none is current)."""
        loops = dict(self._loops)
        self._loops.clear()
        for loop in loops.values():
            loop.task.cancel()
        if not loops:
            return []
        _, pending = await asyncio.wait([loop.task for loop in loops.values()], timeout=timeout_s)
        return sorted(name for name, loop in loops.items() if loop.task in pending)
