"""`status`, `events` and `logs`: read-only views of the state dir (no lock, no probes, no mcp import)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcp_reconcile import conditions, render
from mcp_reconcile.cli import Options
from mcp_reconcile.desired import load_desired
from mcp_reconcile.errors import McpReconcileError, StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import Phase
from mcp_reconcile.observe import observe
from mcp_reconcile.ports import endpoint_url, read_ports
from mcp_reconcile.readiness import memory_of
from mcp_reconcile.store import StateDir

# How often --follow looks for new lines (tail -f does the same by default every second; we are quicker).
FOLLOW_POLL_S = 0.25


def _age(seconds: float | None) -> str:
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


def collect(opts: Options) -> list[dict[str, Any]]:
    state = StateDir(opts.state_dir)
    ledger = Ledger(state)
    specs: dict[str, Any] = {}
    held: dict[str, str] = {}
    try:
        desired = load_desired(opts.manifest_paths(), state, create_key=False, ledger=ledger, unset_vars_ok=True)
        specs, held = desired.load.by_name, desired.held
    except McpReconcileError:
        specs = {}  # status shows what runs even when the manifests cannot be read
    observed = observe(state, specs, ledger=ledger)
    try:
        known_ports = read_ports(state)
    except StoreError:
        known_ports = {}
    rows = []
    for name, obs in observed.servers.items():
        entry = ledger.get(name)
        why_held = held.get(name) if name not in specs else None
        phase, conds, message = conditions.evaluate(specs.get(name), obs, memory_of(entry), held=why_held)
        if name not in specs and not why_held and entry.get("phase"):
            # not in the manifests this command read (another -f?): show what the controller recorded
            phase = Phase(entry["phase"])
            message = (entry.get("message") or "") + " (not in the manifests read by this command)"
        try:
            run = state.read_run(name) or {}
        except StoreError:
            run = {}
        started = run.get("started_at") if obs.running else None
        rows.append({
            "name": name, "phase": phase.value, "ready": any(c.type == "Ready" and c.status == "True" for c in conds),
            "restarts": obs.restarts, "age_s": round(time.time() - started, 1) if started else None,
            "endpoint": obs.endpoint, "url": obs.endpoint or _stable_url(known_ports, name, specs.get(name)),
            "message": message, "era": run.get("era") if obs.running else None,
            "server_pid": obs.server_pid, "generation": obs.runtime_generation,
            "backoff_delay_s": entry.get("backoff_delay_s") if entry.get("in_crash_loop") else None,
            "conditions": [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                           for c in conds],
            "last_probe": entry.get("last_probe"), **process_stats(obs.server_pid),
        })
    return rows


def _stable_url(known_ports: dict[str, int], name: str, spec: Any) -> str | None:
    """The URL a server is served at whenever it runs (ports.json; the path from its spec), or None before
    its first start."""
    port = (spec.port if spec is not None else None) or known_ports.get(name)
    return endpoint_url(port, spec.path if spec is not None else "/mcp") if port else None


def show_status(opts: Options) -> int:
    rows = collect(opts)
    if opts.output == "json":
        print(json.dumps({"servers": rows}, indent=2))
        return render.EXIT_OK
    if not rows:
        print("No servers known in this state dir.")
        return render.EXIT_OK
    from rich.console import Console

    Console(width=200 if not sys.stdout.isatty() else None).print(status_table(rows))
    return render.EXIT_OK


def status_table(rows: list[dict[str, Any]]) -> Any:
    """The status table (a rich Table): URLs whole on any terminal width, the message folding instead."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    url_width = max(len(r["url"] or "-") for r in rows)
    for col in ("NAME", "PHASE", "READY", "RESTARTS", "AGE", "ENDPOINT", "CPU", "RSS", "MESSAGE"):
        if col == "ENDPOINT":   # a URL is copied from here: never folded, other columns give way
            table.add_column(col, no_wrap=True, min_width=url_width)
        else:
            table.add_column(col, overflow="fold", ratio=3 if col == "MESSAGE" else None)
    for r in rows:
        table.add_row(r["name"], r["phase"], "yes" if r["ready"] else "no", str(r["restarts"]), _age(r["age_s"]),
                      r["url"] or "-", f"{r['cpu_seconds']}s" if "cpu_seconds" in r else "-",
                      f"{r['rss_mb']}M" if "rss_mb" in r else "-", r["message"] or "")
    return table


def _follow(path: Path, *, from_end_lines: int | None) -> Iterator[str]:
    """Lines of `path`, then new ones as they are appended (survives rotation by reopening)."""
    while not path.exists():
        time.sleep(FOLLOW_POLL_S)
    fh = open(path, errors="replace")  # noqa: SIM115 - reopened on rotation
    lines = fh.readlines()
    yield from (lines[-from_end_lines:] if from_end_lines else lines)
    inode = path.stat().st_ino
    while True:
        line = fh.readline()
        if line:
            yield line
            continue
        try:
            if path.stat().st_ino != inode:
                fh.close()
                fh = open(path, errors="replace")  # noqa: SIM115
                inode = path.stat().st_ino
                continue
        except FileNotFoundError:
            pass
        time.sleep(FOLLOW_POLL_S)


def show_events(opts: Options) -> int:
    path = StateDir(opts.state_dir).events_file
    if not path.exists() and not opts.follow:
        print(f"No events yet ({path} does not exist).", file=sys.stderr)
        return render.EXIT_OK
    lines = _follow(path, from_end_lines=None) if opts.follow else iter(path.read_text(errors="replace").splitlines())
    try:
        for line in lines:
            if opts.server:
                try:
                    if json.loads(line).get("server") != opts.server:
                        continue
                except ValueError:
                    continue
            print(line.rstrip("\n"), flush=True)
    except KeyboardInterrupt:
        pass
    return render.EXIT_OK


def show_logs(opts: Options) -> int:
    name = opts.names[0]
    path = StateDir(opts.state_dir).log_path(name)
    if not path.exists() and not opts.follow:
        print(f"error: no log for {name!r} ({path} does not exist)", file=sys.stderr)
        return render.EXIT_ERROR
    try:
        if opts.follow:
            for line in _follow(path, from_end_lines=opts.lines):
                print(line.rstrip("\n"), flush=True)
        else:
            for line in path.read_text(errors="replace").splitlines()[-opts.lines:]:
                print(line)
    except KeyboardInterrupt:
        pass
    return render.EXIT_OK
