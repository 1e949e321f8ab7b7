"""Reports of a test run: JSON (`reports/test_report.json`), JUnit XML, and a table for people.

Renders only: the checks decided everything already.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from mcp_reconcile.mcptest.model import CheckResult, ServerReport, Status
from mcp_reconcile.store import write_json_atomic

REPORT_VERSION = 1
# Characters XML 1.0 cannot carry, even escaped (control characters a server may print, lone surrogates).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_STYLE = {Status.passed: "green", Status.failed: "bold red", Status.warned: "yellow", Status.skipped: "dim"}


def redacted(report: ServerReport, scrub: Callable[[Any], Any]) -> ServerReport:
    """`report` with `scrub` applied to every message and detail: a server may echo its secrets back."""
    checks = tuple(dataclasses.replace(c, message=str(scrub(c.message)), details=scrub(dict(c.details)))
                   for c in report.checks)
    info = scrub(dict(report.server_info)) if report.server_info else report.server_info
    return dataclasses.replace(report, checks=checks, server_info=info)


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    details = json.loads(json.dumps(dict(check.details), default=str))  # whatever a check kept, as JSON
    return {"name": check.name, "status": check.status.value, "message": check.message,
            "duration_ms": round(check.duration_ms, 3), "details": details}


def counts(checks: Sequence[CheckResult]) -> dict[str, int]:
    """How many checks ended in each status, plus the total."""
    tally = {status.value: 0 for status in Status}
    for check in checks:
        tally[check.status.value] += 1
    return {"total": len(checks), **tally}


def report_to_dict(report: ServerReport) -> dict[str, Any]:
    return {"server": report.server, "passed": report.passed, "era": report.era,
            "protocol_version": report.protocol_version, "server_info": dict(report.server_info or {}),
            "counts": counts(report.checks), "checks": [check_to_dict(c) for c in report.checks]}


def reports_to_dict(reports: Sequence[ServerReport], *, now: float | None = None) -> dict[str, Any]:
    return {"version": REPORT_VERSION, "generated_at": now if now is not None else time.time(),
            "passed": all(r.passed for r in reports),
            "summary": {"servers": len(reports), "passed": sum(r.passed for r in reports),
                        "failed": sum(not r.passed for r in reports)},
            "servers": [report_to_dict(r) for r in reports]}


def write_json_report(reports: Sequence[ServerReport], path: Path) -> None:
    """Write the reports as one JSON document (atomically, mode 0600)."""
    write_json_atomic(Path(path), reports_to_dict(reports))


def xml_text(text: str | None) -> str:
    """`text` with what XML 1.0 cannot hold shown as `\\xNN`, so a server's stray escape keeps the file valid."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text or "")


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3f}"


def junit_tree(reports: Sequence[ServerReport]) -> ET.ElementTree:
    """One <testsuite> per server, one <testcase> per check; warnings pass, with the note in system-out."""
    root = ET.Element("testsuites", name="mcp-reconcile test")
    totals = {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0}
    for report in reports:
        tally = counts(report.checks)
        seconds = sum(c.duration_ms for c in report.checks) / 1000
        suite = ET.SubElement(root, "testsuite", name=xml_text(report.server), tests=str(tally["total"]),
                              failures=str(tally["fail"]), errors="0", skipped=str(tally["skip"]),
                              time=f"{seconds:.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("era", report.era), ("protocol_version", report.protocol_version)):
            ET.SubElement(props, "property", name=key, value=xml_text(value))
        for check in report.checks:
            case = ET.SubElement(suite, "testcase", classname=f"mcp.{xml_text(report.server)}",
                                 name=xml_text(check.name), time=_seconds(check.duration_ms))
            message = xml_text(check.message)
            if check.status is Status.failed:
                ET.SubElement(case, "failure", message=message, type="CheckFailed").text = message
            elif check.status is Status.skipped:
                ET.SubElement(case, "skipped", message=message)
            else:
                prefix = "WARNING: " if check.status is Status.warned else ""
                ET.SubElement(case, "system-out").text = prefix + message
        totals["tests"] += tally["total"]
        totals["failures"] += tally["fail"]
        totals["skipped"] += tally["skip"]
        totals["time"] += seconds
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{totals['time']:.3f}")
    return ET.ElementTree(root)


def write_junit(reports: Sequence[ServerReport], path: Path) -> None:
    """Write JUnit XML for CI (`--junit FILE`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = junit_tree(reports)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def render_table(reports: Sequence[ServerReport]) -> Table:
    """SERVER, CHECK, STATUS, TIME, MESSAGE: one row per check."""
    table = Table(title="MCP server tests", show_lines=False)
    for column in ("SERVER", "CHECK", "STATUS", "TIME", "MESSAGE"):
        table.add_column(column, overflow="fold", justify="right" if column == "TIME" else "left")
    for report in reports:
        era = f" ({report.era} {report.protocol_version})" if report.era else ""
        for index, check in enumerate(report.checks):
            table.add_row(Text(report.server + era if index == 0 else ""), Text(check.name),
                          Text(check.status.value, style=_STYLE[check.status]), f"{check.duration_ms:.0f} ms",
                          Text(check.message))  # Text: messages quote ids like [1, 2], not markup
    return table


def summary_line(reports: Sequence[ServerReport]) -> str:
    """'2 servers tested: 1 passed, 1 failed (3 checks failed, 1 warning).'"""
    checks = [c for r in reports for c in r.checks]
    tally = counts(checks)
    passed = sum(r.passed for r in reports)
    return (f"{len(reports)} server{'s' if len(reports) != 1 else ''} tested: {passed} passed, "
            f"{len(reports) - passed} failed ({tally['fail']} checks failed, {tally['warn']} warnings).")
