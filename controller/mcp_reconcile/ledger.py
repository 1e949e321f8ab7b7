"""state.json: what the controller remembers per server beyond the install and run records.

Names, generations, digests, phases and counters only; never a secret value. Validated against
schemas/state.schema.json on load (a corrupt file is a StoreError, not a crash) and written atomically.
"""

from __future__ import annotations

import time
from typing import Any

from mcp_reconcile.errors import StoreError
from mcp_reconcile.store import STATE_VERSION, StateDir, read_json, write_json_atomic


class Ledger:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.data = self._load()

    def _load(self) -> dict[str, Any]:
        data = read_json(self.state.state_file)
        if data is None:
            return {"version": STATE_VERSION, "servers": {}}
        from mcp_reconcile.manifest import load_schema

        errors = list(load_schema("state.schema.json").iter_errors(data))
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.absolute_path) or "(document)"
            raise StoreError(f"{self.state.state_file}: {where}: {first.message} "
                             "(move the file aside to start from the records alone)")
        return data

    def get(self, name: str) -> dict[str, Any]:
        return self.data["servers"].get(name, {})

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        entry = self.data["servers"].setdefault(name, {})
        entry.update(fields)
        entry["updated_at"] = time.time()
        return entry

    def forget(self, name: str) -> None:
        self.data["servers"].pop(name, None)

    def names(self) -> list[str]:
        return sorted(self.data["servers"])

    def save(self) -> None:
        self.data["updated_at"] = time.time()
        write_json_atomic(self.state.state_file, self.data)


def is_ready(entry: dict[str, Any]) -> bool:
    """The Ready condition a pass recorded for a server (see readiness.record_status)."""
    return any(c["type"] == "Ready" and c["status"] == "True" for c in entry.get("conditions", []))
