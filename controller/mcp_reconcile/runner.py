"""The per-server runner shim (SPEC section 6): `python -m mcp_reconcile.runner ... -- ARGV`.

One runner per running server, in a session of its own so it outlives the controller (like conmon).
It spawns the server (own process group, PR_SET_PDEATHSIG), owns its stdio, fixes its protocol era
once, serves it at http://127.0.0.1:PORT/mcp (gateway.py), and reports through run/NAME.json:

    starting (runner + server identity) -> running (endpoint, era) -> [stopping] -> exited (exit info)

The exit record is written before the runner leaves. Exit code: 0 after a requested stop (SIGTERM,
SIGINT), else the server's exit code (128+signal when killed), or one of the EXIT_* codes below.

Lean by design, one per server: stdlib + httptools only on this import path (SPEC appendix: import cost).
httptools (the llhttp parser) costs less memory to import than h11 and far less CPU per request.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "asyncio" not in sys.modules:
    # asyncio imports ssl when it can, which maps OpenSSL: +5 MB RSS per runner for TLS it never
    # uses (the endpoint is plain HTTP on loopback). Without it, asyncio runs with ssl support off.
    sys.modules["ssl"] = None  # type: ignore[assignment]

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcp_reconcile import eras, proc
from mcp_reconcile.gateway import REQUEST_TIMEOUT_S, Gateway
from mcp_reconcile.handover import control_address, keep_listener, serve_control, take_listener
from mcp_reconcile.isolation import DEFAULT_IDLE_S, DEFAULT_MAX_SESSIONS, SessionServers
from mcp_reconcile.scrub import SECRET_PARTS_ENV, StreamScrubber
from mcp_reconcile.serverlink import ServerLink, ServerUnavailable
from mcp_reconcile.sessionbook import SessionBook
from mcp_reconcile.store import RunRecord, StateDir

# How long the server gets from spawn to an answered server/discover or initialize (npx cold starts).
STARTUP_TIMEOUT_S = 60.0
# A server that closed its stdout during startup is normally exiting: how long to wait for that exit
# before the stop sequence takes over.
EXIT_AFTER_STDOUT_EOF_S = 5.0
# Runner exit codes of its own (server exit codes pass through otherwise).
EXIT_STARTUP_TIMEOUT = 124   # the server did not answer server/discover + initialize in time
EXIT_STARTUP_FAILED = 125    # the server answered the handshake with an error, or the port was taken
EXIT_SPAWN_FAILED = 127      # the command could not be executed (not found, not executable)
EXIT_RUNNER_BUG = 70         # EX_SOFTWARE: the runner itself failed; the server was still stopped
EXIT_DUPLICATE = 75          # EX_TEMPFAIL: another live runner serves this server; nothing was started
# How long the answers owed to requests cut short by the server's exit may take to leave.
QUIESCE_TIMEOUT_S = 1.0
# How long an old generation may finish the requests it has in flight after a swap before it is stopped anyway.
DRAIN_TIMEOUT_S = 30.0
# Bound on each list request that decides whether a swap changed what clients see (list_changed).
LIST_TIMEOUT_S = 5.0
# What a swap compares between generations, and the notification each difference sends.
LISTS = (("tools/list", "tools", "notifications/tools/list_changed"),
         ("prompts/list", "prompts", "notifications/prompts/list_changed"),
         ("resources/list", "resources", "notifications/resources/list_changed"))

HANDSHAKE_PROTOCOL_VERSION = "2025-11-25"   # what the runner asks for in its one initialize
DISCOVER_META = {eras.PROTOCOL_VERSION_KEY: eras.MODERN_PROTOCOL_VERSION, eras.CLIENT_CAPABILITIES_KEY: {}}
CLIENT_INFO = {"name": "mcp-reconcile-runner", "version": "0.1.0"}
# What the runner declares on behalf of its clients: sampling and elicitation (form and URL modes), so the server
# offers the tools that need them; each such request is routed to a client that really has the capability, or refused
# with a clear error (serverlink.py). Not roots: many clients share one server process, so there is no one
# set of roots to give it, and servers ask for roots at start-up (server-everything then waits for the
# answer instead of exiting when its stdin closes).
CLIENT_CAPABILITIES = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
METHOD_NOT_FOUND = -32601


class StartupError(Exception):
    """The server is alive but did not complete the era check / handshake."""


@dataclass(frozen=True)
class Era:
    name: str                                  # "handshake" | "stateless"
    protocol_version: str
    initialize_result: dict[str, Any] | None   # handshake era: answered to every handshake client
    discover_result: dict[str, Any] | None = None   # stateless era: what handshake clients are told
    serves_modern: bool = False                # handshake era, and the server knows server/discover too


@dataclass(frozen=True)
class Launch:
    """How the serving generation's server is started: isolated sessions start theirs the same way."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    secrets: list[str]
    stop_timeout_s: float


