"""The planner, table-driven (STYLE §5): desired + observed -> the action lines `plan` prints.

Specs are built by `manifest.build_spec` from small dicts, so digests and generations are real; observed
servers are written by hand from an "old" spec (what was applied). The law at the end: apply a plan to a
fake world, plan again, and there is nothing left to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest

from mcp_reconcile import graph, render
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import (
    API_VERSION,
    KIND,
    ActionKind,
    Observed,
    ObservedServer,
    Origin,
    Plan,
    ServerSpec,
)
from mcp_reconcile.plan import plan

KEY = b"state-dir-key-for-the-plan-tests"
SECRET = "sk-test-SECRET-12345"
OLD_SECRET = "sk-test-OLDSECRET-00000"
ENVIRON = {"API_KEY": SECRET}
NOW = 1000.0


# --- building specs and observations ----------------------------------------------------------------------

def spec(name: str = "a", *, environ: Mapping[str, str] = ENVIRON, **fields: Any) -> ServerSpec:
    """A ServerSpec from a minimal manifest document; `fields` go into `spec:` (source defaults to npm)."""
    body = {"source": {"npm": f"pkg-{name}@1.0.0"}, **fields}
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}
    return build_spec(doc, origin=Origin(f"/srv/manifests/{name}.yaml"), environ=environ, key=KEY)


def installed(applied: ServerSpec, **extra: Any) -> ObservedServer:
    """A server whose install record holds `applied`'s install generation and digests."""
    return ObservedServer(name=applied.name, installed=True, install_generation=applied.install_generation,
                          install_digests=applied.digests, install_source=str(applied.source), **extra)


def running(applied: ServerSpec, **extra: Any) -> ObservedServer:
    """Installed and running with a verified runner that was started for `applied`."""
    return installed(applied, **{"running": True, "runtime_generation": applied.runtime_generation,
                                 "runtime_digests": applied.digests, "healthy": True, **extra})


def lines(the_plan: Plan) -> list[str]:
    """The plan as `plan` prints it: action lines, then one line per deferred server."""
    return ([render.action_line(a) for a in the_plan.actions]
            + [f"  . {d.server}  ({d.reason})" for d in the_plan.deferred])


def run_plan(desired: list[ServerSpec], observed: list[ObservedServer], *, protected: set[str] | None = None
             ) -> Plan:
    return plan({s.name: s for s in desired}, Observed(MappingProxyType({o.name: o for o in observed})),
                now=NOW, protected=protected or set())


# --- the table --------------------------------------------------------------------------------------------

A = spec("a")
A_TZ_PARIS = spec("a", env={"TZ": "Europe/Paris"})
A_TZ_UTC = spec("a", env={"TZ": "UTC"})
A_SECRET_OLD = spec("a", env={"API_KEY": "${API_KEY}"}, environ={"API_KEY": OLD_SECRET})
A_SECRET_NEW = spec("a", env={"API_KEY": "${API_KEY}"})
A_V2 = spec("a", source={"npm": "pkg-a@2.0.0"})
A_ARGS = spec("a", args=["--verbose"])
A_STOPPED = spec("a", desiredState="stopped")
A_INSTALLED = spec("a", desiredState="installed")
A_ABSENT = spec("a", desiredState="absent")
A_GATED = spec("a", tests={"gate": True})
A_GATED_ARGS = spec("a", args=["--verbose"], tests={"gate": True})
A_ON_FAILURE = spec("a", restartPolicy="OnFailure")
A_NEVER = spec("a", restartPolicy="Never")
# "app" depends on "store": alphabetical order would be wrong both ways.
APP = spec("app", dependsOn=["store"])
STORE = spec("store")
APP_STOPPED = spec("app", dependsOn=["store"], desiredState="stopped")
STORE_STOPPED = spec("store", desiredState="stopped")
APP_ABSENT = spec("app", dependsOn=["store"], desiredState="absent")
STORE_ABSENT = spec("store", desiredState="absent")

NEW_A = ["  + install   a  (new server: npm:pkg-a@1.0.0)", "  + start     a  (new server)"]

