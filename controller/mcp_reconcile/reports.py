"""Reports in the state dir's reports/ (SPEC §11): installation, health (test reports live in mcptest)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import ActionKind
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

INSTALL_KINDS = (ActionKind.install, ActionKind.upgrade, ActionKind.uninstall)


def write_installation_report(state: StateDir, outcomes: Iterable[Outcome]) -> None:
    """Per server, the last apply's install/upgrade/uninstall result; servers untouched keep their entry."""
    path = state.reports_dir / "installation_report.json"
    report: dict[str, Any] = read_json(path) or {"servers": {}}
    for o in outcomes:
        if o.action.kind not in INSTALL_KINDS:
            continue
        record = state.read_install(o.action.server) or {}
        report["servers"][o.action.server] = {
            "action": o.action.kind.value, "ok": o.ok, "skipped": o.skipped, "detail": o.detail, "error": o.error,
            "reason": o.action.reason, "duration_s": round(o.duration_s, 3), "source": record.get("source"),
            "resolved_version": record.get("resolved_version"), "installer": record.get("installer"),
            "at": time.time()}
    report["generated_at"] = time.time()
    write_json_atomic(path, report)


def write_health_report(state: StateDir, servers: Mapping[str, Mapping[str, Any]]) -> None:
    """Phase, readiness, last probe and process stats per server."""
    write_json_atomic(state.reports_dir / "health_report.json",
                      {"generated_at": time.time(), "servers": dict(servers)})
