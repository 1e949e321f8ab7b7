"""The end-to-end harness: the CLI as users run it, against real state dirs, with nothing left behind.

Every command runs as a subprocess (`python -m mcp_reconcile ...`), the long-running controller too (in the
background, its stderr kept in a file). Waits poll what a user can see (status, run records, events.jsonl)
in a loop with a deadline and fail with the last state they observed; nothing sleeps and then asserts.

Two harnesses:
- `real`: the two bundled servers (npm `server-everything`, PyPI `mcp-server-time`), installed once per
  session into one state dir by `apply --install`; each test gets fresh copies of the bundled manifests with
  `tests.gate: false` (the gate's test command is not what these tests are about) and that shared state dir.
- `local`: a fresh state dir and a private copy of tests/fixtures/servers (the fault servers), so every
  process a test starts has the test's tmp dir in its command line.

Teardown always stops any controller the test started, runs `stop-all`, and then waits (bounded) until no
process of the state dir is left: none whose command line names the test's dirs, none in a process group
or session that a run record named (a forked grandchild counts). tests/chaos/conftest.py loads this file
by path to share the harness.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MANIFESTS = REPO / "manifests"
FAULT_SERVERS = REPO / "tests" / "fixtures" / "servers"
BUNDLED = ("everything", "time")

# Bound on the one-time install of both bundled servers (npm ~7 s, uv ~2 s here; cold caches are slower).
INSTALL_TIMEOUT_S = 600.0
# Bound on one CLI command; apply starts servers (a cold `time` takes ~1.5 s), stop-all stops them.
CLI_TIMEOUT_S = 120.0
# Bound on any wait for a state to appear (generous: other test runs share the 2 cores).
WAIT_S = 60.0
# How often waits look again; status and records are cheap file reads.
POLL_S = 0.05
# Bound on a controller's exit after SIGTERM (it stops probes and watchers, not the runners).
CONTROLLER_EXIT_TIMEOUT_S = 30.0
# Bound on the last processes of a state dir disappearing after stop-all returned (SIGKILLed group members).
LEFTOVER_TIMEOUT_S = 10.0

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message carries the last observed state."""


def wait_until(observe: Callable[[], T], done: Callable[[T], object], *, timeout_s: float = WAIT_S,
               what: str, poll_s: float = POLL_S) -> T:
    """Call `observe()` until `done(value)` holds and return that value; raise WaitTimeout with the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = observe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout_s:g}s waiting for {what}; last observed:\n"
                              f"{_show(value)}")
        time.sleep(poll_s)


def _show(value: Any) -> str:
    try:
        return json.dumps(value, indent=1, default=str)[:6000]
    except (TypeError, ValueError):
        return repr(value)[:6000]


def load_fixture_module(name: str) -> ModuleType:
    """A helper of tests/fixtures/servers (not a package), loaded by path under a private name."""
    spec = importlib.util.spec_from_file_location(f"e2e_fixture_{name}", FAULT_SERVERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- processes ----------------------------------------------------------------------------------------------

def leftover_processes(markers: Iterable[str], *, pgids: Iterable[int] = (), sids: Iterable[int] = ()
                       ) -> list[str]:
    """Processes that belong to a state dir: a command line naming one of `markers`, or membership in one of
    the recorded server process groups or runner sessions. A zombie whose parent is PID 1 is left out:
    reaping it is init's job (this sandbox's PID 1 never reaps), not the controller's."""
    markers = [m for m in markers if m]
    pgids, sids = set(pgids), set(sids)
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "ppid", "status", "cmdline"]):
        info = p.info
        if info["pid"] == me:
            continue
        if info["status"] == psutil.STATUS_ZOMBIE and info["ppid"] == 1:
            continue
        cmdline = " ".join(info["cmdline"] or ())
        try:
            pgid, sid = os.getpgid(info["pid"]), os.getsid(info["pid"])
        except OSError:
            continue
        if any(m in cmdline for m in markers) or pgid in pgids or sid in sids:
            found.append(f"pid {info['pid']} ppid {info['ppid']} pgid {pgid} sid {sid} {info['status']}: "
                         f"{cmdline or '(no cmdline)'}")
    return found


