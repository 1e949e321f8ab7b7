"""Pure parts of the checks: answer classification, id audits, argument picking, settings."""

from __future__ import annotations

import pytest

from mcp_reconcile.mcptest.checks_errors import (
    bad_line_replies,
    classify_tool_rejection,
    classify_unknown_method,
    wrong_arguments,
)
from mcp_reconcile.mcptest.checks_raw import audit_answers, burst_plan, fits, responses
from mcp_reconcile.mcptest.checks_session import schema_problems
from mcp_reconcile.mcptest.model import Status, SuiteOptions, Target, settings_for, worst
from mcp_reconcile.model import LaunchSpec


@pytest.mark.parametrize(("answer", "status", "how"), [
    pytest.param({"id": 1, "result": {"content": [], "isError": True}}, Status.passed, "a result with isError: true",
                 id="an isError result passes"),
    pytest.param({"id": 1, "error": {"code": -32602, "message": "Unknown tool: x"}}, Status.passed,
                 "JSON-RPC error -32602 (Unknown tool: x)", id="-32602 passes and says so"),
    pytest.param({"id": 1, "error": {"code": -32603, "message": "boom"}}, Status.warned,
                 "JSON-RPC error -32603 (boom), where -32602 was expected", id="another error code is a warning"),
    pytest.param({"id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}}, Status.failed,
                 "a successful result", id="a successful result fails"),
    pytest.param({"id": 1, "result": {"isError": False}}, Status.failed, "a successful result",
                 id="isError false fails"),
    pytest.param({"id": 1, "error": "Unknown tool"}, Status.failed,
                 "an error that is not a JSON-RPC error object ('Unknown tool')",
                 id="a string error fails, not crashes"),
    pytest.param({"id": 1, "result": ["isError"]}, Status.failed, "a successful result",
                 id="a list result fails, not crashes"),
])
def test_a_rejected_tool_call_is_classified_and_named(answer, status, how) -> None:
    assert classify_tool_rejection(answer) == (status, how)


@pytest.mark.parametrize(("answer", "expected"), [
    pytest.param({"error": {"code": -32601, "message": "nope"}}, (Status.passed, "JSON-RPC error -32601"),
                 id="-32601 passes"),
    pytest.param({"error": {"code": -32600, "message": "bad"}}, (Status.failed, "JSON-RPC error -32600"),
                 id="another code fails"),
    pytest.param({"result": {}}, (Status.failed, "a result"), id="a result fails"),
    pytest.param({"error": [-32601]}, (Status.failed, "JSON-RPC error None"), id="a non-object error fails"),
])
def test_an_unknown_method_must_get_method_not_found(answer, expected) -> None:
    assert classify_unknown_method(answer) == expected


def test_bad_line_replies_are_errors_with_a_null_id_or_the_malformed_lines_own() -> None:
    messages = [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "id": 7, "result": {}},
        {"jsonrpc": "2.0", "id": 8, "error": {"code": -32601, "message": "x"}},
        [{"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}],
        {"jsonrpc": "2.0", "id": "mcptest-malformed", "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {}},
    ]
    assert bad_line_replies(messages) == [-32700, -32600, -32700]
    assert bad_line_replies([{"id": None, "error": "Parse error"}, {"id": None, "error": None}]) == []


def test_tools_of_any_shape_never_crash_the_choice_of_wrong_arguments() -> None:
    tools = ["echo", {"name": "a", "inputSchema": "x"}, {"name": "b", "inputSchema": {"properties": ["x"]}},
             {"name": "c", "inputSchema": {"properties": {"n": {"type": "number"}}, "required": "n"}}]
    assert wrong_arguments(tools) == ("c", {"n": "not-a-number"})


def test_responses_skip_requests_and_notifications_and_flatten_batches() -> None:
    messages = [{"id": 1, "method": "roots/list"}, {"method": "notifications/x"}, [{"id": 2, "result": {}}], 42]
    assert responses(messages) == [{"id": 2, "result": {}}]


def test_a_burst_mixes_number_and_string_ids_and_alternates_methods() -> None:
    assert burst_plan(4, ("ping", "tools/list")) == [(10_000, "ping"), ("mcptest-1", "tools/list"),
                                                     (10_002, "ping"), ("mcptest-3", "tools/list")]


@pytest.mark.parametrize(("method", "result", "expected"), [
    ("ping", {}, True), ("ping", {"tools": []}, False), ("tools/list", {"tools": []}, True),
    ("tools/list", {}, False), ("server/discover", {"supportedVersions": ["2026-07-28"]}, True),
    ("server/discover", {"tools": []}, False), ("ping", None, False),
])
def test_an_answer_fits_its_request_by_shape(method, result, expected) -> None:
    assert fits(method, {"id": 1, "result": result}) is expected


def test_an_audit_of_well_matched_answers_is_clean() -> None:
    plan = burst_plan(4, ("ping", "tools/list"))
    answers = [{"id": i, "result": {"tools": []} if m == "tools/list" else {}} for i, m in reversed(plan)]
    assert audit_answers(plan, answers).ok


def test_an_audit_names_missing_stray_duplicated_mismatched_and_error_answers() -> None:
    plan = [(1, "ping"), ("two", "tools/list"), (3, "ping"), (4, "ping"), (5, "ping")]
    answers = [
        {"id": 1, "result": {}}, {"id": 1, "result": {}},         # 1 answered twice
        {"id": "two", "result": {}},                              # a ping's answer under a tools/list id
        {"id": 1003, "result": {}},                               # an id never sent; 3 never answered
        {"id": 4, "error": {"code": -32603, "message": "boom"}},  # an error answer
        {"id": 5, "result": {}},
    ]
    audit = audit_answers(plan, answers)
    assert (audit.missing, audit.stray, audit.duplicated, audit.mismatched) == ([3], [1003], [1], ["two"])
    assert [e["id"] for e in audit.errors] == [4]
    assert not audit.ok
    assert audit.problems() == ["1 unanswered (e.g. [3])", "1 answers with ids never sent (e.g. [1003])",
                                "1 ids answered more than once (e.g. [1])",
                                "1 answers that belong to another request (e.g. ['two'])",
                                "1 error answers (e.g. {'code': -32603, 'message': 'boom'})"]


def test_an_audit_allows_the_ids_it_is_told_to_expect() -> None:
    assert audit_answers([(1, "ping")], [{"id": 1, "result": {}}, {"id": 99, "result": {}}],
                         also_expected=(99,)).ok


def test_wrong_arguments_prefer_read_only_tools_then_fewest_parameters() -> None:
    tools = [
        {"name": "write", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}},
                                          "required": ["path"]}},
        {"name": "add", "annotations": {"readOnlyHint": True},
         "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer"},
                                                          "c": {"type": ["string", "null"]}}, "required": ["a", "b"]}},
        {"name": "untyped", "inputSchema": {"type": "object", "properties": {"x": {}}}},
    ]
    assert wrong_arguments(tools) == ("add", {"a": "not-a-number", "b": "not-an-integer"})
    assert wrong_arguments(tools[:1]) == ("write", {"path": 12345})
    assert wrong_arguments(tools[2:]) is None
    assert wrong_arguments([{"name": "opt", "inputSchema": {"properties": {"flag": {"type": "boolean"}}}}]) == (
        "opt", {"flag": "not-a-boolean"})


