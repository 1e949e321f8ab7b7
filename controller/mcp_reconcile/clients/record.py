"""`STATE/clients.json`: which entries of which client config files mcp-reconcile wrote, and what it wrote.

    {"version": 1, "entries": [{"client": "cursor", "scope": "user", "file": "/home/u/.cursor/mcp.json",
                                "name": "time", "fingerprint": "3f0c9a..."}]}

Why a sidecar record and not a marker inside the entry: clients validate their configs (Codex refuses unknown
keys in an `[mcp_servers.*]` table, VS Code flags them), so a marker would break some clients; a record in
the state dir works for every format. The fingerprint (a hash of the entry as written: no secret is ever in
an entry) also tells our entry from one the user has since edited by hand, which then counts as the user's:
it is neither replaced nor removed without `--force`. Files are recorded by absolute path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypedDict

from mcp_reconcile.clients.documents import plain
from mcp_reconcile.errors import StoreError
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

VERSION = 1


class Managed(TypedDict):
    client: str
    scope: str
    file: str
    name: str
    fingerprint: str


def fingerprint(value: Any) -> str:
    """A stable hash of an entry's content, whatever format it was read from."""
    canonical = json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class Record:
    """The managed entries of one state dir; `save()` writes them back atomically."""

    def __init__(self, state: StateDir) -> None:
        self.path = state.root / "clients.json"
        data = read_json(self.path) or {"version": VERSION, "entries": []}
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise StoreError(f"{self.path}: unreadable state file: no 'entries' list")
        self.entries: list[Managed] = [e for e in entries if isinstance(e, dict) and {"file", "name"} <= set(e)]

    def fingerprint_of(self, file: Path, name: str) -> str | None:
        for entry in self.entries:
            if entry["file"] == str(file) and entry["name"] == name:
                return entry.get("fingerprint")
        return None

    def names_in(self, file: Path) -> list[str]:
        return [e["name"] for e in self.entries if e["file"] == str(file)]

    def mark(self, *, client: str, scope: str, file: Path, name: str, value: Any) -> None:
        self.forget(file, name)
        self.entries.append(Managed(client=client, scope=scope, file=str(file), name=name,
                                    fingerprint=fingerprint(value)))

    def forget(self, file: Path, name: str) -> None:
        self.entries = [e for e in self.entries if not (e["file"] == str(file) and e["name"] == name)]

    def save(self) -> None:
        entries = sorted(self.entries, key=lambda e: (e["file"], e["name"]))
        write_json_atomic(self.path, {"version": VERSION, "entries": entries})
