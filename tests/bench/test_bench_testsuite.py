"""The MCP test suite (issue 5): `mcp-reconcile test NAME` wall time per bundled server, next to that
server's own cold start. The suite starts the server several times (session, concurrency, error
handling, restart), so the ratio reads as "how many cold starts' worth" the whole suite costs.
"""

from __future__ import annotations

from pathlib import Path

import benchlib
import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]

COLD_RUNS = 3
SLOWEST_SHOWN = 3


def _checks(state: Path, name: str) -> list[dict[str, object]]:
    report = benchlib.read_json(state / "reports" / "test_report.json") or {}
    server = next((s for s in report.get("servers", []) if s.get("server") == name), {})
    return list(server.get("checks", []))


@pytest.mark.parametrize("name", ["everything", "time"])
def test_the_test_suite_of_a_bundled_server_against_its_cold_start(installed_state: Path, name: str) -> None:
    manifests = benchlib.BUNDLED_MANIFESTS
    argv, env = benchlib.launch_argv(installed_state, manifests, name)
    cold = benchlib.median(benchlib.cold_starts(argv, env, runs=COLD_RUNS))
    run = benchlib.cli("test", name, "-f", str(manifests), "--state-dir", str(installed_state))
    checks = _checks(installed_state, name)
    assert checks, run.describe()
    failed = [c["name"] for c in checks if c.get("status") == "fail"]
    slowest = sorted(checks, key=lambda c: -float(c.get("duration_ms") or 0))[:SLOWEST_SHOWN]
    benchlib.emit(benchlib.Block(
        what=f"test suite: `mcp-reconcile test {name}` (every check of SPEC §8 + the manifest's calls)",
        figure=f"{benchlib.fmt_s(run.wall_s)} wall, exit {run.code}, {len(checks)} checks, "
               f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}",
        baseline=f"{benchlib.fmt_s(cold)} {name}'s own cold start (spawn -> initialize answered, raw stdio)",
        ratio=f"{benchlib.times(run.wall_s, cold)} (cold starts' worth)",
        target="no SPEC §13 figure (issue 5)",
        notes=["slowest checks: " + ", ".join(f"{c['name']} {benchlib.fmt_s(float(c.get('duration_ms') or 0) / 1000)}"
                                              for c in slowest)]))
