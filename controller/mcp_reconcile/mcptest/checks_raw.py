"""Checks over raw JSON-lines framing: error handling and concurrency (what the SDK will not send).

The channel speaks the era the startup check found: `initialize` + `notifications/initialized`
before anything else on a handshake-era server, `server/discover` first and `_meta` on every
request on a stateless one (SPEC appendix: a stdio connection's era is fixed by its first request).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
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
    async with RawChannel(proc, meta=meta) as channel:
        try:
            if era == STATELESS:
                answer = await channel.request("server/discover", timeout_s=timeout_s)
            else:
                answer = await channel.request("initialize", {
                    "protocolVersion": protocol_version or LATEST_HANDSHAKE_VERSION,
                    "capabilities": {}, "clientInfo": CLIENT_INFO}, timeout_s=timeout_s)
        except (TimeoutError, ServerGone) as exc:
            raise HandshakeError(f"{'server/discover' if meta else 'initialize'}: {exc}") from exc
        if "error" in answer:
            raise HandshakeError(f"answered error {answer['error']}")
        if meta is None:
            channel.notify("notifications/initialized")
        yield channel


def responses(messages: list[Any]) -> list[dict[str, Any]]:
    """The JSON-RPC responses (not requests, not notifications) among `messages`, batches flattened."""
    flat = [item for message in messages for item in (message if isinstance(message, list) else [message])]
    return [m for m in flat if isinstance(m, dict) and "id" in m and "method" not in m
            and ("result" in m or "error" in m)]


def request_ids(count: int) -> list[Any]:
    """`count` distinct ids mixing numbers and strings, since a server must echo both unchanged."""
    return [10_000 + i if i % 2 == 0 else f"mcptest-{i}" for i in range(count)]


@dataclass(frozen=True)
class IdAudit:
    """How a burst's answers matched its ids."""

    missing: list[Any]
    stray: list[Any]
    duplicated: list[Any]
    errors: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stray or self.duplicated or self.errors)


def audit_ids(sent: list[Any], answers: list[dict[str, Any]], *, also_expected: tuple[Any, ...] = ()) -> IdAudit:
    """Compare the ids sent with the answers: each must be answered once, and nothing else."""
    sent_keys = {id_key(i): i for i in sent}
    allowed = set(sent_keys) | {id_key(i) for i in also_expected}
    seen: dict[str, int] = {}
    stray, errors = [], []
    for answer in answers:
        key = id_key(answer.get("id"))
        seen[key] = seen.get(key, 0) + 1
        if key not in allowed:
            stray.append(answer.get("id"))
        elif "error" in answer and key in sent_keys:
            errors.append(answer)
    missing = [value for key, value in sent_keys.items() if key not in seen]
    duplicated = [value for key, value in sent_keys.items() if seen.get(key, 0) > 1]
    return IdAudit(missing, stray, duplicated, errors)


async def check_concurrency(channel: RawChannel, *, count: int, era: str | None, timeout_s: float) -> CheckResult:
    """`count` requests written in one go with explicit ids; every id answered exactly once."""
    started = time.monotonic()
    method = cheap_method(era)
    ids = request_ids(count)
    mark = len(channel.received)
    burst = [json.dumps(channel.request_message(method, request_id=i)).encode() for i in ids]
    try:
        channel.send_line(b"\n".join(burst))
    except ServerGone as exc:
        return CheckResult(CONCURRENCY, Status.failed, f"expected to send {count} requests, the server is gone: "
                           f"{exc}", elapsed_ms(started))
    await channel.wait_until(lambda: len(responses(channel.received[mark:])) >= count, timeout_s)
    burst_ms = elapsed_ms(started)
    audit = audit_ids(ids, responses(channel.received[mark:]))
    sentinel = None
    if audit.ok:  # duplicates would be written before the answer to a request sent after the burst
        try:
            sentinel = (await channel.request(method, timeout_s=timeout_s))["id"]
        except (TimeoutError, ServerGone):
            sentinel = None
        audit = audit_ids(ids, responses(channel.received[mark:]),
                          also_expected=(sentinel,) if sentinel is not None else ())
    details = {"requests": count, "method": method, "burst_ms": burst_ms, "missing": audit.missing[:20],
               "stray": audit.stray[:20], "duplicated": audit.duplicated[:20], "errors": audit.errors[:5]}
    if audit.ok:
        return CheckResult(CONCURRENCY, Status.passed, f"{count} concurrent {method} requests each answered once "
                           f"with its own id in {burst_ms:.1f} ms", elapsed_ms(started), details)
    got = []
    if audit.missing:
        got.append(f"{len(audit.missing)} unanswered (e.g. {audit.missing[:3]})")
    if audit.stray:
        got.append(f"{len(audit.stray)} answers with ids never sent (e.g. {audit.stray[:3]})")
    if audit.duplicated:
        got.append(f"{len(audit.duplicated)} ids answered twice (e.g. {audit.duplicated[:3]})")
    if audit.errors:
        got.append(f"{len(audit.errors)} error answers (e.g. {audit.errors[0].get('error')})")
    if channel.closed:
        got.append(f"server {channel.proc.exit_description()}")
    return CheckResult(CONCURRENCY, Status.failed, f"expected {count} concurrent {method} requests each answered "
                       f"once with its own id; got {', '.join(got)}", elapsed_ms(started), details)
