"""Probe running servers once, then derive phases and conditions into the ledger and health report.

Used by one-shot apply (the long-running loop probes on its own schedule and calls `record_status`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mcp_reconcile import conditions
from mcp_reconcile.events import get_logger
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import ActionKind, ObservedServer, ServerSpec
from mcp_reconcile.observe import observe
from mcp_reconcile.probe import LeanProbe
from mcp_reconcile.reports import write_health_report
from mcp_reconcile.store import StateDir

if TYPE_CHECKING:
    from mcp_reconcile.apply import Outcome

log = get_logger()


def record_outcomes(ledger: Ledger, outcomes: Iterable[Outcome]) -> None:
    """Remember each failure's cause for status (phase Failed with the cause, not "Installing"), and forget it
    once the action succeeds. A transient start failure is left to the backoff (CrashLoopBackOff says it);
    a failed gate test to its test result."""
    for o in outcomes:
        kind, name = o.action.kind, o.action.server
        if o.skipped:
            continue
        if (o.ok and kind in (ActionKind.install, ActionKind.upgrade)) or (not o.ok and kind is ActionKind.test):
            ledger.update(name, failed_reason=None)
        elif not o.ok and (o.permanent or kind not in (ActionKind.start, ActionKind.restart)):
            ledger.update(name, failed_reason=o.error)


def memory_of(entry: Mapping[str, Any]) -> conditions.Memory:
    return conditions.Memory(
        failed_reason=entry.get("failed_reason"), in_crash_loop=bool(entry.get("in_crash_loop")),
        backoff_delay_s=float(entry.get("backoff_delay_s", 0.0)),
        tested_ok=entry.get("test_passed"), test_message=entry.get("test_message", ""),
        stopped=bool(entry.get("stopped")), last_good=bool(entry.get("last_good_spec")),
        phase=entry.get("phase"), message=entry.get("message", ""))


def record_status(ledger: Ledger, spec: ServerSpec | None, obs: ObservedServer, *, now: float,
                  held: str | None = None, announce: bool = True) -> dict[str, Any]:
    """Evaluate phase + conditions, keep transition times, log a phase change once (unless `announce` is
    False: the loop logs it itself, with the alert it raised). Returns the entry."""
    entry = ledger.get(obs.name)
    phase, conds, message = conditions.evaluate(spec, obs, memory_of(entry), held=held)
    previous = {c["type"]: c for c in entry.get("conditions", [])}
    cond_docs = []
    for c in conds:
        old = previous.get(c.type)
        since = old["lastTransitionTime"] if old and old["status"] == c.status else now
        cond_docs.append({"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                          "lastTransitionTime": since})
    if announce and entry.get("phase") != phase.value:
        log.info("server.phase_changed", server=obs.name, phase=phase.value, previous_phase=entry.get("phase"),
                 reason=message)
    return ledger.update(obs.name, phase=phase.value, message=message, conditions=cond_docs)


async def probe_endpoint(endpoint: str, timeout_s: float, token: str | None = None) -> dict[str, Any]:
    session = LeanProbe(endpoint, token=token)
    try:
        result = await session.probe(timeout_s)
    finally:
        await session.aclose()
    return {"ok": result.ok, "latency_ms": result.latency_ms, "at": time.time(), "error": result.error,
            "era": result.era}


async def refresh_status(state: StateDir, ledger: Ledger, specs: Mapping[str, ServerSpec], *, probe: bool) -> None:
    """Probe every running server once (in parallel), then record phases and write the health report."""
    observed = observe(state, specs, ledger=ledger)
    if probe:
        running = [o for o in observed.servers.values() if o.running and o.endpoint]
        timeouts = [specs[o.name].health.timeout_s if o.name in specs else 5.0 for o in running]
        tokens = [specs[o.name].endpoint_token if o.name in specs else None for o in running]
        results = await asyncio.gather(*(probe_endpoint(o.endpoint or "", t, token)
                                         for o, t, token in zip(running, timeouts, tokens, strict=True)))
        for o, r in zip(running, results, strict=True):
            ledger.record_probe(o.name, ok=r["ok"], latency_ms=r["latency_ms"], error=r["error"], era=r["era"],
                                at=r["at"])
            log.info("probe.succeeded" if r["ok"] else "probe.failed", server=o.name,
                     latency_ms=r["latency_ms"], error=r["error"])
        observed = observe(state, specs, ledger=ledger)
    now = time.time()
    report = {}
    for name, obs in observed.servers.items():
        entry = record_status(ledger, specs.get(name), obs, now=now)
        report[name] = {k: entry.get(k) for k in ("phase", "message", "conditions", "last_probe", "restarts")}
        report[name]["endpoint"] = obs.endpoint
    write_health_report(state, report)
