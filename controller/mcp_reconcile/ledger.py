"""state.json: what the controller remembers per server beyond the install and run records.

Names, generations, digests, phases and counters only; never a secret value: what enters an entry (a
probe's error, a failure's message, which may quote a server's answer or environment) is redacted on the
way in. Validated against
schemas/state.schema.json on load (a corrupt file is a StoreError, not a crash) and written atomically.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

from mcp_reconcile.errors import StoreError
from mcp_reconcile.events import REDACTOR
from mcp_reconcile.store import STATE_VERSION, StateDir, read_json, write_json_atomic


class ProbeRecord(TypedDict):
    """The last probe of a server (`last_probe`)."""

    ok: bool
    latency_ms: float | None
    at: float           # wall time, for people
    error: str | None   # redacted on the way in
    era: str | None


class ExitRecord(TypedDict):
    """The last exit of a server's process (`last_exit`), kept after its run record is cleared."""

    code: int | None
    reason: str
    at: float


class ServerEntry(TypedDict, total=False):
    """One server's entry in state.json (schemas/state.schema.json). The fields that probes, exits, starts and
    tests change together are written by the named writers of `Ledger` (record_probe, record_exit,
    record_start, record_test), so that no caller clears half of them."""

    phase: str
    message: str
    conditions: list[dict[str, Any]]
    healthy: bool | None                 # the last probe's verdict; None: not probed since the last start/exit
    consecutive_probe_failures: int
    last_probe: ProbeRecord
    last_exit: ExitRecord | None
    restarts: int
    failed_reason: str | None            # a permanent failure of the current generation
    in_crash_loop: bool
    backoff_delay_s: float
    tested_generation: str | None
    test_passed: bool | None
    test_message: str
    stopped: bool
    last_good_spec: bool
    file: str
    generation: str
    runtime_generation: str
    runtime_digests: dict[str, str]
    stop_timeout_s: float
    updated_at: float


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

    def get(self, name: str) -> ServerEntry:
        return self.data["servers"].get(name, {})

    def update(self, name: str, **fields: Any) -> ServerEntry:
        entry = self.data["servers"].setdefault(name, {})
        entry.update({key: REDACTOR.scrub(value) for key, value in fields.items()})
        entry["updated_at"] = time.time()
        return entry

    # the named writers ----------------------------------------------------------------------------
    def record_probe(self, name: str, *, ok: bool, latency_ms: float | None, error: str | None,
                     era: str | None, at: float | None = None) -> int:
        """One probe's result: a failure adds to the consecutive failures, a success clears them. Returns the
        consecutive failures now (what the restart threshold is compared with)."""
        failures = 0 if ok else int(self.get(name).get("consecutive_probe_failures", 0)) + 1
        probe: ProbeRecord = {"ok": ok, "latency_ms": latency_ms, "at": time.time() if at is None else at,
                              "error": error, "era": era}
        self.update(name, healthy=ok, consecutive_probe_failures=failures, last_probe=probe)
        return failures

    def record_exit(self, name: str, *, code: int | None, reason: str, at: float | None = None) -> None:
        """The server's process is gone: remember the exit (for the restart policy and status), and forget the
        health of the process that exited (a new one starts with a clean slate)."""
        last_exit: ExitRecord = {"code": code, "reason": reason, "at": time.time() if at is None else at}
        self.update(name, last_exit=last_exit, healthy=None, consecutive_probe_failures=0)

    def record_start(self, name: str, **generation: Any) -> None:
        """A new process (a start, or a generation swapped in): no health, exit, failure or test result of the
        old one carries over; `generation` holds the generation fields the ledger now follows."""
        self.update(name, **generation, healthy=None, consecutive_probe_failures=0, stopped=False, last_exit=None,
                    failed_reason=None, tested_generation=None, test_passed=None)

    def record_test(self, name: str, *, generation: str, passed: bool, message: str) -> None:
        """The gate tests' verdict on `generation` (Tested condition, and Ready for gated servers)."""
        self.update(name, tested_generation=generation, test_passed=passed, test_message=message)

    def forget(self, name: str) -> None:
        self.data["servers"].pop(name, None)

    def names(self) -> list[str]:
        return sorted(self.data["servers"])

    def save(self) -> None:
        self.data["updated_at"] = time.time()
        write_json_atomic(self.state.state_file, self.data)


def is_ready(entry: ServerEntry | dict[str, Any]) -> bool:
    """The Ready condition a pass recorded for a server (see readiness.record_status)."""
    return any(c["type"] == "Ready" and c["status"] == "True" for c in entry.get("conditions", []))
