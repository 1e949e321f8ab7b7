"""Reports: JUnit XML (parsed back with ElementTree), the JSON report, the table and the summary line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console

from mcp_reconcile.mcptest.model import CheckResult, ServerReport, Status
from mcp_reconcile.mcptest.report import (
    counts,
    render_table,
    reports_to_dict,
    summary_line,
    write_json_report,
    write_junit,
)


def report(server: str, *statuses: Status, era: str = "handshake") -> ServerReport:
    checks = tuple(CheckResult(f"check{i}", status, f"{status.value} <&> message {i}", duration_ms=250.0,
                               details={"i": i}) for i, status in enumerate(statuses))
    return ServerReport(server, era, "2025-06-18", checks,
                        passed=all(s is not Status.failed for s in statuses), server_info={"name": server})


REPORTS = [
    report("everything", Status.passed, Status.warned, Status.skipped),
    report("broken", Status.passed, Status.failed, Status.failed, Status.skipped, era="stateless"),
]


def test_junit_has_one_suite_per_server_and_counts_that_match_its_cases(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "junit.xml"
    write_junit(REPORTS, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["everything", "broken"]
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
        assert suite.get("errors") == "0"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("7", "2", "2")
    assert float(root.get("time")) == 7 * 0.25


def test_junit_cases_carry_the_check_message_and_warnings_pass_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(REPORTS, path)
    root = ET.parse(path).getroot()
    everything, broken = root.findall("testsuite")
    warned = everything.findall("testcase")[1]
    assert warned.get("classname") == "mcp.everything" and warned.get("name") == "check1"
    assert warned.find("failure") is None
    assert warned.find("system-out").text == "WARNING: warn <&> message 1"
    failure = broken.findall("testcase")[1].find("failure")
    assert failure.get("message") == "fail <&> message 1" and failure.text == "fail <&> message 1"
    props = {p.get("name"): p.get("value") for p in broken.find("properties")}
    assert props == {"era": "stateless", "protocol_version": "2025-06-18"}


def test_the_json_report_holds_every_check_and_the_totals(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "test_report.json"
    write_json_report(REPORTS, path)
    data = json.loads(path.read_text())
    assert data["passed"] is False
    assert data["summary"] == {"servers": 2, "passed": 1, "failed": 1}
    broken = data["servers"][1]
    assert broken["server"] == "broken" and broken["era"] == "stateless" and broken["passed"] is False
    assert broken["counts"] == {"total": 4, "pass": 1, "fail": 2, "warn": 0, "skip": 1}
    assert broken["checks"][1] == {"name": "check1", "status": "fail", "message": "fail <&> message 1",
                                   "duration_ms": 250.0, "details": {"i": 1}}
    assert path.stat().st_mode & 0o777 == 0o600


def test_reports_to_dict_takes_the_time_it_is_given() -> None:
    assert reports_to_dict([], now=12.5) == {"version": 1, "generated_at": 12.5, "passed": True,
                                             "summary": {"servers": 0, "passed": 0, "failed": 0}, "servers": []}


def test_counts_and_the_summary_line() -> None:
    assert counts(REPORTS[0].checks) == {"total": 3, "pass": 1, "fail": 0, "warn": 1, "skip": 1}
    assert summary_line(REPORTS) == "2 servers tested: 1 passed, 1 failed (2 checks failed, 1 warnings)."


def test_the_table_shows_one_row_per_check_with_server_and_era_once() -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(REPORTS))
    text = console.export_text()
    assert "everything (handshake 2025-06-18)" in text and "broken (stateless 2025-06-18)" in text
    assert text.count("check1") == 2 and "fail <&> message 1" in text


def test_messages_with_brackets_are_shown_as_text_not_markup() -> None:
    odd = ServerReport("s", None, None, (CheckResult("concurrency", Status.failed, "got ids [/] [bold]x[/bold]"),),
                       passed=False)
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table([odd]))
    assert "got ids [/] [bold]x[/bold]" in console.export_text()


def test_details_that_are_not_json_are_written_as_text(tmp_path: Path) -> None:
    odd = ServerReport("s", None, None, (CheckResult("x", Status.passed, "ok", details={"path": tmp_path}),),
                       passed=True)
    write_json_report([odd], tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["servers"][0]["checks"][0]["details"] == {
        "path": str(tmp_path)}


def test_junit_stays_valid_xml_when_a_server_prints_control_characters(tmp_path: Path) -> None:
    noisy = CheckResult("startup", Status.failed, "stderr: \x1b[31mboom\x1b[0m\x00", duration_ms=1.0)
    path = tmp_path / "junit.xml"
    write_junit([ServerReport("noisy", None, None, (noisy,), passed=False)], path)
    failure = ET.parse(path).getroot().find("testsuite/testcase/failure")
    assert failure.get("message") == "stderr: \\x1b[31mboom\\x1b[0m\\x00"


def test_a_secret_a_server_echoes_never_reaches_the_reports(tmp_path: Path) -> None:
    from mcp_reconcile.events import Redactor
    from mcp_reconcile.mcptest.report import redacted

    leaky = CheckResult("call[0] env", Status.failed, "expected 'x', got 'key=s3cr3t-value'",
                        details={"result": {"text": "s3cr3t-value"}})
    clean = redacted(ServerReport("leaky", "handshake", "2025-06-18", (leaky,), passed=False,
                                  server_info={"name": "s3cr3t-value"}), Redactor(["s3cr3t-value"]).scrub)
    write_json_report([clean], tmp_path / "report.json")
    write_junit([clean], tmp_path / "junit.xml")
    for written in ("report.json", "junit.xml"):
        text = (tmp_path / written).read_text()
        assert "s3cr3t-value" not in text and "(sensitive)" in text
