"""Per-server CrashLoopBackOff bookkeeping (SPEC §5, `spec.restartBackoff`): pure, with time passed in.

Nothing here sleeps or reads a clock: the controller passes `now` from its Clock, stores the returned
`BackoffState`, and requeues the server after `remaining()`. The rules, written down:

- Each failure (crash, failed start, failed action) grows the delay: the n-th consecutive failure
  waits `min(max_s, initial_s * 2**(n-1))`, then +-`jitter` (a fraction) so servers that crashed
  together do not restart in lockstep, clamped to `max_s` so jitter never exceeds the cap.
- The exponential part is tenacity's `wait_exponential(multiplier=initial_s, max=max_s)` (it also
  guards against overflow for large failure counts). Its jitter helpers do not fit: they add an
  absolute 0..jitter seconds from the global `random`, and the spec's jitter is a +- fraction from an
  injectable rng, so the jitter is the two lines in `failed()`.
- Health clears the slate only when it lasts: `resetAfterSeconds` of continuous health since the first
  healthy report resets failures and delay to zero; any failure breaks the continuity.
- CrashLoopBackOff is `failures >= 2`: one crash is an ordinary restart; a second one before the
  server stayed healthy for `reset_after_s` means it keeps crashing and its restarts are being delayed.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import tenacity

CRASH_LOOP_FAILURES = 2     # consecutive failures (without a reset) that make a crash loop
JITTER = 0.1                # +- this fraction of each delay, so servers that crashed together spread out


@dataclass(frozen=True)
class BackoffState:
    """One server's backoff: consecutive failures, the current delay, when it ends, and health since."""

    failures: int = 0
    delay_s: float = 0.0
    until: float | None = None           # Clock time before which the server is not retried
    healthy_since: float | None = None   # Clock time of the first healthy report since the last failure


class Backoff:
    """The policy of one `restartBackoff` block; states are values, so one policy serves many servers."""

    def __init__(self, *, initial_s: float, max_s: float, reset_after_s: float, jitter: float = JITTER,
                 rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s (got {initial_s}, {max_s})")
        if reset_after_s < 0:
            raise ValueError(f"reset_after_s must be >= 0 (got {reset_after_s})")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter is a fraction in [0, 1) (got {jitter})")
        self.initial_s, self.max_s, self.reset_after_s, self.jitter = initial_s, max_s, reset_after_s, jitter
        self._rng = rng or random.Random()
        self._retrying = tenacity.Retrying(wait=tenacity.wait_exponential(multiplier=initial_s, max=max_s))

    def failed(self, state: BackoffState, now: float) -> BackoffState:
        """Record one more failure: the next try waits the grown, jittered delay from `now`."""
        failures = state.failures + 1
        spread = self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        delay_s = min(self.max_s, self._base_delay(failures) * (1.0 + spread))
        return BackoffState(failures=failures, delay_s=delay_s, until=now + delay_s, healthy_since=None)

    def healthy(self, state: BackoffState, now: float) -> BackoffState:
        """Record a healthy report; after `reset_after_s` of continuous health the backoff resets."""
        since = now if state.healthy_since is None else state.healthy_since
        if state.failures and now - since >= self.reset_after_s:
            return BackoffState(healthy_since=since)
        if state.healthy_since is None:
            return dataclasses.replace(state, healthy_since=since)
        return state

    def remaining(self, state: BackoffState, now: float) -> float:
        """Seconds left before the server may be tried again (0.0 when it may go now)."""
        return 0.0 if state.until is None else max(0.0, state.until - now)

    def in_crash_loop(self, state: BackoffState) -> bool:
        """CrashLoopBackOff: at least two consecutive failures without a reset (see the module rules)."""
        return state.failures >= CRASH_LOOP_FAILURES

    def _base_delay(self, failures: int) -> float:
        """`min(max_s, initial_s * 2**(failures-1))`, computed by tenacity (attempt n = n-th failure)."""
        attempt = tenacity.RetryCallState(self._retrying, None, (), {})
        attempt.attempt_number = failures
        return float(self._retrying.wait(attempt))
