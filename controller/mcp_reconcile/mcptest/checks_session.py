"""Checks that need only an open MCP session: communication, performance, contract calls.

They take an entered `mcp.Client` (over stdio or over the server's endpoint) and never own a
process. Every request is bounded by `Settings.request_timeout_s`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from mcp import Client, MCPError

from mcp_reconcile.mcptest.expect import match_expectation
from mcp_reconcile.mcptest.model import (
    COMMUNICATION,
    PERFORMANCE,
    CheckResult,
    ContractCall,
    Settings,
    Status,
)
from mcp_reconcile.mcptest.sdk import Recorder, describe_error
from mcp_reconcile.mcptest.stats import summarize
from mcp_reconcile.protocol import cheap_request

# A listing longer than this many pages is a server that never ends its cursor chain.
MAX_LIST_PAGES = 100
# The performance check gives up after this many failures in a row (the server is gone or hung).
MAX_CONSECUTIVE_FAILURES = 3


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


async def _bounded(timeout_s: float, call: Callable[[], Awaitable[Any]]) -> Any:
    with anyio.fail_after(timeout_s):
        return await call()


async def _list_all(fetch: Callable[[str | None], Awaitable[Any]], field: str, timeout_s: float) -> list[Any]:
    """Every item of a paginated listing (tools, resources, prompts)."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await _bounded(timeout_s, lambda c=cursor: fetch(c))
        items.extend(getattr(page, field))
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise RuntimeError(f"listing did not end after {MAX_LIST_PAGES} pages")


def schema_problems(tools: list[Mapping[str, Any]]) -> list[str]:
    """One message per tool whose inputSchema is not a valid JSON Schema (draft 2020-12)."""
    problems = []
    for tool in tools:
        schema = tool.get("inputSchema")
        if not isinstance(schema, Mapping):
            problems.append(f"tool {tool.get('name')!r}: expected an inputSchema object, got {schema!r}")
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "<root>"
            problems.append(f"tool {tool.get('name')!r}: expected a valid JSON Schema as inputSchema, got one "
                            f"that fails the metaschema at {where}: {exc.message}")
    return problems


def _raw_tools(recorder: Recorder | None) -> list[Mapping[str, Any]] | None:
    """The tools as the server wrote them in its last tools/list answers, when they were recorded."""
    if recorder is None or not recorder.results.get("tools/list"):
        return None
    pages = [page for page in recorder.results["tools/list"] if isinstance(page, Mapping)]
    return [tool for page in pages for tool in page.get("tools") or () if isinstance(tool, Mapping)]


async def check_communication(client: Client, settings: Settings, *, recorder: Recorder | None = None) -> CheckResult:
    """Capabilities; tools/resources/prompts listed as advertised; valid input schemas; expectTools.

    Input schemas are judged on the server's own JSON when `recorder` kept it (the SDK may reject
    or reshape a listing before we see it), else on the SDK's parsed tools.
    """
    started = time.monotonic()
    timeout = settings.request_timeout_s
    caps = client.server_capabilities
    details: dict[str, Any] = {"capabilities": caps.model_dump(mode="json", by_alias=True, exclude_none=True)}
    problems: list[str] = []
    listed: dict[str, list[Any]] = {}
    fetchers = {
        "tools": (caps.tools, lambda c: client.list_tools(cursor=c)),
        "resources": (caps.resources, lambda c: client.list_resources(cursor=c)),
        "prompts": (caps.prompts, lambda c: client.list_prompts(cursor=c)),
    }
    for kind, (advertised, fetch) in fetchers.items():
        if advertised is None:
            continue
        try:
            listed[kind] = await _list_all(fetch, kind, timeout)
        except Exception as exc:
            problems.append(f"{kind}/list: expected a listing (the server advertises {kind}), got "
                            f"{describe_error(exc, timeout_s=timeout)}")
    tools = listed.get("tools", [])
    names = [tool.name for tool in tools]
    details.update({kind: len(items) for kind, items in listed.items()}, tool_names=names)
    raw_tools = _raw_tools(recorder)
    problems.extend(schema_problems(raw_tools if raw_tools is not None else
                                    [tool.model_dump(mode="json", by_alias=True) for tool in tools]))
    missing = [name for name in settings.expect_tools if name not in names]
    if missing:
        problems.append(f"expected tools {missing} to be listed, got {names}")
    if problems:
        return CheckResult(COMMUNICATION, Status.failed, "; ".join(problems), elapsed_ms(started), details)
    counts = ", ".join(f"{len(items)} {kind}" for kind, items in listed.items()) or "no tools, resources or prompts"
    expected = f"; expected tools present: {list(settings.expect_tools)}" if settings.expect_tools else ""
    return CheckResult(COMMUNICATION, Status.passed, f"listed {counts}; every inputSchema is valid{expected}",
                       elapsed_ms(started), details)


