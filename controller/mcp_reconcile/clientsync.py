"""MCPClient manifests reconciled like servers: plan shows each client file's changes, apply writes them.

Each MCPClient keeps the entries it wrote in its config file: its selected servers are added or updated, and
those it wrote for servers it no longer selects are removed (entries `clients write` made, and the user's, are
left alone). One MCPClient per file. The MCPClients applied so far are remembered in `STATE/mcpclients.json`
(name -> client, scope, file, entries), so that deleting one from the manifests removes the entries it wrote.
Last good state applies here too: an MCPClient whose manifest file has a problem, or a manifest path that does
not exist, is left as it is; never a removal because of a typo.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_reconcile import ports
from mcp_reconcile.clients import CLIENTS, Connect, FileChange, Record, Where, apply, desired_entries, plan_remove
from mcp_reconcile.clients import plan_write as plan_file
from mcp_reconcile.clients.command import connect_executable, targets_for
from mcp_reconcile.clientspec import ClientSpec, selected, unknown_servers
from mcp_reconcile.desired import Desired
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

APPLIED_FILE = "mcpclients.json"


@dataclass
class ClientChange:
    """What one MCPClient (or the removal of one) does to its file."""

    name: str
    change: FileChange | None          # None: it could not be planned (see problem)
    removed: bool = False              # the MCPClient is gone from the manifests
    problem: str = ""


@dataclass
class ClientPlan:
    changes: list[ClientChange] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return any(c.change is not None and c.change.changed for c in self.changes)

    @property
    def problems(self) -> list[str]:
        out = [f"MCPClient {c.name}: {c.problem}" for c in self.changes if c.problem]
        out += [f"MCPClient {c.name}: {c.change.path}: {e.name}: {e.reason}"
                for c in self.changes if c.change is not None for e in c.change.conflicts]
        return out


def applied(state: StateDir) -> dict[str, dict[str, Any]]:
    data = read_json(state.root / APPLIED_FILE)
    return data if isinstance(data, dict) else {}


def _file_of(spec: ClientSpec) -> Path:
    client = CLIENTS[spec.client]
    return spec.path if spec.path is not None else client.path(spec.scope, Where.here(cwd=spec.project_dir))


def plan_clients(desired: Desired, state: StateDir, *, manifest_paths: list[str], allocate: bool) -> ClientPlan:
    """Every MCPClient's file change, and the removals of MCPClients no longer declared."""
    result = ClientPlan()
    load = desired.load
    if not load.clients and not applied(state):
        return result
    record = Record(state)
    connect = Connect(connect_executable(), str(state.root.absolute()))
    specs = list(load.specs)
    earlier = applied(state)
    claimed: dict[Path, str] = {}
    for spec in load.clients:
        path = _file_of(spec)
        if path in claimed:
            result.changes.append(ClientChange(spec.name, None, problem=f"{path} is already kept by MCPClient "
                                               f"{claimed[path]} (one MCPClient per file: merge their servers)"))
            continue
        claimed[path] = spec.name
        missing = unknown_servers(spec, set(load.files))
        servers = selected(spec, specs)
        try:
            if allocate:   # the caller (apply, run) holds the state dir's lock: ports are given out here
                reserved = [s.port for s in specs if s.port]
                for server in servers:
                    ports.port_for(state, server.name, requested=server.port, reserved=reserved)
            targets = targets_for(servers, state, allocate=False)
            entries = desired_entries(CLIENTS[spec.client], spec.scope, targets, connect=connect)
            wrote = earlier.get(spec.name, {}).get("entries")
            change = plan_file(CLIENTS[spec.client], spec.scope, path, entries, record,
                               prune=wrote if isinstance(wrote, list) else [])
        except (McpReconcileError, ports.PortUnavailable, OSError) as exc:
            result.changes.append(ClientChange(spec.name, None, problem=str(exc)))
            continue
        problem = f"servers not in any manifest: {', '.join(missing)}" if missing else ""
        result.changes.append(ClientChange(spec.name, change, problem=problem))
    declared = {c.name for c in load.clients}
    paths_missing = any(not os.path.exists(p) for p in manifest_paths)
    for name, info in sorted(applied(state).items()):
        if name in declared or paths_missing or desired.ignores(str(info.get("manifest", ""))):
            continue   # still wanted, or its manifest cannot be read now: left as it is (last good state)
        client = CLIENTS.get(str(info.get("client")))
        if client is None:
            continue
        try:
            wrote = info.get("entries")   # only what this MCPClient wrote (not `clients write`'s entries)
            change = plan_remove(client, str(info.get("scope")), Path(str(info.get("file"))),
                                 wrote if isinstance(wrote, list) else [], record)
        except (McpReconcileError, OSError) as exc:
            result.changes.append(ClientChange(name, None, removed=True, problem=str(exc)))
            continue
        result.changes.append(ClientChange(name, change, removed=True))
    return result


def plan_lines(plan: ClientPlan) -> list[str]:
    """Terraform-style lines: `+ client cursor (my-cursor): add time`."""
    lines = []
    for item in plan.changes:
        if item.change is None:
            lines.append(f"! client {item.name}: {item.problem}")
            continue
        who = f"client {item.change.client.name} ({item.name})"
        for entry in item.change.entries:
            if entry.action == "conflict":
                lines.append(f"! {who}: {entry.name}: {entry.reason}")
            elif entry.action in ("add", "update", "remove"):
                why = f" ({entry.reason})" if entry.reason else ""
                lines.append(f"{entry.symbol} {who}: {entry.action} {entry.name}{why}")
        if item.removed and not item.change.entries:
            lines.append(f"- {who}: forget (no entries of ours left)")
    return lines


def apply_clients(plan: ClientPlan, state: StateDir, desired: Desired) -> list[str]:
    """Write every planned file (conflicts and problems are reported, not forced); returns the failures."""
    record = Record(state)
    failures = list(plan.problems)
    done = applied(state)
    by_name = {c.name: c for c in desired.load.clients}
    for item in plan.changes:
        if item.change is None or item.change.conflicts:
            continue
        try:
            apply(item.change, record)
        except (McpReconcileError, OSError) as exc:
            failures.append(f"MCPClient {item.name}: {exc}")
            continue
        if item.removed:
            done.pop(item.name, None)
        else:
            spec = by_name[item.name]
            done[item.name] = {"client": spec.client, "scope": spec.scope, "file": str(item.change.path),
                               "manifest": os.path.abspath(spec.origin.file),
                               "entries": sorted(item.change.written)}
    if done or (state.root / APPLIED_FILE).exists():
        write_json_atomic(state.root / APPLIED_FILE, done)
    return failures


def sync_clients(desired: Desired, state: StateDir, manifest_paths: list[str], log: Any, *,
                 say: Callable[[str], None] = lambda line: None) -> list[str]:
    """apply and run: write every MCPClient's changes (after the servers, whose ports the entries name); the
    caller holds the state dir's lock. Returns the failures (also logged)."""
    if not desired.load.clients and not (state.root / APPLIED_FILE).exists():
        return []
    client_plan = plan_clients(desired, state, manifest_paths=manifest_paths, allocate=True)
    for line in plan_lines(client_plan):
        say(line)
        log.info("client.changed", change=line)
    failures = apply_clients(client_plan, state, desired)
    for failure in failures:
        log.error("client.failed", error=failure)
    return failures
