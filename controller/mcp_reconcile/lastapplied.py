"""STATE/manifests.json: the manifest paths last applied to a state dir, so `status` and `describe` work from
any directory on what was applied (`-f` or $MCP_RECONCILE_MANIFESTS still override).

Written by `apply` and `run` (the command layer) with absolute paths; never holds a secret, only paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from mcp_reconcile.errors import StoreError
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

FILENAME = "manifests.json"


def record(state: StateDir, paths: Sequence[str]) -> None:
    """Remember `paths` (made absolute) if they all exist: a typo must not hide what was applied before."""
    absolute = [os.path.abspath(p) for p in paths]
    if absolute and all(os.path.exists(p) for p in absolute):
        write_json_atomic(state.root / FILENAME, {"paths": absolute, "recorded_at": time.time()})


def recorded(state: StateDir) -> list[str] | None:
    """The paths last applied, or None (never applied, or an unreadable record)."""
    try:
        data = read_json(state.root / FILENAME)
    except StoreError:
        return None
    paths = data.get("paths") if isinstance(data, dict) else None
    return [str(p) for p in paths] if isinstance(paths, list) and paths else None


def view_paths(state: StateDir, explicit: Sequence[str], default: Sequence[str]) -> list[str]:
    """The manifests a read-only view reads: -f, else $MCP_RECONCILE_MANIFESTS, else last applied, else default."""
    if explicit:
        return list(explicit)
    env = os.environ.get("MCP_RECONCILE_MANIFESTS")
    if env:
        return env.split(os.pathsep)
    return recorded(state) or list(default)
