"""`spec.sessions: isolated`: one server process per client session (SPEC section 7, "Sessions").

A shared server holds one set of subscriptions, one log level and one set of session-scoped state for every
client; some servers keep per-client state (a session's resources, a login) that must not leak. With
isolation each handshake-era session gets a server process of its own:
- started by the client's own `initialize` (forwarded as is, so the server sees the client's real capabilities
  and roots, and answers what it would answer natively), or on the session's next request after a crash, a
  runner restart or a swap (the client's initialize is replayed, then `notifications/initialized`);
- stopped when the client DELETEs its session, when the session has been idle for `idle_s`, when the runner
  stops, or (after draining) when a new generation replaces the server;
- at most `max_sessions` at once: one more initialize is refused with a clear error;
- each in its own process group with PR_SET_PDEATHSIG, like the main server (proc.spawn_server): a runner
  killed with -9 takes them with it.
The runner's main server process stays: health probes and 2026-07-28 clients (which have no sessions) use it.

Stdlib only: the runner imports this.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mcp_reconcile.serverlink import ServerLink, ServerUnavailable

# Defaults of spec.maxSessions and spec.sessionIdleSeconds.
DEFAULT_MAX_SESSIONS = 32
DEFAULT_IDLE_S = 600.0
# Bound on one session server's start: spawn to answered initialize (npx cold starts are slow).
START_TIMEOUT_S = 60.0
# How long a replaced session server may finish its requests before it is stopped anyway.
DRAIN_TIMEOUT_S = 30.0


class SessionLimit(Exception):
    """The maximum number of isolated sessions is open."""


class SessionGone(Exception):
    """The session's server cannot be started again (its initialize is not known): the client must start over."""


class ServerProcessLike(Protocol):
    """What isolation needs of a spawned server: its link, and a way to stop it (and its group)."""

    link: ServerLink

    async def stop(self) -> None: ...


Spawn = Callable[[], Awaitable[ServerProcessLike]]


@dataclass
class _Entry:
    process: ServerProcessLike | None = None
    starting: asyncio.Future[ServerProcessLike] | None = None
    retiring: list[ServerProcessLike] = field(default_factory=list)   # an older generation's, finishing requests
    last_used: float = field(default_factory=time.monotonic)

    @property
    def holds_a_slot(self) -> bool:
        return self.process is not None or self.starting is not None or bool(self.retiring)


