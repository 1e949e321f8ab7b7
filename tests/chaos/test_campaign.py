"""The chaos campaign (issue 12): controller kill -9s in apply and run, server kills, fuzzed manifests, one
figures block.

    .venv/bin/python -m pytest tests/chaos/test_campaign.py -m campaign -s

Skipped unless selected (`-m campaign`, or MCPR_CHAOS_CAMPAIGN=1; tests/chaos/conftest.py), like the
benchmarks. Counts come from the environment (MCPR_CHAOS_CONTROLLER_KILLS, MCPR_CHAOS_SERVER_KILLS,
MCPR_CHAOS_FUZZ; defaults: the issue's 40, 300, 10,000) and MCPR_CHAOS_SEED picks the random kill points.
`test_a_short_campaign_keeps_every_invariant` is the few-iteration smoke version that the default suite runs.

Phases, on one state dir with four fault servers (a plain one, a forking one, and both again wrapped in
`sh -c`):
1. controller kills: each round edits some servers' env (so there is work to do), starts `apply` or `run`,
   kills it with SIGKILL at a random point of its measured duration, then runs `apply` to completion (the
   next pass) and checks the invariants;
2. server kills: under one `run`, each round SIGKILLs a process of every server (the server, or for the
   `sh -c` wrappers the shell or its child, at random) and waits until each is probed Ready again in a new
   process; restarts beyond the kills are counted, and the controller's fds and RSS are sampled first and
   last;
3. fuzzing: the hypothesis strategies of tests/unit/test_fuzz_inputs.py draw manifests and foreign configs;
   `validate` and `plan` run on each (in-process, through `cli.main`), under a hard stop.
Findings are counted, not raised at once, so one run prints every figure (campaignlib.py defines them); the
test then requires each figure to be 0.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import psutil
import pytest
from e2e_harness import CLI_TIMEOUT_S, WAIT_S, Harness, WaitTimeout, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


HERE = Path(__file__).resolve().parent
lib = _load("chaos_campaignlib", HERE / "campaignlib.py")
fuzz = _load("chaos_fuzz_inputs", HERE.parent / "unit" / "test_fuzz_inputs.py")

pytestmark = pytest.mark.chaos

CONTROLLER_KILLS = int(os.environ.get("MCPR_CHAOS_CONTROLLER_KILLS", "40"))
SERVER_KILLS = int(os.environ.get("MCPR_CHAOS_SERVER_KILLS", "300"))
FUZZED = int(os.environ.get("MCPR_CHAOS_FUZZ", "10000"))
SEED = int(os.environ.get("MCPR_CHAOS_SEED", str(int(time.time()))))
# Bound on the campaign's leftovers settling after a pass (a SIGKILLed group takes a moment to be reaped).
SETTLE_S = 15.0
# A round whose command ended before the kill is not a kill; give up after this many such rounds in a row.
MAX_MISSED = 20
# The invariants are checked after every this many server-kill rounds (and after the last).
CHECK_EVERY = 10
SPEC = {"health": {"intervalSeconds": 0.5, "timeoutSeconds": 5, "failureThreshold": 3},
        "restartBackoff": {"initialSeconds": 0.2, "maxSeconds": 1, "resetAfterSeconds": 0},
        "tests": {"gate": False}}


class Campaign:
    """One state dir under attack, and the tally of what went wrong."""

    def __init__(self, h: Harness, seed: int) -> None:
        self.h = h
        self.rng = random.Random(seed)
        self.figures = lib.Figures()
        self.runner_sids: set[int] = set()
        self.servers = {
            "plain": self.spec("well_behaved.py"),
            "forker": self.spec("forks_child.py"),
            "shplain": self.spec("well_behaved.py", wrapped=True),
            "shforker": self.spec("forks_child.py", wrapped=True),
        }

    def spec(self, filename: str, *, wrapped: bool = False) -> dict:  # type: ignore[type-arg]
        path = str(self.h.fault_server(filename))
        spec = {"source": {"path": path}, **SPEC}
        if wrapped:   # `; exit $?` keeps the shell as the parent (no exec of the last command)
            spec["command"] = ["sh", "-c", f"{shlex.quote(sys.executable)} {shlex.quote(path)}; exit $?"]
        return spec

    def write(self, round_: int, names: list[str]) -> None:
        for name in names:
            self.h.write_manifest(name, {**self.servers[name], "env": {"CHAOS_ROUND": str(round_)}})

    # the checks ------------------------------------------------------------------------------------------
    def records(self) -> dict[str, dict]:  # type: ignore[type-arg]
        records = lib.run_records(self.h.state_dir)
        self.runner_sids |= {r["runner_pid"] for r in records.values() if isinstance(r.get("runner_pid"), int)}
        return records

    def check(self, when: str) -> None:
        """After a pass: the process-table figures must settle to 0 within SETTLE_S; the state must be valid."""
        def observe() -> tuple[list[str], list[str], list[str]]:
            records = self.records()
            table = lib.processes([str(self.h.root)])
            runners = {p.pid for p in table if lib.runner_name(p)}
            self.runner_sids |= runners
            self.figures.done["runners"] = max(self.figures.done["runners"], len(runners))
            return lib.duplicates(table), lib.orphans(table, records, self.runner_sids), lib.zombies(table)

        try:
            found = wait_until(observe, lambda f: not any(f), timeout_s=SETTLE_S, what=f"a settled table {when}")
        except WaitTimeout:
            found = observe()
        for figure, findings in zip(("duplicates", "orphans", "zombies"), found, strict=True):
            self.figures.add(figure, (f"{when}: {f}" for f in findings))
        self.figures.add("invalid states", (f"{when}: {f}" for f in lib.invalid_states(self.h.state_dir)))

    def cli(self, *args: str, when: str) -> int | None:
        """A CLI command that must end within its bound (else a hang, killed) and exit 0."""
        try:
            result = self.h.cli(*args, expect=None)
        except subprocess.TimeoutExpired:
            self.figures.add("hangs", [f"{when}: {' '.join(args)} still running after {CLI_TIMEOUT_S:g} s"])
            return None
        if result.code != 0:
            self.figures.add("failed passes", [f"{when}: exit {result.code}: ...{(result.out + result.err)[-1200:]}"])
        return result.code

    def wait(self, observe: Callable, done: Callable, what: str) -> bool:  # type: ignore[type-arg]
        try:
            wait_until(observe, done, timeout_s=WAIT_S, what=what)
            return True
        except WaitTimeout as exc:
            self.figures.add("hangs", [str(exc)[:1500]])
            return False

    def all_ready(self, rows: dict, not_pids: dict | None = None) -> bool:  # type: ignore[type-arg]
        return all(self.h.probed_ready(rows, n, not_pid=(not_pids or {}).get(n)) for n in self.servers)

    # phase 1 ---------------------------------------------------------------------------------------------
    def controller_kills(self, count: int) -> None:
        """Kill points are drawn over the measured duration of an apply that restarts every server (apply
        rounds edit them all); a run's first pass does that work and more (x1.5), then idles."""
        names = list(self.servers)
        self.write(0, names)
        self.cli("apply", when="the first apply")
        self.check("after the first apply")
        self.write(-1, names)
        started = time.monotonic()
        self.cli("apply", when="the calibrating apply")
        duration = {"apply": time.monotonic() - started}
        duration["run"] = duration["apply"] * 1.5
        kills = missed = round_ = 0
        while kills < count and missed < MAX_MISSED:
            round_ += 1
            mode = ("apply", "run")[kills % 2]
            self.write(round_, names if mode == "apply" else self.rng.sample(names, self.rng.randint(1, len(names))))
            process = self.background(mode, round_)
            delay = self.rng.uniform(0.0, duration[mode])
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(delay)   # the random kill point (a fault injected, not a wait for a state)
            if process.poll() is None:
                process.kill()
                kills, missed = kills + 1, 0
                self.figures.done["controller kills"] += 1
                self.figures.done[f"{mode} kills"] += 1
            else:
                missed += 1
            process.wait(CLI_TIMEOUT_S)
            self.cli("apply", when=f"the pass after {mode} round {round_} (kill at {delay:.2f} s)")
            self.check(f"after {mode} round {round_} (kill at {delay:.2f} s)")

    def background(self, mode: str, round_: int) -> subprocess.Popen[bytes]:
        args = ("apply",) if mode == "apply" else ("run", "--monitor-duration", "900")
        out = self.h.root / f"killed-{round_}.out"
        with open(out, "wb") as fh:
            process = subprocess.Popen(self.h.argv(*args), env=self.h.env, stdout=fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=self.h.root)
        return process

    # phase 2 ---------------------------------------------------------------------------------------------
    def server_kills(self, count: int) -> None:
        since = self.h.events_count()
        controller = self.h.start_controller()
        self.h.wait_event("controller.ready", since=since)
        if not self.wait(self.h.rows, self.all_ready, "every server probed Ready under run"):
            return
        restarts = {n: r["restarts"] for n, r in self.h.rows().items()}
        kills: Counter[str] = Counter()
        first: tuple[int, float] | None = None
        round_ = 0
        while self.figures.done["server kills"] < count:
            round_ += 1
            records = self.records()
            old = {n: records[n]["server_pid"] for n in self.servers}
            for name in self.servers:
                self.kill_server(name, old[name])
                kills[name] += 1
            if not self.wait(self.h.rows, lambda rows, old=old: self.all_ready(rows, old),
                             f"every server probed Ready in a new process after kill round {round_}"):
                break
            first = first or lib.controller_usage(controller.pid)   # in its steady state: after a round
            if round_ % CHECK_EVERY == 0:
                self.check(f"after server-kill round {round_}")
        self.check(f"after the last server-kill round ({round_})")
        rows = self.h.rows()
        self.figures.add("extra restarts", [f"{n}: {rows[n]['restarts'] - restarts[n]} restarts for {kills[n]} kills"
                                            for n in self.servers if rows[n]["restarts"] - restarts[n] > kills[n]])
        last = lib.controller_usage(controller.pid)
        if first:
            self.figures.drift = {"open fds": (first[0], last[0]), "RSS MB": (first[1], last[1])}
        controller.stop()

    def kill_server(self, name: str, pid: int) -> None:
        """SIGKILL the server, or for an `sh -c` wrapper the shell or its child (chosen at random)."""
        target = pid
        if name.startswith("sh"):
            try:
                children = [c.pid for c in psutil.Process(pid).children()]
            except psutil.NoSuchProcess:
                children = []
            target = self.rng.choice([pid, *children])
            self.figures.done["sh kills"] += 1
        if "forker" in name:
            self.figures.done["forking kills"] += 1
        os.kill(target, signal.SIGKILL)
        self.figures.done["server kills"] += 1

    # phase 3 ---------------------------------------------------------------------------------------------
    def fuzzing(self, count: int) -> None:
        workdir = self.h.root / "fuzz"
        workdir.mkdir()
        os.mkfifo(workdir / "fifo")
        state = str(self.h.root / "fuzz-state")
        documents = st.one_of(st.tuples(st.just("m.yaml"), fuzz.manifest_texts().map(_utf8)),
                              st.tuples(st.just("raw.yaml"), fuzz.token_soup.map(_utf8)),
                              *(st.tuples(st.just(f"{fmt}.json"), fuzz.foreign_texts(fmt)) for fmt in fuzz.FOREIGN))

        @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(document=documents)
        def one(document: tuple[str, bytes]) -> None:
            path = workdir / document[0]
            path.write_bytes(document[1])
            self.figures.done["fuzzed"] += 1
            for argv in (["validate", "-f", str(path)], ["plan", "-f", str(path), "--state-dir", state]):
                self.fuzz_command(argv, document[1])

        with contextlib.chdir(workdir):
            one()

    def fuzz_command(self, argv: list[str], data: bytes) -> None:
        from mcp_reconcile import cli

        out, err = io.StringIO(), io.StringIO()
        try:
            with fuzz.hard_stop(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(argv)
        except TimeoutError:
            self.figures.add("hangs", [f"{argv[0]} on {data[:300]!r}"])
            return
        except BaseException as exc:   # SystemExit included: a command must return its code
            self.figures.add("tracebacks", [f"{argv[0]} on {data[:300]!r}:\n{traceback.format_exc()[-1200:]}"])
            if isinstance(exc, KeyboardInterrupt):
                raise
            return
        output = out.getvalue() + err.getvalue()
        self.figures.add("tracebacks", lib.tracebacks({f"{argv[0]} on {data[:300]!r}": output}))
        if code not in (0, 1, 2):
            self.figures.add("failed passes", [f"{argv[0]} exit {code} on {data[:300]!r}"])

    # the end ---------------------------------------------------------------------------------------------
    def scan_outputs(self) -> None:
        texts = {f"$ {' '.join(r.argv[3:5])} #{i}": r.out + r.err for i, r in enumerate(self.h.outputs)}
        texts |= {p.name: p.read_text(errors="replace") for p in self.h.root.glob("killed-*.out")}
        texts |= {c.stderr_path.name: c.stderr() for c in self.h.controllers}
        texts |= lib.log_texts(self.h.state_dir)
        self.figures.add("tracebacks", lib.tracebacks(texts))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def campaign(h: Harness, *, controller_kills: int, server_kills: int, fuzzed: int) -> None:
    started = time.monotonic()
    c = Campaign(h, SEED)
    c.controller_kills(controller_kills)
    c.server_kills(server_kills)
    c.fuzzing(fuzzed)
    c.scan_outputs()
    print(f"\n{c.figures.block(time.monotonic() - started)}\n  seed: MCPR_CHAOS_SEED={SEED}")
    assert c.figures.done["controller kills"] >= controller_kills, c.figures.block(0)
    assert c.figures.done["server kills"] >= server_kills and c.figures.done["fuzzed"] >= fuzzed, c.figures.block(0)
    assert not c.figures.failures(), c.figures.failures()
    assert not c.figures.counts["failed passes"], c.figures.details["failed passes"]


@pytest.mark.campaign
@pytest.mark.timeout(6 * 3600)
def test_the_chaos_campaign_finds_no_duplicate_orphan_zombie_invalid_state_traceback_or_hang(local: Harness) -> None:
    campaign(local, controller_kills=CONTROLLER_KILLS, server_kills=SERVER_KILLS, fuzzed=FUZZED)


def test_a_short_campaign_keeps_every_invariant(local: Harness) -> None:
    campaign(local, controller_kills=2, server_kills=4, fuzzed=20)
