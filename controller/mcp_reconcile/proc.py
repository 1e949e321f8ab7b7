"""The only code that spawns, signals, reaps and identifies processes.

Every child goes into a process group of its own and every signal goes to the whole group, so a
wrapper chain (`npx` -> `node`, `sh -c`, `uv run`) never leaves an orphan behind. Stdlib only at
import: the runner imports this module and must stay lean (psutil and ctypes are imported inside the
functions that need them).

    servers   spawn_server -> ServerProcess, stop_server (the one stop sequence), RotatingLog
    runners   spawn_runner, stop_runner, pidfd_wait (exit of a non-child)
    identity  own_create_time / own_cmdline (stdlib, as psutil reports them), process_identity,
              is_same_process
    groups    signal_group, group_members, our_group_members, kill_group_and_wait (leftovers of a kill -9'd runner)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from mcp_reconcile.logstamp import LineStamper
from mcp_reconcile.scrub import StreamScrubber

# How long a group gets between SIGTERM and SIGKILL when a command times out.
COMMAND_KILL_GRACE_S = 2.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a whole process group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


async def run_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                      timeout_s: float = 600.0) -> CommandResult:
    """Run a command to completion in its own process group, capturing output.

    On timeout the whole group gets SIGTERM, then SIGKILL after COMMAND_KILL_GRACE_S, and is reaped.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(env) if env is not None else None, cwd=cwd,
        start_new_session=True)
    timed_out = False
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        timed_out = isinstance(exc, TimeoutError)
        signal_group(proc.pid, signal.SIGTERM)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_KILL_GRACE_S)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            out, err = await proc.communicate()
        if not timed_out:
            raise
    signal_group(proc.pid, signal.SIGKILL)  # leftovers of the group (daemonised grandchildren)
    return CommandResult(tuple(argv), proc.returncode if proc.returncode is not None else -1,
                         out.decode(errors="replace"), err.decode(errors="replace"),
                         time.monotonic() - started, timed_out)


# --- the server process: spawn, stderr log, stop ----------------------------------------------------------

# prctl(2) option: deliver a signal to this process when its parent thread dies.
PR_SET_PDEATHSIG = 1
# Longest line a server may write on stdout (one JSON-RPC message); the buffer only grows this far on demand.
STDOUT_LINE_LIMIT = 64 * 1024 * 1024
# Bytes read from the server's stderr at a time before they go to the log.
STDERR_CHUNK = 64 * 1024
# Log rotation defaults: logs/NAME.log rotates at this size and keeps this many old files.
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 3
# How long a server gets to exit after its stdin is closed (the runner's --stop-timeout default).
STOP_TIMEOUT_S = 5.0
# How long the group gets between SIGTERM and SIGKILL in the stop sequence.
SIGTERM_GRACE_S = 5.0
# A SIGKILLed process is gone at once unless stuck in the kernel (D state); this bounds the reap wait.
SIGKILL_REAP_TIMEOUT_S = 5.0
# How long the stderr pump may take to flush after the group is dead (pipes close with their last writer).
STDERR_DRAIN_TIMEOUT_S = 2.0
# How often group and runner waits look again when no event is available (kernels without pidfd, groups).
POLL_INTERVAL_S = 0.02


class RotatingLog:
    """Append-only log rotated by size: NAME.log -> NAME.log.1 -> ... -> NAME.log.N, oldest dropped.

    Rotation happens before a write that would cross `max_bytes`, so files split at chunk boundaries
    and a file holds at most one oversized chunk.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_LOG_MAX_BYTES,
                 backups: int = DEFAULT_LOG_BACKUPS) -> None:
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, data: bytes) -> None:
        if self._fd < 0 or not data:
            return
        self._follow()
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _follow(self) -> None:
        """Several writers may share the file (isolated sessions' servers log to their server's log): when
        another one rotated it, write to the new file, and count what they all wrote."""
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(self._fd)
            self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that reports the exit itself: on 3.11 `Process.wait()` also waits for every pipe
    to close, which a forked grandchild holding stdout can delay forever."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[int] = loop.create_future()

    def process_exited(self) -> None:
        transport = self._transport  # super() may close and drop it
        super().process_exited()
        if not self.exited.done() and transport is not None:
            self.exited.set_result(transport.get_returncode())


@dataclass
class ServerProcess:
    """A spawned server: the asyncio process (stdin/stdout pipes), its group, and its stderr pump."""

    process: asyncio.subprocess.Process
    pgid: int
    exited: asyncio.Future[int]
    stderr_pump: asyncio.Task[None]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait_exit(self, timeout_s: float | None = None) -> int | None:
        """The exit status once the process itself has exited (pipes may stay open); None on timeout."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
        except TimeoutError:
            return None


