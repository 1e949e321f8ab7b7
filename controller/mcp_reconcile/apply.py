"""Execute a Plan's actions through an Effects seam, one audit event each, and return Outcomes.

Installs run in parallel (bounded), starts in dependency waves (bounded), stops before everything. A
failed action never stops the others: only the same server's later actions and the servers that depend
on it are skipped, each with a reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.events import get_logger
from mcp_reconcile.model import Action, ActionKind, Plan, ServerSpec

log = get_logger()


class Effects(Protocol):
    """The world the applier acts on (HostEffects for real; recording fakes in tests)."""

    async def install(self, spec: ServerSpec) -> str: ...   # returns a short detail ("installed 1.2.3")
    async def uninstall(self, name: str) -> str: ...
    async def start(self, spec: ServerSpec) -> str: ...
    async def replace(self, spec: ServerSpec) -> str | None: ...   # swap in place; None: stop + start instead
    async def stop(self, name: str) -> str: ...
    async def test(self, spec: ServerSpec) -> str: ...


@dataclass(frozen=True)
class Outcome:
    action: Action
    ok: bool
    detail: str = ""
    error: str | None = None
    skipped: bool = False
    duration_s: float = 0.0


@dataclass(frozen=True)
class Limits:
    installs: int = 4
    starts: int = 8
    tests: int = 2


Reporter = Callable[[Outcome], None]


async def apply_plan(plan: Plan, desired: Mapping[str, ServerSpec], effects: Effects, *,
                     limits: Limits = Limits(), on_outcome: Reporter | None = None) -> list[Outcome]:
    """Run every action of `plan` in its order; returns one Outcome per action, in the plan's order
    (`on_outcome` sees them as they finish)."""
    failed: dict[str, str] = {}   # server -> why its later actions are skipped (the root cause, not a relay)
    outcomes: list[Outcome] = []

    def record(outcome: Outcome, *, why: str | None = None) -> None:
        outcomes.append(outcome)
        if not outcome.ok:
            failed.setdefault(outcome.action.server, why or f"an earlier action on {outcome.action.server} failed")
        if on_outcome:
            on_outcome(outcome)

    def blocked_by(action: Action) -> str | None:
        if action.server in failed:
            return failed[action.server]
        spec = desired.get(action.server)
        for dep in (spec.depends_on if spec else ()):
            if dep in failed:
                return f"dependency {dep} failed"
        return None

    async def run_group(actions: Iterable[Action], limit: int) -> None:
        sem = asyncio.Semaphore(max(1, limit))

        async def one(action: Action) -> None:
            reason = blocked_by(action)
            if reason:
                record(Outcome(action, False, error=f"skipped: {reason}", skipped=True), why=reason)
                log.info("action.skipped", server=action.server, action=action.kind.value, reason=reason)
                return
            async with sem:
                record(await _run_action(action, desired, effects))

        await asyncio.gather(*(one(a) for a in actions))

    stops = [a for a in plan.actions if a.kind is ActionKind.stop]
    for wave in sorted({a.wave for a in stops}):
        await run_group([a for a in stops if a.wave == wave], limits.starts)
    await run_group([a for a in plan.actions if a.kind is ActionKind.uninstall], limits.installs)
    await run_group([a for a in plan.actions if a.kind in (ActionKind.install, ActionKind.upgrade)], limits.installs)
    starts = [a for a in plan.actions if a.kind in (ActionKind.start, ActionKind.restart)]
    for wave in sorted({a.wave for a in starts}):
        await run_group([a for a in starts if a.wave == wave], limits.starts)
    await run_group([a for a in plan.actions if a.kind is ActionKind.test], limits.tests)
    position = {id(action): i for i, action in enumerate(plan.actions)}
    return sorted(outcomes, key=lambda o: position.get(id(o.action), len(position)))


async def _run_action(action: Action, desired: Mapping[str, ServerSpec], effects: Effects) -> Outcome:
    spec = desired.get(action.server)
    generation = spec.generation if spec else None
    bound = log.bind(server=action.server, action=action.kind.value, generation=generation)
    bound.info("action.started", reason=action.reason)
    started = time.monotonic()
    try:
        detail = await _dispatch(action, spec, effects)
    except McpReconcileError as exc:
        duration = time.monotonic() - started
        bound.error("action.failed", reason=action.reason, outcome="failed", error=str(exc),
                    error_type=type(exc).__name__, duration_ms=round(duration * 1000, 1))
        return Outcome(action, False, error=str(exc), duration_s=duration)
    except Exception as exc:  # a bug or an unforeseen OS error fails this action, never the whole apply
        duration = time.monotonic() - started
        bound.exception("action.failed", reason=action.reason, outcome="failed", error=str(exc),
                        error_type=type(exc).__name__, duration_ms=round(duration * 1000, 1))
        return Outcome(action, False, error=f"{action.server}: {action.kind.value} failed: "
                                            f"{type(exc).__name__}: {exc}", duration_s=duration)
    duration = time.monotonic() - started
    bound.info("action.applied", reason=action.reason, outcome="ok", detail=detail,
               duration_ms=round(duration * 1000, 1))
    return Outcome(action, True, detail=detail, duration_s=duration)


def _dispatch(action: Action, spec: ServerSpec | None, effects: Effects) -> Awaitable[str]:
    kind = action.kind
    if kind in (ActionKind.stop, ActionKind.uninstall):
        return effects.stop(action.server) if kind is ActionKind.stop else effects.uninstall(action.server)
    assert spec is not None, f"{kind.value} of {action.server} needs its spec"
    if kind in (ActionKind.install, ActionKind.upgrade):
        return effects.install(spec)
    if kind is ActionKind.start:
        return effects.start(spec)
    if kind is ActionKind.restart:
        return _restart(spec, effects)
    return effects.test(spec)


async def _restart(spec: ServerSpec, effects: Effects) -> str:
    """Make-before-break when the runner can swap generations; else stop, then start."""
    swapped = await effects.replace(spec)
    if swapped is not None:
        return swapped
    await effects.stop(spec.name)
    return await effects.start(spec)
