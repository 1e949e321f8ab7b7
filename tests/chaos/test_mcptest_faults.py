"""mcptest against the fault servers: each fault fails the right check, saying what was expected and what came.

Every server runs through `run_suite` as a user's manifest would (python FILE over stdio). Bounds stay small
(fault servers answer in milliseconds when they answer at all), so the whole module runs in seconds; the
liveness sockets of tests/fixtures/servers prove that no process outlives a suite.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import liveness  # tests/fixtures/servers is on pytest's pythonpath (pyproject)
import pytest

from mcp_reconcile.mcptest import ServerReport, Status, SuiteOptions, Target, run_suite
from mcp_reconcile.mcptest.model import (
    COMMUNICATION,
    CONCURRENCY,
    ERROR_HANDLING,
    PERFORMANCE,
    SHUTDOWN,
    STARTUP,
)
from mcp_reconcile.model import LaunchSpec

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

SERVERS = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
# Bounds for servers that answer at once; generous because other test runs share the 2 cores.
FAST = {"startup_timeout_s": 10.0, "request_timeout_s": 5.0, "shutdown_timeout_s": 5.0, "requests": 20,
        "concurrency": 10, "p95_ms": 1000.0}
# Bound on a fault server's process ending once the suite is done (it was SIGKILLed at the latest).
GONE_TIMEOUT_S = 10.0



@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def listener() -> Iterator[object]:
    with liveness.LivenessListener() as live:
        yield live


def target(name: str, listener: object, **env: str) -> Target:
    return Target(name, LaunchSpec((sys.executable, str(SERVERS / f"{name}.py")),
                                    env={**os.environ, **listener.env(), **env}))


def accepted_connections(listener: object) -> list[socket.socket]:
    """Every connection the suite's processes made: all are queued by the time run_suite returns."""
    conns = []
    while True:
        try:
            conns.append(listener.accept(0.0))
        except (BlockingIOError, TimeoutError):
            return conns


def assert_nothing_outlived_the_suite(listener: object, *, at_least: int) -> None:
    conns = accepted_connections(listener)
    assert len(conns) >= at_least
    assert all(listener.wait_closed(conn, GONE_TIMEOUT_S) for conn in conns), "a server process outlived run_suite"


def failed(report: ServerReport) -> dict[str, str]:
    return {c.name: c.message for c in report.checks if c.status is Status.failed}


# wrong_ids opens a session (server/discover -> -32601, then initialize) and answers everything after that under
# other ids, so every request of the session checks waits out its bound: a short one keeps the module fast.
WRONG_IDS = {"request_timeout_s": 1.0}

FAULTS = [
    pytest.param("crash_on_malformed", {}, {}, ERROR_HANDLING,
                 ["malformed_json: expected the server to stay alive after a malformed JSON line and answer the "
                  "next request", "got the server exited with code 2", "(injected fault)",
                  "non_object: not run: the server stopped answering"], id="crash_on_malformed fails error handling"),
    pytest.param("never_answers", {}, {"startup_timeout_s": 2.0}, STARTUP,
                 ["expected an answer to server/discover or initialize within 2 s of spawn", "got no answer",
                  "the server is still running"], id="never_answers fails startup"),
    pytest.param("slow_responses", {"SLOW_MS": "200"}, {"p95_ms": 50.0, "requests": 5}, PERFORMANCE,
                 ["expected p95 <= 50 ms and success >= 99%", "got 5/5 ping answered", "p95 "],
                 id="slow_responses fails performance p95"),
    pytest.param("wrong_ids", {}, WRONG_IDS, CONCURRENCY,
                 ["expected 10 concurrent requests (ping and tools/list) each answered once under its own id",
                  "10 unanswered (e.g. [10000, 'mcptest-1', 10002])",
                  "10 answers with ids never sent (e.g. [11000, 'mcptest-1-wrong', 11002])"],
                 id="wrong_ids fails concurrency"),
    pytest.param("wrong_ids", {"WRONG_IDS_MODE": "swap"}, WRONG_IDS, CONCURRENCY,
                 ["each answered once under its own id", "10 answers that belong to another request"],
                 id="wrong_ids swapping answers fails concurrency"),
    pytest.param("invalid_input_schema", {}, {}, COMMUNICATION,
                 ["tool 'echo': expected a valid JSON Schema as inputSchema, got one that fails the metaschema",
                  "properties/x/type"], id="invalid_input_schema fails communication"),
    pytest.param("crash_on_start", {}, {}, STARTUP,
                 ["expected an answer to server/discover or initialize within 10 s of spawn; got ",
                  "the server exited with code 3; stderr: ", "refusing to start (injected fault)"],
                 id="crash_on_start fails startup with its exit code and stderr"),
    pytest.param("exit_after_n", {"EXIT_AFTER_N": "5"}, {"requests": 10}, PERFORMANCE,
                 ["expected p95 <= 1000 ms and success >= 99%", "stopped after 3 failures in a row",
                  "Connection closed"], id="exit_after_n dying mid-session fails performance"),
    pytest.param("ignore_stdin_close", {}, {"shutdown_timeout_s": 0.5}, SHUTDOWN,
                 ["expected an exit within 0.5 s of stdin closing", "the server was still running"],
                 id="ignore_stdin_close fails shutdown"),
    pytest.param("forks_child", {}, {}, SHUTDOWN,
                 ["expected no process left after the server exits", "exited with code 0",
                  "left 1 behind", "liveness.py"], id="forks_child fails shutdown for the child it leaves"),
]


