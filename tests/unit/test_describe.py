"""`describe NAME`: one server's source, versions, generations, endpoint, conditions, restarts with their exits,
backoff, gate result, last events and log lines, rendered by rich at 80 columns."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from mcp_reconcile.describe import describe_view, gather
from mcp_reconcile.events import JsonLinesFile
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\n"
URL = "http://127.0.0.1:31234/filesystem/mcp"
STDERR_LAST = "Error: ENOENT: no such file or directory, open '/srv/config.json'"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def crasher(tmp_path: Path, write_manifest: Callable[..., Path]) -> tuple[Path, StateDir]:
    manifests = write_manifest(HEAD + "metadata: {name: crasher}\n"
                               "spec: {source: {npm: crasher@1.0.0}, port: 31234, path: /filesystem/mcp,\n"
                               "       tests: {gate: true}}\n")
    state = StateDir(tmp_path / "state").ensure()
    now = time.time()
    sink = JsonLinesFile(state.events_file)
    sink.write({"event": "action.applied", "level": "info", "ts": iso(now - 60), "server": "crasher",
                "action": "start", "detail": f"serving at {URL}"})
    for n, ago in enumerate((30, 10), start=1):
        sink.write({"event": "server.backoff", "level": "warning", "ts": iso(now - ago), "server": "crasher",
                    "delay_s": 2.0 * n, "failures": n, "crash_loop": n > 1, "error": "server exited (exit code 1)"})
    sink.write({"event": "probe.succeeded", "level": "info", "ts": iso(now - 5), "server": "other"})
    sink.close()
    state.log_path("crasher").write_text(f"loading config\n{STDERR_LAST}\n")
    ledger = Ledger(state)
    ledger.update("crasher", in_crash_loop=True, backoff_delay_s=4.0, restarts=2, test_passed=False,
                  test_message="tools/call get-sum: expected '3'",
                  last_exit={"code": 1, "reason": "exit code 1", "at": now - 10})
    ledger.save()
    return manifests.parent, state


def render(info: dict) -> str:  # type: ignore[type-arg]
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(describe_view(info), crop=False)
    return out.getvalue()


def test_describe_shows_the_cause_restarts_backoff_gate_events_and_log(crasher: tuple[Path, StateDir]) -> None:
    manifests, state = crasher
    info = gather(Options(state_dir=str(state.root), manifests=[str(manifests)], names=["crasher"]), "crasher")
    assert info is not None
    text = render(info)
    lines = text.splitlines()
    words = " ".join(text.split())

    assert any(line.startswith("Endpoint:") and URL in line for line in lines), text   # whole, on one line
    assert "Phase: CrashLoopBackOff" in words
    assert f"exit code 1: {STDERR_LAST}; back-off 4.0s" in words
    assert "Source: npm:crasher@1.0.0" in words
    assert "Last exit: code 1 (exit code 1)" in words
    assert "in CrashLoopBackOff, next start after 4.0s" in words
    assert "Gate: FAILED: tools/call get-sum: expected '3'" in words
    assert sum("exited: server exited (exit code 1)" in line for line in lines) == 2, text
    assert any(line.startswith("Ready") and "False" in line for line in lines), text
    assert "server.backoff" in text and "probe.succeeded" not in text   # its own events only
    assert lines[-1].strip() == STDERR_LAST
    assert all(len(line.rstrip()) <= 80 for line in lines), text
    assert "{" not in text


def test_describe_json_has_the_same_facts(run_cli: RunCli, crasher: tuple[Path, StateDir]) -> None:
    manifests, state = crasher
    code, out, _ = run_cli(["describe", "crasher", "-o", "json", "-f", str(manifests), "--state-dir", str(state.root)])

    assert code == 0
    info = json.loads(out)
    assert info["phase"] == "CrashLoopBackOff" and info["url"] == URL and info["last_exit"]["code"] == 1
    assert info["gate"] == {"enabled": True, "passed": False, "message": "tools/call get-sum: expected '3'",
                            "tested_generation": None}
    assert [m["what"] for m in info["restarts_and_exits"]] == [
        f"started: serving at {URL}", "exited: server exited (exit code 1)", "exited: server exited (exit code 1)"]


def test_describe_of_an_unknown_server_exits_1(run_cli: RunCli, crasher: tuple[Path, StateDir]) -> None:
    manifests, state = crasher
    code, out, err = run_cli(["describe", "nope", "-f", str(manifests), "--state-dir", str(state.root)])

    assert (code, out) == (1, "")
    assert "no server named 'nope'" in err
