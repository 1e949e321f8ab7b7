"""`import FILE -d DIR --take-over`: the imported servers' own entries in the client file that declared them are
replaced by managed ones (the endpoint URL, or a `connect` entry), so each server runs once, under mcp-reconcile.

Which client the file belongs to comes from `--client`, or from its path (each known client's user file, and its
project file under any of the file's parent directories). Everything else in the file stays, the previous file
is kept as FILE.mcpr-backup, and the replaced entries are recorded as ours (so `clients remove` can undo them).
"""

from __future__ import annotations

from pathlib import Path

from mcp_reconcile import ports
from mcp_reconcile.clients import CLIENTS, PROJECT, USER, Client, Connect, Record, Where, apply, desired_entries
from mcp_reconcile.clients import plan_write as plan_file
from mcp_reconcile.clients.catalog import Target
from mcp_reconcile.clients.command import connect_executable
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.store import StateDir

# How many parent directories of a file are tried as the project of a project-scope client file.
PROJECT_DEPTH = 3


class TakeOverError(McpReconcileError):
    """The file's client is unknown, or its entries could not be replaced."""


def client_of(file: Path, name: str | None = None) -> tuple[Client, str]:
    """The client (and scope) whose config `file` is."""
    real = file.resolve()
    if name is not None:
        client = CLIENTS.get(name)
        if client is None:
            raise TakeOverError(f"unknown client {name!r}: one of {', '.join(CLIENTS)}")
        return client, _scope_of(client, real) or USER
    for client in CLIENTS.values():
        scope = _scope_of(client, real)
        if scope is not None:
            return client, scope
    raise TakeOverError(f"{file}: not a known client's config file; name it with --client "
                        f"({', '.join(CLIENTS)})")


def _scope_of(client: Client, real: Path) -> str | None:
    here = Where.here()
    if USER in client.paths and client.path(USER, here).resolve() == real:
        return USER
    if PROJECT in client.paths:
        for project in list(real.parents)[:PROJECT_DEPTH]:
            if client.path(PROJECT, Where.here(cwd=project)).resolve() == real:
                return PROJECT
    return None


def take_over(file: Path, names: list[str], state: StateDir, *, client_name: str | None = None) -> list[str]:
    """Replace the entries `names` of `file` with managed ones; returns what was done, one line each."""
    client, scope = client_of(file, client_name)
    state.ensure()
    with state.locked():
        targets = [Target(name, ports.endpoint_url(ports.port_for(state, name, requested=None), "/mcp"))
                   for name in names]
    record = Record(state)
    entries = desired_entries(client, scope, targets, connect=Connect(connect_executable(), str(state.root.absolute())))
    change = plan_file(client, scope, file.absolute(), entries, record, force=True)
    apply(change, record)
    lines = [f"{file}: {e.name} now points at mcp-reconcile ({e.note or 'managed entry'})"
             for e in change.entries if e.action in ("add", "update")]
    if change.changed and change.before is not None:
        lines.append(f"{file}: the previous file is kept as {file}.mcpr-backup")
    return lines
