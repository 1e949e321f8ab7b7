"""The MCP test framework (SPEC section 8): `run_suite(target, options) -> ServerReport`.

Imports the `mcp` SDK (0.55 s): only commands that test servers import this package, lazily.
"""

from mcp_reconcile.mcptest.model import (
    CheckResult,
    ServerReport,
    Status,
    SuiteOptions,
    Target,
)
from mcp_reconcile.mcptest.report import render_table, summary_line, write_json_report, write_junit
from mcp_reconcile.mcptest.suite import run_suite

__all__ = [
    "CheckResult",
    "ServerReport",
    "Status",
    "SuiteOptions",
    "Target",
    "render_table",
    "run_suite",
    "summary_line",
    "write_json_report",
    "write_junit",
]
