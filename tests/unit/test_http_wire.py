"""HttpConnection on a real loopback socket: the bytes a client sends and the bytes it gets back (keep-alive,
pipelining, chunked and split bodies, 100-continue, closing, 431/400/413, SSE framing, 204)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import loopback  # tests/support (on pytest's pythonpath)
import pytest

from mcp_reconcile import httpio
from mcp_reconcile.httpio import BadRequest, HttpConnection, Reply

WAIT_S = 5.0            # bound on every wait; each exchange takes milliseconds
MAX_HEAD = 1024
MAX_BODY = 64
SSE_MESSAGES = [{"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
                {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "done"}]}}]


# ---- the server: an echo handler that loops like Gateway._serve_connection --------------------------------

class TappedReader:
    """The connection's reader, handing the test each chunk HttpConnection takes off the socket."""

    def __init__(self, reader: asyncio.StreamReader, reads: asyncio.Queue[bytes]) -> None:
        self._reader, self._reads = reader, reads

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._reads.put_nowait(data)
        return data


@dataclass
class EchoServer:
    """Answers each request with `METHOD TARGET BODY`; /events is an SSE stream, /204 a 204 with a body."""

    max_head: int = MAX_HEAD
    max_body: int = MAX_BODY
    reads: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)   # each read of the socket, in order
    bodies: list[bytes | None] = field(default_factory=list)               # what read_body returned
    failures: list[BaseException] = field(default_factory=list)            # anything the handler did not expect
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tapped = cast(asyncio.StreamReader, TappedReader(reader, self.reads))
        conn = HttpConnection(tapped, writer, max_head=self.max_head, max_body=self.max_body)
        try:
            while True:
                request = await conn.next_request(WAIT_S)
                if request is None:
                    break
                body = await conn.read_body(request, WAIT_S)
                self.bodies.append(body)
                await self.answer(conn, request, body)
                if not conn.done(request):
                    break
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await conn.send(httpio.closing(Reply(exc.status, f"{exc}\n".encode(),
                                                     [("Content-Type", "text/plain")])))
        except (ConnectionError, TimeoutError):
            pass
        except BaseException as exc:
            self.failures.append(exc)
            raise
        finally:
            await conn.close()
            self.finished.set()

    async def answer(self, conn: HttpConnection, request: httpio.Request, body: bytes | None) -> None:
        if body is None:
            await conn.send(httpio.closing(Reply(413, b"request body too large\n")))
        elif request.target == b"/events":
            await conn.start_stream([])
            for message in SSE_MESSAGES:
                await conn.stream_event(message)
            await conn.end_stream()
        elif request.target == b"/204":
            await conn.send(Reply(204, b"a 204 has no body, whatever the handler says"))
        else:
            await conn.send(Reply(200, b"%s %s %s" % (request.method, request.target, body),
                                  [("Content-Type", "text/plain")]))


# ---- the client: raw bytes out, responses parsed here (not by httptools) ----------------------------------

@dataclass
class Response:
    status: int
    headers: dict[str, str]         # names lower-cased
    body: bytes
    chunks: list[bytes] | None      # the chunks as framed on the wire, when Transfer-Encoding: chunked


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One response, framed strictly by RFC 9112: no body for 1xx/204/304, else chunked, Content-Length or EOF."""
    async with asyncio.timeout(WAIT_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, code, _reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"repeated header {name}"
            headers[name.lower()] = value.strip()
        status = int(code)
        if status < 200 or status in (204, 304):
            return Response(status, headers, b"", None)
        if headers.get("transfer-encoding") == "chunked":
            assert "content-length" not in headers
            chunks = await read_chunks(reader)
            return Response(status, headers, b"".join(chunks), chunks)
        if "content-length" in headers:
            return Response(status, headers, await reader.readexactly(int(headers["content-length"])), None)
        return Response(status, headers, await reader.read(), None)


async def read_chunks(reader: asyncio.StreamReader) -> list[bytes]:
    """The chunks of a chunked body up to its 0-length last chunk (no extensions, no trailers expected)."""
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line[:-2], 16)
        assert size_line == b"%x\r\n" % size, size_line
        if size == 0:
            assert await reader.readexactly(2) == b"\r\n", "the last chunk ends the body (no trailers)"
            return chunks
        chunks.append(await reader.readexactly(size))
        assert await reader.readexactly(2) == b"\r\n", "a chunk's data ends with CRLF"


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closed the connection with nothing more to read."""
    async with asyncio.timeout(WAIT_S):
        return await reader.read() == b""


async def next_read(server: EchoServer) -> bytes:
    async with asyncio.timeout(WAIT_S):
        return await server.reads.get()