CASES = [
    pytest.param([A], [], NEW_A, id="a new server is installed and started"),
    pytest.param([A], [running(A)], [], id="a server that matches its manifest needs nothing"),
    pytest.param([A_TZ_PARIS], [running(A_TZ_UTC)], ["  ~ restart   a  (changed: env.TZ)"],
                 id="a changed env value restarts the server and names env.X"),
    pytest.param([A_SECRET_NEW], [running(A_SECRET_OLD)], ["  ~ restart   a  (changed: env.API_KEY (sensitive))"],
                 id="a rotated secret restarts the server and is shown as sensitive"),
    pytest.param([A_V2], [running(A)],
                 ["  ~ upgrade   a  (changed: source: npm:pkg-a@1.0.0 -> npm:pkg-a@2.0.0)",
                  "  ~ restart   a  (changed: source)"],
                 id="a changed source upgrades and then restarts"),
    pytest.param([A_V2], [installed(A)],
                 ["  ~ upgrade   a  (changed: source: npm:pkg-a@1.0.0 -> npm:pkg-a@2.0.0)",
                  "  + start     a  (not running)"],
                 id="a changed source of a stopped server upgrades and starts it"),
    pytest.param([A_ARGS], [running(A)], ["  ~ restart   a  (changed: args)"],
                 id="changed args restart the server"),
    pytest.param([A], [installed(A)], ["  + start     a  (not running)"],
                 id="running wanted and installed only starts it"),
    pytest.param([A_STOPPED], [running(A_STOPPED)], ["  - stop      a  (desiredState is stopped)"],
                 id="stopped wanted and running stops it"),
    pytest.param([A_STOPPED], [installed(A_STOPPED)], [], id="stopped wanted and installed needs nothing"),
    pytest.param([A_STOPPED], [], ["  + install   a  (new server: npm:pkg-a@1.0.0)"],
                 id="stopped wanted and unknown installs without starting"),
    pytest.param([A_INSTALLED], [running(A_INSTALLED)], ["  - stop      a  (desiredState is installed)"],
                 id="installed wanted and running stops it"),
    pytest.param([A_INSTALLED], [], ["  + install   a  (new server: npm:pkg-a@1.0.0)"],
                 id="installed wanted and unknown installs without starting"),
    pytest.param([A_INSTALLED], [installed(A_INSTALLED)], [], id="installed wanted and installed needs nothing"),
    pytest.param([A_ABSENT], [running(A_ABSENT)],
                 ["  - stop      a  (desiredState is absent)", "  - uninstall a  (desiredState is absent)"],
                 id="absent wanted and running stops before it uninstalls"),
    pytest.param([A_ABSENT], [installed(A_ABSENT)], ["  - uninstall a  (desiredState is absent)"],
                 id="absent wanted and installed uninstalls"),
    pytest.param([A_ABSENT], [], [], id="absent wanted and unknown needs nothing"),
    pytest.param([], [running(A)],
                 ["  - stop      a  (removed from manifests)", "  - uninstall a  (removed from manifests)"],
                 id="a server removed from the manifests is stopped before it is uninstalled"),
    pytest.param([], [installed(A)], ["  - uninstall a  (removed from manifests)"],
                 id="a removed server that is not running is only uninstalled"),
    pytest.param([APP, STORE], [],
                 ["  + install   store  (new server: npm:pkg-store@1.0.0)",
                  "  + install   app  (new server: npm:pkg-app@1.0.0)",
                  "  + start     store  (new server)",
                  "  + start     app  (new server)"],
                 id="dependencies start in an earlier wave than their dependents"),
    pytest.param([APP_STOPPED, STORE_STOPPED], [running(APP), running(STORE)],
                 ["  - stop      app  (desiredState is stopped)", "  - stop      store  (desiredState is stopped)"],
                 id="dependents stop before their dependencies"),
    pytest.param([APP_ABSENT, STORE_ABSENT], [running(APP), running(STORE)],
                 ["  - stop      app  (desiredState is absent)", "  - stop      store  (desiredState is absent)",
                  "  - uninstall app  (desiredState is absent)", "  - uninstall store  (desiredState is absent)"],
                 id="absent dependents stop and uninstall before their dependencies"),
    pytest.param([A], [installed(A, stale_run_record=True, stale_reason="runner pid 4242 is gone")],
                 ["  + start     a  (runner record is stale (runner pid 4242 is gone))"],
                 id="a stale runner record starts the server and says why"),
    pytest.param([A], [running(A, consecutive_probe_failures=3, healthy=False)],
                 ["  ~ restart   a  (unhealthy: 3 consecutive failed probes)"],
                 id="a server failing failureThreshold probes in a row is restarted"),
    pytest.param([A], [running(A, consecutive_probe_failures=2, healthy=False)], [],
                 id="a server below failureThreshold failed probes is left running"),
    pytest.param([A], [installed(A, last_exit_code=1, backoff_until=NOW + 5)],
                 ["  . a  (exited with code 1; CrashLoopBackOff, retry in 5.0s)"],
                 id="a crashing server in backoff is deferred, not started"),
    pytest.param([A], [installed(A, last_exit_code=1, backoff_until=NOW - 1)],
                 ["  + start     a  (exited with code 1)"],
                 id="a crashing server whose backoff has passed is started"),
    pytest.param([A], [installed(A, last_exit_code=0)], ["  + start     a  (exited with code 0)"],
                 id="restartPolicy Always restarts after a clean exit"),
    pytest.param([A_ON_FAILURE], [installed(A_ON_FAILURE, last_exit_code=0)], [],
                 id="restartPolicy OnFailure leaves a clean exit alone"),
    pytest.param([A_ON_FAILURE], [installed(A_ON_FAILURE, last_exit_code=1)], ["  + start     a  (exited with code 1)"],
                 id="restartPolicy OnFailure restarts after exit code 1"),
    pytest.param([A_NEVER], [installed(A_NEVER, last_exit_code=1)], [],
                 id="restartPolicy Never leaves a failed exit alone"),
    pytest.param([A_NEVER], [installed(A_NEVER, last_exit_code=0)], [],
                 id="restartPolicy Never leaves a clean exit alone"),
    pytest.param([A_GATED], [],
                 [*NEW_A, "  ? test      a  (tests.gate: the new generation must pass before Ready)"],
                 id="tests.gate adds a test after the first start"),
    pytest.param([A_GATED_ARGS], [running(A_GATED, tested_generation=A_GATED.runtime_generation)],
                 ["  ~ restart   a  (changed: args)",
                  "  ? test      a  (tests.gate: the new generation must pass before Ready)"],
                 id="tests.gate adds a test after a restart"),
    pytest.param([A_GATED], [running(A_GATED, tested_generation=A_GATED.runtime_generation)], [],
                 id="tests.gate with the running generation already tested needs nothing"),
    pytest.param([A_GATED], [running(A_GATED)],
                 ["  ? test      a  (tests.gate: the new generation must pass before Ready)"],
                 id="tests.gate tests a running generation that was never tested"),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), CASES)
