"""Benchmarks (SPEC §13): skipped unless selected, so the README's test command stays fast.

Run them with `.venv/bin/python -m pytest tests/bench -m bench -s` (or set MCP_RECONCILE_BENCH=1).
Each prints a block (what, figure, same-run baseline, ratio, SPEC target); the terminal summary repeats
them all. They assert sanity only, never wall-clock thresholds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import benchlib  # found through the path above

BENCH_ENV = "MCP_RECONCILE_BENCH"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench: a benchmark that prints figures (SPEC §13); run with -m bench -s")


def _selected(config: pytest.Config) -> bool:
    if os.environ.get(BENCH_ENV) == "1":
        return True
    expr = config.getoption("markexpr", default="") or ""
    return "bench" in expr and "not bench" not in expr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _selected(config):
        return
    skip = pytest.mark.skip(reason=f"benchmark: run with `-m bench -s` or {BENCH_ENV}=1")
    for item in items:
        if item.get_closest_marker("bench"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not benchlib.RESULTS:
        return
    terminalreporter.section("benchmark figures (ratios against baselines measured in this run)")
    for block in benchlib.RESULTS:
        terminalreporter.write_line(f"{block.what}: {block.figure} | baseline {block.baseline} | "
                                    f"{block.ratio} | target {block.target}")


@pytest.fixture(scope="module", autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """After each bench module every process it started (found by the env tag) must be gone."""
    yield
    leftovers = benchlib.kill_tagged()
    assert not leftovers, "processes left running (killed now):\n" + "\n".join(leftovers)


@pytest.fixture(scope="session")
def installed_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir with the bundled servers (everything, time) installed by `apply --install`.

    Its manifests must always declare both (an undeclared server is uninstalled); benches that need
    only one declare the other with `desiredState: installed`.
    """
    state = tmp_path_factory.mktemp("installed") / "state"
    run = benchlib.cli("apply", "--install", "-f", str(benchlib.BUNDLED_MANIFESTS), "--state-dir", str(state))
    assert run.code == 0, run.describe()
    return state
