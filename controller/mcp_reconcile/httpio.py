"""HTTP/1.1 plumbing of the runner's endpoint over asyncio streams and h11: replies, SSE streams, reads.

Split from gateway.py, which decides what to answer; this module only puts bytes on the wire and takes them
off. Stdlib + h11 only: one runner runs per server.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

# Messages queued for a stream whose client reads too slowly; beyond this the oldest is dropped.
MAX_STREAM_BACKLOG = 1000
# Bytes read from a client socket at a time.
READ_CHUNK = 64 * 1024

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]


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


async def next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ_CHUNK))


async def send(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
    headers = reply.headers if reply.status == 204 else [*reply.headers, ("Content-Length", str(len(reply.body)))]
    response = h11.Response(status_code=reply.status, headers=headers, reason=_REASONS.get(reply.status, b""))
    parts = [conn.send(response)]
    if reply.body:
        parts.append(conn.send(h11.Data(data=reply.body)))
    parts.append(conn.send(h11.EndOfMessage()))
    writer.write(b"".join(parts))  # type: ignore[arg-type]  # one send(2) per response
    await writer.drain()


async def start_stream(conn: h11.Connection, writer: asyncio.StreamWriter,
                        headers: list[tuple[str, str]]) -> None:
    writer.write(conn.send(h11.Response(status_code=200, headers=[*_SSE_HEADERS, *headers],  # type: ignore[arg-type]
                                        reason=b"OK")))
    await writer.drain()


async def stream_event(conn: h11.Connection, writer: asyncio.StreamWriter, message: dict[str, Any],
                       event_id: str | None = None) -> None:
    writer.write(conn.send(h11.Data(data=sse_event(message, event_id))))  # type: ignore[arg-type]
    await writer.drain()


class SseOut:
    """A POST's answer as an SSE stream, started by its first event; `finish` sends the response and ends it."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self.conn, self.writer = conn, writer
        self.started = False

    async def event(self, message: dict[str, Any]) -> None:
        if not self.started:
            await start_stream(self.conn, self.writer, [])
            self.started = True
        await stream_event(self.conn, self.writer, message)

    async def finish(self, message: dict[str, Any]) -> None:
        await self.event(message)
        self.writer.write(self.conn.send(h11.EndOfMessage()))  # type: ignore[arg-type]
        await self.writer.drain()
