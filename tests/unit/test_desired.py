"""Last good state (SPEC §5) at the desired/plan level: a manifest file with any problem is ignored as a whole.

Every server the file named before (recorded in the ledger) or names now is left as it is: neither removed
nor changed by the edits of the file's valid documents. Only a valid file that no longer names a server
removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

from mcp_reconcile import render
from mcp_reconcile.desired import Desired, load_desired
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.model import Observed, ObservedServer
from mcp_reconcile.plan import plan
from mcp_reconcile.store import StateDir

WriteManifest = Callable[..., Path]


def server(name: str, extra: str = "") -> str:
    """One manifest document (with a leading `---`); `extra` is one more line of `spec:`."""
    return (f"---\napiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n"
            f"spec:\n  source: {{npm: \"pkg-{name}@1.0.0\"}}\n" + (f"  {extra}\n" if extra else ""))


def load(path: Path, state: StateDir, ledger: Ledger) -> Desired:
    return load_desired([str(path)], state, create_key=True, ledger=ledger)


def plan_lines(desired: Desired, *, running: dict[str, str]) -> list[str]:
    """The plan against servers that run as applied (name -> the runtime generation they were started for)."""
    specs = desired.load.by_name
    observed = Observed(MappingProxyType({
        name: ObservedServer(name=name, installed=True, running=True, healthy=True, runtime_generation=generation,
                             install_generation=specs[name].install_generation if name in specs else None,
                             install_digests=specs[name].digests if name in specs else MappingProxyType({}),
                             install_source=str(specs[name].source) if name in specs else None)
        for name, generation in running.items()}))
    return [render.action_line(a) for a in plan(specs, observed, now=0.0, protected=desired.protected).actions]


@pytest.fixture
def applied(write_manifest: WriteManifest, state_dir: StateDir) -> tuple[Path, Ledger, dict[str, str]]:
    """pair.yaml with b1 and b2, loaded once (the ledger records their file) and running as loaded."""
    path = write_manifest(server("b1") + server("b2"), "pair.yaml")
    ledger = Ledger(state_dir)
    first = load(path, state_dir, ledger)
    assert first.load.problems == [] and plan_lines(first, running={}) != []
    return path, ledger, {name: spec.runtime_generation for name, spec in first.load.by_name.items()}


@pytest.mark.parametrize("broken", [
    pytest.param("restartPolicy: Sometimes", id="a value the schema refuses"),
    pytest.param("restartPolcy: Always", id="a misspelt key"),
])
def test_a_rewrite_that_breaks_one_server_and_drops_another_removes_nothing(
        applied: tuple[Path, Ledger, dict[str, str]], state_dir: StateDir, broken: str) -> None:
    path, ledger, running = applied
    path.write_text(server("b1", broken))

    desired = load(path, state_dir, ledger)

    assert [p.file for p in desired.load.problems] == [str(path)]
    assert desired.load.by_name == {}
    assert set(desired.held) == {"b1", "b2"}
    assert desired.held["b2"] == f"manifest {path} has errors (see `mcp-reconcile validate`)"
    assert plan_lines(desired, running=running) == []


def test_a_valid_document_beside_a_broken_one_applies_none_of_its_edits(
        applied: tuple[Path, Ledger, dict[str, str]], state_dir: StateDir) -> None:
    path, ledger, running = applied
    path.write_text(server("b1", "colour: blue") + server("b2", "args: [--changed]") + server("b3"))

    desired = load(path, state_dir, ledger)

    assert desired.load.by_name == {}
    assert [s.name for s in desired.load.set_aside] == ["b2", "b3"]
    assert set(desired.held) == {"b1", "b2", "b3"}
    assert plan_lines(desired, running=running) == []


def test_a_server_recorded_from_a_file_that_broke_is_kept_even_when_the_file_names_nothing_readable(
        applied: tuple[Path, Ledger, dict[str, str]], state_dir: StateDir) -> None:
    path, ledger, running = applied
    path.write_text("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: b1\n")

    desired = load(path, state_dir, ledger)

    assert set(desired.held) == {"b1", "b2"}
    assert plan_lines(desired, running=running) == []


def test_a_valid_rewrite_that_no_longer_names_a_server_removes_it(
        applied: tuple[Path, Ledger, dict[str, str]], state_dir: StateDir) -> None:
    path, ledger, running = applied
    path.write_text(server("b1"))

    desired = load(path, state_dir, ledger)

    assert desired.held == {}
    assert plan_lines(desired, running=running) == ["  - stop      b2  (removed from manifests)",
                                                "  - uninstall b2  (removed from manifests)"]


# --- the running loop's merge of a reload (loop/lastgood.py) ----------------------------------------------------

def test_the_loop_keeps_supervising_the_last_good_specs_of_a_file_that_broke(
        write_manifest: WriteManifest, state_dir: StateDir) -> None:
    from mcp_reconcile.loop.lastgood import merge

    path = write_manifest(server("b1") + server("b2"), "pair.yaml")
    ledger = Ledger(state_dir)
    good = load(path, state_dir, ledger).load.by_name
    path.write_text(server("b1", "restartPolicy: Sometimes"))   # b2 dropped, b1 broken: the file is ignored

    m = merge(good, load(path, state_dir, ledger), missing_since={}, now=100.0, grace_s=2.0)

    assert m.desired == good and m.changed == set() and m.removed == {} and m.removal_due == {}
    assert set(m.last_good) == {"b1", "b2"} and "has errors" in m.last_good["b1"]


def test_the_loop_removes_a_server_whose_file_vanished_only_when_the_grace_is_over(
        write_manifest: WriteManifest, state_dir: StateDir) -> None:
    from mcp_reconcile.loop.lastgood import merge

    path = write_manifest(server("b1"), "one.yaml")
    write_manifest(server("b2"), "two.yaml")
    ledger = Ledger(state_dir)
    good = load(path.parent, state_dir, ledger).load.by_name
    path.unlink()
    gone = load(path.parent, state_dir, ledger)

    first = merge(good, gone, missing_since={}, now=100.0, grace_s=2.0)
    assert (first.desired, first.changed, first.removal_due, first.missing_since) == (good, set(), {"b1": 102.0},
                                                                                      {"b1": 100.0})
    early = merge(good, gone, missing_since=first.missing_since, now=101.5, grace_s=2.0)
    assert (early.desired, early.removal_due) == (good, {"b1": 102.0})
    over = merge(good, gone, missing_since=first.missing_since, now=102.0, grace_s=2.0)
    assert (set(over.desired), over.changed, set(over.removed), over.removal_due) == ({"b2"}, {"b1"}, {"b1"}, {})
