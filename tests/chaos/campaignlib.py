"""What the chaos campaign counts: the figures block and the invariant checks behind each figure.

Each check reads what a user can see (state.json, run records, logs, the process table through psutil) and
returns the problems it found as text, so the campaign can count them, go on, and print them all at the end.
The campaign (test_campaign.py) and its README section say when each check runs.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mcp_reconcile.manifest import load_schema

RUN_STATES = frozenset({"starting", "running", "stopping", "exited"})
FIGURES = ("duplicates", "invalid states", "orphans", "zombies", "extra restarts", "tracebacks", "hangs")


@dataclass
class Figures:
    """The campaign's tally; `details` keeps the first few findings of each figure for the failure message."""

    counts: Counter[str] = field(default_factory=Counter)
    details: dict[str, list[str]] = field(default_factory=dict)
    done: Counter[str] = field(default_factory=Counter)        # controller kills, server kills, fuzzed...
    drift: dict[str, tuple[float, float]] = field(default_factory=dict)   # name -> (first, last)

    def add(self, figure: str, findings: Iterable[str]) -> None:
        found = list(findings)
        self.counts[figure] += len(found)
        self.details.setdefault(figure, []).extend(found[: max(0, 5 - len(self.details.get(figure, [])))])

    def block(self, seconds: float) -> str:
        lines = ["chaos campaign figures",
                 f"  done: {self.done['controller kills']} controller kill -9s ({self.done['apply kills']} in apply, "
                 f"{self.done['run kills']} in run), {self.done['server kills']} server kills "
                 f"({self.done['forking kills']} of forking servers, {self.done['sh kills']} of sh -c wrapped), "
                 f"{self.done['fuzzed']} fuzzed manifests (validate + plan), in {seconds:.0f} s",
                 f"  process-table checks saw up to {self.done['runners']} live runners at once"]
        lines += [f"  {name}: {self.counts[name]}" for name in (*FIGURES, "failed passes")]
        for name, (first, last) in self.drift.items():
            lines.append(f"  controller {name}: first {first:g}, last {last:g}, drift {last - first:+g}")
        return "\n".join(lines)

    def failures(self) -> str:
        return "\n".join(f"{name}: {self.counts[name]}\n    " + "\n    ".join(self.details.get(name, []))
                         for name in FIGURES if self.counts[name])


# ---- the state dir ------------------------------------------------------------------------------------

