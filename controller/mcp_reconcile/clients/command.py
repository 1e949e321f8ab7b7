"""`mcp-reconcile clients list | write | remove`: manifests + state dir -> entries -> client config files.

Endpoints: a server's URL is `http://127.0.0.1:PORT/PATH` with the port from `ports.py` (spec.port, else the
one in ports.json, else allocated now under the state dir's lock, as the controller would when it starts the
server). A dry run never allocates: a server without a port yet shows `<port>` in its URL.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_reconcile.clients.catalog import CLIENTS, PROJECT, USER, Client, Connect, Target, Where
from mcp_reconcile.clients.record import Record
from mcp_reconcile.clients.writer import (
    ClientConfigError,
    FileChange,
    apply,
    desired_entries,
    ownership,
    plan_remove,
    plan_write,
    read_text,
)
from mcp_reconcile.errors import McpReconcileError, StoreError
from mcp_reconcile.store import StateDir

if TYPE_CHECKING:
    from mcp_reconcile.model import ServerSpec
    from mcp_reconcile.settings import Options

EXIT_OK, EXIT_ERROR = 0, 1


def connect_executable() -> str:
    """The absolute path of the mcp-reconcile executable that `connect` entries run ("" when not found)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "mcp-reconcile" and argv0.exists():
        return str(argv0.absolute())
    found = shutil.which("mcp-reconcile")
    if found:
        return str(Path(found).absolute())
    sibling = Path(sys.executable).parent / "mcp-reconcile"
    return str(sibling) if sibling.exists() else ""


def _client(opts: Options) -> Client:
    if not opts.client:
        raise ClientConfigError(f"--client is required: one of {', '.join(CLIENTS)}")
    if opts.client not in CLIENTS:
        raise ClientConfigError(f"unknown client {opts.client!r}: one of {', '.join(CLIENTS)}")
    client = CLIENTS[opts.client]
    if opts.scope not in client.paths:
        raise ClientConfigError(f"{client.name} has no {opts.scope} scope (it has: {', '.join(client.paths)})")
    return client


def _specs(opts: Options) -> list[ServerSpec]:
    from mcp_reconcile.manifest import load_manifests
    from mcp_reconcile.model import DesiredState

    load = load_manifests(opts.manifest_paths(), unset_vars_ok=True)   # no secret is needed to name a var
    if load.problems:
        raise McpReconcileError("the manifests have problems (see `mcp-reconcile validate`): "
                                + "; ".join(str(p) for p in load.problems[:3]))
    specs = {s.name: s for s in load.specs}
    if opts.names:
        unknown = [n for n in opts.names if n not in specs]
        if unknown:
            raise ClientConfigError(f"no server {', '.join(unknown)} in the manifests "
                                    f"({', '.join(sorted(specs)) or 'none'})")
        return [specs[n] for n in opts.names]
    return [s for s in specs.values() if s.desired_state == DesiredState.running]


def targets_for(specs: list[ServerSpec], state: StateDir, *, allocate: bool) -> list[Target]:
    from mcp_reconcile import ports

    known = ports.read_ports(state)
    reserved = [s.port for s in specs if s.port]
    targets = []
    for spec in specs:
        port: int | str | None = spec.port or known.get(spec.name)
        if port is None and allocate:
            try:
                with state.locked():
                    port = ports.port_for(state, spec.name, requested=None, reserved=reserved)
            except StoreError as exc:
                raise ClientConfigError(f"{spec.name} has no port yet and {exc}") from None
        url = f"http://127.0.0.1:{port or '<port>'}{spec.path}"
        targets.append(Target(spec.name, url, spec.token_env))
    return targets


