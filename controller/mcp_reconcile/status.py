"""`status`: a read-only view of the state dir (no lock, no probes, no mcp import).

Without -f it reads the manifests last applied to the state dir (lastapplied.py), so it gives the same
answer from any directory. MESSAGE carries the root cause of a failure (diagnose.py), and the table keeps
every endpoint URL on one line at any terminal width: other columns give way, then the message moves
under its row.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

from mcp_reconcile import conditions, diagnose, lastapplied, render
from mcp_reconcile.desired import load_desired
from mcp_reconcile.errors import McpReconcileError, StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import Phase
from mcp_reconcile.observe import observe
from mcp_reconcile.ports import endpoint_url, read_ports
from mcp_reconcile.readiness import memory_of
from mcp_reconcile.settings import DEFAULT_MANIFESTS, Options
from mcp_reconcile.store import StateDir

# `status --watch` redraws this often (a screen refresh, not a wait on anything).
WATCH_INTERVAL_S = 2.0
# Below this many columns left for MESSAGE, the message goes on its own line under its row.
MIN_MESSAGE_WIDTH = 30
# NAME is cut to this many characters (with an ellipsis) before columns are dropped.
NAME_MIN_WIDTH = 12
GAP = "  "
PHASE_STYLES = {"Running": "green", "CrashLoopBackOff": "bold red", "Failed": "bold red", "Degraded": "yellow",
                "Starting": "yellow", "Installing": "cyan", "Pending": "cyan", "Stopped": "dim"}


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def process_stats(pid: int | None) -> dict[str, Any]:
    """CPU time used so far (user + system, seconds) and RSS of a server process and its children."""
    if not pid:
        return {}
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        cpu_s = sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return {}
    return {"rss_mb": round(rss / 2**20, 1), "cpu_seconds": round(cpu_s, 2), "processes": len(procs)}


def manifest_paths(opts: Options, state: StateDir) -> list[str]:
    """-f, else $MCP_RECONCILE_MANIFESTS, else what was last applied to this state dir, else ./manifests."""
    return lastapplied.view_paths(state, opts.manifests, [DEFAULT_MANIFESTS])


def collect(opts: Options) -> list[dict[str, Any]]:
    state = StateDir(opts.state_dir)
    ledger = Ledger(state)
    specs: dict[str, Any] = {}
    held: dict[str, str] = {}
    try:
        desired = load_desired(manifest_paths(opts, state), state, create_key=False, ledger=ledger,
                               unset_vars_ok=True)
        specs, held = desired.load.by_name, desired.held
    except McpReconcileError:
        specs = {}  # status shows what runs even when the manifests cannot be read
    observed = observe(state, specs, ledger=ledger)
    try:
        known_ports = read_ports(state)
    except StoreError:
        known_ports = {}
    events = diagnose.recent_events(state)
    rows = []
    for name, obs in observed.servers.items():
        entry = ledger.get(name)
        why_held = held.get(name) if name not in specs else None
        phase, conds, message = conditions.evaluate(specs.get(name), obs, memory_of(entry), held=why_held)
        if name not in specs and not why_held and entry.get("phase"):
            # not in the manifests this command read (another -f?): show what the controller recorded
            phase = Phase(entry["phase"])
            message = (entry.get("message") or "") + " (not in the manifests read by this command)"
        ready = any(c.type == "Ready" and c.status == "True" for c in conds)
        cause = None if ready or why_held else diagnose.root_cause(
            name, entry, last_exit_code=obs.last_exit_code, events=events,
            log_lines=diagnose.last_log_lines(state, name, 1))
        message = diagnose.explain(phase.value, message, cause)
        if cause and phase in (Phase.Pending, Phase.Installing) and not obs.running:
            phase = Phase.Failed   # "Installing ... not installed" after the install failed says nothing
        try:
            run = state.read_run(name) or {}
        except StoreError:
            run = {}
        started = run.get("started_at") if obs.running else None
        sessions = len(run.get("session_pids") or ()) if obs.running else 0   # sessions: isolated, each a process
        if sessions and ready:
            message = f"{sessions} isolated session(s)" + (f"; {message}" if message else "")
        rows.append({
            "name": name, "phase": phase.value, "ready": ready,
            "restarts": obs.restarts, "age_s": round(time.time() - started, 1) if started else None,
            "endpoint": obs.endpoint, "url": obs.endpoint or _stable_url(known_ports, name, specs.get(name)),
            "message": message, "cause": cause, "era": run.get("era") if obs.running else None,
            "server_pid": obs.server_pid, "generation": obs.runtime_generation,
            "backoff_delay_s": entry.get("backoff_delay_s") if entry.get("in_crash_loop") else None,
            "conditions": [{"type": c.type, "status": c.status, "reason": c.reason,
                            "message": c.message or (message if c.type == "Ready" and not ready else ""),
                            "lastTransitionTime": _transition(entry, c.type, c.status)} for c in conds],
            "last_probe": entry.get("last_probe"), "isolated_sessions": sessions,
            **process_stats(obs.server_pid),
        })
    return rows


def _transition(entry: dict[str, Any], type_: str, status: str) -> float | None:
    """When a condition took its current status, as the controller recorded it (None if not recorded)."""
    for c in entry.get("conditions", []):
        if c.get("type") == type_ and c.get("status") == status:
            return c.get("lastTransitionTime")
    return None


def _stable_url(known_ports: dict[str, int], name: str, spec: Any) -> str | None:
    """The URL a server is served at whenever it runs (ports.json; the path from its spec), or None before
    its first start."""
    port = (spec.port if spec is not None else None) or known_ports.get(name)
    return endpoint_url(port, spec.path if spec is not None else "/mcp") if port else None


class StatusTable:
    """The status table as a rich renderable laid out for the width it is given: URLs are never folded."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        headers = ["NAME", "PHASE", "READY", "RESTARTS", "AGE", "ENDPOINT", "CPU", "RSS"]
        cells = [[r["name"], r["phase"], "yes" if r["ready"] else "no", str(r["restarts"]), age(r["age_s"]),
                  r["url"] or "-", f"{r['cpu_seconds']}s" if "cpu_seconds" in r else "-",
                  f"{r['rss_mb']}M" if "rss_mb" in r else "-"] for r in self.rows]
        return headers, cells

    def layout(self, width: int) -> tuple[list[str], list[list[str]], list[int], int | None]:
        """(headers, cells, column widths, message width or None for messages under their rows).

        Tried in order until the row fits: everything with MESSAGE beside it; without CPU and RSS; MESSAGE
        under the row; NAME cut to NAME_MIN_WIDTH; without AGE, RESTARTS, READY; the URL under the row (whole).
        """
        headers, cells = self._cells()
        full = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
        attempts: list[tuple[tuple[str, ...], bool, bool]] = [  # (dropped columns, message beside, cut NAME)
            ((), True, False), (("CPU", "RSS"), True, False), (("CPU", "RSS"), False, False),
            (("CPU", "RSS"), False, True), (("CPU", "RSS", "AGE"), False, True),
            (("CPU", "RSS", "AGE", "RESTARTS"), False, True), (("CPU", "RSS", "AGE", "RESTARTS", "READY"), False, True),
            (("CPU", "RSS", "AGE", "RESTARTS", "ENDPOINT"), False, True)]   # last: the URL on a line of its own
        for dropped, beside, cut in attempts:
            keep = [i for i, h in enumerate(headers) if h not in dropped]
            widths = [full[i] for i in keep]
            if cut:
                widths[0] = min(widths[0], max(NAME_MIN_WIDTH, len("NAME")))
            used = sum(widths) + len(GAP) * len(widths)
            room = width - used
            if (beside and room >= MIN_MESSAGE_WIDTH) or (not beside and room + len(GAP) >= 0):
                break
        return ([headers[i] for i in keep], [[row[i] for i in keep] for row in cells], widths,
                room if beside else None)

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.text import Text

        headers, cells, widths, message_width = self.layout(options.max_width)

        def fit(value: str, w: int) -> str:
            return value if len(value) <= w else value[:w - 1] + "…"

        head = [fit(h, w).ljust(w) for h, w in zip(headers, widths, strict=True)]
        yield Text(GAP.join([*head, "MESSAGE"] if message_width is not None else head).rstrip(), style="bold",
                   no_wrap=True, overflow="ignore")
        for row, values in zip(self.rows, cells, strict=True):
            line = Text(no_wrap=True, overflow="ignore")
            for i, (value, w) in enumerate(zip(values, widths, strict=True)):
                if i:
                    line.append(GAP)
                last = i == len(widths) - 1 and (message_width is None or not row["message"])
                shown = value if headers[i] == "ENDPOINT" else fit(value, w)   # the URL is never cut
                style = PHASE_STYLES.get(value, "") if headers[i] == "PHASE" else ""
                line.append(shown if last else shown.ljust(w), style=style)
            message = row["message"] or ""
            if "ENDPOINT" not in headers:
                yield line
                line = Text("    " + (row["url"] or "-"), no_wrap=True, overflow="ignore")
            if message_width is not None:
                wrapped = textwrap.wrap(message, message_width) or [""]
                line.append(GAP + wrapped[0])
                yield line
                indent = " " * (sum(widths) + len(GAP) * len(widths))
                yield from (Text(indent + more, no_wrap=True, overflow="ignore") for more in wrapped[1:])
            else:
                yield line
                for more in textwrap.wrap(message, max(20, options.max_width - 4)):
                    yield Text("    " + more, style="dim", no_wrap=True, overflow="ignore")


def status_table(rows: list[dict[str, Any]]) -> StatusTable:
    return StatusTable(rows)


def show_status(opts: Options) -> int:
    if opts.output == "json":
        print(json.dumps({"servers": collect(opts)}, indent=2))
        return render.EXIT_OK
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 200)
    if opts.watch:
        return _watch(opts, console)
    rows = collect(opts)
    console.print(status_table(rows) if rows else "No servers known in this state dir.", crop=False)
    return render.EXIT_OK


def _watch(opts: Options, console: Any) -> int:
    """Redraw the table in place (rich Live) every WATCH_INTERVAL_S until Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def frame() -> Any:
        rows = collect(opts)
        stamp = Text(f"{time.strftime('%H:%M:%S')}  every {WATCH_INTERVAL_S:g}s, Ctrl-C to stop", style="dim")
        return Group(stamp, status_table(rows) if rows else Text("No servers known in this state dir."))

    try:
        with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(WATCH_INTERVAL_S)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass
    return render.EXIT_OK
