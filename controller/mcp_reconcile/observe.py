"""Observed state from the state dir's records and the process table. Reads, never acts.

A run record counts only when psutil shows the same runner pid with the same create_time and command
line; otherwise the record is stale (the runner was killed, or the pid was reused).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from mcp_reconcile import proc
from mcp_reconcile.errors import StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import Observed, ObservedServer
from mcp_reconcile.store import RunRecord, StateDir


@dataclass(frozen=True)
class RunnerLiveness:
    alive: bool
    reason: str = ""


def runner_liveness(record: RunRecord) -> RunnerLiveness:
    """Is the runner a record names still that very process?"""
    pid = record.get("runner_pid")
    if not pid:
        return RunnerLiveness(False, "record has no runner pid")
    if proc.is_same_process(pid, record.get("runner_create_time", 0.0), record.get("runner_cmdline", [])):
        return RunnerLiveness(True)
    if proc.process_identity(pid) is None:
        return RunnerLiveness(False, f"runner pid {pid} is gone")
    return RunnerLiveness(False, f"pid {pid} now belongs to another process")


def observe_server(state: StateDir, name: str) -> ObservedServer:
    try:
        install = state.read_install(name)
    except StoreError:
        install = None  # a corrupt record means "not installed": the next install rewrites it
    installed = bool(install) and state.install_dir(name).is_dir()
    try:
        run = state.read_run(name)
    except StoreError:
        run = None
    running = stale = False
    stale_reason = ""
    exit_code = None
    if run:
        exit_info = run.get("exit") or None
        if run.get("state") == "exited" or exit_info:
            exit_info = exit_info or {}
            code = exit_info.get("code")
            sig = exit_info.get("signal")
            exit_code = code if code is not None else (128 + sig if sig else -1)
        else:
            liveness = runner_liveness(run)
            running, stale, stale_reason = liveness.alive, not liveness.alive, liveness.reason
    return ObservedServer(
        name=name, installed=installed,
        install_generation=install.get("generation") if install else None,
        install_digests=MappingProxyType(dict(install.get("digests", {}))) if install else MappingProxyType({}),
        resolved_version=install.get("resolved_version") if install else None,
        install_source=install.get("source") if install else None,
        running=running, stale_run_record=stale, stale_reason=stale_reason,
        runtime_generation=run.get("generation") if run else None,
        runtime_digests=MappingProxyType(dict(run.get("digests", {}))) if run else MappingProxyType({}),
        endpoint=run.get("endpoint") if run and running else None,
        server_pid=run.get("server_pid") if run and running else None,
        last_exit_code=exit_code,
    )


def with_memory(obs: ObservedServer, entry: Mapping[str, Any]) -> ObservedServer:
    """Add what the controller remembers (state.json) to what the records say."""
    tested = entry.get("tested_generation") if entry.get("test_passed") else None
    last_exit = entry.get("last_exit") or {}
    cleared = obs.last_exit_code is None and not obs.running and not obs.stale_run_record
    if cleared and last_exit.get("code") is not None:
        obs = replace(obs, last_exit_code=int(last_exit["code"]))   # the controller cleared the record, not the exit
    return replace(
        obs, tested_generation=tested, restarts=int(entry.get("restarts", 0)),
        runtime_digests=obs.runtime_digests or MappingProxyType(dict(entry.get("runtime_digests", {}))),
        consecutive_probe_failures=int(entry.get("consecutive_probe_failures", 0)) if obs.running else 0,
        healthy=entry.get("healthy") if obs.running else None)


def observe(state: StateDir, names: Iterable[str] = (), *, ledger: Ledger | None = None) -> Observed:
    """Every server the state dir knows, plus `names` (declared ones, possibly not known yet)."""
    ledger = ledger if ledger is not None else Ledger(state)
    all_names = sorted(set(names) | state.known_servers())
    return Observed(MappingProxyType({n: with_memory(observe_server(state, n), ledger.get(n)) for n in all_names}))
