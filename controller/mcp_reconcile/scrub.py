"""Secret values taken out of a byte stream as it passes (server stderr, the runner's own log).

Stdlib only: the runner (one per server) uses it. A secret split across two reads is still caught: the
tail of a read that could be the start of a secret is held back until the next read (or the end) decides.
Only such a tail is held, so an ordinary last line reaches the log at once.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = b"(sensitive)"
# Shorter secrets are not scrubbed from free text (a one-character value would blank every digit), as in
# the audit log's Redactor (events.py).
MIN_SECRET_BYTES = 3
# The env var the controller hands a runner the secret parts of composed values in (`Bearer ${TOK}`: the
# value of TOK), as a JSON list; the runner pops it before its server starts.
SECRET_PARTS_ENV = "MCP_RECONCILE_SECRET_PARTS"


class StreamScrubber:
    """Replaces every secret value with `(sensitive)` in the bytes fed through it, across read boundaries."""

    def __init__(self, secrets: Iterable[str]) -> None:
        encoded = {s.encode() for s in secrets if s and len(s.encode()) >= MIN_SECRET_BYTES}
        self._secrets = sorted(encoded, key=len, reverse=True)   # longest first: one that contains another
        self._held = b""

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def feed(self, chunk: bytes) -> bytes:
        """What can be written now of everything fed so far, scrubbed."""
        data = self.scrub(self._held + chunk)
        hold = self._possible_secret_start(data)
        self._held = data[len(data) - hold:] if hold else b""
        return data[:len(data) - hold]

    def flush(self) -> bytes:
        """The held tail, at the end of the stream: it is no secret, or it would have been completed."""
        held, self._held = self._held, b""
        return held

    def scrub(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        return data

    def _possible_secret_start(self, data: bytes) -> int:
        """Length of the longest tail of `data` that is a proper prefix of some secret (0: none)."""
        longest = 0
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(data)), longest, -1):
                if data.endswith(secret[:size]):
                    longest = size
                    break
        return longest