def test_plan_prints(desired: list[ServerSpec], observed: list[ObservedServer], expected: list[str]) -> None:
    assert lines(run_plan(desired, observed)) == expected


@pytest.mark.parametrize(("observed", "unhealthy"), [
    pytest.param(running(A, consecutive_probe_failures=3, healthy=False), True, id="failed probes"),
    pytest.param(running(A_ARGS), False, id="a changed spec"),
])
def test_a_restart_says_in_a_typed_field_whether_failed_probes_caused_it(observed: ObservedServer,
                                                                         unhealthy: bool) -> None:
    """The loop backs off unhealthy restarts like crashes; it reads this flag, never the reason text."""
    (restart,) = run_plan([A], [observed]).actions
    assert (restart.kind.value, restart.unhealthy) == ("restart", unhealthy)


# --- the law: apply, plan again, nothing left -------------------------------------------------------------

def apply_to_world(the_plan: Plan, desired: list[ServerSpec], observed: list[ObservedServer]
                   ) -> list[ObservedServer]:
    """What a successful apply leaves behind, as the records would show it."""
    specs = {s.name: s for s in desired}
    world = {o.name: o for o in observed}
    for action in the_plan.actions:
        name = action.server
        obs = world.get(name, ObservedServer(name=name))
        if action.kind in (ActionKind.install, ActionKind.upgrade):
            s = specs[name]
            world[name] = replace(obs, installed=True, install_generation=s.install_generation,
                                  install_digests=s.digests, install_source=str(s.source))
        elif action.kind in (ActionKind.start, ActionKind.restart):
            s = specs[name]
            world[name] = replace(obs, running=True, stale_run_record=False, stale_reason="",
                                  runtime_generation=s.runtime_generation, runtime_digests=s.digests,
                                  last_exit_code=None, consecutive_probe_failures=0, healthy=True,
                                  backoff_until=None)
        elif action.kind is ActionKind.stop:
            world[name] = replace(obs, running=False, runtime_generation=None,
                                  runtime_digests=MappingProxyType({}), last_exit_code=None, healthy=None)
        elif action.kind is ActionKind.uninstall:
            del world[name]
        elif action.kind is ActionKind.test:
            world[name] = replace(obs, tested_generation=specs[name].runtime_generation)
    return list(world.values())


