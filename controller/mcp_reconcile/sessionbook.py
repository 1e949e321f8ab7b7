"""Handshake-era sessions that outlive a runner: run/NAME.sessions.jsonl (SPEC section 7, "Sessions stay valid
across restarts").

A client keeps its `Mcp-Session-Id` through a crash restart, a runner kill -9, an edit or `stop-all` + `apply`:
each runner appends the sessions it opens (id, the client's capabilities, the version it was told) and the ones
clients end, and the next runner of the server reads them back. The file is compacted when it has grown to twice
what it holds. Session ids are not credentials (the endpoint's bearer token is), but the file is 0600 like every
state file. Stdlib only: the runner imports this.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Sessions remembered at most (the oldest is forgotten first), and the line count that triggers compaction.
MAX_SESSIONS = 10_000
COMPACT_AT_LINES = 2 * MAX_SESSIONS

Live = Callable[[], dict[str, dict[str, Any]]]   # the sessions now open, asked for only when compacting


class SessionBook:
    """The persisted sessions of one server: {id: {"capabilities": ..., "version": ..., "init": ...}}."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lines = 0

    def load(self) -> dict[str, dict[str, Any]]:
        """Sessions opened and not ended, oldest first; a damaged line is skipped, never fatal."""
        sessions: dict[str, dict[str, Any]] = {}
        if self.path is None:
            return sessions
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as fh:
            for raw in fh:
                self._lines += 1
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                    continue
                if entry.get("ended"):
                    sessions.pop(entry["id"], None)
                else:
                    info = sessions[entry["id"]] = {"capabilities": entry.get("capabilities") or {},
                                                    "version": str(entry.get("version") or "")}
                    if isinstance(entry.get("init"), dict):
                        info["init"] = entry["init"]
        while len(sessions) > MAX_SESSIONS:
            del sessions[next(iter(sessions))]
        return sessions

    def opened(self, session_id: str, capabilities: dict[str, Any], version: str, *,
               live: Live, init: dict[str, Any] | None = None) -> None:
        """`init`: the client's initialize params, replayed to start an isolated session's server again."""
        entry = {"id": session_id, "capabilities": capabilities, "version": version}
        if init is not None:
            entry["init"] = init
        self._append(entry, live)

    def ended(self, session_id: str, *, live: Live) -> None:
        self._append({"id": session_id, "ended": True}, live)

    def _append(self, entry: dict[str, Any], live: Live) -> None:
        """One line per change; at COMPACT_AT_LINES the file is rewritten with just the live sessions."""
        if self.path is None:
            return
        try:
            if self._lines >= COMPACT_AT_LINES:
                self._rewrite(live())
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            self._lines += 1
        except OSError:
            pass   # sessions then last as long as this runner: never a reason to fail a client's request

    def _rewrite(self, live: dict[str, dict[str, Any]]) -> None:
        assert self.path is not None
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for session_id, info in live.items():
                fh.write(json.dumps({"id": session_id, **info}, separators=(",", ":")).encode() + b"\n")
        os.replace(tmp, self.path)
        self._lines = len(live)
