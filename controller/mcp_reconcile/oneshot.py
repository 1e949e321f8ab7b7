"""`mcp-reconcile apply` (and bare `mcp-reconcile`): one reconcile pass, then exit; and `stop-all`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from mcp_reconcile import diagnose, events, handover, install, render
from mcp_reconcile.apply import Limits, Outcome, apply_plan
from mcp_reconcile.clientsync import sync_clients
from mcp_reconcile.desired import load_desired
from mcp_reconcile.effects import HostEffects
from mcp_reconcile.errors import StoreError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import ActionKind, DesiredState, Observed, Plan, referenced_vars
from mcp_reconcile.observe import observe
from mcp_reconcile.plan import plan
from mcp_reconcile.readiness import record_outcomes, refresh_status
from mcp_reconcile.reports import write_installation_report
from mcp_reconcile.settings import Options
from mcp_reconcile.spawner import RunnerSpawner
from mcp_reconcile.store import StateDir


def installs_only(the_plan: Plan, observed: Observed) -> Plan:
    """`--install`: installs, and upgrades of servers that are not running (an upgrade under a running
    server needs the restart that --install does not do; a full apply does both)."""
    return Plan(tuple(a for a in the_plan.actions if a.kind is ActionKind.install or (
        a.kind is ActionKind.upgrade and not observed.get(a.server).running)))


def _say(line: str) -> None:
    print(line, flush=True)


def print_outcome(outcome: Outcome) -> None:
    outcome = replace(outcome, detail=events.REDACTOR.scrub(outcome.detail),
                      error=events.REDACTOR.scrub(outcome.error))
    a = outcome.action
    if outcome.ok:
        _say(f"  ok     {a.kind.value:<9} {a.server}: {outcome.detail} ({outcome.duration_s:.1f}s)")
    elif outcome.skipped:
        _say(f"  skip   {a.kind.value:<9} {a.server}: {outcome.error}")
    else:
        _say(f"  FAILED {a.kind.value:<9} {a.server}: {diagnose.strip_name(a.server, outcome.error or '')}")


@contextlib.contextmanager
def progress(the_plan: Plan, effects: HostEffects) -> Iterator[tuple[Any, Callable[[Outcome], None]]]:
    """(effects that report their starts, the outcome callback): a live view of what is in flight on a TTY,
    one line per action start and end off it (progress.py)."""
    from mcp_reconcile.progress import ApplyProgress

    with ApplyProgress(the_plan.actions, live=sys.stdout.isatty(), report=print_outcome, say=_say) as view:
        yield view.tracked(effects), view.on_outcome


def apply_once(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    with state.locked():
        return asyncio.run(_apply(opts, state))


def check_prerequisites(specs: dict, *, force: bool) -> tuple[dict[str, str], list[str]]:  # type: ignore[type-arg]
    """Servers that must not be acted on because something they need is missing (-> why), and the messages."""
    blocked: dict[str, str] = {}
    messages: list[str] = []
    for spec in specs.values():
        if spec.desired_state is DesiredState.absent:
            continue
        for problem in install.check_prerequisites(spec):
            messages.append(str(problem))
            events.get_logger().error("prerequisite.missing", server=spec.name, missing=problem.missing,
                                      hint=problem.hint)
            if not force:
                blocked[spec.name] = "; ".join(filter(None, (blocked.get(spec.name), str(problem))))
    return blocked, messages


async def _apply(opts: Options, state: StateDir) -> int:
    ledger = Ledger(state)
    desired = load_desired(opts.manifest_paths(), state, create_key=True, ledger=ledger)
    events.configure(state.events_file, secrets=desired.load.secret_values(), stderr=None)
    log = events.get_logger()
    for p in desired.load.problems:
        log.error("manifest.rejected", file=p.file, document=p.doc_index, path=p.json_path, error=p.reason)
    for w in desired.load.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if desired.load.problems:
        print(render.problems_text(desired.load.problems), file=sys.stderr)
    specs = desired.load.by_name
    protected = set(desired.protected)
    prereq_failed: dict[str, str] = {}
    if not opts.skip_prerequisites:
        prereq_failed, messages = check_prerequisites(specs, force=opts.force)
        for m in messages:
            print(f"error: {m}" if not opts.force else f"warning: {m} (continuing: --force)", file=sys.stderr)
        protected |= set(prereq_failed)

    observed = observe(state, specs, ledger=ledger)
    the_plan = plan(specs, observed, now=time.monotonic(), protected=protected)
    if opts.install_only:
        the_plan = installs_only(the_plan, observed)
    _say(render.plan_text(the_plan))
    log.info("plan.computed", actions=len(the_plan.actions), summary=render.summary_line(the_plan))
    outcomes: list[Outcome] = []
    # prerequisites were checked above for every server (or skipped on purpose): installs need not repeat it
    effects = HostEffects(state, ledger, check_prerequisites=False,
                          continue_past_failed_tests=opts.force,
                          withheld_env=referenced_vars(specs.values()) | desired.load.referenced_vars,
                          reserved_ports={s.port for s in specs.values() if s.port},
                          spawner=RunnerSpawner(state.root))
    if the_plan.has_changes:
        _say("")
        _say("Applying:")
        limits = Limits(installs=opts.max_parallel_installs, starts=opts.max_parallel_starts)
        try:
            with progress(the_plan, effects) as (tracked, on_outcome):
                outcomes = await apply_plan(the_plan, specs, tracked, limits=limits, on_outcome=on_outcome)
        finally:
            effects.spawner.close()   # the runners it forked live on in sessions of their own
            record_outcomes(ledger, outcomes)
            ledger.save()
            write_installation_report(state, outcomes, specs=specs, blocked=prereq_failed)
    elif prereq_failed:
        write_installation_report(state, outcomes, specs=specs, blocked=prereq_failed)
    await refresh_status(state, ledger, specs, probe=True)
    ledger.save()
    client_failures = [] if opts.install_only else sync_clients(desired, state, opts.manifest_paths(), log, say=_say)
    for failure in client_failures:
        print(f"error: {failure}", file=sys.stderr)
    failed = [o for o in outcomes if not o.ok]
    done = len(outcomes) - len(failed)
    _say("")
    _say(f"Apply complete: {done} action(s) done, {len(failed)} failed." if outcomes else "Nothing to apply.")
    exit_code = render.EXIT_ERROR if failed or desired.load.problems or prereq_failed or client_failures \
        else render.EXIT_OK
    if opts.test_after:
        from mcp_reconcile.testcmd import run_tests_async

        exit_code = max(exit_code, await run_tests_async(opts, state, specs, ledger=ledger, holding_lock=True,
                                                         withheld=desired.load.referenced_vars))
        ledger.save()
    return exit_code


def stop_all(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    if not state.root.exists() and state.root.parent.is_dir():   # a typo must not create one and succeed
        raise StoreError(f"{state.root}: no such state dir, so no runners to stop (check --state-dir or "
                         "$MCP_RECONCILE_STATE_DIR)")
    with state.locked():
        return asyncio.run(_stop_all(state))


async def _stop_all(state: StateDir) -> int:
    ledger = Ledger(state)
    events.configure(state.events_file, stderr=None)
    effects = HostEffects(state, ledger)
    names = sorted(p.stem for p in (state.root / "run").glob("*.json"))
    results = await asyncio.gather(*(effects.stop(n) for n in names), return_exceptions=True)
    code = render.EXIT_OK
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            _say(f"  FAILED stop {name}: {result}")
            code = render.EXIT_ERROR
        else:
            ledger.update(name, phase="Stopped", message="stopped by stop-all", healthy=None, stopped=True)
            events.get_logger().info("server.stopped", server=name, reason="stop-all")
            _say(f"  ok     stop {name}: {result}")
    ledger.save()
    for name in sorted(state.known_servers() - set(names)):   # a crashed server's endpoint a keeper still holds
        if await asyncio.to_thread(handover.release_keeper, str(state.root), name):
            _say(f"  ok     stop {name}: its endpoint, held since a crash, let go")
    _say(f"Stopped {len(names)} runner(s); installs kept." if names else "No runners to stop.")
    return code
