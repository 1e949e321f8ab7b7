"""`status` for people: on 80 columns every URL stays whole, MESSAGE carries the root cause (last exit and
stderr line, or the failed action's error), there is no JSON, and without -f it reads what was last applied."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from mcp_reconcile import lastapplied
from mcp_reconcile.events import JsonLinesFile
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.settings import Options
from mcp_reconcile.status import collect, status_table
from mcp_reconcile.store import StateDir

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\n"
STDERR_LAST = "Error: ENOENT: no such file or directory, open '/srv/config.json'"


def render(rows: list[dict], width: int = 80) -> str:  # type: ignore[type-arg]
    out = StringIO()
    Console(file=out, width=width, color_system=None).print(status_table(rows), crop=False)
    return out.getvalue()


def row(name: str, url: str | None, message: str, phase: str = "CrashLoopBackOff") -> dict:  # type: ignore[type-arg]
    return {"name": name, "phase": phase, "ready": phase == "Running", "restarts": 12, "age_s": 3725.0,
            "url": url, "cpu_seconds": 12.34, "rss_mb": 123.4, "message": message}


LONG_URL = "http://127.0.0.1:31234/a-rather-long-path/for-the-filesystem-server/mcp"


@pytest.mark.parametrize("rows", [
    pytest.param([row("fs", "http://127.0.0.1:40195/mcp", "exit code 1: " + STDERR_LAST + "; back-off 7.9s")],
                 id="short name, long message"),
    pytest.param([row("filesystem-server-with-a-long-name", "http://127.0.0.1:31234/filesystem/mcp", "Pending"),
                  row("time", "http://127.0.0.1:20001/mcp", "", "Running")], id="long name"),
    pytest.param([row("filesystem", LONG_URL, "install failed: npm ERR! 404 Not Found - GET https://registry")],
                 id="a URL of 72 characters"),
    pytest.param([row(f"server-{i}", f"http://127.0.0.1:{24000 + i}/mcp", "Running", "Running") for i in range(5)],
                 id="several running servers"),
])
def test_urls_stay_whole_and_lines_fit_80_columns(rows: list[dict]) -> None:  # type: ignore[type-arg]
    text = render(rows)
    lines = text.splitlines()

    for r in rows:
        assert any(r["url"] in line for line in lines), text
    assert all(len(line.rstrip()) <= 80 for line in lines), text
    words = " ".join(" ".join(line.split()) for line in lines)
    for r in rows:
        assert " ".join(r["message"].split()) in words, text   # the message is all there, wrapped at spaces


def test_a_wide_terminal_shows_cpu_rss_and_the_message_beside_the_row() -> None:
    text = render([row("time", "http://127.0.0.1:20001/mcp", "exit code 3: boom; back-off 2.0s")], width=160)

    header, line = text.splitlines()
    assert header.split() == ["NAME", "PHASE", "READY", "RESTARTS", "AGE", "ENDPOINT", "CPU", "RSS", "MESSAGE"]
    assert line.endswith("exit code 3: boom; back-off 2.0s")


# --- root causes, from a state dir written the way the controller writes it --------------------------------

def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def failing(tmp_path: Path, write_manifest: Callable[..., Path]) -> tuple[Path, StateDir]:
    """`py` whose install failed, `crasher` in CrashLoopBackOff after exiting 1 with a line on stderr."""
    manifests = write_manifest(HEAD + "metadata: {name: py}\nspec: {source: {pypi: no-such-pkg==1.0}}\n"
                               "---\n" + HEAD + "metadata: {name: crasher}\nspec: {source: {npm: crasher@1.0.0}}\n")
    state = StateDir(tmp_path / "state").ensure()
    now = time.time()
    sink = JsonLinesFile(state.events_file)
    sink.write({"event": "action.failed", "level": "error", "ts": iso(now - 30), "server": "py", "action": "install",
                "error": "py: install failed: no matching distribution for no-such-pkg==1.0"})
    sink.write({"event": "server.backoff", "level": "warning", "ts": iso(now - 5), "server": "crasher",
                "delay_s": 7.9, "failures": 3, "crash_loop": True, "error": "server exited (exit code 1)"})
    sink.close()
    state.log_path("crasher").write_text(f"starting crasher\n{STDERR_LAST}\n\n")
    ledger = Ledger(state)
    ledger.update("crasher", in_crash_loop=True, backoff_delay_s=7.9, restarts=3,
                  last_exit={"code": 1, "reason": "exit code 1", "at": now - 5})
    ledger.save()
    return manifests.parent, state


def test_message_shows_the_root_cause_of_a_crash_loop_and_of_a_failed_install(failing: tuple[Path, StateDir]) -> None:
    manifests, state = failing
    rows = {r["name"]: r for r in collect(Options(state_dir=str(state.root), manifests=[str(manifests)]))}

    assert rows["crasher"]["phase"] == "CrashLoopBackOff"
    assert rows["crasher"]["message"] == f"exit code 1: {STDERR_LAST}; back-off 7.9s"
    assert rows["py"]["phase"] == "Failed"
    assert rows["py"]["message"] == "install failed: no matching distribution for no-such-pkg==1.0"
    ready = next(c for c in rows["py"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["message"] == rows["py"]["message"]


def test_status_text_on_80_columns_has_the_causes_and_no_json(run_cli: RunCli, failing: tuple[Path, StateDir],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    manifests, state = failing
    monkeypatch.setenv("COLUMNS", "80")
    rows = collect(Options(state_dir=str(state.root), manifests=[str(manifests)]))
    text = render(rows)
    code, out, _ = run_cli(["status", "-f", str(manifests), "--state-dir", str(state.root)])

    assert code == 0
    for shown in (text, out):
        assert "{" not in shown and '":' not in shown, shown
        assert "ENOENT" in shown and "no matching distribution" in shown, shown
        assert "restarting failed server" not in shown


def test_a_later_successful_install_clears_the_cause(failing: tuple[Path, StateDir]) -> None:
    manifests, state = failing
    sink = JsonLinesFile(state.events_file)
    sink.write({"event": "action.applied", "level": "info", "ts": iso(time.time()), "server": "py",
                "action": "install", "detail": "installed 1.0"})
    sink.close()
    rows = {r["name"]: r for r in collect(Options(state_dir=str(state.root), manifests=[str(manifests)]))}

    assert "no matching distribution" not in rows["py"]["message"]


# --- the manifests last applied ----------------------------------------------------------------------------

def test_without_f_status_reads_the_manifests_last_applied(run_cli: RunCli, failing: tuple[Path, StateDir],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests, state = failing
    monkeypatch.delenv("MCP_RECONCILE_MANIFESTS", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = run_cli(["status", "-o", "json", "--state-dir", str(state.root)])

    lastapplied.record(state, [str(manifests)])
    after = run_cli(["status", "-o", "json", "--state-dir", str(state.root)])
    with_f = run_cli(["status", "-o", "json", "--state-dir", str(state.root), "-f", str(manifests)])

    assert json.loads(before[1])["servers"] == []   # ./manifests of an unrelated directory: nothing declared
    strip = [{k: v for k, v in r.items() if k != "age_s"} for r in json.loads(after[1])["servers"]]
    assert strip == [{k: v for k, v in r.items() if k != "age_s"} for r in json.loads(with_f[1])["servers"]]
    assert sorted(r["name"] for r in strip) == ["crasher", "py"]


def test_a_path_that_does_not_exist_is_not_recorded(tmp_path: Path, failing: tuple[Path, StateDir]) -> None:
    manifests, state = failing
    lastapplied.record(state, [str(manifests)])
    lastapplied.record(state, [str(tmp_path / "typo")])

    assert lastapplied.recorded(state) == [str(manifests)]


def test_watch_redraws_in_place_until_interrupted(failing: tuple[Path, StateDir]) -> None:
    """In a terminal 80 wide: at least two frames, each with the table; Ctrl-C ends it with exit 0."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys

    manifests, state = failing
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "mcp_reconcile", "status", "--watch", "-f", str(manifests),
                              "--state-dir", str(state.root)], stdin=slave, stdout=slave, stderr=slave,
                             env={**os.environ, "COLUMNS": "80", "TERM": "xterm"})
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while seen.count(b"Ctrl-C to stop") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)
        child.send_signal(signal.SIGINT)
        assert child.wait(30) == 0
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    assert seen.count(b"Ctrl-C to stop") >= 2, seen
    assert b"no matching distribution" in seen and b"\x1b[1A" in seen   # cursor up: redrawn, not appended