def processes_running(argv: Sequence[str]) -> list[int]:
    """Live pids whose command line is `argv`, or `argv` after an interpreter (a script's shebang)."""
    wanted = list(argv)
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and wanted in (cmdline, cmdline[1:]):
            found.append(p.pid)
    return sorted(found)


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """Is `pid` a live (non-zombie) process, and the same one when `create_time` is given?"""
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 1.0
    except psutil.NoSuchProcess:
        return False


@dataclass
class CliResult:
    argv: list[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\n-> exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Controller:
    """A background `mcp-reconcile run`: stdout and stderr go to files so a failing test can show them."""

    process: subprocess.Popen[bytes]
    stderr_path: Path
    stdout_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, bounded wait, SIGKILL past the bound; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(CONTROLLER_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(CONTROLLER_EXIT_TIMEOUT_S)

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait(CONTROLLER_EXIT_TIMEOUT_S)


# --- the harness --------------------------------------------------------------------------------------------

@dataclass
class Harness:
    """One test's view of a state dir: CLI runs, a background controller, waits, and records read back."""

    root: Path                     # the test's own tmp dir (manifests, outputs, fault-server copies)
    state_dir: Path
    manifests: Path                # the manifest directory passed as -f
    env: dict[str, str]
    markers: list[str]             # strings whose presence in a command line marks our processes
    events_from: int = 0           # events.jsonl lines written before this test (shared state dir)
    outputs: list[CliResult] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)
    pgids: set[int] = field(default_factory=set)
    sids: set[int] = field(default_factory=set)

    # the CLI ----------------------------------------------------------------------------------------------
    def argv(self, *args: str, files: Sequence[str | os.PathLike[str]] | None = None) -> list[str]:
        paths = [self.manifests] if files is None else files
        command = args[0] if args else "apply"   # each command takes only the flags it honours (cli.py)
        state = ["--state-dir", str(self.state_dir)] if command != "validate" else []
        if command in ("events", "logs", "stop-all", "import"):
            paths = []
        return [sys.executable, "-m", "mcp_reconcile", *args, *state, *(part for p in paths for part in ("-f", str(p)))]

    def cli(self, *args: str, files: Sequence[str | os.PathLike[str]] | None = None, expect: int | None = 0,
            timeout_s: float = CLI_TIMEOUT_S) -> CliResult:
        """Run one command to completion; `expect` is the exit code it must have (None: any)."""
        argv = self.argv(*args, files=files)
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout_s,
                              cwd=self.root)
        result = CliResult(argv, done.returncode, done.stdout, done.stderr)
        self.outputs.append(result)
        self.note_records()
        if expect is not None:
            assert result.code == expect, str(result)
        return result

    def status(self) -> dict[str, dict[str, Any]]:
        """`status -o json`, by server name."""
        result = self.cli("status", "-o", "json")
        return {row["name"]: row for row in json.loads(result.out)["servers"]}

    def rows(self) -> dict[str, dict[str, Any]]:
        """What `status -o json` would print, computed in-process: cheap enough to poll in a wait loop."""
        from mcp_reconcile.settings import Options
        from mcp_reconcile.status import collect

        self.note_records()
        return {row["name"]: row for row in collect(Options(state_dir=str(self.state_dir),
                                                            manifests=[str(self.manifests)]))}

    def start_controller(self, *args: str, duration_s: float = 900.0) -> Controller:
        """`run` in the background (a long --monitor-duration; teardown stops it)."""
        n = len(self.controllers)
        err, out = self.root / f"controller-{n}.stderr", self.root / f"controller-{n}.stdout"
        with open(err, "wb") as err_fh, open(out, "wb") as out_fh:
            process = subprocess.Popen(self.argv("run", "--monitor-duration", str(duration_s), *args),
                                       env=self.env, stdout=out_fh, stderr=err_fh, stdin=subprocess.DEVNULL,
                                       cwd=self.root)
        controller = Controller(process, err, out)
        self.controllers.append(controller)
        return controller

    # state read back -------------------------------------------------------------------------------------
    def run_record(self, name: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.state_dir / "run" / f"{name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None   # not there, or caught between truncate and write (never: writes are atomic)
        self._remember(record)
        return record

    def note_records(self) -> None:
        """Remember every process group and session a run record names, for the leftover check."""
        for path in (self.state_dir / "run").glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._remember(json.loads(path.read_text()))

    def _remember(self, record: Mapping[str, Any]) -> None:
        if record.get("server_pgid"):
            self.pgids.add(int(record["server_pgid"]))
        if record.get("runner_pid"):
            self.sids.add(int(record["runner_pid"]))   # runners lead a session of their own

    def health_report(self) -> dict[str, Any]:
        """reports/health_report.json by server (the running controller refreshes it every few seconds)."""
        try:
            return json.loads((self.state_dir / "reports" / "health_report.json").read_text())["servers"]
        except (FileNotFoundError, ValueError, KeyError):
            return {}

    def install_record(self, name: str) -> dict[str, Any]:
        return json.loads((self.state_dir / "installs" / name / "install.json").read_text())

    def events(self, event: str | None = None, *, server: str | None = None, since: int = 0
               ) -> list[dict[str, Any]]:
        """This test's audit events (optionally one kind, one server), from the `since`-th on."""
        path = self.state_dir / "events.jsonl"
        try:
            lines = path.read_text(errors="replace").splitlines()[self.events_from:]
        except FileNotFoundError:
            return []
        found = []
        for index, line in enumerate(lines):
            if index < since or not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue   # a line being appended right now
            if (event is None or record.get("event") == event) and (server is None or record.get("server") == server):
                found.append(record)
        return found

    def events_count(self) -> int:
        """How many events this test has seen so far: pass as `since=` to look only at later ones."""
        return len(self.events())

    # manifests -------------------------------------------------------------------------------------------
    def write_manifest(self, name: str, spec: Mapping[str, Any]) -> Path:
        """manifests/NAME.yaml declaring server NAME with `spec`."""
        doc = {"apiVersion": "mcp-reconcile/v1", "kind": "MCPServer", "metadata": {"name": name},
               "spec": dict(spec)}
        return self.write_text(f"{name}.yaml", yaml.safe_dump(doc, sort_keys=False))

    def write_text(self, filename: str, text: str) -> Path:
        path = self.manifests / filename
        path.write_text(text)
        return path

    def read_manifest(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.manifests / f"{name}.yaml").read_text())

    def fault_server(self, filename: str) -> Path:
        """The test's own copy of a fault server (tests/fixtures/servers/FILENAME)."""
        return self.root / "servers" / filename

    # waits -----------------------------------------------------------------------------------------------
    wait_until = staticmethod(wait_until)
    processes_running = staticmethod(processes_running)
    pid_alive = staticmethod(pid_alive)

    def wait_ready(self, *names: str, timeout_s: float = WAIT_S, what: str = "") -> dict[str, dict[str, Any]]:
        """Wait until every named server is Ready with an endpoint; returns the status rows."""
        return wait_until(self.rows, lambda rows: all(n in rows and rows[n]["ready"] and rows[n]["endpoint"]
                                                      for n in names),
                          timeout_s=timeout_s, what=what or f"{', '.join(names)} Ready")

    def probed_ready(self, rows: Mapping[str, Mapping[str, Any]], name: str, *, not_pid: int | None = None) -> bool:
        """Is `name` Ready on a probe of its current process (not a health result left from an earlier one)?
        With `not_pid`: under a server pid other than that one (it was restarted)."""
        row, record = rows.get(name) or {}, self.run_record(name) or {}
        probe = row.get("last_probe") or {}
        return bool(row.get("ready") and row.get("server_pid") not in (None, not_pid)
                    and record.get("server_pid") == row["server_pid"] and probe.get("ok")
                    and probe.get("at", 0.0) >= record.get("started_at", float("inf")))

    def wait_event(self, event: str, *, server: str | None = None, since: int = 0, count: int = 1,
                   timeout_s: float = WAIT_S) -> list[dict[str, Any]]:
        return wait_until(lambda: self.events(event, server=server, since=since), lambda found: len(found) >= count,
                          timeout_s=timeout_s, what=f"{count} {event} event(s){f' of {server}' if server else ''}")

    # teardown --------------------------------------------------------------------------------------------
    def leftovers(self) -> list[str]:
        return leftover_processes(self.markers, pgids=self.pgids, sids=self.sids)

    def wait_no_leftovers(self, what: str) -> None:
        """Wait (bounded) until no process of the state dir is left: SIGKILLed group members take a moment."""
        wait_until(self.leftovers, lambda left: not left, timeout_s=LEFTOVER_TIMEOUT_S,
                   what=f"no process of {self.state_dir} left {what}")

    def shut_down(self) -> None:
        """Stop controllers, `stop-all`, and require that nothing of the state dir is left running."""
        self.note_records()
        for controller in self.controllers:
            controller.stop()
        print(self.report())   # captured; pytest shows it when the test or its teardown fails
        self.note_records()
        stop_all = self.cli("stop-all", expect=None)
        assert stop_all.code == 0, str(stop_all)
        self.wait_no_leftovers("after stop-all")

    def report(self) -> str:
        """Controller stderr tails, for a failing test's output."""
        return "\n".join(f"--- {c.stderr_path.name}\n{c.stderr()[-4000:]}" for c in self.controllers)


