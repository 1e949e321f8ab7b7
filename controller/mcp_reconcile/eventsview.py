"""`events`: the audit log (events.jsonl) for people (one coloured line each) or for machines (-o json).

A human line is `TIME SERVER EVENT key=value ...`: the time in local time, the fields that say what happened
first (action, phase, reason, error, ...), colour by level. `-n`, `--since` and `--server` filter; `--follow`
starts at the end of the file unless -n or --since ask for history.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from mcp_reconcile import render, tail
from mcp_reconcile.diagnose import strip_name
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir

# The fields that say what happened, shown first and in this order; the others follow as they came.
KEY_FIELDS = ("action", "kind", "phase", "previous_phase", "outcome", "reason", "error", "exit_code", "code",
              "signal", "delay_s", "failures", "restarts", "crash_loop", "detail", "latency_ms", "duration_ms")
# Fields every line has in its own column, or that say nothing to a person.
HIDDEN = {"ts", "level", "event", "server", "generation", "logger"}
LEVEL_STYLES = {"critical": "bold red", "error": "red", "warning": "yellow", "debug": "dim"}
# A field longer than this is cut (the JSON keeps it whole): one event stays about one line.
MAX_VALUE_CHARS = 200
SERVER_WIDTH = 12
EVENT_WIDTH = 22


def parse_ts(value: Any) -> float | None:
    """Unix time of an event's `ts` (ISO 8601, UTC as written by events.py), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects among `lines` (a torn or foreign line is skipped)."""
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def select(events: Iterable[Mapping[str, Any]], *, server: str | None = None, since: float | None = None,
           last: int | None = None) -> list[Mapping[str, Any]]:
    """The events of `server` at or after unix time `since`, then only the `last` of them."""
    chosen = [e for e in events if (server is None or e.get("server") == server)
              and (since is None or (parse_ts(e.get("ts")) or 0.0) >= since)]
    return chosen[-last:] if last is not None and last > 0 else ([] if last == 0 else chosen)


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS - 1] + "…"
    return json.dumps(text) if isinstance(value, str) and (not text or " " in text or "=" in text) else text


def key_fields(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, shown value) of an event's fields: the telling ones first, empty ones left out."""
    names = [k for k in KEY_FIELDS if k in event]
    names += [k for k in event if k not in HIDDEN and k not in KEY_FIELDS]
    server = str(event.get("server") or "")

    def shown(k: str) -> str:   # an error that starts with the server's name: the line says it already
        value = event[k]
        return _value(strip_name(server, value) if k == "error" and isinstance(value, str) and server else value)

    return [(k, shown(k)) for k in names if event[k] not in (None, "", [], {})]


def clock(ts: float | None, *, now: float | None = None) -> str:
    """HH:MM:SS in local time for today, with the date before it for older events."""
    if ts is None:
        return "--:--:--"
    moment = datetime.fromtimestamp(ts)
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S")


def event_line(event: Mapping[str, Any], *, now: float | None = None) -> Any:
    """One event as a rich Text: time, server, event name (bold), key=value fields; coloured by level."""
    from rich.text import Text

    style = LEVEL_STYLES.get(str(event.get("level", "")).lower(), "")
    line = Text(style=style)
    line.append(clock(parse_ts(event.get("ts")), now=now), style="dim")
    line.append(f" {event.get('server') or '-'!s:<{SERVER_WIDTH}} ", style="cyan")
    line.append(f"{event.get('event', '?'):<{EVENT_WIDTH}}", style="bold")
    for name, value in key_fields(event):
        line.append(f" {name}=", style="dim")
        line.append(value)
    return line


def show_events(opts: Options) -> int:
    path = StateDir(opts.state_dir).events_file
    lines, offset, inode = tail.read_now(path)
    if not lines and not opts.follow:
        print(f"No events yet ({path} does not exist or is empty).", file=sys.stderr)
        return render.EXIT_OK
    since = time.time() - opts.since_s if opts.since_s is not None else None
    last = opts.lines if opts.lines is not None else (0 if opts.follow and since is None else None)
    console = None
    if opts.output != "json":
        from rich.console import Console

        console = Console(soft_wrap=True, highlight=False)

    def emit(event: Mapping[str, Any]) -> None:
        if console is None:
            print(json.dumps(event, separators=(",", ":")), flush=True)
        else:
            console.print(event_line(event))

    try:
        for event in select(parse_events(lines), server=opts.server, since=since, last=last):
            emit(event)
        if opts.follow:
            for event in parse_events(tail.follow_from(path, offset, inode)):
                if opts.server is None or event.get("server") == opts.server:
                    emit(event)
    except KeyboardInterrupt:
        pass
    return render.EXIT_OK
