"""Under systemd the controller tells the service manager what it is doing: READY=1 after the first pass,
WATCHDOG=1 from the loop, STATUS= summaries and STOPPING=1; runners never inherit the notify socket."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

# Bound on each datagram: the first pass starts one local server (~0.1 s), the rest are timers.
DATAGRAM_TIMEOUT_S = 60.0


def _receive_until(sock: socket.socket, wanted: str, seen: list[str]) -> list[str]:
    sock.settimeout(DATAGRAM_TIMEOUT_S)
    while not any(wanted in m for m in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def test_the_controller_notifies_systemd_and_keeps_the_socket_from_its_runners(local, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        local.env["NOTIFY_SOCKET"] = str(path)
        local.env["WATCHDOG_USEC"] = "1000000"
        local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
        controller = local.start_controller()
        seen: list[str] = []
        _receive_until(sock, "READY=1", seen)
        ready = next(m for m in seen if "READY=1" in m)
        assert "STATUS=1 servers:" in ready   # after the first pass, before the first probe may have answered
        _receive_until(sock, "WATCHDOG=1", seen)
        _receive_until(sock, "STATUS=1 servers: 1 ready, 0 failing", seen)

        runner_pid = local.run_record("steady")["runner_pid"]
        assert "NOTIFY_SOCKET" not in psutil.Process(runner_pid).environ()

        controller.stop()
        _receive_until(sock, "STOPPING=1", seen)
    finally:
        sock.close()
