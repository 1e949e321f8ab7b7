"""HTTP/1.1 plumbing of the runner's endpoint: requests parsed by httptools (llhttp), replies written as bytes.

Split from gateway.py, which decides what to answer; this module only puts bytes on the wire and takes them
off. A forwarded call is the runner's hot path, so a request that arrives whole in one read (nearly all of
them) costs one parse and no timer: the head and body timeouts are armed only while a request is incomplete,
and idleness between requests is the gateway's sweep, not a timer per request. Stdlib + httptools only: one
runner runs per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

# Messages queued for a stream whose client reads too slowly; beyond this the oldest is dropped.
MAX_STREAM_BACKLOG = 1000
# Bytes read from a client socket at a time.
READ_CHUNK = 64 * 1024
# A connection closed before its client's request was read whole is drained this long (and this much) first,
# so the client reads the refusal sent to it instead of a reset (a lingering close, as nginx does).
LINGER_S = 2.0
LINGER_BYTES = 1 << 20

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
_NO_BODY = frozenset({204, 304})


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(status: int, message: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(message, separators=(",", ":")).encode()
    return Reply(status, body, [("Content-Type", "application/json"), *(headers or [])])


def error_reply(status: int, request_id: Any, code: int, message: str,
                 headers: list[tuple[str, str]] | None = None, data: Any = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return json_reply(status, {"jsonrpc": "2.0", "id": request_id, "error": error}, headers)


def closing(reply: Reply) -> Reply:
    """The reply, ending the connection: sent before the request body was read, so nothing else can follow."""
    return Reply(reply.status, reply.body, [*reply.headers, ("Connection", "close")])


def same_secret(given: bytes, expected: bytes) -> bool:
    """Compare without an early exit (hmac.compare_digest would pull in OpenSSL: +4 MB per runner)."""
    if len(given) != len(expected):
        return False
    diff = 0
    for a, b in zip(given, expected, strict=True):
        diff |= a ^ b
    return diff == 0


def sse_event(message: dict[str, Any], event_id: str | None = None) -> bytes:
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


class Stream:
    """Messages on their way to one client's SSE stream (a POST's or the session's GET stream)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()
        self.open = True

    def put(self, message: dict[str, Any], event_id: str | None = None) -> None:
        """Queue a message; `event_id` (GET streams) lets a client resume after it with Last-Event-ID."""
        if not self.open:
            return
        if self.queue.qsize() >= MAX_STREAM_BACKLOG:
            self.queue.get_nowait()
        self.queue.put_nowait((event_id, message))

    def end(self) -> None:
        """No more messages: a reader waiting on the queue wakes up and sees the stream closed."""
        self.open = False
        self.queue.put_nowait((None, {}))


class Interim:
    """What the server says about one forwarded request before answering it, on its way to the request's SSE
    stream. No queue and no task: a request that produces no notification pays one future for having
    offered SSE, and its answer then goes out as plain JSON."""

    __slots__ = ("_wake", "messages", "open")

    def __init__(self) -> None:
        self.messages: deque[dict[str, Any]] = deque()
        self.open = True
        self._wake: asyncio.Future[None] | None = None

    def put(self, message: dict[str, Any]) -> bool:
        """Take a message for the stream; False once the stream is over (the caller finds it another way)."""
        if not self.open:
            return False
        if len(self.messages) >= MAX_STREAM_BACKLOG:
            self.messages.popleft()
        self.messages.append(message)
        self.rouse()
        return True

    def rouse(self) -> None:
        """Wake `next` (a message came, or the answer: ServerLink calls this as it resolves the request)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def next(self, answered: asyncio.Future[Any]) -> dict[str, Any] | None:
        """The next message, or None once `answered` is done and every message sent before it was taken."""
        while not self.messages:
            if answered.done():
                return None
            self._wake = answered.get_loop().create_future()
            await self._wake
        return self.messages.popleft()


class BadRequest(Exception):
    """What the client sent is not HTTP/1.1 we serve: answered with `status` and the connection closed."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


@dataclass
class Request:
    """One request off the wire: its head as soon as it is parsed, its body as it arrives."""

    method: bytes = b""
    target: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)   # names lower-cased; a repeated one is joined by ", "
    keep_alive: bool = True
    http11: bool = True
    head_size: int = 0
    head_done: bool = False
    body: list[bytes] = field(default_factory=list)
    body_size: int = 0
    too_large: bool = False          # the body went over the bound: the rest of it is not kept
    complete: bool = False


