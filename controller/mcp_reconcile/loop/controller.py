"""`mcp-reconcile run`: the long-running, level-triggered controller.

Manifest edits (watchdog), runner exits (pidfd), probe results and the resync timer only enqueue server
names; workers take one name at a time from a de-duplicating queue and run a full per-server pass:
observe -> plan -> apply -> record status, which returns what happens next (`Done` or `RequeueAfter`,
loop/result.py) for the worker to apply to the queue. A per-server pass never waits for another server, so
a crashing server never delays the others; its restarts are delayed by CrashLoopBackOff instead. The clock,
the effects, the exit watcher and the probe loops are injected (loop/seams.py): tests run passes on a
FakeClock with recording effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mcp_reconcile import events, render
from mcp_reconcile.alerts import AlertGate, AlertSink, announce_transition, make_alert
from mcp_reconcile.apply import Limits, apply_plan
from mcp_reconcile.clientsync import sync_clients
from mcp_reconcile.desired import load_desired
from mcp_reconcile.effects import HostEffects
from mcp_reconcile.ledger import Ledger, is_ready
from mcp_reconcile.loop import ending, gating, lastgood
from mcp_reconcile.loop.backoff import JITTER
from mcp_reconcile.loop.clock import Clock, SystemClock, wall_now
from mcp_reconcile.loop.exits import ExitWatcher
from mcp_reconcile.loop.health import HealthMonitor
from mcp_reconcile.loop.queue import QueueShutDown, WorkQueue
from mcp_reconcile.loop.restarts import Restarts
from mcp_reconcile.loop.result import AGAIN, DONE, PassResult, RequeueAfter, soonest
from mcp_reconcile.loop.retries import judge, without_retries
from mcp_reconcile.loop.seams import ExitWatch, LoopEffects, ProbeLoops
from mcp_reconcile.loop.watch import ManifestWatcher
from mcp_reconcile.model import (
    BackoffSpec,
    DesiredState,
    Observed,
    RestartPolicy,
    ServerSpec,
    referenced_vars,
)
from mcp_reconcile.observe import observe_server, with_memory
from mcp_reconcile.plan import plan
from mcp_reconcile.readiness import record_outcomes, record_status
from mcp_reconcile.reports import write_health_report
from mcp_reconcile.settings import Options
from mcp_reconcile.slots import Slots
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
    def __init__(self, opts: Options, state: StateDir, *, clock: Clock | None = None,
                 effects: LoopEffects | None = None, exits: ExitWatch | None = None,
                 health: ProbeLoops | None = None, backoff_jitter: float = JITTER) -> None:
        self.opts = opts
        self.state = state
        self.clock = clock or SystemClock()
        self.ledger = Ledger(state)
        self.queue = WorkQueue(self.clock)
        # read (and drop) $NOTIFY_SOCKET before the runners' environment is captured: they must not inherit it
        self.notifier = Notifier(unset_environment=True)
        self.effects: LoopEffects = effects or HostEffects(
            state, self.ledger, check_prerequisites=not (opts.force or opts.skip_prerequisites),
            continue_past_failed_tests=opts.force, install_slots=Slots(opts.max_parallel_installs),
            spawner=RunnerSpawner(state.root))
        # the pidfd watcher and the probe loops need the running event loop: run() builds them unless injected
        self._injected = (exits, health)
        if exits is not None:
            self.exits: ExitWatch = exits
        if health is not None:
            self.health: ProbeLoops = health
        self.desired: dict[str, ServerSpec] = {}
        self.held: dict[str, str] = {}   # servers with no usable spec, left as they are -> why
        self.last_good: dict[str, str] = {}   # servers supervised on their last good spec -> why (broken file)
        self.restarts = Restarts(self.clock, jitter=backoff_jitter)   # CrashLoopBackOff, per server
        self.parked: dict[str, str] = {}   # server -> the generation a permanent failure parked (loop/retries.py)
        self.missing_since: dict[str, float] = {}
        self.removal_due: dict[str, float] = {}   # vanished servers -> when (clock) their removal grace ends
        self.removed_specs: dict[str, ServerSpec] = {}   # servers whose manifest vanished, since when (clock)
        self.alerts = AlertSink(opts.webhook_url)
        self.alert_gate = AlertGate()
        self.log = events.get_logger()
        self.first_pass: set[str] = set()
        self.ready_sent = False
        self._stop = asyncio.Event()
        self.stopping = False
        self._tests: asyncio.Task[None] | None = None   # --test / --all: the suite, run once in the background
        self.failed: dict[str, str] = {}   # server -> its last failed action (the exit code of --all, --monitor)
        self.had_problems = False          # a manifest was rejected at some point
        self.test_code: int | None = None  # the suite's exit code (--test / --all)

    # desired state ------------------------------------------------------------------------------
    def reload(self, reason: str) -> set[str]:
        """Reload every manifest and merge it into what is supervised (loop/lastgood.py: last good specs of
        broken files, the removal grace). Returns the names whose desired state changed (new, changed, removed).
        """
        desired = load_desired(self.opts.manifest_paths(), self.state, create_key=True, ledger=self.ledger)
        events.REDACTOR.add(desired.load.secret_values())
        self.had_problems |= bool(desired.load.problems)
        for p in desired.load.problems:
            self.log.error("manifest.rejected", file=p.file, document=p.doc_index, path=p.json_path,
                           error=p.reason, reason=reason)
        m = lastgood.merge(self.desired, desired, missing_since=self.missing_since, now=self.clock.now(),
                           grace_s=REMOVAL_GRACE_S)
        self.held, self.last_good, self.missing_since, self.removal_due = (m.held, m.last_good, m.missing_since,
                                                                           m.removal_due)
        # specs of removed servers, until they are gone: their dependsOn still orders their stops
        self.removed_specs.update(m.removed)
        for name in m.desired:
            self.removed_specs.pop(name, None)
        self.desired = m.desired
        self.effects.withheld_env = referenced_vars(m.desired.values()) | desired.load.referenced_vars
        sync_clients(desired, self.state, self.opts.manifest_paths(), self.log)   # MCPClient files (clientsync.py)
        self.effects.reserved_ports = {s.port for s in m.desired.values() if s.port}
        if m.changed:
            self.log.info("manifest.loaded", servers=len(m.desired), changed=sorted(m.changed), reason=reason)
        return m.changed

    def on_manifests_changed(self, paths: set[Path]) -> None:
        for name in self.reload(f"{len(paths)} file(s) changed" if paths else "removal grace over"):
            if self.restarts.reset(name):   # an edit cuts a crash-loop wait short, and ends the incident
                self.alert_gate.reset(name)
            self.queue.add(name)
        for name, due in self.removal_due.items():   # a vanished server's pass at the end of its grace reloads
            self.queue.add(name, after_s=max(0.0, due - self.clock.now()))

    # events from the world ----------------------------------------------------------------------
    def on_runner_exit(self, name: str) -> None:
        self.health.forget(name)
        self.log.info("runner.exited", server=name)
        self.queue.add(name)

    def on_probe(self, name: str, result: Any) -> None:
        entry = self.ledger.get(name)
        was_healthy = entry.get("healthy")
        failures = self.ledger.record_probe(name, ok=result.ok, latency_ms=result.latency_ms, error=result.error,
                                            era=result.era)
        spec = self.desired.get(name)
        if result.ok:
            if self.restarts.healthy(name, self._backoff_spec(name)) and self.alert_gate.settled(name):
                self.alerts.notify(make_alert("recovered", name, phase=entry.get("phase") or "Running",
                                              message="healthy since its last crash, restart backoff reset"))
        else:
            self.log.warning("probe.failed", server=name, error=result.error, failures=failures)
        threshold = spec.health.failure_threshold if spec else 3
        if was_healthy != result.ok or failures >= threshold:
            self.queue.add(name)

    # the per-server pass ------------------------------------------------------------------------
    def _backoff_spec(self, name: str) -> BackoffSpec:
        spec = self.desired.get(name)
        return spec.restart_backoff if spec else BackoffSpec()

    def _observe(self, name: str, records: Any = None) -> Any:
        """Records (read now unless given) + what the ledger remembers + the backoff in memory."""
        obs = with_memory(records or observe_server(self.state, name), self.ledger.get(name))
        return replace(obs, backoff_until=self.restarts.until(name))

    async def reconcile(self, name: str) -> PassResult:
        """One level-based pass over `name`: observe, plan, apply, record status; returns when to come back."""
        due = self.removal_due.get(name)
        if due is not None and self.clock.now() >= due:   # its removal grace is over: the reload removes it
            self.on_manifests_changed(set())               # (and requeues it) unless its manifest came back
            return DONE
        spec = self.desired.get(name)
        previous = self.ledger.get(name).get("phase")   # before an uninstall forgets it
        if name in self.held:
            return await self._hold(name, self.held[name])
        nexts: list[PassResult] = [RequeueAfter(due - self.clock.now())] if due is not None else []
        fresh = observe_server(self.state, name)   # the records alone: an exit not counted yet is still there
        if fresh.last_exit_code is not None or fresh.stale_run_record:
            nexts.append(await self._note_exit(name, fresh))
            fresh = observe_server(self.state, name)
        obs = self._observe(name, fresh)
        desired = {name: spec} if spec else {}
        the_plan = plan(desired, Observed(MappingProxyType({name: obs})), now=self.clock.now())
        if spec and self.parked.get(name) == spec.generation:   # not retried until the spec changes
            the_plan = without_retries(the_plan)
        nexts += [RequeueAfter(max(0.0, d.until - self.clock.now())) for d in the_plan.deferred]
        gated = gating.gate(name, the_plan, self.desired, {**self.removed_specs, **self.desired},
                            is_ready=lambda n: is_ready(self.ledger.get(n)),
                            is_running=lambda n: observe_server(self.state, n).running)
        the_plan = gated.plan
        if gated.waiting_for:
            self.log.info("server.waiting", server=name, reason=f"dependencies not Ready: {list(gated.waiting_for)}")
        if gated.stop_first:   # dependsOn: stopped before what they depend on
            self.log.info("server.waiting", server=name, reason=f"dependents stop first: {list(gated.stop_first)}")
            for other in gated.stop_first:
                self.queue.add(other)
        if gated.held_back:
            nexts.append(RequeueAfter(DEPENDENCY_WAIT_S))
        if the_plan.actions:
            self.log.info("plan.computed", server=name, summary=render.summary_line(the_plan),
                          actions=[f"{a.kind.value}: {a.reason}" for a in the_plan.actions])
            ran_before = bool(self.ledger.get(name).get("last_exit"))   # (a start clears it)
            outcomes = await apply_plan(the_plan, desired, self.effects, limits=Limits(1, 1, 1))
            record_outcomes(self.ledger, outcomes)
            for o in (o for o in outcomes if not o.ok and not o.skipped):
                self.failed[name] = o.error or "failed"
            verdict = judge(outcomes, ran_before=ran_before)
            for reason in verdict.restarts:
                self._count_restart(name, reason)
            if verdict.permanent and spec:
                self.parked[name] = spec.generation
                self.log.error("server.failed", server=name, error=verdict.permanent,
                               reason="permanent: not retried until its spec changes")
            elif verdict.retry:
                nexts.append(self._failed(name, verdict.retry))
        nexts.append(self._after_pass(name, spec, previous))
        return soonest(nexts)

    async def _clear_exit(self, name: str, obs: Any) -> str:
        """A runner that exited (or vanished): reap what is left, clear its record, remember the exit in the
        ledger (for the restart policy); returns the reason."""
        reason = obs.stale_reason or f"exit code {obs.last_exit_code}"
        self.health.forget(name)
        self.effects.forget_child(name)   # reap our own runner now, not at some later Popen
        await asyncio.to_thread(self.effects.reap_leftovers, name)
        self.state.remove_run(name)
        self.ledger.record_exit(name, code=obs.last_exit_code, reason=reason)
        return reason

    async def _note_exit(self, name: str, obs: Any) -> PassResult:
        """A runner that exited (or vanished): clear it, grow the backoff (its wait is the result)."""
        reason = await self._clear_exit(name, obs)
        spec = self.desired.get(name)
        if not (spec and spec.desired_state is DesiredState.running):
            return DONE
        code = obs.last_exit_code
        if code and (spec.restart_policy is RestartPolicy.Never):
            self.ledger.update(name, failed_reason=f"exited with code {code} (restartPolicy Never)")
        return self._failed(name, f"server exited ({reason})")

    async def _hold(self, name: str, why: str) -> PassResult:
        """A server known from an earlier run whose manifest is broken now, so there is no spec to restart it
        with: leave it as it is, notice its exit, and say so in status until the manifest is fixed."""
        obs = observe_server(self.state, name)
        if obs.last_exit_code is not None or obs.stale_run_record:
            reason = await self._clear_exit(name, obs)
            self.log.error("server.exited_unsupervised", server=name, reason=reason, error=why)
            obs = observe_server(self.state, name)
        run = self.state.read_run(name) if obs.running else None
        exited_meanwhile = bool(run and run.get("runner_pid") and not self.exits.watch(name, run["runner_pid"]))
        self.ledger.update(name, last_good_spec=False)
        previous = self.ledger.get(name).get("phase")
        entry = record_status(self.ledger, None, self._observe(name, obs), now=wall_now(), held=why, announce=False)
        if entry.get("phase") != previous:   # its crash is critical: nothing restarts it until the file is fixed
            self._announce(name, previous, entry["phase"], entry.get("message", ""))
        self.ledger.save()
        return AGAIN if exited_meanwhile else DONE   # (it exited between observing and watching)

    def _count_restart(self, name: str, reason: str) -> None:
        restarts = int(self.ledger.get(name).get("restarts", 0)) + 1
        self.ledger.update(name, restarts=restarts)
        self.log.warning("server.restarting", server=name, restarts=restarts, reason=reason)

    def _failed(self, name: str, error: str) -> RequeueAfter:
        """One more failure: grow the backoff; the result is its wait (0 for the first crash)."""
        f = self.restarts.failed(name, self._backoff_spec(name))
        self.ledger.update(name, in_crash_loop=f.crash_loop, backoff_delay_s=round(f.delay_s, 3))
        self.log.warning("server.backoff", server=name, delay_s=round(f.delay_s, 3), failures=f.failures,
                         crash_loop=f.crash_loop, error=error)
        return RequeueAfter(f.delay_s)

    def _after_pass(self, name: str, spec: ServerSpec | None, previous: str | None) -> PassResult:
        """Watch and probe what runs now, record status and announce a transition; returns when to look again."""
        result: PassResult = DONE
        obs = self._observe(name)
        if self.restarts.failures(name) and obs.running and obs.healthy:
            self.ledger.update(name, in_crash_loop=False)
        if obs.running and spec:
            run = self.state.read_run(name) or {}
            if run.get("runner_pid") and not self.exits.watch(name, run["runner_pid"]):
                result = AGAIN   # it exited between observing and watching
            if obs.endpoint:   # one probe loop per server process: a new runner, or a generation swapped in
                # by the same runner (a new server pid), gets a new loop whose first probe runs at once
                self.health.ensure(name, obs.endpoint, runner=(run.get("runner_pid"), run.get("runner_create_time"),
                                                              run.get("server_pid")),
                                   interval_s=spec.health.interval_s, timeout_s=spec.health.timeout_s,
                                   token=spec.endpoint_token)
            else:   # a re-adopted runner still starting: its endpoint comes soon, its runner exit wakes us too
                result = soonest([result, RequeueAfter(STARTING_RECHECK_S)])
        elif not obs.running:
            self.health.forget(name)
            self.exits.forget(name)
            if self.state.run_record_path(name).exists():
                result = AGAIN   # it exited during this pass: count the exit in a pass of its own
        if spec is None and not obs.installed and not obs.running:   # removed: one last transition, then forgotten
            if previous is not None:   # (a later wake for it, its runner's exit say, finds nothing to announce)
                self._announce(name, previous, "Stopped", "removed from manifests")
            self.ledger.forget(name)
            self.removed_specs.pop(name, None)
            self.ledger.save()
            return result
        # `status` (another process, without this spec) shows what is recorded here while this flag is set
        self.ledger.update(name, last_good_spec=name in self.last_good)
        entry = record_status(self.ledger, spec, obs, now=wall_now(), held=self.last_good.get(name),
                              announce=False)
        if entry.get("phase") != previous:
            self._announce(name, previous, entry["phase"], entry.get("message", ""))
            if entry["phase"] == "Running":   # dependents may be waiting for this one
                for other in self.desired.values():
                    if name in other.depends_on:
                        self.queue.add(other.name)
        self.ledger.save()
        return result

    def _announce(self, name: str, previous: str | None, phase: str, message: str) -> None:
        """One event per phase transition, with its alert (SPEC §11) posted as a side effect."""
        settled = not self.restarts.failures(name)
        announce_transition(self.alerts, self.alert_gate, name, previous=previous, phase=phase, message=message,
                            settled=settled)

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
            self.test_code = await run_tests_async(self.opts, self.state, dict(self.desired), ledger=self.ledger,
                                                   holding_lock=True, withheld=self.effects.withheld_env)
        except Exception as exc:  # the suite must never take the controller down
            self.log.exception("test.crashed", error=str(exc))

    # housekeeping -------------------------------------------------------------------------------
    def summary(self) -> str:
        phases = [self.ledger.get(n).get("phase", "Pending") for n in self.ledger.names()]
        ready = sum(1 for n in self.ledger.names() if is_ready(self.ledger.get(n)))
        failing = sum(1 for p in phases if p in ("Failed", "CrashLoopBackOff", "Degraded"))
        return f"{len(phases)} servers: {ready} ready, {failing} failing"

    async def run_pass(self, name: str) -> PassResult:
        """`reconcile`, with a crash of the pass treated as a failure of the server (backed off like one)."""
        try:
            return await self.reconcile(name)
        except Exception as exc:  # one server's bug must not kill the controller
            self.log.exception("reconcile.crashed", server=name, error=str(exc))
            try:
                return self._failed(name, str(exc))
            except Exception:
                return RequeueAfter(DEPENDENCY_WAIT_S)

    def schedule(self, name: str, result: PassResult | None) -> None:
        """Apply a pass's result to the queue (before `done`: a wake during the pass still wins if sooner)."""
        if isinstance(result, RequeueAfter):
            self.queue.add(name, after_s=result.seconds)

    async def _worker(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except QueueShutDown:
                return
            try:
                self.schedule(name, await self.run_pass(name))
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
        exits, health = self._injected
        self.exits = exits or ExitWatcher(loop, self.on_runner_exit)
        self.health = health or HealthMonitor(self.clock, self.on_probe)
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
        return ending.exit_code(self.opts, failed=self.failed, had_problems=self.had_problems,
                                test_code=self.test_code)

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
        unfinished += await ending.cancelled(background + list(passes), timeout_s=SHUTDOWN_CANCEL_TIMEOUT_S)
        self.exits.close()
        spawner = getattr(self.effects, "spawner", None)   # (HostEffects': recording effects have none)
        if spawner is not None:
            spawner.close()
        for name in self.last_good:   # nobody supervises them once this process is gone: `status` must say so
            self.ledger.update(name, last_good_spec=False)
        self._report()
        self.ledger.save()
        await self.alerts.aclose()
        self.log.info("controller.stopped", duration_s=round(self.clock.now() - started, 3),
                      passes_cut_short=len(passes), unfinished=sorted(unfinished))


def run_controller(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    with state.locked():
        events.configure(state.events_file, stderr="json" if not sys.stderr.isatty() else "console")
        controller = Controller(opts, state)
        code = asyncio.run(controller.run())
        print(ending.farewell(state, failed=controller.failed), flush=True)
        return code
