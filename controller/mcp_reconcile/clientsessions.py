"""The endpoint's handshake-era client sessions, and who gets what the server sends on its own (SPEC section 7).

A session is one client: its capabilities, the version it was told, its GET stream, its subscriptions and log
level. Messages tied to no request go to the sessions that want them (`wants`): `resources/updated` to that
URI's subscribers, a log message to the sessions that asked for its level, everything else (list_changed) to
all. Once a session has opened its GET stream, each such message gets an event id and is kept (bounded), so a
client whose stream dropped resumes with Last-Event-ID. A POST's SSE stream is numbered too and kept until
its client has read the answer: a client whose POST stream dropped resumes it with GET and Last-Event-ID
(Streamable HTTP resumability of the handshake era; 2026-07-28 has none). Sessions are persisted through
sessionbook.py and so outlive the runner that opened them. Stdlib only: the runner imports this.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_reconcile.httpio import MAX_STREAM_BACKLOG, Stream
from mcp_reconcile.serverlink import can_answer
from mcp_reconcile.sessionbook import MAX_SESSIONS, SessionBook

# Log levels in order (RFC 5424, as MCP names them): a session that set a level gets what is at or above it.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# How long after its GET stream dropped a session's messages are still kept for a resume; after that (a client
# gone for good) nothing is kept for it, so sessions that never come back cost no memory.
RESUME_WINDOW_S = 300.0
# POST streams a session keeps for a resume at most (the oldest answered one goes first).
MAX_POST_STREAMS = 64

Sink = Callable[[dict[str, Any]], None]
Placer = Callable[[dict[str, Any], str | None], str | None]


@dataclass
class PostStream:
    """One POST's SSE stream, every event kept until the client has read the answer (`done`, then dropped)."""

    key: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done: bool = False                   # the answer is the last event
    done_at: float | None = None
    listener: Stream | None = None       # the GET that resumed it, reading it live
    added: int = 0

    def add(self, message: dict[str, Any], *, answer: bool = False) -> str:
        self.added += 1
        event_id = f"{self.key}-{self.added}"
        self.events.append((event_id, message))
        if len(self.events) > MAX_STREAM_BACKLOG:   # a resume from before the kept ones finds nothing
            del self.events[0]
        if answer:
            self.done, self.done_at = True, time.monotonic()
        if self.listener is not None:
            self.listener.put(message, event_id)
            if answer:
                self.listener.end()
        return event_id

    def after(self, event_id: str) -> list[tuple[str, dict[str, Any]]]:
        ids = [known for known, _ in self.events]
        return self.events[ids.index(event_id) + 1:] if event_id in ids else []


class PostRecord:
    """Numbers a POST stream's events and keeps them for a resume; the session's PostStream is opened at the
    first event only, so a call the server says nothing about keeps nothing."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.stream: PostStream | None = None

    def __call__(self, message: dict[str, Any], answer: bool) -> str:
        if self.stream is None:
            self.stream = self.session.open_post_stream()
        return self.stream.add(message, answer=answer)

    def delivered(self) -> None:
        """The client has read the answer: nothing more to keep."""
        if self.stream is not None:
            self.session.post_streams.pop(self.stream.key, None)


@dataclass
class Session:
    """A handshake-era client: what it can do, the version it speaks, its GET stream and subscriptions."""

    capabilities: dict[str, Any]
    protocol_version: str
    stream: Stream | None = None
    subscriptions: set[str] = field(default_factory=set)
    init: dict[str, Any] | None = None   # the client's initialize (replayed to an isolated session's server)
    log_level: str | None = None         # what the client asked with logging/setLevel
    history: deque[tuple[str, dict[str, Any]]] | None = None   # GET-stream messages by event id, once streamed
    sent: int = 0
    stream_closed_at: float | None = None   # monotonic time its last GET stream ended (None: open, or never)
    post_streams: dict[str, PostStream] = field(default_factory=dict)   # POST streams not read to the answer
    posts: int = 0
    # event ids name the runner that numbered them (runners are forked from one template, so per session, not
    # per module): a Last-Event-ID from an earlier runner of this session matches none here
    epoch: str = field(default_factory=lambda: os.urandom(4).hex())

    def open_post_stream(self) -> PostStream:
        """A POST's SSE stream, resumable until its answer is read (or RESUME_WINDOW_S after it came)."""
        self.forget_answered_post_streams()
        if len(self.post_streams) >= MAX_POST_STREAMS:
            oldest = next((key for key, kept in self.post_streams.items() if kept.done), None)
            del self.post_streams[oldest or next(iter(self.post_streams))]
        self.posts += 1
        stream = PostStream(f"{self.epoch}-p{self.posts}")
        self.post_streams[stream.key] = stream
        return stream

    def forget_answered_post_streams(self) -> None:
        """POST streams answered more than RESUME_WINDOW_S ago: their client is not coming back for them."""
        now = time.monotonic()
        for key, kept in list(self.post_streams.items()):
            if kept.done_at is not None and now - kept.done_at > RESUME_WINDOW_S:
                del self.post_streams[key]

    def names_a_post_stream(self, last_event_id: str) -> bool:
        """Whether an event id has the form of a POST stream's (kept or not)."""
        return "-p" in last_event_id

    def post_stream_of(self, last_event_id: str) -> PostStream | None:
        """The POST stream an event id of it names (None: a GET-stream id, or one not kept)."""
        key = last_event_id.rpartition("-")[0]
        return self.post_streams.get(key)

    def open_stream(self, last_event_id: str | None) -> Stream:
        """A new GET stream (replacing an older one), starting after `last_event_id` when the session has it."""
        if self.stream is not None:
            self.stream.end()
        stream = self.stream = Stream()
        self.stream_closed_at = None
        if self.history is None:
            self.history = deque(maxlen=MAX_STREAM_BACKLOG)
        for event_id, message in self.replay_after(last_event_id) if last_event_id else ():
            stream.put(message, event_id)
        return stream

    def deliver(self, message: dict[str, Any]) -> None:
        """To the session's GET stream (kept for a resume when the stream is down, once it has had one)."""
        if self.history is not None and self.stream is None and self.stream_closed_at is not None \
                and time.monotonic() - self.stream_closed_at > RESUME_WINDOW_S:
            self.history = None   # gone too long to resume: keep nothing more for it
        if self.history is None:
            if self.stream is not None:
                self.stream.put(message)
            return
        self.sent += 1
        event_id = f"{self.epoch}-{self.sent}"
        self.history.append((event_id, message))
        if self.stream is not None:
            self.stream.put(message, event_id)

    def replay_after(self, last_event_id: str) -> list[tuple[str, dict[str, Any]]]:
        """What followed `last_event_id`; nothing when it is unknown (another runner's, or long gone)."""
        ids = [event_id for event_id, _ in self.history or ()]
        if last_event_id not in ids:
            return []
        return list(self.history or ())[ids.index(last_event_id) + 1:]