@dataclass
class Generation:
    """One server process behind the endpoint: what serves now, or an older one finishing its requests."""

    server: proc.ServerProcess
    link: ServerLink
    reader: asyncio.Task[None]
    generation: str
    stop_timeout_s: float


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mcp_reconcile.runner",
                                     description="Run one MCP server behind a loopback HTTP endpoint.")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--generation", required=True)
    parser.add_argument("--stop-timeout", type=float, default=proc.STOP_TIMEOUT_S)
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S)
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                        help="seconds a forwarded request may take before the client gets 504")
    parser.add_argument("--port", type=int, default=0,
                        help="the endpoint's loopback port (the controller keeps one per server; 0: any)")
    parser.add_argument("--path", default="/mcp", help="the endpoint's path")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (a container: 0.0.0.0, so its Service reaches it)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a Host header name accepted besides 127.0.0.1 and localhost (a Service's DNS name)")
    parser.add_argument("--hold-seconds", type=float, default=0.0,
                        help="after the server crashes, keep the endpoint's connections waiting this long for the "
                             "next runner (a keeper process holds the listening socket); 0: close at once")
    parser.add_argument("--sessions", choices=("shared", "isolated"), default="shared",
                        help="shared: one server process for every client; isolated: one per client session")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                        help="isolated: server processes at most (one more initialize gets 503)")
    parser.add_argument("--session-idle", type=float, default=DEFAULT_IDLE_S,
                        help="isolated: a session with no request for this long ends and its server stops")
    parser.add_argument("--token-env", default=None,
                        help="name of the env var holding the endpoint's bearer token")
    parser.add_argument("--secret-env", action="append", default=[], metavar="NAME",
                        help="an env var whose value is a secret: scrubbed from the server's log and the runner's")
    parser.add_argument("--log-max-bytes", type=int, default=proc.DEFAULT_LOG_MAX_BYTES)
    parser.add_argument("--log-backups", type=int, default=proc.DEFAULT_LOG_BACKUPS)
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="write one byte here and close it once serving (the spawner waits on it, no polling)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("the server command is missing: ... -- ARGV")
    return args


# Secret values of this runner's server, scrubbed from what `_say` writes (set once, in Runner.run).
_secrets = StreamScrubber(())


def _say(message: str) -> None:
    """One line to the runner's own log (stderr; spawn_runner points it at logs/NAME.runner.log)."""
    line = _secrets.scrub(message.encode(errors="replace")).decode(errors="replace")
    print(f"runner[{os.getpid()}]: {line}", file=sys.stderr, flush=True)


async def fix_era(link: ServerLink, *, timeout_s: float) -> Era:
    """Decide the server's era once (SPEC appendix: one stdio connection speaks one era).

    The handshake comes first: today's clients speak it, and only over it can a dual-era server send requests
    to clients (sampling, elicitation, roots). A server that refuses `initialize` is asked `server/discover`
    and served in the 2026-07-28 era. Raises TimeoutError after `timeout_s` in all, ServerUnavailable if the
    server goes away, StartupError if it accepts neither.
    """
    async with asyncio.timeout(timeout_s):
        return await _ask_era(link, timeout_s=timeout_s)


