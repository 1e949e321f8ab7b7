"""The ledger's named writers (ledger.py): each event that changes several fields of a server's entry at once
(a probe, an exit, a start, a test) goes through one writer, so that no caller counts or clears half of them.
The entries are saved and read back through the schema check, as state.json is."""

from __future__ import annotations

import pytest

from mcp_reconcile.events import REDACTOR
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.store import StateDir


def reloaded(ledger: Ledger) -> Ledger:
    """The ledger as the next controller reads it (validated against schemas/state.schema.json)."""
    ledger.save()
    return Ledger(ledger.state)


def test_failed_probes_count_up_and_one_success_clears_them(state_dir: StateDir) -> None:
    ledger = Ledger(state_dir)
    counts = [ledger.record_probe("a", ok=ok, latency_ms=1.5, error=None if ok else "refused", era="legacy", at=7.0)
              for ok in (False, False, True, False)]
    assert counts == [1, 2, 0, 1]
    entry = reloaded(ledger).get("a")
    assert (entry["healthy"], entry["consecutive_probe_failures"]) == (False, 1)
    assert entry["last_probe"] == {"ok": False, "latency_ms": 1.5, "at": 7.0, "error": "refused", "era": "legacy"}


def test_an_exit_is_remembered_and_forgets_the_health_of_the_process_that_exited(state_dir: StateDir) -> None:
    ledger = Ledger(state_dir)
    ledger.record_probe("a", ok=False, latency_ms=None, error="timeout", era=None)
    ledger.record_exit("a", code=3, reason="exit code 3", at=9.0)
    entry = reloaded(ledger).get("a")
    assert entry["last_exit"] == {"code": 3, "reason": "exit code 3", "at": 9.0}
    assert (entry["healthy"], entry["consecutive_probe_failures"]) == (None, 0)


def test_a_start_carries_over_no_health_exit_failure_or_test_result_of_the_old_process(state_dir: StateDir) -> None:
    ledger = Ledger(state_dir)
    ledger.record_probe("a", ok=False, latency_ms=None, error="timeout", era=None)
    ledger.record_exit("a", code=1, reason="exit code 1")
    ledger.record_test("a", generation="g1", passed=False, message="tools/list: empty")
    ledger.update("a", failed_reason="gate tests failed", stopped=True)
    ledger.record_start("a", generation="g2", runtime_generation="r2")
    entry = reloaded(ledger).get("a")
    assert {k: entry.get(k) for k in ("healthy", "consecutive_probe_failures", "last_exit", "failed_reason",
                                      "stopped", "tested_generation", "test_passed", "generation",
                                      "runtime_generation")} == {
        "healthy": None, "consecutive_probe_failures": 0, "last_exit": None, "failed_reason": None,
        "stopped": False, "tested_generation": None, "test_passed": None, "generation": "g2",
        "runtime_generation": "r2"}


def test_a_test_result_names_the_generation_it_vouches_for(state_dir: StateDir) -> None:
    ledger = Ledger(state_dir)
    ledger.record_test("a", generation="r1", passed=True, message="all checks passed")
    entry = reloaded(ledger).get("a")
    assert (entry["tested_generation"], entry["test_passed"], entry["test_message"]) == ("r1", True,
                                                                                         "all checks passed")


def test_a_probe_error_quoting_a_secret_is_stored_redacted(state_dir: StateDir,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(REDACTOR, "_secrets", ("s3cr3t-token-value",))   # (undone after the test)
    ledger = Ledger(state_dir)
    ledger.record_probe("a", ok=False, latency_ms=None, error="401: bad token s3cr3t-token-value", era=None)
    assert "s3cr3t-token-value" not in str(reloaded(ledger).get("a"))
