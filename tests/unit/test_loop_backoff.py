"""Backoff: exact delays without jitter, jitter bounds under the cap, reset only after lasting health."""

from __future__ import annotations

import random

import pytest

from mcp_reconcile.loop.backoff import Backoff, BackoffState
from mcp_reconcile.loop.clock import FakeClock


def fail_n_times(backoff: Backoff, n: int, *, now: float = 0.0) -> list[BackoffState]:
    states, state = [], BackoffState()
    for _ in range(n):
        state = backoff.failed(state, now)
        states.append(state)
    return states


@pytest.mark.parametrize(
    ("initial_s", "max_s", "expected"),
    [
        pytest.param(1, 60, [1, 2, 4, 8, 16, 32, 60, 60], id="doubles-from-1-to-the-cap-of-60"),
        pytest.param(1.5, 10, [1.5, 3, 6, 10, 10], id="a-cap-that-is-no-power-of-two-is-hit-exactly"),
        pytest.param(5, 5, [5, 5, 5], id="initial-equal-to-max-stays-flat"),
    ],
)
def test_without_jitter_each_failure_doubles_the_delay_up_to_the_cap(
        initial_s: float, max_s: float, expected: list[float]) -> None:
    backoff = Backoff(initial_s=initial_s, max_s=max_s, reset_after_s=120, jitter=0)
    states = fail_n_times(backoff, len(expected), now=100.0)
    assert [s.delay_s for s in states] == expected
    assert [s.until for s in states] == [100.0 + d for d in expected]
    assert [s.failures for s in states] == list(range(1, len(expected) + 1))


def test_remaining_counts_down_on_the_clock_to_zero() -> None:
    clock = FakeClock(start=50.0)
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0)
    state = fail_n_times(backoff, 3, now=clock.now())[-1]     # third failure: 4 s
    assert backoff.remaining(state, clock.now()) == 4
    clock.advance(3)
    assert backoff.remaining(state, clock.now()) == 1
    clock.advance(2)
    assert backoff.remaining(state, clock.now()) == 0
    assert backoff.remaining(BackoffState(), clock.now()) == 0


def test_jitter_stays_within_its_fraction_and_never_above_the_cap() -> None:
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0.1, rng=random.Random(7))
    for _ in range(200):
        for n, state in enumerate(fail_n_times(backoff, 9), start=1):
            base = min(60.0, 2.0 ** (n - 1))
            assert base * 0.9 <= state.delay_s <= min(60.0, base * 1.1)
            assert state.delay_s <= 60.0


def test_jitter_spreads_delays_below_the_cap() -> None:
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0.1, rng=random.Random(7))
    third_delays = {fail_n_times(backoff, 3)[-1].delay_s for _ in range(20)}
    capped_delays = {fail_n_times(backoff, 8)[-1].delay_s for _ in range(20)}
    assert len(third_delays) > 1
    assert len(capped_delays) > 1 and max(capped_delays) <= 60.0


def test_a_long_crash_history_stays_at_the_cap() -> None:
    backoff = Backoff(initial_s=1, max_s=300, reset_after_s=120, jitter=0)
    state = BackoffState(failures=5000)
    assert backoff.failed(state, 0.0).delay_s == 300


def test_the_backoff_resets_after_reset_after_seconds_of_health_not_before() -> None:
    clock = FakeClock()
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0)
    state = fail_n_times(backoff, 3, now=clock.now())[-1]
    clock.advance(10)
    state = backoff.healthy(state, clock.now())
    assert state.healthy_since == 10 and state.failures == 3
    clock.advance(119)
    state = backoff.healthy(state, clock.now())
    assert state.failures == 3 and state.delay_s == 4        # 119 s healthy: not yet
    clock.advance(1)
    state = backoff.healthy(state, clock.now())
    assert state == BackoffState(healthy_since=10)           # 120 s healthy: reset
    assert backoff.failed(state, clock.now()).delay_s == 1   # the next crash starts from the beginning


def test_a_failure_breaks_the_healthy_streak() -> None:
    clock = FakeClock()
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0)
    state = backoff.healthy(fail_n_times(backoff, 1)[-1], clock.now())
    clock.advance(100)
    state = backoff.failed(state, clock.now())
    assert state.healthy_since is None and state.failures == 2
    clock.advance(10)
    state = backoff.healthy(state, clock.now())             # healthy again from t=110
    clock.advance(110)
    state = backoff.healthy(state, clock.now())
    assert state.failures == 2                               # 220 s since the first report, 110 s in a row
    clock.advance(10)
    assert backoff.healthy(state, clock.now()).failures == 0


def test_a_server_is_in_a_crash_loop_from_its_second_consecutive_failure() -> None:
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0)
    states = [BackoffState(), *fail_n_times(backoff, 3)]
    assert [backoff.in_crash_loop(s) for s in states] == [False, False, True, True]


def test_failed_returns_a_new_state_and_leaves_the_old_one_alone() -> None:
    backoff = Backoff(initial_s=1, max_s=60, reset_after_s=120, jitter=0)
    before = BackoffState()
    after = backoff.failed(before, 0.0)
    assert before == BackoffState() and after.failures == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"initial_s": 0, "max_s": 60}, id="zero-initial"),
        pytest.param({"initial_s": 10, "max_s": 5}, id="max-below-initial"),
        pytest.param({"initial_s": 1, "max_s": 60, "jitter": 1.0}, id="jitter-of-100-percent"),
        pytest.param({"initial_s": 1, "max_s": 60, "reset_after_s": -1}, id="negative-reset"),
    ],
)
def test_a_nonsensical_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**{"reset_after_s": 120, **kwargs})
