"""A loop world for unit tests (STYLE §5): a Controller over a real tmp state dir, a manifest directory, a
FakeClock and recording effects, exit watcher and probe loops injected through its seams (loop/seams.py).

The fake installs write install records, the fake starts write run records whose runner is this very test
process (pid, create time and command line are what observation verifies), so a pass observes, plans and
records status as in production; only the effects, the watchers and the clock are fakes. Used by
tests/unit/test_loop_passes.py and tests/unit/test_loop_timing.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from mcp_reconcile.errors import ActionError
from mcp_reconcile.loop.clock import FakeClock
from mcp_reconcile.loop.controller import Controller
from mcp_reconcile.loop.result import PassResult
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir

HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\n"


class RecordingEffects:
    """Effects as a list of `(effect, server)` over the real state dir, and as a `timeline` of
    `(clock time, effect, server)`; `errors[(effect, server)]` is raised by that effect (each time, or once if
    it is in `once`)."""

    def __init__(self, state: StateDir, clock: FakeClock) -> None:
        self.state = state
        self.clock = clock
        self.calls: list[tuple[str, str]] = []
        self.timeline: list[tuple[float, str, str]] = []
        self.errors: dict[tuple[str, str], ActionError] = {}
        self.once: set[tuple[str, str]] = set()
        self.withheld_env: set[str] = set()
        self.reserved_ports: set[int] = set()
        self.ledger: Any = None   # the loop's, once it is built

    def _raise_if_failing(self, effect: str, name: str) -> None:
        self.calls.append((effect, name))
        self.timeline.append((self.clock.now(), effect, name))
        error = self.errors.get((effect, name))
        if error is not None:
            if (effect, name) in self.once:
                del self.errors[(effect, name)]
            raise error

    async def install(self, spec: ServerSpec) -> str:
        self._raise_if_failing("install", spec.name)
        self.state.install_dir(spec.name).mkdir(parents=True, exist_ok=True)
        self.state.write_install({"server": spec.name, "source": str(spec.source), "resolved_version": "1.0.0",
                                  "installer": spec.source.kind, "generation": spec.install_generation,
                                  "digests": dict(spec.digests), "installed_at": 0.0, "command": [],
                                  "dir": str(self.state.install_dir(spec.name))})
        return "installed 1.0.0"

    async def uninstall(self, name: str) -> str:
        self._raise_if_failing("uninstall", name)
        shutil.rmtree(self.state.install_dir(name), ignore_errors=True)
        self.ledger.forget(name)   # as HostEffects.uninstall does
        return "removed"

    async def start(self, spec: ServerSpec) -> str:
        self._raise_if_failing("start", spec.name)
        me = psutil.Process()
        self.state.write_run({"server": spec.name, "runner_pid": me.pid, "runner_create_time": me.create_time(),
                              "runner_cmdline": me.cmdline(), "server_pid": None,
                              "endpoint": f"http://127.0.0.1:1/{spec.name}", "generation": spec.runtime_generation,
                              "digests": dict(spec.digests), "started_at": 0.0, "state": "running"})
        self.ledger.record_start(spec.name, generation=spec.generation)   # a new process: a clean slate
        return "serving"

    async def replace(self, spec: ServerSpec) -> str | None:
        return None

    async def stop(self, name: str) -> str:
        self._raise_if_failing("stop", name)
        self.state.remove_run(name)
        return "stopped"

    async def test(self, spec: ServerSpec) -> str:
        self._raise_if_failing("test", spec.name)
        return "passed"

    def forget_child(self, name: str) -> None:
        pass

    def reap_leftovers(self, name: str, run: Any = None) -> bool:
        return False

    def inherited_env(self) -> dict[str, str]:
        from mcp_reconcile.model import env_without

        return env_without(os.environ, self.withheld_env)

    def exit(self, name: str, code: int) -> None:
        """The runner of `name` recorded its server's exit (what runner.py writes before it leaves)."""
        run = self.state.read_run(name)
        assert run, f"{name} is not running"
        self.state.write_run({**run, "state": "exited", "exit": {"code": code, "signal": None, "at": time.time()}})


class RecordingWatchers:
    """ExitWatcher and HealthMonitor stand-ins: which servers are watched and probed."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        self.probed: set[str] = set()

    def watch(self, name: str, pid: int) -> bool:
        self.watched.add(name)
        return True

    def forget(self, name: str) -> None:
        self.watched.discard(name)
        self.probed.discard(name)

    def ensure(self, name: str, endpoint: str, **_: Any) -> None:
        self.probed.add(name)

    def close(self) -> None:
        pass


class Probe:
    def __init__(self, ok: bool) -> None:
        self.ok, self.latency_ms, self.error, self.era = ok, 1.0, None if ok else "connection refused", "legacy"


class Loop:
    """A Controller over a tmp state dir, a manifest directory, a FakeClock and recording effects."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "manifests"
        self.dir.mkdir()
        self.state = StateDir(tmp_path / "state")
        self.clock = FakeClock(start=1000.0)
        self.effects = RecordingEffects(self.state, self.clock)
        self.results: list[tuple[str, PassResult]] = []
        self.restart_controller()

    def restart_controller(self) -> None:
        """A new controller process over the same state dir and manifests (what a restart of `run` finds)."""
        self.watchers = RecordingWatchers()
        self.controller = Controller(Options(state_dir=str(self.state.root), manifests=[str(self.dir)]),
                                     self.state, clock=self.clock, effects=self.effects, exits=self.watchers,
                                     health=self.watchers, backoff_jitter=0)   # exact delays
        self.effects.ledger = self.controller.ledger

    def write(self, name: str, spec: str, *, file: str | None = None) -> Path:
        path = self.dir / (file or f"{name}.yaml")
        path.write_text(HEAD + f"metadata: {{name: {name}}}\nspec: {spec}\n")
        return path

    def load(self) -> set[str]:
        changed = self.controller.reload("test")
        for name in changed:
            self.controller.queue.add(name)
        return changed

    async def run_due(self) -> list[str]:
        """Run one pass for each server the queue hands out now (not the delayed ones), applying each pass's
        result to the queue as the worker does; their names (`results` keeps what each pass returned)."""
        names = []
        while self.controller.queue.pending():
            name = await asyncio.wait_for(self.controller.queue.get(), 5.0)
            names.append(name)
            try:
                result = await self.controller.reconcile(name)   # (a crash of the pass fails the test)
                self.results.append((name, result))
                self.controller.schedule(name, result)
            finally:
                self.controller.queue.done(name)
        return names

    async def run_for(self, seconds: float) -> None:
        """Let `seconds` pass on the FakeClock, running every pass when it falls due (as the workers would)."""
        end = self.clock.now() + seconds
        await self.run_due()
        while (wait := self.controller.queue.next_due_in()) is not None and self.clock.now() + wait <= end:
            self.clock.advance(wait)
            await self.run_due()
        self.clock.advance(end - self.clock.now())

    def times_of(self, effect: str, name: str) -> list[float]:
        """When (clock time) each `effect` of `name` ran."""
        return [at for at, e, n in self.effects.timeline if (e, n) == (effect, name)]

    def due_in(self, name: str) -> float | None:
        """Seconds until the queue hands `name` out (None: not delayed)."""
        due = self.controller.queue.delayed().get(name)
        return None if due is None else due - self.clock.now()

    def phase(self, name: str) -> str | None:
        return self.controller.ledger.get(name).get("phase")
