"""ManifestWatcher with a real watchdog observer on tmp_path: one callback per rewrite burst.

"Exactly one callback" is shown by ordering, not by waiting for silence: after the burst's callback
the test writes a sentinel manifest, and the very next callback must be the sentinel's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from mcp_reconcile.loop.watch import ManifestWatcher, WatchTargets, is_editor_temp

WAIT_S = 5.0            # bound on every wait for a callback
DEBOUNCE_S = 0.2

anyio_mark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.contextmanager
def watching(paths: Sequence[Path]) -> Iterator[asyncio.Queue[set[Path]]]:
    """A started watcher whose callbacks land in a queue; stopped (threads joined) on exit."""
    changes: asyncio.Queue[set[Path]] = asyncio.Queue()
    watcher = ManifestWatcher(paths, changes.put_nowait, debounce_s=DEBOUNCE_S,
                              loop=asyncio.get_running_loop())
    watcher.start()
    try:
        yield changes
    finally:
        watcher.stop()


async def next_change(changes: asyncio.Queue[set[Path]]) -> set[Path]:
    with anyio.fail_after(WAIT_S):
        return await changes.get()


async def assert_one_callback(changes: asyncio.Queue[set[Path]], expected: set[Path], sentinel: Path) -> None:
    """The burst ended in one callback with `expected`; the next one is the sentinel's alone."""
    assert await next_change(changes) == expected
    sentinel.write_text("kind: MCPServer\n")
    assert await next_change(changes) == {sentinel}


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "team.yaml").write_text("metadata: {name: a}\n")
    return directory


@anyio_mark
async def test_an_atomic_rename_over_a_manifest_is_one_change(manifests: Path) -> None:
    target = manifests / "team.yaml"
    with watching([manifests]) as changes:
        scratch = manifests / "sedX1a2b3"                  # what `sed -i` writes before renaming
        scratch.write_text("metadata: {name: b}\n")
        os.replace(scratch, target)
        await assert_one_callback(changes, {target}, manifests / "sentinel.yaml")


@anyio_mark
async def test_truncate_and_write_is_one_change(manifests: Path) -> None:
    target = manifests / "team.yaml"
    with watching([manifests]) as changes:
        with target.open("w") as handle:                   # truncates
            handle.write("metadata:\n")
            handle.flush()
            handle.write("  name: c\n")
        await assert_one_callback(changes, {target}, manifests / "sentinel.yaml")


@anyio_mark
async def test_delete_and_recreate_is_one_change_after_the_file_is_back(manifests: Path) -> None:
    target = manifests / "team.yaml"
    with watching([manifests]) as changes:
        target.unlink()
        target.write_text("metadata: {name: d}\n")
        assert await next_change(changes) == {target}
        assert target.exists()
        (manifests / "sentinel.yaml").write_text("x: 1\n")
        assert await next_change(changes) == {manifests / "sentinel.yaml"}


@anyio_mark
async def test_a_vim_style_save_is_one_change(manifests: Path) -> None:
    target = manifests / "team.yaml"
    with watching([manifests]) as changes:
        (manifests / "4913").write_text("")
        (manifests / "4913").unlink()
        (manifests / ".team.yaml.swp").write_text("swap")
        os.rename(target, manifests / "team.yaml~")
        target.write_text("metadata: {name: e}\n")
        (manifests / "team.yaml~").unlink()
        (manifests / ".team.yaml.swp").unlink()
        await assert_one_callback(changes, {target}, manifests / "sentinel.yaml")


@anyio_mark
async def test_new_manifests_in_a_watched_directory_and_its_subdirectories_count(manifests: Path) -> None:
    with watching([manifests]) as changes:
        (manifests / "new.yml").write_text("x: 1\n")
        assert await next_change(changes) == {manifests / "new.yml"}
        (manifests / "sub").mkdir()
        assert await next_change(changes) == {manifests / "sub"}
        (manifests / "sub" / "deep.json").write_text("{}")
        await assert_one_callback(changes, {manifests / "sub" / "deep.json"}, manifests / "sentinel.yaml")


@anyio_mark
async def test_editor_scratch_files_and_other_suffixes_are_ignored(manifests: Path) -> None:
    with watching([manifests]) as changes:
        for name in [".team.yaml.swp", "team.yaml~", ".#team.yaml", "4913", "team.yaml.tmp", "notes.txt"]:
            (manifests / name).write_text("scratch")
        (manifests / ".git").mkdir()
        (manifests / ".git" / "config.json").write_text("{}")
        (manifests / "sentinel.yaml").write_text("x: 1\n")
        assert await next_change(changes) == {manifests / "sentinel.yaml"}


@anyio_mark
async def test_a_file_given_alone_is_watched_without_its_neighbours(manifests: Path) -> None:
    target = manifests / "team.yaml"
    with watching([target]) as changes:
        (manifests / "neighbour.yaml").write_text("x: 1\n")
        scratch = manifests / "team.yaml.tmp"
        scratch.write_text("metadata: {name: f}\n")
        os.replace(scratch, target)
        assert await next_change(changes) == {target}


@anyio_mark
async def test_stop_joins_the_watchdog_threads(manifests: Path) -> None:
    before = set(threading.enumerate())
    with watching([manifests]):
        assert set(threading.enumerate()) - before
    assert set(threading.enumerate()) - before == set()


@anyio_mark
async def test_a_directory_gone_before_start_raises_and_leaks_no_thread(tmp_path: Path) -> None:
    vanishing = tmp_path / "gone"
    vanishing.mkdir()
    watcher = ManifestWatcher([vanishing], lambda _: None, loop=asyncio.get_running_loop())
    vanishing.rmdir()
    before = set(threading.enumerate())
    with pytest.raises(FileNotFoundError):
        watcher.start()
    assert set(threading.enumerate()) - before == set()


def _relevance(targets: WatchTargets) -> Callable[[Path], bool]:
    return lambda path: targets.is_relevant(str(path), is_directory=False)


def test_watch_targets_watch_each_directory_once(tmp_path: Path) -> None:
    outer, inner = tmp_path / "m", tmp_path / "m" / "sub"
    inner.mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    targets = WatchTargets.from_paths([outer, inner, inner / "x.yaml", other / "y.yaml", Path(os.devnull)])
    assert targets.watches() == [(str(outer), True), (str(other), False)]
    relevant = _relevance(targets)
    assert relevant(inner / "z.yml") and relevant(other / "y.yaml")
    assert not relevant(other / "z.yaml") and not relevant(outer / ".git" / "a.json")


@pytest.mark.parametrize(
    ("name", "scratch"),
    [("team.yaml", False), (".team.yaml.swp", True), ("team.yaml~", True), (".#team.yaml", True),
     ("4913", True), ("team.yaml.tmp", True), (".hidden.yaml", False)],
)
def test_editor_scratch_names(name: str, scratch: bool) -> None:
    assert is_editor_temp(name) is scratch
