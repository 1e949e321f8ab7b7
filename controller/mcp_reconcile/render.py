"""Plans and problems as text (terraform style) or JSON, and the exit codes. Decides nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mcp_reconcile.errors import ManifestError
from mcp_reconcile.model import Action, ActionKind, Plan

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2

_LEGEND = {"+": "create / start", "~": "update / restart", "-": "stop / remove", "?": "test"}


def summary_line(plan: Plan) -> str:
    if not plan.has_changes:
        return "No changes. Servers match the manifests."
    parts = [f"{plan.count(ActionKind.install)} to install"]
    if plan.count(ActionKind.upgrade):
        parts.append(f"{plan.count(ActionKind.upgrade)} to upgrade")
    parts += [f"{plan.count(ActionKind.start)} to start", f"{plan.count(ActionKind.restart)} to restart"]
    if plan.count(ActionKind.test):
        parts.append(f"{plan.count(ActionKind.test)} to test")
    parts += [f"{plan.count(ActionKind.stop)} to stop", f"{plan.count(ActionKind.uninstall)} to remove"]
    return "Plan: " + ", ".join(parts) + "."


def action_line(action: Action, *, name_width: int = 0) -> str:
    return f"  {action.kind.symbol} {action.kind.value:<9} {action.server:<{name_width}}  ({action.reason})"


def plan_text(plan: Plan) -> str:
    lines: list[str] = []
    if plan.has_changes:
        used = [s for s in _LEGEND if any(a.kind.symbol == s for a in plan.actions)]
        lines.append("Symbols: " + ", ".join(f"{s} {_LEGEND[s]}" for s in used))
        lines.append("")
        lines.append("mcp-reconcile will perform the following actions:")
        width = max(len(a.server) for a in plan.actions)
        lines.extend(action_line(a, name_width=width) for a in plan.actions)
        lines.append("")
    if plan.deferred:
        lines.append("Waiting:")
        lines.extend(f"  . {d.server}  ({d.reason})" for d in plan.deferred)
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def plan_json(plan: Plan, problems: Sequence[ManifestError] = ()) -> str:
    doc: dict[str, Any] = {
        "format_version": "1",
        "changes": plan.has_changes,
        "actions": [{"action": a.kind.value, "symbol": a.kind.symbol, "server": a.server, "reason": a.reason,
                     "changed_fields": list(a.changed_fields), "wave": a.wave} for a in plan.actions],
        "deferred": [{"server": d.server, "reason": d.reason} for d in plan.deferred],
        "summary": {k.value: plan.count(k) for k in ActionKind},
        "summary_line": summary_line(plan),
        "problems": [problem_json(p) for p in problems],
    }
    return json.dumps(doc, indent=2)


def problem_json(problem: ManifestError) -> dict[str, Any]:
    return {"file": problem.file, "document": problem.doc_index, "path": problem.json_path,
            "line": problem.line, "reason": problem.reason, "message": str(problem)}


def problems_text(problems: Sequence[ManifestError]) -> str:
    return "\n".join(f"error: {p}" for p in problems)


def plan_exit_code(plan: Plan, *, detailed: bool, had_errors: bool) -> int:
    if had_errors:
        return EXIT_ERROR
    return EXIT_CHANGES if detailed and plan.has_changes else EXIT_OK
