"""`dependsOn` gating of one server's pass, in one pure place: starts wait for dependencies to be Ready, stops
wait for the running dependents that stop too.

Pure: what is Ready and what runs come in as functions (the loop reads them from the ledger and the records;
tests pass sets). The loop applies the result: the held-back actions are dropped from this pass, the
server comes back after DEPENDENCY_WAIT_S, and the dependents that must stop first are woken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from mcp_reconcile.model import ActionKind, DesiredState, Plan, ServerSpec

STARTS = (ActionKind.start, ActionKind.restart)
STOPS = (ActionKind.stop, ActionKind.uninstall)


@dataclass(frozen=True)
class Gate:
    """One server's plan with what dependsOn holds back removed, and why."""

    plan: Plan
    waiting_for: tuple[str, ...] = ()    # dependencies not Ready yet: its starts (and tests) wait
    stop_first: tuple[str, ...] = ()     # running dependents that stop too: its stops wait for theirs

    @property
    def held_back(self) -> bool:
        return bool(self.waiting_for or self.stop_first)


def gate(name: str, plan: Plan, desired: Mapping[str, ServerSpec], known: Mapping[str, ServerSpec], *,
         is_ready: Callable[[str], bool], is_running: Callable[[str], bool]) -> Gate:
    """Gate `name`'s plan. `desired`: the specs supervised now; `known`: those plus the specs of removed servers
    (their dependsOn still orders their stops)."""
    actions = plan.actions
    spec = desired.get(name)
    waiting_for: tuple[str, ...] = ()
    if spec and any(a.kind in STARTS for a in actions):
        waiting_for = dependencies_not_ready(spec, desired, is_ready)
        if waiting_for:
            actions = tuple(a for a in actions if a.kind not in STARTS and a.kind is not ActionKind.test)
    stop_first: tuple[str, ...] = ()
    if any(a.kind in STOPS for a in actions):
        stop_first = running_dependents_to_stop(name, known, desired, is_running)
        if stop_first:
            actions = tuple(a for a in actions if a.kind not in STOPS)
    return Gate(replace(plan, actions=actions) if actions != plan.actions else plan, waiting_for, stop_first)


def dependencies_not_ready(spec: ServerSpec, desired: Mapping[str, ServerSpec],
                           is_ready: Callable[[str], bool]) -> tuple[str, ...]:
    """The dependencies of `spec` (meant to run) that are not Ready yet."""
    return tuple(dep for dep in spec.depends_on
                 # a dependency that is not meant to run cannot be waited for (apply starts anyway)
                 if (d := desired.get(dep)) is not None and d.desired_state is DesiredState.running
                 and not is_ready(dep))


def running_dependents_to_stop(name: str, known: Mapping[str, ServerSpec], desired: Mapping[str, ServerSpec],
                               is_running: Callable[[str], bool]) -> tuple[str, ...]:
    """Running servers that depend on `name` and are not meant to keep running."""
    return tuple(other for other, spec in known.items()
                 if other != name and name in spec.depends_on
                 and not (other in desired and desired[other].desired_state is DesiredState.running)
                 and is_running(other))
