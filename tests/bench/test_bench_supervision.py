"""Supervision (issue 4, SPEC §13) under `mcp-reconcile run`: crash to Ready again, manifest edit to
converged, and what the controller and its runners cost with N servers probed every 5 s.

Times are read from the state dir as `status` derives them: the run record (new server pid, state
running, generation) and state.json's Ready condition with a lastTransitionTime after the event.
The bundled `everything` runs without its gate tests here, so Ready means restarted and healthy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
import psutil
import pytest

from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.store import StateDir

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

CRASHES = 3
EDITS = 3
COLD_RUNS = 3
READY_TIMEOUT_S = 120.0
# Measurement window for CPU and memory (MCP_RECONCILE_BENCH_WINDOW_S overrides it).
WINDOW_S = float(os.environ.get("MCP_RECONCILE_BENCH_WINDOW_S", "20"))
PROBE_INTERVAL_S = 5
FLEET_SIZES = (0, 10, 25)
CORES = os.cpu_count() or 1


def _everything(env_value: str) -> dict[str, Any]:
    # resetAfterSeconds 0: the first healthy probe clears the backoff, so every crash restarts at once
    return benchlib.server_doc(
        "everything", {"npm": benchlib.EVERYTHING_NPM}, args=["stdio"], env={"BENCH_EDIT": env_value},
        restartBackoff={"initialSeconds": 1, "maxSeconds": 60, "resetAfterSeconds": 0},
        health={"intervalSeconds": 30, "timeoutSeconds": 5, "failureThreshold": 3})


@dataclass
class Supervised:
    state: Path
    manifests: Path
    controller: benchlib.RunController
    cold: list[float]   # the server's own cold starts, seconds


@pytest.fixture(scope="module")
def supervised(installed_state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    """`everything` running under `mcp-reconcile run` (time declared, installed only), after its cold starts."""
    root = tmp_path_factory.mktemp("supervision")
    manifests = benchlib.write_manifests(root / "manifests", [
        _everything("0"), benchlib.server_doc("time", {"pypi": benchlib.TIME_PYPI}, desiredState="installed")])
    argv, env = benchlib.launch_argv(installed_state, manifests, "everything")
    cold = benchlib.cold_starts(argv, env, runs=COLD_RUNS)
    controller = benchlib.RunController(manifests, installed_state, root / "controller.log")
    try:
        benchlib.wait_until(lambda: benchlib.serving(installed_state, "everything") or not controller.alive(),
                            timeout_s=READY_TIMEOUT_S, what="everything Ready under `run`")
        assert controller.alive(), controller.log_tail()
        yield Supervised(installed_state, manifests, controller, cold)
    finally:
        controller.stop()
        stopped = benchlib.stop_all(installed_state)
        assert stopped.code == 0, stopped.describe()


def _back_after(state: Path, old_pid: int, since_wall: float, generation: str | None = None) -> dict[str, Any] | None:
    """The run record once a new server pid serves and Ready turned True after `since_wall`."""
    run = benchlib.run_record(state, "everything")
    if run.get("state") != "running" or run.get("server_pid") in (None, old_pid):
        return None
    if generation is not None and run.get("generation") != generation:
        return None
    ready_at = benchlib.ready_since(benchlib.ledger_entry(state, "everything"))
    return run if ready_at is not None and ready_at >= since_wall else None


def _cold_start_s(supervised: Supervised) -> float:
    return benchlib.median(supervised.cold)


def test_a_killed_server_is_restarted_and_ready_again(supervised: Supervised) -> None:
    state = supervised.state
    durations = []
    for _ in range(CRASHES):
        old = benchlib.wait_until(lambda: benchlib.serving(state, "everything"), timeout_s=READY_TIMEOUT_S,
                                  what="everything Ready")
        since_wall, started = time.time(), time.perf_counter()
        os.kill(old["server_pid"], signal.SIGKILL)
        back = benchlib.wait_until(lambda old=old, since=since_wall: _back_after(state, old["server_pid"], since),
                                   timeout_s=READY_TIMEOUT_S, what="a new everything pid Ready after kill -9")
        durations.append(time.perf_counter() - started)
        steps = benchlib.timeline(state, "everything", since_wall)
    status = benchlib.cli("status", "-o", "json", "-f", str(supervised.manifests), "--state-dir", str(state))
    row = next(r for r in json.loads(status.out)["servers"] if r["name"] == "everything")
    assert row["ready"] and row["server_pid"] == back["server_pid"] and row["restarts"] >= CRASHES, row

    figure, cold = benchlib.median(durations), _cold_start_s(supervised)
    benchlib.emit(benchlib.Block(
        what="supervision: kill -9 of everything's server to Ready again (new pid) under `run`",
        figure=f"{benchlib.fmt_s(figure)} median of {CRASHES} ({', '.join(benchlib.fmt_s(d) for d in durations)})",
        baseline=f"{benchlib.fmt_s(cold)} the server's own cold start (spawn -> initialize answered, raw stdio)",
        ratio=f"{benchlib.times(figure, cold)}; controller adds {benchlib.fmt_s(figure - cold)}",
        target=f"adds < 50 ms: {benchlib.verdict(figure - cold < 0.050)}",
        notes=[f"last run after the kill: {benchlib.fmt_timeline(steps)} (audit events; Starting = the new "
               "runner serves)"]))


def test_a_manifest_edit_converges_to_a_ready_server_of_the_new_generation(supervised: Supervised) -> None:
    state, manifests = supervised.state, supervised.manifests
    key = StateDir(state).hmac_key()
    durations = []
    for edit in range(1, EDITS + 1):
        old = benchlib.wait_until(lambda: benchlib.serving(state, "everything"), timeout_s=READY_TIMEOUT_S,
                                  what="everything Ready")
        since_wall, started = time.time(), time.perf_counter()
        benchlib.write_doc(manifests, _everything(str(edit)))
        generation = load_manifests([manifests], key=key).by_name["everything"].runtime_generation
        assert generation != old.get("generation")
        benchlib.wait_until(
            lambda old=old, since=since_wall, gen=generation: _back_after(state, old["server_pid"], since, gen),
            timeout_s=READY_TIMEOUT_S, what=f"edit {edit}: the new generation Ready")
        durations.append(time.perf_counter() - started)
        steps = benchlib.timeline(state, "everything", since_wall)

    figure, cold = benchlib.median(durations), _cold_start_s(supervised)
    floor = cold + benchlib.DEBOUNCE_S
    benchlib.emit(benchlib.Block(
        what="supervision: manifest edit (an env value) to the new generation Ready under `run`",
        figure=f"{benchlib.fmt_s(figure)} median of {EDITS} ({', '.join(benchlib.fmt_s(d) for d in durations)})",
        baseline=f"{benchlib.fmt_s(floor)} cold start {benchlib.fmt_s(cold)} + debounce "
                 f"{benchlib.fmt_s(benchlib.DEBOUNCE_S)}",
        ratio=f"{benchlib.times(figure, floor)}; controller adds {benchlib.fmt_s(figure - cold)} over the cold start "
              "(debounce included)",
        target=f"adds < 300 ms, debounce included: {benchlib.verdict(figure - cold < 0.300)}",
        notes=[f"last run after the write: {benchlib.fmt_timeline(steps)}",
               "(plan.computed -> runner.exited is the old server's stop, part of any restart)"]))


# --- cost of N servers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FleetCost:
    servers: int
    to_ready_s: float      # controller spawn -> every server Ready
    loop_start_s: float    # controller spawn -> its `controller.started` event (imports, state load)
    cpu_percent: float     # controller CPU over the window, % of one core
    rss: int               # controller RSS at the end of the window
    runner_rss: list[int]
    runner_uss: list[int]


def _fleet(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return benchlib.write_manifests(directory, [
        benchlib.server_doc(f"s{i:02d}", {"path": str(benchlib.WELL_BEHAVED)},
                            health={"intervalSeconds": PROBE_INTERVAL_S, "timeoutSeconds": 5, "failureThreshold": 3})
        for i in range(count)])


def _all_ready(state: Path, names: list[str]) -> bool:
    entries = ((benchlib.read_json(state / "state.json") or {}).get("servers") or {})
    return all(benchlib.ready_since(entries.get(n) or {}) for n in names)


def _measure_fleet(base: Path, count: int) -> FleetCost:
    names = [f"s{i:02d}" for i in range(count)]
    manifests, state = _fleet(base / "manifests", count), base / "state"
    started, started_wall = time.perf_counter(), time.time()
    controller = benchlib.RunController(manifests, state, base / "controller.log")
    try:
        if count:
            benchlib.wait_until(lambda: _all_ready(state, names) or not controller.alive(),
                                timeout_s=READY_TIMEOUT_S + 4 * count, what=f"{count} servers Ready")
        else:   # nothing to make Ready: the first health report says the loop runs
            benchlib.wait_until(lambda: (state / "reports" / "health_report.json").exists() or not controller.alive(),
                                timeout_s=READY_TIMEOUT_S, what="the controller's first health report")
        assert controller.alive(), controller.log_tail()
        to_ready = time.perf_counter() - started
        loop_start = _event_offset(state, "controller.started", started_wall)
        process = psutil.Process(controller.pid)
        cpu_before, window_start, window_wall = sum(process.cpu_times()[:2]), time.perf_counter(), time.time()
        time.sleep(WINDOW_S)   # the measurement window itself, not a wait for something
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.perf_counter() - window_start) * 100
        rss = process.memory_info().rss
        runners = [benchlib.run_record(state, n)["runner_pid"] for n in names]
        health = (benchlib.read_json(state / "reports" / "health_report.json") or {}).get("servers") or {}
        probed = [n for n in names if ((health.get(n) or {}).get("last_probe") or {}).get("at", 0) > window_wall]
        assert probed == names, f"servers not probed during the window: {sorted(set(names) - set(probed))}"
        return FleetCost(count, to_ready, loop_start, cpu, rss, [benchlib.rss_of(p) for p in runners],
                         [benchlib.uss_of(p) for p in runners])
    finally:
        controller.stop()
        stopped = benchlib.stop_all(state)
        assert stopped.code == 0, stopped.describe()


def _event_offset(state: Path, name: str, since_wall: float) -> float:
    """Seconds from `since_wall` to the first audit event `name` after it (nan when there is none)."""
    for line in (state / "events.jsonl").read_text(errors="replace").splitlines():
        event = json.loads(line)
        at = benchlib.epoch(event.get("ts", ""))
        if event.get("event") == name and at >= since_wall:
            return at - since_wall
    return float("nan")


def _bare_python_rss() -> int:
    """RSS of an idle bare interpreter: the floor of any Python runner."""
    idle = subprocess.Popen([benchlib.PYTHON, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=benchlib.bench_env())
    try:
        assert idle.stdout is not None and idle.stdout.readline().strip() == b"ready"
        return benchlib.rss_of(idle.pid)
    finally:
        idle.communicate(timeout=benchlib.SERVER_STOP_TIMEOUT_S)


def _at_100(small: float, large: float, n_small: int, n_large: int) -> float:
    """Linear extrapolation to 100 servers through the two measured fleet sizes."""
    return large + (large - small) / (n_large - n_small) * (100 - n_large)


def test_controller_and_runner_cost_with_n_servers_probed_every_5s(tmp_path: Path) -> None:
    costs = {n: _measure_fleet(tmp_path / f"n{n}", n) for n in FLEET_SIZES}
    cold = benchlib.median(benchlib.cold_starts((benchlib.PYTHON, str(benchlib.WELL_BEHAVED)), {}, runs=COLD_RUNS))
    bare = _bare_python_rss()
    idle, mid, big = (costs[n] for n in FLEET_SIZES)
    cpu_100 = _at_100(mid.cpu_percent, big.cpu_percent, mid.servers, big.servers)
    rss_100 = _at_100(mid.rss, big.rss, mid.servers, big.servers)
    benchlib.emit(benchlib.Block(
        what=f"supervision: controller CPU with {big.servers} servers probed every {PROBE_INTERVAL_S} s "
             f"({WINDOW_S:g} s window)",
        figure=f"{big.cpu_percent:.2f}% of one core ({mid.servers} servers: {mid.cpu_percent:.2f}%)",
        baseline=f"{idle.cpu_percent:.2f}% the same controller with no servers",
        ratio=f"+{(big.cpu_percent - idle.cpu_percent) / big.servers:.3f}% of one core per server",
        target=f"100 servers < 3% of one core: extrapolated {cpu_100:.2f}%: {benchlib.verdict(cpu_100 < 3)}"))
    benchlib.emit(benchlib.Block(
        what=f"supervision: controller RSS with {big.servers} servers",
        figure=f"{benchlib.fmt_mb(big.rss)} ({mid.servers} servers: {benchlib.fmt_mb(mid.rss)})",
        baseline=f"{benchlib.fmt_mb(idle.rss)} the same controller with no servers",
        ratio=benchlib.times(big.rss, idle.rss),
        target=f"100 servers < 80 MB: extrapolated {benchlib.fmt_mb(rss_100)}: "
               f"{benchlib.verdict(rss_100 < 80 * 2**20)}"))
    mean_rss = benchlib.median(big.runner_rss)
    benchlib.emit(benchlib.Block(
        what=f"supervision: runner RSS ({big.servers} runners)",
        figure=f"{benchlib.fmt_mb(mean_rss)} median (max {benchlib.fmt_mb(max(big.runner_rss))}; "
               f"unique (USS) median {benchlib.fmt_mb(benchlib.median(big.runner_uss))})",
        baseline=f"{benchlib.fmt_mb(bare)} an idle bare python interpreter",
        ratio=benchlib.times(mean_rss, bare),
        target=f"< 15 MB per runner: {benchlib.verdict(max(big.runner_rss) < 15 * 2**20)}"))
    ideal, from_loop = big.servers * cold / CORES, big.to_ready_s - big.loop_start_s
    benchlib.emit(benchlib.Block(
        what=f"supervision: {big.servers} servers from cold to all Ready under `run`",
        figure=f"{benchlib.fmt_s(from_loop)} from the loop's start "
               f"(`run` spawned -> loop started: {benchlib.fmt_s(big.loop_start_s)})",
        baseline=f"{benchlib.fmt_s(ideal)} ideal: {big.servers} x cold start {benchlib.fmt_s(cold)} / {CORES} cores",
        ratio=benchlib.times(from_loop, ideal),
        target=f"<= 1.5x the ideal (SPEC: 100 servers): {benchlib.verdict(from_loop <= 1.5 * ideal)}",
        notes=["a tiny Python server: each start also pays a runner (its own interpreter), the era check "
               "and a first probe"]))
