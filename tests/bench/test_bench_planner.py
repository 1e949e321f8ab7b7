"""Planner (SPEC §13): a no-op pass over 50 converged servers, in-process and as the `plan` CLI.

"Converged" is faked without starting 50 servers: each server gets an install record, a ledger entry
and a run record whose runner is a live `sleep` process we spawn, with its real pid, create_time and
command line, so observation verifies all 50 through psutil exactly as it does for real runners.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import benchlib
import psutil
import pytest

from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import INSTALL_FIELDS, RUNTIME_FIELDS, Origin, ServerSpec
from mcp_reconcile.observe import observe
from mcp_reconcile.plan import plan
from mcp_reconcile.store import InstallRecord, RunRecord, StateDir

pytestmark = pytest.mark.bench

SERVERS = 50
IN_PROCESS_RUNS = 30
CLI_RUNS = 5
SLEEP_S = "600"   # the fake runners' lifetime; the fixture kills them long before


def _digests(spec: ServerSpec, fields: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in spec.digests.items() if any(k == f or k.startswith(f + ".") for f in fields)}


def _doc(index: int) -> dict[str, object]:
    return benchlib.server_doc(
        f"srv-{index:02d}", {"npm": benchlib.EVERYTHING_NPM}, args=["stdio"],
        env={"TZ": "UTC", "INDEX": str(index)}, health={"intervalSeconds": 5},
        tests={"gate": True, "calls": [{"tool": "echo", "arguments": {"message": "hi"}, "expect": {"contains": "hi"}}]})


def _fake_converged(state: StateDir, spec: ServerSpec, runner: psutil.Process, ledger: Ledger) -> None:
    name = spec.name
    state.write_install(InstallRecord(
        server=name, source=str(spec.source), resolved_version="2026.8.31", installer="npm",
        command=[str(state.install_dir(name) / "node_modules" / ".bin" / "mcp-server-everything")],
        dir=str(state.install_dir(name)), generation=spec.install_generation,
        digests=_digests(spec, INSTALL_FIELDS), installed_at=time.time()))
    state.write_run(RunRecord(
        server=name, runner_pid=runner.pid, runner_create_time=runner.create_time(),
        runner_cmdline=runner.cmdline(), server_pid=None, server_pgid=None,
        endpoint=f"http://127.0.0.1:{40000 + runner.pid % 20000}/mcp", port=None, era="handshake",
        protocol_version="2025-06-18", generation=spec.runtime_generation,
        digests=_digests(spec, RUNTIME_FIELDS), started_at=time.time(), state="running", exit=None))
    ledger.update(name, file=spec.origin.file, generation=spec.generation,
                  runtime_generation=spec.runtime_generation, runtime_digests=_digests(spec, RUNTIME_FIELDS),
                  tested_generation=spec.runtime_generation, test_passed=True, healthy=True,
                  consecutive_probe_failures=0, restarts=0, phase="Running", message="")


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StateDir, Path, dict[str, ServerSpec]]]:
    """50 servers declared, installed, 'running' (live sleep processes as runners), tested and healthy."""
    root = tmp_path_factory.mktemp("planner")
    state = StateDir(root / "state").ensure()
    manifests = root / "manifests"
    key = state.hmac_key()
    sleepers = [subprocess.Popen(["sleep", SLEEP_S], env=benchlib.bench_env(), stdin=subprocess.DEVNULL)
                for _ in range(SERVERS)]
    try:
        ledger = Ledger(state)
        specs: dict[str, ServerSpec] = {}
        for index, sleeper in enumerate(sleepers):
            doc = _doc(index)
            path = benchlib.write_doc(manifests, doc)
            spec = build_spec(doc, origin=Origin(str(path), 0), environ={}, key=key)
            _fake_converged(state, spec, psutil.Process(sleeper.pid), ledger)
            specs[spec.name] = spec
        ledger.save()
        yield state, manifests, specs
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        for sleeper in sleepers:
            sleeper.wait()


def _records(state: StateDir) -> list[Path]:
    return [*sorted((state.root / "installs").glob("*/install.json")), *sorted((state.root / "run").glob("*.json")),
            state.state_file]


def test_observe_and_plan_of_50_converged_servers_in_process(converged) -> None:
    state, _, specs = converged
    result = plan(specs, observe(state, specs), now=time.monotonic())
    assert not result.has_changes, [f"{a.kind.value} {a.server}: {a.reason}" for a in result.actions]

    passes = benchlib.timed(lambda: plan(specs, observe(state, specs), now=time.monotonic()), runs=IN_PROCESS_RUNS)
    ledger_loads = benchlib.timed(lambda: Ledger(state), runs=IN_PROCESS_RUNS)
    paths = _records(state)
    parses = benchlib.timed(lambda: [json.loads(p.read_bytes()) for p in paths], runs=IN_PROCESS_RUNS)
    figure, baseline = benchlib.median(passes), benchlib.median(parses)
    benchlib.emit(benchlib.Block(
        what=f"planner: no-op observe+plan, {SERVERS} converged servers, in-process",
        figure=f"{benchlib.fmt_s(figure)} median of {IN_PROCESS_RUNS} (p90 "
               f"{benchlib.fmt_s(benchlib.percentile(passes, 90))})",
        baseline=f"{benchlib.fmt_s(baseline)} read + json.loads of the same {len(paths)} record files",
        ratio=benchlib.times(figure, baseline),
        target=f"< 20 ms: {benchlib.verdict(figure < 0.020)}",
        notes=[f"of which state.json load + schema check (Ledger): {benchlib.fmt_s(benchlib.median(ledger_loads))}",
               f"observe checks {SERVERS} runner identities through psutil (pid, create_time, cmdline)"]))


def test_plan_cli_end_to_end_on_50_converged_servers(converged) -> None:
    state, manifests, _ = converged
    args = ("plan", "-f", str(manifests), "--state-dir", str(state.root), "--detailed-exitcode")
    first = benchlib.cli(*args)
    assert first.code == 0 and "No changes" in first.out, first.describe()

    runs, floors = [], []
    for _ in range(CLI_RUNS):   # interleaved, so both see the same load on the box
        runs.append(benchlib.cli(*args).wall_s)
        floors.append(benchlib.python_pass_s())
    figure, baseline = benchlib.median(runs), benchlib.median(floors)
    benchlib.emit(benchlib.Block(
        what=f"planner: `mcp-reconcile plan` CLI end to end, {SERVERS} converged servers",
        figure=f"{benchlib.fmt_s(figure)} median of {CLI_RUNS} (min {benchlib.fmt_s(min(runs))})",
        baseline=f"{benchlib.fmt_s(baseline)} bare `python -c pass`",
        ratio=f"{benchlib.times(figure, baseline)} (CLI cost above the interpreter: "
              f"{benchlib.fmt_s(figure - baseline)})",
        target=f"< 0.5 s: {benchlib.verdict(figure < 0.5)}"))
