"""Checks over raw JSON-lines framing: error handling and concurrency (what the SDK will not send).

The channel speaks the era the startup check found: `initialize` + `notifications/initialized`
before anything else on a handshake-era server, `server/discover` first and `_meta` on every
request on a stateless one (SPEC appendix: a stdio connection's era is fixed by its first request).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from mcp_reconcile import __version__
from mcp_reconcile.mcptest.model import CONCURRENCY, STATELESS, CheckResult, Status
from mcp_reconcile.mcptest.raw import RawChannel, ServerGone, ServerProcess, id_key

CLIENT_INFO = {"name": "mcp-reconcile-test", "version": __version__}


class HandshakeError(Exception):
    """The raw channel could not open the era's session."""


def elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def cheap_method(era: str | None) -> str:
    return "server/discover" if era == STATELESS else "ping"


@asynccontextmanager
async def raw_session(proc: ServerProcess, *, era: str | None, protocol_version: str | None,
                      timeout_s: float) -> AsyncIterator[RawChannel]:
    """A RawChannel on `proc` with the era's session opened (HandshakeError when it cannot be)."""
    meta = None
    if era == STATELESS:
        meta = {PROTOCOL_VERSION_META_KEY: protocol_version or LATEST_MODERN_VERSION,
                CLIENT_INFO_META_KEY: CLIENT_INFO, CLIENT_CAPABILITIES_META_KEY: {}}
    opening = "server/discover" if meta else "initialize"
    async with RawChannel(proc, meta=meta) as channel:
        try:
            if era == STATELESS:
                answer = await channel.request("server/discover", timeout_s=timeout_s)
            else:
                answer = await channel.request("initialize", {
                    "protocolVersion": protocol_version or LATEST_HANDSHAKE_VERSION,
                    "capabilities": {}, "clientInfo": CLIENT_INFO}, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise HandshakeError(f"no answer to {opening} within {timeout_s:g} s; the server "
                                 f"{await proc.describe_exit()}") from exc
        except ServerGone as exc:
            raise HandshakeError(f"no answer to {opening}; the server {await proc.describe_exit()}") from exc
        if "error" in answer:
            raise HandshakeError(f"error {answer['error']} in answer to {opening}")
        channel.opening = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        if meta is None:
            channel.notify("notifications/initialized")
        yield channel


def responses(messages: list[Any]) -> list[dict[str, Any]]:
    """The JSON-RPC responses (not requests, not notifications) among `messages`, batches flattened."""
    flat = [item for message in messages for item in (message if isinstance(message, list) else [message])]
    return [m for m in flat if isinstance(m, dict) and "id" in m and "method" not in m
            and ("result" in m or "error" in m)]


def burst_plan(count: int, methods: tuple[str, ...]) -> list[tuple[Any, str]]:
    """`count` (id, method) pairs: ids mix numbers and strings (a server must echo both unchanged),
    methods alternate so that an answer given to the wrong request shows in its shape."""
    return [(10_000 + i if i % 2 == 0 else f"mcptest-{i}", methods[i % len(methods)]) for i in range(count)]


def fits(method: str, answer: Mapping[str, Any]) -> bool:
    """Whether a result has the shape of an answer to `method` (errors are judged elsewhere)."""
    if "error" in answer:
        return True
    result = answer.get("result")
    if not isinstance(result, Mapping):
        return False
    if method == "tools/list":
        return isinstance(result.get("tools"), list)
    if method == "server/discover":
        return "supportedVersions" in result
    return "tools" not in result and "supportedVersions" not in result  # ping: an empty result


@dataclass(frozen=True)
class IdAudit:
    """How a burst's answers matched its requests."""

    missing: list[Any]
    stray: list[Any]
    duplicated: list[Any]
    mismatched: list[Any]
    errors: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stray or self.duplicated or self.mismatched or self.errors)

    def problems(self) -> list[str]:
        """What went wrong, one phrase each, naming a few ids."""
        found = [(self.missing, "unanswered"), (self.stray, "answers with ids never sent"),
                 (self.duplicated, "ids answered more than once"),
                 (self.mismatched, "answers that belong to another request")]
        phrases = [f"{len(ids)} {what} (e.g. {ids[:3]})" for ids, what in found if ids]
        if self.errors:
            phrases.append(f"{len(self.errors)} error answers (e.g. {self.errors[0].get('error')})")
        return phrases


