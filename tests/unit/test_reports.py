"""reports/installation_report.json: what was asked, what is installed, and why a server was not touched."""

from __future__ import annotations

import json

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import Action, ActionKind, ServerSpec, Source
from mcp_reconcile.reports import write_installation_report
from mcp_reconcile.store import InstallRecord, StateDir


def test_a_failed_upgrade_reports_the_source_asked_for_beside_the_one_still_installed(tmp_path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    old = InstallRecord(server="time", source="pypi:mcp-server-time==2026.10.19", resolved_version="2026.10.19",
                        installer="uv", command=[], dir=str(state.install_dir("time")))
    state.install_dir("time").mkdir(parents=True)
    (state.install_dir("time") / "install.json").write_text(json.dumps(old))
    wanted = ServerSpec(name="time", source=Source("pypi", "mcp-server-time==9999.0"))
    failed = Outcome(Action(ActionKind.upgrade, "time", "source changed"), ok=False,
                     error="time: install failed: no version 9999.0 of mcp-server-time")
    blocked = {"everything": "everything: node >= 18 not found: install Node.js 18+"}
    specs = {"time": wanted, "everything": ServerSpec(name="everything", source=Source("npm", "x@1"))}

    write_installation_report(state, [failed], specs=specs, blocked=blocked)

    servers = json.loads((state.reports_dir / "installation_report.json").read_text())["servers"]
    assert (servers["time"]["ok"], servers["time"]["requested_source"], servers["time"]["source"],
            servers["time"]["resolved_version"]) == (False, "pypi:mcp-server-time==9999.0",
                                                     "pypi:mcp-server-time==2026.10.19", "2026.10.19")
    assert servers["time"]["error"] == "time: install failed: no version 9999.0 of mcp-server-time"
    assert (servers["everything"]["ok"], servers["everything"]["skipped"], servers["everything"]["error"],
            servers["everything"]["reason"], servers["everything"]["source"]) == (
        False, True, "everything: node >= 18 not found: install Node.js 18+", "prerequisites missing", None)
