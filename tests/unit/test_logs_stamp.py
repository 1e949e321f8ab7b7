"""Log timestamps (logstamp.py): every line of a server's stderr gets the time its first byte arrived, in the
form `logs` reads back."""

from __future__ import annotations

from mcp_reconcile.logstamp import LineStamper, stamp
from mcp_reconcile.logsview import line_time


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_each_line_is_stamped_once_even_when_split_across_chunks() -> None:
    clock = Clock(1_700_000_000.25)
    stamper = LineStamper(clock)

    first = stamper.feed(b"one\ntw")
    clock.now += 2
    second = stamper.feed(b"o\nthree\n")
    third = stamper.feed(b"")

    assert first == b"2023-11-14T22:13:20.250Z one\n2023-11-14T22:13:20.250Z tw"
    assert second == b"o\n2023-11-14T22:13:22.250Z three\n"
    assert third == b""


def test_logs_reads_the_stamp_back() -> None:
    line = (stamp(1_700_000_000.5) + b"listening").decode()

    assert line_time(line) == 1_700_000_000.5