def cmd_write(opts: Options) -> int:
    client = _client(opts)
    state = StateDir(opts.state_dir)
    where = Where.here()
    path = client.path(opts.scope, where).absolute()
    targets = targets_for(_specs(opts), state, allocate=not opts.dry_run)
    connect = Connect(connect_executable(), str(state.root))
    desired = desired_entries(client, opts.scope, targets, connect=connect)
    if not connect.command and any(e.value.get("args", [None])[:1] == ["connect"] for e in desired.values()):
        raise ClientConfigError("cannot find the mcp-reconcile executable that connect entries run: "
                                "install it (pip install .) or put it on PATH")
    record = Record(state)
    change = plan_write(client, opts.scope, path, desired, record, force=opts.force, prune=not opts.names)
    if opts.dry_run:
        sys.stdout.write(change.diff() or f"{path}: no changes\n")
        _print_entries(change, dry_run=True)
        return EXIT_ERROR if change.conflicts else EXIT_OK
    apply(change, record)
    _print_entries(change, dry_run=False)
    return EXIT_OK


def cmd_remove(opts: Options) -> int:
    client = _client(opts)
    state = StateDir(opts.state_dir)
    path = client.path(opts.scope, Where.here()).absolute()
    record = Record(state)
    change = plan_remove(client, opts.scope, path, opts.names or None, record, force=opts.force)
    if opts.dry_run:
        sys.stdout.write(change.diff() or f"{path}: no changes\n")
    else:
        apply(change, record)
    _print_entries(change, dry_run=opts.dry_run)
    return EXIT_OK


def _print_entries(change: FileChange, *, dry_run: bool) -> None:
    verb = "would write" if dry_run else ("wrote" if change.changed else "unchanged:")
    print(f"{change.client.title} ({change.scope}): {verb} {change.path}"
          + (f" (backup: {change.path.name}.mcpr-backup)" if change.changed and change.before is not None
             and not dry_run else ""))
    for e in change.entries:
        extra = "; ".join(x for x in (e.reason, e.note) if x)
        print(f"  {e.symbol} {e.name} {e.action}" + (f" ({extra})" if extra else ""))
    for e in change.conflicts:
        print(f"error: {change.path} {change.client.container}.{e.name}: {e.reason}", file=sys.stderr)


def list_clients(state: StateDir, where: Where) -> list[dict[str, Any]]:
    """Every known client and scope: its config file, whether it exists, and its servers with their owner;
    then any other file the record says mcp-reconcile wrote to (a project scope used elsewhere)."""
    record = Record(state)
    rows = [_row(client, scope, client.path(scope, where).absolute(), record)
            for client in CLIENTS.values() for scope in (USER, PROJECT) if scope in client.paths]
    listed = {row["file"] for row in rows}
    for entry in sorted(record.entries, key=lambda e: e["file"]):
        if entry["file"] not in listed and entry.get("client") in CLIENTS:
            listed.add(entry["file"])
            rows.append(_row(CLIENTS[entry["client"]], entry.get("scope", PROJECT), Path(entry["file"]), record))
    return rows


def _row(client: Client, scope: str, path: Path, record: Record) -> dict[str, Any]:
    from mcp_reconcile.clients.documents import open_document

    text = read_text(path)
    row: dict[str, Any] = {"client": client.name, "scope": scope, "file": str(path), "exists": text is not None,
                           "servers": []}
    if text is not None:
        try:
            doc = open_document(client.format, text, file=str(path), container=client.container)
            row["servers"] = [{"name": name, "owner": ownership(record, path, name, value)}
                              for name, value in doc.entries().items()]
        except McpReconcileError as exc:
            row["error"] = str(exc)
    return row


def cmd_list(opts: Options) -> int:
    rows = list_clients(StateDir(opts.state_dir), Where.here())
    if opts.output == "json":
        print(json.dumps({"clients": rows}, indent=2))
        return EXIT_OK
    labels = {"managed": "managed", "edited": "managed, edited by hand", "user": "not managed"}
    for row in rows:
        status = "" if row["exists"] else " (absent)"
        print(f"{row['client']} [{row['scope']}] {row['file']}{status}")
        if "error" in row:
            print(f"    error: {row['error']}")
        for server in row["servers"]:
            print(f"    {server['name']}: {labels[server['owner']]}")
    return EXIT_OK


def run(opts: Options) -> int:
    """The `clients` command: dispatch on its action."""
    actions = {"list": cmd_list, "write": cmd_write, "remove": cmd_remove}
    return actions[opts.clients_action](opts)
