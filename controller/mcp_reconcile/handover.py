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
import contextlib
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


def _peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
    except OSError:
        return None
    return int(uid)


def _meant_for(request: Any, *, state_root: str, name: str) -> bool:
    """Does `request` name this runner's state dir and server (another state dir could share the address)?"""
    return isinstance(request, dict) and request.get("name") == name \
        and os.path.abspath(str(request.get("state_dir"))) == os.path.abspath(state_root)


async def serve_control(address: str, *, state_root: str, name: str, handler: Handler) -> asyncio.AbstractServer:
    """Listen on `address`; each request of our uid naming this runner goes to `handler`, its answer back."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer.get_extra_info("socket")) != os.getuid():
                answer: dict[str, Any] = {"ok": False, "error": "refused: another user"}
            else:
                line = await reader.readline()
                request = json.loads(line) if line else {}
                if not _meant_for(request, state_root=state_root, name=name):
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


def ask_runner_blocking(address: str, request: dict[str, Any], *, timeout_s: float) -> dict[str, Any] | None:
    """`ask_runner` for threads without an event loop (the /metrics server's): None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


# --- holding the endpoint while a crashed server comes back -------------------------------------------------
# A keeper answers these requests on the control socket it inherited from the runner that forked it.
TAKE = "take-listener"
RELEASE = "release"
# Bound on one control exchange with a keeper (it only ever waits on select).
KEEPER_EXCHANGE_TIMEOUT_S = 2.0
# What a keeper answers to the requests still queued when its hold ends.
_HOLD_EXPIRED_BODY = (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":'
                      b'"MCP server unavailable: it crashed and has not come back yet"}}')
HOLD_EXPIRED_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                      b"Connection: close\r\nContent-Length: " + str(len(_HOLD_EXPIRED_BODY)).encode() +
                      b"\r\n\r\n" + _HOLD_EXPIRED_BODY)


def keep_listener(listener: socket.socket, control: socket.socket, *, state_root: str, name: str,
                  hold_s: float) -> None:
    """In a keeper process: hold the endpoint's listening socket (clients' connections wait in its backlog)
    until the next runner takes it over, a controller releases it, or `hold_s` passes. Blocking; returns when
    done (the caller exits)."""
    import select
    import time

    deadline = time.monotonic() + hold_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([control], [], [], left)
        if not ready:
            break
        try:
            conn, _ = control.accept()
        except OSError:
            continue
        with conn:
            conn.settimeout(KEEPER_EXCHANGE_TIMEOUT_S)
            try:
                request = json.loads(conn.recv(MAX_REQUEST_BYTES).split(b"\n", 1)[0] or b"{}")
            except (OSError, ValueError):
                continue
            if _peer_uid(conn) != os.getuid() or not _meant_for(request, state_root=state_root, name=name):
                continue
            if request.get("op") == TAKE:
                control.close()   # before the answer: the taker binds this address next
                socket.send_fds(conn, [b'{"ok": true}\n'], [listener.fileno()])
                return
            if request.get("op") == RELEASE:
                control.close()
                conn.sendall(b'{"ok": true}\n')
                break
    control.close()
    _refuse_queued(listener)


def _refuse_queued(listener: socket.socket) -> None:
    """Answer what waited in the backlog with a 503 instead of a reset, then close the endpoint."""
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        with conn, contextlib.suppress(OSError):
            conn.sendall(HOLD_EXPIRED_REPLY)
    listener.close()


def _ask_keeper(address: str, request: dict[str, Any]) -> tuple[dict[str, Any] | None, list[int]]:
    """One blocking exchange with whatever listens at `address`: its answer and any fds it passed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(KEEPER_EXCHANGE_TIMEOUT_S)
        try:
            sock.connect(address)
            sock.sendall(json.dumps(request).encode() + b"\n")
            message, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
            while sock.recv(4096):   # EOF: the keeper has closed the control address too
                pass
        except (OSError, TimeoutError):
            return None, []
    try:
        answer = json.loads(message.split(b"\n", 1)[0]) if message else None
    except ValueError:
        answer = None
    return (answer if isinstance(answer, dict) else None), list(fds)


def take_listener(state_root: str, name: str) -> socket.socket | None:
    """The listening socket a keeper holds for this server (connections queued in it included), or None."""
    request = {"op": TAKE, "state_dir": os.path.abspath(state_root), "name": name}
    answer, fds = _ask_keeper(control_address(state_root, name), request)
    if not fds:
        return None
    for extra in fds[1:]:
        os.close(extra)
    if not (answer or {}).get("ok"):
        os.close(fds[0])
        return None
    return socket.socket(fileno=fds[0])


def release_keeper(state_root: str, name: str) -> bool:
    """Tell a keeper of this server to let its endpoint go (the server is being stopped); True if one did."""
    request = {"op": RELEASE, "state_dir": os.path.abspath(state_root), "name": name}
    answer, fds = _ask_keeper(control_address(state_root, name), request)
    for fd in fds:
        os.close(fd)
    return bool((answer or {}).get("ok"))
