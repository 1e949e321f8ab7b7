"""Desired entries -> a planned change of one client config file -> an atomic, backed-up write.

The pure part (`desired_entries`, `plan_write`, `plan_remove`, `FileChange.diff`) is what a declarative
`MCPClient` manifest kind can plan with; `apply` is the only function that writes. Rules, each tested:
- only entries in the record (`record.py`) whose content still matches what we wrote are ours: a user's entry
  of the same name, or our entry edited by hand since, is a conflict that `force` alone overrides;
- every other entry, setting and comment stays (see `documents.py`), and an unchanged file is not rewritten,
  so a second write changes no byte;
- a write goes to a temp file beside the real one (symlinks followed), is fsynced and renamed over it, after
  the previous content was copied to `FILE.mcpr-backup`; a file that changed since it was read is not
  overwritten (the client may be writing it: try again).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_reconcile.clients.catalog import Client, Connect, Entry, Target, entry_for
from mcp_reconcile.clients.documents import Document, open_document, plain
from mcp_reconcile.clients.record import Record, fingerprint
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.store import write_text_atomic as replace_text

BACKUP_SUFFIX = ".mcpr-backup"


class ClientConfigError(McpReconcileError):
    """A client config we may not change (a user's entry in the way) or cannot write."""


@dataclass(frozen=True)
class EntryChange:
    name: str
    action: str          # add | update | unchanged | remove | conflict | skip
    reason: str = ""
    note: str = ""

    SYMBOLS = {"add": "+", "update": "~", "remove": "-", "unchanged": "=", "conflict": "!", "skip": " "}

    @property
    def symbol(self) -> str:
        return self.SYMBOLS[self.action]


@dataclass
class FileChange:
    """What one command does to one config file: its text before and after, and why, entry by entry."""

    client: Client
    scope: str
    path: Path
    before: str | None                      # None: the file does not exist
    after: str
    entries: list[EntryChange] = field(default_factory=list)
    written: dict[str, dict] = field(default_factory=dict)    # name -> value now ours (to record)
    forgotten: list[str] = field(default_factory=list)        # names no longer ours (to drop from the record)

    @property
    def changed(self) -> bool:
        return (self.before or "") != self.after and not (self.before is None and not self.written)

    @property
    def conflicts(self) -> list[EntryChange]:
        return [e for e in self.entries if e.action == "conflict"]

    def diff(self) -> str:
        """A unified diff of the file (empty when nothing changes)."""
        if not self.changed:
            return ""
        old = (self.before or "").splitlines(keepends=True)
        new = self.after.splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, fromfile=str(self.path) if self.before is not None else "/dev/null",
                                     tofile=str(self.path))
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def desired_entries(client: Client, scope: str, targets: Iterable[Target], *, connect: Connect) -> dict[str, Entry]:
    """{server name: the entry `client` should have at `scope`} (pure: no disk, no environment)."""
    return {t.name: entry_for(client, scope, t, connect=connect) for t in sorted(targets, key=lambda t: t.name)}


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ClientConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); left as it is") from None
    except OSError as exc:
        raise ClientConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _open(client: Client, path: Path, text: str | None) -> Document:
    return open_document(client.format, text or "", file=str(path), container=client.container)


def ownership(record: Record, path: Path, name: str, current: object) -> str:
    """"managed" (we wrote it, unchanged since), "edited" (we wrote it, the user changed it) or "user"."""
    recorded = record.fingerprint_of(path, name)
    if recorded is None:
        return "user"
    return "managed" if recorded == fingerprint(current) else "edited"


