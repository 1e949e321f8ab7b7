"""The contract-call matcher: a tool's answer against the manifest's `expect` block.

Works on the wire form (`{"content": [...], "structuredContent": ..., "isError": ...}` or a JSON-RPC
`error` object) so it is a pure function that unit tests drive with plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

# How much of an answer a mismatch message quotes.
QUOTE_CHARS = 200


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "...")


def result_text(result: Mapping[str, Any]) -> str:
    """The text a person would read in a tool result: its text content items, joined by newlines."""
    parts = [str(item.get("text", "")) for item in result.get("content") or ()
             if isinstance(item, Mapping) and item.get("type") == "text"]
    return "\n".join(parts)


def _structured(result: Mapping[str, Any]) -> tuple[bool, Any]:
    """The structured content, else the text parsed as JSON; (False, None) when there is neither."""
    if result.get("structuredContent") is not None:
        return True, result["structuredContent"]
    try:
        return True, json.loads(result_text(result))
    except ValueError:
        return False, None


def _match_error(expect: Mapping[str, Any], error: Mapping[str, Any]) -> list[str]:
    code, message = error.get("code"), str(error.get("message", ""))
    if not expect.get("isError"):
        return [f"expected a result, got JSON-RPC error {code}: {_quote(message)}"]
    if "contains" in expect and expect["contains"] not in message:
        return [f"expected the error to contain {expect['contains']!r}, got {_quote(message)}"]
    return []


def _match_equals(expected: Any, result: Mapping[str, Any]) -> list[str]:
    if isinstance(expected, str):
        text = result_text(result)
        return [] if text == expected else [f"expected text equal to {expected!r}, got {_quote(text)}"]
    found, actual = _structured(result)
    if not found:
        return [f"expected structured content equal to {_quote(expected)}, got no structured content "
                f"and text that is not JSON: {_quote(result_text(result))}"]
    return [] if actual == expected else [f"expected {_quote(expected)}, got {_quote(actual)}"]


def _match_schema(schema: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    found, actual = _structured(result)
    if not found:
        return ["expected structured content matching the jsonschema, got none "
                f"(text: {_quote(result_text(result))})"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [f"the manifest's jsonschema is not a valid JSON Schema: {exc.message}"]
    error = best_match(Draft202012Validator(schema).iter_errors(actual))
    if error is None:
        return []
    where = error.json_path
    return [f"expected structured content matching the jsonschema, got {_quote(actual)}: at {where}: "
            f"{error.message}"]


def match_expectation(expect: Mapping[str, Any], *, result: Mapping[str, Any] | None = None,
                      error: Mapping[str, Any] | None = None) -> list[str]:
    """Every way the answer misses `expect`, as messages; empty means it matches.

    Without `isError` in `expect` the call must succeed. `isError: true` also accepts a JSON-RPC
    error, since servers signal a rejected call either way (SPEC section 8).
    """
    if error is not None:
        return _match_error(expect, error)
    result = result or {}
    problems: list[str] = []
    is_error = bool(result.get("isError"))
    want_error = bool(expect.get("isError", False))
    if is_error != want_error:
        problems.append(f"expected isError={str(want_error).lower()}, got isError={str(is_error).lower()}: "
                        f"{_quote(result_text(result))}")
    if "contains" in expect:
        haystack = result_text(result)
        if result.get("structuredContent") is not None:
            haystack += "\n" + json.dumps(result["structuredContent"], sort_keys=True)
        if str(expect["contains"]) not in haystack:
            problems.append(f"expected the result to contain {expect['contains']!r}, got {_quote(haystack)}")
    if "equals" in expect:
        problems.extend(_match_equals(expect["equals"], result))
    if "jsonschema" in expect:
        problems.extend(_match_schema(expect["jsonschema"], result))
    return problems
