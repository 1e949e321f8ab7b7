"""Fuzzing HttpConnection on a real loopback socket: whatever a client sends, in whatever pieces, before it
half-closes, the handler ends within a bound, raises nothing but BadRequest/ConnectionError (nor waits out a
timeout: the client is done), and the bytes that come back are well-formed HTTP/1.1 responses, exactly the
ones the handler sent; valid pipelined requests, split anywhere, are all answered, in order, each with its
own body. Two bugs the fuzzing found (fixed) keep a test each at the end.

The server is a variant of test_http_wire's echo handler, with the gateway's 413 before the body and 405, that
records what it sent; the connection comes from tests/support/loopback.py, as there; responses are parsed
strictly here, not by httptools.
The default run is deterministic, 200 examples a test; more (random):

    MCPR_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/unit/test_http_wire_fuzz.py
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta

import loopback  # tests/support (on pytest's pythonpath)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_reconcile import httpio
from mcp_reconcile.httpio import BadRequest, HttpConnection, Reply

BOUND_S = 5.0           # the handler ends this soon after the client's half-close; every wait is bounded by it
MAX_HEAD = 1024
MAX_BODY = 64
EXAMPLES = int(os.environ.get("MCPR_FUZZ_EXAMPLES", "0")) or 200   # a test
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=2 * BOUND_S), database=None,
                derandomize="MCPR_FUZZ_EXAMPLES" not in os.environ, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
ECHOED = (b"GET", b"POST", b"DELETE")


# ---- the server: test_http_wire's echo handler, recording what it sent and anything it did not expect -------

@dataclass
class EchoServer:
    """Answers `METHOD TARGET BODY`; /events is an SSE stream; 405 for other methods, 413 over MAX_BODY."""

    sent: list[tuple[int, bytes]] = field(default_factory=list)           # final responses: status, body
    bodies: list[bytes | None] = field(default_factory=list)              # what read_body returned
    failures: list[BaseException] = field(default_factory=list)           # anything but the three expected
    timeouts: list[TimeoutError] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = HttpConnection(reader, writer, max_head=MAX_HEAD, max_body=MAX_BODY)
        try:
            while True:
                request = await conn.next_request(BOUND_S)
                if request is None:
                    break
                length = request.headers.get("content-length", "0")
                if length.isdigit() and int(length) > MAX_BODY:    # as the gateway: refused before it is read
                    await self.send(conn, httpio.closing(Reply(413, b"request body too large\n")))
                else:
                    body = await conn.read_body(request, BOUND_S)
                    self.bodies.append(body)
                    await self.answer(conn, request, body)
                if not conn.done(request):
                    break
        except BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await self.send(conn, httpio.closing(Reply(exc.status, f"{exc}\n".encode(),
                                                           [("Content-Type", "text/plain")])))
        except ConnectionError:
            pass
        except TimeoutError as exc:
            self.timeouts.append(exc)
        except BaseException as exc:
            self.failures.append(exc)
            raise
        finally:
            try:
                await conn.close()
            except BaseException as exc:
                self.failures.append(exc)
                raise
            finally:
                self.finished.set()

    async def send(self, conn: HttpConnection, reply: Reply) -> None:
        await conn.send(reply)
        self.sent.append((reply.status, b"" if reply.status in (204, 304) else reply.body))

    async def answer(self, conn: HttpConnection, request: httpio.Request, body: bytes | None) -> None:
        if body is None:
            await self.send(conn, httpio.closing(Reply(413, b"request body too large\n")))
        elif request.method not in ECHOED:
            await self.send(conn, Reply(405, b"", [("Allow", "GET, POST, DELETE")]))
        elif request.target == b"/events":
            await conn.start_stream([])
            events = [{"jsonrpc": "2.0", "method": "ping", "params": {"n": n}} for n in range(2)]
            for event in events:
                await conn.stream_event(event)
            await conn.end_stream()
            self.sent.append((200, b"".join(httpio.sse_event(event) for event in events)))
        else:
            await self.send(conn, Reply(200, b"%s %s %s" % (request.method, request.target, body),
                                        [("Content-Type", "text/plain")]))


# ---- the client: bytes out in pieces, a half-close, then everything back up to the server's close ----------

async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends up to its close (a reset after data counts as the close)."""
    received = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while data := await reader.read(65536):
            received += data
    return bytes(received)