@pytest.mark.parametrize(("server", "env", "options", "check", "fragments"), FAULTS)
async def test_each_fault_fails_its_check_naming_expected_and_actual(listener, server, env, options, check,
                                                                     fragments) -> None:
    report = await run_suite(target(server, listener, **env), SuiteOptions(**{**FAST, **options}))
    problems = failed(report)
    assert check in problems, f"{check} passed: {report.check(check)}"
    for fragment in fragments:
        assert fragment in problems[check]
    assert not report.passed
    assert_nothing_outlived_the_suite(listener, at_least=1)


async def test_a_failed_startup_skips_the_rest_unless_forced(listener) -> None:
    never = {**FAST, "startup_timeout_s": 1.0, "request_timeout_s": 1.0}
    report = await run_suite(target("never_answers", listener), SuiteOptions(**never))
    assert list(failed(report)) == [STARTUP]
    assert {c.status for c in report.checks if c.name != STARTUP} == {Status.skipped}
    assert report.check(SHUTDOWN).message == "not run: startup failed (force runs what can still run)"
    assert report.era is None and report.protocol_version is None

    forced = await run_suite(target("never_answers", listener), SuiteOptions(**never, force=True))
    assert forced.check(SHUTDOWN).status is Status.passed  # it does exit when its stdin closes
    assert forced.check(COMMUNICATION).message == "not run: no MCP session (startup failed)"
    assert "expected the server to open a session over raw stdio" in forced.check(CONCURRENCY).message
    assert_nothing_outlived_the_suite(listener, at_least=2)


@pytest.mark.parametrize(("server", "era", "version", "cheap"), [
    pytest.param("well_behaved", "handshake", "2025-11-25", "ping", id="handshake era"),
    pytest.param("stateless_ok", "stateless", "2026-07-28", "server/discover", id="stateless era"),
])
async def test_a_well_behaved_fault_server_passes_every_check(listener, server, era, version, cheap) -> None:
    tests = {"expectTools": ["echo"], "calls": [
        {"tool": "echo", "arguments": {"message": "hello"}, "expect": {"equals": "hello"}},
        {"tool": "echo", "arguments": {}, "expect": {"isError": True, "contains": "message"}}]}
    report = await run_suite(Target(server, target(server, listener).launch, tests), SuiteOptions(**FAST))
    assert report.passed, failed(report)
    assert (report.era, report.protocol_version) == (era, version)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses.pop("auth") is Status.skipped
    assert set(statuses.values()) == {Status.passed}, statuses  # these servers even reply -32700 / -32600
    assert cheap in report.check(PERFORMANCE).message
    assert [c.name for c in report.checks][-2:] == ["call[0] echo", "call[1] echo"]
    assert_nothing_outlived_the_suite(listener, at_least=4)


async def test_a_contract_call_that_misses_its_expectation_fails_with_both_sides(listener) -> None:
    tests = {"expectTools": ["echo", "missing-tool"],
             "calls": [{"tool": "echo", "arguments": {"message": "hello"}, "expect": {"contains": "bye"}}]}
    report = await run_suite(Target("well_behaved", target("well_behaved", listener).launch, tests),
                             SuiteOptions(**FAST))
    problems = failed(report)
    assert problems["call[0] echo"] == "expected the result to contain 'bye', got 'hello'"
    assert problems[COMMUNICATION] == "expected tools ['missing-tool'] to be listed, got ['echo']"
    assert set(problems) == {"call[0] echo", COMMUNICATION}


async def test_a_command_that_cannot_run_fails_startup_with_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    report = await run_suite(Target("missing", LaunchSpec((str(missing),))), SuiteOptions(**FAST))
    assert failed(report) == {STARTUP: f"expected the server to start; spawning '{missing}' failed: "
                                       f"[Errno 2] No such file or directory: '{missing}'"}