def _pdeathsig_preexec() -> Callable[[], None]:
    """A preexec_fn that makes the child get SIGTERM when the spawning thread (the runner) dies.

    prctl is resolved here, in the parent, so the child after fork only makes the call. If the parent
    died before prctl took effect the signal would never come, so the child then exits at once.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    option, sig = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM)
    zero = ctypes.c_ulong(0)

    def preexec() -> None:
        prctl(option, sig, zero, zero, zero)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


async def _pump_stderr(stream: asyncio.StreamReader, log: RotatingLog, scrubber: StreamScrubber) -> None:
    """Server stderr -> log: secrets scrubbed, each line stamped with when it came (`logs --since`, markers)."""
    stamper = LineStamper()
    try:
        while chunk := await stream.read(STDERR_CHUNK):
            log.write(stamper.feed(scrubber.feed(chunk) if scrubber else chunk))
        log.write(stamper.feed(scrubber.flush()))
    finally:
        log.close()


async def spawn_server(argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                       stderr_path: str | os.PathLike[str], *, log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
                       log_backups: int = DEFAULT_LOG_BACKUPS, secrets: Iterable[str] = ()) -> ServerProcess:
    """Start a stdio server in a process group of its own, with PR_SET_PDEATHSIG=SIGTERM.

    stdin/stdout are pipes for the caller; stderr goes through a pipe into `stderr_path`, rotated at
    `log_max_bytes`, with every value of `secrets` replaced by `(sensitive)` (a server may print its
    environment). Must run on the thread that stays alive as long as the server should (pdeathsig
    follows the spawning thread). Raises OSError when the command cannot be executed.
    """
    loop = asyncio.get_running_loop()
    log = RotatingLog(stderr_path, max_bytes=log_max_bytes, backups=log_backups)
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitAwareProtocol(STDOUT_LINE_LIMIT, loop), *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(env), cwd=cwd, process_group=0, preexec_fn=_pdeathsig_preexec())
    except BaseException:
        log.close()
        raise
    process = asyncio.subprocess.Process(transport, protocol, loop)
    assert process.stderr is not None
    pump = asyncio.create_task(_pump_stderr(process.stderr, log, StreamScrubber(secrets)), name=f"stderr-{process.pid}")
    return ServerProcess(process=process, pgid=process.pid, exited=protocol.exited, stderr_pump=pump)


async def stop_server(server: ServerProcess, *, stop_timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """The one stop sequence: close stdin, wait, SIGTERM the group, wait, SIGKILL the group, reap;
    then SIGKILL whatever is left in the group (forked children). Returns the exit status (negative:
    killed by that signal), or None if even SIGKILL could not end it within SIGKILL_REAP_TIMEOUT_S."""
    if server.returncode is None:
        stdin = server.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        if await server.wait_exit(stop_timeout_s) is None:
            signal_group(server.pgid, signal.SIGTERM)
            if await server.wait_exit(SIGTERM_GRACE_S) is None:
                signal_group(server.pgid, signal.SIGKILL)
                await server.wait_exit(SIGKILL_REAP_TIMEOUT_S)
    signal_group(server.pgid, signal.SIGKILL)  # leftovers of the group: forked or daemonised children
    try:
        await asyncio.wait_for(asyncio.shield(server.stderr_pump), STDERR_DRAIN_TIMEOUT_S)
    except (TimeoutError, OSError):
        server.stderr_pump.cancel()
    return server.returncode


def exit_status(returncode: int) -> tuple[int | None, int | None]:
    """(code, signal) from a returncode as Popen/asyncio report it (negative = killed by signal)."""
    return (None, -returncode) if returncode < 0 else (returncode, None)


# --- identity: is this pid still the process we recorded? ------------------------------------------------

# psutil's create_time is boot time + start ticks; a stepped wall clock moves boot time, so allow this much.
CREATE_TIME_TOLERANCE_S = 1.0


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def own_create_time() -> float:
    """This process's create_time exactly as psutil.Process().create_time() computes it (stdlib only)."""
    with open("/proc/self/stat", "rb") as fh:
        stat = fh.read()
    start_ticks = stat[stat.rfind(b")") + 2:].split()[19]
    with open("/proc/stat", "rb") as fh:
        boot_time = next(float(line.split()[1]) for line in fh if line.startswith(b"btime"))
    return float(start_ticks) / _clock_ticks() + boot_time


def own_cmdline() -> list[str]:
    """This process's command line as psutil.Process().cmdline() reports it."""
    with open("/proc/self/cmdline", "rb") as fh:
        data = fh.read()
    if data.endswith(b"\0"):
        data = data[:-1]
    return [os.fsdecode(part) for part in data.split(b"\0")] if data else []