def connected(server: EchoServer) -> contextlib.AbstractAsyncContextManager[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A loopback listener serving `server`, and one raw client connection to it; on leaving, the connection is
    closed and the server's handler has ended."""
    return loopback.connected(server.serve, server.finished, BOUND_S)


async def exchange(server: EchoServer, pieces: list[bytes]) -> bytes:
    """Send `pieces` one at a time (the server reads between them), half-close, and return all that came back
    once the server's handler has ended; everything within BOUND_S of the half-close."""
    async with connected(server) as (reader, writer):
        received = asyncio.create_task(read_all(reader))   # read while sending, as a client would
        try:
            async with asyncio.timeout(BOUND_S):
                with contextlib.suppress(ConnectionError):   # the server may close before it is all sent
                    for piece in pieces:
                        writer.write(piece)
                        await writer.drain()
                        for _ in range(3):                   # the server takes this piece in a read of its own
                            await asyncio.sleep(0)
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    writer.write_eof()
            async with asyncio.timeout(BOUND_S):
                await server.finished.wait()
                return await received
        finally:
            received.cancel()


# ---- strict response framing (RFC 9112), over the bytes received ------------------------------------------

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)\r\n")


@dataclass
class Response:
    status: int
    headers: dict[str, str]     # names lower-cased
    body: bytes


def responses(data: bytes) -> list[Response]:
    """`data` as a sequence of whole responses; AssertionError, with the offending bytes, where it is not."""
    parsed: list[Response] = []
    at = 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at)
        assert end >= 0, f"an unfinished head: {data[at:]!r}"
        status_line, *lines = data[at:end].split(b"\r\n")
        match = STATUS_LINE.fullmatch(status_line)
        assert match, f"not a status line: {status_line!r}"
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and TOKEN.fullmatch(name) and FIELD_VALUE.fullmatch(value), f"bad header line {line!r}"
            key = name.decode().lower()
            assert key not in headers, f"repeated header {key}"
            headers[key] = value.strip(b" \t").decode("latin-1")
        at, status = end + 4, int(match[1])
        assert not ("content-length" in headers and "transfer-encoding" in headers), headers
        close = headers.get("connection", "").lower() == "close"
        if status < 200 or status in (204, 304):
            assert "content-length" not in headers and "transfer-encoding" not in headers, headers
            body = b""
        elif "transfer-encoding" in headers:
            assert headers["transfer-encoding"] == "chunked", headers
            body, at = dechunk(data, at)
        elif "content-length" in headers:
            assert headers["content-length"].isdigit(), headers
            size = int(headers["content-length"])
            assert at + size <= len(data), f"a body cut short: {size} bytes declared, {data[at:]!r} came"
            body, at = data[at:at + size], at + size
        else:
            assert close, f"a body delimited by the close, without Connection: close: {headers}"
            body, at = data[at:], len(data)
        parsed.append(Response(status, headers, body))
        assert not close or at == len(data), f"bytes after a Connection: close response: {data[at:]!r}"
    return parsed


def dechunk(data: bytes, at: int) -> tuple[bytes, int]:
    """A chunked body from `at` up to its last chunk (none of ours has extensions or trailers); where it ends."""
    body = bytearray()
    while True:
        size_line = CHUNK_SIZE.match(data, at)
        assert size_line, f"bad chunk size line: {data[at:at + 40]!r}"
        size, at = int(size_line[1], 16), size_line.end()
        if size == 0:
            assert data[at:at + 2] == b"\r\n", f"the last chunk ends the body: {data[at:]!r}"
            return bytes(body), at + 2
        assert at + size + 2 <= len(data) and data[at + size:at + size + 2] == b"\r\n", f"bad chunk: {data[at:]!r}"
        body += data[at:at + size]
        at += size + 2


# ---- strategies -------------------------------------------------------------------------------------------

def sized_binary(most: int) -> st.SearchStrategy[bytes]:
    """Bytes of a length drawn evenly up to `most` (st.binary alone keeps nearly all of them short)."""
    return st.integers(0, most).flatmap(lambda size: st.binary(min_size=size, max_size=size))


