"""`apply.apply_plan` against a recording fake world (STYLE §5): a real plan of new servers, one pass, and
the recorded effects and outcomes compared with the expected lists. A failed install isolates its server
(and the servers that depend on it); every other server is installed, started and tested as planned."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

import pytest
from structlog.testing import capture_logs

from mcp_reconcile.apply import Limits, Outcome, apply_plan
from mcp_reconcile.errors import PermanentError
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import API_VERSION, KIND, Observed, Origin, Plan, ServerSpec
from mcp_reconcile.plan import plan

pytestmark = pytest.mark.anyio

KEY = b"state-dir-key-for-the-apply-tests"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def spec(name: str, **fields: Any) -> ServerSpec:
    """A ServerSpec from a minimal manifest document, gated by tests so that the plan tests it too."""
    body = {"source": {"npm": f"pkg-{name}@1.0.0"}, "tests": {"gate": True}, **fields}
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}
    return build_spec(doc, origin=Origin(f"/srv/manifests/{name}.yaml"), environ={}, key=KEY)


class RecordingEffects:
    """The Effects seam as a list of `(effect, server)`; installs of `failing` servers raise PermanentError
    the way the npm installer does (naming the server, the action and the package)."""

    def __init__(self, *, failing: Iterable[str] = ()) -> None:
        self.failing = set(failing)
        self.calls: list[tuple[str, str]] = []

    async def install(self, spec: ServerSpec) -> str:
        self.calls.append(("install", spec.name))
        await asyncio.sleep(0)  # like a real install, it yields: the other installs begin before it ends
        if spec.name in self.failing:
            raise PermanentError(spec.name, "install", f"npm: {spec.source.ref} not found in the registry (E404)")
        return f"installed {spec.source.ref}"

    async def uninstall(self, name: str) -> str:
        self.calls.append(("uninstall", name))
        return "uninstalled"

    async def start(self, spec: ServerSpec) -> str:
        self.calls.append(("start", spec.name))
        return "started"

    async def stop(self, name: str) -> str:
        self.calls.append(("stop", name))
        return "stopped"

    async def replace(self, spec: ServerSpec) -> str | None:
        return None   # no runner to swap in: restarts stop and start

    async def test(self, spec: ServerSpec) -> str:
        self.calls.append(("test", spec.name))
        return "passed"


def fresh_plan(specs: list[ServerSpec]) -> tuple[Plan, dict[str, ServerSpec]]:
    """The plan of an empty state dir for `specs`: what `apply` runs on a first apply."""
    desired = {s.name: s for s in specs}
    return plan(desired, Observed(MappingProxyType({})), now=0.0), desired


def summary(outcomes: list[Outcome]) -> list[tuple[str, str, str]]:
    """One line per outcome as `apply` prints it: ok / skip / FAILED, the action, the server."""
    return [("ok" if o.ok else "skip" if o.skipped else "FAILED", o.action.kind.value, o.action.server)
            for o in outcomes]


async def test_a_failed_install_fails_only_its_server_and_the_others_are_installed_started_and_tested() -> None:
    the_plan, desired = fresh_plan([spec("broken"), spec("fine")])
    effects = RecordingEffects(failing={"broken"})
    reported: list[Outcome] = []

    with capture_logs() as logs:
        outcomes = await apply_plan(the_plan, desired, effects, on_outcome=reported.append)

    assert effects.calls == [("install", "broken"), ("install", "fine"), ("start", "fine"), ("test", "fine")]
    assert summary(outcomes) == [
        ("FAILED", "install", "broken"), ("ok", "install", "fine"),
        ("skip", "start", "broken"), ("ok", "start", "fine"),
        ("skip", "test", "broken"), ("ok", "test", "fine")]
    assert [o.action for o in outcomes] == list(the_plan.actions), "one outcome per planned action, in plan order"
    assert sorted(reported, key=outcomes.index) == outcomes, "every outcome is reported as it happens"
    assert reported.index(outcomes[0]) < reported.index(outcomes[2]), "a server's skip follows its failure"

    by_action = {(o.action.kind.value, o.action.server): o for o in outcomes}
    failed = by_action["install", "broken"]
    assert failed.error == "broken: install failed: npm: pkg-broken@1.0.0 not found in the registry (E404)"
    assert not failed.skipped
    assert by_action["start", "broken"].error == "skipped: an earlier action on broken failed"
    assert by_action["test", "broken"].error == "skipped: an earlier action on broken failed"
    assert by_action["install", "fine"].detail == "installed pkg-fine@1.0.0"
    assert all(o.error is None for o in outcomes if o.action.server == "fine")

    failures = [e for e in logs if e["event"] == "action.failed"]
    assert [(e["server"], e["action"], e["error_type"]) for e in failures] == [("broken", "install", "PermanentError")]
    assert failures[0]["error"] == failed.error


async def test_a_server_whose_dependency_failed_to_install_is_not_started() -> None:
    the_plan, desired = fresh_plan([spec("db"), spec("web", dependsOn=["db"]), spec("fine")])
    effects = RecordingEffects(failing={"db"})

    outcomes = await apply_plan(the_plan, desired, effects)

    assert effects.calls == [("install", "db"), ("install", "fine"), ("install", "web"),
                             ("start", "fine"), ("test", "fine")]
    assert ("start", "web") not in effects.calls
    assert summary(outcomes) == [
        ("FAILED", "install", "db"), ("ok", "install", "fine"), ("ok", "install", "web"),
        ("skip", "start", "db"), ("ok", "start", "fine"), ("skip", "start", "web"),
        ("skip", "test", "db"), ("ok", "test", "fine"), ("skip", "test", "web")]
    errors = {(o.action.kind.value, o.action.server): o.error for o in outcomes if not o.ok}
    assert errors["start", "web"] == "skipped: dependency db failed"
    assert errors["test", "web"] == "skipped: dependency db failed"   # the root cause, not "an earlier action"
    assert errors["install", "db"] == "db: install failed: npm: pkg-db@1.0.0 not found in the registry (E404)"


async def test_outcomes_come_back_in_plan_order_whatever_order_the_installs_finish_in() -> None:
    the_plan, desired = fresh_plan([spec("a"), spec("b")])
    b_done = asyncio.Event()

    class LateFirst(RecordingEffects):
        async def install(self, spec: ServerSpec) -> str:
            if spec.name == "a":
                await b_done.wait()   # a's install ends only after b's
            detail = await super().install(spec)
            if spec.name == "b":
                b_done.set()
            return detail

    finished: list[str] = []
    outcomes = await asyncio.wait_for(apply_plan(the_plan, desired, LateFirst(), on_outcome=lambda o: finished.append(
        o.action.server) if o.action.kind.value == "install" else None), 10)

    assert finished == ["b", "a"]   # progress sees them as they finish
    assert [(o.action.kind.value, o.action.server) for o in outcomes] == [
        (a.kind.value, a.server) for a in the_plan.actions]


async def test_a_failing_install_does_not_hold_back_another_servers_start() -> None:
    """The failing install (a package manager retrying with backoff) ends only once the healthy server has
    started: applied in stages (every install, then every start), this plan could never finish."""
    the_plan, desired = fresh_plan([spec("retrying"), spec("healthy")])
    healthy_started = asyncio.Event()

    class SlowFailure(RecordingEffects):
        async def install(self, spec: ServerSpec) -> str:
            if spec.name == "retrying":
                await healthy_started.wait()   # its retries are still under way when the other one starts
            return await super().install(spec)

        async def start(self, spec: ServerSpec) -> str:
            detail = await super().start(spec)
            healthy_started.set()
            return detail

    effects = SlowFailure(failing={"retrying"})
    outcomes = await asyncio.wait_for(apply_plan(the_plan, desired, effects), 10)

    assert effects.calls.index(("start", "healthy")) < effects.calls.index(("install", "retrying"))
    assert summary(outcomes) == [
        ("ok", "install", "healthy"), ("FAILED", "install", "retrying"),
        ("ok", "start", "healthy"), ("skip", "start", "retrying"),
        ("ok", "test", "healthy"), ("skip", "test", "retrying")]


async def test_a_dependents_start_waits_for_its_dependencys_start_not_for_other_installs() -> None:
    the_plan, desired = fresh_plan([spec("db"), spec("web", dependsOn=["db"]), spec("slow")])
    web_started = asyncio.Event()

    class Slow(RecordingEffects):
        async def install(self, spec: ServerSpec) -> str:
            if spec.name == "slow":
                await web_started.wait()
            return await super().install(spec)

        async def start(self, spec: ServerSpec) -> str:
            detail = await super().start(spec)
            if spec.name == "web":
                web_started.set()
            return detail

    effects = Slow()
    await asyncio.wait_for(apply_plan(the_plan, desired, effects), 10)

    starts = [server for effect, server in effects.calls if effect == "start"]
    assert starts == ["db", "web", "slow"]


async def test_a_retrying_install_gives_its_slot_back_while_it_waits_between_tries() -> None:
    """With one install slot (`--sequential`), another server installs while the first one waits to retry:
    its package manager's backoff sleep must not hold the slot (slots.py, install/retry.py)."""
    from mcp_reconcile.errors import TransientError
    from mcp_reconcile.install.retry import retrying
    from mcp_reconcile.slots import sleep_between_tries

    the_plan, desired = fresh_plan([spec("flaky"), spec("steady")])
    steady_installed = asyncio.Event()
    tries: list[str] = []

    async def wait_for_steady(_seconds: float) -> None:
        await steady_installed.wait()   # the backoff ends only once the other install went through

    class Flaky(RecordingEffects):
        async def install(self, spec: ServerSpec) -> str:
            if spec.name != "flaky":
                detail = await super().install(spec)
                steady_installed.set()
                return detail

            async def one_try() -> str:
                tries.append("flaky")
                if len(tries) == 1:
                    raise TransientError("flaky", "install", "npm: ECONNRESET")
                return "installed after a retry"

            return await retrying(one_try, server="flaky", source="npm:pkg-flaky@1.0.0",
                                  sleep=lambda s: sleep_between_tries(s, sleep=wait_for_steady))

    effects = Flaky()
    with capture_logs():
        outcomes = await asyncio.wait_for(apply_plan(the_plan, desired, effects, limits=Limits(installs=1)), 10)

    assert tries == ["flaky", "flaky"]
    assert all(o.ok for o in outcomes), summary(outcomes)
