"""One function per command: wire the stages together and turn the result into an exit code."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from mcp_reconcile import render
from mcp_reconcile.desired import Desired, load_desired
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.observe import observe
from mcp_reconcile.plan import plan
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir


def _print_problems(load_problems: list, warnings: list[str]) -> None:  # type: ignore[type-arg]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if load_problems:
        print(render.problems_text(load_problems), file=sys.stderr)


def cmd_validate(opts: Options) -> int:
    load = load_manifests(opts.manifest_paths())
    if opts.output == "json":
        import json

        print(json.dumps({"valid": not load.problems, "servers": sorted(load.files),
                          "problems": [render.problem_json(p) for p in load.problems],
                          "warnings": load.warnings}, indent=2))
    else:
        _print_problems(load.problems, load.warnings)
        if not load.problems:
            print(f"{len(load.specs)} server(s) valid: {', '.join(s.name for s in load.specs) or '(none)'}")
    return render.EXIT_ERROR if load.problems else render.EXIT_OK


def cmd_plan(opts: Options) -> int:
    state = StateDir(opts.state_dir)
    ledger = Ledger(state)
    desired = load_desired(opts.manifest_paths(), state, create_key=False, ledger=ledger)
    specs = desired.load.by_name
    observed = observe(state, specs, ledger=ledger)
    the_plan = plan(specs, observed, now=time.monotonic(), protected=desired.protected)
    client_lines, client_problems = _client_plan(desired, state, opts)
    if opts.output == "json":
        import json

        data = json.loads(render.plan_json(the_plan, desired.load.problems))
        if client_lines or client_problems:
            data["clients"] = {"changes": client_lines, "problems": client_problems}
        print(json.dumps(data, indent=2))
        for w in desired.load.warnings:
            print(f"warning: {w}", file=sys.stderr)
    else:
        _print_problems(desired.load.problems, desired.load.warnings)
        print(render.plan_text(the_plan))
        if client_lines:
            print("\nClient configs (MCPClient):\n" + "\n".join(f"  {line}" for line in client_lines))
    code = render.plan_exit_code(the_plan, detailed=opts.detailed_exitcode,
                                 had_errors=bool(desired.load.problems or client_problems))
    if code == render.EXIT_OK and opts.detailed_exitcode and any(line[:1] in "+~-" for line in client_lines):
        return render.EXIT_CHANGES
    return code


def _client_plan(desired: Desired, state: StateDir, opts: Options) -> tuple[list[str], list[str]]:
    """The MCPClient part of the plan: its lines and its problems (nothing imported when there is none)."""
    if not desired.load.clients and not (state.root / "mcpclients.json").exists():
        return [], []
    from mcp_reconcile import clientsync

    client_plan = clientsync.plan_clients(desired, state, manifest_paths=opts.manifest_paths(), allocate=False)
    return clientsync.plan_lines(client_plan), client_plan.problems


def cmd_import(opts: Options) -> int:
    from mcp_reconcile.importer import import_config

    return import_config(opts)


def _record_manifests(opts: Options) -> None:
    """Remember what was applied, so that `status` works from any directory (lastapplied.py)."""
    import contextlib

    from mcp_reconcile import lastapplied

    with contextlib.suppress(OSError):   # an unusable state dir: the command itself says why, naming it
        lastapplied.record(StateDir(opts.state_dir), opts.manifest_paths())


def cmd_apply(opts: Options) -> int:
    from mcp_reconcile.oneshot import apply_once

    code = apply_once(opts)
    _record_manifests(opts)
    return code


def cmd_run(opts: Options) -> int:
    _record_manifests(opts)
    if opts.metrics_port is not None:
        from mcp_reconcile.loop.metered import run_metered

        return run_metered(opts)
    from mcp_reconcile.loop.controller import run_controller

    return run_controller(opts)


def cmd_stop_all(opts: Options) -> int:
    from mcp_reconcile.oneshot import stop_all

    return stop_all(opts)


def cmd_status(opts: Options) -> int:
    from mcp_reconcile.status import show_status

    return show_status(opts)


def cmd_describe(opts: Options) -> int:
    from mcp_reconcile.describe import show_describe

    return show_describe(opts)


def cmd_events(opts: Options) -> int:
    from mcp_reconcile.eventsview import show_events

    return show_events(opts)


def cmd_logs(opts: Options) -> int:
    from mcp_reconcile.logsview import show_logs

    return show_logs(opts)


def cmd_test(opts: Options) -> int:
    from mcp_reconcile.testcmd import run_tests

    return run_tests(opts)


def cmd_render(opts: Options) -> int:
    from mcp_reconcile.kube import run_render

    return run_render(opts)


def cmd_clients(opts: Options) -> int:
    from mcp_reconcile.clients.command import run

    return run(opts)


COMMANDS: dict[str, Callable[[Options], int]] = {
    "render": cmd_render, "clients": cmd_clients,
    "validate": cmd_validate, "plan": cmd_plan, "apply": cmd_apply, "run": cmd_run, "import": cmd_import,
    "stop-all": cmd_stop_all, "status": cmd_status, "describe": cmd_describe, "events": cmd_events,
    "logs": cmd_logs, "test": cmd_test,
}


def os_error_text(exc: OSError) -> str:
    """`PATH: reason` of an OSError (`SRC -> DST: reason` for a rename), or just the reason without a path."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
    return f"{where}: {reason}"


def dispatch(opts: Options) -> int:
    from mcp_reconcile import events

    events.configure_silent()
    try:
        return COMMANDS[opts.command](opts)
    except McpReconcileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return render.EXIT_ERROR
    except OSError as exc:  # a path the command could not use: name it and the reason, never a traceback
        print(f"error: {opts.command}: {os_error_text(exc)}", file=sys.stderr)
        return render.EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
