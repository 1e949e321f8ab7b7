"""The official conformance suite through a runner's endpoint scores at least what the server scores natively
(issue 9): every scenario that passes against the server's own Streamable HTTP transport passes through the
endpoint, measured side by side in the same test (tests/e2e/conformance.py installs the suite and Node 22).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from mcp_reconcile import proc
from mcp_reconcile.store import StateDir

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 180.0   # one suite run takes ~2 s here; generous for a loaded 2-core box
WAIT_S = 60.0


def _load_harness() -> ModuleType:
    existing = sys.modules.get("e2e_conformance")
    if existing is not None:
        return existing
    path = Path(__file__).with_name("conformance.py")
    spec = importlib.util.spec_from_file_location("e2e_conformance", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


conformance = _load_harness()


@contextmanager
def runner_endpoint(command: list[str], tmp_path: Path) -> Iterator[str]:
    """A real runner over `command` (stdio); yields its endpoint URL; stops it and reaps its server after."""
    state = StateDir(tmp_path / "state")
    argv = [sys.executable, "-m", "mcp_reconcile.runner", "--state-dir", str(state.root), "--name", "srv",
            "--generation", "g1", "--", *command]
    runner = proc.spawn_runner(argv, dict(os.environ), log_path=state.root / "logs" / "srv.runner.log")
    try:
        deadline = time.monotonic() + WAIT_S
        while (record := state.read_run("srv") or {}).get("state") not in ("running", "exited"):
            assert time.monotonic() < deadline, "runner not serving in time"
            time.sleep(proc.POLL_INTERVAL_S)
        assert record["state"] == "running", (state.root / "logs" / "srv.runner.log").read_text()
        yield str(record["endpoint"])
    finally:
        proc.stop_runner(runner, timeout_s=WAIT_S)
        pgid = (state.read_run("srv") or {}).get("server_pgid")
        if pgid:
            proc.kill_group_and_wait(pgid, timeout_s=WAIT_S)


def _compare(native_url: str, endpoint_url: str) -> tuple[set[str], set[str], str]:
    native = conformance.run_conformance(native_url, timeout_s=RUN_TIMEOUT_S)
    through = conformance.run_conformance(endpoint_url, timeout_s=RUN_TIMEOUT_S)
    passed_natively = {n for n, ok in native.passed.items() if ok}
    passed_through = {n for n, ok in through.passed.items() if ok}
    print(f"\nnative {len(passed_natively)}/{len(native.passed)}, through the endpoint "
          f"{len(passed_through)}/{len(through.passed)}")
    return passed_natively, passed_through, through.describe(sorted(passed_natively - passed_through))


def test_server_everything_scores_through_the_endpoint_what_it_scores_natively(tmp_path: Path) -> None:
    entry = conformance.ensure_everything()
    with conformance.everything_http() as server, runner_endpoint(["node", str(entry)], tmp_path) as url:
        native, through, why = _compare(server.url, url)
    assert native - through == set(), why
    assert "dns-rebinding-protection" in through   # the endpoint checks Host/Origin; the server does not


def test_mcp_server_time_scores_through_the_endpoint_what_it_scores_natively(tmp_path: Path) -> None:
    python = conformance.ensure_time()
    with conformance.time_http() as server, \
            runner_endpoint([str(python), "-m", "mcp_server_time"], tmp_path) as url:
        native, through, why = _compare(server.url, url)
    assert native - through == set(), why


def test_mcp_server_time_passes_every_2026_07_28_check_through_the_endpoint_that_it_passes_natively(
        tmp_path: Path) -> None:
    """The 0.2.0 alpha suite's 2026-07-28 requirement set, compared check by check."""
    suite = conformance.ensure_suite(conformance.ALPHA_VERSION)
    python = conformance.ensure_time()

    def checks(url: str) -> dict[str, str]:
        run = conformance.run_conformance(url, timeout_s=RUN_TIMEOUT_S, suite=suite, requirements="2026-07-28")
        return {f"{name}/{check}": status for name, result in run.scenarios.items()
                for check, status in result.check_status().items()}

    with conformance.time_http() as server, \
            runner_endpoint([str(python), "-m", "mcp_server_time"], tmp_path) as url:
        native, through = checks(server.url), checks(url)
    passing = {c for c, status in native.items() if status == "SUCCESS"}
    lost = sorted(c for c in passing if through.get(c) != "SUCCESS")
    print(f"\n2026-07-28 checks passed: native {len(passing)}, through the endpoint "
          f"{sum(s == 'SUCCESS' for s in through.values())}; lost: {lost}")
    assert lost == []
