"""Desired state for a command: manifests loaded with the state dir's generation key, and the servers
that must be left alone because their manifest is broken (last good state, SPEC §5).

A manifest file with any problem is ignored as a whole: a rewrite that breaks one document must neither
apply the edits of its other documents nor remove the servers it stopped naming. Removal needs a valid
file that no longer names a server, or the file really gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import LoadResult, load_manifests
from mcp_reconcile.store import StateDir


@dataclass
class Desired:
    load: LoadResult          # its specs are the usable ones: those of ignored files are set aside
    held: dict[str, str]      # server -> why it is left as it is (its manifest is broken or missing)
    ignored_files: set[str] = field(default_factory=set)   # absolute paths of the files with a problem

    @property
    def protected(self) -> set[str]:
        return set(self.held)

    def ignores(self, file: str) -> bool:
        """Is `file` (as a spec's origin or the ledger recorded it) a manifest ignored for its problems?"""
        return os.path.abspath(file) in self.ignored_files


def generation_key(state: StateDir, *, create: bool) -> bytes:
    """The state dir's key; a throwaway one for read-only commands on a state dir that has none yet
    (no records exist then, so nothing is compared against it)."""
    if create or (state.root / ".key").exists():
        return state.hmac_key()
    return os.urandom(32)


def load_desired(paths: list[str], state: StateDir, *, create_key: bool, ledger: Ledger | None = None,
                 unset_vars_ok: bool = False) -> Desired:
    """Manifests, plus the names that must be left alone: every server a file with a problem names now
    or was recorded from, and every known server when a manifest path is missing (a typo or the wrong
    directory says nothing about intent).

    `unset_vars_ok` is for commands that only read (`status`): a shell without a server's secrets must not
    make its manifest look broken."""
    load = load_manifests(paths, key=generation_key(state, create=create_key), unset_vars_ok=unset_vars_ok)
    ledger = ledger if ledger is not None else Ledger(state)
    for name, file in load.files.items():   # remember every declaring file, not only of started servers
        ledger.update(name, file=os.path.abspath(file))
    ignored = load.problem_files
    desired = Desired(load.ignoring(ignored), {}, {os.path.abspath(f) for f in ignored})
    desired.held = {name: has_errors(file) for name, file in load.files.items() if file in ignored}
    desired.held.update({name: has_errors(load.files.get(name, "(unknown file)"))
                         for name in load.blocked if name not in desired.held})
    undeclared = (set(ledger.names()) | state.known_servers()) - set(load.files)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        desired.held.update({name: f"manifest path {missing[0]} does not exist" for name in undeclared})
    desired.held.update({name: has_errors(ledger.get(name)["file"]) for name in undeclared
                         if ledger.get(name).get("file") and desired.ignores(ledger.get(name)["file"])})
    return desired


def has_errors(file: str) -> str:
    """Why a server is left as it is, or kept on its last good spec: its manifest has errors."""
    return f"manifest {file} has errors (see `mcp-reconcile validate`)"