async def _ask_era(link: ServerLink, *, timeout_s: float) -> Era:
    initialize = {"jsonrpc": "2.0", "id": "initialize", "method": "initialize",
                  "params": {"protocolVersion": HANDSHAKE_PROTOCOL_VERSION, "capabilities": CLIENT_CAPABILITIES,
                             "clientInfo": CLIENT_INFO}}
    reply = await link.request(initialize, timeout_s=timeout_s)
    result = reply.get("result")
    discover = {"jsonrpc": "2.0", "id": "discover", "method": "server/discover",
                "params": {"_meta": DISCOVER_META}}
    if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
        await link.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
        # after the handshake a dual-era server still knows server/discover (it refuses it for this
        # connection's era); a handshake-only one does not know the method at all
        known = await link.request(discover, timeout_s=timeout_s)
        serves_modern = (known.get("error") or {}).get("code") != METHOD_NOT_FOUND
        return Era("handshake", result["protocolVersion"], result, serves_modern=serves_modern)
    refused = reply.get("error") or reply
    reply = await link.request(discover, timeout_s=timeout_s)
    result = reply.get("result")
    if isinstance(result, dict) and eras.MODERN_PROTOCOL_VERSION in (result.get("supportedVersions") or ()):
        return Era("stateless", eras.MODERN_PROTOCOL_VERSION, None, result)
    raise StartupError(f"the server accepts neither initialize ({refused}) nor server/discover "
                       f"({reply.get('error') or reply})")


