"""The loop's seams to the world, as protocols: effects, runner-exit watching and probing (STYLE §5).

`Controller` takes each of them (and its Clock) injected; production builds HostEffects, ExitWatcher and
HealthMonitor, tests pass recording fakes and drive time by hand (tests/support/loop_world.py).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from mcp_reconcile.apply import Effects


class LoopEffects(Effects, Protocol):
    """What the applier needs, plus what the loop itself does to a runner that exited."""

    withheld_env: set[str]     # ${VAR}s of every manifest, never inherited by a server
    reserved_ports: set[int]   # ports claimed by specs, never handed out as free

    def forget_child(self, name: str) -> None: ...   # reap our own runner now, not at some later Popen

    def reap_leftovers(self, name: str, run: Any = None) -> bool: ...


class ExitWatch(Protocol):
    """Wakes the loop when a runner exits (ExitWatcher: a pidfd per runner)."""

    def watch(self, name: str, pid: int) -> bool: ...   # False: already gone

    def forget(self, name: str) -> None: ...

    def close(self) -> None: ...


class ProbeLoops(Protocol):
    """One probe loop per live runner (HealthMonitor)."""

    def ensure(self, name: str, endpoint: str, *, runner: Hashable, interval_s: float, timeout_s: float,
               token: str | None = None) -> None: ...

    def forget(self, name: str) -> None: ...

    async def aclose(self) -> list[str]: ...
