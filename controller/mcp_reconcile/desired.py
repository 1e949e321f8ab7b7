"""Desired state for a command: manifests loaded with the state dir's generation key, and the servers
that must be left alone because their manifest is broken (last good state, SPEC §5)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import LoadResult, load_manifests
from mcp_reconcile.store import StateDir


@dataclass
class Desired:
    load: LoadResult
    held: dict[str, str]   # server -> why it is left as it is (its manifest is broken or missing)

    @property
    def protected(self) -> set[str]:
        return set(self.held)


def generation_key(state: StateDir, *, create: bool) -> bytes:
    """The state dir's key; a throwaway one for read-only commands on a state dir that has none yet
    (no records exist then, so nothing is compared against it)."""
    if create or (state.root / ".key").exists():
        return state.hmac_key()
    return os.urandom(32)


def load_desired(paths: list[str], state: StateDir, *, create_key: bool, ledger: Ledger | None = None,
                 unset_vars_ok: bool = False) -> Desired:
    """Manifests, plus the names that must be left alone: servers of broken files, and every known
    server when a manifest path is missing (a typo or the wrong directory says nothing about intent).

    `unset_vars_ok` is for commands that only read (`status`): a shell without a server's secrets must not
    make its manifest look broken."""
    load = load_manifests(paths, key=generation_key(state, create=create_key), unset_vars_ok=unset_vars_ok)
    ledger = ledger if ledger is not None else Ledger(state)
    for name, file in load.files.items():   # remember every declaring file, not only of started servers
        ledger.update(name, file=os.path.abspath(file))
    undeclared = (set(ledger.names()) | state.known_servers()) - set(load.files)
    held = {name: _has_errors(load.files.get(name, "(unknown file)")) for name in load.blocked}
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        held.update({name: f"manifest path {missing[0]} does not exist" for name in undeclared})
    broken = {os.path.abspath(f) for f in load.broken_files}
    held.update({name: _has_errors(ledger.get(name)["file"])
                 for name in undeclared if ledger.get(name).get("file") in broken})
    return Desired(load, held)


def _has_errors(file: str) -> str:
    return f"manifest {file} has errors (see `mcp-reconcile validate`)"
