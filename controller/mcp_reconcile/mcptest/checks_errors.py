"""The error-handling check (SPEC section 8): bad input must not kill the server.

Pass criterion for a malformed JSON line and for a message that is not a JSON-RPC object: the
server stays alive and answers the next request. Whether it replied -32700 / -32600 is only a
warning, since the reference servers of both SDKs stay silent. An unknown method must get -32601;
an unknown tool and arguments of the wrong types must get an isError result or -32602, and the
report says which.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_reconcile.mcptest.checks_raw import advertises_tools, cheap_method, responses
from mcp_reconcile.mcptest.model import ERROR_HANDLING, CheckResult, Status, worst
from mcp_reconcile.mcptest.raw import RawChannel, ServerGone

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
MALFORMED_ID = "mcptest-malformed"
MALFORMED_LINE = b'{"jsonrpc": "2.0", "id": "mcptest-malformed", "method": "ping", '
NON_OBJECT_LINE = b"42"
UNKNOWN_METHOD = "mcptest/no-such-method"
UNKNOWN_TOOL = "mcptest-no-such-tool"
# A value of the wrong JSON type for each JSON Schema type.
WRONG_VALUES = {"string": 12345, "number": "not-a-number", "integer": "not-an-integer",
                "boolean": "not-a-boolean", "array": "not-an-array", "object": "not-an-object"}


def _object(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one: a server may send anything as error or result."""
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Part:
    """One step of the error-handling check."""

    name: str
    status: Status
    message: str


def classify_tool_rejection(answer: Mapping[str, Any]) -> tuple[Status, str]:
    """How a server turned down a bad tools/call: an isError result or -32602 pass, and say which."""
    if "error" in answer:
        error = _object(answer.get("error"))
        if not error:
            return Status.failed, f"an error that is not a JSON-RPC error object ({answer.get('error')!r:.80})"
        code = error.get("code")
        if code == INVALID_PARAMS:
            return Status.passed, f"JSON-RPC error -32602 ({error.get('message', '')})"
        return Status.warned, f"JSON-RPC error {code} ({error.get('message', '')}), where -32602 was expected"
    result = _object(answer.get("result"))
    if result.get("isError") is True:
        return Status.passed, "a result with isError: true"
    return Status.failed, "a successful result"


def classify_unknown_method(answer: Mapping[str, Any]) -> tuple[Status, str]:
    """An unknown method must be answered -32601."""
    if "error" in answer:
        code = _object(answer.get("error")).get("code")
        if code == METHOD_NOT_FOUND:
            return Status.passed, "JSON-RPC error -32601"
        return Status.failed, f"JSON-RPC error {code}"
    return Status.failed, "a result"


