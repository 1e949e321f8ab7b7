"""`describe NAME` (kubectl describe): everything known about one server, on one screen, read-only.

The status row (phase, message with its root cause, conditions), then the records behind it: the spec's
source and the version installed, generations, the endpoint, restarts with their exits, the backoff, the
gate's last result, the server's last events and its last log lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mcp_reconcile import diagnose, eventsview, logsview, render
from mcp_reconcile.errors import McpReconcileError, StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.settings import Options
from mcp_reconcile.status import age, collect, manifest_paths
from mcp_reconcile.store import StateDir

# How many of the server's last events and log lines are shown.
LAST_EVENTS = 10
LAST_LOG_LINES = 10


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def gather(opts: Options, name: str) -> dict[str, Any] | None:
    """Everything `describe` shows, as data (what -o json prints); None for a server nobody knows."""
    row = next((r for r in collect(opts) if r["name"] == name), None)
    if row is None:
        return None
    state = StateDir(opts.state_dir)
    entry = Ledger(state).get(name)
    spec = _spec(opts, state, name)
    try:
        install = state.read_install(name) or {}
        run = state.read_run(name) or {}
    except StoreError:
        install, run = {}, {}
    events = [e for e in diagnose.recent_events(state) if e.get("server") == name]
    return {
        **row,
        "source": str(spec.source) if spec else install.get("source"),
        "installed_source": install.get("source"), "resolved_version": install.get("resolved_version"),
        "installed_at": install.get("installed_at"),
        "desired_generation": spec.generation if spec else None, "running_generation": run.get("generation"),
        "protocol_version": run.get("protocol_version"), "runner_pid": run.get("runner_pid"),
        "started_at": run.get("started_at"), "last_exit": entry.get("last_exit"),
        "in_crash_loop": bool(entry.get("in_crash_loop")), "backoff_delay_s": entry.get("backoff_delay_s"),
        "gate": {"enabled": bool(spec and spec.tests.gate), "passed": entry.get("test_passed"),
                 "message": entry.get("test_message", ""), "tested_generation": entry.get("tested_generation")},
        "restarts_and_exits": [{"at": m.at, "what": m.text} for m in logsview.markers(events, name)][-LAST_EVENTS:],
        "events": events[-LAST_EVENTS:],
        "log": diagnose.last_log_lines(state, name, LAST_LOG_LINES),
    }


def _spec(opts: Options, state: StateDir, name: str) -> Any:
    from mcp_reconcile.desired import load_desired

    try:
        desired = load_desired(manifest_paths(opts, state), state, create_key=False, unset_vars_ok=True)
    except McpReconcileError:
        return None
    return desired.load.by_name.get(name)


def _fields(pairs: Sequence[tuple[str, Any]]) -> Any:
    """`Label:  value` lines; values never folded mid-word (a URL stays whole), long ones wrap at spaces."""
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in pairs:
        table.add_row(f"{label}:", "-" if value in (None, "") else str(value))
    return table


def _conditions(conds: Sequence[Mapping[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"):
        table.add_column(col, no_wrap=col != "MESSAGE", overflow="fold")
    for c in conds:
        style = {"True": "green", "False": "red"}.get(c["status"], "yellow")
        since = c.get("lastTransitionTime")
        table.add_row(c["type"], f"[{style}]{c['status']}[/]", c["reason"], _when(since), c["message"] or "")
    return table


def describe_view(info: Mapping[str, Any]) -> Any:
    """The rich renderable of `describe` (tests print it on a Console of fixed width)."""
    from rich.console import Group
    from rich.text import Text

    gate = info["gate"]
    gate_text = ("off" if not gate["enabled"] else
                 "not tested yet" if gate["passed"] is None else
                 f"{'passed' if gate['passed'] else 'FAILED'}" + (f": {gate['message']}" if gate["message"] else ""))
    last_exit = info.get("last_exit") or {}
    exit_text = (f"code {last_exit.get('code')} ({last_exit.get('reason', '')}) at {_when(last_exit.get('at'))}"
                 if last_exit else None)
    backoff = (f"in CrashLoopBackOff, next start after {info['backoff_delay_s']}s" if info["in_crash_loop"]
               else "none")
    parts: list[Any] = [
        _fields([("Name", info["name"]), ("Phase", info["phase"]), ("Ready", "yes" if info["ready"] else "no"),
                 ("Message", info["message"]), ("Source", info["source"]),
                 ("Installed", info["installed_source"]), ("Resolved version", info["resolved_version"]),
                 ("Generation", info["desired_generation"]), ("Running generation", info["running_generation"])]),
        Text.assemble(("Endpoint:", "bold"), "  ", info["url"] or "-", no_wrap=True, overflow="ignore"),
        _fields([("Era", " ".join(str(x) for x in (info.get("era"), info.get("protocol_version")) if x)),
                 ("Server pid", info["server_pid"]), ("Runner pid", info["runner_pid"]),
                 ("Up", age(info["age_s"])), ("Restarts", info["restarts"]), ("Last exit", exit_text),
                 ("Backoff", backoff), ("Gate", gate_text)]),
        Text("\nConditions:", style="bold"), _conditions(info["conditions"]),
        Text("\nRestarts and exits:", style="bold"),
        *([Text(f"  {eventsview.clock(m['at'])}  {m['what']}") for m in info["restarts_and_exits"]]
          or [Text("  (none recorded)", style="dim")]),
        Text(f"\nLast events (up to {LAST_EVENTS}):", style="bold"),
        *([eventsview.event_line(e) for e in info["events"]] or [Text("  (none)", style="dim")]),
        Text(f"\nLast log lines (logs/{info['name']}.log):", style="bold"),
        *([Text("  " + line) for line in info["log"]] or [Text("  (empty)", style="dim")]),
    ]
    return Group(*parts)


def show_describe(opts: Options) -> int:
    name = opts.names[0]
    info = gather(opts, name)
    if info is None:
        print(f"error: no server named {name!r} in the manifests or the state dir {opts.state_dir}", file=sys.stderr)
        return render.EXIT_ERROR
    if opts.output == "json":
        print(json.dumps(info, indent=2, default=str))
        return render.EXIT_OK
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 120, highlight=False).print(describe_view(info), crop=False)
    return render.EXIT_OK
