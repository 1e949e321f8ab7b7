"""What a runner's endpoint has answered: request and error counts, and a latency histogram, for Prometheus.

Kept in the runner (fixed buckets: a few hundred bytes, whatever the traffic) and read by the controller's
`/metrics` through the runner's control socket (`{"op": "stats"}`). Counts start at 0 with each runner, as
Prometheus counters may. Stdlib only: the runner imports this.
"""

from __future__ import annotations

import bisect
from typing import Any

# Upper bounds (seconds) of the latency buckets; the last bucket is +Inf.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class EndpointStats:
    """Counts of forwarded requests, those answered with an error, and how long they took."""

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.seconds = 0.0
        self.counts = [0] * (len(BUCKETS_S) + 1)

    def record(self, seconds: float, *, error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.seconds += seconds
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1

    def snapshot(self) -> dict[str, Any]:
        """JSON for the control socket: cumulative bucket counts, as Prometheus histograms have them."""
        cumulative, total = [], 0
        for count in self.counts:
            total += count
            cumulative.append(total)
        return {"requests": self.requests, "errors": self.errors, "seconds": round(self.seconds, 6),
                "buckets": [[str(b), c] for b, c in zip((*map(str, BUCKETS_S), "+Inf"), cumulative, strict=True)]}