class SessionServers:
    """The isolated sessions' server processes of one runner, keyed by session id."""

    def __init__(self, spawn: Spawn, *, max_sessions: int = DEFAULT_MAX_SESSIONS, idle_s: float = DEFAULT_IDLE_S,
                 on_change: Callable[[list[int]], None] = lambda pids: None,
                 hook: Callable[[str, ServerLink], None] = lambda session_id, link: None,
                 log: Callable[[str], None] = lambda message: None) -> None:
        self.spawn = spawn              # the runner swaps this for a new generation's
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._entries: dict[str, _Entry] = {}
        self._on_change = on_change     # the live servers' pids changed (the run record lists them)
        self._hook = hook               # route what a session's server sends to that session only
        self._log = log
        self._stopping: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.holds_a_slot)

    def pids(self) -> list[int]:
        return [pid for e in self._entries.values() if e.process is not None
                and isinstance(pid := getattr(e.process, "pid", None), int)]

    async def open(self, session_id: str, initialize: dict[str, Any]) -> dict[str, Any]:
        """Start the session's server with the client's own initialize; return the server's response (an
        error response leaves nothing running). Raises SessionLimit, ServerUnavailable, TimeoutError."""
        if len(self) >= self.max_sessions:
            raise SessionLimit(f"{self.max_sessions} isolated sessions are open (spec.maxSessions); close one "
                               "(DELETE) or wait for an idle one to end")
        entry = self._entries[session_id] = _Entry()
        try:
            process, response = await self._start(session_id, entry, initialize, replay=False)
        except BaseException:
            if self._entries.get(session_id) is entry:
                del self._entries[session_id]
            raise
        if "result" not in response:
            self._entries.pop(session_id, None)
            await self._stop(process)
            return response
        self._hook(session_id, process.link)
        return response

    async def link(self, session_id: str, initialize: dict[str, Any] | None) -> ServerLink:
        """The session's server, started again (initialize replayed) when it is not running: after a crash,
        a runner restart or a swap. Raises ServerUnavailable when it cannot be started."""
        entry = self._entries.get(session_id)
        if entry is None:
            if len(self) >= self.max_sessions:
                raise ServerUnavailable(f"{self.max_sessions} isolated sessions are open (spec.maxSessions)")
            entry = self._entries[session_id] = _Entry()
        entry.last_used = time.monotonic()
        if entry.starting is not None:
            return (await asyncio.shield(entry.starting)).link
        if entry.process is not None:
            if not entry.process.link.closed:
                return entry.process.link
            crashed, entry.process = entry.process, None   # reap it before its successor starts
            await self._stop(crashed)
        if initialize is None:   # a session opened while the server was shared: nothing to replay
            raise SessionGone("this session's server cannot be started again: start a new session")
        process, response = await self._start(session_id, entry, initialize, replay=True)
        if "result" not in response:
            self._entries.pop(session_id, None)
            await self._stop(process)
            raise ServerUnavailable(f"the session's server refused the replayed initialize: {response.get('error')}")
        self._hook(session_id, process.link)
        return process.link

    async def _start(self, session_id: str, entry: _Entry, initialize: dict[str, Any], *,
                     replay: bool) -> tuple[ServerProcessLike, dict[str, Any]]:
        starting: asyncio.Future[ServerProcessLike] = asyncio.get_running_loop().create_future()
        entry.starting = starting
        process: ServerProcessLike | None = None
        try:
            process = await self.spawn()
            response = await process.link.request({**initialize, "id": initialize.get("id", "initialize")},
                                                  timeout_s=START_TIMEOUT_S)
            if replay and "result" in response:
                await process.link.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException as exc:
            if process is not None:
                await self._stop(process)
            if not starting.done():
                starting.set_exception(exc if isinstance(exc, Exception) else ServerUnavailable("cancelled"))
                starting.exception()   # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            entry.starting = None
        if self._entries.get(session_id) is not entry:   # the session ended while its server started
            await self._stop(process)
            raise ServerUnavailable("the session ended while its server was starting")
        entry.process = process
        starting.set_result(process)
        self._on_change(self.pids())
        return process, response

    def links(self, session_id: str) -> list[ServerLink]:
        """The session's server links, the serving one first, then those of an older generation still finishing
        requests (a client's answer to a server request, or its cancel, may be for either)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return []
        return [p.link for p in ([entry.process] if entry.process else []) + entry.retiring]

    def touch(self, session_id: str) -> None:
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.last_used = time.monotonic()

    def idle(self, now: float | None = None) -> list[str]:
        """Sessions whose server has had no request for idle_s and has none in flight."""
        now = time.monotonic() if now is None else now
        return [sid for sid, e in self._entries.items() if e.process is not None and e.starting is None
                and now - e.last_used >= self.idle_s and e.process.link.idle]

    def close(self, session_id: str) -> None:
        """The session ended: stop its server (in the background; one still starting stops once started)."""
        entry = self._entries.pop(session_id, None)
        if entry is not None and entry.process is not None:
            self._background(self._stop(entry.process))

    def retire_all(self) -> None:
        """A new generation serves: every session's server finishes its requests and stops; each session
        gets a new one (its initialize replayed) on its next request."""
        for entry in self._entries.values():
            if entry.process is not None:
                entry.retiring.append(entry.process)
                self._background(self._drain_and_stop(entry, entry.process))
                entry.process = None

    async def close_all(self) -> None:
        """The runner stops: every session's server stops now (in parallel)."""
        processes = [p for e in self._entries.values() for p in ([e.process] if e.process else []) + e.retiring]
        self._entries.clear()
        await asyncio.gather(*(self._stop(p) for p in processes), *self._stopping, return_exceptions=True)

    async def _drain_and_stop(self, entry: _Entry, process: ServerProcessLike) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await process.link.drained()
        try:
            await self._stop(process)
        finally:
            if process in entry.retiring:
                entry.retiring.remove(process)

    async def _stop(self, process: ServerProcessLike) -> None:
        try:
            await process.stop()
        finally:
            self._on_change(self.pids())

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
