"""Reports in the state dir's reports/ (SPEC §11): installation, health (test reports live in mcptest)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import ActionKind, ServerSpec
from mcp_reconcile.store import StateDir, read_json, write_json_atomic

INSTALL_KINDS = (ActionKind.install, ActionKind.upgrade, ActionKind.uninstall)


def write_installation_report(state: StateDir, outcomes: Iterable[Outcome], *,
                              specs: Mapping[str, ServerSpec] | None = None,
                              blocked: Mapping[str, str] | None = None) -> None:
    """Per server, the last apply's install/upgrade/uninstall result; servers untouched keep their entry.

    `requested_source` is what the manifest asks for and `source` what is installed now (they differ after a
    failed upgrade); `blocked` servers (a missing prerequisite) get an entry with the reason.
    """
    path = state.reports_dir / "installation_report.json"
    report: dict[str, Any] = read_json(path) or {"servers": {}}
    specs = specs or {}

    def entry(name: str, **fields: Any) -> dict[str, Any]:
        record = state.read_install(name) or {}
        return {**fields, "requested_source": str(specs[name].source) if name in specs else None,
                "source": record.get("source"), "resolved_version": record.get("resolved_version"),
                "installer": record.get("installer"), "at": time.time()}

    for o in outcomes:
        if o.action.kind in INSTALL_KINDS:
            report["servers"][o.action.server] = entry(
                o.action.server, action=o.action.kind.value, ok=o.ok, skipped=o.skipped, detail=o.detail,
                error=o.error, reason=o.action.reason, duration_s=round(o.duration_s, 3))
    for name, why in (blocked or {}).items():
        report["servers"][name] = entry(name, action="install", ok=False, skipped=True, detail=None, error=why,
                                        reason="prerequisites missing", duration_s=0.0)
    report["generated_at"] = time.time()
    write_json_atomic(path, report)


def write_health_report(state: StateDir, servers: Mapping[str, Mapping[str, Any]]) -> None:
    """Phase, readiness, last probe and process stats per server."""
    write_json_atomic(state.reports_dir / "health_report.json",
                      {"generated_at": time.time(), "servers": dict(servers)})
