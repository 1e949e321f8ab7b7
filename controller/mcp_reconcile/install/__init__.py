"""Install actions: npm, PyPI and local servers, each isolated in `installs/NAME/`, pinned, idempotent.

`ensure_installed` is the one entry point for apply: it does nothing when the install record already
holds the spec's install generation, and otherwise builds the new install in a fresh sibling dir
(`installs/.NAME.new-XXXX`) and swaps it in only when it succeeded, so a failed upgrade leaves the
previous install and its record untouched. The installers behind the `Installer` protocol live in
npm.py, pypi.py and local.py; they import the helpers below, so this module loads them lazily.

Events (structlog, logger "mcp_reconcile"): install.started, install.retried, install.fallback,
install.succeeded, install.failed, install.skipped (debug: every no-op pass), install.recovered,
install.record_unreadable, uninstall.succeeded; fields server, source, attempt, duration_ms, error.
Env values never appear in them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from mcp_reconcile.errors import PermanentError, StoreError
from mcp_reconcile.install.prereq import check_prerequisites, find_executable
from mcp_reconcile.model import INSTALL_FIELDS, LaunchSpec, ServerSpec
from mcp_reconcile.store import InstallRecord, StateDir, write_json_atomic

__all__ = [
    "Installer", "check_prerequisites", "ensure_installed", "installer_for", "is_current", "launch_spec",
    "uninstall",
]

log = structlog.get_logger("mcp_reconcile")

RECORD_FILE = "install.json"
# Sibling dirs of installs/NAME: a build in progress, a previous install being replaced, one being removed.
STAGING_MARK, REPLACED_MARK, REMOVED_MARK = "new", "old", "gone"


class Installer(Protocol):
    """Installs one kind of source into a fresh directory and says how to start what it installed."""

    kind: str  # "npm" | "pypi" | "path"

    async def install(self, spec: ServerSpec, target: Path, *, env: Mapping[str, str]) -> InstallRecord:
        """Build the install in `target`; package managers run with `env` (no other server's secrets)."""

    def command_for(self, spec: ServerSpec, record: InstallRecord) -> list[str]: ...

    def bin_dir(self, record: InstallRecord) -> Path | None: ...


def installer_for(spec: ServerSpec) -> Installer:
    """The installer for the spec's source kind."""
    try:
        return _installer_classes()[spec.source.kind]()
    except KeyError:
        raise PermanentError(spec.name, "install", f"unknown source kind {spec.source.kind!r}") from None


def _installer_classes() -> dict[str, type[Installer]]:
    """Source kind (and record installer name) -> installer class; imported here, not at module top."""
    from mcp_reconcile.install.local import LocalInstaller
    from mcp_reconcile.install.npm import NpmInstaller
    from mcp_reconcile.install.pypi import PypiInstaller

    return {"npm": NpmInstaller, "pypi": PypiInstaller, "uv": PypiInstaller, "pip": PypiInstaller,
            "path": LocalInstaller, "local": LocalInstaller}


def is_current(spec: ServerSpec, record: InstallRecord | None) -> bool:
    """Whether the install on disk is the one the spec wants, so there is nothing to do."""
    if record is None or record.get("generation") != spec.install_generation:
        return False
    directory = record.get("dir")
    if not directory or not Path(directory).is_dir():
        return False
    command = record.get("command") or []
    # A package-manager install whose entry point vanished is broken, not current.
    return not (command and command[0].startswith(directory + os.sep) and not os.path.exists(command[0]))


async def ensure_installed(spec: ServerSpec, state: StateDir, *, force: bool = False,
                          installer: Installer | None = None, prerequisites: bool = True,
                          env: Mapping[str, str] | None = None) -> tuple[InstallRecord, bool]:
    """Install the spec's source unless it is current; (record, changed).

    `force` reinstalls a current install. Raises PrerequisiteError (unless `prerequisites` is False),
    PermanentError or TransientError; on any failure the previous install and its record are left as
    they were. `installer` replaces `installer_for(spec)` (tests). Package managers run with `env`
    (default: the controller's environment); callers pass it without the manifests' ${VAR} secrets,
    which an install script has no business seeing.
    """
    final = state.install_dir(spec.name)
    source = str(spec.source)
    record = _read_record(state, spec.name)
    if record is None and _recover_interrupted_swap(final):
        record = _read_record(state, spec.name)
    if not force and record is not None and is_current(spec, record):
        log.debug("install.skipped", server=spec.name, source=source, reason="install generation is current")
        return record, False
    installs = state.ensure().root / "installs"
    problems = check_prerequisites(spec) if prerequisites else []   # --skip-prerequisites / --force skip it
    if problems:
        log.error("install.failed", server=spec.name, source=source, error=str(problems[0]))
        raise problems[0]
    installer = installer or installer_for(spec)
    _remove_leftovers(installs, spec.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.{STAGING_MARK}-", dir=installs))
    log.info("install.started", server=spec.name, source=source, attempt=1)
    started = time.monotonic()
    try:
        built = relocated(await installer.install(spec, staging, env=os.environ if env is None else env),
                          staging, final)
        write_json_atomic(staging / RECORD_FILE, built)
        replaced = _swap_in(staging, final)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, Exception):
            log.error("install.failed", server=spec.name, source=source, duration_ms=_ms_since(started),
                      error=str(exc))
        raise
    if replaced is not None:
        await asyncio.to_thread(shutil.rmtree, replaced, ignore_errors=True)
    log.info("install.succeeded", server=spec.name, source=source, duration_ms=_ms_since(started),
             installer=built.get("installer"), resolved_version=built.get("resolved_version"))
    return built, True


async def uninstall(name: str, state: StateDir) -> bool:
    """Remove installs/NAME; False when there was nothing to remove."""
    installs = state.root / "installs"
    final = state.install_dir(name)
    if installs.is_dir():
        _remove_leftovers(installs, name)
    if not final.exists():
        return False
    started = time.monotonic()
    doomed = installs / f".{name}.{REMOVED_MARK}-{secrets.token_hex(4)}"
    os.rename(final, doomed)  # atomic: observers see the install whole or gone, never half-deleted
    await asyncio.to_thread(shutil.rmtree, doomed, ignore_errors=True)
    log.info("uninstall.succeeded", server=name, duration_ms=_ms_since(started))
    return True


def launch_spec(spec: ServerSpec, record: InstallRecord, base_env: Mapping[str, str]) -> LaunchSpec:
    """argv, env and cwd that start the installed server (spec.args appended, spec.env on top).

    The record's installer decides the layout, so a spec whose source kind changed still launches
    what is installed until the reinstall happens.
    """
    recorded = _installer_classes().get(record.get("installer", ""))
    installer = recorded() if recorded is not None else installer_for(spec)
    bin_dir = installer.bin_dir(record)
    env = dict(base_env)
    path = env.get("PATH", os.defpath)
    if bin_dir is not None:
        path = f"{bin_dir}{os.pathsep}{path}" if path else str(bin_dir)
        env["PATH"] = path
    env.update(spec.env)
    command = installer.command_for(spec, record)
    head = find_executable(command[0], first_in=bin_dir, path=path) or command[0]
    return LaunchSpec(argv=(head, *command[1:], *spec.args), env=env, cwd=spec.cwd, secret_keys=spec.secret_keys,
                      secret_parts=spec.secret_parts)


def new_record(spec: ServerSpec, target: Path, *, installer: str, resolved_version: str,
               command: Sequence[str]) -> InstallRecord:
    """The install record an installer returns (paths inside `target`; ensure_installed relocates them)."""
    prefixes = tuple(f"{f}." for f in INSTALL_FIELDS)
    digests = {k: v for k, v in spec.digests.items() if k in INSTALL_FIELDS or k.startswith(prefixes)}
    return InstallRecord(server=spec.name, source=str(spec.source), resolved_version=resolved_version,
                         installer=installer, command=list(command), dir=str(target),
                         generation=spec.install_generation, digests=digests, installed_at=time.time())


def own_command(spec: ServerSpec, find: Callable[[], list[str]]) -> list[str]:
    """The package's own command (`find` raises PermanentError when it has none) to record, even when
    spec.command overrides it (the override may be dropped later); [] when it has none and spec.command
    is given."""
    try:
        return find()
    except PermanentError:
        if not spec.command:
            raise
        return []


def package_command(spec: ServerSpec, record: InstallRecord, bin_dir: Path | None) -> list[str]:
    """spec.command (found in the install's bin dir first) if given, else the package's own command."""
    if spec.command:
        return resolve_in_bin(spec.command, bin_dir)
    if not record.get("command"):
        raise PermanentError(spec.name, "start", f"{spec.source} has no command of its own (it was installed for "
                                                 "a spec.command that is gone); set spec.command")
    return list(record["command"])


def resolve_in_bin(command: Sequence[str], bin_dir: Path | None) -> list[str]:
    """spec.command with its program found in the install's bin dir when it is there, else as given."""
    head, *rest = command
    found = find_executable(head, first_in=bin_dir, path="") if bin_dir is not None else None
    return [found or head, *rest]


def relocated(record: InstallRecord, old: Path, new: Path) -> InstallRecord:
    """The record with paths under `old` (the staging dir) moved under `new` (installs/NAME)."""
    def move(value: str) -> str:
        if value == str(old) or value.startswith(str(old) + os.sep):
            return str(new) + value[len(str(old)):]
        return value

    moved = InstallRecord(**record)
    moved["dir"] = move(record.get("dir", str(old)))
    moved["command"] = [move(part) for part in record.get("command", [])]
    return moved


def _swap_in(staging: Path, final: Path) -> Path | None:
    """Put the finished build in place: old install aside, new one in; returns the aside dir to delete."""
    aside = None
    if final.exists():
        aside = final.with_name(f".{final.name}.{REPLACED_MARK}-{secrets.token_hex(4)}")
        os.rename(final, aside)
    try:
        os.rename(staging, final)
    except OSError:
        if aside is not None:
            os.rename(aside, final)
        raise
    return aside


def _recover_interrupted_swap(final: Path) -> bool:
    """After a crash between the two renames of a swap, put the previous install back in place."""
    if final.exists() or not final.parent.is_dir():
        return False
    for aside in sorted(final.parent.glob(f".{final.name}.{REPLACED_MARK}-*")):
        if (aside / RECORD_FILE).is_file():
            try:
                os.rename(aside, final)
            except OSError:
                continue
            log.warning("install.recovered", server=final.name,
                        reason="previous install restored after an interrupted swap")
            return True
    return False


def _remove_leftovers(installs: Path, name: str) -> None:
    """Delete staging and aside dirs that a crashed install or uninstall of `name` left behind."""
    for mark in (STAGING_MARK, REPLACED_MARK, REMOVED_MARK):
        for leftover in installs.glob(f".{name}.{mark}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _read_record(state: StateDir, name: str) -> InstallRecord | None:
    try:
        return state.read_install(name)
    except StoreError as exc:
        log.warning("install.record_unreadable", server=name, error=str(exc))
        return None


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
