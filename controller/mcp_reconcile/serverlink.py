"""The runner's one stdio connection to its server, shared by every client of the endpoint (SPEC section 7).

Every forwarded request gets a runner-unique JSON-RPC id (and so does its progress token), so whatever ids
the clients chose, each message the server sends finds its way back:
- a response goes to the request that asked;
- `notifications/progress` goes to the request whose token it names (and extends that request's deadline);
- `notifications/message` (logs) goes to the newest request in flight that has a stream, else to `on_unrouted`;
- a server-to-client request (sampling, elicitation, roots, ping) goes to the newest request in flight whose
  client declared the capability, under an id of ours; that client's response is sent back under the
  server's id. With no such request in flight `on_server_request` may place it (a client's GET stream);
  failing that the server gets an error saying no connected client can answer;
- `notifications/cancelled` for a server request goes to the client holding it, under the id that client knows;
- other notifications (list_changed, resources/updated, ...) go to `on_unrouted`, which fans them out.

Stdlib only: one runner per server, so this module's imports are its memory floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

METHOD_NOT_FOUND = -32601
REQUEST_CANCELLED = -32800   # what a POST whose request its client cancelled is answered (the server answers none)
# Server-to-client requests, and the client capability each needs (ping needs none).
CAPABILITY_OF = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}
# Requests during which a server does not ask its client anything: a sampling or elicitation request is never
# handed to a client whose only request in flight is one of these.
ASKS_NOTHING = frozenset({"ping", "initialize", "tools/list", "prompts/list", "resources/list",
                          "resources/templates/list", "resources/subscribe", "resources/unsubscribe",
                          "logging/setLevel", "server/discover"})
# Requests during which a server does not log: a log line is never put on the stream of one of these.
LOGS_NOTHING = frozenset({"ping", "initialize", "server/discover"})
# Server-to-client requests remembered while their answer is awaited; the oldest is dropped beyond this.
MAX_OPEN_SERVER_REQUESTS = 1024

Sink = Callable[[dict[str, Any]], object]   # may return False: "not taken"


def can_answer(capabilities: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether a client with `capabilities` can answer this server request: the capability it needs, and for
    a URL-mode elicitation the `url` mode (an empty `elicitation: {}` means form mode only)."""
    capability = CAPABILITY_OF.get(str(request.get("method")))
    if capability is None:
        return True
    if capability not in capabilities:
        return False
    params = request.get("params") if isinstance(request.get("params"), dict) else {}
    if capability == "elicitation" and params.get("mode") == "url":
        modes = capabilities.get("elicitation")
        return isinstance(modes, dict) and "url" in modes
    return True


class ServerUnavailable(Exception):
    """The server process is gone (or its pipes are): nothing can be forwarded."""


class ServerExited(ServerUnavailable):
    """The server went away with the request in hand: it may have acted on it, so it must not be sent again."""


@dataclass
class Pending:
    """A forwarded request awaiting its response."""

    future: asyncio.Future[dict[str, Any]]
    original_id: Any
    scope: str | None                 # the client's session, so its cancel notifications find the request
    sink: Sink | None = None          # the request's SSE stream: messages the server sends while working on it
    capabilities: dict[str, Any] = field(default_factory=dict)
    progress_token: Any = None        # the client's own token, restored on progress notifications
    deadline: asyncio.TimerHandle | None = None
    timeout_s: float = 0.0
    method: str = ""
    runner_id: int = 0
    on_done: Callable[[], None] | None = None   # told as soon as `future` is resolved

    def resolve(self, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result or {})
        if self.on_done is not None:
            self.on_done()


@dataclass(frozen=True)
class ServerRequest:
    """A server-to-client request handed to a client under our id: who must answer, and the server's id."""

    server_id: Any
    scope: str | None
    sink: Sink | None = None   # the in-flight request's stream that carried it (None: the session's GET stream)