def wants(session: Session, message: dict[str, Any]) -> bool:
    """resources/updated: subscribers of that URI; a log message: sessions that asked for its level."""
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    method = message.get("method")
    if method == "notifications/resources/updated":
        return params.get("uri") in session.subscriptions
    if method == "notifications/message":
        level = params.get("level")
        return session.log_level is not None and level in LOG_LEVELS and \
            LOG_LEVELS.index(level) >= LOG_LEVELS.index(session.log_level)
    return True


class SessionTable:
    """Every open session by id, persisted; at most MAX_SESSIONS (the oldest is ended first)."""

    def __init__(self, book: SessionBook) -> None:
        self._book = book
        self._by_id: dict[str, Session] = {
            sid: Session(info["capabilities"], info["version"], init=info.get("init"))
            for sid, info in book.load().items()}
        self.on_forget: Callable[[str], None] = lambda session_id: None

    def get(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, session: Session, session_id: str | None = None) -> str:
        session_id = session_id or os.urandom(16).hex()
        self._by_id[session_id] = session
        if len(self._by_id) > MAX_SESSIONS:
            self.forget(next(iter(self._by_id)))
        self._book.opened(session_id, session.capabilities, session.protocol_version, live=self._live,
                          init=session.init)
        return session_id

    def forget(self, session_id: str) -> None:
        session = self._by_id.pop(session_id)
        if session.stream is not None:
            session.stream.end()
        self.on_forget(session_id)
        self._book.ended(session_id, live=self._live)

    def fan_out(self, message: dict[str, Any]) -> None:
        """A notification tied to no request: every session that wants it."""
        for session in self._by_id.values():
            if wants(session, message):
                session.deliver(message)

    def to_a_stream(self, message: dict[str, Any], capability: str | None) -> str | None:
        """A server request no request in flight can carry: the newest capable session with a stream."""
        for session_id, session in reversed(self._by_id.items()):
            if session.stream is not None and can_answer(session.capabilities, message):
                session.deliver(message)
                return session_id
        return None

    def deliver_to(self, message: dict[str, Any], session_id: str | None) -> None:
        """One session's GET stream (kept for its resume like any of its messages)."""
        session = self._by_id.get(session_id) if session_id is not None else None
        if session is not None:
            session.deliver(message)

    def sweep(self) -> None:
        """Drop what no client will resume any more (the gateway's periodic sweep)."""
        for session in self._by_id.values():
            if session.post_streams:
                session.forget_answered_post_streams()

    def only_to(self, session_id: str) -> tuple[Sink, Placer]:
        """Sinks that reach one session only: an isolated session's own server talks to no one else."""

        def to_session(message: dict[str, Any]) -> None:
            session = self._by_id.get(session_id)
            if session is not None and wants(session, message):
                session.deliver(message)

        def server_request(message: dict[str, Any], capability: str | None) -> str | None:
            session = self._by_id.get(session_id)
            if session is None or session.stream is None or not can_answer(session.capabilities, message):
                return None
            session.deliver(message)
            return session_id

        return to_session, server_request

    def _live(self) -> dict[str, dict[str, Any]]:
        """What compaction keeps of each open session (the initialize too, for isolated sessions' replays)."""
        return {sid: {"capabilities": s.capabilities, "version": s.protocol_version,
                      **({"init": s.init} if s.init is not None else {})} for sid, s in self._by_id.items()}
