"""`mcp-reconcile test`: the MCP test suite (mcptest) against servers from the manifests, and the
readiness gate's single-server run. Imports mcp lazily: only this command and the gate pay for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Collection, Mapping
from typing import Any

from mcp_reconcile import events, install, render
from mcp_reconcile.desired import load_desired
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import DesiredState, ServerSpec, env_without, referenced_vars
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir


async def test_one(spec: ServerSpec, state: StateDir, base_env: Mapping[str, str], *,
                   force: bool = False, via_endpoint: bool = True) -> Any:
    """Run the suite against one installed server; returns the mcptest ServerReport. `via_endpoint=False`
    tests only processes the suite starts from `spec` (a new generation, before it serves the endpoint)."""
    from mcp_reconcile.mcptest.model import SuiteOptions, Target
    from mcp_reconcile.mcptest.report import redacted
    from mcp_reconcile.mcptest.suite import run_suite

    record = state.read_install(spec.name)
    if not record:
        raise McpReconcileError(f"{spec.name}: not installed (run `mcp-reconcile apply --install` first)")
    launch = install.launch_spec(spec, record, base_env)
    if spec.token_env:   # the endpoint's token is the runner's, never the server's (as the runner does)
        launch = dataclasses.replace(launch, env={k: v for k, v in launch.env.items() if k != spec.token_env})
    run = state.read_run(spec.name) or {}
    endpoint = run.get("endpoint") if run.get("state") == "running" and via_endpoint else None
    target = Target.from_spec(spec, launch, endpoint=endpoint)
    report = redacted(await run_suite(target, SuiteOptions(force=force, log_dir=state.root / "logs" / "tests")),
                      events.REDACTOR.scrub)
    log = events.get_logger()
    for check in report.checks:
        status = getattr(check.status, "value", check.status)
        if status == "fail":
            log.warning("test.failed", server=spec.name, check=check.name, error=check.message)
    log.info("test.completed", server=spec.name, passed=report.passed, era=report.era, checks=len(report.checks))
    return report


async def run_tests_async(opts: Options, state: StateDir, specs: Mapping[str, ServerSpec], *,
                          ledger: Ledger | None = None, holding_lock: bool = False,
                          withheld: Collection[str] = ()) -> int:
    """Test the named servers (default: every server not desired absent); install missing ones first.
    `withheld`: further ${VAR}s no server inherits (those of blocked servers and unreadable manifests)."""
    from mcp_reconcile.mcptest.report import render_table, write_json_report, write_junit

    names = opts.names or sorted(n for n, s in specs.items() if s.desired_state is not DesiredState.absent)
    unknown = [n for n in names if n not in specs]
    if unknown:
        print(f"error: no manifest declares {', '.join(unknown)}", file=sys.stderr)
        return render.EXIT_ERROR
    from mcp_reconcile.mcptest.model import ServerReport

    # each server gets only its own ${VAR}s
    base_env = env_without(os.environ, referenced_vars(specs.values()) | set(withheld))
    unready: dict[str, str] = {}  # server -> why it cannot be tested; it is reported failed, the others go on
    missing = [n for n in names if not state.read_install(n)]
    if missing:
        with contextlib.nullcontext() if holding_lock else state.locked():
            for name in missing:
                print(f"installing {name} for testing ...", flush=True)
                try:
                    await install.ensure_installed(specs[name], state, env=base_env)
                except McpReconcileError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    unready[name] = str(exc)
    reports = []
    for name in names:
        if name in unready:
            reports.append(ServerReport.not_started(name, unready[name]))
            continue
        try:
            reports.append(await test_one(specs[name], state, base_env, force=opts.force))
        except McpReconcileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            reports.append(ServerReport.not_started(name, str(exc)))
    from rich.console import Console

    Console(width=160 if not sys.stdout.isatty() else None).print(render_table(reports))
    write_json_report(reports, state.reports_dir / "test_report.json")
    if opts.junit:
        write_junit(reports, opts.junit)
    if ledger is not None:
        for report in reports:
            ledger.update(report.server, test_message="all checks passed" if report.passed else "tests failed")
    failed = [r.server for r in reports if not r.passed]
    print(f"{len(reports) - len(failed)} of {len(reports)} server(s) passed"
          + (f"; failed: {', '.join(failed)}" if failed else "."))
    return render.EXIT_ERROR if failed else render.EXIT_OK


def run_tests(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    desired = load_desired(opts.manifest_paths(), state, create_key=True)
    if desired.load.problems:
        print(render.problems_text(desired.load.problems), file=sys.stderr)
    state.ensure()
    events.configure(state.events_file, secrets=desired.load.secret_values(), stderr=None)
    code = asyncio.run(run_tests_async(opts, state, desired.load.by_name, withheld=desired.load.referenced_vars))
    return max(code, render.EXIT_ERROR if desired.load.problems else render.EXIT_OK)
