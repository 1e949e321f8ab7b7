"""Sessions that outlive a runner: what one runner opened, the next one knows (run/NAME.sessions.jsonl)."""

from __future__ import annotations

from mcp_reconcile import sessionbook
from mcp_reconcile.sessionbook import SessionBook


def test_sessions_opened_by_one_runner_are_known_to_the_next_and_ended_ones_are_not(tmp_path) -> None:
    path = tmp_path / "srv.sessions.jsonl"
    first = SessionBook(path)
    assert first.load() == {}
    live = {"a": {"capabilities": {"sampling": {}}, "version": "2025-06-18"}}
    first.opened("a", {"sampling": {}}, "2025-06-18", live=lambda: live)
    first.opened("b", {}, "2025-11-25", live=lambda: live)
    first.ended("b", live=lambda: live)
    assert SessionBook(path).load() == live
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_damaged_line_is_skipped_not_fatal(tmp_path) -> None:
    path = tmp_path / "srv.sessions.jsonl"
    path.write_bytes(b'{"id": "a", "version": "2025-06-18"}\n{torn\n[1]\n{"id": 5}\n')
    assert SessionBook(path).load() == {"a": {"capabilities": {}, "version": "2025-06-18"}}


def test_the_file_is_compacted_to_the_live_sessions(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sessionbook, "COMPACT_AT_LINES", 4)
    path = tmp_path / "srv.sessions.jsonl"
    book = SessionBook(path)
    live: dict = {}
    for i in range(6):   # each session opened and ended: 12 changes, none live
        live[f"s{i}"] = {"capabilities": {}, "version": "2025-06-18"}
        book.opened(f"s{i}", {}, "2025-06-18", live=lambda: live)
        del live[f"s{i}"]
        book.ended(f"s{i}", live=lambda: live)
    assert len(path.read_text().splitlines()) <= 4
    assert SessionBook(path).load() == {}
