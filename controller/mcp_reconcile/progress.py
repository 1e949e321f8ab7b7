"""`apply` progress: what is in flight, for people.

On a TTY a live view (rich) with one row per server in flight (action, phase, elapsed) under the outcome lines
printed so far; off a TTY one plain line when an action starts (its end is the outcome line). The actions'
starts are seen at the Effects seam: `tracked(effects)` wraps the effects apply_plan calls, so apply.py needs
no hook, and the phase is the effect running now (a restart goes swapping -> stopping -> starting).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import Action

# Effect method -> the phase shown while it runs.
PHASES = {"install": "installing", "uninstall": "uninstalling", "start": "starting", "replace": "swapping",
          "stop": "stopping", "test": "testing"}
# The order apply_plan runs a server's actions in (apply.py: stops, uninstalls, installs, starts, tests).
APPLY_ORDER = ("stop", "uninstall", "install", "upgrade", "start", "restart", "test")
# How often the live view redraws (elapsed times tick).
REFRESH_PER_S = 4


@dataclass
class InFlight:
    kind: str
    phase: str
    since: float


class ApplyProgress:
    """Tracks actions from their first effect to their outcome; renders them live or as plain lines."""

    def __init__(self, actions: Iterable[Action], *, live: bool, report: Callable[[Outcome], None],
                 say: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic) -> None:
        self.pending: dict[str, list[str]] = {}
        for a in actions:
            self.pending.setdefault(a.server, []).append(a.kind.value)
        for kinds in self.pending.values():
            kinds.sort(key=lambda k: APPLY_ORDER.index(k) if k in APPLY_ORDER else len(APPLY_ORDER))
        self.total = sum(len(k) for k in self.pending.values())
        self.done = 0
        self.in_flight: dict[str, InFlight] = {}
        self.live = live
        self._report, self._say, self._clock = report, say, clock
        self._live: Any = None

    # what the seam and apply_plan tell us -------------------------------------------------------------
    def began(self, server: str, method: str) -> None:
        phase = PHASES.get(method, method)
        if server in self.in_flight:
            self.in_flight[server].phase = phase
            return
        queue = self.pending.get(server) or []
        kind = queue.pop(0) if queue else method
        self.in_flight[server] = InFlight(kind, phase, self._clock())
        if not self.live:
            self._say(f"  ...    {kind:<9} {server}: {phase}")

    def on_outcome(self, outcome: Outcome) -> None:
        server, kind = outcome.action.server, outcome.action.kind.value
        self.in_flight.pop(server, None)
        queue = self.pending.get(server) or []
        if kind in queue:   # skipped: it never reached an effect
            queue.remove(kind)
        self.done += 1
        self._report(outcome)
        if self._live is not None:
            self._live.refresh()

    # rendering -------------------------------------------------------------------------------------------
    def renderable(self) -> Any:
        """The live area: a count, then SERVER ACTION PHASE ELAPSED for each action in flight."""
        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("SERVER", "ACTION", "PHASE", "ELAPSED"):
            table.add_column(col, no_wrap=True)
        now = self._clock()
        for server, f in sorted(self.in_flight.items(), key=lambda item: item[1].since):
            table.add_row(server, f.kind, f.phase, f"{now - f.since:.1f}s")
        title = Spinner("dots", text=f"applying: {self.done}/{self.total} done, {len(self.in_flight)} in flight")
        return Group(title, table) if self.in_flight else title

    def __enter__(self) -> ApplyProgress:
        if self.live:
            from rich.live import Live

            self._live = Live(get_renderable=self.renderable, refresh_per_second=REFRESH_PER_S, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def tracked(self, effects: Any) -> TrackedEffects:
        return TrackedEffects(effects, self)


class TrackedEffects:
    """The effects apply_plan calls, reporting each call's start to the progress view; all else passes through."""

    def __init__(self, inner: Any, progress: ApplyProgress) -> None:
        self._inner, self._progress = inner, progress

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in PHASES or not callable(attr):
            return attr

        def call(target: Any, *args: Any, **kwargs: Any) -> Any:
            self._progress.began(target if isinstance(target, str) else target.name, name)
            return attr(target, *args, **kwargs)

        return call