class _Parse:
    """httptools' callbacks: the requests of one connection, in order (a pipelining client may send several)."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head, self.max_body = max_head, max_body
        self.requests: deque[Request] = deque()
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.requests.append(Request())

    def _grow_head(self, size: int) -> None:
        current = self.requests[-1]
        current.head_size += size
        if current.head_size > self.max_head:   # llhttp wraps it: HttpParserCallbackError, this as its context
            raise BadRequest(431, "request header fields too large")

    def on_url(self, url: bytes) -> None:
        self._grow_head(len(url))
        self.requests[-1].target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        headers = self.requests[-1].headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        current = self.requests[-1]
        current.method = self.parser.get_method()
        current.http11 = self.parser.get_http_version() == "1.1"
        current.keep_alive = self.parser.should_keep_alive()
        current.head_done = True

    def on_body(self, body: bytes) -> None:
        current = self.requests[-1]
        current.body_size += len(body)
        if current.body_size > self.max_body:
            current.too_large, current.body = True, []
        elif not current.too_large:
            current.body.append(body)

    def on_message_complete(self) -> None:
        self.requests[-1].complete = True


class HttpConnection:
    """One client's connection: `next_request`, `read_body`, then `send` (or an SSE stream); again if kept alive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_head: int,
                 max_body: int) -> None:
        self.reader, self.writer = reader, writer
        self._parse = _Parse(max_head, max_body)
        self._upgraded = False          # an Upgrade request: nothing after it is parsed; closed after the answer
        self.close_after = False        # the current reply ends the connection
        self._chunked = False           # the current SSE stream is sent in chunks (HTTP/1.1)
        self._head_bytes = 0            # bytes read while the newest request's head is unfinished
        self._head_of: Request | None = None   # that request
        self._refusal: BadRequest | None = None   # what the connection's next unparsable request gets
        self._unread = False            # a request was answered before its body was read whole

    async def _feed(self) -> bool:
        """Read once more and parse it; False at end of input. A malformed request after complete ones is
        refused once those are answered (`_refusal`)."""
        if self._refusal is not None:
            if any(request.complete for request in self._parse.requests):
                return True
            raise self._refusal
        data = await self.reader.read(READ_CHUNK)
        if not data:
            return False
        if self._upgraded:
            return True
        try:
            self._parse.parser.feed_data(data)
            self._bound_head(len(data))
        except httptools.HttpParserUpgrade:   # llhttp stops at the head: its body and what follows go unparsed
            self._upgraded = True
            if self._parse.requests:
                self._parse.requests[-1].complete = False
            self._refusal = BadRequest(400, "protocol upgrades are not served here: plain HTTP/1.1 only")
        except (httptools.HttpParserError, BadRequest) as exc:
            cause = exc if isinstance(exc, BadRequest) else exc.__context__   # a callback's own refusal
            self._refusal = cause if isinstance(cause, BadRequest) else \
                BadRequest(400, f"malformed request: {cause or exc}")
            requests = self._parse.requests
            complete = [request for request in requests if request.complete]
            requests.clear()
            requests.extend(complete)
            return await self._feed()
        return True

    def _bound_head(self, fed: int) -> None:
        """llhttp hands a header over only once its line ends: bound the bytes read while one request's head is
        unfinished (the read that began it may hold earlier requests too, so the bound is max_head + a read)."""
        requests = self._parse.requests
        newest = requests[-1] if requests else None
        if newest is None or newest.head_done:
            self._head_of, self._head_bytes = None, 0
            return
        if newest is not self._head_of:   # a new request's head began in this read
            self._head_of, self._head_bytes = newest, 0
        self._head_bytes += fed
        if self._head_bytes > self._parse.max_head + READ_CHUNK:
            raise BadRequest(431, "request header fields too large")

    async def next_request(self, head_timeout_s: float) -> Request | None:
        """The next request with its head parsed (None: the client closed the connection). Waiting for a first
        byte has no bound here (the gateway's sweep ends idle connections); once it came, the rest of the head
        must follow within `head_timeout_s` (slowloris)."""
        requests = self._parse.requests
        if not requests and not await self._feed():
            return None
        if not (requests and requests[0].head_done):
            async with asyncio.timeout(head_timeout_s):
                while not (requests and requests[0].head_done):
                    if not await self._feed():
                        return None
        request = requests[0]
        self.close_after = not (request.keep_alive and request.http11) or self._upgraded
        return request

    async def read_body(self, request: Request, timeout_s: float) -> bytes | None:
        """The whole body, within `timeout_s`; None when it is larger than the bound (413)."""
        if not request.complete:
            if request.headers.get("expect", "").lower() == "100-continue" and request.http11:
                self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")   # curl asks before sending a larger body
            async with asyncio.timeout(timeout_s):
                while not (request.complete or request.too_large):   # too large: 413 now, not at its end
                    if not await self._feed():
                        raise ConnectionError("client went away mid-request")
        return None if request.too_large else b"".join(request.body)

    async def close(self) -> None:
        """End the connection; lingering first if the client may still be sending what was not read."""
        try:
            if self._refusal is not None or self._unread or \
                    any(not request.complete for request in self._parse.requests):
                with contextlib.suppress(ConnectionError, TimeoutError, OSError, RuntimeError):
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    async with asyncio.timeout(LINGER_S):
                        discarded = 0
                        while discarded < LINGER_BYTES and (data := await self.reader.read(READ_CHUNK)):
                            discarded += len(data)
        finally:
            self.writer.close()

    def done(self, request: Request) -> bool:
        """The request is answered: True when the connection may carry the next one."""
        if self._parse.requests and self._parse.requests[0] is request:
            self._parse.requests.popleft()
        self._unread = self._unread or not request.complete
        return request.complete and not self.close_after

    def _head(self, status: int, headers: list[tuple[str, str]]) -> list[bytes]:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if self.close_after:
            lines.append(b"Connection: close\r\n")
        return lines

    async def send(self, reply: Reply) -> None:
        """The reply with its body, in one write."""
        headers = [(n, v) for n, v in reply.headers if n.lower() != "connection"]
        if any(n.lower() == "connection" and v.lower() == "close" for n, v in reply.headers):
            self.close_after = True
        lines = self._head(reply.status, headers)
        if reply.status not in _NO_BODY:
            lines.append(b"Content-Length: %d\r\n" % len(reply.body))
        lines.append(b"\r\n")
        if reply.status not in _NO_BODY:
            lines.append(reply.body)
        self.writer.write(b"".join(lines))
        await self.writer.drain()

    async def start_stream(self, headers: list[tuple[str, str]]) -> None:
        """A 200 whose body is an SSE stream: chunked on HTTP/1.1, else delimited by closing the connection."""
        self._chunked = self._parse.requests[0].http11 if self._parse.requests else True
        if not self._chunked:
            self.close_after = True
        lines = self._head(200, [*_SSE_HEADERS, *headers])
        if self._chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        lines.append(b"\r\n")
        self.writer.write(b"".join(lines))
        await self.writer.drain()

    async def stream_event(self, message: dict[str, Any], event_id: str | None = None) -> None:
        data = sse_event(message, event_id)
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        await self.writer.drain()

    async def end_stream(self) -> None:
        if self._chunked:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()


class SseOut:
    """A POST's answer as an SSE stream, started by its first event; `finish` sends the response and ends it.

    With `record` (a handshake-era session's POST; clientsessions.PostRecord), each event gets an id and is
    kept: when the client's connection drops, the rest is still recorded (not sent) and the client resumes
    with GET + Last-Event-ID. Without it, a dropped connection raises ConnectionError at once."""

    def __init__(self, conn: HttpConnection, record: Callable[[dict[str, Any], bool], str] | None = None) -> None:
        self.conn = conn
        self.record = record
        self.started = False
        self.broken = False   # the client went away mid-stream; what follows waits for its resume

    async def event(self, message: dict[str, Any], *, answer: bool = False) -> None:
        event_id = self.record(message, answer) if self.record is not None else None
        if self.broken:
            return
        try:
            if not self.started:
                await self.conn.start_stream([])
                self.started = True
            await self.conn.stream_event(message, event_id)
        except ConnectionError:
            if self.record is None:
                raise
            self.broken = True

    async def finish(self, message: dict[str, Any]) -> None:
        await self.event(message, answer=True)
        if self.broken:
            raise ConnectionError("the client went away; its answer waits for a resume (Last-Event-ID)")
        await self.conn.end_stream()
