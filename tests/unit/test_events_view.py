"""`events`: human lines (time, server, event, key fields, colour by level) by default, JSON lines with -o json;
-n, --since, --server; --follow starts at the end of the log."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from mcp_reconcile.events import JsonLinesFile
from mcp_reconcile.eventsview import event_line

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
FOLLOW_BOUND_S = 20.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def write_events(state: Path, events: list[dict]) -> None:  # type: ignore[type-arg]
    sink = JsonLinesFile(state / "events.jsonl")
    for event in events:
        sink.write(event)
    sink.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    now = time.time()
    write_events(tmp_path, [
        {"event": "controller.started", "level": "info", "ts": iso(now - 7200)},
        {"event": "action.failed", "level": "error", "ts": iso(now - 3600), "server": "py", "action": "install",
         "reason": "new server", "error": "py: install failed: no matching distribution", "duration_ms": 812.5},
        {"event": "server.backoff", "level": "warning", "ts": iso(now - 60), "server": "crasher", "delay_s": 7.9,
         "failures": 3, "crash_loop": True, "error": "server exited (exit code 1)"},
        {"event": "action.applied", "level": "info", "ts": iso(now - 5), "server": "time", "action": "start",
         "generation": "g-1", "reason": "new server", "detail": "serving at http://127.0.0.1:24001/mcp"},
    ])
    return tmp_path


def test_text_output_is_one_human_line_per_event_with_no_json(run_cli: RunCli, state: Path) -> None:
    code, out, err = run_cli(["events", "--state-dir", str(state)])

    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert not any(line.lstrip().startswith("{") or '":' in line for line in lines), out
    assert re.match(r"^\d\d:\d\d:\d\d py +action\.failed +action=install reason=\"new server\" "
                    r"error=\"install failed: no matching distribution\" duration_ms=812\.5$", lines[1]), lines[1]
    assert "crasher" in lines[2] and "delay_s=7.9" in lines[2] and "crash_loop=true" in lines[2]
    assert "http://127.0.0.1:24001/mcp" in lines[3] and "generation" not in lines[3]


def test_json_output_is_the_events_as_written_and_differs_from_text(run_cli: RunCli, state: Path) -> None:
    _, text, _ = run_cli(["events", "--state-dir", str(state), "-o", "text"])
    code, out, _ = run_cli(["events", "--state-dir", str(state), "-o", "json"])

    assert code == 0
    written = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
    assert [json.loads(line) for line in out.splitlines()] == written
    assert out != text


@pytest.mark.parametrize(("flags", "expected"), [
    pytest.param(["-n", "2"], ["server.backoff", "action.applied"], id="-n 2 is the last two"),
    pytest.param(["--since", "10m"], ["server.backoff", "action.applied"], id="--since 10m"),
    pytest.param(["--since", "90m"], ["action.failed", "server.backoff", "action.applied"], id="--since 90m"),
    pytest.param(["--server", "py"], ["action.failed"], id="--server"),
    pytest.param(["--server", "crasher", "--since", "30s"], [], id="--server and --since together"),
    pytest.param(["-n", "0"], [], id="-n 0 shows nothing"),
])
def test_filters_choose_the_events(run_cli: RunCli, state: Path, flags: list[str], expected: list[str]) -> None:
    code, out, _ = run_cli(["events", "--state-dir", str(state), "-o", "json", *flags])

    assert code == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == expected


def test_a_bad_duration_is_a_usage_error(run_cli: RunCli, state: Path) -> None:
    code, _, err = run_cli(["events", "--state-dir", str(state), "--since", "ten minutes"])

    assert code == 1
    assert "'ten minutes' is not a duration" in err


def test_an_error_event_is_red_and_a_warning_yellow_on_a_terminal() -> None:
    out = StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system="standard")
    console.print(event_line({"event": "action.failed", "level": "error", "server": "py", "error": "boom"}))
    console.print(event_line({"event": "server.backoff", "level": "warning", "server": "c", "delay_s": 1}))

    first, second = out.getvalue().splitlines()
    assert "\x1b[31m" in first and "\x1b[33m" in second, out.getvalue()


def test_follow_starts_at_the_end_and_prints_only_new_events(state: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    follower = subprocess.Popen([sys.executable, "-m", "mcp_reconcile", "events", "--follow", "--state-dir",
                                 str(state), "-o", "json"], stdout=subprocess.PIPE, env=env)
    assert follower.stdout is not None
    try:
        deadline = time.monotonic() + FOLLOW_BOUND_S
        first = b""
        count = 0
        while not first and time.monotonic() < deadline:   # until the follower is reading: each append is new
            count += 1
            write_events(state, [{"event": "probe.succeeded", "level": "info", "ts": iso(time.time()),
                                  "server": "time", "seq": count}])
            ready, _, _ = select.select([follower.stdout], [], [], 0.5)
            if ready:
                first = follower.stdout.readline()
        assert first, f"no new event printed within {FOLLOW_BOUND_S}s"
        assert json.loads(first)["event"] == "probe.succeeded", first
    finally:
        follower.terminate()
        follower.wait(10)