def chunked(draw: st.DrawFn, body: bytes, *, bad: bool = False) -> bytes:
    """`body` in chunks cut at random, sizes in either case, some with an extension; `bad`: one size is wrong."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=4))))
    pieces = [body[i:j] for i, j in zip([0, *cuts], [*cuts, len(body)], strict=True) if j > i]
    lines = []
    for piece in pieces:
        size = b"%x" % len(piece)
        lines.append((size.upper() if draw(st.booleans()) else size) + draw(st.sampled_from([b"", b";a=b", b";x"]))
                     + b"\r\n" + piece + b"\r\n")
    last = b"0\r\n" + draw(st.sampled_from([b"", b"X-Trailer: t\r\n"])) + b"\r\n"
    if bad:
        wrong = draw(st.sampled_from([b"-1", b"zz", b"ffffffffffffffffffff", b"", b" 1", b"1 ", b"0x10", b"+1",
                                      b"%x" % (len(body) + 1), b"%x" % max(len(body) - 1, 0), b"1\n", b"1\r"]))
        lines.insert(draw(st.integers(0, len(lines))), wrong + b"\r\n" + body[:3] + b"\r\n")
    return b"".join(lines) + last


GOOD_HEADERS = [b"Accept: */*", b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue",
                b"Content-Type: application/json", b"X-Long: " + b"l" * (MAX_HEAD // 2)]
WILD_HEADERS = [b"Upgrade: websocket\r\nConnection: upgrade", b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked, gzip", b"Transfer-Encoding: gzip",
                b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: -1", b"Content-Length: 1x",
                b"Content-Length:", b"Content-Length: +3", b"Content-Length: 3, 3", b"Content-Length: 65",
                b"Content-Length: 99999999999999999999999", b"Content-Length: 18446744073709551616",
                b" folded", b"\tfolded", b"NoColon", b"Bad Name: v", b"X: a\x00b", b"X : v", b": empty-name",
                b"X-Big: " + b"b" * (2 * MAX_HEAD)]


@st.composite
def wild_request(draw: st.DrawFn) -> bytes:
    """A request with its framing and headers drawn from valid ones or, one time in three, hostile ones too."""
    hostile = draw(st.sampled_from([False, False, True]))

    def pick(good: list[bytes], wild: list[bytes]) -> bytes:
        return draw(st.sampled_from(good) | st.sampled_from(wild) if hostile else st.sampled_from(good))

    method = pick(list(ECHOED), [b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"PRI", b"get", b"G\x00T"])
    target = pick([b"/mcp", b"/events", b"/mcp?x=1"],
                  [b"*", b"http://h/x", b"/%00", b"/a b", b"", b"/" + b"t" * MAX_HEAD])
    version = pick([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/9", b"http/1.1"])
    body = draw(sized_binary(MAX_BODY) | sized_binary(2 * MAX_BODY))
    framing = pick([b"length", b"chunked", b"none"], [b"bad chunked", b"stray body"])
    headers = [b"Host: x", *(pick(GOOD_HEADERS, WILD_HEADERS) for _ in range(draw(st.integers(0, 3))))]
    if framing == b"length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing in (b"chunked", b"bad chunked"):
        headers.append(b"Transfer-Encoding: chunked")
        body = chunked(draw, body, bad=framing == b"bad chunked")
    elif framing == b"none":
        body = b""
    if hostile and draw(st.booleans()):
        headers.append(draw(st.sampled_from(headers)))      # a header twice
    headers = draw(st.permutations(headers))
    return b"%s %s %s\r\n%s\r\n\r\n%s" % (method, target, version, b"\r\n".join(headers), body)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """One to three pipelined requests, then up to four byte-level mutations anywhere in them."""
    data = bytearray(b"".join(draw(st.lists(wild_request(), min_size=1, max_size=3))))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4]))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "repeat"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"\r", b"\n", b"\x00", b"\r\n", b"\r\n\r\n", b" ", b":", b"\t",
                                                b"\x80", b"\xff"]))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
    return bytes(data)


SOUP = [b"GET ", b"POST ", b"/ ", b"HTTP/1.1", b"\r\n", b"\n", b"\r", b"Host: x", b"Content-Length: ", b"3", b"-1",
        b"Transfer-Encoding: chunked", b"0\r\n\r\n", b"5\r\nhello\r\n", b"Connection: close", b"abc", b"\x00", b":"]
wire_inputs = st.one_of(mutated(), mutated(), mutated(), st.binary(max_size=1024),
                        st.lists(st.sampled_from(SOUP), max_size=30).map(b"".join))


def split(data: st.DataObject, payload: bytes) -> list[bytes]:
    """`payload` cut at up to eight random offsets."""
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(payload)), max_size=8), label="cuts")))
    return [payload[i:j] for i, j in zip([0, *cuts], [*cuts, len(payload)], strict=True) if j > i]


# ---- the properties ---------------------------------------------------------------------------------------

@FUZZ
@given(payload=wire_inputs, data=st.data())
def test_any_bytes_in_any_pieces_end_the_handler_in_time_and_get_only_well_formed_responses(
        payload: bytes, data: st.DataObject) -> None:
    server = EchoServer()
    received = asyncio.run(exchange(server, split(data, payload)))
    assert not server.failures, server.failures
    assert not server.timeouts, f"the client half-closed, yet the handler waited out a timeout: {server.timeouts}"
    answers = responses(received)
    assert [(a.status, a.body) for a in answers if a.status >= 200] == server.sent, received
    assert all(a.status == 100 for a in answers if a.status < 200), received


@st.composite
def valid_request(draw: st.DrawFn, number: int) -> tuple[bytes, bytes, bytes]:
    """A request /r<number> the echo handler answers 200 (method, body, wire bytes): Content-Length or chunked."""
    method = draw(st.sampled_from(ECHOED))
    body = draw(sized_binary(MAX_BODY))
    head = b"%s /r%d HTTP/1.1\r\nHost: x\r\n" % (method, number)
    framing = draw(st.sampled_from(["length", "chunked", "none"] if not body else ["length", "chunked"]))
    if framing == "length":
        return method, body, head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    if framing == "chunked":
        return method, body, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(draw, body)
    return method, body, head + b"\r\n"


@FUZZ
@given(count=st.integers(1, 8), data=st.data())
def test_pipelined_valid_requests_split_anywhere_get_one_answer_each_in_order(count: int, data: st.DataObject) -> None:
    requests = [data.draw(valid_request(n), label=f"request {n}") for n in range(count)]
    server = EchoServer()
    received = asyncio.run(exchange(server, split(data, b"".join(wire for _, _, wire in requests))))
    assert not server.failures, server.failures
    answers = responses(received)
    assert [(a.status, a.body) for a in answers] == [
        (200, b"%s /r%d %s" % (method, n, body)) for n, (method, body, _) in enumerate(requests)], received
    assert not any("connection" in a.headers for a in answers)
    assert server.bodies == [body for _, body, _ in requests]


# ---- found by fuzzing (fixed in httpio.py) ------------------------------------------------------------------

GET = b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n"                                         # 28 bytes
ECHO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nGET /r "


def test_pipelined_requests_whose_reads_end_mid_head_are_all_answered_not_refused_as_too_large() -> None:
    stream = GET * 2378                            # 66 584 bytes of 28-byte heads, far under MAX_HEAD each
    cuts = [0, 33281, 66562, len(stream)]          # the first two reads end mid-head: 66 562 > 1024 + 65 536

    async def scenario() -> None:
        server = EchoServer()
        async with connected(server) as (reader, writer):
            for start, end in itertools.pairwise(cuts):
                writer.write(stream[start:end])    # sent once the previous piece is answered: a read of its own
                count = end // len(GET) - start // len(GET)
                try:
                    async with asyncio.timeout(BOUND_S):
                        got = await reader.readexactly(count * len(ECHO))
                except asyncio.IncompleteReadError as exc:
                    got = exc.partial
                assert got == ECHO * count, f"after {start // len(GET)} answers: {got[-120:]!r}"
        assert not server.failures, server.failures

    asyncio.run(scenario())


def test_a_request_refused_before_its_body_is_read_lets_the_client_send_on_and_read_the_413() -> None:
    async def scenario() -> None:
        server = EchoServer()
        async with connected(server) as (reader, writer):
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            async with asyncio.timeout(BOUND_S):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in head, head
                for _ in range(99):             # the rest of the body, as curl would send it
                    writer.write(b"x" * 1000)
                    await writer.drain()
                    await asyncio.sleep(0)
                writer.write_eof()
                assert await reader.read() == b"request body too large\n"
        assert not server.failures, server.failures

    asyncio.run(scenario())
