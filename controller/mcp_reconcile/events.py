"""The audit log: structlog set up once, JSON lines to `events.jsonl`, secrets redacted on the way.

Processor chain: level -> timestamp (`ts`) -> redact secrets -> tee (JSON line to the file) -> stderr
rendering (console on a TTY, JSON under systemd) or drop. Every processor is a plain function or small
callable so tests can run them directly. Event names are `noun.past_verb` (`action.applied`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

REDACTED = "(sensitive)"
# Secrets shorter than this are redacted only where a whole value equals them, so that a one-character
# secret does not blank out every digit in the log; longer ones are redacted wherever they appear.
MIN_SUBSTRING_SECRET_LEN = 3
# Rotate events.jsonl past this size, keeping one previous file.
EVENTS_MAX_BYTES = 20 * 1024 * 1024

EventDict = MutableMapping[str, Any]


class Redactor:
    """A processor that knows every secret value and replaces it wherever it appears in an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # longest first, so a secret that contains another is removed whole
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def add(self, secrets: Iterable[str]) -> None:
        self.update((*self._secrets, *secrets))

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if value == secret:
                    return REDACTED
                if len(secret) >= MIN_SUBSTRING_SECRET_LEN and secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, Mapping):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.scrub(v) for v in value]
        return self.scrub(str(value))  # anything else is written with str(): scrub that text

    def __call__(self, _logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        return {k: self.scrub(v) for k, v in event_dict.items()}


class JsonLinesFile:
    """Appends one JSON object per line to `path` (mode 0600), rotating by size; thread-safe."""

    def __init__(self, path: Path, *, max_bytes: int = EVENTS_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fh: TextIO | None = None

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", buffering=1)

    def write(self, record: EventDict) -> None:
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                self._fh = self._open()
            if self._fh.tell() + len(line) > self.max_bytes:
                self._fh.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._fh = self._open()
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def tee_to(sink: JsonLinesFile | None, *, keep: bool):  # type: ignore[no-untyped-def]
    """A processor writing each event to `sink`; it passes the event on only when `keep` (stderr wants it)."""

    def tee(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
        if sink is not None:
            sink.write(event_dict)
        if not keep:
            raise structlog.DropEvent
        return event_dict

    return tee


REDACTOR = Redactor()
_SINK: JsonLinesFile | None = None
# Processors that watch the redacted stream before it is written (metrics.Metrics.on_event); they return
# the event unchanged. Registered before `configure`, which puts them in the chain.
OBSERVERS: list[Any] = []


def configure(events_file: Path | None, *, secrets: Iterable[str] = (), stderr: str | None = "auto") -> Redactor:
    """Set structlog up once per process. `stderr`: "console", "json", None (silent) or "auto" (console on a TTY).

    Returns the redactor so the controller can teach it new secrets when manifests change.
    """
    global _SINK
    if _SINK is not None:
        _SINK.close()
    _SINK = JsonLinesFile(events_file) if events_file is not None else None
    REDACTOR.update(secrets)
    mode = ("console" if sys.stderr.isatty() else None) if stderr == "auto" else stderr
    renderer: list[Any] = []
    if mode == "console":
        renderer = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    elif mode == "json":
        renderer = [structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            REDACTOR,
            *OBSERVERS,
            tee_to(_SINK, keep=bool(renderer)),
            *renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return REDACTOR


def configure_silent() -> None:
    """For read-only commands: events go nowhere (structlog's default would print them to stdout)."""
    configure(None, stderr=None)


def get_logger(**context: Any) -> Any:
    """A logger that follows the configuration in force when it logs, not when it was made.

    (Binding structlog's lazy proxy fixes the processors of that moment: module-level loggers must not.)
    """
    logger = structlog.get_logger("mcp_reconcile")
    return logger.new(**context) if context else logger
