"""sd_notify for the long-running controller, without libsystemd.

systemd starts `mcp-reconcile run` as `Type=notify` and passes `$NOTIFY_SOCKET`: a datagram socket path, or
`@name` for the abstract namespace. The controller reports `READY=1` after its first pass, `WATCHDOG=1`
from its loop, a one-line `STATUS=` summary and `STOPPING=1` (SPEC section 10). Outside systemd the variable
is unset and every call is a cheap no-op, so callers never branch on "are we under systemd".

Sending never raises and never logs: a lost notification must not take the controller down, and the
caller (which knows the context) decides whether a `False` is worth an event.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, MutableMapping

# The variables systemd hands the main process; children (runners, servers) must not inherit them.
SYSTEMD_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# Bound on one send: the manager reads its socket promptly, and a stuck send must not stall the loop.
SEND_TIMEOUT_S = 0.5


def socket_address(value: str | None) -> str | bytes | None:
    """The `connect` address for a `$NOTIFY_SOCKET` value, or None when it is unset or unsupported.

    `/path` is a filesystem socket; `@name` is Linux's abstract namespace (a leading NUL byte).
    Other forms (systemd 253's `vsock:`) are not supported and disable notification.
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def watchdog_interval_s(environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> float | None:
    """How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, or None when no watchdog is asked of us.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for; a child that inherited
    the variables must not think the watchdog is its own.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid is not None:
        try:
            meant_for = int(raw_pid)
        except ValueError:
            return None
        if meant_for != (os.getpid() if pid is None else pid):
            return None
    return usec / 2 / 1_000_000


def one_line(text: str) -> str:
    """A STATUS= value: the protocol is one `KEY=VALUE` per line, so embedded newlines would split it."""
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify datagrams to the socket systemd gave us; a no-op without one.

    Built once from the environment at start-up. `unset_environment=True` removes the systemd
    variables from `environ` afterwards (as `sd_notify(unset_environment=1)` does) so processes we
    spawn never inherit them.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None, *,
                 unset_environment: bool = False) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self._watchdog_interval_s = watchdog_interval_s(env)
        if unset_environment:
            for name in SYSTEMD_ENV_VARS:
                env.pop(name, None)

    @property
    def enabled(self) -> bool:
        """True when running under a manager that listens for notifications."""
        return self.address is not None

    def watchdog_interval_s(self) -> float | None:
        """Half the watchdog timeout captured at construction, or None when there is no watchdog."""
        return self._watchdog_interval_s

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; True when the manager got it, False otherwise."""
        if self.address is None or not fields:
            return False
        try:
            message = "\n".join(fields).encode()
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.connect(self.address)
                sent = sock.send(message)
        except (OSError, ValueError):  # socket gone, no permission, queue full, bad path: report, never raise
            return False
        return sent == len(message)

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (after the first pass); with a STATUS= line in the same datagram."""
        if status is None:
            return self.send("READY=1")
        return self.send("READY=1", f"STATUS={one_line(status)}")

    def status(self, text: str) -> bool:
        """The one-line summary `systemctl status` shows."""
        return self.send(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        """Proof of life; send every `watchdog_interval_s()` seconds."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """A reload has begun; follow with `ready()` when it is done.

        MONOTONIC_USEC is what `Type=notify-reload` (systemd 253+) requires to match the reload with the
        request; older managers ignore it.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start (or stop) timeout fires, e.g. during a long first pass."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")