class Runner:
    """One server's lifetime: spawn, era, serve, stop; every state change is written to the record."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = StateDir(args.state_dir)
        self.stop_requested = asyncio.Event()
        self.record: RunRecord = {
            "server": args.name, "runner_pid": os.getpid(), "runner_create_time": proc.own_create_time(),
            "runner_cmdline": proc.own_cmdline(), "server_pid": None, "server_pgid": None,
            "endpoint": None, "port": None, "era": None, "protocol_version": None,
            "generation": args.generation, "started_at": time.time(), "state": "starting", "exit": None}
        self.current: Generation
        self.gateway: Gateway
        self._swapped = asyncio.Event()
        self._replace_lock = asyncio.Lock()
        self._retiring: list[Generation] = []
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._known_secrets: list[str] = []
        self._launch = Launch(list(args.command), {}, None, [], args.stop_timeout)
        self._next_launch = self._launch
        self.isolation = SessionServers(self._spawn_session_server, max_sessions=args.max_sessions,
                                        idle_s=args.session_idle, on_change=self._note_sessions,
                                        hook=lambda sid, link: self.gateway.hook_session_link(sid, link), log=_say)

    def _write(self, **changes: Any) -> None:
        self.record.update(changes)  # type: ignore[typeddict-item]
        self.state.write_run(self.record)

    def _signal_ready(self) -> None:
        """Tell the spawner the record says running; the fd closes either way (EOF also wakes it)."""
        fd, self.args.ready_fd = self.args.ready_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, b"1")
            with contextlib.suppress(OSError):
                os.close(fd)

    def _record_exit(self, returncode: int | None) -> None:
        code, sig = proc.exit_status(returncode) if returncode is not None else (None, None)
        self._write(state="exited", exit={"code": code, "signal": sig, "at": time.time()})

    async def run(self) -> int:
        global _secrets
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        self.state.ensure()
        if self.state.hold_runner_lock(self.args.name) is None:   # before any record write or spawn
            _say(f"another runner already serves {self.args.name!r} (run/{self.args.name}.lock is held); exiting")
            return EXIT_DUPLICATE
        env = dict(os.environ)
        token = env.pop(self.args.token_env, None) if self.args.token_env else None
        secrets = [value for name in self.args.secret_env if (value := os.environ.get(name))]
        secrets += _secret_parts(env.pop(SECRET_PARTS_ENV, None))   # never passed on to the server
        self._known_secrets = [*secrets, *([token] if token else [])]
        _secrets = StreamScrubber(self._known_secrets)
        self._launch = Launch(list(self.args.command), env, None, secrets, self.args.stop_timeout)
        try:
            server = await proc.spawn_server(
                self.args.command, env, None, self.state.log_path(self.args.name),
                log_max_bytes=self.args.log_max_bytes, log_backups=self.args.log_backups, secrets=secrets)
        except OSError as exc:
            _say(f"cannot start {self.args.command[0]!r}: {exc.strerror or exc}")
            self._write(state="exited", exit={"code": EXIT_SPAWN_FAILED, "signal": None, "at": time.time()})
            return EXIT_SPAWN_FAILED
        self._write(server_pid=server.pid, server_pgid=server.pgid)
        self.current = self._generation(server, self.args.generation, self.args.stop_timeout)
        try:
            return await self._serve(token)
        except Exception:  # still stop the server and record its exit: never leave it unrecorded
            traceback.print_exc()
            return await self._finish(self.current.server, EXIT_RUNNER_BUG)
        finally:
            await self.isolation.close_all()
            for generation in (self.current, *self._retiring):
                generation.link.close()
                generation.reader.cancel()

    @staticmethod
    def _generation(server: proc.ServerProcess, generation: str, stop_timeout_s: float) -> Generation:
        assert server.process.stdin is not None and server.process.stdout is not None
        link = ServerLink(server.process.stdin, server.process.stdout, log=_say)
        reader = asyncio.create_task(link.read_loop(), name=f"server-stdout-{server.pid}")
        return Generation(server, link, reader, generation, stop_timeout_s)

    async def _serve(self, token: str | None) -> int:
        server, link = self.current.server, self.current.link
        era = await self._start(server, link)
        if not isinstance(era, Era):
            return await self._finish(server, era)
        self.gateway = gateway = Gateway(
            link, era=era.name, initialize_result=era.initialize_result, discover_result=era.discover_result,
            serves_modern=era.serves_modern, token=token, request_timeout_s=self.args.request_timeout,
            path=self.args.path, sessions=SessionBook(self.state.root / "run" / f"{self.args.name}.sessions.jsonl"),
            allowed_hosts=frozenset(self.args.allow_host),
            isolation=self.isolation if self.args.sessions == "isolated" else None)
        held = take_listener(str(self.state.root), self.args.name)   # from a keeper, if the last runner crashed
        if held is not None and held.getsockname()[1] != self.args.port and self.args.port:
            held.close()   # the server was given another port meanwhile
            held = None
        try:
            port = await gateway.start(self.args.port, sock=held, host=self.args.host)
        except OSError as exc:
            _say(f"cannot listen on 127.0.0.1:{self.args.port}: {exc.strerror or exc}")
            return await self._finish(server, EXIT_STARTUP_FAILED)
        control = await self._open_control()
        endpoint = f"http://127.0.0.1:{port}{self.args.path}"
        self._write(state="running", endpoint=endpoint, port=port, era=era.name, token_env=self.args.token_env,
                    protocol_version=era.protocol_version, swappable=control is not None)
        self._signal_ready()
        _say(f"serving {endpoint} ({era.name} era, {era.protocol_version}), server pid {server.pid}")
        while True:   # until a stop, or an exit of the generation serving now (a swap changes which that is)
            self._swapped.clear()
            await _first_of(self.current.server.exited, self.stop_requested.wait(), self._swapped.wait())
            if self.stop_requested.is_set() or self.current.server.returncode is not None:
                break
        crashed = not self.stop_requested.is_set()
        if crashed:
            held = gateway.hold() if control is not None and self.args.hold_seconds > 0 else None
            await gateway.quiesce(QUIESCE_TIMEOUT_S)   # the 503s owed to requests the exit cut short
            if held is not None and control is not None:
                self._fork_keeper(held, control)
                os.close(held)
        gateway.close()
        if control is not None:
            control.close()
        for task in list(self._retire_tasks):
            task.cancel()
        for old in list(self._retiring):
            await proc.stop_server(old.server, stop_timeout_s=old.stop_timeout_s)
        await self.isolation.close_all()
        return await self._finish(self.current.server, None)

    def _fork_keeper(self, listener_fd: int, control: asyncio.AbstractServer) -> None:
        """The server crashed: a child process keeps the endpoint's listening socket (new connections wait in
        its backlog) until the next runner takes it over, a controller releases it, or --hold-seconds pass.
        This runner then exits as always, so the controller sees the crash as it always has."""
        control_fd = control.sockets[0].fileno() if control.sockets else None
        if control_fd is None:
            return
        try:
            pid = os.fork()
        except OSError as exc:
            _say(f"cannot fork a keeper for the endpoint ({exc.strerror or exc}); it closes now")
            return
        if pid:
            _say(f"keeper pid {pid} holds the endpoint for up to {self.args.hold_seconds:g} s")
            return
        code = 0
        try:   # the child: nothing of the runner but the two sockets (no lock, no client connection, no pipe)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            for entry in os.listdir("/proc/self/fd"):
                fd = int(entry)
                if fd not in (2, listener_fd, control_fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            keep_listener(socket.socket(fileno=listener_fd), socket.socket(fileno=control_fd),
                          state_root=str(self.state.root), name=self.args.name, hold_s=self.args.hold_seconds)
        except BaseException:   # never return into the runner's event loop
            code = EXIT_RUNNER_BUG
        finally:
            os._exit(code)

    async def _open_control(self) -> asyncio.AbstractServer | None:
        """The control socket the controller swaps generations through; without it, restarts stop and start."""
        try:
            return await serve_control(control_address(str(self.state.root), self.args.name),
                                       state_root=str(self.state.root), name=self.args.name, handler=self._control)
        except OSError as exc:
            _say(f"no control socket ({exc.strerror or exc}): restarts will stop and start this runner")
            return None

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's requests: `stats` (the endpoint's counts, for /metrics), else a swap."""
        if request.get("op") == "stats":
            return {"ok": True, **self.gateway.stats.snapshot()}
        return await self._replace(request)

    async def _replace(self, request: dict[str, Any]) -> dict[str, Any]:
        """Make-before-break: start the new generation beside the serving one, and once it answers, send new
        requests to it; the old one finishes what it has in flight and is then stopped (_retire)."""
        async with self._replace_lock:
            if self.stop_requested.is_set() or self.current.server.returncode is not None:
                return {"ok": False, "error": "the runner is stopping"}
            started = await self._start_generation(request)
            if isinstance(started, str):
                return {"ok": False, "error": f"{started}; the running generation keeps serving"}
            new, era, token = started
            old = self.current
            before = await _lists(old.link, self.gateway.era)
            self._take_endpoint_settings(request)
            self.gateway.swap(new.link, era=era.name, initialize_result=era.initialize_result,
                              discover_result=era.discover_result, serves_modern=era.serves_modern, token=token)
            self.current = new
            self._write(server_pid=new.server.pid, server_pgid=new.server.pgid, generation=new.generation,
                        era=era.name, protocol_version=era.protocol_version, started_at=time.time())
            self._swapped.set()
            self._retiring.append(old)
            task = asyncio.create_task(self._retire(old, before))
            self._retire_tasks.add(task)
            task.add_done_callback(self._retire_tasks.discard)
            _say(f"generation {new.generation} serves (server pid {new.server.pid}, {era.name} era); "
                 f"{old.generation} (pid {old.server.pid}) finishes its requests")
            return {"ok": True, "server_pid": new.server.pid, "era": era.name,
                    "endpoint": self.record.get("endpoint")}

    async def _start_generation(self, request: dict[str, Any]) -> tuple[Generation, Era, str | None] | str:
        """Spawn and handshake the requested generation; or why it could not start (it is stopped again)."""
        global _secrets
        env = {str(k): str(v) for k, v in (request.get("env") or {}).items()}
        token_env = request.get("token_env")
        token = env.pop(token_env, None) if token_env else None
        secrets = [value for name in request.get("secret_env") or () if (value := env.get(name))]
        secrets += [str(part) for part in request.get("secret_parts") or () if part]
        self._known_secrets += [*secrets, *([token] if token else [])]   # old generations may still print theirs
        _secrets = StreamScrubber(self._known_secrets)
        argv = [str(a) for a in request.get("argv") or ()]
        if not argv:
            return "the request names no command"
        try:
            server = await proc.spawn_server(argv, env, request.get("cwd"), self.state.log_path(self.args.name),
                                             log_max_bytes=self.args.log_max_bytes,
                                             log_backups=self.args.log_backups, secrets=secrets)
        except OSError as exc:
            return f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        new = self._generation(server, str(request.get("generation")),
                               float(request.get("stop_timeout") or self.args.stop_timeout))
        self._next_launch = Launch(argv, env, request.get("cwd"), secrets, new.stop_timeout_s)
        timeout_s = float(request.get("startup_timeout") or self.args.startup_timeout)
        era_task = asyncio.create_task(fix_era(new.link, timeout_s=timeout_s))
        await _first_of(era_task, server.exited, self.stop_requested.wait())
        if era_task.done() and era_task.exception() is None:
            return new, era_task.result(), token
        era_task.cancel()
        failure = era_task.exception() if era_task.done() and not era_task.cancelled() else None
        why = (f"it did not answer initialize / server/discover within {timeout_s:g} s"
               if isinstance(failure, TimeoutError) else str(failure) if failure is not None
               else "the runner is stopping" if self.stop_requested.is_set() else "it exited during startup")
        await proc.stop_server(server, stop_timeout_s=new.stop_timeout_s)
        new.link.close()
        new.reader.cancel()
        _say(f"generation {new.generation} did not start: {why}")
        return f"the new generation did not start: {why}"

    def _take_endpoint_settings(self, request: dict[str, Any]) -> None:
        """A swap brings the manifest's endpoint settings too: request timeout, crash hold, sessions."""
        self._launch = self._next_launch
        flags = [str(a) for a in request.get("endpoint_args") or ()]
        try:
            new = parse_args(["--state-dir", "-", "--name", "-", "--generation", "-", *flags, "--", "-"])
        except SystemExit:
            _say(f"ignored endpoint settings the runner does not know: {flags}")
            return
        for name in ("hold_seconds", "request_timeout", "sessions", "max_sessions", "session_idle"):
            setattr(self.args, name, getattr(new, name))
        self.gateway.request_timeout_s = new.request_timeout
        self.isolation.max_sessions, self.isolation.idle_s = new.max_sessions, new.session_idle
        if new.sessions != "isolated" and self.gateway.isolation is not None:
            self.isolation.retire_all()   # back to one shared server: the sessions' own ones drain and stop
        self.gateway.isolation = self.isolation if new.sessions == "isolated" else None

    async def _spawn_session_server(self) -> _SessionServer:
        """An isolated session's own server process, started like the serving generation's."""
        launch = self._launch
        server = await proc.spawn_server(launch.argv, launch.env, launch.cwd, self.state.log_path(self.args.name),
                                         log_max_bytes=self.args.log_max_bytes, log_backups=self.args.log_backups,
                                         secrets=launch.secrets)
        return _SessionServer(self._generation(server, self.current.generation, launch.stop_timeout_s))

    def _note_sessions(self, pids: list[int]) -> None:
        """The run record lists the isolated sessions' server pids (status counts them; nothing is lost)."""
        self._write(session_pids=pids)

    async def _retire(self, old: Generation, before: dict[str, Any]) -> None:
        """Let the old generation finish its requests (bounded), tell clients what changed, then stop it."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await old.link.drained()
            after = await _lists(self.current.link, self.gateway.era)
            for _method, key, notification in LISTS:
                if key in before and key in after and before[key] != after[key]:
                    self.gateway.announce(notification)
            returncode = await proc.stop_server(old.server, stop_timeout_s=old.stop_timeout_s)
            _say(f"generation {old.generation} (pid {old.server.pid}) stopped: exit status {returncode}")
        finally:
            old.link.close()
            old.reader.cancel()
            self.gateway.retired(old.link)
            if old in self._retiring:
                self._retiring.remove(old)

    async def _start(self, server: proc.ServerProcess, link: ServerLink) -> Era | int | None:
        """The era; or a runner exit code of its own; or None when the server exited during startup
        or a stop was requested (the exit code then follows from those)."""
        era_task = asyncio.create_task(fix_era(link, timeout_s=self.args.startup_timeout))
        await _first_of(era_task, server.exited, self.stop_requested.wait())
        if not era_task.done():
            era_task.cancel()
        elif era_task.exception() is None:
            return era_task.result()
        elif isinstance(era_task.exception(), TimeoutError):
            _say(f"server did not answer server/discover + initialize within {self.args.startup_timeout:g} s")
            return EXIT_STARTUP_TIMEOUT
        elif isinstance(era_task.exception(), StartupError):
            _say(str(era_task.exception()))
            return EXIT_STARTUP_FAILED
        elif not isinstance(era_task.exception(), ServerUnavailable):
            raise era_task.exception()  # type: ignore[misc]  # a runner bug: run() still stops the server
        if not self.stop_requested.is_set():
            await server.wait_exit(EXIT_AFTER_STDOUT_EOF_S)
            _say("server exited during startup")
        return None

    async def _finish(self, server: proc.ServerProcess, code: int | None) -> int:
        """Stop the server (and its group), record the exit, and pick the runner's exit code."""
        requested = self.stop_requested.is_set()
        if requested and server.returncode is None:
            self._write(state="stopping")
        returncode = await proc.stop_server(server, stop_timeout_s=self.args.stop_timeout)
        self._record_exit(returncode)
        _say(f"server exited: {self.record['exit']}")
        if code is not None:
            return code
        if requested:
            return 0
        if returncode is None:
            return 128 + signal.SIGKILL
        status, sig = proc.exit_status(returncode)
        return status if status is not None else 128 + (sig or 0)


