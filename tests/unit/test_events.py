"""The audit log: events.jsonl gets one JSON object per event, and secret values never reach it."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import structlog

from mcp_reconcile import events
from mcp_reconcile.events import REDACTED, Redactor
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import API_VERSION, KIND, Origin

SECRET = "sk-test-SECRET-12345"
OTHER = "hunter2-other-secret"


@pytest.fixture
def events_file(tmp_path: Path) -> Iterator[Path]:
    """events.configure() for this test, knowing SECRET and OTHER; structlog is restored afterwards."""
    saved = structlog.get_config()
    path = tmp_path / "events.jsonl"
    events.configure(path, secrets=[SECRET, OTHER], stderr=None)
    yield path
    events.configure(None, stderr=None)  # closes the file
    structlog.configure(**saved)


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_event_is_one_json_line_with_level_and_timestamp(events_file: Path) -> None:
    log = events.get_logger(server="a", generation="abc123")
    log.info("action.applied", action="start", outcome="ok", duration_ms=12.5)
    log.warning("probe.failed", reason="timeout")
    first, second = read_events(events_file)
    assert {k: first[k] for k in ("event", "level", "server", "generation", "action", "outcome", "duration_ms")} == {
        "event": "action.applied", "level": "info", "server": "a", "generation": "abc123", "action": "start",
        "outcome": "ok", "duration_ms": 12.5}
    assert first["ts"].endswith("Z")
    assert (second["event"], second["level"]) == ("probe.failed", "warning")
    assert stat.S_IMODE(events_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("fields", [
    pytest.param({"reason": SECRET}, id="a whole field"),
    pytest.param({"env": {"API_KEY": SECRET, "nested": {"deeper": [SECRET, "ok"]}}}, id="a nested dict and list"),
    pytest.param({"reason": f"auth failed: Bearer {SECRET} was refused"}, id="inside a longer string"),
    pytest.param({"error": RuntimeError(f"bad key {SECRET}")}, id="an exception as a field"),
    pytest.param({"argv": ("node", f"--token={OTHER}")}, id="a tuple, and the second secret"),
])
def test_a_secret_in_an_event_never_reaches_the_file(events_file: Path, fields: dict[str, Any]) -> None:
    events.get_logger(server="a").info("action.failed", **fields)
    text = events_file.read_text()
    assert SECRET not in text
    assert OTHER not in text
    assert REDACTED in text


def test_a_secret_in_the_event_name_is_redacted(events_file: Path) -> None:
    events.get_logger().error(f"connecting with {SECRET}")
    [event] = read_events(events_file)
    assert event["event"] == f"connecting with {REDACTED}"


def test_a_secret_in_a_logged_exception_and_its_traceback_is_redacted(events_file: Path) -> None:
    try:
        raise ValueError(f"the server refused API key {SECRET}")
    except ValueError:
        events.get_logger(server="a").exception("action.failed", action="start")
    [event] = read_events(events_file)
    assert "ValueError: the server refused API key (sensitive)" in event["exception"]
    assert SECRET not in json.dumps(event)


@pytest.mark.parametrize("value", [
    pytest.param(MappingProxyType({"API_KEY": SECRET}), id="a read-only mapping like ServerSpec.env"),
    pytest.param({SECRET}, id="a set"),
    pytest.param(build_spec({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a"},
                             "spec": {"source": {"npm": "pkg@1.0.0"}, "env": {"API_KEY": "${API_KEY}"}}},
                            origin=Origin("<memory>"), environ={"API_KEY": SECRET}, key=b"k" * 32),
                 id="a ServerSpec"),
])
def test_a_secret_inside_any_logged_object_never_reaches_the_file(events_file: Path, value: Any) -> None:
    events.get_logger().info("spec.loaded", value=value)
    assert SECRET not in events_file.read_text()


def test_events_echoed_to_stderr_are_redacted_too(events_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events.configure(events_file, secrets=[SECRET], stderr="json")
    events.get_logger(server="a").info("action.failed", reason=f"key {SECRET} refused")
    err = capsys.readouterr().err
    assert json.loads(err)["reason"] == f"key {REDACTED} refused"
    assert SECRET not in events_file.read_text()


def test_configure_replaces_the_known_secrets(events_file: Path) -> None:
    redactor = events.configure(events_file, secrets=["a-new-secret"], stderr=None)
    redactor.add(["added-later"])
    events.get_logger().info("x", one="a-new-secret", two="added-later", three=SECRET)
    [event] = read_events(events_file)
    assert (event["one"], event["two"], event["three"]) == (REDACTED, REDACTED, SECRET)


# --- the processor on its own -----------------------------------------------------------------------------

def test_the_redactor_processor_scrubs_every_value_and_keeps_keys() -> None:
    redactor = Redactor([SECRET])
    out = redactor(None, "info", {"event": "x", "a": SECRET, "b": [1, f"pre-{SECRET}-post"], "c": {"d": SECRET},
                                  "n": 5, "none": None})
    assert out == {"event": "x", "a": REDACTED, "b": [1, f"pre-{REDACTED}-post"], "c": {"d": REDACTED},
                   "n": 5, "none": None}


def test_the_redactor_removes_the_longest_secret_whole() -> None:
    redactor = Redactor(["abcdef", "abcdefghij"])
    assert redactor.scrub("key=abcdefghij") == f"key={REDACTED}"


def test_a_very_short_secret_is_redacted_only_as_a_whole_value() -> None:
    """A one- or two-character secret would otherwise blank out every digit of the log."""
    redactor = Redactor(["7"])
    assert redactor.scrub("7") == REDACTED
    assert redactor.scrub("took 17 ms") == "took 17 ms"


def test_empty_secrets_are_ignored() -> None:
    assert Redactor(["", SECRET]).scrub("plain text") == "plain text"


def test_the_redactor_turns_an_exception_into_its_scrubbed_message() -> None:
    assert Redactor([SECRET]).scrub(OSError(f"cannot open {SECRET}")) == f"cannot open {REDACTED}"
