"""The runner's control socket: how the controller asks a live runner to swap in a new server generation
(make-before-break, SPEC section 7), without a second runner and without the endpoint ever closing.

One request, one JSON line each way, over an abstract Unix socket named after the state dir and the server
(`\\0mcp-reconcile/<crc32 of the state dir>/<name>`: nothing on disk to clean up after a kill -9). Abstract
sockets have no file permissions, so the runner accepts only peers of its own uid (SO_PEERCRED) and requests
that name its own state dir and server. The request carries the new generation's argv and environment (its
secrets included, as the spawner's does); nothing of it is logged.

Stdlib only: the runner imports this.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

# Largest request accepted (argv + environment).
MAX_REQUEST_BYTES = 1 << 20

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def control_address(state_root: str, name: str) -> str:
    """The abstract socket a runner of `name` in `state_root` listens on (leading NUL: Linux abstract)."""
    digest = zlib.crc32(os.fsencode(os.path.abspath(state_root)))
    return f"\0mcp-reconcile/{digest:08x}/{name}"


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except OSError:
        return None
    return int(uid)


async def serve_control(address: str, *, state_root: str, name: str, handler: Handler) -> asyncio.AbstractServer:
    """Listen on `address`; each request of our uid naming this runner goes to `handler`, its answer back."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer) != os.getuid():
                answer: dict[str, Any] = {"ok": False, "error": "refused: another user"}
            else:
                line = await reader.readline()
                request = json.loads(line) if line else {}
                if not isinstance(request, dict) or request.get("name") != name \
                        or os.path.abspath(str(request.get("state_dir"))) != os.path.abspath(state_root):
                    answer = {"ok": False, "error": "refused: this runner serves another server"}
                else:
                    answer = await handler(request)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(on_connection, path=address, limit=MAX_REQUEST_BYTES)


async def ask_runner(address: str, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any] | None:
    """Send one request to the runner at `address` and return its answer; None when no runner listens there
    (an older runner, or none). Raises TimeoutError when it does not answer within `timeout_s`."""
    try:
        reader, writer = await asyncio.open_unix_connection(address, limit=MAX_REQUEST_BYTES)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
    finally:
        writer.close()
    answer = json.loads(line) if line else None
    return answer if isinstance(answer, dict) else None
