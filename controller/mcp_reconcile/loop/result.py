"""What a per-server pass asks for next: `Done`, or `RequeueAfter(seconds)` (STYLE §2).

A pass never touches the queue for its own server: it returns one of these and the worker applies it
(`Controller.schedule`). Several reasons to come back in one pass (a backoff, a dependency wait, a runner
still starting) collapse into the soonest, as the queue would collapse them: the pass is level-based, so the
next one re-reads everything anyway. Waking *other* servers (dependents) stays a queue add: that is an event
for them, not this pass's result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    """Nothing to come back for: the next event (edit, exit, probe, resync) wakes the server."""


@dataclass(frozen=True)
class RequeueAfter:
    """Come back after `seconds` on the loop's Clock (0: as soon as this pass is over)."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"a requeue cannot be in the past ({self.seconds} s)")


PassResult = Done | RequeueAfter
DONE = Done()
AGAIN = RequeueAfter(0.0)   # once more, right after this pass (something changed while it ran)


def soonest(results: Iterable[PassResult]) -> PassResult:
    """The earliest of the requeues asked for, or Done when none was."""
    delays = [r.seconds for r in results if isinstance(r, RequeueAfter)]
    return RequeueAfter(min(delays)) if delays else DONE
