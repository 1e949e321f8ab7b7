"""`mcp-reconcile test` on manifests of fault servers: exit code, JSON and JUnit reports that agree, secrets out.

Local `path` sources need no registry, so this runs in seconds; the real servers are tested in
tests/e2e/test_mcptest.py.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos

SERVERS = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
SECRET = "tok-4f1c9e27b6"


def manifest(name: str, server: str, *, extra: str = "") -> str:
    return f"""
        apiVersion: mcp-reconcile/v1
        kind: MCPServer
        metadata: {{name: {name}}}
        spec:
          source: {{path: {SERVERS / f"{server}.py"}}}
          command: [{sys.executable}]
          env: {{API_KEY: "${{TEST_CMD_API_KEY}}"}}
          tests:
            performance: {{requests: 10, p95Ms: 2000}}
            concurrency: 5
            calls:
              - {{tool: echo, arguments: {{message: "key {SECRET}"}}, expect: {{equals: nope}}}}
        {extra}---
        """


def test_failures_exit_1_and_the_junit_file_counts_what_the_json_report_says(
        tmp_path, write_manifest, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("TEST_CMD_API_KEY", SECRET)
    write_manifest(manifest("good", "well_behaved") + manifest("crashy", "crash_on_malformed")
                   + manifest("ghost", "crash_on_start"))   # (a missing file is a manifest problem now)
    junit = tmp_path / "out" / "junit.xml"
    state = tmp_path / "state"
    code, out, err = run_cli(["test", "-f", str(tmp_path / "manifests"), "--state-dir", str(state),
                              "--junit", str(junit)])
    assert code == 1, out + err
    assert "0 of 3 server(s) passed; failed: crashy, ghost, good" in out

    report = json.loads((state / "reports" / "test_report.json").read_text())
    by_server = {s["server"]: s for s in report["servers"]}
    assert set(by_server) == {"good", "crashy", "ghost"}
    checks = {name: {c["name"]: c for c in s["checks"]} for name, s in by_server.items()}
    assert checks["good"]["call[0] echo"]["status"] == "fail"  # the contract call expects 'nope'
    assert checks["crashy"]["error_handling"]["status"] == "fail"
    assert checks["ghost"]["startup"]["status"] == "fail"   # it never answers: reported, the others tested

    suites = {s.get("name"): s for s in ET.parse(junit).getroot().findall("testsuite")}
    assert set(suites) == set(by_server)
    for name, suite in suites.items():
        counts = by_server[name]["counts"]
        cases = suite.findall("testcase")
        assert len(cases) == int(suite.get("tests")) == counts["total"] == len(checks[name])
        assert sum(c.find("failure") is not None for c in cases) == int(suite.get("failures")) == counts["fail"]
        assert sum(c.find("skipped") is not None for c in cases) == int(suite.get("skipped")) == counts["skip"]

    for text in (out, err, junit.read_text(), (state / "reports" / "test_report.json").read_text(),
                 (state / "events.jsonl").read_text()):
        assert SECRET not in text
