"""`apply` progress: one row per server in flight (action, phase, elapsed) on a TTY, one plain line per action
start off it; the starts are seen at the Effects seam (a recording fake here), the ends are the outcomes."""

from __future__ import annotations

import asyncio
from io import StringIO
from types import SimpleNamespace

from rich.console import Console

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import Action, ActionKind
from mcp_reconcile.progress import ApplyProgress


class RecordingEffects:
    """Effects that only record what they were asked to do (the seam apply_plan calls)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.spawner = "passed through"

    async def install(self, spec: SimpleNamespace) -> str:
        self.calls.append(("install", spec.name))
        return "installed 1.0"

    async def replace(self, spec: SimpleNamespace) -> None:
        self.calls.append(("replace", spec.name))

    async def stop(self, name: str) -> str:
        self.calls.append(("stop", name))
        return "stopped"

    async def start(self, spec: SimpleNamespace) -> str:
        self.calls.append(("start", spec.name))
        return "serving"


ACTIONS = [Action(ActionKind.install, "py", "new server"), Action(ActionKind.restart, "time", "env.TZ changed"),
           Action(ActionKind.start, "py", "new server")]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_tty_each_action_start_is_one_line_and_its_end_the_outcome_line() -> None:
    lines: list[str] = []
    view = ApplyProgress(ACTIONS, live=False, report=lambda o: lines.append(f"end {o.action.kind.value} "
                                                                              f"{o.action.server}"), say=lines.append)
    inner = RecordingEffects()
    effects = view.tracked(inner)

    async def restart_time() -> None:   # what apply.py does for a restart without a swap: replace, stop, start
        if await effects.replace(SimpleNamespace(name="time")) is None:
            await effects.stop("time")
            await effects.start(SimpleNamespace(name="time"))

    asyncio.run(effects.install(SimpleNamespace(name="py")))
    view.on_outcome(Outcome(ACTIONS[0], True, detail="installed 1.0"))
    asyncio.run(restart_time())
    view.on_outcome(Outcome(ACTIONS[1], True))
    view.on_outcome(Outcome(ACTIONS[2], False, skipped=True, error="dependency failed"))

    assert lines == ["  ...    install   py: installing", "end install py", "  ...    restart   time: swapping",
                     "end restart time", "end start py"]
    assert inner.calls == [("install", "py"), ("replace", "time"), ("stop", "time"), ("start", "time")]
    assert effects.spawner == "passed through" and view.done == 3 and not view.in_flight


def test_on_a_tty_the_live_rows_show_action_phase_and_elapsed_on_80_columns() -> None:
    clock = Clock()
    view = ApplyProgress(ACTIONS, live=False, report=lambda o: None, say=lambda line: None, clock=clock)
    view.began("py", "install")
    clock.now += 1.5
    view.began("time", "replace")
    view.began("time", "stop")
    clock.now += 2.0
    out = StringIO()
    Console(file=out, width=80, color_system=None).print(view.renderable())

    lines = out.getvalue().splitlines()
    assert "applying: 0/3 done, 2 in flight" in lines[0]
    assert lines[1].split() == ["SERVER", "ACTION", "PHASE", "ELAPSED"]
    assert lines[2].split() == ["py", "install", "installing", "3.5s"]
    assert lines[3].split() == ["time", "restart", "stopping", "2.0s"]
    assert "{" not in out.getvalue()
