"""The stdio side of `mcp-reconcile connect` (connect.py): one client session forwarded to an endpoint.

Newline-delimited JSON-RPC from stdin is POSTed to the runner's endpoint (connecthttp.py); every message of the
answer (one JSON body, or an SSE stream of notifications and server requests ending with the response) goes to
stdout as one line, under a lock. After `initialize` the session's GET stream stays open for messages tied to
no request (list_changed, resources/updated, sampling/elicitation/ping requests), whose answers are POSTed back.
Requests run concurrently, one thread each, so a long tool call never holds up the next request or its
cancellation; notifications and responses go out in the order the client sent them.

Restarts are invisible: a refused or cut connection, or a 502/503, is retried with a bounded backoff under the
same session id (runners keep sessions across restarts); a session the runner does not know (404) is opened
again by replaying the client's own `initialize`. Past RETRY_BUDGET_S a request gets a JSON-RPC error naming
the endpoint; a transient error never ends the bridge. stdin closing does: in-flight requests finish (bounded),
the session is DELETEd, and `run` returns 0.

Stdlib only (import-linter `runner-lean`).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from mcp_reconcile.connecthttp import (
    Exchange,
    Refused,
    SessionGone,
    Target,
    Unreachable,
    message_headers,
    retry_worthy,
)

# Requests that change nothing: sent again when a response is cut short (any other may have been acted on).
SAFE_TO_RESEND = frozenset({"initialize", "ping", "tools/list", "prompts/list", "resources/list",
                            "resources/templates/list", "resources/read", "prompts/get", "server/discover",
                            "completion/complete"})
# How long a message waits for an unreachable endpoint (a restart, a crash loop) before the client is told.
RETRY_BUDGET_S = 60.0
# First and longest pause between two attempts (doubling): a restart takes about a second.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
# At stdin's end, in-flight requests may finish for this long before the bridge leaves.
DRAIN_TIMEOUT_S = 10.0
# Bound on the DELETE that ends the session at exit.
DELETE_TIMEOUT_S = 2.0
# A session stream that stayed open this long was healthy: the next reopen starts from the shortest pause.
STREAM_HEALTHY_S = 1.0
# Sessions opened again for one message before it is answered with an error (a runner forgetting at once).
MAX_REOPEN = 3
# The JSON-RPC code of the bridge's own errors (implementation-defined server error).
BRIDGE_ERROR = -32000
# The id of the `initialize` the bridge replays itself: never one a client would choose.
_REPLAY_ID = "mcp-reconcile-connect/initialize"


def say(name: str, text: str) -> None:
    sys.stderr.write(f"mcp-reconcile connect {name}: {text}\n")
    sys.stderr.flush()


def _is_request(message: Mapping[str, Any]) -> bool:
    return isinstance(message.get("method"), str) and "id" in message


class Bridge:
    """stdin -> the endpoint -> stdout, for one client session."""

    def __init__(self, locate: Callable[[], Target], out: BinaryIO, *, name: str,
                 retry_budget_s: float = RETRY_BUDGET_S, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        self._locate, self._out, self.name = locate, out, name
        self.retry_budget_s, self.drain_timeout_s = retry_budget_s, drain_timeout_s
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._initialize: dict[str, Any] | None = None   # the client's own, replayed for a new session
        self._out_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._stop = threading.Event()                   # the bridge is leaving: every wait ends
        self._busy = 0                                    # requests not answered yet
        self._idle = threading.Condition()
        self._ordered: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._handshake = threading.Event()              # clear while an initialize is on its way: others wait
        self._handshake.set()
        self._listener: threading.Thread | None = None
        self._stream: Exchange | None = None

    def say(self, text: str) -> None:
        say(self.name, text)

    # stdin ----------------------------------------------------------------------------------------------
    def run(self, stdin: BinaryIO) -> int:
        """Forward until stdin closes, then leave cleanly; always 0 (transient errors are the client's news)."""
        sender = threading.Thread(target=self._send_in_order, name="ordered", daemon=True)
        sender.start()
        try:
            for line in stdin:
                self.take(line)
        except KeyboardInterrupt:   # SIGINT, or SIGTERM (connect.py): the client wants us gone now
            self.drain_timeout_s = 0.0
        self._leave(sender)
        return 0

    def take(self, line: bytes) -> None:
        """One line from the client: requests start at once, the rest queue behind each other."""
        if not line.strip():
            return
        try:
            parsed = json.loads(line)
        except ValueError:
            self.say(f"ignored a line on stdin that is not JSON ({len(line)} bytes)")
            return
        for message in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(message, dict):
                self.say("ignored a JSON value on stdin that is not a JSON-RPC message")
            elif _is_request(message):
                with self._idle:
                    self._busy += 1
                if message["method"] == "initialize":
                    self._handshake.clear()
                threading.Thread(target=self._request, args=(message,), daemon=True).start()
            else:
                self._ordered.put(message)

    def _request(self, message: dict[str, Any]) -> None:
        try:
            self.deliver(message)
        finally:
            if message["method"] == "initialize":
                self._handshake.set()
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _send_in_order(self) -> None:
        while (message := self._ordered.get()) is not None:
            self.deliver(message)

    # stdout ---------------------------------------------------------------------------------------------
    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (OSError, ValueError):   # the client closed its end: stdin's EOF ends the bridge
                pass

    def _fail(self, message: dict[str, Any], text: str) -> None:
        self.say(f"{message.get('method') or 'a response'}: {text}")
        if _is_request(message):
            self.emit({"jsonrpc": "2.0", "id": message["id"], "error": {"code": BRIDGE_ERROR, "message": text}})

    # forwarding -----------------------------------------------------------------------------------------
    def deliver(self, message: dict[str, Any]) -> None:
        """POST `message` until it is answered: through restarts (bounded) and a forgotten session."""
        if message.get("method") != "initialize":   # a message sent before the session exists belongs in it
            self._handshake.wait(self.retry_budget_s)
        deadline = time.monotonic() + self.retry_budget_s
        delay, reopened, stale = RETRY_FIRST_S, 0, None
        target: Target | None = None
        reason: str | None = None
        while True:
            try:
                target = self._locate()
                if stale is not None:
                    self._reopen(stale, target)
                    stale = None
                self._post(message, target)
                return
            except SessionGone as gone:
                reopened += 1
                if reopened > MAX_REOPEN:
                    return self._fail(message, f"{target.url if target else 'the endpoint'} keeps forgetting the "
                                               "session; giving up")
                stale = str(gone)
                continue
            except Refused as exc:
                return self._fail(message, self._refusal(exc, target))
            except Unreachable as exc:
                if reason is None:
                    self.say(f"{message.get('method') or 'a response'}: endpoint unreachable ({exc}); retrying for up "
                             f"to {self.retry_budget_s:g} s")
                reason = str(exc)
            if self._stop.is_set() or time.monotonic() + delay > deadline:
                url = target.url if target else "(no address)"
                return self._fail(message, f"the MCP endpoint {url} of server {self.name!r} is unreachable "
                                           f"({reason}); gave up after {self.retry_budget_s:g} s")
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _post(self, message: dict[str, Any], target: Target) -> None:
        """One attempt; the answer's messages go to stdout. Raises Unreachable when it must be tried again."""
        initialize = message.get("method") == "initialize"
        session_id = None if initialize else self.session_id
        headers = message_headers(message, session_id=session_id, protocol_version=self.protocol_version,
                                  token=target.token)
        exchange = Exchange(target, "POST", headers=headers, body=json.dumps(message).encode(), warn=self.say)
        try:
            exchange.check(session_id=session_id)
            answered = not _is_request(message)
            for answer in exchange.messages():
                if not _is_request(message):   # an error about a notification or response: not the client's
                    self.say(f"the endpoint answered {message.get('method') or 'a response'}: {answer.get('error')}")
                    continue
                if "method" not in answer and answer.get("id") == message["id"]:
                    if retry_worthy(answer):
                        raise Unreachable(str(answer["error"].get("message")))
                    answered = True
                    if initialize and isinstance(answer.get("result"), dict):
                        self._opened(message, exchange.header("Mcp-Session-Id"), answer["result"])
                self.emit(answer)
            if not answered and message.get("method") in SAFE_TO_RESEND:
                raise Unreachable("the endpoint closed the response before answering")
            if not answered:   # delivered, then cut: the server may have acted on it, so it is not sent again
                self._fail(message, "the endpoint closed the response before answering; the request may have been "
                                    "acted on, so it was not sent again")
        finally:
            exchange.close()

    def _opened(self, initialize: dict[str, Any], session_id: str | None, result: dict[str, Any]) -> None:
        with self._session_lock:
            self._initialize = initialize
            self.session_id = session_id
            version = result.get("protocolVersion")
            self.protocol_version = version if isinstance(version, str) else None
        if session_id is not None and self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="session-stream", daemon=True)
            self._listener.start()

    def _reopen(self, stale: str, target: Target) -> None:
        """The runner forgot session `stale`: open a new one with the client's own initialize (once, whichever
        thread gets here first), then say `notifications/initialized` in it."""
        with self._session_lock:
            if self.session_id != stale:
                return   # another thread opened the new session already
            if self._initialize is None:
                raise Refused(404, "the endpoint does not know this session and the client sent no initialize")
            replay = {**self._initialize, "id": _REPLAY_ID}
            headers = message_headers(replay, session_id=None, protocol_version=None, token=target.token)
            exchange = Exchange(target, "POST", headers=headers, body=json.dumps(replay).encode(), warn=self.say)
            try:
                exchange.check(session_id=None)
                answer = next((m for m in exchange.messages() if m.get("id") == _REPLAY_ID and "method" not in m), {})
                session_id = exchange.header("Mcp-Session-Id")
            finally:
                exchange.close()
            if retry_worthy(answer):
                raise Unreachable(str(answer["error"].get("message")))
            if not isinstance(answer.get("result"), dict) or session_id is None:
                raise Refused(exchange.status, f"initialize replayed for a new session failed: {answer.get('error')}")
            self.session_id = session_id
            version = answer["result"].get("protocolVersion")
            self.protocol_version = version if isinstance(version, str) else self.protocol_version
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            exchange = Exchange(target, "POST", body=json.dumps(initialized).encode(), warn=self.say,
                                headers=message_headers(initialized, session_id=session_id,
                                                        protocol_version=self.protocol_version, token=target.token))
            exchange.close()
        self.say("the endpoint did not know the session (its runner lost it): opened a new one")

    @staticmethod
    def _refusal(exc: Refused, target: Target | None) -> str:
        url = target.url if target else "the endpoint"
        if exc.status == 401:
            env = target.token_env if target else None
            hint = f"; set {env} in the environment of `mcp-reconcile connect`" if env else ""
            return f"the MCP endpoint {url} refused the request: bearer token missing or wrong{hint}"
        return f"the MCP endpoint {url} refused the request: {exc}"

    # the session's GET stream ----------------------------------------------------------------------------
    def _listen(self) -> None:
        """Keep the session's stream open while the bridge lives: reopened when it ends (from the last event
        id when events had ids), after a backoff when the endpoint is away."""
        delay, last_id, lost = RETRY_FIRST_S, None, False
        while not self._stop.is_set():
            session_id = self.session_id
            if session_id is None:
                return
            try:
                target = self._locate()
                headers = message_headers({}, session_id=session_id, protocol_version=self.protocol_version,
                                          token=target.token)
                headers["Accept"] = "text/event-stream"
                del headers["Content-Type"]
                if last_id is not None:
                    headers["Last-Event-ID"] = last_id
                exchange = self._stream = Exchange(target, "GET", headers=headers, warn=self.say)
                try:
                    if exchange.status == 405:
                        self.say("the endpoint offers no session stream (GET 405)")
                        return
                    exchange.check(session_id=session_id)
                    if exchange.status != 200:
                        raise Unreachable(f"GET answered HTTP {exchange.status}")
                    if lost:
                        self.say("session stream reopened")
                    lost, opened_at = False, time.monotonic()
                    for message in exchange.messages():
                        self.emit(message)
                        delay = RETRY_FIRST_S
                    if time.monotonic() - opened_at >= STREAM_HEALTHY_S:
                        delay = RETRY_FIRST_S
                finally:
                    last_id = exchange.last_event_id or last_id
                    self._stream = None
                    exchange.close()
            except SessionGone:
                try:
                    self._reopen(session_id, self._locate())
                except (Unreachable, Refused) as exc:
                    self.say(f"session stream: {exc}")
            except (Unreachable, Refused) as exc:
                if not lost and not self._stop.is_set():
                    self.say(f"session stream lost ({exc}); reopening")
                lost = True
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    # leaving --------------------------------------------------------------------------------------------
    def _leave(self, sender: threading.Thread) -> None:
        """stdin closed: let what is in flight finish (bounded), end the session, stop the stream."""
        deadline = time.monotonic() + self.drain_timeout_s
        self._ordered.put(None)
        sender.join(self.drain_timeout_s)
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=max(0.0, deadline - time.monotonic()))
            if self._busy:
                self.say(f"leaving with {self._busy} request(s) unanswered after {self.drain_timeout_s:g} s")
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.abort()
        if self.session_id is not None:
            try:
                target = self._locate()
                headers = message_headers({}, session_id=self.session_id, protocol_version=self.protocol_version,
                                          token=target.token)
                Exchange(target, "DELETE", headers=headers, read_timeout_s=DELETE_TIMEOUT_S).close()
            except (Unreachable, Refused):
                pass   # the runner is away; it forgets idle sessions by itself
