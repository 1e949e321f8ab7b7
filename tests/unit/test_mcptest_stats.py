"""Percentiles and the latency summary of the performance check."""

from __future__ import annotations

import pytest

from mcp_reconcile.mcptest.stats import percentile, summarize


@pytest.mark.parametrize(("values", "pct", "expected"), [
    pytest.param([5.0], 95, 5.0, id="one value is every percentile"),
    pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="the median of an even count interpolates"),
    pytest.param([4.0, 1.0, 3.0, 2.0], 0, 1.0, id="order does not matter and p0 is the minimum"),
    pytest.param([1.0, 2.0, 3.0, 4.0], 100, 4.0, id="p100 is the maximum"),
    pytest.param(list(range(1, 101)), 95, 95.05, id="p95 of 1..100 as numpy computes it"),
    pytest.param(list(range(1, 101)), 99, 99.01, id="p99 of 1..100 as numpy computes it"),
])
def test_percentile_interpolates_linearly_between_closest_ranks(values, pct, expected) -> None:
    assert percentile(values, pct) == pytest.approx(expected)


def test_percentile_refuses_no_values_and_a_percentage_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_a_summary_counts_only_successes_in_latencies_and_throughput() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0], attempted=5, wall_s=2.0)
    assert (summary.attempted, summary.succeeded) == (5, 4)
    assert summary.success_rate == pytest.approx(0.8)
    assert summary.p50_ms == pytest.approx(2.5)
    assert summary.max_ms == 4.0
    assert summary.throughput_rps == pytest.approx(2.0)
    assert summary.as_dict()["success_rate"] == pytest.approx(0.8)


def test_a_summary_of_no_successes_has_no_latencies() -> None:
    summary = summarize([], attempted=3, wall_s=1.0)
    assert summary.success_rate == 0.0
    assert (summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.throughput_rps) == (None, None, None, None)
    assert summarize([], attempted=0, wall_s=0.0).success_rate == 0.0
