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
    protected: set[str]


def generation_key(state: StateDir, *, create: bool) -> bytes:
    """The state dir's key; a throwaway one for read-only commands on a state dir that has none yet
    (no records exist then, so nothing is compared against it)."""
    if create or (state.root / ".key").exists():
        return state.hmac_key()
    return os.urandom(32)


def load_desired(paths: list[str], state: StateDir, *, create_key: bool, ledger: Ledger | None = None) -> Desired:
    load = load_manifests(paths, key=generation_key(state, create=create_key))
    ledger = ledger if ledger is not None else Ledger(state)
    known_files = {name: ledger.get(name).get("file") for name in ledger.names()}
    protected = set(load.blocked)
    protected.update(name for name, file in known_files.items() if file in load.broken_files)
    return Desired(load, protected)