@contextlib.asynccontextmanager
async def connected(server: EchoServer) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A loopback listener serving `server`, and one raw client connection to it."""
    async with loopback.connected(server.serve, server.finished, WAIT_S) as (reader, writer):
        yield reader, writer
    assert not server.failures, server.failures


def run(scenario: Callable[[EchoServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        **limits: Any) -> EchoServer:
    """Run `scenario` against a fresh EchoServer over a real socket; the server, to check what it saw."""
    async def main() -> EchoServer:
        server = EchoServer(**limits)
        async with connected(server) as (reader, writer):
            await scenario(server, reader, writer)
        return server
    return asyncio.run(main())


# ---- keep-alive and pipelining -----------------------------------------------------------------------------

def test_two_requests_pipelined_in_one_send_are_both_answered_in_order_on_the_same_connection() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = await read_response(reader), await read_response(reader)
        assert (first.status, first.body) == (200, b"POST /first abc")
        assert (second.status, second.body) == (200, b"GET /second ")
        assert "connection" not in first.headers and "connection" not in second.headers
        writer.write(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")     # still open: a third request is answered
        third = await read_response(reader)
        assert (third.status, third.body) == (200, b"GET /third ")

    run(scenario)


# ---- request bodies ----------------------------------------------------------------------------------------

def test_a_chunked_request_body_is_read_whole() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n1\r\n \r\nA;ext=1\r\nchunked!!!\r\n0\r\n\r\n")
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"POST /c hello chunked!!!")
        assert server.bodies == [b"hello chunked!!!"]

    run(scenario)


def test_a_body_split_over_several_sends_is_read_whole() -> None:
    parts = [b'{"jsonrpc":', b'"2.0","id":1,', b'"method":"ping"}']
    body = b"".join(parts)

    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert (await next_read(server)).endswith(b"\r\n\r\n")   # the head alone: the body has not been sent
        for part in parts:
            writer.write(part)
            assert await next_read(server) == part                # each part is its own read by the server
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"POST /split " + body)
        assert server.bodies == [body]

    run(scenario)


def test_expect_100_continue_gets_100_continue_before_the_body_is_sent_then_the_answer() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        async with asyncio.timeout(WAIT_S):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"POST /up hello")

    run(scenario)


@pytest.mark.parametrize("framing", [
    pytest.param(b"Content-Length: 100\r\n\r\n" + b"x" * 100, id="content-length"),
    pytest.param(b"Transfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n1\r\nx\r\n0\r\n\r\n",
                 id="chunked"),
])
def test_a_body_over_max_body_is_not_returned_and_the_handler_answers_413(framing: bytes) -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\n" + framing)
        response = await read_response(reader)
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert await closed_by_server(reader)

    server = run(scenario)
    assert server.bodies == [None]


# ---- closing -----------------------------------------------------------------------------------------------

def test_an_http_1_0_request_is_answered_with_connection_close_and_the_connection_closes() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /old HTTP/1.0\r\n\r\n")
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"GET /old ")
        assert response.headers["connection"] == "close"
        assert await closed_by_server(reader)

    run(scenario)


def test_connection_close_from_an_http_1_1_client_is_answered_then_the_connection_closes() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"GET /bye ")
        assert response.headers["connection"] == "close"
        assert await closed_by_server(reader)

    run(scenario)


# ---- malformed input ---------------------------------------------------------------------------------------

def test_a_head_larger_than_max_head_gets_431_and_the_connection_closes() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (2 * MAX_HEAD) + b"\r\n\r\n")
        response = await read_response(reader)
        assert response.status == 431
        assert response.headers["connection"] == "close"
        assert await closed_by_server(reader)

    server = run(scenario)
    assert server.bodies == []      # the handler never saw a request


def test_a_header_line_that_never_ends_gets_431_once_the_head_is_too_large_not_when_it_ends() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: ")
        answered = asyncio.ensure_future(read_response(reader))   # read while sending, as a client would
        for _ in range(64):   # 4 MiB of one header value, never ended: the runner must not keep it all
            if answered.done() or writer.is_closing():
                break
            writer.write(b"b" * 65536)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        response = await answered
        assert response.status == 431
        assert await closed_by_server(reader)

    server = run(scenario)
    assert server.bodies == []


def test_a_request_answered_before_garbage_in_the_same_read_then_the_garbage_gets_400() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
        first = await read_response(reader)
        assert first.status == 200
        refused = await read_response(reader)
        assert (refused.status, refused.headers["connection"]) == (400, "close")
        assert await closed_by_server(reader)

    run(scenario)


@pytest.mark.parametrize("garbage", [
    pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)), id="TLS ClientHello"),
    pytest.param(b"hello there\r\n\r\n", id="text"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                 id="two Content-Lengths"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad chunk size"),
])
def test_garbage_that_is_not_http_gets_400_and_the_connection_closes(garbage: bytes) -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(garbage)
        response = await read_response(reader)
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert await closed_by_server(reader)

    run(scenario)


# ---- reply framing -----------------------------------------------------------------------------------------

def test_an_sse_stream_on_http_1_1_is_framed_as_valid_chunked_transfer_encoding() -> None:
    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        response = await read_response(reader)
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        assert response.chunks == [b"event: message\ndata: " + json.dumps(m, separators=(",", ":")).encode()
                                   + b"\n\n" for m in SSE_MESSAGES]
        for chunk, message in zip(response.chunks, SSE_MESSAGES, strict=True):
            assert json.loads(chunk.removeprefix(b"event: message\ndata: ")) == message
        writer.write(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")     # the stream ended; the connection goes on
        after = await read_response(reader)
        assert (after.status, after.body) == (200, b"GET /after ")

    run(scenario)


def test_a_204_reply_has_no_content_length_and_no_body_and_other_replies_have_a_correct_content_length() -> None:
    payload = "é".encode() * 300

    async def scenario(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(payload), payload))
        empty = await read_response(reader)
        assert empty.status == 204
        assert "content-length" not in empty.headers
        rest = await read_response(reader)     # starts right after the 204's head: no stray body bytes
        assert rest.status == 200
        assert rest.headers["content-length"] == str(len(b"POST /next " + payload))
        assert rest.body == b"POST /next " + payload
        assert await closed_by_server(reader)                   # nothing past the Content-Length bytes

    run(scenario, max_body=len(payload))

