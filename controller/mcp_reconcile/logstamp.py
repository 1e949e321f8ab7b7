"""Timestamps for a server's stderr log: each line prefixed with the time its first byte arrived.

Stdlib only, for the runner's stderr pump (proc._pump_stderr: `log.write(stamper.feed(scrubber.feed(chunk)))`).
The prefix is ISO 8601 UTC with milliseconds and a space, e.g. `2026-12-03T06:27:01.123Z `, which `logs`
(logsview.py) reads back to place restart markers and apply --since. A line split across chunks is stamped
once, at its start.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def stamp(at: float) -> bytes:
    """`2026-12-03T06:27:01.123Z ` for unix time `at`."""
    seconds = int(at)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%03dZ " % int((at - seconds) * 1000)


class LineStamper:
    """Feeds bytes through, inserting a timestamp at the start of every line."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._at_line_start = True

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        now = stamp(self._clock())
        *whole, tail = chunk.split(b"\n")   # n newlines: n whole lines, then the unfinished one (maybe empty)
        out = bytearray()
        for line in whole:
            out += (now if self._at_line_start else b"") + line + b"\n"
            self._at_line_start = True
        if tail:
            out += (now if self._at_line_start else b"") + tail
            self._at_line_start = False
        return bytes(out)
