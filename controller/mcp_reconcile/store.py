"""The state directory: layout, atomic writes, the controller lock, and the records.

Layout (modes 0700 for dirs, 0600 for files)::

    STATE_DIR/
      state.json          controller-level state (schemas/state.schema.json), written atomically
      .lock               flock'd exclusively by the acting controller
      .key                random HMAC key for generations (section 3), never printed
      installs/NAME/      npm prefix or venv; install.json = InstallRecord
      run/NAME.json       RunRecord, written by the runner
      logs/NAME.log       server stderr, rotated by size
      events.jsonl        audit log
      reports/            installation_report.json, test_report.json, health_report.json

Records hold names and digests, never secret values. Stdlib only: the runner writes run records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, TypedDict

from mcp_reconcile.errors import StoreError

STATE_VERSION = 1
KEY_BYTES = 32


class InstallRecord(TypedDict, total=False):
    """installs/NAME/install.json: what was installed, so a re-apply with nothing changed does nothing.

    server: name; source: "npm:pkg@range" as declared; resolved_version: exact version installed;
    installer: "npm" | "uv" | "pip" | "local"; command: argv prefix that starts the server (absolute);
    dir: install directory; generation: the spec's install_generation when installed;
    digests: the spec's field digests relevant to install; installed_at: unix time.
    """

    server: str
    source: str
    resolved_version: str
    installer: str
    command: list[str]
    dir: str
    generation: str
    digests: dict[str, str]
    installed_at: float


class ExitInfo(TypedDict, total=False):
    code: int | None      # exit status, or None when killed by a signal
    signal: int | None
    at: float             # unix time


class RunRecord(TypedDict, total=False):
    """run/NAME.json, written by the runner on start and again with `exit` before it leaves.

    server: name; runner_pid, runner_create_time (psutil's, seconds), runner_cmdline: identify the runner;
    server_pid, server_pgid: the server's process (group); endpoint: http://127.0.0.1:PORT/mcp;
    port; era: "handshake" | "stateless" | None until known; protocol_version;
    generation: runtime generation it was started for; digests: runtime field digests;
    started_at: unix time (of the generation serving now); state: "starting" | "running" | "stopping" | "exited";
    exit: ExitInfo; token_env: the env entry whose value guards the endpoint (a name, never the value);
    swappable: the runner listens on its control socket and can swap in a new generation (handover.py).
    session_pids: with sessions: isolated, the pids of the sessions' own server processes (isolation.py).
    """

    server: str
    runner_pid: int
    runner_create_time: float
    runner_cmdline: list[str]
    server_pid: int | None
    server_pgid: int | None
    endpoint: str | None
    port: int | None
    era: str | None
    protocol_version: str | None
    generation: str
    digests: dict[str, str]
    started_at: float
    state: str
    exit: ExitInfo | None
    token_env: str | None
    swappable: bool
    session_pids: list[int]


def _create_temp(path: Path) -> tuple[int, str]:
    """A new 0600 temp file beside `path` (os.open, not tempfile: the runner must stay lean)."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"))
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old or the new file, never a torn one: temp, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace `path` with `text` (its parent must exist): temp beside it, fsync, chmod `mode`, rename, fsync the
    directory. Readers see the old or the new file, never a torn one."""
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it does not exist. A corrupt file is a StoreError."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable state file: {exc}") from exc


class StateDir:
    """Paths and records of one state directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self._lock_fd: int | None = None

    # paths --------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def install_dir(self, name: str) -> Path:
        return self.root / "installs" / name

    def install_record_path(self, name: str) -> Path:
        return self.install_dir(name) / "install.json"

    def run_record_path(self, name: str) -> Path:
        return self.root / "run" / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def hold_runner_lock(self, name: str) -> int | None:
        """Take run/NAME.lock for this process's lifetime (the fd is never closed, never inherited), or None
        when another live runner holds it: one runner per server, even if two controllers raced to start one.
        """
        fd = os.open(self.root / "run" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def ensure(self) -> StateDir:
        for sub in ("", "installs", "run", "logs", "reports"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    # the lock -----------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Take the exclusive controller lock, or fail at once naming who holds it (or what is in the way)."""
        path = self.root / ".lock"
        try:
            self.ensure()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            # mkdir(exist_ok=True) says "File exists" when the path is a file: name the real problem.
            reason = "exists and is not a directory" if isinstance(exc, FileExistsError) else exc.strerror or exc
            raise StoreError(f"cannot lock the state dir: {exc.filename or path}: {reason}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{self.root}: another mcp-reconcile controller (pid {holder}) holds the lock; "
                "it is acting on this state dir. Stop it first, or use --dry-run to only plan.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def locked(self):  # type: ignore[no-untyped-def]
        self.acquire_lock()
        try:
            yield self
        finally:
            self.release_lock()

    # the generation key -------------------------------------------------------------------------
    def hmac_key(self) -> bytes:
        """The per-state-dir random key that makes printed generations safe (created on first use)."""
        path = self.root / ".key"
        if not path.exists():
            self.ensure()
            fd, tmp = _create_temp(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic and never replaces a key another process made first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise StoreError(f"{path}: the generation key is {len(key)} bytes, expected {KEY_BYTES}; "
                             "remove it to start a new one (every server then counts as changed once)")
        return key

    # records ------------------------------------------------------------------------------------
    def read_install(self, name: str) -> InstallRecord | None:
        return read_json(self.install_record_path(name))

    def write_install(self, record: InstallRecord) -> None:
        write_json_atomic(self.install_record_path(record["server"]), record)

    def read_run(self, name: str) -> RunRecord | None:
        return read_json(self.run_record_path(name))

    def write_run(self, record: RunRecord) -> None:
        write_json_atomic(self.run_record_path(record["server"]), record)

    def remove_run(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.run_record_path(name).unlink()

    def known_servers(self) -> set[str]:
        """Every server this state dir has an install or run record for."""
        names: set[str] = set()
        installs = self.root / "installs"
        if installs.is_dir():
            names.update(p.parent.name for p in installs.glob("*/install.json"))
        run = self.root / "run"
        if run.is_dir():
            names.update(p.stem for p in run.glob("*.json"))
        return names
