"""Under systemd the controller tells the service manager what it is doing: READY=1 after the first pass,
WATCHDOG=1 from the loop, STATUS= summaries and STOPPING=1; the servers it starts never inherit the notify
socket or the watchdog variables (a server holding them could send READY=1 or STOPPING=1 on its behalf)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil

# Bound on each awaited notification, however many WATCHDOG=1 datagrams arrive meanwhile: the first pass
# starts one local server (~0.1 s), the first probe and the STATUS refresh are timers of a few seconds.
NOTIFY_WAIT_S = 60.0
# What systemd hands the controller; none of it may reach a server.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# A variable of the controller's environment that servers do inherit: proves the environ read is meaningful.
INHERITED_MARKER = ("E2E_SYSTEMD_NOTIFY_MARKER", "inherited")


def receive_until(sock: socket.socket, predicate: Callable[[str], bool], timeout_s: float, seen: list[str], *,
                  what: str) -> str:
    """The first datagram in `seen` (earlier ones included) for which `predicate` holds, receiving more into
    `seen` until one does; fails after `timeout_s` overall with everything received so far."""
    deadline = time.monotonic() + timeout_s
    checked = 0
    while True:
        for message in seen[checked:]:
            if predicate(message):
                return message
        checked = len(seen)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    raise AssertionError(f"no {what} within {timeout_s:g}s; received {len(seen)} datagrams:\n"
                         + "\n".join(repr(m) for m in seen[-50:]))


def test_the_controller_notifies_systemd_and_keeps_the_socket_from_its_servers(local, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        local.env["NOTIFY_SOCKET"] = str(path)
        local.env["WATCHDOG_USEC"] = "1000000"
        local.env[INHERITED_MARKER[0]] = INHERITED_MARKER[1]
        local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
        controller = local.start_controller()
        seen: list[str] = []
        ready = receive_until(sock, lambda m: "READY=1" in m, NOTIFY_WAIT_S, seen, what="READY=1")
        assert "STATUS=1 servers:" in ready   # after the first pass, before the first probe may have answered
        receive_until(sock, lambda m: "WATCHDOG=1" in m, NOTIFY_WAIT_S, seen, what="WATCHDOG=1")
        receive_until(sock, lambda m: "STATUS=1 servers: 1 ready, 0 failing" in m, NOTIFY_WAIT_S, seen,
                      what="STATUS= with the server ready")

        record = local.run_record("steady")
        assert record and record.get("server_pid"), record
        server = psutil.Process(record["server_pid"])
        assert "well_behaved.py" in " ".join(server.cmdline()), server.cmdline()
        environ = server.environ()   # /proc/<server_pid>/environ
        assert environ.get(INHERITED_MARKER[0]) == INHERITED_MARKER[1], sorted(environ)
        leaked = {name: environ[name] for name in SYSTEMD_VARS if name in environ}
        assert leaked == {}, f"the server inherited the controller's systemd variables: {leaked}"

        controller.stop()
        receive_until(sock, lambda m: "STOPPING=1" in m, NOTIFY_WAIT_S, seen, what="STOPPING=1")
    finally:
        sock.close()
