"""Installs (issue 3, SPEC §13): parallel vs `--sequential`, the no-op re-apply, and 4 installs in parallel
vs the slowest alone. Every install goes through `mcp-reconcile apply --install` into a fresh state dir;
each configuration runs RUNS times, interleaved, and its fastest run counts.

"Cold" means a fresh state dir: nothing installed. The package managers' download caches are warm (a
warm-up install fills them first), which is a host's steady state and keeps registry latency out of the
ratios; MCP_RECONCILE_BENCH_EMPTY_CACHES=1 gives every install empty npm and uv caches instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

SOURCES = {"everything": {"npm": benchlib.EVERYTHING_NPM}, "time": {"pypi": benchlib.TIME_PYPI},
           "memory": {"npm": benchlib.MEMORY_NPM}, "git": {"pypi": benchlib.GIT_PYPI}}
BUNDLED = ("everything", "time")
EMPTY_CACHES_ENV = "MCP_RECONCILE_BENCH_EMPTY_CACHES"
# Each configuration is installed this many times (fresh state dirs, interleaved) and the fastest run
# counts: other load on a shared 2-core box only ever adds time. MCP_RECONCILE_BENCH_INSTALL_RUNS overrides.
RUNS = int(os.environ.get("MCP_RECONCILE_BENCH_INSTALL_RUNS", "2"))


@dataclass(frozen=True)
class InstallRun:
    wall_s: float
    durations: dict[str, float]   # the install action's own duration per server (installation report)
    state: Path
    manifests: Path


def _manifests(directory: Path, names: tuple[str, ...]) -> Path:
    return benchlib.write_manifests(directory, [benchlib.server_doc(n, SOURCES[n]) for n in names])


def _install(root: Path, label: str, manifests: Path, *flags: str) -> InstallRun:
    """`apply --install` of `manifests` into the fresh state dir ROOT/LABEL/state."""
    base = root / label
    state = base / "state"
    env = {}
    if os.environ.get(EMPTY_CACHES_ENV) == "1":
        env = {"npm_config_cache": str(base / "npm-cache"), "UV_CACHE_DIR": str(base / "uv-cache")}
    run = benchlib.cli("apply", "--install", "-f", str(manifests), "--state-dir", str(state), *flags, env=env)
    assert run.code == 0, run.describe()
    report = benchlib.read_json(state / "reports" / "installation_report.json") or {}
    durations = {name: float(entry["duration_s"]) for name, entry in report.get("servers", {}).items()}
    return InstallRun(run.wall_s, durations, state, manifests)


def _fastest(root: Path, configs: dict[str, tuple[Path, tuple[str, ...]]]) -> dict[str, InstallRun]:
    """Install every configuration (label -> manifests, flags) RUNS times, interleaved; the fastest of each."""
    runs: dict[str, list[InstallRun]] = {label: [] for label in configs}
    for attempt in range(RUNS):
        for label, (manifests, flags) in configs.items():
            runs[label].append(_install(root, f"{label}-{attempt}", manifests, *flags))
    return {label: min(done, key=lambda r: r.wall_s) for label, done in runs.items()}


def _installed_at(state: Path) -> dict[str, Any]:
    return {p.parent.name: (benchlib.read_json(p) or {}).get("installed_at")
            for p in sorted((state / "installs").glob("*/install.json"))}


def _each(run: InstallRun) -> str:
    return ", ".join(f"{n} {benchlib.fmt_s(s)}" for n, s in sorted(run.durations.items()))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp dir for this module's state dirs, after one warm-up install of all four servers."""
    base = tmp_path_factory.mktemp("installs")
    warm = _install(base, "warm-up", _manifests(base / "warm-up-manifests", tuple(SOURCES)))
    print(f"\n(warm-up: the four servers installed in {benchlib.fmt_s(warm.wall_s)}: {_each(warm)})")
    return base


