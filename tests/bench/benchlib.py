"""What the benchmarks share: result blocks, the CLI as a subprocess, manifests, the state dir as the
controller writes it, a raw stdio MCP client, bounded waits and process clean-up.

The bench modules import it as `benchlib` (tests/bench/conftest.py puts this folder on sys.path).
Every process a benchmark starts, directly or through the controller and its runners, inherits
`TAG_ENV=TAG` in its environment, so leftovers are found by that tag and nothing else is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BUNDLED_MANIFESTS = REPO / "manifests"
WELL_BEHAVED = REPO / "tests" / "fixtures" / "servers" / "well_behaved.py"

# Pinned sources: the two bundled servers (SPEC appendix) and two more reference servers for the
# 4-install figure, at the versions the registries list today.
EVERYTHING_NPM = "@modelcontextprotocol/server-everything@2026.8.31"
TIME_PYPI = "mcp-server-time==2026.10.19"
MEMORY_NPM = "@modelcontextprotocol/server-memory@2026.8.31"
GIT_PYPI = "mcp-server-git==2026.10.19"

TAG_ENV = "MCP_RECONCILE_BENCH_TAG"
TAG = uuid.uuid4().hex
# The manifest watcher's debounce (loop/watch.py ManifestWatcher default, SPEC §5 "~200 ms").
DEBOUNCE_S = 0.2
# How often the bounded waits below look again (state files are tiny; 5 ms keeps the error small).
POLL_S = 0.005
# Bound on one CLI call (an install from a slow registry is the long one).
CLI_TIMEOUT_S = 600.0
# Bound on a server's cold start (spawn -> initialize answered).
COLD_START_TIMEOUT_S = 60.0
# Bound on a controller's exit after SIGTERM (it stops its loop, not the runners).
CONTROLLER_STOP_TIMEOUT_S = 30.0
# Bound on a server's exit after stdin closes, before its group is killed.
SERVER_STOP_TIMEOUT_S = 5.0

INIT_PARAMS = {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "mcp-reconcile-bench", "version": "0"}}

T = TypeVar("T")


# --- result blocks ------------------------------------------------------------------------------------

@dataclass
class Block:
    """One benchmark's printed result: what, the figure, its same-run baseline, the ratio, the target."""

    what: str
    figure: str
    baseline: str
    ratio: str
    target: str
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        rows = [("figure", self.figure), ("baseline", self.baseline), ("ratio", self.ratio),
                ("SPEC target", self.target)]
        lines = [f"== bench: {self.what}", *(f"   {k:<12} {v}" for k, v in rows)]
        lines.extend(f"   {'':<12} {note}" for note in self.notes)
        return "\n".join(lines)


RESULTS: list[Block] = []   # every block of the session, for the terminal summary


def emit(block: Block) -> None:
    print("\n" + block.text(), flush=True)
    RESULTS.append(block)


