"""`logs NAME`: a server's stderr log (logs/NAME.log) with a marker line at each exit and start.

Markers come from the audit log (events.jsonl: the server's exits, failed starts and starts), so the log
itself stays the server's own bytes. A line that begins with an ISO 8601 time (many servers write one) is
placed by it; a line without one takes the time of the line before it, so markers and `--since` fall between
the right lines whenever the log carries times.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_reconcile import diagnose, eventsview, render, tail
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir

# Lines shown without -n: the last DEFAULT_LINES, or FOLLOW_LINES before following.
DEFAULT_LINES = 50
FOLLOW_LINES = 10
STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\]?\s")
EXIT_EVENTS = {"server.backoff", "server.exited_unsupervised", "runner.exited"}
STARTS = ("start", "restart")


@dataclass(frozen=True)
class Entry:
    """A log line or a marker, with its unix time when known."""

    at: float | None
    text: str
    marker: bool = False


def line_time(line: str) -> float | None:
    match = STAMP.match(line)
    return eventsview.parse_ts(match.group(1).replace(" ", "T").replace(",", ".")) if match else None


def markers(events: Iterable[Mapping[str, Any]], name: str) -> list[Entry]:
    """A marker for each exit, failed start and start of `name` found in the events."""
    found = []
    for e in events:
        if e.get("server") != name:
            continue
        kind, action = e.get("event"), e.get("action")
        if kind in EXIT_EVENTS:
            text = f"exited: {e.get('error') or e.get('reason') or 'runner exited'}"
        elif kind == "action.failed" and action in STARTS:
            text = diagnose.failure_text(name, action, str(e.get("error", "")))
        elif kind == "action.applied" and action in STARTS:
            text = f"{action}ed: {e.get('detail') or e.get('reason') or ''}".rstrip(": ")
        else:
            continue
        found.append(Entry(eventsview.parse_ts(e.get("ts")), text, marker=True))
    return found


def merge(lines: Iterable[str], marks: list[Entry]) -> list[Entry]:
    """Log lines in file order, markers placed by time (lines without a time take their predecessor's)."""
    entries = []
    last: float | None = None
    for line in lines:
        last = line_time(line) or last
        entries.append(Entry(last, line))
    if all(e.at is None for e in entries):
        return entries + marks   # nothing to place them by: markers after the log, in their order
    pending = sorted((m for m in marks if m.at is not None), key=lambda m: m.at or 0.0)
    out: list[Entry] = []
    for entry in entries:
        while pending and entry.at is not None and (pending[0].at or 0.0) <= entry.at:
            out.append(pending.pop(0))
        out.append(entry)
    return out + pending


def select(entries: list[Entry], *, since: float | None, last: int | None) -> list[Entry]:
    chosen = [e for e in entries if since is None or (e.at is not None and e.at >= since)]
    if last is None:
        return chosen
    return chosen[-last:] if last > 0 else []


def render_entry(entry: Entry) -> Any:
    """A line as it is (its own time if it has one), a marker dim with its local time."""
    from rich.text import Text

    if not entry.marker:
        return Text(entry.text)
    return Text(f"── {eventsview.clock(entry.at)} {entry.text} ──", style="bold magenta")


def show_logs(opts: Options) -> int:
    name = opts.names[0]
    state = StateDir(opts.state_dir)
    path = state.log_path(name)
    lines, offset, inode = tail.read_now(path)
    if inode is None and not opts.follow:
        print(f"error: no log for {name!r} ({path} does not exist)", file=sys.stderr)
        return render.EXIT_ERROR
    since = time.time() - opts.since_s if opts.since_s is not None else None
    default = FOLLOW_LINES if opts.follow else (None if since is not None else DEFAULT_LINES)
    last = opts.lines if opts.lines is not None else default
    from rich.console import Console

    console = Console(soft_wrap=True, highlight=False, markup=False)
    entries = merge(lines, markers(diagnose.recent_events(state), name))
    if all(e.at is None for e in entries if not e.marker) and since is not None and lines:
        print(f"warning: {path} has no timestamps: --since applies to its restart markers only", file=sys.stderr)
    try:
        for entry in select(entries, since=since, last=last):
            console.print(render_entry(entry))
        if opts.follow:
            for line in tail.follow_from(path, offset, inode):
                console.print(render_entry(Entry(line_time(line), line)))
    except KeyboardInterrupt:
        pass
    return render.EXIT_OK
