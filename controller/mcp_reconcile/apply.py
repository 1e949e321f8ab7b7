"""Execute a Plan's actions through an Effects seam, one audit event each, and return Outcomes.

Stops run first (dependents first), then uninstalls. Then each server goes its own way: install, start,
test, one after the other, bounded per kind (installs, starts, tests in parallel), so that one server's slow
or retried install never delays another server's start (issue 12: a failing install held a healthy server's
start back 39 s). A server's start waits only for the starts of the servers it depends on. A failed action
never stops the others: only the same server's later actions and the servers that depend on it are
skipped, each with a reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mcp_reconcile.errors import McpReconcileError, PermanentError
from mcp_reconcile.events import get_logger
from mcp_reconcile.model import Action, ActionKind, Plan, ServerSpec
from mcp_reconcile.slots import Slots

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
    permanent: bool = False   # a PermanentError: retrying cannot help until the spec changes


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

    async def one(action: Action, slots: Slots) -> None:
        reason = blocked_by(action)
        if reason:
            record(Outcome(action, False, error=f"skipped: {reason}", skipped=True), why=reason)
            log.info("action.skipped", server=action.server, action=action.kind.value, reason=reason)
            return
        async with slots.held():   # (a package manager's retry gives it back while it waits)
            record(await _run_action(action, desired, effects))

    async def run_group(actions: Iterable[Action], limit: int) -> None:
        slots = Slots(limit)
        await asyncio.gather(*(one(a, slots) for a in actions))

    stops = [a for a in plan.actions if a.kind is ActionKind.stop]
    for wave in sorted({a.wave for a in stops}):
        await run_group([a for a in stops if a.wave == wave], limits.starts)
    await run_group([a for a in plan.actions if a.kind is ActionKind.uninstall], limits.installs)

    slots = {ActionKind.install: Slots(limits.installs), ActionKind.start: Slots(limits.starts),
             ActionKind.test: Slots(limits.tests)}
    slots[ActionKind.upgrade], slots[ActionKind.restart] = slots[ActionKind.install], slots[ActionKind.start]
    per_server: dict[str, list[Action]] = {}
    for a in plan.actions:   # in plan order: a server's install, then its start, then its test
        if a.kind in slots:
            per_server.setdefault(a.server, []).append(a)
    started = {name: asyncio.Event() for name in per_server}   # set once a server's start is over (or not due)

    async def pipeline(name: str, actions: list[Action]) -> None:
        spec = desired.get(name)
        try:
            for a in actions:
                if a.kind is ActionKind.test:
                    started[name].set()   # dependents wait for the start, not for the gate tests
                elif a.kind in (ActionKind.start, ActionKind.restart):
                    for dep in (spec.depends_on if spec else ()):
                        if dep in started and dep != name:
                            await started[dep].wait()
                await one(a, slots[a.kind])
        finally:
            started[name].set()

    await asyncio.gather(*(pipeline(name, actions) for name, actions in per_server.items()))
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
        return Outcome(action, False, error=str(exc), duration_s=duration,
                       permanent=isinstance(exc, PermanentError))
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