def plan_write(client: Client, scope: str, path: Path, desired: Mapping[str, Entry], record: Record, *,
               force: bool = False, prune: bool | Iterable[str] = False) -> FileChange:
    """The change that makes `path` hold `desired`; conflicts are listed (and left untouched) unless `force`.
    `prune` also removes our entries for servers no longer desired (the declarative reading): every entry of
    ours in the file (True), or only those named (an MCPClient prunes what it wrote, not `clients write`'s)."""
    before = read_text(path)
    doc = _open(client, path, before)
    current = doc.entries()
    change = FileChange(client, scope, path, before, before or "")
    for name, entry in desired.items():
        if name not in current:
            doc.set(name, entry.value)
            change.entries.append(EntryChange(name, "add", note=entry.note))
        elif plain(current[name]) == plain(entry.value):
            owner = ownership(record, path, name, current[name])
            if owner == "user" and not force:
                change.entries.append(EntryChange(name, "conflict", "an entry mcp-reconcile did not write, "
                                                  "identical to ours (use --force to manage it)"))
                continue
            change.entries.append(EntryChange(name, "unchanged", note=entry.note))
        else:
            owner = ownership(record, path, name, current[name])
            if owner != "managed" and not force:
                why = ("an entry mcp-reconcile did not write" if owner == "user"
                       else "changed by hand since mcp-reconcile wrote it")
                change.entries.append(EntryChange(name, "conflict", f"{why} (use --force to replace it)"))
                continue
            doc.set(name, entry.value)
            change.entries.append(EntryChange(name, "update", "replaced (--force)" if owner != "managed" else "",
                                              note=entry.note))
        change.written[name] = entry.value
    if prune:
        ours = record.names_in(path) if prune is True else list(prune)
        stale = [n for n in ours if n not in desired and n in record.names_in(path)]
        _remove_entries(doc, current, stale, record, change, force=force, why="no longer a running server")
    change.after = doc.text()
    return change


def plan_remove(client: Client, scope: str, path: Path, names: Iterable[str] | None, record: Record, *,
                force: bool = False) -> FileChange:
    """The change that removes our entries `names` (all of ours in the file when None) from `path`."""
    before = read_text(path)
    doc = _open(client, path, before)
    current = doc.entries()
    change = FileChange(client, scope, path, before, before or "")
    wanted = sorted(set(record.names_in(path)) if names is None else set(names))
    _remove_entries(doc, current, wanted, record, change, force=force)
    change.after = doc.text()
    return change


def _remove_entries(doc: Document, current: Mapping[str, object], names: Iterable[str], record: Record,
                    change: FileChange, *, force: bool, why: str = "") -> None:
    """Delete those of `names` that are ours (and unchanged, unless `force`); a user's entry is never removed."""
    for name in names:
        if name not in current:
            if record.fingerprint_of(change.path, name) is not None:
                change.entries.append(EntryChange(name, "skip", "not in the file any more"))
                change.forgotten.append(name)
            else:
                change.entries.append(EntryChange(name, "skip", "not in the file"))
            continue
        owner = ownership(record, change.path, name, current[name])
        if owner == "user" or (owner == "edited" and not force):
            reason = ("not written by mcp-reconcile: left alone" if owner == "user"
                      else "changed by hand since mcp-reconcile wrote it: left alone (use --force to remove it)")
            change.entries.append(EntryChange(name, "skip", reason))
            continue
        doc.delete(name)
        change.entries.append(EntryChange(name, "remove", why))
        change.forgotten.append(name)


def write_text_atomic(path: Path, text: str, *, expected: str | None) -> None:
    """Replace `path` (through symlinks) with `text`: backup of the old content, temp file, fsync, rename.
    `expected` is the content the change was planned on; a file that no longer holds it is left alone."""
    real = path.resolve() if path.is_symlink() else path
    real.parent.mkdir(parents=True, exist_ok=True)
    if read_text(real) != expected:
        raise ClientConfigError(f"{path}: changed while mcp-reconcile was editing it; nothing written, try again")
    mode = 0o600
    if expected is not None:
        mode = real.stat().st_mode & 0o777
        replace_text(real.with_name(real.name + BACKUP_SUFFIX), expected, mode=mode)
    replace_text(real, text, mode=mode)


def apply(change: FileChange, record: Record) -> None:
    """Write the file (if its text changes) and then the record. Refuses when the change has conflicts."""
    if change.conflicts:
        first = change.conflicts[0]
        raise ClientConfigError(f"{change.path} {change.client.container}.{first.name}: {first.reason}")
    if change.changed:
        write_text_atomic(change.path, change.after, expected=change.before)
    for name, value in change.written.items():
        record.mark(client=change.client.name, scope=change.scope, file=change.path, name=name, value=value)
    for name in change.forgotten:
        record.forget(change.path, name)
    if change.written or change.forgotten:
        record.save()


def remove(change: FileChange, record: Record) -> None:
    """Apply a `plan_remove` change (the same write path: atomic, backed up)."""
    apply(change, record)
