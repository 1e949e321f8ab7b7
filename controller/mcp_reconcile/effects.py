"""HostEffects: the real world behind apply's Effects seam (installers, runners, the test suite).

Starting a server spawns its runner (`python -m mcp_reconcile.runner`) in a session of its own and waits,
bounded, for the runner's record to say it serves (or that the server exited). Stopping asks the runner to
stop (it closes stdin, SIGTERMs and SIGKILLs the server's group), then reaps whatever is left of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from mcp_reconcile import handover, install, ports, proc
from mcp_reconcile.errors import PermanentError, TransientError
from mcp_reconcile.events import REDACTOR, get_logger
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import RUNTIME_FIELDS, ServerSpec, env_without
from mcp_reconcile.observe import runner_liveness
from mcp_reconcile.scrub import SECRET_PARTS_ENV
from mcp_reconcile.slots import Slots
from mcp_reconcile.spawner import READY_FD_PLACEHOLDER, RunnerSpawner
from mcp_reconcile.store import RunRecord, StateDir

log = get_logger()

# A runner we started: a Popen when spawned from scratch, a pid when forked by the template.
Runner = subprocess.Popen[bytes] | int

# How long a runner may take from spawn to serving when the manifest sets no tests.startupTimeoutSeconds
# (npx-free installs start in well under a second; a cold Python venv can take a few).
DEFAULT_STARTUP_TIMEOUT_S = 60.0
# Extra time a runner gets beyond the server's own stop timeout (two bounded waits inside the runner).
RUNNER_STOP_SLACK_S = 5.0
# Bound on reaping a leftover process group after its runner died.
LEFTOVER_KILL_TIMEOUT_S = 5.0


def _endpoint_args(spec: ServerSpec) -> list[str]:
    """The runner's endpoint settings, as its flags (a live runner takes them on at a swap too)."""
    return ["--hold-seconds", str(spec.hold_requests_s), "--request-timeout", str(spec.request_timeout_s),
            "--sessions", spec.sessions, "--max-sessions", str(spec.max_sessions),
            "--session-idle", str(spec.session_idle_s)]


