"""dependsOn under `run`: a server is stopped only after the running servers that depend on it."""

from __future__ import annotations

import pytest


@pytest.mark.chaos
def test_removing_a_server_and_its_dependent_stops_the_dependent_first(local) -> None:
    local.write_manifest("base", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.write_manifest("app", {"source": {"path": str(local.fault_server("stateless_ok.py"))},
                                 "dependsOn": ["base"]})
    local.start_controller()
    local.wait_ready("base", "app")
    since = local.events_count()

    (local.manifests / "base.yaml").unlink()
    (local.manifests / "app.yaml").unlink()
    local.wait_until(lambda: local.events("action.applied", since=since), lambda applied: {
        (e["server"], e["action"]) for e in applied} >= {("app", "stop"), ("base", "stop")},
        what="both servers stopped after the removal grace")

    stops = [e["server"] for e in local.events("action.applied", since=since) if e["action"] == "stop"]
    assert stops == ["app", "base"]