class _SessionServer:
    """An isolated session's server, as isolation.py sees it."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.link = generation.link
        self.pid = generation.server.pid

    async def stop(self) -> None:
        try:
            await proc.stop_server(self.generation.server, stop_timeout_s=self.generation.stop_timeout_s)
        finally:
            self.link.close()
            self.generation.reader.cancel()


async def _lists(link: ServerLink, era: str) -> dict[str, Any]:
    """What clients would list (first page of tools, prompts, resources), to tell whether a swap changed it;
    all three asked at once, within LIST_TIMEOUT_S in all (a hung generation must not hold a swap up)."""

    async def one(method: str, key: str) -> tuple[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": key, "method": method}
        if era == "stateless":
            message = eras.with_envelope(message, {})
        try:
            result = (await link.request(message, timeout_s=LIST_TIMEOUT_S)).get("result")
        except (ServerUnavailable, TimeoutError):
            return key, None
        return key, result.get(key) if isinstance(result, dict) else None

    answers = await asyncio.gather(*(one(method, key) for method, key, _n in LISTS))
    return {key: value for key, value in answers if value is not None}


def _secret_parts(raw: str | None) -> list[str]:
    """The secret values inside composed env values (`Bearer ${TOK}`), handed over in SECRET_PARTS_ENV."""
    try:
        parts = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(p) for p in parts if p] if isinstance(parts, list) else []


async def _first_of(*waitables: Any) -> None:
    """Wait until one is done; tasks made here for bare coroutines are cancelled afterwards."""
    owned = [asyncio.ensure_future(w) for w in waitables if not asyncio.isfuture(w)]
    futures = [w for w in waitables if asyncio.isfuture(w)] + owned
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return asyncio.run(Runner(args).run())


if __name__ == "__main__":
    raise SystemExit(main())
