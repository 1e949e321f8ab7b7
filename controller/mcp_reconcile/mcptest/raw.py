"""A spawned server with thin JSON-lines framing on its stdio, for what the SDK will not send.

`ServerProcess` wraps one server spawned by `proc.spawn_server` (its own process group, stderr to
a log file): lines in, lines out, stdin close, bounded waits for exit, the group's survivors.
`RawChannel` frames JSON-RPC on top: arbitrary lines (malformed JSON, non-objects), requests with
explicit ids, and a record of every message the server wrote, so checks can look for strays and
duplicates. The SDK talks to the same
process through `mcptest.sdk.process_transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mcp_reconcile import proc
from mcp_reconcile.model import LaunchSpec

# For a server whose stdout just closed to finish exiting and flush its stderr, so a message can quote both.
SETTLE_S = 1.0
# How much of the server's stderr a failure message quotes.
STDERR_TAIL_CHARS = 600


class ServerGone(Exception):
    """The server closed its stdout (it exited or is exiting) before answering."""


class ServerProcess:
    """One spawned server (`proc.spawn_server`): newline-framed stdio, bounded waits, its group."""

    def __init__(self, server: proc.ServerProcess, *, started_at: float, stderr_path: Path) -> None:
        self.server = server
        self.started_at = started_at
        self.stderr_path = stderr_path

    @classmethod
    async def start(cls, launch: LaunchSpec, *, stderr_path: Path) -> ServerProcess:
        """Spawn `launch` (with exactly its env) in a process group of its own, its secrets scrubbed from its
        stderr log; OSError if it cannot run."""
        started_at = time.monotonic()
        server = await proc.spawn_server(launch.argv, launch.env, launch.cwd, stderr_path,
                                         secrets=launch.secret_values())
        return cls(server, started_at=started_at, stderr_path=stderr_path)

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def pgid(self) -> int:
        return self.server.pgid

    @property
    def returncode(self) -> int | None:
        return self.server.returncode

    async def read_line(self) -> bytes | None:
        """The next stdout line without its newline; None at end of stream. One reader at a time."""
        assert self.server.process.stdout is not None
        line = await self.server.process.stdout.readline()
        if not line:
            return None
        return line.rstrip(b"\r\n") if line.endswith(b"\n") else line

    def write_line(self, data: bytes) -> None:
        """Queue one line for the server's stdin; ServerGone when the pipe is closed or broken."""
        stdin = self.server.process.stdin
        if stdin is None or stdin.is_closing():
            raise ServerGone(self.exit_description())
        stdin.write(data + b"\n")

    def close_stdin(self) -> None:
        """Close the server's stdin: the MCP stdio way to ask it to exit (after flushing writes)."""
        stdin = self.server.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the server to exit; its exit status, or None while it runs."""
        return await self.server.wait_exit(timeout_s)

    def survivors(self) -> list[int]:
        """Pids still alive in the server's process group."""
        return proc.group_members(self.pgid)

    async def stop(self, timeout_s: float) -> int | None:
        """The one stop sequence (`proc.stop_server`): stdin close, wait, SIGTERM, SIGKILL, group kill."""
        return await proc.stop_server(self.server, stop_timeout_s=timeout_s)

    async def describe_exit(self) -> str:
        """`exit_description`, after a server that closed its stdout had a moment to exit and flush stderr."""
        stdout = self.server.process.stdout
        if stdout is not None and stdout.at_eof() and await self.wait_exit(SETTLE_S) is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(asyncio.shield(self.server.stderr_pump), SETTLE_S)
        return self.exit_description()

    def exit_description(self) -> str:
        """'exited with code 1' / 'was killed by SIGKILL' / 'is still running', plus the stderr tail.

        Reads after "the server": "the server exited with code 2; stderr: '...'".
        """
        code = self.returncode
        if code is None:
            what = "is still running"
        elif code < 0:
            what = f"was killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with code {code}"
        tail = self.stderr_tail()
        return f"{what}; stderr: {tail!r}" if tail else what

    def stderr_tail(self, chars: int = STDERR_TAIL_CHARS) -> str:
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - chars))
                return fh.read().decode(errors="replace").strip()
        except OSError:
            return ""


def id_key(request_id: Any) -> str:
    """A hashable key that keeps 7 and "7" apart, as JSON-RPC does."""
    return json.dumps(request_id, sort_keys=True)


class RawChannel:
    """JSON-RPC framing over a ServerProcess, recording everything the server writes.

    `meta`, when set, is stamped into every request's `params._meta` (the 2026-07-28 era).
    Requests from the server are answered -32601 so the server never waits on us.
    """

    def __init__(self, proc: ServerProcess, *, meta: Mapping[str, Any] | None = None) -> None:
        self.proc = proc
        self.meta = dict(meta) if meta else None
        self.received: list[Any] = []
        self.unparsed: list[bytes] = []
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.closed = False
        self.opening: dict[str, Any] | None = None  # the result that opened the era's session
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RawChannel:
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read_loop(self) -> None:
        try:
            while (line := await self.proc.read_line()) is not None:
                self._take(line)
                self._wake()
        except (ValueError, OSError):  # an over-long line or a broken pipe: the stream is done
            pass
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _take(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError:
            self.unparsed.append(line)
            return
        self.received.append(message)
        for item in message if isinstance(message, list) else [message]:
            if not isinstance(item, dict) or "id" not in item:
                continue
            if "method" in item:  # a request from the server
                with contextlib.suppress(ServerGone):
                    self.send({"jsonrpc": "2.0", "id": item["id"],
                               "error": {"code": -32601, "message": "not supported by the test client"}})
            elif "result" in item or "error" in item:
                self.answers.setdefault(id_key(item["id"]), []).append(item)

    def next_id(self) -> int:
        return next(self._ids)

    def send_line(self, data: bytes) -> None:
        self.proc.write_line(data)

    def send(self, message: Any) -> None:
        self.proc.write_line(json.dumps(message, separators=(",", ":")).encode())

    def request_message(self, method: str, params: Mapping[str, Any] | None = None, *,
                        request_id: Any = None) -> dict[str, Any]:
        """A JSON-RPC request, with the era's `_meta` stamped in when the channel has one."""
        body: dict[str, Any] = dict(params or {})
        if self.meta:
            body["_meta"] = {**self.meta, **(body.get("_meta") or {})}
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id() if request_id is None else request_id,
                                   "method": method}
        if body:
            message["params"] = body
        return message

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            message["params"] = dict(params)
        self.send(message)

    async def request(self, method: str, params: Mapping[str, Any] | None = None, *,
                      timeout_s: float, request_id: Any = None) -> dict[str, Any]:
        """Send a request and return the server's first answer to its id.

        Raises TimeoutError when none came in `timeout_s`, ServerGone when stdout closed first.
        """
        message = self.request_message(method, params, request_id=request_id)
        key = id_key(message["id"])
        self.send(message)
        if not await self.wait_until(lambda: key in self.answers, timeout_s):
            if self.closed:
                raise ServerGone(self.proc.exit_description())
            raise TimeoutError(f"no answer to {method} (id {message['id']}) within {timeout_s:g} s")
        return self.answers[key][0]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wake on each message until `predicate()` holds, stdout closes, or `timeout_s` passes."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate() and not self.closed:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return predicate()
