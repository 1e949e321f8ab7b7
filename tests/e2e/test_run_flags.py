"""Legacy flags of the long-running controller: `run --test` runs the MCP suite once after the first pass."""

from __future__ import annotations

import json


def test_run_with_test_flag_tests_the_servers_once_after_the_first_pass(local) -> None:
    local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.start_controller("--test")
    report_path = local.state_dir / "reports" / "test_report.json"
    local.wait_until(report_path.exists, bool, what="reports/test_report.json written by run --test")
    report = local.wait_until(lambda: json.loads(report_path.read_text() or "{}"), bool,
                              what="a complete test report")
    assert report["passed"] is True
    assert [s["server"] for s in report["servers"]] == ["steady"]
    local.wait_ready("steady")