def wrong_arguments(tools: list[Mapping[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """A tool and arguments of the wrong JSON types for its typed parameters, or None.

    Prefers read-only tools (annotations.readOnlyHint), then those with fewest parameters, so
    a server that ignores types is least likely to do something with the call.
    """
    candidates = []
    for tool in filter(None, map(_object, tools)):
        schema = _object(tool.get("inputSchema"))
        props = _object(schema.get("properties"))
        required = schema.get("required")
        names = [n for n in (required if isinstance(required, list) else props)
                 if isinstance(n, str) and isinstance(props.get(n), Mapping)]
        wrong = {n: WRONG_VALUES[t] for n in names if isinstance(t := props[n].get("type"), str) and t in WRONG_VALUES}
        if wrong:
            read_only = bool(_object(tool.get("annotations")).get("readOnlyHint"))
            candidates.append((not read_only, len(props), str(tool.get("name")), wrong))
    if not candidates:
        return None
    _, _, name, wrong = min(candidates, key=lambda c: (c[0], c[1], c[2]))
    return name, wrong


def bad_line_replies(messages: list[Any]) -> list[int]:
    """Codes of the error answers a server gave to a line it could not take (id null, or ours)."""
    return [int(code) for m in responses(messages) if m.get("id") in (None, MALFORMED_ID)
            and isinstance(code := _object(m.get("error")).get("code"), int)]


class _Gone(Exception):
    """The server exited or stopped answering; the remaining parts cannot run."""


@dataclass
class _Run:
    channel: RawChannel
    era: str | None
    timeout_s: float

    async def gone(self) -> str:
        return f"the server {await self.channel.proc.describe_exit()}"

    async def ask(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            return await self.channel.request(method, params, timeout_s=self.timeout_s)
        except ServerGone as exc:
            raise _Gone(f"expected an answer to {method}; got none: {await self.gone()}") from exc
        except TimeoutError as exc:
            raise _Gone(f"expected an answer to {method} within {self.timeout_s:g} s; got none") from exc

    async def bad_line(self, name: str, line: bytes, what: str, code: int) -> Part:
        mark = len(self.channel.received)
        expected = f"expected the server to stay alive after {what} and answer the next request"
        try:
            self.channel.send_line(line)
            await self.channel.request(cheap_method(self.era), timeout_s=self.timeout_s)
        except ServerGone as exc:
            raise _Gone(f"{expected}; got {await self.gone()}") from exc
        except TimeoutError as exc:
            raise _Gone(f"{expected}; got no answer within {self.timeout_s:g} s") from exc
        codes = bad_line_replies(self.channel.received[mark:])
        if code in codes:
            return Part(name, Status.passed, f"stayed alive and replied {code}")
        said = f" (it replied {codes})" if codes else ""
        return Part(name, Status.warned, f"stayed alive, but expected a {code} reply to {what}, got none{said}")

    async def unknown_method(self) -> Part:
        status, how = classify_unknown_method(await self.ask(UNKNOWN_METHOD))
        if status is Status.passed:
            return Part("unknown_method", status, f"{UNKNOWN_METHOD} answered -32601")
        return Part("unknown_method", status, f"expected error -32601 for {UNKNOWN_METHOD}, got {how}")

    async def tool_rejection(self, name: str, what: str, tool: str, arguments: dict[str, Any]) -> Part:
        status, how = classify_tool_rejection(await self.ask("tools/call", {"name": tool, "arguments": arguments}))
        if status is Status.passed:
            return Part(name, status, f"{what} rejected with {how}")
        return Part(name, status, f"expected an isError result or -32602 for {what}, got {how}")

    async def unknown_tool(self) -> Part:
        if not advertises_tools(self.channel):
            return Part("unknown_tool", Status.skipped, "the server advertises no tools")
        return await self.tool_rejection("unknown_tool", f"unknown tool {UNKNOWN_TOOL!r}", UNKNOWN_TOOL, {})

    async def wrong_types(self) -> Part:
        if not advertises_tools(self.channel):
            return Part("wrong_argument_types", Status.skipped, "the server advertises no tools")
        listing = await self.ask("tools/list")
        tools = _object(listing.get("result")).get("tools")
        picked = wrong_arguments(tools if isinstance(tools, list) else [])
        if picked is None:
            return Part("wrong_argument_types", Status.skipped, "no tool with typed parameters to call")
        tool, arguments = picked
        return await self.tool_rejection("wrong_argument_types", f"{tool} with arguments of the wrong types "
                                         f"{arguments}", tool, arguments)


async def check_error_handling(channel: RawChannel, *, era: str | None, timeout_s: float) -> CheckResult:
    """Malformed JSON, a non-object, an unknown method, an unknown tool, wrong argument types."""
    started = time.monotonic()
    run = _Run(channel, era, timeout_s)
    steps: list[tuple[str, Callable[[], Awaitable[Part]]]] = [
        ("malformed_json", lambda: run.bad_line("malformed_json", MALFORMED_LINE, "a malformed JSON line",
                                                PARSE_ERROR)),
        ("non_object", lambda: run.bad_line("non_object", NON_OBJECT_LINE, "a message that is not a JSON-RPC "
                                            "object", INVALID_REQUEST)),
        ("unknown_method", run.unknown_method),
        ("unknown_tool", run.unknown_tool),
        ("wrong_argument_types", run.wrong_types),
    ]
    parts: list[Part] = []
    gone = False
    for name, step in steps:
        if gone:
            parts.append(Part(name, Status.skipped, "not run: the server stopped answering"))
            continue
        try:
            parts.append(await step())
        except _Gone as exc:
            parts.append(Part(name, Status.failed, str(exc)))
            gone = True
    status = worst(*(p.status for p in parts))
    message = "; ".join(f"{p.name}: {p.message}" for p in parts)
    details = {p.name: {"status": p.status.value, "message": p.message} for p in parts}
    return CheckResult(ERROR_HANDLING, status, message, (time.monotonic() - started) * 1000, details)