async def check_performance(client: Client, settings: Settings, *, era: str) -> CheckResult:
    """N sequential cheap requests: p50/p95/p99, success rate and throughput against the thresholds."""
    started = time.monotonic()
    timeout = settings.request_timeout_s
    what = "server/discover" if client.session.discover_result is not None else "ping"
    latencies: list[float] = []
    errors: list[str] = []
    in_a_row = 0
    for _ in range(settings.requests):
        sent = time.monotonic()
        try:
            await _bounded(timeout, lambda: cheap_request(client))
        except Exception as exc:
            errors.append(describe_error(exc, timeout_s=timeout))
            in_a_row += 1
            if in_a_row >= MAX_CONSECUTIVE_FAILURES:
                break
            continue
        in_a_row = 0
        latencies.append(elapsed_ms(sent))
    summary = summarize(latencies, attempted=settings.requests, wall_s=(time.monotonic() - started))
    details = {**summary.as_dict(), "request": what, "era": era, "limit_p95_ms": settings.p95_ms,
               "limit_success_rate": settings.min_success_rate, "errors": errors[:5]}
    limits = f"p95 <= {settings.p95_ms:g} ms and success >= {settings.min_success_rate:.0%}"
    got = (f"{summary.succeeded}/{summary.attempted} {what} answered ({summary.success_rate:.1%})"
           + (f", p50 {summary.p50_ms:.2f} ms, p95 {summary.p95_ms:.2f} ms, p99 {summary.p99_ms:.2f} ms, "
              f"{summary.throughput_rps:.0f} req/s" if summary.p95_ms is not None else ""))
    if in_a_row >= MAX_CONSECUTIVE_FAILURES:
        got += f"; stopped after {MAX_CONSECUTIVE_FAILURES} failures in a row, last: {errors[-1]}"
    ok = (summary.p95_ms is not None and summary.p95_ms <= settings.p95_ms
          and summary.success_rate >= settings.min_success_rate)
    if ok:
        return CheckResult(PERFORMANCE, Status.passed, f"{got} (limits: {limits})", elapsed_ms(started), details)
    return CheckResult(PERFORMANCE, Status.failed, f"expected {limits}; got {got}", elapsed_ms(started), details)


def call_check_name(index: int, call: ContractCall) -> str:
    return f"call[{index}] {call.tool}"


async def check_call(client: Client, index: int, call: ContractCall, settings: Settings) -> CheckResult:
    """One manifest contract call: tools/call, then the `expect` block against its answer."""
    started = time.monotonic()
    name = call_check_name(index, call)
    timeout = settings.request_timeout_s
    details: dict[str, Any] = {"tool": call.tool, "arguments": dict(call.arguments), "expect": dict(call.expect)}
    try:
        result = await _bounded(timeout, lambda: client.call_tool(call.tool, dict(call.arguments)))
    except MCPError as exc:
        details["error"] = {"code": exc.code, "message": exc.message}
        problems = match_expectation(call.expect, error=details["error"])
    except Exception as exc:
        return CheckResult(name, Status.failed, f"expected an answer from {call.tool!r}, got "
                           f"{describe_error(exc, timeout_s=timeout)}", elapsed_ms(started), details)
    else:
        wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        details["result"] = wire
        problems = match_expectation(call.expect, result=wire)
    if problems:
        return CheckResult(name, Status.failed, "; ".join(problems), elapsed_ms(started), details)
    return CheckResult(name, Status.passed, f"{call.tool} answered as expected ({_expect_summary(call.expect)})",
                       elapsed_ms(started), details)


def _expect_summary(expect: Mapping[str, Any]) -> str:
    parts = [f"{key}={value!r}" if key != "jsonschema" else "jsonschema" for key, value in expect.items()]
    return ", ".join(parts) or "isError=False"
