"""`dependsOn` gating of one pass (loop/gating.py), pure: which actions wait, for whom. What is Ready and what
runs are plain sets here; the loop passes the ledger's Ready condition and the run records."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_reconcile.loop.gating import Gate, gate
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import API_VERSION, KIND, Action, ActionKind, Origin, Plan, ServerSpec

KEY = b"state-dir-key-for-the-gating-tests"


def spec(name: str, **fields: Any) -> ServerSpec:
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
           "spec": {"source": {"npm": f"pkg-{name}@1.0.0"}, **fields}}
    return build_spec(doc, origin=Origin(f"/srv/manifests/{name}.yaml"), environ={}, key=KEY)


def plan_of(name: str, *kinds: ActionKind) -> Plan:
    return Plan(tuple(Action(kind, name, "test") for kind in kinds), ())


def kinds(g: Gate) -> list[str]:
    return [a.kind.value for a in g.plan.actions]


STORE, APP = spec("store"), spec("app", dependsOn=["store"])
START = (ActionKind.install, ActionKind.start, ActionKind.test)


@pytest.mark.parametrize(("ready", "desired", "expected_kinds", "waiting_for"), [
    pytest.param(set(), [STORE, APP], ["install"], ("store",), id="dependency not Ready: install only"),
    pytest.param({"store"}, [STORE, APP], ["install", "start", "test"], (), id="dependency Ready: all of it"),
    pytest.param(set(), [spec("store", desiredState="stopped"), APP], ["install", "start", "test"], (),
                 id="a dependency not meant to run is not waited for"),
])
def test_a_start_and_its_test_wait_for_dependencies_that_are_not_ready(
        ready: set[str], desired: list[ServerSpec], expected_kinds: list[str], waiting_for: tuple[str, ...]) -> None:
    specs = {s.name: s for s in desired}
    g = gate("app", plan_of("app", *START), specs, specs, is_ready=ready.__contains__, is_running=lambda n: True)
    assert (kinds(g), g.waiting_for, g.stop_first, g.held_back) == (expected_kinds, waiting_for, (), bool(waiting_for))


@pytest.mark.parametrize(("desired", "running", "expected_kinds", "stop_first"), [
    pytest.param({"app": spec("app", dependsOn=["store"], desiredState="stopped")}, {"app"}, [], ("app",),
                 id="a running dependent that stops too stops first"),
    pytest.param({}, {"app"}, [], ("app",), id="so does a removed one (its spec is still known)"),
    pytest.param({"app": spec("app", dependsOn=["store"], desiredState="stopped")}, set(), ["stop", "uninstall"], (),
                 id="a dependent that no longer runs holds nothing back"),
    pytest.param({"app": APP}, {"app"}, ["stop", "uninstall"], (),
                 id="a dependent meant to keep running is not stopped for it"),
])
def test_a_stop_waits_for_the_running_dependents_that_stop_too(
        desired: dict[str, ServerSpec], running: set[str], expected_kinds: list[str],
        stop_first: tuple[str, ...]) -> None:
    known = {"app": APP, **desired}
    g = gate("store", plan_of("store", ActionKind.stop, ActionKind.uninstall), desired, known,
             is_ready=lambda n: True, is_running=running.__contains__)
    assert (kinds(g), g.stop_first, g.waiting_for) == (expected_kinds, stop_first, ())