def invalid_states(state_dir: Path) -> list[str]:
    """state.json failing schemas/state.schema.json, or a run record that is unreadable or malformed."""
    found = []
    state_file = state_dir / "state.json"
    if state_file.exists():
        try:
            data = json.loads(state_file.read_text())
            found += [f"state.json: {'.'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}"
                      for e in load_schema("state.schema.json").iter_errors(data)]
        except (OSError, ValueError) as exc:
            found.append(f"state.json unreadable: {exc}")
    for path in sorted((state_dir / "run").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            continue   # removed between glob and read (a stop)
        except (OSError, ValueError) as exc:
            found.append(f"{path.name} unreadable: {exc}")
            continue
        problems = run_record_problems(path.stem, record)
        found += [f"{path.name}: {p}" for p in problems]
    return found


def run_record_problems(name: str, record: Any) -> list[str]:
    """The run record's shape (store.RunRecord): its server, a runner pid, a known state, typed pids."""
    if not isinstance(record, dict):
        return ["not an object"]
    problems = []
    if record.get("server") != name:
        problems.append(f"server {record.get('server')!r} in {name}.json")
    if not isinstance(record.get("runner_pid"), int) or record["runner_pid"] <= 0:
        problems.append(f"runner_pid {record.get('runner_pid')!r}")
    if record.get("state") not in RUN_STATES:
        problems.append(f"state {record.get('state')!r}")
    for key in ("server_pid", "server_pgid", "port"):
        if record.get(key) is not None and not isinstance(record[key], int):
            problems.append(f"{key} {record[key]!r}")
    return problems


def run_records(state_dir: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in (state_dir / "run").glob("*.json"):
        try:
            records[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue   # invalid_states counts it
    return records


# A traceback up to its exception line (the first unindented line after the frames).
TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)*.*", re.MULTILINE)


def tracebacks(texts: Mapping[str, str]) -> list[str]:
    """Every Python traceback in command outputs, controller stderr and the state dir's logs: where, the
    last frames and the exception."""
    return [f"{where}: ...{m.group(0)[-900:]}" for where, text in texts.items() for m in TRACEBACK.finditer(text)]


def log_texts(state_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(state_dir)): p.read_text(errors="replace")
            for p in sorted((state_dir / "logs").glob("*.log*"))}


# ---- the process table --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    pgid: int
    status: str
    name: str
    cmdline: str


def processes(markers: Iterable[str]) -> list[Proc]:
    """Every process whose command line names one of `markers` (the campaign's tmp dir), or whose session is
    led by such a process (a runner's server and its children)."""
    markers = [m for m in markers if m]
    table = []
    for p in psutil.process_iter(["pid", "ppid", "status", "name", "cmdline"]):
        try:
            sid, pgid = os.getsid(p.info["pid"]), os.getpgid(p.info["pid"])
        except OSError:
            continue
        table.append(Proc(p.info["pid"], p.info["ppid"], sid, pgid, p.info["status"], p.info["name"] or "",
                          " ".join(p.info["cmdline"] or ())))
    ours = {p.pid for p in table if any(m in p.cmdline for m in markers)}
    return [p for p in table if p.pid in ours or p.sid in ours]


def runner_name(p: Proc) -> str | None:
    """The server a runner serves: forked from the warm template (`mcpr:NAME`), or `--name NAME`."""
    if p.pid != p.sid or p.status == psutil.STATUS_ZOMBIE:
        return None
    if p.name.startswith("mcpr:") and "mcp_reconcile.spawner" in p.cmdline:
        return p.name[len("mcpr:"):]
    words = p.cmdline.split()
    if "mcp_reconcile.runner" in words and "--name" in words[:-1]:
        return words[words.index("--name") + 1]
    return None


def duplicates(table: list[Proc]) -> list[str]:
    """Two live runners for one server."""
    by_name: dict[str, list[int]] = {}
    for p in table:
        name = runner_name(p)
        if name:
            by_name.setdefault(name, []).append(p.pid)
    return [f"{name}: runners {pids}" for name, pids in sorted(by_name.items()) if len(pids) > 1]


def orphans(table: list[Proc], records: Mapping[str, Mapping[str, Any]], runner_sids: set[int]) -> list[str]:
    """A live process of a server (in a session a runner led, not the runner itself) whose runner is gone, or
    that sits in a process group no run record names any longer (a group left behind by a restart)."""
    live = {p.pid for p in table if p.status != psutil.STATUS_ZOMBIE}
    groups = {r.get("server_pgid") for r in records.values()} | {
        pid for r in records.values() for pid in r.get("session_pids") or ()}
    found = []
    for p in table:
        if p.status == psutil.STATUS_ZOMBIE or p.pid == p.sid or p.sid not in runner_sids:
            continue
        if p.sid not in live:
            found.append(f"pid {p.pid} (session {p.sid}: its runner is gone): {p.cmdline[:160]}")
        elif p.pgid not in groups:
            found.append(f"pid {p.pid} (group {p.pgid}: no run record names it): {p.cmdline[:160]}")
    return found


def zombies(table: list[Proc]) -> list[str]:
    """A dead child nobody reaped, whose parent is one of ours (init's unreaped zombies are init's job:
    this sandbox's PID 1 never reaps, as tests/e2e/conftest.py notes)."""
    return [f"pid {p.pid} (parent {p.ppid}): {p.name}" for p in table
            if p.status == psutil.STATUS_ZOMBIE and p.ppid != 1]


def controller_usage(pid: int) -> tuple[int, float]:
    """(open fds, RSS in MB) of the controller."""
    p = psutil.Process(pid)
    return p.num_fds(), round(p.memory_info().rss / 2**20, 1)
