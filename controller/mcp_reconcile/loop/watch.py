"""Watch the manifest paths with watchdog and report changed files once per burst, on the event loop.

The watcher only says *which paths* changed; the loop re-reads the manifests and plans from scratch
(level-based, STYLE §2), so a missed or extra event costs a pass, never correctness, and the resync
timer covers what inotify cannot see (a watched directory replaced wholesale, a symlink target edited).

Rewrite safety comes from the debounce: editors and tools replace a file in several steps (vim: write
`4913`, rename to `name~`, create, write, close; `sed -i`: write a temp file, rename it over; shell
`>`: truncate, write; `rm` + recreate). Every step restarts a `debounce_s` timer on the loop, and only
when the burst is quiet does `on_change` get the set of manifest paths it touched, once. A file that is
being rewritten is therefore never reported while it is missing. (watchdog holds an unpaired
IN_MOVED_FROM for up to 0.5 s to pair it with its IN_MOVED_TO, so a rename can arrive that much later;
the debounce starts when it arrives, so the burst still ends in one callback.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SWAP_SUFFIXES = (".swp", ".swo", ".swx")     # vim swap files: .NAME.swp and its successors
VIM_PROBE_NAME = "4913"                       # vim creates and deletes it to test that a dir is writable
OBSERVER_JOIN_TIMEOUT_S = 5.0                 # stop(): the observer threads exit within ms; bound it anyway

# Content changes only: no opened / closed-without-write / attribute events, so the controller reading
# a manifest never wakes itself. Directory events count because moving a directory out of a watched
# tree yields one event for the directory and none for the files in it.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]
_CONTENT_EVENTS = tuple(WATCHED_EVENTS)


def is_editor_temp(name: str) -> bool:
    """Editor and tool scratch files that never hold a manifest: .x.swp, x~, .#x, 4913, x.tmp."""
    return (name.endswith(("~", ".tmp")) or name.startswith(".#") or name == VIM_PROBE_NAME
            or (name.startswith(".") and name.endswith(SWAP_SUFFIXES)))


@dataclass(frozen=True)
class WatchTargets:
    """What the `-f` paths mean for watching: absolute explicit files, and directories taken recursively."""

    files: frozenset[str]
    dirs: tuple[str, ...]

    @classmethod
    def from_paths(cls, paths: Sequence[Path]) -> WatchTargets:
        """Directories are watched recursively; anything else is a file (existing or not yet).

        Special files (`-f /dev/null`: an empty desired state) are not watched: they never change.
        """
        files: set[str] = set()
        dirs: list[str] = []
        for path in paths:
            absolute = os.path.abspath(path)
            if os.path.isdir(absolute):
                dirs.append(absolute)
            elif os.path.isfile(absolute) or not os.path.exists(absolute):
                files.add(absolute)
        return cls(files=frozenset(files), dirs=tuple(dict.fromkeys(dirs)))

    def watches(self) -> list[tuple[str, bool]]:
        """(directory, recursive) pairs to schedule, without watching a directory twice."""
        recursive = [d for d in self.dirs if not _under_any(d, self.dirs, strict=True)]
        parents = {os.path.dirname(f) for f in self.files}
        flat = sorted(p for p in parents if os.path.isdir(p) and not _under_any(p, recursive, strict=False))
        return [(d, True) for d in recursive] + [(d, False) for d in flat]

    def is_relevant(self, path: str, *, is_directory: bool) -> bool:
        """A named file, or a manifest (or non-hidden directory) below a watched directory."""
        if path in self.files:
            return True
        for root in self.dirs:
            if path.startswith(root + os.sep):
                return _is_manifest_below(path[len(root) + 1:], is_directory=is_directory)
        return False


class ManifestWatcher:
    """watchdog on the manifest paths; `on_change(paths)` runs on `loop`, once per quiet burst.

    Paths handed to `on_change` are absolute (`os.path.abspath` of the event path). `start()` and
    `stop()` are called from the loop's thread; events arrive on watchdog's thread and cross over with
    `call_soon_threadsafe`, so all debounce state lives on the loop and needs no lock.
    """

    def __init__(self, paths: Sequence[Path], on_change: Callable[[set[Path]], None], *,
                 debounce_s: float = 0.2, loop: asyncio.AbstractEventLoop) -> None:
        self.targets = WatchTargets.from_paths(paths)
        self._on_change = on_change
        self._debounce_s = debounce_s
        self._loop = loop
        self._observer: BaseObserver | None = None
        self._burst: set[Path] = set()
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        """Schedule the watches and start watchdog; the watches exist when this returns.

        OSError from inotify (a directory removed meanwhile, the watch limit reached) propagates.
        """
        if self._observer is not None:
            return
        handler = _Handler(self._on_event)
        observer = Observer()
        try:
            for directory, recursive in self.targets.watches():
                observer.schedule(handler, directory, recursive=recursive, event_filter=WATCHED_EVENTS)
            observer.start()
        except BaseException:
            observer.stop()     # its inotify thread runs from construction: do not leak it
            raise
        self._observer = observer

    def stop(self) -> None:
        """Drop any burst in progress and join watchdog's threads."""
        self._stopped = True
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        self._burst.clear()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(OBSERVER_JOIN_TIMEOUT_S)
            self._observer = None

    def _on_event(self, event: FileSystemEvent) -> None:
        """watchdog thread: pass the relevant paths of one event over to the loop."""
        if not isinstance(event, _CONTENT_EVENTS):
            return
        raw = [event.src_path, event.dest_path] if isinstance(event, FileSystemMovedEvent) else [event.src_path]
        paths = {Path(p) for p in map(os.fsdecode, raw)
                 if p and self.targets.is_relevant(p, is_directory=event.is_directory)}
        if not paths:
            return
        try:
            self._loop.call_soon_threadsafe(self._extend_burst, paths)
        except RuntimeError:
            return      # the loop is closed: nobody is left to tell

    def _extend_burst(self, paths: set[Path]) -> None:
        """Loop thread: add to the burst and restart the quiet timer."""
        if self._stopped:
            return
        self._burst |= paths
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        self._quiet_timer = self._loop.call_later(self._debounce_s, self._end_burst)

    def _end_burst(self) -> None:
        self._quiet_timer = None
        paths, self._burst = self._burst, set()
        if paths and not self._stopped:
            self._on_change(paths)


class _Handler(FileSystemEventHandler):
    """Hands every watchdog event to one callback (on watchdog's thread)."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._on_event(event)


def _is_manifest_below(relative: str, *, is_directory: bool) -> bool:
    """Inside a watched tree: no hidden directories (.git), no scratch files, manifest suffixes only."""
    *dirs, name = relative.split(os.sep)
    if any(part.startswith(".") for part in dirs) or is_editor_temp(name):
        return False
    if is_directory:
        return not name.startswith(".")
    return name.endswith(MANIFEST_SUFFIXES)


def _under_any(path: str, roots: Sequence[str], *, strict: bool) -> bool:
    """Whether `path` lies below one of `roots` (or is one, unless strict)."""
    return any(path.startswith(root + os.sep) or (not strict and path == root) for root in roots)
