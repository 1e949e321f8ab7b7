"""Warm runner starts: a template process that has the runner imported forks each new runner.

A runner is a fresh Python process that imports asyncio, httptools and the gateway: ~90 ms of CPU before it
can spawn its server, paid again at every start and restart (tests/bench: crash-to-ready, 25 servers
cold). The template (`python -m mcp_reconcile.spawner FD`) pays it once; each runner is then a fork
(a few ms) that starts its own session, so it outlives the template and the controller exactly like a
runner spawned from scratch, and shares the template's pages copy-on-write. The controller talks to the
template over a SOCK_SEQPACKET socketpair: one request (runner argv, env, cwd, log path, and the ready fd
passed with SCM_RIGHTS) -> one reply (the runner's pid). The template dies with the controller
(PR_SET_PDEATHSIG) or when the socket closes; it reaps the runners it forked while it lives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

# Placeholder in a runner's argv for the number its ready fd gets inside the forked runner.
READY_FD_PLACEHOLDER = "{ready_fd}"
# The template's own environment (each forked runner gets its server's environment from the request):
# nothing else, so no secret of the controller's environment shows in a runner's /proc/PID/environ.
TEMPLATE_ENV = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ"})
# Largest request (argv + environment) a template accepts.
MAX_REQUEST_BYTES = 1 << 20
# Bound on the template's answer to one request (a fork takes milliseconds).
REPLY_TIMEOUT_S = 10.0


class RunnerSpawner:
    """The controller's side: start the template on first use, ask it for runners."""

    def __init__(self, state_root: Path) -> None:
        self._state_root = state_root
        self._log_path = state_root / "logs" / "spawner.log"
        self._sock: socket.socket | None = None
        self._template: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _ensure_template(self) -> socket.socket:
        if self._sock is not None and self._template is not None and self._template.poll() is None:
            return self._sock
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._template = subprocess.Popen(
                # the state dir in the command line names, in `ps`, whose runners these forks are
                [sys.executable, "-m", "mcp_reconcile.spawner", str(theirs.fileno()), str(self._state_root)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                close_fds=True, env={k: v for k, v in os.environ.items() if k in TEMPLATE_ENV})
        finally:
            os.close(log_fd)
            theirs.close()
        ours.settimeout(REPLY_TIMEOUT_S)
        self._sock = ours
        return ours

    def spawn(self, name: str, runner_args: Sequence[str], env: Mapping[str, str], *, cwd: str | None,
              log_path: Path, ready_fd: int) -> int:
        """Fork a runner (`runner_args` may hold READY_FD_PLACEHOLDER); its pid. OSError if the template fails."""
        request = json.dumps({"name": name, "argv": list(runner_args), "env": dict(env), "cwd": cwd,
                              "log_path": str(log_path)}).encode()
        with self._lock:
            sock = self._ensure_template()
            try:
                socket.send_fds(sock, [request], [ready_fd])
                reply = sock.recv(4096)
            except OSError:
                self.close()
                raise
        if not reply:
            self.close()
            raise OSError("the runner template exited")
        answer = json.loads(reply)
        if "pid" not in answer:
            raise OSError(answer.get("error", "the runner template refused the request"))
        return int(answer["pid"])

    def close(self) -> None:
        """Let the template go (it exits on EOF); the runners it forked live on."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._template is not None:
            try:
                self._template.wait(REPLY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._template.kill()
                self._template.wait()
            self._template = None


# --- the template ---------------------------------------------------------------------------------------

def _reap(_signum: int, _frame: object) -> None:
    """Reap every runner that exited (the controller learns of exits by pidfd and the run record)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _become_runner(request: dict, ready_fd: int) -> int:  # type: ignore[type-arg]
    """In the forked child: a session of its own, the runner's stdio, env and cwd; then the runner."""
    from mcp_reconcile import runner

    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _set_name(f"mcpr:{request.get('name', '')}")
    log_fd = os.open(request["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)
    if request.get("cwd"):
        os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = [str(ready_fd) if a == READY_FD_PLACEHOLDER else a for a in request["argv"]]
    return runner.main(argv)


def serve(sock: socket.socket) -> int:
    """Answer fork requests until the controller closes the socket."""
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST_BYTES, 1)
        except InterruptedError:
            continue
        if not message:
            return 0
        try:
            request = json.loads(message)
            pid = os.fork()
        except (ValueError, OSError) as exc:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": f"cannot fork a runner: {exc}"}).encode())
            continue
        if pid == 0:
            code = 70
            try:
                sock.close()
                sys.stdout.flush()
                code = _become_runner(request, fds[0])
            except BaseException:  # the child must never return into the template's loop
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())


def _prctl(option: int, arg: int | bytes) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _die_with_parent() -> None:
    _prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _set_name(name: str) -> None:
    """`ps -o comm` and top show which server a forked runner serves (PR_SET_NAME, 15 bytes)."""
    _prctl(15, name.encode()[:15])


def main(argv: Sequence[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    _die_with_parent()
    import mcp_reconcile.runner  # noqa: F401 - the point: every fork starts with it imported

    return serve(sock)


if __name__ == "__main__":
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type] - as in runner.py: no OpenSSL per runner
    raise SystemExit(main(sys.argv[1:]))
