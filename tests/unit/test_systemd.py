"""sd_notify over a real datagram socket, watchdog parsing, and `systemd-analyze verify` of the shipped unit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_reconcile.systemd import Notifier, socket_address, watchdog_interval_s

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "mcp-reconcile.service"
SHIPPED_BINARY = "/usr/local/bin/mcp-reconcile"
# Bound on waiting for one datagram that was already sent (the send is synchronous).
RECV_TIMEOUT_S = 5.0
# Bound on one `systemd-analyze verify` run.
VERIFY_TIMEOUT_S = 60


def receive(sock: socket.socket) -> bytes:
    """The next datagram, waiting at most RECV_TIMEOUT_S."""
    sock.settimeout(RECV_TIMEOUT_S)
    return sock.recv(4096)


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A manager-side socket bound in tmp_path, advertised through $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The same in the abstract namespace (`@name`), which systemd uses for some managers and containers."""
    name = f"mcp-reconcile-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        yield sock


def test_each_call_arrives_as_exactly_one_datagram_on_a_path_socket(path_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready()
    assert receive(path_socket) == b"READY=1"
    assert notifier.status("3 servers: 3 ready")
    assert receive(path_socket) == b"STATUS=3 servers: 3 ready"
    assert notifier.watchdog()
    assert receive(path_socket) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert receive(path_socket) == b"STOPPING=1"


def test_ready_with_a_status_is_one_datagram_of_two_lines(path_socket: socket.socket) -> None:
    assert Notifier().ready("2 servers: 2 ready")
    assert receive(path_socket) == b"READY=1\nSTATUS=2 servers: 2 ready"


def test_a_multi_line_status_is_folded_into_one_line(path_socket: socket.socket) -> None:
    assert Notifier().status("first line\nsecond\tline ")
    assert receive(path_socket) == b"STATUS=first line second line"


def test_reloading_carries_the_monotonic_time_and_extend_timeout_is_in_microseconds(
        path_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.reloading()
    first, second = receive(path_socket).split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC"
    assert int(value) > 0
    assert notifier.extend_timeout(2.5)
    assert receive(path_socket) == b"EXTEND_TIMEOUT_USEC=2500000"


def test_an_abstract_socket_name_receives_the_same_messages(abstract_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.ready()
    assert receive(abstract_socket) == b"READY=1"
    assert notifier.watchdog()
    assert receive(abstract_socket) == b"WATCHDOG=1"


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert [notifier.ready("x"), notifier.status("x"), notifier.watchdog(), notifier.stopping(),
            notifier.reloading(), notifier.extend_timeout(1)] == [False] * 6


@pytest.mark.parametrize("value", [
    pytest.param("/nonexistent/dir/notify", id="a socket path that does not exist"),
    pytest.param("/" + "x" * 200, id="a path longer than sun_path"),
])
def test_a_send_that_cannot_reach_the_manager_returns_false_and_never_raises(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready("x") is False


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("/run/systemd/notify", "/run/systemd/notify", id="a path"),
    pytest.param("@name", b"\0name", id="an abstract name"),
    pytest.param("", None, id="empty"),
    pytest.param("@", None, id="an empty abstract name"),
    pytest.param("vsock:2:1234", None, id="an unsupported form"),
    pytest.param("relative/path", None, id="a relative path"),
])
def test_socket_address_maps_notify_socket_values(value: str, expected: str | bytes | None) -> None:
    assert socket_address(value) == expected


def test_unset_environment_removes_the_systemd_variables_so_children_do_not_inherit_them() -> None:
    environ = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = Notifier(environ, unset_environment=True)
    assert environ == {"PATH": "/bin"}
    assert notifier.enabled
    assert notifier.watchdog_interval_s() == 1.0


OWN_PID = 4242


@pytest.mark.parametrize(("environ", "expected"), [
    pytest.param({"WATCHDOG_USEC": "60000000"}, 30.0, id="60 s gives a 30 s interval"),
    pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(OWN_PID)}, 30.0, id="meant for this pid"),
    pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None, id="meant for another pid"),
    pytest.param({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "me"}, None, id="a garbled pid"),
    pytest.param({"WATCHDOG_USEC": "500"}, 0.00025, id="microseconds, not seconds"),
    pytest.param({"WATCHDOG_USEC": "0"}, None, id="zero means no watchdog"),
    pytest.param({"WATCHDOG_USEC": "-5"}, None, id="negative"),
    pytest.param({"WATCHDOG_USEC": "60s"}, None, id="not a number"),
    pytest.param({}, None, id="unset"),
])
def test_watchdog_interval_is_half_the_timeout_when_meant_for_us(
        environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_s(environ, pid=OWN_PID) == expected


def test_the_notifier_reads_the_watchdog_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval_s() == 5.0
    assert watchdog_interval_s() == 5.0


# --- the shipped unit ---

def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (repeatable keys such as Environment= keep every value)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_shipped_unit_keeps_the_settings_the_spec_asks_for() -> None:
    service = unit_settings(UNIT.read_text())["Service"]
    assert service["ExecStart"] == [
        f"{SHIPPED_BINARY} run --state-dir /var/lib/mcp-reconcile -f /etc/mcp-reconcile/manifests"]
    expected = {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
                "RestartSec": "2", "StateDirectory": "mcp-reconcile", "StateDirectoryMode": "0700",
                "EnvironmentFile": "-/etc/mcp-reconcile/env", "KillMode": "process",
                "NoNewPrivileges": "yes", "ProtectSystem": "full", "ProtectHome": "read-only",
                "PrivateTmp": "yes"}
    assert {key: service[key][-1] for key in expected} == expected
    assert "MemoryDenyWriteExecute" not in service  # node's JIT needs W+X pages
    assert unit_settings(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def installed_entry_point() -> str:
    """The `mcp-reconcile` console script of the interpreter running the tests (verify checks it exists)."""
    beside = Path(sys.executable).parent / "mcp-reconcile"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mcp-reconcile")
    return found if found else f"{sys.executable} -m mcp_reconcile"


def verify_unit(text: str, tmp_path: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify` on `text` as mcp-reconcile.service; its exit code and lines about it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (CI installs it with .ci/install-systemd-tools)")
    unit = tmp_path / "mcp-reconcile.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=VERIFY_TIMEOUT_S, check=False)
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    return result.returncode, about_unit


def test_the_shipped_unit_passes_systemd_analyze_verify_without_warnings(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_BINARY} " in text
    returncode, about_unit = verify_unit(text.replace(SHIPPED_BINARY, installed_entry_point()), tmp_path)
    assert about_unit == []
    assert returncode == 0


def test_the_verify_check_notices_a_misspelt_directive(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on unknown keys, so the test above must read the output: prove it does."""
    text = UNIT.read_text().replace(SHIPPED_BINARY, installed_entry_point())
    _, about_unit = verify_unit(text.replace("PrivateTmp=yes", "PrivateTmpp=yes"), tmp_path)
    assert any("PrivateTmpp" in line for line in about_unit)