def _controller_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_RECONCILE_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def harness(root: Path, state_dir: Path, manifests: Path, *, markers: Sequence[str],
            env: Mapping[str, str] | None = None) -> Iterator[Harness]:
    manifests.mkdir(parents=True, exist_ok=True)
    h = Harness(root=root, state_dir=state_dir, manifests=manifests, env=_controller_env(**(env or {})),
                markers=list(markers))
    h.events_from = len(h.events())
    try:
        yield h
    finally:
        h.shut_down()


def bundled_manifest(name: str) -> dict[str, Any]:
    """manifests/NAME.yaml as shipped, with `tests.gate: false`."""
    doc = yaml.safe_load((BUNDLED_MANIFESTS / f"{name}.yaml").read_text())
    doc["spec"].setdefault("tests", {})["gate"] = False
    return doc


def copy_bundled_manifests(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED:
        (target / f"{name}.yaml").write_text(yaml.safe_dump(bundled_manifest(name), sort_keys=False))
    return target


# --- fixtures -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def installed_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state dir with both bundled servers installed (not running), shared by every `real` test."""
    root = tmp_path_factory.mktemp("e2e-real")
    state_dir = root / "state"
    manifests = copy_bundled_manifests(root / "manifests")
    argv = [sys.executable, "-m", "mcp_reconcile", "apply", "--install", "-f", str(manifests),
            "--state-dir", str(state_dir)]
    done = subprocess.run(argv, env=_controller_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          cwd=root)
    assert done.returncode == 0, f"install failed:\n{done.stdout}\n{done.stderr}"
    assert not list((state_dir / "run").glob("*.json")), "--install must start nothing"
    yield state_dir
    subprocess.run([*argv[:3], "stop-all", "--state-dir", str(state_dir)], env=_controller_env(),
                   capture_output=True, timeout=CLI_TIMEOUT_S)
    left = leftover_processes([str(state_dir)])
    assert not left, f"left running after the e2e session: {left}"


@pytest.fixture
def real(installed_state: Path, tmp_path: Path) -> Iterator[Harness]:
    """The shared installed state dir and fresh gate-less copies of the bundled manifests (one test at a time).

    The controller's memory (state.json) from an earlier test is moved aside, as the ledger's own error
    message advises for starting from the records alone, so counters like restarts start at zero.
    """
    stale = [p.stem for p in (installed_state / "run").glob("*.json")]
    assert not stale, f"an earlier test left run records: {stale}"
    with contextlib.suppress(FileNotFoundError):
        (installed_state / "state.json").rename(tmp_path / "previous-state.json")
    manifests = copy_bundled_manifests(tmp_path / "manifests")
    with harness(tmp_path, installed_state, manifests, markers=[str(installed_state), str(tmp_path)]) as h:
        yield h


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Harness]:
    """A fresh state dir and a private copy of the fault servers (their command lines name tmp_path)."""
    shutil.copytree(FAULT_SERVERS, tmp_path / "servers", ignore=shutil.ignore_patterns("__pycache__"))
    with harness(tmp_path, tmp_path / "state", tmp_path / "manifests", markers=[str(tmp_path)]) as h:
        yield h


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[Any]:
    """Runner processes started with runnerlib.Runners; every one stopped, and its server groups reaped, after."""
    from runnerlib import Runners

    pool = Runners(tmp_path)
    yield pool
    pool.cleanup()
