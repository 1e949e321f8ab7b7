"""What a pass's outcomes mean for the next one: retry by the error's kind, and restarts counted as such.

Pure. The error's class carries the retry decision (STYLE §2, issue 12): a `TransientError` (network, registry
5xx, a timeout, a server that exited during startup) backs off and retries; a `PermanentError` (a missing
file, an unknown package, a bad command) parks the server, Failed with the cause, until its spec changes,
so it is neither retried with backoff nor restarted by the resync timer. A start counts as a restart only
when the server ran before (an exit is on record): a start skipped after a failed install, or the first
start after one, is no restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import ActionKind, Plan

# What a parked server is not given again until its spec changes (stops and uninstalls still happen).
RETRIED_KINDS = frozenset({ActionKind.install, ActionKind.upgrade, ActionKind.start, ActionKind.restart,
                           ActionKind.test})


@dataclass(frozen=True)
class Verdict:
    """What one pass's outcomes ask of the loop."""

    restarts: tuple[str, ...] = ()   # reasons of the real restarts this pass made
    retry: str | None = None         # back off, then retry: the transient failure (or the hung server's restart)
    permanent: str | None = None     # park until the spec changes: the permanent failure


def judge(outcomes: Sequence[Outcome], *, ran_before: bool) -> Verdict:
    """The verdict on one server's pass; `ran_before`: an exit of this server is on record."""
    restarts: list[str] = []
    retry = permanent = None
    for o in outcomes:
        if o.skipped:
            continue   # skipped because an earlier action failed: that one is the cause
        kind = o.action.kind
        if kind is ActionKind.restart and o.action.unhealthy:
            restarts.append(o.action.reason)
            if o.ok:   # a server that keeps hanging backs off like one that keeps crashing
                retry = retry or o.action.reason
        elif kind is ActionKind.start and ran_before:
            restarts.append(o.action.reason)
        if o.ok:
            continue
        if o.permanent and kind is not ActionKind.test:   # (a failed gate is shown by its test result)
            permanent = permanent or o.error or f"{kind.value} failed"
        else:
            retry = o.error or f"{kind.value} failed"
    return Verdict(tuple(restarts), None if permanent else retry, permanent)


def without_retries(plan: Plan) -> Plan:
    """The plan of a parked server: only what takes it down (stops, uninstalls), nothing retried or deferred."""
    return replace(plan, actions=tuple(a for a in plan.actions if a.kind not in RETRIED_KINDS), deferred=())
