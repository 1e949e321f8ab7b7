"""The conformance harness itself, proven against the bundled servers' OWN Streamable HTTP transports.

Why: before the official suite can judge our endpoint, it has to be shown to pass what the real servers pass
natively and to report what they fail (a harness that always passes proves nothing). Each test starts one
real server's own transport (tests/e2e/conformance.py), runs the suite once and checks the generic scenarios:
the ones a real server can pass without the suite's fixture tools. Durations go to stdout (`-rP` shows them).
"""

from __future__ import annotations

import socket

import conformance  # tests/e2e/conformance.py (tests/e2e is on pytest's pythonpath)
import pytest

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 180.0   # the whole active suite takes ~2 s here; generous for a loaded 2-core box



# Natively passing generic scenarios, measured with suite 0.1.16 (server-everything 2026.8.31 and
# mcp-server-time 2026.10.19 with mcp 2.3.0). Each server fails the rest of the generic set for a reason of its own.
EVERYTHING_PASSES = ("server-initialize", "ping", "tools-list", "resources-list", "prompts-list", "logging-set-level",
                     "resources-subscribe", "resources-unsubscribe", "server-sse-multiple-streams")
TIME_PASSES = ("server-initialize", "ping", "tools-list", "resources-list", "prompts-list",
               "server-sse-multiple-streams", "dns-rebinding-protection")


def test_the_suite_lists_the_generic_scenarios() -> None:
    names = conformance.list_scenarios(conformance.ensure_suite())
    assert set(conformance.GENERIC_SCENARIOS) <= set(names), names
    assert set(conformance.PENDING_SCENARIOS) <= set(names), names


def test_server_everything_passes_the_generic_scenarios_natively() -> None:
    with conformance.everything_http() as server:
        run = conformance.run_conformance(server.url, timeout_s=RUN_TIMEOUT_S)
    print(f"server-everything native, active suite: {run.duration_s:.2f}s\n{run.describe()}")
    assert run.exit_code is not None, run.describe()
    assert not run.failing(EVERYTHING_PASSES), run.describe(EVERYTHING_PASSES)
    assert not any(run.scenarios[name].vacuous for name in EVERYTHING_PASSES), run.describe(EVERYTHING_PASSES)
    # The harness reports failures too: server-everything listens on every interface and checks no Host/Origin.
    rebinding = run.scenarios["dns-rebinding-protection"]
    assert not rebinding.passed, rebinding.describe()
    assert rebinding.check_status() == {"localhost-host-rebinding-rejected": "FAILURE",
                                        "localhost-host-valid-accepted": "SUCCESS"}, rebinding.describe()
    assert not run.scenarios["tools-call-image"].passed   # needs the suite's own fixture tool


def test_mcp_server_time_passes_the_generic_scenarios_natively() -> None:
    with conformance.time_http() as server:
        run = conformance.run_conformance(server.url, timeout_s=RUN_TIMEOUT_S)
        single = conformance.run_conformance(server.url, ["ping"], timeout_s=RUN_TIMEOUT_S)
    print(f"mcp-server-time native, active suite: {run.duration_s:.2f}s; --scenario ping: {single.duration_s:.2f}s"
          f"\n{run.describe()}")
    assert not run.failing(TIME_PASSES), run.describe(TIME_PASSES)
    assert not any(run.scenarios[name].vacuous for name in TIME_PASSES), run.describe(TIME_PASSES)
    assert single.passed == {"ping": True}, single.describe()
    # No logging capability and no subscriptions: -32601, and the suite says so.
    for name in ("logging-set-level", "resources-subscribe"):
        assert not run.scenarios[name].passed, run.describe([name])
        assert "-32601" in run.scenarios[name].with_status("FAILURE")[0]["errorMessage"]


def test_mcp_server_time_meets_the_2026_07_28_core_checks_natively() -> None:
    """The 0.2.0 alpha's `--requirements 2026-07-28` set: the stateless checks the real server passes natively."""
    alpha = conformance.ensure_suite(conformance.ALPHA_VERSION)
    with conformance.time_http() as server:
        run = conformance.run_conformance(server.url, suite=alpha, requirements="2026-07-28",
                                          timeout_s=RUN_TIMEOUT_S)
    print(f"mcp-server-time native, {alpha.version} --requirements 2026-07-28: {run.duration_s:.2f}s\n"
          f"{run.describe()}")
    stateless = run.scenarios["server-stateless"].check_status()
    for check in ("sep-2575-server-implements-discover", "sep-2575-server-identifies-in-result-meta",
                  "sep-2575-request-meta-invalid-missing-meta", "sep-2575-http-server-meta-invalid-400",
                  "sep-2575-server-unsupported-version-error", "sep-2575-http-server-unsupported-version-400",
                  "sep-2575-http-server-header-mismatch-400", "sep-2575-http-server-method-not-found-404-initialize",
                  "sep-2575-http-server-method-not-found-404-ping", "sep-2575-http-server-error-jsonrpc-id"):
        assert stateless.get(check) == "SUCCESS", run.describe(["server-stateless"])
    assert not run.failing(["tools-list", "caching", "dns-rebinding-protection", "http-header-validation",
                            "sep-2164-resource-not-found"]), run.describe()


def test_a_silent_endpoint_is_bounded_by_the_timeout_and_reported_as_not_run() -> None:
    """A port that accepts connections but never answers: the run ends at its bound, nothing passes."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)   # the kernel completes handshakes; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        run = conformance.run_conformance(url, ["server-initialize", "ping"], timeout_s=8.0)
    print(f"silent endpoint: {run.duration_s:.2f}s")
    assert run.exit_code is None and run.duration_s < 30, run.describe()
    assert run.passed == {"server-initialize": False, "ping": False}, run.describe()
    assert "timeout" in run.scenarios["ping"].with_status("FAILURE")[0]["errorMessage"]