def process_identity(pid: int) -> tuple[float, list[str]] | None:
    """(create_time, cmdline) of a live pid, or None when it is gone, a zombie, or not ours to read."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc.create_time(), proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_same_process(pid: int, create_time: float, cmdline: Sequence[str]) -> bool:
    """True only if `pid` is alive with the recorded create_time and command line (a reused pid is not)."""
    identity = process_identity(pid)
    if identity is None:
        return False
    live_create_time, live_cmdline = identity
    return abs(live_create_time - create_time) <= CREATE_TIME_TOLERANCE_S and live_cmdline == list(cmdline)


# --- runners: spawn, watch, stop; leftover groups -----------------------------------------------------------

def spawn_runner(argv: Sequence[str], env: Mapping[str, str], *, log_path: str | os.PathLike[str],
                 cwd: str | os.PathLike[str] | None = None, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start a runner in a session of its own (it outlives the controller), output to its own log.

    The runner passes `env` (minus its --token-env variable) and `cwd` on to the server.
    """
    os.makedirs(os.path.dirname(os.fspath(log_path)) or ".", mode=0o700, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=log_fd,
                                stderr=log_fd, start_new_session=True, close_fds=True, cwd=cwd,
                                pass_fds=tuple(pass_fds))
    finally:
        os.close(log_fd)


def pidfd_wait(pid: int) -> int | None:
    """An fd that becomes readable when `pid` exits (any process, child or not); None if it is gone.

    For `loop.add_reader`; the caller closes it. Needs Linux 5.3+.
    """
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _wait_fd_readable(fd: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def wait_pid_gone(pid: int, timeout_s: float) -> bool:
    """Wait until `pid` has exited (a zombie counts as exited); True if it did within the bound."""
    fd = pidfd_wait(pid)
    if fd is None:
        return True
    try:
        return _wait_fd_readable(fd, timeout_s)
    finally:
        os.close(fd)


def _reap_if_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_runner(runner: int | subprocess.Popen[bytes], *, timeout_s: float) -> bool:
    """SIGTERM a runner and wait up to `timeout_s` for it to stop its server and record the exit.

    `runner` is the Popen from spawn_runner (reaped through it, so its returncode stays right) or the
    pid of a re-adopted runner (waited for by pidfd, reaped if it is our child). A runner that overstays
    gets SIGKILL. Returns True if it stopped by itself (or was already gone), False if it had to be
    killed: then its exit record may be missing and its server group must be reaped
    (kill_group_and_wait). Blocks: call it through asyncio.to_thread from async code.
    """
    if isinstance(runner, subprocess.Popen) and runner.poll() is not None:
        return True  # already reaped: its pid may belong to someone else by now
    pid = runner if isinstance(runner, int) else runner.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _finish_runner(runner, 0)
        return True
    if _finish_runner(runner, timeout_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _finish_runner(runner, SIGKILL_REAP_TIMEOUT_S)
    return False


def _finish_runner(runner: int | subprocess.Popen[bytes], timeout_s: float) -> bool:
    if isinstance(runner, subprocess.Popen):
        try:
            runner.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    if not wait_pid_gone(runner, timeout_s):
        return False
    _reap_if_child(runner)
    return True


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ..., starttime at [19]; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`, read from /proc (stdlib, no psutil)."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(entry)) and len(fields) > 2 and fields[0] != b"Z" \
                and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _wait_group_empty(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def our_group_members(pgid: int, *, session: int, not_before: float) -> list[int]:
    """The live members of group `pgid` if it is the one a runner made (in the runner's session, started
    after the runner), else [].

    A group lives inside one session (POSIX), so checking one member checks them all. After a reboot or a
    pid wrap the number may name someone else's group: its session differs or its members are older.
    """
    members = group_members(pgid)
    for pid in members:
        if (fields := _stat_fields(pid)) is None:
            continue
        started_at = _boot_time() + int(fields[19]) / _CLOCK_TICKS
        ours = int(fields[3]) == session and started_at >= not_before - CREATE_TIME_TOLERANCE_S
        return members if ours else []
    return []


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    """The kernel's boot time (unix seconds, /proc/stat btime): /proc/PID/stat counts start times from it."""
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def kill_group_and_wait(pgid: int, *, timeout_s: float) -> bool:
    """Reap a leftover group (its runner was kill -9'd): SIGTERM, wait up to `timeout_s`, SIGKILL, wait.

    True when no live member is left. Polls /proc: there is no exit event for a group of non-children.
    Callers check `our_group_members` first. Blocks: call it through asyncio.to_thread from async code.
    """
    if not group_members(pgid):
        return True
    signal_group(pgid, signal.SIGTERM)
    if _wait_group_empty(pgid, timeout_s):
        return True
    signal_group(pgid, signal.SIGKILL)
    return _wait_group_empty(pgid, SIGKILL_REAP_TIMEOUT_S)