@dataclass
class HostEffects:
    state: StateDir
    ledger: Ledger
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    check_prerequisites: bool = True      # False with --skip-prerequisites or --force
    continue_past_failed_tests: bool = False   # --force: a failed gate is reported, the apply goes on
    withheld_env: set[str] = field(default_factory=set)   # ${VAR}s of any manifest: no server inherits them
    reserved_ports: set[int] = field(default_factory=set)  # every desired spec.port: never allocated to another
    install_slots: Slots | None = None   # bounds parallel installs when passes run concurrently
    spawner: RunnerSpawner | None = None   # warm runner starts (forks); None: a fresh interpreter each
    children: dict[str, Runner] = field(default_factory=dict)
    # (server, runtime generation) whose gate passed just before its swap: its plan's test action has nothing to add
    _gated: dict[tuple[str, str], str] = field(default_factory=dict)

    def inherited_env(self) -> dict[str, str]:
        """The controller's environment minus every manifest's ${VAR}s (secrets of other servers)."""
        return env_without(self.base_env, self.withheld_env)

    async def install(self, spec: ServerSpec) -> str:
        async with self.install_slots.held() if self.install_slots else contextlib.nullcontext():
            record, changed = await install.ensure_installed(spec, self.state, env=self.inherited_env(),
                                                             prerequisites=self.check_prerequisites)
        version = record.get("resolved_version", "?")
        fallback = " with pip (uv could not run; see the install.fallback event)" if record.get("installer") == "pip" \
            else ""
        return f"installed {version}{fallback}" if changed else f"already installed {version}{fallback}"

    async def uninstall(self, name: str) -> str:
        removed = await install.uninstall(name, self.state)
        self.ledger.forget(name)
        ports.release(self.state, name)
        (self.state.root / "run" / f"{name}.sessions.jsonl").unlink(missing_ok=True)   # its clients' sessions
        return "removed" if removed else "nothing installed"

    async def start(self, spec: ServerSpec) -> str:
        record = self.state.read_install(spec.name)
        if not record:
            raise PermanentError(spec.name, "start", "not installed")
        launch = install.launch_spec(spec, record, self.inherited_env())  # + the server's own env
        await asyncio.to_thread(self.reap_leftovers, spec.name)
        self._remove_dead_run(spec.name)
        port = self._port_for(spec)
        ready_r, ready_w = os.pipe()
        timeout = float(spec.tests.raw.get("startupTimeoutSeconds", DEFAULT_STARTUP_TIMEOUT_S))
        runner_args = ["--state-dir", str(self.state.root), "--name", spec.name,
                       "--generation", spec.runtime_generation, "--stop-timeout", str(spec.stop_timeout_s),
                       "--startup-timeout", str(timeout), "--ready-fd", READY_FD_PLACEHOLDER,
                       "--port", str(port), "--path", spec.path, *_endpoint_args(spec),
                       *(arg for key in sorted(spec.secret_keys) for arg in ("--secret-env", key)),  # names only
                       *(("--token-env", spec.token_env) if spec.token_env else ()),
                       "--", *launch.argv]
        self.state.ensure()
        try:
            env = dict(launch.env)
            if spec.secret_parts:   # ${VAR} values inside composed ones (`Bearer ${TOK}`): the runner scrubs them too
                env[SECRET_PARTS_ENV] = json.dumps(sorted(spec.secret_parts))
            child = self._spawn_runner(spec.name, runner_args, env, launch.cwd, ready_w)
        except OSError as exc:
            os.close(ready_r)
            where = f" in {launch.cwd}" if launch.cwd else ""
            raise PermanentError(spec.name, "start", f"cannot start the runner{where}: {exc.strerror or exc}") from None
        finally:
            os.close(ready_w)
        self.children[spec.name] = child
        self._note_generation(spec)
        try:
            run = await self.wait_until_serving(spec.name, child, ready_r, timeout_s=timeout + RUNNER_STOP_SLACK_S)
        except TransientError:
            # the failed start is the failure: clear its exit record so it is not counted again as a crash,
            # but keep its exit code for the restart policy
            self.forget_child(spec.name)
            code = ((self.state.read_run(spec.name) or {}).get("exit") or {}).get("code")
            if code is not None:
                self.ledger.record_exit(spec.name, code=code, reason="exited during startup")
            await asyncio.to_thread(self.reap_leftovers, spec.name)
            self._remove_dead_run(spec.name)
            raise
        return f"serving at {run.get('endpoint')} ({run.get('era')} era, pid {run.get('server_pid')})"

    def _note_generation(self, spec: ServerSpec) -> None:
        """The ledger now follows `spec`'s generation (a start, or a swap in place)."""
        self.ledger.record_start(spec.name, file=spec.origin.file, generation=spec.generation,
                                 runtime_generation=spec.runtime_generation,
                                 runtime_digests={k: v for k, v in spec.digests.items()
                                                  if any(k == f or k.startswith(f + ".") for f in RUNTIME_FIELDS)},
                                 stop_timeout_s=spec.stop_timeout_s)
        gated = self._gated.get((spec.name, spec.runtime_generation))
        if gated is not None:   # its gate passed just before the swap: the new process is the one tested
            self.ledger.record_test(spec.name, generation=spec.runtime_generation, passed=True, message=gated)
        self.ledger.save()  # status must not show the old process's health for the new one

    async def replace(self, spec: ServerSpec) -> str | None:
        """Make-before-break: the live runner starts the new generation beside the old one and switches to it
        once it answers (handover.py), so the endpoint never closes. None when that cannot be done here (no
        live runner that can swap, or the endpoint itself changes: port, path, token): stop and start then.
        A new generation that fails to start is a TransientError, and the old one keeps serving."""
        run = self.state.read_run(spec.name)
        if not run or run.get("state") != "running" or not run.get("swappable") or not runner_liveness(run).alive:
            return None
        port = spec.port or ports.read_ports(self.state).get(spec.name)
        if run.get("token_env") != spec.token_env or run.get("endpoint") != ports.endpoint_url(port or 0, spec.path):
            return None
        record = self.state.read_install(spec.name)
        if not record:
            return None
        if spec.tests.gate:   # the new generation passes its gate (on processes of its own) before it takes over
            await self._test(spec, via_endpoint=False)
        launch = install.launch_spec(spec, record, self.inherited_env())
        timeout = float(spec.tests.raw.get("startupTimeoutSeconds", DEFAULT_STARTUP_TIMEOUT_S))
        request = {"op": "replace", "state_dir": str(self.state.root), "name": spec.name,
                   "generation": spec.runtime_generation, "argv": list(launch.argv), "env": dict(launch.env),
                   "cwd": launch.cwd, "secret_env": sorted(spec.secret_keys), "token_env": spec.token_env,
                   "secret_parts": sorted(spec.secret_parts),
                   "stop_timeout": spec.stop_timeout_s, "startup_timeout": timeout,
                   "endpoint_args": _endpoint_args(spec)}
        try:
            answer = await handover.ask_runner(handover.control_address(str(self.state.root), spec.name), request,
                                               timeout_s=timeout + RUNNER_STOP_SLACK_S)
        except TimeoutError:
            raise TransientError(spec.name, "restart", f"the runner did not swap generations within "
                                 f"{timeout + RUNNER_STOP_SLACK_S:g}s; the old one keeps serving") from None
        except OSError as exc:
            log.warning("runner.swap_unavailable", server=spec.name, error=str(exc), fallback="stop and start")
            return None
        if answer is None:
            return None
        if not answer.get("ok"):
            raise TransientError(spec.name, "restart", REDACTOR.scrub(str(answer.get("error"))))
        self._note_generation(spec)
        return (f"swapped in place at {answer.get('endpoint')} ({answer.get('era')} era, pid "
                f"{answer.get('server_pid')}); the old generation finishes its requests, then stops")

    def _port_for(self, spec: ServerSpec) -> int:
        """The server's stable port, checked free before a runner is spawned for it."""
        self.state.ensure()
        try:
            port = ports.port_for(self.state, spec.name, requested=spec.port, reserved=self.reserved_ports)
        except ports.PortUnavailable as exc:
            raise TransientError(spec.name, "start", str(exc)) from None
        if not ports.can_bind(port) and not ports.held_for(port, self.state, spec.name):   # (a keeper hands it on)
            holder = ports.holder_of(port)
            where = "spec.port" if spec.port else f"kept for it in {ports.ports_file(self.state)}"
            raise TransientError(spec.name, "start", f"port {port} ({where}) is in use"
                                 f"{f' by {holder}' if holder else ' by another process'}; free it or set "
                                 "another spec.port")
        return port

    def _remove_dead_run(self, name: str) -> None:
        """Clear the run record unless a live runner wrote it: one that a racing controller started (our own
        runner then exits at once, run/NAME.lock being held) is adopted on the next pass, not orphaned."""
        run = self.state.read_run(name)
        if run and run.get("state") != "exited" and runner_liveness(run).alive:
            log.warning("runner.already_serving", server=name, runner_pid=run.get("runner_pid"),
                        reason="a live runner holds the record: it is adopted, none is started")
            raise TransientError(name, "start", f"a runner (pid {run.get('runner_pid')}) already serves it; "
                                 "adopting it")
        self.state.remove_run(name)

    def _spawn_runner(self, name: str, runner_args: list[str], env: dict[str, str], cwd: str | None,
                      ready_w: int) -> Runner:
        """Fork the runner from the warm template; spawn it from scratch if there is none or it fails."""
        log_path = self.state.root / "logs" / f"{name}.runner.log"
        if self.spawner is not None:
            if cwd and not os.path.isdir(cwd):
                raise FileNotFoundError(2, "No such file or directory", cwd)
            try:
                return self.spawner.spawn(name, runner_args, env, cwd=cwd, log_path=log_path, ready_fd=ready_w)
            except OSError as exc:
                log.warning("spawner.failed", server=name, error=str(exc), fallback="fresh interpreter")
        argv = [sys.executable, "-m", "mcp_reconcile.runner",
                *(str(ready_w) if a == READY_FD_PLACEHOLDER else a for a in runner_args)]
        return proc.spawn_runner(argv, env, cwd=cwd, pass_fds=(ready_w,), log_path=log_path)

    def forget_child(self, name: str) -> None:
        """Drop (and reap, when it is ours) the runner started for `name`."""
        child = self.children.pop(name, None)
        if isinstance(child, subprocess.Popen):
            child.poll()

    async def wait_until_serving(self, name: str, child: Runner, ready_fd: int, *,
                                 timeout_s: float) -> RunRecord:
        """Wait for the runner's ready byte (or EOF: it died) on `ready_fd`, then read its record. Closes the fd."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        loop.add_reader(ready_fd, lambda: woken.done() or woken.set_result(None))
        try:
            await asyncio.wait_for(woken, timeout_s)
        except TimeoutError:
            await asyncio.to_thread(proc.stop_runner, child, timeout_s=RUNNER_STOP_SLACK_S)
            raise TransientError(name, "start", f"not serving within {timeout_s:g}s (startup timeout)"
                                 f"{self._last_log_line(name)}") from None
        finally:
            loop.remove_reader(ready_fd)
            os.close(ready_fd)
        run = self.state.read_run(name) or {}
        if run.get("state") == "running" and run.get("endpoint"):
            return run
        # EOF without "running": the runner is leaving; let it write its exit record
        pid = child.pid if isinstance(child, subprocess.Popen) else child
        await asyncio.to_thread(proc.wait_pid_gone, pid, RUNNER_STOP_SLACK_S)
        run = self.state.read_run(name) or {}
        exit_info = run.get("exit") or {}
        raise TransientError(name, "start", f"server exited during startup (code {exit_info.get('code')}, "
                             f"signal {exit_info.get('signal')}){self._last_log_line(name)}")

    def _last_log_line(self, name: str) -> str:
        try:
            with open(self.state.log_path(name), "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 2048))
                lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f"; last log line: {REDACTOR.scrub(lines[-1][:300])}" if lines else ""

    async def stop(self, name: str) -> str:
        run = self.state.read_run(name)
        detail = "not running"
        child = self.children.pop(name, None)
        if run and run.get("state") != "exited" and runner_liveness(run).alive:
            stop_timeout = float(self.ledger.get(name).get("stop_timeout_s", 5.0))
            timeout_s = 2 * stop_timeout + RUNNER_STOP_SLACK_S
            ours = isinstance(child, subprocess.Popen) and child.pid == run.get("runner_pid")
            await asyncio.to_thread(proc.stop_runner, child if ours else run["runner_pid"], timeout_s=timeout_s)
            detail = "stopped"
        if isinstance(child, subprocess.Popen) and child.poll() is None:
            await asyncio.to_thread(proc.stop_runner, child, timeout_s=RUNNER_STOP_SLACK_S)
        await asyncio.to_thread(self.reap_leftovers, name, run)
        if await asyncio.to_thread(handover.release_keeper, str(self.state.root), name):
            detail = "stopped (its endpoint, held since a crash, let go)" if detail == "not running" else detail
        self.state.remove_run(name)
        return detail

    def reap_leftovers(self, name: str, run: RunRecord | None = None) -> bool:
        """Kill what is left of a server's process group when its runner is gone (kill -9, crash)."""
        run = run if run is not None else self.state.read_run(name)
        if not run or not run.get("server_pgid"):
            return False
        if run.get("state") != "exited" and runner_liveness(run).alive:
            return False
        runner_pid, runner_started = run.get("runner_pid"), run.get("runner_create_time")
        if not runner_pid or runner_started is None:
            return False
        reaped = False
        # the server's group, and each isolated session's server's own (its pid is its group)
        for pgid in (run["server_pgid"], *(run.get("session_pids") or ())):
            members = proc.our_group_members(pgid, session=runner_pid, not_before=runner_started)
            if not members:
                continue   # gone, or the number now names a group of someone else's (reboot, pid wrap)
            done = proc.kill_group_and_wait(pgid, timeout_s=LEFTOVER_KILL_TIMEOUT_S)
            log.warning("server.leftovers_reaped", server=name, pgid=pgid, processes=len(members),
                        outcome="reaped" if done else "still running after SIGKILL")
            reaped = reaped or done
        return reaped

    async def test(self, spec: ServerSpec) -> str:
        if (spec.name, spec.runtime_generation) in self._gated:   # passed just before its swap, in this apply
            return "passed before the swap"
        return await self._test(spec, via_endpoint=True)

    async def _test(self, spec: ServerSpec, *, via_endpoint: bool) -> str:
        from mcp_reconcile.testcmd import test_one

        report = await test_one(spec, self.state, self.inherited_env(), via_endpoint=via_endpoint)
        passed = bool(report.passed)
        failed = [c for c in report.checks if getattr(c.status, "value", c.status) == "fail"]
        message = "all checks passed" if passed else "; ".join(f"{c.name}: {c.message}" for c in failed[:3])
        message = REDACTOR.scrub(message)   # a server may echo its environment into an answer
        self.ledger.record_test(spec.name, generation=spec.runtime_generation, passed=passed, message=message)
        if not passed and not self.continue_past_failed_tests:
            raise PermanentError(spec.name, "test", message)
        if passed and not via_endpoint:
            self._gated[(spec.name, spec.runtime_generation)] = message
        if not passed:
            log.warning("test.failed_ignored", server=spec.name, reason="--force", error=message)
            return f"tests FAILED, continuing (--force): {message}"
        counts: dict[str, int] = {}
        for c in report.checks:
            status = getattr(c.status, "value", c.status)
            counts[status] = counts.get(status, 0) + 1
        return f"tests passed ({report.era} era): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
