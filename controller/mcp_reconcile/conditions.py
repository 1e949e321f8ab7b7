"""Phase and conditions of a server from its spec, what was observed and what the controller remembers.

Pure. Transitions (each emits one `server.phase_changed` event in the loop):
  Pending -> Installing -> Starting            install/start in progress
  Starting -> Running                          only after the first healthy probe (and passed gate tests)
  Running -> Degraded                          a probe failed, threshold not reached yet
  any -> CrashLoopBackOff                      repeated exits; the next start waits `backoff_delay_s`
  any -> Stopped                               desiredState stopped/installed, or stop-all
  any -> Failed                                permanent install error, failed gate tests, restartPolicy forbids restart
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_reconcile.model import Condition, DesiredState, ObservedServer, Phase, ServerSpec


@dataclass(frozen=True)
class Memory:
    """What the controller remembers about a server beyond the records (kept in state.json)."""

    failed_reason: str | None = None        # a permanent failure of the current generation
    in_crash_loop: bool = False
    backoff_delay_s: float = 0.0
    tested_ok: bool | None = None           # gate result for the running generation (None: not tested)
    test_message: str = ""
    stopped: bool = False                   # stopped on purpose (stop-all) until the next start


def _cond(type_: str, ok: bool | None, reason: str, message: str = "") -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type_, status, reason, message)


def evaluate(spec: ServerSpec | None, obs: ObservedServer, mem: Memory, *,
             held: str | None = None) -> tuple[Phase, list[Condition], str]:
    """(phase, conditions, one-line message) for a server; `spec` None means removed from manifests.

    `held` says why a server without a spec is left as it is (its manifest has errors): it is neither
    removed nor vouched for, since nothing probes or restarts it until the manifest is fixed.
    """
    installed = obs.installed and (spec is None or obs.install_generation == spec.install_generation)
    healthy = (None if held else obs.healthy) if obs.running else False
    gate = bool(spec and spec.tests.gate)
    tested = mem.tested_ok if gate else True
    conds = [
        _cond("Installed", installed, "Installed" if installed else "NotInstalled",
              f"version {obs.resolved_version}" if obs.resolved_version else ""),
        _cond("Running", obs.running, "RunnerAlive" if obs.running else "NotRunning",
              f"pid {obs.server_pid}" if obs.server_pid else ""),
        _cond("Healthy", healthy, "ProbeSucceeded" if healthy else ("NotProbed" if healthy is None else "ProbeFailed"),
              f"{obs.consecutive_probe_failures} consecutive failures" if obs.consecutive_probe_failures else ""),
        _cond("Tested", tested, "Passed" if tested else ("NotTested" if tested is None else "Failed"),
              mem.test_message),
    ]
    ready = bool(obs.running and healthy and tested)
    conds.append(_cond("Ready", ready, "Ready" if ready else "NotReady"))

    desired = spec.desired_state if spec else DesiredState.absent
    if held and spec is None:
        if obs.running:
            return Phase.Running, conds, f"{held}: left running as last applied, not probed or restarted"
        return Phase.Failed, conds, f"{held}: not running, and not restarted until the manifest is fixed"
    if mem.failed_reason:
        return Phase.Failed, conds, mem.failed_reason
    if mem.stopped and not obs.running:
        return Phase.Stopped, conds, "stopped by stop-all (the next apply or run starts it again)"
    if desired is not DesiredState.running:
        return (Phase.Stopped, conds, f"desiredState {desired.value}") if not obs.running else \
            (Phase.Running, conds, "stopping")
    if mem.in_crash_loop and not obs.running:
        return Phase.CrashLoopBackOff, conds, f"back-off {mem.backoff_delay_s:.1f}s restarting failed server"
    if not installed:
        return Phase.Installing if obs.installed is False else Phase.Pending, conds, "not installed"
    if not obs.running:
        return Phase.Pending, conds, "not running"
    if healthy is None or (gate and tested is None):
        return Phase.Starting, conds, "waiting for the first healthy probe" if healthy is None else "testing"
    if gate and tested is False:
        return Phase.Failed, conds, mem.test_message or "gate tests failed"
    if not healthy or obs.consecutive_probe_failures:
        return Phase.Degraded, conds, f"{obs.consecutive_probe_failures} failed probe(s)"
    return Phase.Running, conds, ""
