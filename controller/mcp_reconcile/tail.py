"""Reading an append-only text file the way `tail` does: what is there now, then what gets appended.

Shared by `events` and `logs`. `--follow` starts at the end of the file (history is shown only when asked
for with -n or --since), and survives rotation by reopening when the path names a new file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

# How often --follow looks for new lines (tail -f does the same by default every second; we are quicker).
FOLLOW_POLL_S = 0.25


def read_now(path: Path) -> tuple[list[str], int, int | None]:
    """(the lines in `path` now, the byte offset after them, the file's inode); ([], 0, None) if absent.

    A last line without its newline is still being written: it is left for `follow_from`.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
            inode = _inode(path)
    except FileNotFoundError:
        return [], 0, None
    end = data.rfind(b"\n") + 1
    return data[:end].decode(errors="replace").splitlines(), end, inode


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def follow_from(path: Path, offset: int, inode: int | None, *, poll_s: float = FOLLOW_POLL_S) -> Iterator[str]:
    """Whole lines appended to `path` after `offset`, forever; a new file at `path` is read from its start."""
    pending = b""
    while True:
        current = _inode(path)
        if current is not None and current != inode:   # rotated or created: the new file from its start
            inode, offset, pending = current, 0, b""
        chunk = b""
        if current is not None:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
            continue
        time.sleep(poll_s)