@pytest.mark.parametrize(("desired", "observed", "expected"), CASES)
def test_applying_a_plan_and_planning_again_gives_no_changes(
        desired: list[ServerSpec], observed: list[ObservedServer], expected: list[str]) -> None:
    first = run_plan(desired, observed)
    second = run_plan(desired, apply_to_world(first, desired, observed))
    assert second.actions == ()
    assert render.summary_line(second) == "No changes. Servers match the manifests."


# --- beyond the table -------------------------------------------------------------------------------------

def test_a_dependency_cycle_is_refused_naming_the_cycle() -> None:
    desired = [spec("a", dependsOn=["b"]), spec("b", dependsOn=["c"]), spec("c", dependsOn=["a"])]
    with pytest.raises(graph.DependencyCycle) as caught:
        run_plan(desired, [])
    assert caught.value.cycle == ["a", "b", "c", "a"]
    assert str(caught.value) == "dependsOn cycle: a -> b -> c -> a"


def test_start_waves_count_dependency_depth() -> None:
    desired = [spec("web", dependsOn=["api"]), spec("api", dependsOn=["db", "cache"]), spec("db"), spec("cache")]
    starts = [(a.server, a.wave) for a in run_plan(desired, []).actions if a.kind is ActionKind.start]
    assert starts == [("cache", 0), ("db", 0), ("api", 1), ("web", 2)]


def test_protected_servers_are_left_untouched() -> None:
    """A server whose manifest is broken keeps its last good state: no restart, and no removal."""
    observed = [running(A_TZ_UTC), running(spec("b"))]
    assert run_plan([A_TZ_PARIS], observed, protected={"a", "b"}).actions == ()
    assert lines(run_plan([A_TZ_PARIS], observed, protected={"b"})) == ["  ~ restart   a  (changed: env.TZ)"]


def test_removed_servers_stop_before_declared_ones() -> None:
    """Nothing declared can depend on a removed server, so its stop goes first."""
    observed = [running(A), running(STORE_STOPPED)]
    assert lines(run_plan([STORE_STOPPED], observed)) == [
        "  - stop      a  (removed from manifests)", "  - stop      store  (desiredState is stopped)",
        "  - uninstall a  (removed from manifests)"]


def test_a_rotated_secret_never_reaches_the_plan_text_or_json() -> None:
    the_plan = run_plan([A_SECRET_NEW], [running(A_SECRET_OLD)])
    text, as_json = render.plan_text(the_plan), render.plan_json(the_plan)
    assert "env.API_KEY (sensitive)" in text
    assert '"env.API_KEY"' in as_json
    for secret in (SECRET, OLD_SECRET):
        assert secret not in text
        assert secret not in as_json


def test_a_secret_marked_by_secret_env_is_shown_as_sensitive() -> None:
    old = spec("a", env={"TOKEN": "plain-old"}, secretEnv=["TOKEN"])
    new = spec("a", env={"TOKEN": "plain-new"}, secretEnv=["TOKEN"])
    assert lines(run_plan([new], [running(old)])) == ["  ~ restart   a  (changed: env.TOKEN (sensitive))"]


def test_a_deferred_server_is_listed_as_waiting_and_the_plan_has_no_changes() -> None:
    the_plan = run_plan([A], [installed(A, last_exit_code=1, backoff_until=NOW + 5)])
    assert the_plan.deferred[0].until == NOW + 5
    assert not the_plan.has_changes
    assert "Waiting:\n  . a  (exited with code 1; CrashLoopBackOff, retry in 5.0s)" in render.plan_text(the_plan)


def test_the_summary_counts_each_kind() -> None:
    the_plan = run_plan([A_GATED, spec("b"), spec("c", source={"npm": "pkg-c@2.0.0"})],
                        [running(spec("c")), running(spec("d"))])
    assert render.summary_line(the_plan) == (
        "Plan: 2 to install, 1 to upgrade, 2 to start, 1 to restart, 1 to test, 1 to stop, 1 to remove.")


@pytest.mark.parametrize(("policy", "exit_code"), [("Never", 1), ("OnFailure", 0)])
def test_a_server_its_restart_policy_will_not_restart_is_not_shown_as_retrying(policy: str, exit_code: int) -> None:
    never = spec("a", restartPolicy=policy)
    the_plan = run_plan([never], [installed(never, last_exit_code=exit_code, backoff_until=NOW + 5)])
    assert the_plan.actions == ()
    assert the_plan.deferred == ()
