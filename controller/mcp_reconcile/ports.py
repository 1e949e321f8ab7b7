"""Stable endpoint addresses (SPEC section 7): one loopback port per server name, kept in the state dir.

A URL written into a client's config must survive every restart, so the port is chosen once and persisted
in `ports.json` ({name: port}), never handed to another server and freed only when the server is removed.
`spec.port` wins when set (and is remembered too, so dropping it later keeps the URL). Allocated ports come
from below the kernel's ephemeral range: a port in that range could be taken by any outgoing connection
while the server is stopped.

Only the acting controller (holding the state dir's lock) allocates; read-only commands just read.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
from collections.abc import Iterable
from pathlib import Path

from mcp_reconcile.store import StateDir, read_json, write_json_atomic

# Where allocated ports come from when the kernel's ephemeral range cannot be read.
DEFAULT_EPHEMERAL_LOW = 32768
# The lowest port ever allocated (below it sit well-known and registered services people run by hand).
ALLOCATION_LOW = 20000
# Candidates tried before giving up (each a bind attempt on 127.0.0.1).
MAX_ATTEMPTS = 200
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortUnavailable(Exception):
    """The port a server must listen on is held by another process."""


def ports_file(state: StateDir) -> Path:
    return state.root / "ports.json"


def read_ports(state: StateDir) -> dict[str, int]:
    """The persisted {server: port} map (empty when none was written yet)."""
    data = read_json(ports_file(state)) or {}
    return {name: int(port) for name, port in data.items() if isinstance(port, int)}


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def can_bind(port: int) -> bool:
    """True when a listener could take 127.0.0.1:`port` now (SO_REUSEADDR, as the runner binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _allocate(taken: set[int]) -> int:
    low, high = ALLOCATION_LOW, _ephemeral_low() - 1
    if high - low < MAX_ATTEMPTS:  # an unusual ephemeral range: fall back to any free port the kernel gives
        low, high = 1024, 65535
    rng = random.SystemRandom()
    for _ in range(MAX_ATTEMPTS):
        port = rng.randint(low, high)
        if port not in taken and can_bind(port):
            return port
    raise PortUnavailable(f"no free loopback port found in {low}-{high} after {MAX_ATTEMPTS} attempts")


def port_for(state: StateDir, name: str, *, requested: int | None, reserved: Iterable[int] = ()) -> int:
    """The port `name` listens on: `requested` (spec.port) when set, else the one it already has, else a new
    one that no other server has or asks for (`reserved`: the spec.port of every desired server)."""
    ports = read_ports(state)
    port = requested or ports.get(name)
    if port is None:
        port = _allocate({*ports.values(), *reserved})
    if ports.get(name) != port:
        ports[name] = port
        write_json_atomic(ports_file(state), ports)
    return port


def release(state: StateDir, name: str) -> None:
    """Forget `name`'s port (the server was removed): it may be handed out again."""
    ports = read_ports(state)
    if ports.pop(name, None) is not None:
        write_json_atomic(ports_file(state), ports)


def holder_pid(port: int) -> int | None:
    """The pid listening on `port` (any address), when this user may see it."""
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid if conn.pid is not None else -1
    return None


def holder_of(port: int) -> str | None:
    """Who listens on `port`, as "pid 123 (node)"; None when nobody is seen."""
    import psutil

    pid = holder_pid(port)
    if pid is None:
        return None
    if pid < 0:
        return "a process of another user"
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


def held_for(port: int, state: StateDir, name: str) -> bool:
    """Is `port` held by this server's own keeper (a runner's child holding the endpoint after a crash,
    handover.py)? It is the runner's fork: its command line names the state dir, and its name the server
    (`mcpr:NAME`, set by the spawner; a runner started from scratch has `--name NAME` in its command line)."""
    import psutil

    pid = holder_pid(port)
    if pid is None or pid < 0:
        return False
    try:
        process = psutil.Process(pid)
        cmdline, comm = process.cmdline(), process.name()
    except psutil.Error:
        return False
    named = comm == f"mcpr:{name}"[:15] or any(pair == ("--name", name) for pair in itertools.pairwise(cmdline))
    return str(state.root) in cmdline and named


def endpoint_url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"
