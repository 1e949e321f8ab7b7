"""The removal grace under the real controller (`run`) with fault servers: a manifest rewritten slowly (truncated,
then written again) keeps its server running untouched, and a manifest deleted for real removes its server
after the grace. (The grace's exact timing is tested on a FakeClock in tests/unit/test_loop_timing.py.)

Harness: tests/e2e/conftest.py via conftest.py (fresh state dir, private copy of the fault servers, stop-all
and a no-leftover check in teardown). Every wait is on an audit event, a record or a report, with a bound.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.chaos

STOPPING = ("stop", "uninstall")


def actions(local, server: str, *kinds: str, since: int = 0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """action.started events of `server` (of the given kinds), from the `since`-th event on."""
    return [e for e in local.events("action.started", server=server, since=since) if e.get("action") in kinds]


def test_a_manifest_rewritten_slowly_keeps_its_server_and_a_deleted_one_is_removed_after_the_grace(local) -> None:
    for name in ("kept", "removed"):
        local.write_manifest(name, {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.start_controller()
    local.wait_ready("kept", "removed")
    before = local.run_record("kept")
    content = (local.manifests / "kept.yaml").read_text()
    since = local.events_count()

    # the writer truncates first; a new (absent) server in another file proves the controller read the
    # manifests while kept.yaml was empty: any reload that sees the witness also sees the truncation
    (local.manifests / "kept.yaml").write_text("")
    local.write_manifest("witness", {"source": {"path": str(local.fault_server("well_behaved.py"))},
                                     "desiredState": "absent"})
    local.wait_until(lambda: local.events("manifest.loaded", since=since),
                     lambda found: any("witness" in e.get("changed", []) for e in found),
                     what="a manifest reload that saw kept.yaml empty")
    (local.manifests / "kept.yaml").write_text(content)

    # a file deleted for real afterwards goes after the grace period; kept's grace ran out before that
    (local.manifests / "removed.yaml").unlink()
    local.wait_until(lambda: [e for e in local.events("action.applied", server="removed", since=since)
                              if e.get("action") == "uninstall"], bool,
                     what="removed stopped and uninstalled after the removal grace")

    assert actions(local, "kept", *STOPPING, since=since) == []
    assert [e["action"] for e in local.events("action.started", server="removed", since=since)] == list(STOPPING)
    assert local.run_record("kept") == before
    assert local.pid_alive(before["server_pid"])
    assert (local.state_dir / "installs" / "kept" / "install.json").exists()
    assert not (local.state_dir / "installs" / "removed").exists()
    assert local.run_record("removed") is None
    row = local.rows()["kept"]
    assert (row["phase"], row["server_pid"]) == ("Running", before["server_pid"]), row
