"""A controller that starts while a manifest is broken: the servers of that manifest are left running as last
applied, status says why and never claims they are Ready, their crash is reported (not repaired, there is no
spec to repair it with), and fixing the manifest brings them back."""

from __future__ import annotations

import os
import signal

import pytest

pytestmark = pytest.mark.chaos


def test_a_server_whose_manifest_broke_while_the_controller_was_down_is_watched_and_reported(local) -> None:
    good = {"source": {"path": str(local.fault_server("well_behaved.py"))},
            "health": {"intervalSeconds": 0.5, "timeoutSeconds": 2}}
    local.write_manifest("keeper", good)
    first = local.start_controller()
    local.wait_until(local.rows, lambda r: local.probed_ready(r, "keeper"), what="keeper Ready")
    before = local.run_record("keeper")
    first.kill9()

    local.write_text("keeper.yaml", "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: keeper\n")
    since = local.events_count()
    local.start_controller()
    local.wait_event("controller.ready", since=since)
    row = local.wait_until(local.rows, lambda r: "left running as last applied" in r["keeper"]["message"],
                           what="keeper shown as held by its broken manifest")
    assert (row["keeper"]["phase"], row["keeper"]["ready"]) == ("Running", False), row["keeper"]
    assert "keeper.yaml has errors" in row["keeper"]["message"]
    assert local.run_record("keeper")["server_pid"] == before["server_pid"]   # not restarted, not stopped

    os.kill(before["server_pid"], signal.SIGKILL)
    local.wait_event("server.exited_unsupervised", server="keeper", since=since)
    rows = local.wait_until(local.rows, lambda r: r["keeper"]["phase"] == "Failed", what="keeper Failed")
    assert "not restarted until the manifest is fixed" in rows["keeper"]["message"], rows["keeper"]
    assert local.events("action.started", since=since) == []

    local.write_manifest("keeper", good)
    local.wait_until(local.rows, lambda r: local.probed_ready(r, "keeper", not_pid=before["server_pid"]),
                     what="keeper Ready again once its manifest is fixed")
