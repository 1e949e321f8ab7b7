"""The operator's views on real runners (issue 13): after `apply -f DIR`, `status` from an unrelated directory
gives what `status -f DIR` gives; `status`, `describe`, `events` and `logs` in an 80-column pseudo-terminal keep
URLs whole, show the root cause of a failed start, and print no JSON."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PTY_BOUND_S = 60.0
# Fields that change from one `status` to the next on their own.
VOLATILE = {"age_s", "cpu_seconds", "rss_mb", "processes", "last_probe", "conditions"}


def in_pty(argv: list[str], *, cwd: Path, env: dict[str, str], columns: int = 80) -> str:
    """What `argv` prints on a terminal `columns` wide (ANSI codes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env={**env, "TERM": "xterm"},
                             close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + PTY_BOUND_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert child.wait(PTY_BOUND_S) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    return ANSI.sub("", b"".join(chunks).decode(errors="replace").replace("\r\n", "\n"))


def stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.fixture
def applied(local):  # type: ignore[no-untyped-def]
    """`steady` serving, `crasher` failed to start (exit 3 with a line on stderr), applied with -f DIR."""
    local.write_manifest("crasher", {"source": {"path": str(local.fault_server("crash_on_start.py"))}})
    local.write_manifest("steady", {"source": {"path": str(local.fault_server("well_behaved.py"))}})
    local.cli("apply", expect=1)
    return local


def test_status_from_an_unrelated_directory_matches_status_with_f(applied, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = [sys.executable, "-m", "mcp_reconcile", "status", "-o", "json", "--state-dir", str(applied.state_dir)]

    without_f = subprocess.run(base, cwd=elsewhere, env=applied.env, capture_output=True, text=True, timeout=60)
    with_f = subprocess.run([*base, "-f", str(applied.manifests)], cwd=elsewhere, env=applied.env,
                            capture_output=True, text=True, timeout=60)

    assert without_f.returncode == with_f.returncode == 0, without_f.stderr + with_f.stderr
    rows = json.loads(without_f.stdout)["servers"]
    assert stable(rows) == stable(json.loads(with_f.stdout)["servers"])
    assert {r["name"]: r["ready"] for r in rows} == {"crasher": False, "steady": True}
    assert all("does not exist" not in r["message"] for r in rows), rows


def test_status_and_describe_on_an_80_column_terminal(applied, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = applied.status()["steady"]["url"]
    state = ["--state-dir", str(applied.state_dir)]
    cli = [sys.executable, "-m", "mcp_reconcile"]

    status = in_pty([*cli, "status", *state], cwd=tmp_path, env=applied.env)
    describe = in_pty([*cli, "describe", "crasher", *state], cwd=tmp_path, env=applied.env)
    events = in_pty([*cli, "events", "--server", "crasher", *state], cwd=tmp_path, env=applied.env)
    logs = in_pty([*cli, "logs", "crasher", *state], cwd=tmp_path, env=applied.env)

    assert any(url in line for line in status.splitlines()), status
    assert all(len(line) <= 80 for line in status.splitlines()), status
    for text in (status, describe):
        words = " ".join(text.split())
        assert "start failed: server exited during startup (code 3" in words, text
        assert "refusing to start (injected fault)" in words, text
    for text in (status, describe, events, logs):
        assert not any(line.lstrip().startswith("{") for line in text.splitlines()), text
    assert "crasher: start failed" not in " ".join(events.split()), events   # the name said once
    assert "action.failed" in events and "refusing to start" in logs and "── " in logs, logs
