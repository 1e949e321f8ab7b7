"""Latency statistics for the performance check: percentiles, success rate, throughput."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0-100) by linear interpolation between closest ranks.

    Same definition as numpy's default, so a reader can check a report by hand.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = pct / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencySummary:
    """What one run of N requests measured; latencies only over the requests that succeeded."""

    attempted: int
    succeeded: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    throughput_rps: float | None

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {"attempted": self.attempted, "succeeded": self.succeeded, "success_rate": self.success_rate,
                "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
                "throughput_rps": self.throughput_rps}


def summarize(latencies_ms: Sequence[float], *, attempted: int, wall_s: float) -> LatencySummary:
    """Summarise the latencies of the successful requests out of `attempted`, run in `wall_s`.

    Throughput counts successful requests only: a server that fails fast is not fast.
    """
    if not latencies_ms:
        return LatencySummary(attempted, 0, None, None, None, None, None)
    throughput = len(latencies_ms) / wall_s if wall_s > 0 else None
    return LatencySummary(attempted, len(latencies_ms), percentile(latencies_ms, 50),
                          percentile(latencies_ms, 95), percentile(latencies_ms, 99), max(latencies_ms),
                          throughput)