def audit_answers(sent: list[tuple[Any, str]], answers: list[dict[str, Any]], *,
                  also_expected: tuple[Any, ...] = ()) -> IdAudit:
    """Each request answered once, under its own id, with an answer of its own kind; nothing else."""
    method_of = {id_key(request_id): method for request_id, method in sent}
    allowed = set(method_of) | {id_key(i) for i in also_expected}
    seen: dict[str, int] = {}
    stray, mismatched, errors = [], [], []
    for answer in answers:
        key = id_key(answer.get("id"))
        seen[key] = seen.get(key, 0) + 1
        if key not in allowed:
            stray.append(answer.get("id"))
        elif key in method_of and "error" in answer:
            errors.append(answer)
        elif key in method_of and not fits(method_of[key], answer):
            mismatched.append(answer.get("id"))
    missing = [request_id for request_id, _ in sent if id_key(request_id) not in seen]
    duplicated = [request_id for request_id, _ in sent if seen.get(id_key(request_id), 0) > 1]
    return IdAudit(missing, stray, duplicated, mismatched, errors)


def advertises_tools(channel: RawChannel) -> bool:
    """Whether the answer that opened the channel (initialize / server/discover) lists tools."""
    capabilities = (channel.opening or {}).get("capabilities")
    return isinstance(capabilities, Mapping) and capabilities.get("tools") is not None


async def check_concurrency(channel: RawChannel, *, count: int, era: str | None, timeout_s: float) -> CheckResult:
    """`count` requests written in one go with explicit ids; each answered once, under its own id.

    When the server advertises tools the burst alternates the era's cheap request with tools/list,
    so an answer sent under another request's id is caught by its shape.
    """
    started = time.monotonic()
    with_tools = advertises_tools(channel)
    methods = (cheap_method(era), "tools/list") if with_tools else (cheap_method(era),)
    what = " and ".join(methods)
    plan = burst_plan(count, methods)
    mark = len(channel.received)
    burst = [json.dumps(channel.request_message(method, request_id=i)).encode() for i, method in plan]
    try:
        channel.send_line(b"\n".join(burst))
    except ServerGone as exc:
        return CheckResult(CONCURRENCY, Status.failed, f"expected to send {count} requests, the server is gone: "
                           f"{exc}", elapsed_ms(started))
    await channel.wait_until(lambda: len(responses(channel.received[mark:])) >= count, timeout_s)
    burst_ms = elapsed_ms(started)
    audit = audit_answers(plan, responses(channel.received[mark:]))
    if audit.ok:  # duplicates would come before the answer to a request sent after the burst
        sentinel: tuple[Any, ...] = ()
        with contextlib.suppress(TimeoutError, ServerGone):
            sentinel = ((await channel.request(methods[0], timeout_s=timeout_s))["id"],)
        audit = audit_answers(plan, responses(channel.received[mark:]), also_expected=sentinel)
    details = {"requests": count, "methods": list(methods), "burst_ms": burst_ms, "missing": audit.missing[:20],
               "stray": audit.stray[:20], "duplicated": audit.duplicated[:20], "mismatched": audit.mismatched[:20],
               "errors": audit.errors[:5]}
    if audit.ok:
        return CheckResult(CONCURRENCY, Status.passed, f"{count} concurrent requests ({what}) each answered once "
                           f"under its own id in {burst_ms:.1f} ms", elapsed_ms(started), details)
    got = audit.problems()
    if channel.closed:
        got.append(f"the server {await channel.proc.describe_exit()}")
    return CheckResult(CONCURRENCY, Status.failed, f"expected {count} concurrent requests ({what}) each answered "
                       f"once under its own id; got {', '.join(got)}", elapsed_ms(started), details)
