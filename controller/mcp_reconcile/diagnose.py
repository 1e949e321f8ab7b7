"""Why a server is not Ready, in one line: the evidence `status` and `describe` put in MESSAGE.

A phase says *what* (CrashLoopBackOff); the cause is elsewhere: the last exit code and the last line the
server wrote to stderr (logs/NAME.log), the error of its last failed action (events.jsonl), the ledger's
failed reason. Read-only, and reads only the tails of the files, so `status` stays fast on big logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_reconcile.store import StateDir

# How much of the end of events.jsonl and of a server's log is read for the recent past.
EVENTS_TAIL_BYTES = 512 * 1024
LOG_TAIL_BYTES = 16 * 1024
# A quoted stderr line longer than this is cut: the message stays one line on a wide terminal.
MAX_QUOTE_CHARS = 160
# Events that end an action (or a crash) and so can carry the cause of a failure.
FAILURE_EVENTS = {"action.failed", "install.failed", "server.backoff", "spawner.failed", "test.failed"}
SUCCESS_EVENTS = {"action.applied"}


def read_tail(path: Path, max_bytes: int) -> list[str]:
    """The whole lines in the last `max_bytes` of `path` ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[1:] if size > max_bytes and lines else lines   # the first line is cut


def recent_events(state: StateDir, max_bytes: int = EVENTS_TAIL_BYTES) -> list[dict[str, Any]]:
    """The events in the tail of events.jsonl, oldest first (torn lines skipped)."""
    events = []
    for line in read_tail(state.events_file, max_bytes):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_log_lines(state: StateDir, name: str, count: int) -> list[str]:
    """The last `count` non-blank lines the server wrote to stderr."""
    lines = [line for line in read_tail(state.log_path(name), LOG_TAIL_BYTES) if line.strip()]
    return lines[-count:] if count > 0 else []


def _quote(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= MAX_QUOTE_CHARS else line[:MAX_QUOTE_CHARS - 1] + "…"


def strip_name(name: str, error: str) -> str:
    """`py: install failed` -> `install failed` (where the server's name is already shown)."""
    return error[len(name) + 2:] if error.startswith(f"{name}: ") else error


def last_failure(events: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The server's last failure event, unless an action succeeded after it."""
    found: Mapping[str, Any] | None = None
    for event in events:
        if event.get("server") != name:
            continue
        if event.get("event") in FAILURE_EVENTS and event.get("error"):
            found = event
        elif event.get("event") in SUCCESS_EVENTS and event.get("action") in ("install", "upgrade", "start",
                                                                                "restart"):
            found = None
    return found


def exit_text(entry: Mapping[str, Any], last_exit_code: int | None) -> str | None:
    """`exit code 1` of the server's last exit (ledger first, then the run record's), or None."""
    last_exit = entry.get("last_exit") or {}
    code = last_exit.get("code", last_exit_code)
    if code is None:
        return None
    return f"exit code {code}" + (f" {last_exit['reason']}" if last_exit.get("reason", "").startswith("exited")
                                  else "")


def root_cause(name: str, entry: Mapping[str, Any], *, last_exit_code: int | None,
               events: Sequence[Mapping[str, Any]], log_lines: Sequence[str]) -> str | None:
    """One line: what went wrong last, with the server's last stderr line when it exited; None if nothing did."""
    failure = last_failure(events, name)
    exited = exit_text(entry, last_exit_code)
    said = f": {_quote(log_lines[-1])}" if log_lines else ""
    if exited and (failure is None or failure.get("event") == "server.backoff"):
        return exited + said
    if failure is not None:
        return failure_text(name, failure.get("action"), str(failure.get("error")))
    return None


def failure_text(name: str, action: str | None, error: str) -> str:
    """`start failed: ERROR`, saying the server's name and the action once each."""
    error = strip_name(name, error)
    return f"{action} failed: {error}" if action and not error.startswith(f"{action} ") else error


def explain(phase: str, message: str, cause: str | None) -> str:
    """The MESSAGE of a phase, with the cause in front where the phase alone does not say why."""
    if not cause:
        return message
    if phase == "CrashLoopBackOff":
        delay = message.split()[1] if message.startswith("back-off ") else None
        return f"{cause}; back-off {delay}" if delay else f"{cause}; {message}"
    if phase in ("Pending", "Installing") and message in ("not installed", "not running"):
        return cause
    if phase in ("Failed", "Degraded") and cause not in message:
        return f"{message}: {cause}" if message else cause
    return message
