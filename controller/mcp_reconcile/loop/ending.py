"""How `run` ends: its exit code under the seed's flags, and what it leaves running.

`--install`, `--test`, `--monitor` and `--all` exit as `apply` does: 1 when anything failed (an action, a
manifest, the test suite), 0 otherwise; `--force` continues past failed prerequisites and gate tests, so those
do not count then. Plain `run` is a daemon: it exits 0 when told to stop. Runners outlive the controller (each
in a session of its own); when it ends, the output names them and says how to stop them.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from typing import Any

from mcp_reconcile import render
from mcp_reconcile.events import REDACTOR
from mcp_reconcile.observe import observe_server
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir


def legacy_flags(opts: Options) -> bool:
    """Started as the seed's `--monitor`, `--all` or `--test` (not as plain `run`)."""
    return opts.monitor or opts.test_after


def exit_code(opts: Options, *, failed: Mapping[str, str], had_problems: bool, test_code: int | None) -> int:
    """`apply`'s exit code for a run started with the seed's flags; 0 for plain `run`."""
    if not legacy_flags(opts):
        return render.EXIT_OK
    if failed or had_problems or (test_code or 0) != render.EXIT_OK:
        return render.EXIT_ERROR
    return render.EXIT_OK


def runners_left(state: StateDir) -> list[tuple[str, str | None]]:
    """(server, endpoint) of every runner still serving from this state dir."""
    run_dir = state.root / "run"
    names = sorted(p.stem for p in run_dir.glob("*.json")) if run_dir.is_dir() else []
    left = []
    for name in names:
        obs = observe_server(state, name)
        if obs.running:
            left.append((name, obs.endpoint))
    return left


def farewell(state: StateDir, *, failed: Mapping[str, str]) -> str:
    """What the output says when the controller ends: what failed, which runners keep running, how to stop them."""
    lines = [f"failed: {REDACTOR.scrub(why)}" for _, why in sorted(failed.items())]
    left = runners_left(state)
    if left:
        lines.append(f"Monitoring ended; {len(left)} runner(s) keep running:")
        lines += [f"  {name}  {endpoint or '(starting)'}" for name, endpoint in left]
        lines.append(f"Stop them with: mcp-reconcile stop-all --state-dir {shlex.quote(str(state.root))}")
    else:
        lines.append("Monitoring ended; no runner is left running.")
    return "\n".join(lines)


async def cancelled(tasks: list[asyncio.Task[Any]], *, timeout_s: float) -> list[str]:
    """Wait (bounded) for tasks that were told to end at shutdown; the names of those still running then."""
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    return sorted(t.get_name() for t in pending)