def test_schema_problems_name_the_tool_and_the_metaschema_failure() -> None:
    tools = [{"name": "ok", "inputSchema": {"type": "object", "properties": {"m": {"type": "string"}}}},
             {"name": "bad", "inputSchema": {"type": "object", "properties": {"x": {"type": "not-a-type"}}}},
             {"name": "none", "inputSchema": None}]
    problems = schema_problems(tools)
    assert len(problems) == 2
    assert problems[0].startswith("tool 'bad': expected a valid JSON Schema as inputSchema, got one that fails")
    assert "properties/x/type" in problems[0]
    assert problems[1] == "tool 'none': expected an inputSchema object, got None"


def test_worst_ranks_fail_over_warn_over_pass_over_skip() -> None:
    assert worst(Status.passed, Status.warned, Status.skipped) is Status.warned
    assert worst(Status.skipped, Status.failed) is Status.failed
    assert worst(Status.skipped) is Status.skipped
    assert worst() is Status.skipped


def test_settings_take_options_over_the_manifest_over_the_defaults() -> None:
    tests = {"performance": {"requests": 20, "p95Ms": 50}, "concurrency": 8, "expectTools": ["echo"],
             "startupTimeoutSeconds": 30, "calls": [{"tool": "echo", "arguments": {"message": "hi"},
                                                     "expect": {"contains": "hi"}}]}
    target = Target("s", LaunchSpec(("server",)), tests, stop_timeout_s=3.0)
    settings = settings_for(target, SuiteOptions(requests=5, startup_timeout_s=10))
    assert (settings.requests, settings.p95_ms, settings.min_success_rate) == (5, 50.0, 0.99)
    assert (settings.concurrency, settings.startup_timeout_s, settings.shutdown_timeout_s) == (8, 10.0, 3.0)
    assert settings.expect_tools == ("echo",)
    assert [(c.tool, dict(c.arguments), dict(c.expect)) for c in settings.calls] == [
        ("echo", {"message": "hi"}, {"contains": "hi"})]
    defaults = settings_for(Target("s", LaunchSpec(("server",))), SuiteOptions())
    assert (defaults.requests, defaults.p95_ms, defaults.concurrency, defaults.startup_timeout_s) == (100, 100.0, 50,
                                                                                                      60.0)


def test_a_target_from_a_spec_takes_its_tests_stop_timeout_and_token() -> None:
    from mcp_reconcile.model import ServerSpec, Source, TestSpec

    spec = ServerSpec(name="s", source=Source("path", "/srv/s.py"), stop_timeout_s=2.0, env={"EP_TOKEN": "t0k"},
                      token_env="EP_TOKEN", tests=TestSpec(raw={"concurrency": 3}))
    target = Target.from_spec(spec, LaunchSpec(("python", "/srv/s.py")), endpoint="http://127.0.0.1:1/mcp")
    assert (target.server, target.token, target.stop_timeout_s, target.tests["concurrency"]) == ("s", "t0k", 2.0, 3)
    assert Target.from_spec(spec, LaunchSpec(("x",)), token="other").token == "other"
