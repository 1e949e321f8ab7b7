"""`mcp-reconcile run`: the long-running, level-triggered controller.

Manifest edits (watchdog), runner exits (pidfd), probe results and the resync timer only enqueue server
names; workers take one name at a time from a de-duplicating queue and run a full per-server pass:
observe -> plan -> apply -> record status. A per-server pass never waits for another server, so a
crashing server never delays the others; its restarts are delayed by CrashLoopBackOff instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp_reconcile import events, render
from mcp_reconcile.alerts import AlertGate, AlertSink, alert_kind, make_alert
from mcp_reconcile.apply import Limits, apply_plan
from mcp_reconcile.cli import Options
from mcp_reconcile.desired import has_errors, load_desired
from mcp_reconcile.effects import HostEffects
from mcp_reconcile.ledger import Ledger, is_ready
from mcp_reconcile.loop.backoff import Backoff, BackoffState
from mcp_reconcile.loop.clock import Clock, SystemClock
from mcp_reconcile.loop.exits import ExitWatcher
from mcp_reconcile.loop.health import HealthMonitor
from mcp_reconcile.loop.queue import QueueShutDown, WorkQueue
from mcp_reconcile.loop.watch import ManifestWatcher
from mcp_reconcile.model import (
    ActionKind,
    BackoffSpec,
    DesiredState,
    Observed,
    RestartPolicy,
    ServerSpec,
    referenced_vars,
)
from mcp_reconcile.observe import observe_server, with_memory
from mcp_reconcile.plan import plan
from mcp_reconcile.readiness import record_status
from mcp_reconcile.reports import write_health_report
from mcp_reconcile.spawner import RunnerSpawner
from mcp_reconcile.store import StateDir
from mcp_reconcile.systemd import Notifier

# A server whose manifest vanished is removed only if it is still gone this long after (rewrite-safe).
REMOVAL_GRACE_S = 2.0
# A server whose dependencies are not Ready yet is looked at again after this long.
DEPENDENCY_WAIT_S = 1.0
# A running server without an endpoint yet (a runner re-adopted while starting) is looked at again after this.
STARTING_RECHECK_S = 0.5
# How often the health report and the systemd STATUS line are refreshed.
REPORT_INTERVAL_S = 5.0
# Passes in progress at shutdown (a start waiting for its runner, a stop) get this long to finish before they
# are cancelled: runners live on in sessions of their own and the next controller adopts them.
SHUTDOWN_PASS_GRACE_S = 3.0
# Bound on cancelled tasks (cut-short passes, timers, the test run) ending at shutdown.
SHUTDOWN_CANCEL_TIMEOUT_S = 2.0


class Controller:
    def __init__(self, opts: Options, state: StateDir, *, clock: Clock | None = None) -> None:
        self.opts = opts
        self.state = state
        self.clock = clock or SystemClock()
        self.ledger = Ledger(state)
        self.queue = WorkQueue(self.clock)
        # read (and drop) $NOTIFY_SOCKET before the runners' environment is captured: they must not inherit it
        self.notifier = Notifier(unset_environment=True)
        self.effects = HostEffects(state, self.ledger,
                                   check_prerequisites=not (opts.force or opts.skip_prerequisites),
                                   continue_past_failed_tests=opts.force,
                                   install_slots=asyncio.Semaphore(max(1, opts.max_parallel_installs)),
                                   spawner=RunnerSpawner(state.root))
        self.desired: dict[str, ServerSpec] = {}
        self.held: dict[str, str] = {}   # servers with no usable spec, left as they are -> why
        self.last_good: dict[str, str] = {}   # servers supervised on their last good spec -> why (broken file)
        self.backoff: dict[str, BackoffState] = {}
        self._policies: dict[BackoffSpec, Backoff] = {}
        self.missing_since: dict[str, float] = {}
        self.removed_specs: dict[str, ServerSpec] = {}   # servers whose manifest vanished, since when (clock)
        self.alerts = AlertSink(opts.webhook_url)
        self.alert_gate = AlertGate()
        self.log = events.get_logger()
        self.first_pass: set[str] = set()
        self.ready_sent = False
        self._stop = asyncio.Event()
        self.stopping = False
        self._tests: asyncio.Task[None] | None = None   # --test / --all: the suite, run once in the background

    # desired state ------------------------------------------------------------------------------
    def reload(self, reason: str) -> set[str]:
        """Reload every manifest; keep the last good spec of servers whose manifest is broken.

        Returns the names whose desired state changed (new, changed, removed).
        """
        desired = load_desired(self.opts.manifest_paths(), self.state, create_key=True, ledger=self.ledger)
        events.REDACTOR.add(desired.load.secret_values())
        for p in desired.load.problems:
            self.log.error("manifest.rejected", file=p.file, document=p.doc_index, path=p.json_path,
                           error=p.reason, reason=reason)
        new = desired.load.by_name
        now = self.clock.now()
        for name in new:
            self.missing_since.pop(name, None)
        # a file with a problem is ignored as a whole: every server it named in the last good load keeps its
        # last good spec and stays supervised (never stopped or removed for a parse or schema error)
        protected = desired.held | {n: has_errors(s.origin.file) for n, s in self.desired.items()
                                    if n not in new and desired.ignores(s.origin.file)}
        # a server whose manifest vanished is removed only when it is still gone REMOVAL_GRACE_S later:
        # an editor or a slow writer rewriting the file must not stop and uninstall it
        vanished = {n for n in self.desired if n not in new and n not in protected}
        waiting = {n for n in vanished if now - self.missing_since.setdefault(n, now) < REMOVAL_GRACE_S}
        if waiting:
            asyncio.get_running_loop().call_later(REMOVAL_GRACE_S, self.on_manifests_changed, set())
        keep = {n: s for n, s in self.desired.items()
                if n not in new and (n in protected or n in waiting)}
        merged = {**keep, **new}
        changed = {n for n in set(merged) | set(self.desired)
                   if n not in merged or n not in self.desired or merged[n].generation != self.desired[n].generation
                   or merged[n].desired_state != self.desired[n].desired_state}
        self.held = {n: why for n, why in desired.held.items() if n not in keep}
        self.last_good = {n: why for n, why in protected.items() if n in keep}
        # specs of removed servers, until they are gone: their dependsOn still orders their stops
        self.removed_specs.update({n: spec for n, spec in self.desired.items() if n not in merged})
        for name in merged:
            self.removed_specs.pop(name, None)
        self.desired = merged
        self.effects.withheld_env = referenced_vars(merged.values())
        self.effects.reserved_ports = {s.port for s in merged.values() if s.port}
        if changed:
            self.log.info("manifest.loaded", servers=len(merged), changed=sorted(changed), reason=reason)
        return changed

    def on_manifests_changed(self, paths: set[Path]) -> None:
        for name in self.reload(f"{len(paths)} file(s) changed" if paths else "removal grace over"):
            if name in self.backoff:   # an edit cuts a crash-loop wait short
                self.backoff[name] = BackoffState()
            self.queue.add(name)

    # events from the world ----------------------------------------------------------------------
    def on_runner_exit(self, name: str) -> None:
        self.health.forget(name)
        self.log.info("runner.exited", server=name)
        self.queue.add(name)

    def on_probe(self, name: str, result: Any) -> None:
        entry = self.ledger.get(name)
        failures = 0 if result.ok else int(entry.get("consecutive_probe_failures", 0)) + 1
        was_healthy = entry.get("healthy")
        self.ledger.update(name, healthy=result.ok, consecutive_probe_failures=failures,
                           last_probe={"ok": result.ok, "latency_ms": result.latency_ms, "at": time.time(),
                                       "error": result.error, "era": result.era})
        spec = self.desired.get(name)
        if result.ok:
            before = self.backoff.get(name, BackoffState())
            self.backoff[name] = self._policy(name).healthy(before, self.clock.now())
            if before.failures and not self.backoff[name].failures and self.alert_gate.settled(name):
                self.alerts.notify(make_alert("recovered", name, phase=entry.get("phase") or "Running",
                                              message="healthy since its last crash, restart backoff reset"))
        else:
            self.log.warning("probe.failed", server=name, error=result.error, failures=failures)
        threshold = spec.health.failure_threshold if spec else 3
        if was_healthy != result.ok or failures >= threshold:
            self.queue.add(name)

    # the per-server pass ------------------------------------------------------------------------
    def _policy(self, name: str) -> Backoff:
        spec = self.desired.get(name)
        b = spec.restart_backoff if spec else BackoffSpec()
        if b not in self._policies:   # one policy object per distinct restartBackoff block
            self._policies[b] = Backoff(initial_s=b.initial_s, max_s=b.max_s, reset_after_s=b.reset_after_s)
        return self._policies[b]

    def _observe(self, name: str, records: Any = None) -> Any:
        """Records (read now unless given) + what the ledger remembers + the backoff in memory."""
        obs = with_memory(records or observe_server(self.state, name), self.ledger.get(name))
        b = self.backoff.get(name)
        return replace(obs, backoff_until=b.until if b and b.until else None)

    def _dependencies_not_ready(self, spec: ServerSpec) -> list[str]:
        """The dependencies (meant to run) that are not Ready yet."""
        waiting = []
        for dep in spec.depends_on:
            dep_spec = self.desired.get(dep)
            if dep_spec is None or dep_spec.desired_state is not DesiredState.running:
                continue   # a dependency that is not meant to run cannot be waited for (apply starts anyway)
            if not is_ready(self.ledger.get(dep)):
                waiting.append(dep)
        return waiting

    def _running_dependents_to_stop(self, name: str) -> list[str]:
        """Running servers that depend on `name` and are not meant to keep running."""
        found = []
        for other, spec in {**self.removed_specs, **self.desired}.items():
            if other == name or name not in spec.depends_on:
                continue
            keeps_running = other in self.desired and self.desired[other].desired_state is DesiredState.running
            if not keeps_running and observe_server(self.state, other).running:
                found.append(other)
        return found

    async def reconcile(self, name: str) -> None:
        spec = self.desired.get(name)
        if name in self.held:
            await self._hold(name, self.held[name])
            return
        fresh = observe_server(self.state, name)   # the records alone: an exit not counted yet is still there
        if fresh.last_exit_code is not None or fresh.stale_run_record:
            await self._note_exit(name, fresh)
            fresh = observe_server(self.state, name)
        obs = self._observe(name, fresh)
        desired = {name: spec} if spec else {}
        the_plan = plan(desired, Observed(MappingProxyType({name: obs})), now=self.clock.now())
        for d in the_plan.deferred:
            self.queue.add(name, after_s=max(0.0, d.until - self.clock.now()))
        starts = [a for a in the_plan.actions if a.kind in (ActionKind.start, ActionKind.restart)]
        waiting_for = self._dependencies_not_ready(spec) if spec and starts else []
        if waiting_for:
            self.log.info("server.waiting", server=name, reason=f"dependencies not Ready: {waiting_for}")
            self.queue.add(name, after_s=DEPENDENCY_WAIT_S)
            the_plan = replace(the_plan, actions=tuple(a for a in the_plan.actions if a not in starts
                                                       and a.kind is not ActionKind.test))
        stops = [a for a in the_plan.actions if a.kind in (ActionKind.stop, ActionKind.uninstall)]
        dependents = self._running_dependents_to_stop(name) if stops else []
        if dependents:   # dependsOn: stopped before what they depend on
            self.log.info("server.waiting", server=name, reason=f"dependents stop first: {dependents}")
            for other in dependents:
                self.queue.add(other)
            self.queue.add(name, after_s=DEPENDENCY_WAIT_S)
            the_plan = replace(the_plan, actions=tuple(a for a in the_plan.actions if a not in stops))
        if the_plan.actions:
            self.log.info("plan.computed", server=name, summary=render.summary_line(the_plan),
                          actions=[f"{a.kind.value}: {a.reason}" for a in the_plan.actions])
            outcomes = await apply_plan(the_plan, desired, self.effects, limits=Limits(1, 1, 1))
            for o in outcomes:
                if o.action.kind is ActionKind.restart and o.action.reason.startswith("unhealthy"):
                    self._count_restart(name, o.action.reason)
                    if o.ok:   # a server that keeps hanging backs off like one that keeps crashing
                        self._failed(name, o.action.reason)
                elif o.action.kind is ActionKind.start and self.backoff.get(name, BackoffState()).failures:
                    self._count_restart(name, o.action.reason)  # a start after a crash or a failed start
                if not o.ok and o.action.kind in (ActionKind.start, ActionKind.restart):
                    self._failed(name, o.error or "start failed")
                elif not o.ok and not o.skipped:
                    self.ledger.update(name, failed_reason=o.error if o.action.kind is not ActionKind.test else None)
                    self._failed(name, o.error or "failed")
                elif o.ok and o.action.kind in (ActionKind.install, ActionKind.upgrade):
                    self.ledger.update(name, failed_reason=None)
        self._after_pass(name, spec)

    async def _clear_exit(self, name: str, obs: Any) -> str:
        """A runner that exited (or vanished): reap what is left, clear its record, remember the exit in the
        ledger (for the restart policy); returns the reason."""
        reason = obs.stale_reason or f"exit code {obs.last_exit_code}"
        self.health.forget(name)
        self.effects.forget_child(name)   # reap our own runner now, not at some later Popen
        await asyncio.to_thread(self.effects.reap_leftovers, name)
        self.state.remove_run(name)
        self.ledger.update(name, last_exit={"code": obs.last_exit_code, "reason": reason, "at": time.time()},
                           healthy=None, consecutive_probe_failures=0)
        return reason

    async def _note_exit(self, name: str, obs: Any) -> None:
        """A runner that exited (or vanished): clear it, count the restart, grow the backoff."""
        reason = await self._clear_exit(name, obs)
        spec = self.desired.get(name)
        if spec and spec.desired_state is DesiredState.running:
            self._failed(name, f"server exited ({reason})")
            code = obs.last_exit_code
            if code and (spec.restart_policy is RestartPolicy.Never):
                self.ledger.update(name, failed_reason=f"exited with code {code} (restartPolicy Never)")

    async def _hold(self, name: str, why: str) -> None:
        """A server known from an earlier run whose manifest is broken now, so there is no spec to restart it
        with: leave it as it is, notice its exit, and say so in status until the manifest is fixed."""
        obs = observe_server(self.state, name)
        if obs.last_exit_code is not None or obs.stale_run_record:
            reason = await self._clear_exit(name, obs)
            self.log.error("server.exited_unsupervised", server=name, reason=reason, error=why)
            obs = observe_server(self.state, name)
        run = self.state.read_run(name) if obs.running else None
        if run and run.get("runner_pid") and not self.exits.watch(name, run["runner_pid"]):
            self.queue.add(name)   # it exited between observing and watching
        self.ledger.update(name, last_good_spec=False)
        record_status(self.ledger, None, self._observe(name, obs), now=time.time(), held=why)
        self.ledger.save()

    def _count_restart(self, name: str, reason: str) -> None:
        restarts = int(self.ledger.get(name).get("restarts", 0)) + 1
        self.ledger.update(name, restarts=restarts)
        self.log.warning("server.restarting", server=name, restarts=restarts, reason=reason)

    def _failed(self, name: str, error: str) -> None:
        policy = self._policy(name)
        state = policy.failed(self.backoff.get(name, BackoffState()), self.clock.now())
        if state.failures == 1:   # the first crash restarts at once; repeated ones back off
            state = replace(state, delay_s=0.0, until=None)
        self.backoff[name] = state
        crash_loop = policy.in_crash_loop(state)
        self.ledger.update(name, in_crash_loop=crash_loop, backoff_delay_s=round(state.delay_s, 3))
        self.log.warning("server.backoff", server=name, delay_s=round(state.delay_s, 3), failures=state.failures,
                         crash_loop=crash_loop, error=error)
        self.queue.add(name, after_s=state.delay_s)

    def _after_pass(self, name: str, spec: ServerSpec | None) -> None:
        obs = self._observe(name)
        b = self.backoff.get(name)
        if b and b.failures and obs.running and obs.healthy:
            self.ledger.update(name, in_crash_loop=False)
        if obs.running and spec:
            run = self.state.read_run(name) or {}
            if run.get("runner_pid") and not self.exits.watch(name, run["runner_pid"]):
                self.queue.add(name)   # it exited between observing and watching
            if obs.endpoint:   # one probe loop per server process: a new runner, or a generation swapped in
                # by the same runner (a new server pid), gets a new loop whose first probe runs at once
                self.health.ensure(name, obs.endpoint, runner=(run.get("runner_pid"), run.get("runner_create_time"),
                                                              run.get("server_pid")),
                                   interval_s=spec.health.interval_s, timeout_s=spec.health.timeout_s,
                                   token=spec.endpoint_token)
            else:   # a re-adopted runner still starting: its endpoint comes soon, its runner exit wakes us too
                self.queue.add(name, after_s=STARTING_RECHECK_S)
        elif not obs.running:
            self.health.forget(name)
            self.exits.forget(name)
            if self.state.run_record_path(name).exists():
                self.queue.add(name)   # it exited during this pass: count the exit in a pass of its own
        previous = self.ledger.get(name).get("phase")
        # `status` (another process, without this spec) shows what is recorded here while this flag is set
        self.ledger.update(name, last_good_spec=name in self.last_good)
        entry = record_status(self.ledger, spec, obs, now=time.time(), held=self.last_good.get(name))
        if entry.get("phase") != previous:
            kind = alert_kind(previous, entry["phase"])
            settled = not self.backoff.get(name, BackoffState()).failures
            if kind and self.alert_gate.admit(kind, name, settled=settled):
                self.alerts.notify(make_alert(kind, name, phase=entry["phase"], previous_phase=previous,
                                              message=entry.get("message", "")))
            if entry["phase"] == "Running":   # dependents may be waiting for this one
                for other in self.desired.values():
                    if name in other.depends_on:
                        self.queue.add(other.name)
        if spec is None and not obs.installed and not obs.running:
            self.ledger.forget(name)
            self.removed_specs.pop(name, None)
        self.ledger.save()

    def _first_pass_done(self, name: str) -> None:
        """READY=1 once every server had its first pass, whatever its outcome."""
        self.first_pass.discard(name)
        if not self.first_pass and not self.ready_sent and not self.stopping:   # a pass cut short at shutdown
            self._send_ready()

    def _send_ready(self) -> None:
        self.ready_sent = True
        self.notifier.ready(self.summary())
        self.log.info("controller.ready", summary=self.summary())
        if self.opts.test_after:   # --test / --all: the suite once, after the first pass
            self._tests = asyncio.create_task(self._run_tests_once())

    async def _run_tests_once(self) -> None:
        from mcp_reconcile.testcmd import run_tests_async

        try:
            await run_tests_async(self.opts, self.state, dict(self.desired), ledger=self.ledger, holding_lock=True)
        except Exception as exc:  # the suite must never take the controller down
            self.log.exception("test.crashed", error=str(exc))

    # housekeeping -------------------------------------------------------------------------------
    def summary(self) -> str:
        phases = [self.ledger.get(n).get("phase", "Pending") for n in self.ledger.names()]
        ready = sum(1 for n in self.ledger.names() if is_ready(self.ledger.get(n)))
        failing = sum(1 for p in phases if p in ("Failed", "CrashLoopBackOff", "Degraded"))
        return f"{len(phases)} servers: {ready} ready, {failing} failing"

    async def _worker(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.reconcile(name)
            except Exception as exc:  # one server's bug must not kill the controller
                self.log.exception("reconcile.crashed", server=name, error=str(exc))
                try:
                    self._failed(name, str(exc))
                except Exception:
                    self.queue.add(name, after_s=DEPENDENCY_WAIT_S)
            finally:
                self.queue.done(name)
                self._first_pass_done(name)

    async def _every(self, interval_s: float, fn: Any) -> None:
        while True:
            await self.clock.sleep(interval_s)
            try:
                fn()
            except Exception as exc:  # a timer must outlive one bad round
                self.log.exception("timer.failed", timer=getattr(fn, "__name__", str(fn)), error=str(exc))

    def _resync(self) -> None:
        self.reload("resync")
        for name in set(self.desired) | self.state.known_servers():
            self.queue.add(name)

    def _report(self) -> None:
        servers = {n: {k: self.ledger.get(n).get(k) for k in ("phase", "message", "conditions", "last_probe",
                                                               "restarts", "backoff_delay_s")}
                   for n in self.ledger.names()}
        write_health_report(self.state, servers)
        self.ledger.save()  # last_probe in `status` is at most REPORT_INTERVAL_S old
        self.notifier.status(self.summary())

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.exits = ExitWatcher(loop, self.on_runner_exit)
        self.health = HealthMonitor(self.clock, self.on_probe)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.reload("startup")
        names = set(self.desired) | self.state.known_servers()
        self.first_pass = set(names)   # a held server's first pass is its first look, like any other
        self.log.info("controller.started", servers=len(self.desired), known=len(names), pid=os.getpid())
        for name in sorted(names):
            self.queue.add(name)
        watcher = ManifestWatcher([Path(p) for p in self.opts.manifest_paths() if Path(p).exists()],
                                  self.on_manifests_changed, loop=loop)
        watcher.start()
        await self.alerts.start()
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self.opts.max_parallel_starts))]
        timers = [asyncio.create_task(self._every(self.opts.resync_interval_s, self._resync)),
                  asyncio.create_task(self._every(REPORT_INTERVAL_S, self._report))]
        wd = self.notifier.watchdog_interval_s()
        if wd:
            timers.append(asyncio.create_task(self._every(wd, self.notifier.watchdog)))
        if not self.first_pass:   # nothing to look at: ready at once
            self._send_ready()
        try:
            if self.opts.monitor_duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.opts.monitor_duration_s)
            else:
                await self._stop.wait()
        finally:
            await self._shut_down(watcher, workers, timers)
        return render.EXIT_OK

    async def _shut_down(self, watcher: ManifestWatcher, workers: list[asyncio.Task[None]],
                         timers: list[asyncio.Task[None]]) -> None:
        """Stop watching and probing, let passes in progress finish within a grace, and leave: every wait here
        is bounded, so SIGTERM or the end of --monitor-duration ends the process promptly. Runners live on."""
        started = self.clock.now()
        self.stopping = True
        self.notifier.stopping()
        self.log.info("controller.stopping", summary=self.summary())
        watcher.stop()
        self.queue.shutdown()
        background = [*timers, *([self._tests] if self._tests else [])]
        for t in background:
            t.cancel()
        unfinished = await self.health.aclose()
        _, passes = await asyncio.wait(workers, timeout=SHUTDOWN_PASS_GRACE_S) if workers else (set(), set())
        for t in passes:
            t.cancel()
        unfinished += await _cancelled(background + list(passes), timeout_s=SHUTDOWN_CANCEL_TIMEOUT_S)
        self.exits.close()
        if self.effects.spawner is not None:
            self.effects.spawner.close()
        for name in self.last_good:   # nobody supervises them once this process is gone: `status` must say so
            self.ledger.update(name, last_good_spec=False)
        self._report()
        self.ledger.save()
        await self.alerts.aclose()
        self.log.info("controller.stopped", duration_s=round(self.clock.now() - started, 3),
                      passes_cut_short=len(passes), unfinished=sorted(unfinished))


async def _cancelled(tasks: list[asyncio.Task[Any]], *, timeout_s: float) -> list[str]:
    """Wait (bounded) for tasks that were told to end; the names of those still running then."""
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    return sorted(t.get_name() for t in pending)


def run_controller(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    with state.locked():
        events.configure(state.events_file, stderr="json" if not sys.stderr.isatty() else "console")
        return asyncio.run(Controller(opts, state).run())
