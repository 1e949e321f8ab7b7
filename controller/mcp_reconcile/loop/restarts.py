"""Every server's CrashLoopBackOff state in the running loop, each under its spec's `restartBackoff` policy.

The arithmetic (delays, jitter, reset after lasting health) is backoff.py's; this keeps one `BackoffState` per
server, one policy per distinct `restartBackoff` block, and the loop's own rule on top: the first crash
restarts at once, repeated ones back off. Time comes from the injected Clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mcp_reconcile.loop.backoff import JITTER, Backoff, BackoffState
from mcp_reconcile.loop.clock import Clock
from mcp_reconcile.model import BackoffSpec


@dataclass(frozen=True)
class Failure:
    """The backoff after one more failure: wait `delay_s` (0: at once); `crash_loop`: it keeps failing."""

    delay_s: float
    failures: int
    crash_loop: bool


class Restarts:
    def __init__(self, clock: Clock, *, jitter: float = JITTER) -> None:
        self._clock = clock
        self._jitter = jitter
        self._states: dict[str, BackoffState] = {}
        self._policies: dict[BackoffSpec, Backoff] = {}

    def _policy(self, spec: BackoffSpec) -> Backoff:
        if spec not in self._policies:   # one policy object per distinct restartBackoff block
            self._policies[spec] = Backoff(initial_s=spec.initial_s, max_s=spec.max_s,
                                           reset_after_s=spec.reset_after_s, jitter=self._jitter)
        return self._policies[spec]

    def failed(self, name: str, spec: BackoffSpec) -> Failure:
        """One more failure of `name` (a crash, a failed action, a hung server restarted)."""
        policy = self._policy(spec)
        state = policy.failed(self._states.get(name, BackoffState()), self._clock.now())
        if state.failures == 1:   # the first crash restarts at once; repeated ones back off
            state = replace(state, delay_s=0.0, until=None)
        self._states[name] = state
        return Failure(state.delay_s, state.failures, policy.in_crash_loop(state))

    def healthy(self, name: str, spec: BackoffSpec) -> bool:
        """A healthy probe of `name`; True when this one reset the backoff (healthy for resetAfterSeconds)."""
        before = self._states.get(name, BackoffState())
        after = self._policy(spec).healthy(before, self._clock.now())
        self._states[name] = after
        return bool(before.failures) and not after.failures

    def reset(self, name: str) -> bool:
        """Forget `name`'s failures (its spec was edited: the wait is cut short); False if it had no backoff."""
        if name not in self._states:
            return False
        self._states[name] = BackoffState()
        return True

    def failures(self, name: str) -> int:
        return self._states.get(name, BackoffState()).failures

    def until(self, name: str) -> float | None:
        """Clock time before which `name` is not restarted (None: it may go now)."""
        return self._states.get(name, BackoffState()).until or None
