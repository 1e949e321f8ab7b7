"""The runner's endpoint: Streamable HTTP for many clients over one stdio server (SPEC section 7).

HTTP/1.1 on asyncio streams + httptools, loopback only, Host/Origin checked (403), optional bearer token (401).
Clients of both protocol eras are served whatever era the server speaks (eras.py translates):
- a handshake-era client `initialize`s (answered from the server's own result, or built from its
  `server/discover` answer), gets a session of its own (`Mcp-Session-Id`) and may open the session's GET
  stream for messages not tied to a request (list_changed, resources/updated, logs, server requests);
- a 2026-07-28 client sends the `_meta` envelope on every request and has no session.
A POST whose request makes the server talk back (progress, logs, sampling/elicitation/roots requests) is
answered as an SSE stream carrying those messages and then the response; otherwise as one JSON body.
Every request, `ping` included, goes to the server: a dead or stuck server never looks healthy here.

Stdlib + httptools only: one runner runs per server, so this module's imports are its memory floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Awaitable
from typing import Any

from mcp_reconcile import calls, eras, httpio, mrtr
from mcp_reconcile.calls import INVALID_REQUEST, PARSE_ERROR, REQUEST_TIMED_OUT, SERVER_UNAVAILABLE, Call
from mcp_reconcile.clientsessions import PostRecord, PostStream, Session, SessionTable
from mcp_reconcile.endpointstats import EndpointStats
from mcp_reconcile.httpio import Reply, Stream
from mcp_reconcile.isolation import SessionGone, SessionLimit, SessionServers
from mcp_reconcile.serverlink import ServerExited, ServerLink, ServerUnavailable
from mcp_reconcile.sessionbook import SessionBook

# How long a forwarded request may wait for the server's answer (each progress report restarts it).
REQUEST_TIMEOUT_S = 300.0
# Largest request body accepted (413 above it); a JSON-RPC message, not a file upload.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Largest request line + headers (431 above it).
MAX_HEADER_BYTES = 64 * 1024
# How often idle connections and idle isolated sessions (bound: spec.sessionIdleSeconds) are looked for.
SWEEP_INTERVAL_S = 10.0
# A kept-alive connection with no new request for this long is closed (clients reconnect transparently); a
# sweep rather than a timer per request, which would cost every forwarded call.
IDLE_TIMEOUT_S = 120.0
# From a request's first byte to the end of its headers, and then to the end of its body: slow senders
# (slowloris) are cut off instead of piling up.
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0

_LOOPBACK_ORIGIN = re.compile(r"http://(127\.0\.0\.1|localhost)(:\d{1,5})?")


def _unavailable(request_id: Any, message: str, *, retry_after_s: int = 1, data: Any = None) -> Reply:
    """503: the server cannot take the request now; the client may retry after `retry_after_s`."""
    return httpio.error_reply(503, request_id, SERVER_UNAVAILABLE, message, [("Retry-After", str(retry_after_s))],
                              data=data)


class Gateway:
    """The loopback Streamable HTTP endpoint of one runner."""

    def __init__(self, link: ServerLink, *, era: str, initialize_result: dict[str, Any] | None,
                 discover_result: dict[str, Any] | None = None, serves_modern: bool = False,
                 token: str | None = None,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, path: str = "/mcp",
                 sessions: SessionBook | None = None, allowed_hosts: frozenset[str] = frozenset(),
                 isolation: SessionServers | None = None) -> None:
        self.link = link
        self.allowed_hosts = allowed_hosts   # Host names accepted besides loopback (runner --allow-host)
        self.era = era
        self.initialize_result = initialize_result
        self.discover_result = discover_result or {}
        self.serves_modern = serves_modern   # a handshake-era server that knows 2026-07-28 too (dual era)
        self.request_timeout_s = request_timeout_s
        self.path = path.encode()
        self.port = 0
        self._token = token.encode() if token else None
        self._sessions = SessionTable(sessions or SessionBook(None))   # they outlive the runner that opened them
        self._sessions.on_forget = self._session_ended
        self.isolation = isolation   # spec.sessions: isolated (handshake-era sessions get a server each)
        self._sweeper: asyncio.Task[None] | None = None
        self._asked = mrtr.Asked()   # 2026-07-28 servers' questions put to handshake-era clients
        self.stats = EndpointStats()  # what /metrics shows of this endpoint (endpointstats.py)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._waiting: dict[asyncio.StreamWriter, float] = {}   # connections between requests, and since when
        self._holding = False                              # hold(): the server crashed, a keeper takes over
        self._retiring: list[ServerLink] = []   # earlier generations finishing what they have in flight
        self._busy = 0                          # requests being answered now
        self._idle = asyncio.Event()
        self._hook(link)

    def _hook(self, link: ServerLink) -> None:
        link.cancel_on_timeout = self.era == "handshake"
        link.on_unrouted = self._sessions.fan_out
        link.on_server_request = self._sessions.to_a_stream
        link.to_session = self._sessions.deliver_to

    def swap(self, link: ServerLink, *, era: str, initialize_result: dict[str, Any] | None,
             discover_result: dict[str, Any] | None, serves_modern: bool, token: str | None) -> None:
        """Send new requests to `link` (a new generation of the server); requests in flight on the old one
        finish there. Sessions, streams and connections are the gateway's and stay as they are."""
        self._retiring.append(self.link)
        if self.isolation is not None:
            self.isolation.retire_all()   # each session's server is replaced on its next request
        self.link, self.era, self.initialize_result = link, era, initialize_result
        self.discover_result, self.serves_modern = discover_result or {}, serves_modern
        self._token = token.encode() if token else None
        self._hook(link)

    def retired(self, link: ServerLink) -> None:
        """The old generation behind `link` is stopped: forget it."""
        if link in self._retiring:
            self._retiring.remove(link)

    def announce(self, method: str) -> None:
        """A notification of the gateway's own (list_changed after a swap) to every session's stream."""
        self._sessions.fan_out({"jsonrpc": "2.0", "method": method})

    async def start(self, port: int = 0, *, sock: socket.socket | None = None, host: str = "127.0.0.1") -> int:
        """Listen on `host`:`port` (0: any free port), or on `sock` (a listening socket taken over from a
        keeper, with the connections that waited in it), and return the port."""
        if sock is not None:
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._serve_connection, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve_connection, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep_idle())
        return self.port

    def hold(self) -> int | None:
        """The server crashed and a keeper will hold the endpoint: stop accepting (new connections wait in the
        backlog of the listening socket, kept open by the returned duplicate for the keeper), close the
        connections waiting for their next request, and end every other one after its answer (`Connection:
        close`), so that each client's next request opens a connection the next runner answers."""
        fd = self.listening_fd()
        if fd is None or self._server is None:
            return None
        held = os.dup(fd)
        self._holding = True
        self._server.close()
        for writer in list(self._waiting):
            writer.close()
        return held

    def listening_fd(self) -> int | None:
        return self._server.sockets[0].fileno() if self._server is not None and self._server.sockets else None

    async def quiesce(self, timeout_s: float) -> None:
        """Wait (bounded) until no request is being answered: the answers owed to requests the server's exit
        cut short (503) leave before the connections close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._busy:
                    self._idle.clear()
                    await self._idle.wait()

    def close(self) -> None:
        """Stop accepting and drop open connections (a stopping runner answers no one)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    # HTTP/1.1 ---------------------------------------------------------------------------------------------
    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = httpio.HttpConnection(reader, writer, max_head=MAX_HEADER_BYTES, max_body=MAX_BODY_BYTES)
        loop = asyncio.get_running_loop()
        try:
            while not self._holding:   # once held, this client's next request goes to the next runner
                self._waiting[writer] = loop.time()
                try:
                    request = await conn.next_request(HEADER_TIMEOUT_S)
                finally:
                    self._waiting.pop(writer, None)
                if request is None:
                    break
                counted = request.method != b"GET"   # a GET stream lasts as long as its client wants
                self._busy += counted
                try:
                    reply = await self._handle(conn, request)
                    if reply is not None:
                        await conn.send(httpio.closing(reply) if self._holding else reply)
                finally:
                    self._busy -= counted
                    if not self._busy:
                        self._idle.set()
                if not conn.done(request):
                    break
        except httpio.BadRequest as exc:   # malformed, or headers too large (431)
            with contextlib.suppress(ConnectionError):
                await conn.send(httpio.closing(Reply(exc.status, f"{exc}\n".encode(),
                                                     [("Content-Type", "text/plain")])))
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            await conn.close()

    async def _handle(self, conn: httpio.HttpConnection, request: httpio.Request) -> Reply | None:
        headers = request.headers
        denied = self._check_access(request.target, headers)
        length = headers.get("content-length", "0")
        if denied is None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            denied = Reply(413, b"request body too large\n")
        if denied is not None:
            return httpio.closing(denied)
        body = await conn.read_body(request, BODY_TIMEOUT_S)
        if body is None:
            return httpio.closing(Reply(413, b"request body too large\n"))
        if request.method == b"POST":
            return await self._post(conn, headers, body)
        if request.method == b"GET":
            return await self._get(conn, headers)
        if request.method == b"DELETE":
            return self._delete(headers)
        return Reply(405, b"", [("Allow", "GET, POST, DELETE")])

    # access -----------------------------------------------------------------------------------------------
    def _check_access(self, target: bytes, headers: dict[str, str]) -> Reply | None:
        """403 for a foreign Host or Origin (DNS rebinding), 401 without the token, 404 off the path."""
        host = headers.get("host")
        if host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}") and (
                not host or host.rsplit(":", 1)[0] not in self.allowed_hosts):
            return Reply(403, b"forbidden: Host must be 127.0.0.1 or localhost\n")
        origin = headers.get("origin")
        if origin is not None and not _LOOPBACK_ORIGIN.fullmatch(origin):
            return Reply(403, b"forbidden: Origin is not a loopback origin\n")
        if self._token is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not httpio.same_secret(given.strip().encode(), self._token):
                return Reply(401, b"unauthorized\n", [("WWW-Authenticate", 'Bearer realm="mcp-reconcile"')])
        if target.split(b"?", 1)[0] != self.path:
            return Reply(404, b"not found: the endpoint is " + self.path + b"\n")
        return None

    # POST -------------------------------------------------------------------------------------------------
    async def _post(self, conn: httpio.HttpConnection, headers: dict[str, str], body: bytes) -> Reply | None:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return httpio.error_reply(400, None, PARSE_ERROR, "Parse error: body is not JSON (or nested too deeply)")
        if isinstance(message, list):
            return httpio.error_reply(400, None, INVALID_REQUEST, "JSON-RPC batches are not supported")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return httpio.error_reply(400, None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        call_or_refusal = calls.classify(message, headers, era=self.era, sessions=self._sessions)
        if isinstance(call_or_refusal, Reply):
            return call_or_refusal
        call = call_or_refusal
        method = message.get("method")
        if not isinstance(method, str):   # a client's response to a server request we handed it
            answered = await self._answer_server(message, call.session_id)
            return Reply(202) if answered else httpio.error_reply(
                400, message.get("id"), INVALID_REQUEST, "no open server request has this id for this client")
        if "id" not in message:
            return await self._notification(call, method)
        if method == "initialize":
            return await self._initialize(message)
        started = asyncio.get_running_loop().time()
        failed = True
        try:
            reply = await self._request(conn, call, method)
            failed = reply is not None and (reply.status >= 400 or calls.is_error(reply.body))
            return reply
        finally:
            self.stats.record(asyncio.get_running_loop().time() - started, error=failed)

    async def _initialize(self, message: dict[str, Any]) -> Reply:
        """Answer from the server's own result (or one built from its discover answer); a new session.
        An isolated session's server is started here and answers the client's initialize itself."""
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        requested = params.get("protocolVersion")
        if self.isolation is not None and self.era == "handshake":
            return await self._initialize_isolated(message)
        if self.era == "handshake":
            result = dict(self.initialize_result or {})
            result["protocolVersion"] = eras.negotiated_version(requested, str(result.get("protocolVersion")))
        else:
            result = eras.initialize_from_discover(self.discover_result, requested)
        session_id = self._sessions.open(Session(eras.client_capabilities_of(message), result["protocolVersion"]))
        return httpio.json_reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result},
                                 [("Mcp-Session-Id", session_id)])

    async def _initialize_isolated(self, message: dict[str, Any]) -> Reply:
        assert self.isolation is not None
        session_id = os.urandom(16).hex()
        try:
            response = await self.isolation.open(session_id, message)
        except SessionLimit as exc:
            return _unavailable(message.get("id"), f"session limit reached: {exc}", retry_after_s=5)
        except (ServerUnavailable, TimeoutError, OSError) as exc:
            return _unavailable(message.get("id"), f"could not start this session's server: {exc or 'timed out'}")
        result = response.get("result")
        if not isinstance(result, dict):
            return httpio.json_reply(200, {**response, "id": message.get("id")})
        init = {k: v for k, v in message.items() if k != "id"}
        self._sessions.open(Session(eras.client_capabilities_of(message), str(result.get("protocolVersion")),
                                   init=init), session_id)
        return httpio.json_reply(200, {**response, "id": message.get("id")}, [("Mcp-Session-Id", session_id)])

    async def _link_for(self, call: Call) -> ServerLink:
        """The server process this call goes to: its isolated session's own, or the shared one."""
        if self.isolation is None or call.session is None or call.session_id is None or self.era != "handshake":
            return self.link
        return await self.isolation.link(call.session_id, call.session.init)

    async def _notification(self, call: Call, method: str) -> Reply:
        isolated = self.isolation is not None and call.session is not None and self.era == "handshake"
        if method == "notifications/initialized" and not call.modern and not isolated:
            return Reply(202)   # the runner's own handshake with the server already said it
        message = call.message
        if call.modern and self.era == "handshake":
            message = eras.without_envelope(message)
        elif not call.modern and self.era == "stateless":
            message = eras.with_envelope(message, call.session.capabilities if call.session else {})
        try:
            await (await self._link_for(call)).notify(message, scope=call.session_id)
            if method == "notifications/cancelled":   # the request it names may be on an older generation
                own = self.isolation.links(call.session_id) if self.isolation and call.session_id else []
                for link in (*own[1:], *self._retiring):
                    with contextlib.suppress(ServerUnavailable):
                        await link.notify(message, scope=call.session_id)
        except SessionGone:
            return self._session_gone(call)
        except (ServerUnavailable, TimeoutError):
            return Reply(503, b"", [("Retry-After", "1")])
        return Reply(202)

    def _session_gone(self, call: Call) -> Reply:
        """The session cannot go on (an isolated session's server cannot be started again): 404, and the client
        starts a new one, as the Streamable HTTP transport says a client must."""
        if call.session_id in self._sessions:
            self._sessions.forget(call.session_id)
        return httpio.error_reply(404, call.message.get("id"), INVALID_REQUEST, "Session not found")

    async def _answer_server(self, message: dict[str, Any], session_id: str | None) -> bool:
        if self._asked.answer(message, session_id):   # a question the gateway asked (mrtr.py)
            return True
        own = self.isolation.links(session_id) if self.isolation is not None and session_id else []
        for link in (*own, self.link, *self._retiring):   # the request may be an older generation's
            with contextlib.suppress(ServerUnavailable):
                if await link.answer_server(message, scope=session_id):
                    return True
        return False

    async def _request(self, conn: httpio.HttpConnection, call: Call, method: str) -> Reply | None:
        """Forward (translated for the client's era); stream what the server says meanwhile, then answer.
        A 2026-07-28 server's questions (input_required) are asked of a handshake-era client here (mrtr.py)."""
        message, answer_as = calls.translate_in(call, method, era=self.era, serves_modern=self.serves_modern)
        try:
            link = await self._link_for(call)
        except SessionGone:
            return self._session_gone(call)
        except (ServerUnavailable, TimeoutError) as exc:   # TimeoutError: an isolated session's server restarting
            return _unavailable(call.message.get("id"), f"MCP server unavailable: {exc or 'it did not start in time'}")
        record = PostRecord(call.session) if call.session is not None and not call.modern else None
        out = httpio.SseOut(conn, record) if call.wants_stream else None
        asked: list[dict[str, Any]] = []
        try:
            for _round in range(mrtr.MAX_ROUNDS + 1):
                response = await self._relay(link, message, call, out)
                questions = mrtr.questions_in(response) if isinstance(response, dict) and \
                    self.era == "stateless" and not call.modern else None
                if questions is None:
                    break
                answers, refusal = await self._ask(call, questions, out, asked)
                if refusal is not None:
                    response = refusal   # why the questions cannot be asked, or the client's own error answer
                    break
                message = mrtr.retry(message, answers, questions.state)
            else:
                response = httpio.error_reply(200, call.message.get("id"), INVALID_REQUEST,
                                              f"the server asked for input {mrtr.MAX_ROUNDS} times in a row")
            if isinstance(response, dict) and "error" not in response:
                calls.remember(call, method)
            reply = calls.answer(call, method, answer_as, response, initialize_result=self.initialize_result)
            if out is None or not (out.started or out.broken):
                return reply   # nothing else to send: plain JSON, as if no stream had been offered
            await out.finish(json.loads(reply.body))
            if record is not None:
                record.delivered()
            return None
        finally:
            self._asked.forget(asked)

    async def _relay(self, link: ServerLink, message: dict[str, Any], call: Call,
                     out: httpio.SseOut | None) -> dict[str, Any] | Reply:
        """One forwarded request: what the server sends meanwhile goes to `out`; then its response."""
        relay = httpio.Interim() if out is not None else None
        # a 2026-07-28 client takes no server requests (its era asks with input_required): none goes to it
        capabilities = {} if call.modern else call.session.capabilities if call.session else {}
        try:
            pending = await link.start(message, timeout_s=self.request_timeout_s, scope=call.session_id,
                                       sink=relay.put if relay else None, capabilities=capabilities,
                                       on_done=relay.rouse if relay else None)
        except ServerUnavailable as exc:
            return self._failed(exc, call)
        if relay is None or out is None:
            return await self._outcome(link.finish(pending), call)
        try:
            while (message := await relay.next(pending.future)) is not None:   # all the server said before
                await out.event(message)                                       # its answer, in order
        except BaseException:
            link.abandon(pending)   # the client went away: let the server's answer go nowhere
            raise
        finally:
            relay.open = False
        return await self._outcome(link.finish(pending), call)

    async def _ask(self, call: Call, questions: mrtr.Questions, out: httpio.SseOut | None,
                   asked: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | Reply | None]:
        """Each question as a server request on the call's stream: the client's results by key, or (second)
        what to answer the client instead."""
        capabilities = call.session.capabilities if call.session else {}
        why = mrtr.unanswerable(questions, capabilities) or (
            None if out is not None else "the client's request does not accept an SSE stream (Accept: "
            "text/event-stream), so the server's questions cannot be asked")
        if why is not None:
            return {}, httpio.error_reply(200, call.message.get("id"), INVALID_REQUEST, f"input required: {why}")
        assert out is not None
        futures = {}
        for key, request in questions.requests.items():
            message, futures[key] = self._asked.ask(call.session_id, request)
            asked.append(message)
            await out.event(message)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                answers = {key: await future for key, future in futures.items()}
        except TimeoutError:
            return {}, httpio.error_reply(504, call.message.get("id"), REQUEST_TIMED_OUT,
                                          f"the client did not answer the server's questions within "
                                          f"{self.request_timeout_s:g} s")
        for answer in answers.values():
            if "error" in answer:   # the client refused: the caller gets that error, as natively
                return {}, {"jsonrpc": "2.0", "id": call.message.get("id"), "error": answer["error"]}
        return {key: answer.get("result") for key, answer in answers.items()}, None

    async def _outcome(self, forwarded: Awaitable[dict[str, Any]], call: Call) -> dict[str, Any] | Reply:
        try:
            return await forwarded
        except (ServerUnavailable, TimeoutError) as exc:
            return self._failed(exc, call)

    def _failed(self, exc: ServerUnavailable | TimeoutError, call: Call) -> Reply:
        """What the client is told when its forwarded request got no answer from the server."""
        request_id = call.message.get("id")
        if isinstance(exc, ServerExited):   # delivered, then the server went away: a client must not blindly resend
            return _unavailable(request_id, f"MCP server unavailable: {exc} while answering this request (it may "
                                "have acted on it)", data={"forwarded": True})
        if isinstance(exc, ServerUnavailable):
            return _unavailable(request_id, f"MCP server unavailable: {exc}")
        return httpio.error_reply(504, request_id, REQUEST_TIMED_OUT,
                                  f"MCP server did not answer within {self.request_timeout_s:g} s")

    # GET: the session's stream ----------------------------------------------------------------------------
    async def _get(self, conn: httpio.HttpConnection, headers: dict[str, str]) -> Reply | None:
        if "text/event-stream" not in headers.get("accept", ""):
            return Reply(406, b"GET opens an SSE stream: Accept must include text/event-stream\n")
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            return Reply(405, b"", [("Allow", "POST, DELETE")]) if self.era == "stateless" else \
                Reply(400, b"Mcp-Session-Id header is required\n")
        session = self._sessions.get(session_id)
        if session is None:
            return Reply(404, b"session not found\n")
        last_event_id = headers.get("last-event-id")
        if last_event_id is not None and session.names_a_post_stream(last_event_id):
            post = session.post_stream_of(last_event_id)
            if post is None:   # not the session's GET stream either: leave that one alone
                return Reply(400, b"Last-Event-ID names a POST stream this runner no longer keeps (answered and "
                                  b"read, answered over 300 s ago, or numbered by an earlier runner)\n")
            return await self._resume_post(conn, session, post, last_event_id)
        stream = session.open_stream(last_event_id)   # one per session: the newer one replaces it
        await conn.start_stream([("Mcp-Session-Id", session_id)])
        gone = asyncio.ensure_future(conn.reader.read(1))   # EOF (or anything) from the client ends the stream
        try:
            while stream.open:
                getter = asyncio.ensure_future(stream.queue.get())
                await asyncio.wait((gone, getter), return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                if stream.open:
                    event_id, message = getter.result()
                    await conn.stream_event(message, event_id)
        finally:
            gone.cancel()
            stream.open = False
            if session.stream is stream:
                session.stream = None
                session.stream_closed_at = time.monotonic()
        raise ConnectionError("stream ended")   # an SSE stream is never reused for another request

    async def _resume_post(self, conn: httpio.HttpConnection, session: Session, post: PostStream,
                           last_event_id: str) -> Reply | None:
        """The rest of a POST's SSE stream whose connection dropped: what followed `last_event_id`, then live
        until the answer, which ends it (and the session keeps nothing more of it)."""
        if post.listener is not None:
            post.listener.end()
        stream = post.listener = Stream()
        for event_id, message in post.after(last_event_id):
            stream.put(message, event_id)
        if post.done:
            stream.end()
        try:
            await conn.start_stream([])
            while (item := await stream.queue.get())[0] is not None:
                await conn.stream_event(item[1], item[0])
            await conn.end_stream()
        finally:
            if post.listener is stream:
                post.listener = None
        if post.done:
            session.post_streams.pop(post.key, None)
        return None

    def hook_session_link(self, session_id: str, link: ServerLink) -> None:
        """What an isolated session's server sends on its own goes to that session only."""
        link.cancel_on_timeout = True
        link.on_unrouted, link.on_server_request = self._sessions.only_to(session_id)
        link.to_session = self._sessions.deliver_to

    def _session_ended(self, session_id: str) -> None:
        if self.isolation is not None:
            self.isolation.close(session_id)

    async def _sweep_idle(self) -> None:
        """Close connections idle for IDLE_TIMEOUT_S, and end isolated sessions idle for
        spec.sessionIdleSeconds (no request, no open GET stream): their servers stop, and the client is told to
        start a new session (404) if it comes back."""
        loop = asyncio.get_running_loop()
        while True:
            idle_s = self.isolation.idle_s if self.isolation is not None else SWEEP_INTERVAL_S
            await asyncio.sleep(min(SWEEP_INTERVAL_S, idle_s / 2))
            cutoff = loop.time() - IDLE_TIMEOUT_S
            for writer in [writer for writer, since in self._waiting.items() if since < cutoff]:
                writer.close()
            self._sessions.sweep()
            if self.isolation is None:
                continue
            for session_id in self.isolation.idle():
                session = self._sessions.get(session_id)
                if session is None:
                    self.isolation.close(session_id)
                elif session.stream is None:
                    self._sessions.forget(session_id)

    # DELETE -----------------------------------------------------------------------------------------------
    def _delete(self, headers: dict[str, str]) -> Reply:
        if self.era != "handshake" and not len(self._sessions):
            return Reply(405, b"", [("Allow", "POST")])
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            return Reply(400, b"Mcp-Session-Id header is required\n")
        if session_id not in self._sessions:
            return Reply(404, b"session not found\n")
        self._sessions.forget(session_id)
        return Reply(204)
