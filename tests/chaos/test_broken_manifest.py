"""A controller that starts while a manifest is broken: the servers of that manifest are left running as last
applied, status says why and never claims they are Ready, their crash is reported (not repaired, there is no
spec to repair it with), and fixing the manifest brings them back."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from typing import Any

import pytest
import yaml

from mcp_reconcile.loop.controller import REMOVAL_GRACE_S

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


def _documents(*servers: tuple[str, dict[str, Any]]) -> str:
    """One manifest file declaring each (name, spec) as a document of its own."""
    return yaml.safe_dump_all([{"apiVersion": "mcp-reconcile/v1", "kind": "MCPServer", "metadata": {"name": name},
                                "spec": spec} for name, spec in servers], sort_keys=False)


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["ts"])


def test_a_partly_broken_rewrite_keeps_every_server_of_the_file_supervised_on_its_last_good_spec(local) -> None:
    good = {"source": {"path": str(local.fault_server("well_behaved.py"))},
            "health": {"intervalSeconds": 0.5, "timeoutSeconds": 5, "failureThreshold": 5}}
    local.write_text("pair.yaml", _documents(("b1", good), ("b2", good)))
    local.start_controller("--resync-interval", "1")
    local.wait_until(local.rows, lambda r: local.probed_ready(r, "b1") and local.probed_ready(r, "b2"),
                     what="b1 and b2 Ready")
    pids = {name: local.run_record(name)["server_pid"] for name in ("b1", "b2")}
    since = local.events_count()

    # the rewrite drops b2 and gives b1 a schema error: the whole file is ignored, nothing is removed
    local.write_text("pair.yaml", _documents(("b1", {**good, "restartPolicy": "Sometimes"})))
    first = local.wait_event("manifest.rejected", since=since)[0]
    local.wait_until(lambda: local.events("manifest.rejected", since=since),
                     lambda found: any(e.get("reason") == "resync"
                                       and (_at(e) - _at(first)).total_seconds() > REMOVAL_GRACE_S for e in found),
                     what="a resync pass past the removal grace while pair.yaml is broken")
    assert [e for e in local.events("action.started", since=since)] == []
    assert {name: local.run_record(name)["server_pid"] for name in ("b1", "b2")} == pids

    # b2, no longer named by the broken file, is still supervised: its crash is repaired on its last good spec
    killed_at = time.time()
    os.kill(pids["b2"], signal.SIGKILL)
    rows = local.wait_until(local.rows, lambda r: local.probed_ready(r, "b2", not_pid=pids["b2"]),
                            what="b2 restarted and probed while pair.yaml is still broken")
    assert "pair.yaml has errors" in rows["b2"]["message"], rows["b2"]
    assert [(e["server"], e["action"]) for e in local.events("action.started", since=since)] == [("b2", "start")]
    # and b1, named with an error, is still probed on its last good spec, in the same process
    rows = local.wait_until(local.rows, lambda r: (r["b1"]["last_probe"] or {}).get("at", 0.0) > killed_at,
                            what="b1 probed after b2's restart")
    assert rows["b1"]["server_pid"] == pids["b1"], rows["b1"]
    assert "supervised on its last good spec" in rows["b1"]["message"], rows["b1"]
