"""A runner's endpoint ends kept-alive connections that stay idle, and only those.

The idle bound is a sweep over waiting connections (no timer per request: gateway.py), so this checks the sweep
itself: a connection that sends nothing is closed once IDLE_TIMEOUT_S has passed, while one that keeps making
requests is not. A real Gateway on a loopback port, with the bounds shortened; no server behind it is needed
(the requests here are refused before anything is forwarded). Waits are bounded.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from mcp_reconcile import gateway

WAIT_S = 5.0
REFUSED = b"HTTP/1.1 406 Not Acceptable"   # GET without Accept: text/event-stream, answered on the spot


async def _endpoint() -> gateway.Gateway:
    link: Any = SimpleNamespace()   # the requests here are refused before any forwarding
    endpoint = gateway.Gateway(link, era="handshake", initialize_result={})
    await endpoint.start(0)
    return endpoint


async def _refused_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> bytes:
    writer.write(f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())   # 406: no SSE accepted
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


def test_an_idle_connection_is_closed_by_the_sweep_and_a_busy_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "IDLE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(gateway, "SWEEP_INTERVAL_S", 0.05)

    async def scenario() -> None:
        endpoint = await _endpoint()
        try:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(WAIT_S):
                while not idle_reader.at_eof():   # the busy client keeps asking meanwhile
                    assert await _refused_request(busy_reader, busy_writer, endpoint.port) == REFUSED
                    if await _eof_within(idle_reader, 0.05):
                        break
            assert loop.time() - started >= gateway.IDLE_TIMEOUT_S   # not before its bound
            # the busy connection is still served after the idle one was closed
            assert await _refused_request(busy_reader, busy_writer, endpoint.port) == REFUSED
            idle_writer.close()
            busy_writer.close()
        finally:
            endpoint.close()

    asyncio.run(scenario())


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closed (b"" read) within `seconds`."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False