def test_bundled_servers_install_in_parallel_faster_than_sequentially_and_a_reapply_installs_nothing(root) -> None:
    fastest = _fastest(root, {"sequential": (benchlib.BUNDLED_MANIFESTS, ("--sequential",)),
                              "parallel": (benchlib.BUNDLED_MANIFESTS, ())})
    sequential, parallel = fastest["sequential"], fastest["parallel"]
    benchlib.emit(benchlib.Block(
        what="installs: the bundled servers (everything, time), cold, in parallel",
        figure=f"{benchlib.fmt_s(parallel.wall_s)} `apply --install` wall, best of {RUNS}",
        baseline=f"{benchlib.fmt_s(sequential.wall_s)} the same with --sequential, best of {RUNS}",
        ratio=benchlib.times(parallel.wall_s, sequential.wall_s),
        target="parallel < sequential (issue 3): " + benchlib.verdict(parallel.wall_s < sequential.wall_s),
        notes=[f"install actions, parallel: {_each(parallel)}", f"install actions, sequential: {_each(sequential)}"]))

    before = _installed_at(parallel.state)
    again = benchlib.cli("apply", "--install", "-f", str(parallel.manifests), "--state-dir", str(parallel.state))
    assert again.code == 0 and "No changes" in again.out, again.describe()
    assert _installed_at(parallel.state) == before, "a re-apply with nothing changed ran a package manager"
    plan_only = benchlib.cli("plan", "-f", str(parallel.manifests), "--state-dir", str(parallel.state))
    assert plan_only.code == 0, plan_only.describe()
    benchlib.emit(benchlib.Block(
        what="installs: re-apply with nothing changed (`apply --install` again)",
        figure=f"{benchlib.fmt_s(again.wall_s)}; no package manager ran (installed_at unchanged)",
        baseline=f"{benchlib.fmt_s(plan_only.wall_s)} `plan` on the same state dir",
        ratio=f"{benchlib.times(again.wall_s, plan_only.wall_s)} (vs the cold install: "
              f"{benchlib.times(again.wall_s, parallel.wall_s)})",
        target="runs no package manager: met"))


def test_four_cold_installs_in_parallel_take_little_more_than_the_slowest_alone(root) -> None:
    configs = {f"alone-{name}": (_manifests(root / f"alone-{name}-manifests", (name,)), ()) for name in SOURCES}
    configs["pair"] = (_manifests(root / "pair-manifests", BUNDLED), ())
    configs["four"] = (_manifests(root / "four-manifests", tuple(SOURCES)), ())
    fastest = _fastest(root, configs)
    alone = {name: fastest[f"alone-{name}"] for name in SOURCES}
    pair, four = fastest["pair"], fastest["four"]
    slowest_pair = max(BUNDLED, key=lambda n: alone[n].wall_s)
    slowest = max(SOURCES, key=lambda n: alone[n].wall_s)
    each_alone = ", ".join(f"{n} {benchlib.fmt_s(r.wall_s)}" for n, r in alone.items())
    benchlib.emit(benchlib.Block(
        what="installs: 2 bundled servers in parallel vs the slower one alone",
        figure=f"{benchlib.fmt_s(pair.wall_s)} `apply --install` of everything + time, best of {RUNS}",
        baseline=f"{benchlib.fmt_s(alone[slowest_pair].wall_s)} {slowest_pair} alone",
        ratio=benchlib.times(pair.wall_s, alone[slowest_pair].wall_s),
        target="(see the 4-install target)",
        notes=[f"install actions in parallel: {_each(pair)}"]))
    action_ratio = max(four.durations.values()) / alone[slowest].durations[slowest]
    benchlib.emit(benchlib.Block(
        what="installs: 4 cold installs in parallel (everything, time, memory, git) vs the slowest alone",
        figure=f"{benchlib.fmt_s(four.wall_s)} `apply --install` of all four, best of {RUNS}",
        baseline=f"{benchlib.fmt_s(alone[slowest].wall_s)} {slowest} alone (the slowest alone, best of {RUNS})",
        ratio=benchlib.times(four.wall_s, alone[slowest].wall_s),
        target=f"< 1.3x the slowest alone: {benchlib.verdict(four.wall_s < 1.3 * alone[slowest].wall_s)}",
        notes=[f"each alone (wall): {each_alone}",
               f"install actions in parallel: {_each(four)}",
               f"longest install action in parallel vs {slowest}'s alone: {action_ratio:.2f}x"]))
