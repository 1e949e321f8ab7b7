"""The contract-call matcher: a tool's wire answer against the manifest's `expect` block."""

from __future__ import annotations

import pytest

from mcp_reconcile.mcptest.expect import match_expectation, result_text


def text(value: str, *, is_error: bool = False, structured: object = None) -> dict:
    result: dict = {"content": [{"type": "text", "text": value}]}
    if is_error:
        result["isError"] = True
    if structured is not None:
        result["structuredContent"] = structured
    return result


SUM_SCHEMA = {"type": "object", "properties": {"result": {"type": "number"}}, "required": ["result"]}


@pytest.mark.parametrize(("expect", "result"), [
    pytest.param({}, text("anything"), id="no expectations only want a successful call"),
    pytest.param({"contains": "3"}, text("The sum of 1 and 2 is 3."), id="contains finds a substring of the text"),
    pytest.param({"contains": "42"}, text("", structured={"answer": 42}), id="contains also reads structured content"),
    pytest.param({"equals": "pong"}, text("pong"), id="a string equals the whole text"),
    pytest.param({"equals": {"result": 3}}, text("{}", structured={"result": 3}),
                 id="an object equals structured content"),
    pytest.param({"equals": [1, 2]}, text("[1, 2]"), id="an object equals text that parses as that JSON"),
    pytest.param({"jsonschema": SUM_SCHEMA}, text("", structured={"result": 3}),
                 id="jsonschema validates structured content"),
    pytest.param({"isError": True}, text("no such tool", is_error=True), id="isError true wants an error result"),
    pytest.param({"isError": True, "contains": "no such"}, text("no such tool", is_error=True),
                 id="isError and contains together"),
])
def test_answers_that_meet_the_expectation_match(expect, result) -> None:
    assert match_expectation(expect, result=result) == []


@pytest.mark.parametrize(("expect", "result", "fragments"), [
    pytest.param({}, text("boom", is_error=True), ["expected isError=false, got isError=true", "boom"],
                 id="an error result fails a call that should succeed"),
    pytest.param({"isError": True}, text("fine"), ["expected isError=true, got isError=false"],
                 id="a success fails a call that should be an error"),
    pytest.param({"contains": "3"}, text("The sum is 4."), ["expected the result to contain '3'", "The sum is 4."],
                 id="contains names the text it searched"),
    pytest.param({"equals": "pong"}, text("ping"), ["expected text equal to 'pong'", "'ping'"],
                 id="equals names both texts"),
    pytest.param({"equals": {"a": 1}}, text("not json"), ["expected structured content equal to", "not JSON"],
                 id="equals an object needs structured content or JSON text"),
    pytest.param({"jsonschema": SUM_SCHEMA}, text("", structured={"result": "three"}),
                 ["expected structured content matching the jsonschema", "$.result", "'three' is not of type 'number'"],
                 id="jsonschema names the failing path"),
    pytest.param({"jsonschema": SUM_SCHEMA}, text("plain words"), ["got none"],
                 id="jsonschema without structured content fails"),
    pytest.param({"jsonschema": {"type": 12}}, text("", structured={}), ["not a valid JSON Schema"],
                 id="an invalid schema in the manifest is reported as such"),
])
def test_answers_that_miss_say_what_was_expected_and_what_came(expect, result, fragments) -> None:
    problems = match_expectation(expect, result=result)
    assert problems
    for fragment in fragments:
        assert fragment in " ".join(problems)


def test_a_json_rpc_error_fails_unless_an_error_is_expected() -> None:
    error = {"code": -32602, "message": "Unknown tool: nope"}
    assert match_expectation({}, error=error) == ["expected a result, got JSON-RPC error -32602: 'Unknown tool: nope'"]
    assert match_expectation({"isError": True}, error=error) == []
    assert match_expectation({"isError": True, "contains": "nope"}, error=error) == []
    assert "expected the error to contain 'zzz'" in match_expectation({"isError": True, "contains": "zzz"},
                                                                      error=error)[0]


def test_result_text_joins_text_items_and_skips_others() -> None:
    result = {"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "..."},
                          {"type": "text", "text": "b"}]}
    assert result_text(result) == "a\nb"
    assert result_text({}) == ""


def test_long_answers_are_quoted_shortened() -> None:
    problems = match_expectation({"contains": "needle"}, result=text("x" * 5000))
    assert len(problems[0]) < 400