class ServerLink:
    """JSON-RPC over the server's stdin/stdout with runner-unique ids, routing what the server sends."""

    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, *,
                 log: Callable[[str], None] | None = None) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._next_id = 0
        self._pending: dict[int, Pending] = {}
        self._server_requests: dict[str, ServerRequest] = {}
        self._log = log or (lambda message: None)
        self.closed = False
        self.cancel_on_timeout = True  # handshake era: tell the server to drop a request we gave up on
        self._idle = asyncio.Event()   # set while no forwarded request awaits its response
        self._idle.set()
        self.on_unrouted: Sink = lambda message: None
        # places a server request no in-flight request can take; returns the session it went to, or None
        self.on_server_request: Callable[[dict[str, Any], str | None], str | None] = lambda message, cap: None
        # a message for one session's GET stream (the server cancels a request it put there)
        self.to_session: Callable[[dict[str, Any], str | None], None] = lambda message, session_id: None

    # client -> server -------------------------------------------------------------------------------------
    async def request(self, message: dict[str, Any], *, timeout_s: float, scope: str | None = None,
                      sink: Sink | None = None, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request under a fresh id and return its response carrying the caller's id again.

        Progress the server reports pushes the deadline `timeout_s` further. Raises TimeoutError after
        `timeout_s` without a word from the server, ServerUnavailable when the server is gone.
        """
        pending = await self.start(message, timeout_s=timeout_s, scope=scope, sink=sink, capabilities=capabilities)
        return await self.finish(pending)

    async def start(self, message: dict[str, Any], *, timeout_s: float, scope: str | None = None,
                    sink: Sink | None = None, capabilities: dict[str, Any] | None = None,
                    on_done: Callable[[], None] | None = None) -> Pending:
        """The first half of `request`: the message is on its way; `finish` waits for its answer. Split so the
        gateway can stream what the server says meanwhile without a task per request. `on_done` is called as the
        request's future is resolved (answer, timeout or exit): a waiter woken there takes no extra loop turn."""
        if self.closed:
            raise ServerUnavailable("server is not running")
        loop = asyncio.get_running_loop()
        self._next_id += 1
        runner_id = self._next_id
        pending = Pending(loop.create_future(), message.get("id"), scope, sink, capabilities or {},
                          timeout_s=timeout_s, method=str(message.get("method")), runner_id=runner_id,
                          on_done=on_done)
        message = self._with_progress_token(message, pending, runner_id)
        self._pending[runner_id] = pending
        self._idle.clear()
        self._arm(pending)
        try:
            self._write({**message, "id": runner_id})
            if self._stdin.transport.get_write_buffer_size():   # the server reads slowly: wait, within the bound
                waiter = asyncio.ensure_future(self._stdin.drain())
                await asyncio.wait((waiter, pending.future), return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                elif waiter.exception() is not None:
                    raise ServerUnavailable(f"server stdin closed: {waiter.exception()}")
        except BaseException:
            self.abandon(pending)
            raise
        return pending

    async def finish(self, pending: Pending) -> dict[str, Any]:
        """The response to a request `start`ed, under the caller's id; raises as `request` does."""
        try:
            response = await pending.future
        except TimeoutError:
            if self.cancel_on_timeout:
                self._write_quietly({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                    "requestId": pending.runner_id, "reason": "request timed out in the mcp-reconcile runner"}})
            raise
        finally:
            self._settle(pending)
        response["id"] = pending.original_id
        return response

    def abandon(self, pending: Pending) -> None:
        """Nobody waits for this request's answer any more: it goes nowhere when it comes."""
        self._settle(pending)
        if pending.future.done() and not pending.future.cancelled():
            pending.future.exception()   # retrieved: whoever abandons it has its own error to report
        else:
            pending.future.cancel()

    def _arm(self, pending: Pending) -> None:
        """(Re)start the request's deadline: `timeout_s` from now. A loop timer, not asyncio.timeout: this is
        every forwarded call's path, and progress moves it."""
        if pending.deadline is not None:
            pending.deadline.cancel()
        loop = asyncio.get_running_loop()
        pending.deadline = loop.call_at(loop.time() + pending.timeout_s, self._expire, pending)

    def _expire(self, pending: Pending) -> None:
        pending.resolve(error=TimeoutError())

    def _settle(self, pending: Pending) -> None:
        """The request needs nothing more: its timer and its place among the pending go."""
        if pending.deadline is not None:
            pending.deadline.cancel()
        self._pending.pop(pending.runner_id, None)
        if not self._pending:
            self._idle.set()

    @staticmethod
    def _with_progress_token(message: dict[str, Any], pending: Pending, runner_id: int) -> dict[str, Any]:
        """Swap the client's progress token for ours (two clients may both pick token 1)."""
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict) or "progressToken" not in meta:
            return message
        pending.progress_token = meta["progressToken"]
        return {**message, "params": {**params, "_meta": {**meta, "progressToken": runner_id}}}

    async def notify(self, message: dict[str, Any], *, scope: str | None = None) -> None:
        """Forward a client notification; a cancel is re-addressed to the id the server knows (only
        within a session: without one, the request it names cannot be told apart from other clients')."""
        if message.get("method") == "notifications/cancelled":
            params = message.get("params") or {}
            runner_id = self._find(scope, params.get("requestId")) if scope is not None else None
            if runner_id is None:
                return
            message = {**message, "params": {**params, "requestId": runner_id}}
            await self._send(message)
            cancelled = self._pending.get(runner_id)
            if cancelled is not None:   # the server will not answer it: the waiting POST ends now, not at its timeout
                cancelled.resolve({"jsonrpc": "2.0", "id": runner_id, "error": {
                    "code": REQUEST_CANCELLED, "message": "request cancelled by the client"}})
                self._settle(cancelled)
            return
        await self._send(message)

    async def answer_server(self, message: dict[str, Any], *, scope: str | None) -> bool:
        """A client's response to a server-to-client request we handed it: back to the server under the
        server's own id. False when no such request is open for that client."""
        key = message.get("id")
        asked = self._server_requests.get(key) if isinstance(key, str) else None
        if asked is None or asked.scope != scope:
            return False
        del self._server_requests[key]
        await self._send({**message, "id": asked.server_id})
        return True

    def _find(self, scope: str | None, original_id: Any) -> int | None:
        for runner_id, pending in self._pending.items():
            if pending.scope == scope and pending.original_id == original_id:
                return runner_id
        return None

    # the pipe ---------------------------------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ServerUnavailable("server is not running")
        try:
            self._stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except (ConnectionError, RuntimeError) as exc:  # broken pipe; RuntimeError: transport closed
            self.close()
            raise ServerUnavailable(f"server stdin closed: {exc}") from exc

    def _write_quietly(self, message: dict[str, Any]) -> None:
        """Best effort, never waits: replies and cancels the server may or may not still read."""
        with contextlib.suppress(ServerUnavailable):
            self._write(message)

    async def _send(self, message: dict[str, Any]) -> None:
        self._write(message)
        try:
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self.close()
            raise ServerUnavailable(f"server stdin closed: {exc}") from exc

    # server -> client -------------------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Dispatch the server's stdout lines until EOF, then fail whatever is still pending."""
        try:
            while True:
                try:
                    line = await self._stdout.readline()
                except ValueError:  # a line beyond the stream limit; the reader dropped it
                    self._log("server wrote an oversized stdout line; dropped")
                    continue
                if not line:
                    break
                self._dispatch(line)
        finally:
            self.close()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            if line.strip():
                self._log(f"server wrote a non-JSON stdout line; ignored: {line[:200]!r}")
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if isinstance(method, str):
            if "id" in message:
                self._route_server_request(message, method)
            else:
                self._route_notification(message, method)
            return
        runner_id = message.get("id")
        pending = self._pending.get(runner_id) if isinstance(runner_id, int) else None
        if pending is not None:
            pending.resolve(message)
            self._settle(pending)   # answered: no log line or server request is routed to it any more

    def _route_notification(self, message: dict[str, Any], method: str) -> None:
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is None:
                return   # its request is answered or abandoned
            self._arm(pending)   # a server that reports progress is working: give it more time
            if pending.sink is not None:
                pending.sink({**message, "params": {**params, "progressToken": pending.progress_token}})
            return
        if method == "notifications/cancelled":   # the server gave up on a request it sent a client, or on nothing
            self._server_request_cancelled(message, params)
            return
        if method == "notifications/message":
            streaming = self._newest(lambda p: p.sink is not None and p.method not in LOGS_NOTHING)
            if streaming is not None and streaming.sink is not None:
                streaming.sink(message)
                return
        self.on_unrouted(message)

    def _route_server_request(self, message: dict[str, Any], method: str) -> None:
        capability = CAPABILITY_OF.get(method)
        target = self._newest(lambda p: p.sink is not None and p.method not in ASKS_NOTHING
                              and can_answer(p.capabilities, message))
        key = f"mcpr-s2c-{self._next_id + 1}"
        self._next_id += 1
        forwarded = {**message, "id": key}
        if target is not None and target.sink is not None:
            self._remember(key, ServerRequest(message["id"], target.scope, target.sink))
            target.sink(forwarded)
            return
        placed = self.on_server_request(forwarded, capability)
        if placed is not None:
            self._remember(key, ServerRequest(message["id"], placed))
            return
        self._write_quietly({"jsonrpc": "2.0", "id": message["id"], "error": {
            "code": METHOD_NOT_FOUND,
            "message": f"no connected client can answer {method}" + (
                f" (none declared the {capability} capability with a request in flight or an open stream)"
                if capability else " (no client has a request in flight or an open stream)")}})

    def _server_request_cancelled(self, message: dict[str, Any], params: dict[str, Any]) -> None:
        """To the client holding that request, under the id it knows; it stops asking its user."""
        for key, asked in self._server_requests.items():
            if asked.server_id == params.get("requestId"):
                del self._server_requests[key]
                cancel = {**message, "params": {**params, "requestId": key}}
                if asked.sink is None or asked.sink(cancel) is False:   # that call is over: its session's stream
                    self.to_session(cancel, asked.scope)
                return

    def _remember(self, key: str, request: ServerRequest) -> None:
        self._server_requests[key] = request
        if len(self._server_requests) > MAX_OPEN_SERVER_REQUESTS:
            del self._server_requests[next(iter(self._server_requests))]

    def _newest(self, wanted: Callable[[Pending], bool]) -> Pending | None:
        for pending in reversed(self._pending.values()):
            if wanted(pending):
                return pending
        return None

    @property
    def idle(self) -> bool:
        """No forwarded request awaits its response."""
        return self._idle.is_set()

    async def drained(self) -> None:
        """Return once no forwarded request awaits its response (an old generation may then be stopped)."""
        await self._idle.wait()

    def close(self) -> None:
        """Stop forwarding: every waiting request fails with ServerUnavailable."""
        self.closed = True
        for pending in self._pending.values():
            pending.resolve(error=ServerExited("server exited"))
        self._pending.clear()
        self._idle.set()
