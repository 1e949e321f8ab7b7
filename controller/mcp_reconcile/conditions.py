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
    last_good: bool = False                 # the running controller supervises it on its last good spec
    phase: str | None = None                # the phase and message the controller recorded last
    message: str = ""


def _cond(type_: str, ok: bool | None, reason: str, message: str = "") -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type_, status, reason, message)


def evaluate(spec: ServerSpec | None, obs: ObservedServer, mem: Memory, *,
             held: str | None = None) -> tuple[Phase, list[Condition], str]:
    """(phase, conditions, one-line message) for a server; `spec` None means removed from manifests.

    `held` says why a server's manifest is ignored (it has errors). Without a spec the server is left as it
    is, neither removed nor vouched for, since nothing probes or restarts it until the manifest is fixed;
    unless `mem.last_good` says the running controller still supervises it on its last good spec (then what
    the controller recorded stands). With a spec (that last good one, in the controller) it is evaluated as
    usual and the message says which spec it runs on.
    """
    unsupervised = bool(held) and spec is None and not mem.last_good
    installed = obs.installed and (spec is None or obs.install_generation == spec.install_generation)
    healthy = (None if unsupervised else obs.healthy) if obs.running else False
    gate = bool(spec and spec.tests.gate)
    tested = mem.tested_ok if gate else True
    install_failed = not installed and bool(mem.failed_reason)
    conds = [
        _cond("Installed", installed, "Installed" if installed else ("InstallFailed" if install_failed
                                                                     else "NotInstalled"),
              (mem.failed_reason or "") if install_failed else
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

    if held and spec is None:
        if not unsupervised and mem.phase:
            return Phase(mem.phase), conds, mem.message
        if obs.running:
            return Phase.Running, conds, f"{held}: left running as last applied, not probed or restarted"
        return Phase.Failed, conds, f"{held}: not running, and not restarted until the manifest is fixed"
    phase, message = _phase(spec, obs, mem, installed=installed, healthy=healthy, tested=tested)
    if held:
        message = f"{held}: supervised on its last good spec" + (f" ({message})" if message else "")
    return phase, conds, message


def _phase(spec: ServerSpec | None, obs: ObservedServer, mem: Memory, *, installed: bool, healthy: bool | None,
           tested: bool | None) -> tuple[Phase, str]:
    """The phase and its one-line message (the transitions drawn in the module docstring)."""
    gate = bool(spec and spec.tests.gate)
    desired = spec.desired_state if spec else DesiredState.absent
    if mem.failed_reason:
        return Phase.Failed, mem.failed_reason
    if mem.stopped and not obs.running:
        return Phase.Stopped, "stopped by stop-all (the next apply or run starts it again)"
    if desired is not DesiredState.running:
        return (Phase.Stopped, f"desiredState {desired.value}") if not obs.running else \
            (Phase.Running, "stopping")
    if mem.in_crash_loop and not obs.running:
        return Phase.CrashLoopBackOff, f"back-off {mem.backoff_delay_s:.1f}s restarting failed server"
    if not installed:
        return Phase.Installing if obs.installed is False else Phase.Pending, "not installed"
    if not obs.running:
        return Phase.Pending, "not running"
    if healthy is None or (gate and tested is None):
        return Phase.Starting, "waiting for the first healthy probe" if healthy is None else "testing"
    if gate and tested is False:
        return Phase.Failed, mem.test_message or "gate tests failed"
    if not healthy or obs.consecutive_probe_failures:
        return Phase.Degraded, f"{obs.consecutive_probe_failures} failed probe(s)"
    return Phase.Running, ""