def fmt_s(seconds: float) -> str:
    if seconds < 0:
        return "-" + fmt_s(-seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def times(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline > 0 else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50 of 1..4 is 2)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def timed(fn: Callable[[], object], *, runs: int, warmup: int = 2) -> list[float]:
    """Wall seconds of `runs` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


# --- processes ------------------------------------------------------------------------------------------

def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process a benchmark starts: ours, tagged."""
    return {**os.environ, TAG_ENV: TAG, **(extra or {})}


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str
    wall_s: float

    def describe(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def cli(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S) -> CliRun:
    """`python -m mcp_reconcile ARGS` as a user runs it; wall time from spawn to exit."""
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "mcp_reconcile", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=bench_env(env), cwd=REPO, stdin=subprocess.DEVNULL)
    return CliRun(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def python_pass_s() -> float:
    """Wall time of a bare `python -c pass`: the floor of any Python CLI."""
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True, env=bench_env(), stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


class RunController:
    """`mcp-reconcile run` as a subprocess in a session of its own, output to a log file."""

    def __init__(self, manifests: Path, state: Path, log: Path, *extra: str) -> None:
        self.state = state
        self.log = log
        with open(log, "ab") as fh:
            self.popen = subprocess.Popen(
                [PYTHON, "-m", "mcp_reconcile", "run", "-f", str(manifests), "--state-dir", str(state), *extra],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=bench_env(), cwd=REPO, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, bounded wait, SIGKILL; the runners stay (stop_all() stops them)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(CONTROLLER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(CONTROLLER_STOP_TIMEOUT_S)
        return self.popen.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_all(state: Path) -> CliRun:
    return cli("stop-all", "--state-dir", str(state))


def tagged_processes() -> list[psutil.Process]:
    """Live (non-zombie) processes started by this benchmark session, found by their env tag."""
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        info = proc.info
        if proc.pid == os.getpid() or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if (info.get("environ") or {}).get(TAG_ENV) == TAG:
            found.append(proc)
    return found


def kill_tagged() -> list[str]:
    """Kill what this session left running; returns a description of each process killed."""
    procs = tagged_processes()
    described = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    psutil.wait_procs(procs, timeout=SERVER_STOP_TIMEOUT_S)
    return described


def rss_of(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def uss_of(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().uss


# --- manifests and the state dir ----------------------------------------------------------------------

def server_doc(name: str, source: Mapping[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mcp-reconcile/v1", "kind": "MCPServer", "metadata": {"name": name},
            "spec": {"source": dict(source), **spec}}


def write_doc(directory: Path, doc: Mapping[str, Any]) -> Path:
    """`DIR/NAME.yaml`, replaced atomically (temp + rename, as editors and `sed -i` do)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{doc['metadata']['name']}.yaml"
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    os.replace(tmp, path)
    return path


def write_manifests(directory: Path, docs: Iterable[Mapping[str, Any]]) -> Path:
    for doc in docs:
        write_doc(directory, doc)
    return directory


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def run_record(state: Path, name: str) -> dict[str, Any]:
    return read_json(state / "run" / f"{name}.json") or {}


def ledger_entry(state: Path, name: str) -> dict[str, Any]:
    return ((read_json(state / "state.json") or {}).get("servers") or {}).get(name) or {}


def ready_since(entry: Mapping[str, Any]) -> float | None:
    """The Ready condition's lastTransitionTime when it is True, else None."""
    for cond in entry.get("conditions") or ():
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return float(cond.get("lastTransitionTime") or 0.0)
    return None


def serving(state: Path, name: str) -> dict[str, Any] | None:
    """The run record when the runner serves and its server turned Ready after that runner started.

    (A Ready condition from before, e.g. left in state.json by an earlier controller, does not count.)
    """
    run = run_record(state, name)
    if run.get("state") != "running" or not run.get("server_pid"):
        return None
    ready_at = ready_since(ledger_entry(state, name))
    return run if ready_at is not None and ready_at >= float(run.get("started_at") or 0.0) else None


def wait_until(check: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = POLL_S) -> T:
    """The first truthy value of `check()`, looked at every `interval_s`; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


# Events that mark the steps of a restart, in order: (event name, phase of a server.phase_changed event or None).
TIMELINE_STEPS = (("manifest.loaded", None), ("runner.exited", None), ("plan.computed", None),
                  ("server.phase_changed", "Starting"), ("server.phase_changed", "Running"))


def epoch(ts: str) -> float:
    """Unix time of an audit event's `ts` (ISO 8601, UTC); nan when it does not parse."""
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return float("nan")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def timeline(state: Path, server: str, since_wall: float) -> list[tuple[str, float]]:
    """(step, seconds after `since_wall`) of the first audit event of each TIMELINE_STEPS entry after it.

    Best effort, for the notes: a step whose event is not in events.jsonl is left out.
    """
    try:
        lines = (state / "events.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    found: dict[str, float] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        at = epoch(str(event.get("ts", "")))
        if not at >= since_wall or event.get("server", server) != server:
            continue
        for name, phase in TIMELINE_STEPS:
            label = f"{phase} (first probe ok)" if phase == "Running" else (phase or name)
            if event.get("event") == name and (phase is None or event.get("phase") == phase):
                found.setdefault(label, at - since_wall)
    return sorted(found.items(), key=lambda item: item[1])


def fmt_timeline(steps: Sequence[tuple[str, float]]) -> str:
    """`a +25 ms, b +28 ms (3 ms after a)`: each step's offset and its gap to the step before."""
    parts, previous = [], 0.0
    for label, offset in steps:
        parts.append(f"{label} +{offset * 1000:.0f} ms ({(offset - previous) * 1000:.0f})")
        previous = offset
    return ", ".join(parts) or "(no audit events)"


def launch_argv(state: Path, manifests: Path, name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """argv and env the controller would start `name` with (the install record + the manifest)."""
    from mcp_reconcile.install import launch_spec
    from mcp_reconcile.manifest import load_manifests
    from mcp_reconcile.store import StateDir

    store = StateDir(state)
    spec = load_manifests([manifests], key=store.hmac_key()).by_name[name]
    record = store.read_install(name)
    assert record, f"{name} is not installed in {state}"
    launch = launch_spec(spec, record, bench_env())
    return launch.argv, dict(launch.env)


# --- a raw stdio MCP client -----------------------------------------------------------------------------

class StdioPeer:
    """A raw MCP client over a server's stdio: newline-delimited JSON-RPC, answers matched by id.

    The leanest client there is, so latencies measured through it are the server's own.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> StdioPeer:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=bench_env(env), start_new_session=True, limit=16 * 2**20)
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            future = self._pending.pop(message.get("id"), None) if isinstance(message, dict) else None
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the server closed its stdout"))

    async def _send(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def request(self, method: str, params: Mapping[str, Any] | None = None, *,
                      timeout_s: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": dict(params or {})})
        return await asyncio.wait_for(future, timeout_s)

    async def initialize(self, *, timeout_s: float = COLD_START_TIMEOUT_S) -> dict[str, Any]:
        answer = await self.request("initialize", INIT_PARAMS, timeout_s=timeout_s)
        assert "result" in answer, f"initialize failed: {answer}"
        await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    async def close(self) -> float | None:
        """Close stdin and wait (bounded) for the exit; kill the group in any case.

        Returns seconds from stdin close to exit, or None when the server had to be killed.
        """
        assert self.process.stdin is not None
        started = time.perf_counter()
        self.process.stdin.close()
        took: float | None = None
        try:
            await asyncio.wait_for(self.process.wait(), SERVER_STOP_TIMEOUT_S)
            took = time.perf_counter() - started
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return took


async def _cold_start(argv: Sequence[str], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    peer = await StdioPeer.spawn(argv, env=env)
    try:
        await peer.initialize()
        return time.perf_counter() - started
    finally:
        await peer.close()


def cold_starts(argv: Sequence[str], env: Mapping[str, str], *, runs: int = 3) -> list[float]:
    """The server's own cold start (spawn -> initialize answered), spawned directly: no runner, no
    controller, a raw stdio client; `runs` times in a row."""
    return [asyncio.run(_cold_start(argv, env)) for _ in range(runs)]
