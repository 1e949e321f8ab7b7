"""A spawned server with thin JSON-lines framing on its stdio, for what the SDK will not send.

`ServerProcess` owns one server process (its own process group) and its pipes: lines in, lines out,
stdin close, bounded waits for exit, the group's survivors. `RawChannel` frames JSON-RPC on top:
arbitrary lines (malformed JSON, non-objects), requests with explicit ids, and a record of every
message the server wrote, so checks can look for strays and duplicates. The SDK talks to the same
process through `mcptest.sdk.process_transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from mcp_reconcile.model import LaunchSpec
from mcp_reconcile.proc import signal_group

# Longest stdout line we accept (a tools/list of a big server is far below this).
LINE_LIMIT_BYTES = 16 * 1024 * 1024
# Between SIGTERM to the group and SIGKILL when a server ignored its stdin closing.
TERM_GRACE_S = 2.0
# For the kernel to deliver SIGKILL and for us to reap.
KILL_REAP_S = 2.0
# How much of the server's stderr a failure message quotes.
STDERR_TAIL_CHARS = 600


class ServerGone(Exception):
    """The server closed its stdout (it exited or is exiting) before answering."""


def _spawn(argv: tuple[str, ...], env: Mapping[str, str], cwd: str | None,
           stderr_path: Path) -> subprocess.Popen[bytes]:
    """Start the server in a process group of its own with piped stdin/stdout, stderr to a file.

    The one place mcptest creates a process: to be replaced by `proc.spawn_server` once it exists.
    """
    with open(stderr_path, "ab") as stderr:
        return subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                env=dict(env), cwd=cwd, start_new_session=True)


class _WritePipe(asyncio.Protocol):
    """Remembers that the write end broke, so writes to a dead server fail loudly."""

    def __init__(self) -> None:
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class ServerProcess:
    """One spawned server: newline-framed stdio, bounded waits, and its process group."""

    def __init__(self, popen: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.WriteTransport, write_pipe: _WritePipe, read_transport: asyncio.BaseTransport,
                 *, started_at: float, stderr_path: Path) -> None:
        self.popen = popen
        self.started_at = started_at
        self.stderr_path = stderr_path
        self._reader = reader
        self._writer = writer
        self._write_pipe = write_pipe
        self._read_transport = read_transport

    @classmethod
    async def start(cls, launch: LaunchSpec, *, stderr_path: Path) -> ServerProcess:
        """Spawn `launch` (its env over ours) and connect its pipes to this event loop."""
        loop = asyncio.get_running_loop()
        started_at = time.monotonic()
        popen = _spawn(launch.argv, {**os.environ, **launch.env}, launch.cwd, stderr_path)
        assert popen.stdin is not None and popen.stdout is not None
        try:
            reader = asyncio.StreamReader(limit=LINE_LIMIT_BYTES)
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
            writer, write_pipe = await loop.connect_write_pipe(_WritePipe, popen.stdin)
        except BaseException:
            signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        return cls(popen, reader, writer, write_pipe, read_transport, started_at=started_at,
                   stderr_path=stderr_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        return self.popen.pid  # a new session: the server leads its own group

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def read_line(self) -> bytes | None:
        """The next stdout line without its newline; None at end of stream. One reader at a time."""
        line = await self._reader.readline()
        if not line:
            return None
        return line.rstrip(b"\r\n") if line.endswith(b"\n") else line

    def write_line(self, data: bytes) -> None:
        """Queue one line for the server's stdin; ServerGone when the pipe is closed or broken."""
        if self._write_pipe.lost or self._writer.is_closing():
            raise ServerGone(self.exit_description())
        self._writer.write(data + b"\n")

    def close_stdin(self) -> None:
        """Close the server's stdin: the MCP stdio way to ask it to exit (after flushing writes)."""
        if not self._writer.is_closing():
            self._writer.close()

    async def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to `timeout_s` for the server to exit and reap it; its exit code, or None if alive."""
        return await wait_exit(self.popen, timeout_s)

    def survivors(self) -> list[psutil.Process]:
        """Live (non-zombie) processes still in the server's process group, leader excluded if reaped."""
        return group_members(self.pgid)

    async def stop(self, timeout_s: float) -> int | None:
        """The one stop sequence: close stdin, wait, SIGTERM the group, wait, SIGKILL, reap.

        The group gets a final SIGKILL in any case, so no child of the server outlives the suite.
        """
        self.close_stdin()
        code = await self.wait_exit(timeout_s)
        if code is None:
            signal_group(self.pgid, signal.SIGTERM)
            code = await self.wait_exit(TERM_GRACE_S)
        if code is None:
            signal_group(self.pgid, signal.SIGKILL)
            code = await self.wait_exit(KILL_REAP_S)
        signal_group(self.pgid, signal.SIGKILL)
        self._read_transport.close()
        return code

    def exit_description(self) -> str:
        """'exited with code 1' / 'killed by SIGKILL' / 'still running', plus the stderr tail."""
        code = self.popen.poll()
        if code is None:
            what = "still running"
        elif code < 0:
            what = f"killed by {signal.Signals(-code).name}"
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


async def wait_exit(popen: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """Wait for a child's exit on its pidfd (an event, not a poll loop), reap it; None on timeout."""
    if popen.poll() is not None:
        return popen.returncode
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(_wait_blocking, popen, timeout_s)
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        await asyncio.wait_for(exited.wait(), timeout_s)
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return popen.wait()


def _wait_blocking(popen: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes whose process group is `pgid` (zombies are dead and excluded)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


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
