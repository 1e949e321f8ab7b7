"""The planner: desired + observed -> ordered actions with reasons. Pure: no disk, process or clock.

Order: stops (dependents first), uninstalls, installs/upgrades, starts/restarts in dependency waves,
then readiness tests. Applying a plan to a world and planning again yields no changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from mcp_reconcile import generation, graph
from mcp_reconcile.model import (
    INSTALL_FIELDS,
    RUNTIME_FIELDS,
    Action,
    ActionKind,
    Deferred,
    DesiredState,
    Observed,
    ObservedServer,
    Plan,
    RestartPolicy,
    ServerSpec,
)

_ORDER = {ActionKind.stop: 0, ActionKind.uninstall: 1, ActionKind.install: 2, ActionKind.upgrade: 2,
          ActionKind.start: 3, ActionKind.restart: 3, ActionKind.test: 4}


def describe_changes(fields: list[str], spec: ServerSpec) -> str:
    """`args, env.API_KEY (sensitive)`: names only; secret entries are flagged, values never shown."""
    return ", ".join(f"{f} (sensitive)" if f.startswith("env.") and f[4:] in spec.secret_keys else f
                     for f in fields)


def plan_server(spec: ServerSpec, obs: ObservedServer, *, now: float) -> tuple[list[Action], Deferred | None]:
    """Actions for one declared server, unordered across servers."""
    actions: list[Action] = []
    name = spec.name
    if spec.desired_state is DesiredState.absent:
        if obs.running:
            actions.append(Action(ActionKind.stop, name, "desiredState is absent"))
        if obs.installed:
            actions.append(Action(ActionKind.uninstall, name, "desiredState is absent"))
        return actions, None

    reinstalled = False
    if not obs.installed:
        actions.append(Action(ActionKind.install, name, f"{'new server' if _is_new(obs) else 'not installed'}: "
                                                        f"{spec.source}"))
        reinstalled = True
    elif obs.install_generation != spec.install_generation:
        changed = generation.changed_fields(obs.install_digests, spec.digests, INSTALL_FIELDS) or ["source"]
        was = f"{obs.install_source} -> " if obs.install_source else ""
        actions.append(Action(ActionKind.upgrade, name, f"changed: {', '.join(changed)}: {was}{spec.source}",
                              tuple(changed)))
        reinstalled = True

    if spec.desired_state is not DesiredState.running:
        if obs.running:
            actions.append(Action(ActionKind.stop, name, f"desiredState is {spec.desired_state.value}"))
        return actions, None

    deferred = None
    if obs.running:
        runtime_changed = generation.changed_fields(obs.runtime_digests, spec.digests, RUNTIME_FIELDS)
        if obs.runtime_generation != spec.runtime_generation or reinstalled:
            fields = runtime_changed or (["source"] if reinstalled else ["spec"])
            actions.append(Action(ActionKind.restart, name, f"changed: {describe_changes(fields, spec)}",
                                  tuple(fields)))
        elif obs.consecutive_probe_failures >= spec.health.failure_threshold:
            reason = f"unhealthy: {obs.consecutive_probe_failures} consecutive failed probes"
            if obs.backoff_until is not None and obs.backoff_until > now:   # a server that keeps hanging waits too
                deferred = Deferred(name, obs.backoff_until,
                                    f"{reason}; CrashLoopBackOff, retry in {obs.backoff_until - now:.1f}s")
            else:
                actions.append(Action(ActionKind.restart, name, reason, unhealthy=True))
    else:
        reason = _start_reason(obs)
        if reason is not None and _policy_allows_start(spec.restart_policy, obs):
            if obs.backoff_until is not None and obs.backoff_until > now:
                deferred = Deferred(name, obs.backoff_until,
                                    f"{reason}; CrashLoopBackOff, retry in {obs.backoff_until - now:.1f}s")
            else:
                actions.append(Action(ActionKind.start, name, reason))
    will_run = obs.running or any(a.kind in (ActionKind.start, ActionKind.restart) for a in actions)
    restarting = any(a.kind in (ActionKind.start, ActionKind.restart) for a in actions)
    if spec.tests.gate and will_run and (restarting or obs.tested_generation != spec.runtime_generation):
        actions.append(Action(ActionKind.test, name, "tests.gate: the new generation must pass before Ready"))
    return actions, deferred


def _is_new(obs: ObservedServer) -> bool:
    return not (obs.installed or obs.running or obs.stale_run_record or obs.last_exit_code is not None)


def _start_reason(obs: ObservedServer) -> str | None:
    if _is_new(obs):
        return "new server"
    if obs.stale_run_record:
        return f"runner record is stale ({obs.stale_reason})" if obs.stale_reason else "runner record is stale"
    if obs.last_exit_code is not None:
        return f"exited with code {obs.last_exit_code}"
    return "not running"


def _policy_allows_start(policy: RestartPolicy, obs: ObservedServer) -> bool:
    """A server that never ran always starts; after an exit the restart policy decides."""
    if obs.last_exit_code is None:
        return True
    if policy is RestartPolicy.Never:
        return False
    return not (policy is RestartPolicy.OnFailure and obs.last_exit_code == 0)


def plan(desired: Mapping[str, ServerSpec], observed: Observed, *, now: float,
         protected: Collection[str] = ()) -> Plan:
    """The whole plan. `protected` names servers whose manifests are broken: they are left as they are.

    Servers the state knows but no manifest declares are stopped and uninstalled (unless protected).
    """
    waves = graph.waves({n: s.depends_on for n, s in desired.items()})
    max_wave = max(waves.values(), default=0)
    actions: list[Action] = []
    deferred: list[Deferred] = []
    for name, spec in desired.items():
        if name in protected:
            continue
        server_actions, wait = plan_server(spec, observed.get(name), now=now)
        actions.extend(_with_wave(a, waves[name], max_wave) for a in server_actions)
        if wait:
            deferred.append(wait)
    for name, obs in observed.servers.items():
        if name in desired or name in protected:
            continue
        if obs.running:
            actions.append(Action(ActionKind.stop, name, "removed from manifests", wave=-1))
        if obs.installed:
            actions.append(Action(ActionKind.uninstall, name, "removed from manifests", wave=-1))
    actions.sort(key=_sort_key)
    return Plan(tuple(actions), tuple(sorted(deferred, key=lambda d: d.server)))


def _with_wave(action: Action, wave: int, max_wave: int) -> Action:
    # stops run in reverse dependency order: dependents (high waves) go first
    w = max_wave - wave if action.kind in (ActionKind.stop, ActionKind.uninstall) else wave
    return dataclasses.replace(action, wave=w)


def _sort_key(action: Action) -> tuple[int, int, str]:
    # removed servers (wave -1) stop first: nothing declared may depend on them
    return (_ORDER[action.kind], action.wave, action.server)
