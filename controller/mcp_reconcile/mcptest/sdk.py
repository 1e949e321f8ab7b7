"""The official SDK over a process that mcptest owns, for all well-formed traffic.

`mcp.Client` spawns and kills its own stdio servers; the suite needs the process itself (spawn
time, stdin close, group survivors), so it spawns with `raw.ServerProcess` and hands the SDK a
transport over that process's pipes. Closing the transport leaves the process running: stopping
it is the suite's job.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types
from mcp import Client
from mcp.shared.message import SessionMessage

from mcp_reconcile import protocol
from mcp_reconcile.mcptest.raw import ServerGone, ServerProcess, id_key
from mcp_reconcile.protocol import era_of


class Recorder:
    """Keeps the answers to some methods as the server wrote them, before the SDK validates them.

    A check that judges what the server really sent (say, a tool's inputSchema the SDK itself
    rejects) reads it here; only requests of `methods` are tracked, so the cost stays off the
    performance check's path.
    """

    def __init__(self, methods: frozenset[str] = frozenset({"tools/list"})) -> None:
        self.methods = methods
        self.results: dict[str, list[Any]] = {}
        self._pending: dict[str, str] = {}

    def sent(self, message: SessionMessage) -> None:
        method = getattr(message.message, "method", None)
        if method in self.methods:
            self._pending[id_key(getattr(message.message, "id", None))] = method

    def received(self, line: bytes) -> None:
        if not self._pending:
            return
        try:
            answer = json.loads(line)
        except ValueError:
            return
        if isinstance(answer, dict) and (method := self._pending.pop(id_key(answer.get("id")), None)):
            self.results.setdefault(method, []).append(answer.get("result"))


@asynccontextmanager
async def process_transport(proc: ServerProcess, recorder: Recorder | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """Bridge the process's stdout lines and stdin to the SDK's message streams."""
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)

    async def server_to_session() -> None:
        async with to_session:
            with contextlib.suppress(ValueError, OSError):  # over-long line or broken pipe: end of stream
                while (line := await proc.read_line()) is not None:
                    if not line.strip():
                        continue
                    if recorder is not None:
                        recorder.received(line)
                    try:
                        item: SessionMessage | Exception = SessionMessage(
                            mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
                    except ValueError as exc:  # the SDK surfaces parse errors as values, so do we
                        item = exc
                    try:
                        await to_session.send(item)
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return

    async def session_to_server() -> None:
        async with from_session:
            async for message in from_session:
                if recorder is not None:
                    recorder.sent(message)
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True).encode()
                with contextlib.suppress(ServerGone):  # a dead server shows as end of stdout
                    proc.write_line(data)

    async with anyio.create_task_group() as tasks, read_stream, write_stream:
        tasks.start_soon(server_to_session)
        tasks.start_soon(session_to_server)
        try:
            yield read_stream, write_stream
        finally:
            tasks.cancel_scope.cancel()


# Bound on closing a session (the SDK's own stdio and HTTP teardown waits are bounded too).
CLOSE_TIMEOUT_S = 5.0


@dataclass
class Session:
    """An open SDK client and what its connect negotiated."""

    client: Client
    era: str
    protocol_version: str
    server_info: dict[str, Any] | None
    connected_at: float  # time.monotonic() when the connect returned


@dataclass
class SessionRun:
    """How `run_session` went: the session it opened, or why there was none."""

    session: Session | None
    error: str | None = None


async def run_session(client: Client, *, connect_timeout_s: float,
                      body: Callable[[Session], Awaitable[None]]) -> SessionRun:
    """Connect `client` (mode auto: discover, else initialize) within the bound, run `body`, close.

    The connect bound is a cancel scope around the client's whole life whose deadline is lifted
    once connected: the SDK's task groups must nest inside it, so a `fail_after` around the
    connect alone would not do. Errors of `body` propagate; errors of the close do not.
    """
    session: Session | None = None
    finished = False
    try:
        with anyio.CancelScope(deadline=anyio.current_time() + connect_timeout_s) as scope:
            async with client:
                scope.deadline = math.inf
                info = client.server_info
                session = Session(client, era_of(client), client.protocol_version,
                                  info.model_dump(mode="json", exclude_none=True) if info is not None else None,
                                  time.monotonic())
                await body(session)
                finished = True
                scope.deadline = anyio.current_time() + CLOSE_TIMEOUT_S
    except Exception as exc:
        if session is None:
            return SessionRun(None, describe_error(exc, timeout_s=connect_timeout_s))
        if not finished:
            raise
    if session is None:
        return SessionRun(None, "no answer")
    return SessionRun(session)


def stdio_client(proc: ServerProcess, *, mode: str = "auto", recorder: Recorder | None = None) -> Client:
    """An SDK client over `proc`'s pipes; response caching off so every call reaches the server."""
    return Client(process_transport(proc, recorder), mode=mode, cache=None)


def describe_error(exc: BaseException, *, timeout_s: float | None = None) -> str:
    """One line saying what came back instead of an answer (for 'expected X, got Y' messages)."""
    if isinstance(exc, ServerGone):
        return f"the server closed its stdout: it {exc}"
    return protocol.describe_error(exc, timeout_s=timeout_s)
