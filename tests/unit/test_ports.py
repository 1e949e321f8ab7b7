"""The endpoint address book: one stable port per server name, persisted in the state dir."""

from __future__ import annotations

import socket

import pytest

from mcp_reconcile import ports
from mcp_reconcile.store import StateDir


@pytest.fixture
def state(tmp_path) -> StateDir:
    return StateDir(tmp_path / "state").ensure()


def test_a_server_keeps_the_port_it_was_given_first(state: StateDir) -> None:
    first = ports.port_for(state, "a", requested=None)
    assert ports.port_for(state, "a", requested=None) == first
    assert ports.port_for(StateDir(state.root), "a", requested=None) == first   # read back from ports.json
    assert ports.read_ports(state) == {"a": first}


def test_allocated_ports_sit_below_the_ephemeral_range_and_are_never_shared(state: StateDir) -> None:
    given = {ports.port_for(state, f"s{i}", requested=None) for i in range(20)}
    assert len(given) == 20
    assert all(ports.ALLOCATION_LOW <= p < ports._ephemeral_low() for p in given)


def test_spec_port_wins_and_is_remembered_when_it_is_dropped_again(state: StateDir) -> None:
    ports.port_for(state, "a", requested=None)
    assert ports.port_for(state, "a", requested=23456) == 23456
    assert ports.port_for(state, "a", requested=None) == 23456


def test_a_port_another_server_asks_for_is_not_allocated(state: StateDir, monkeypatch) -> None:
    candidates = iter([21000, 21000, 21001])
    monkeypatch.setattr(ports.random.SystemRandom, "randint", lambda self, low, high: next(candidates))
    assert ports.port_for(state, "a", requested=None, reserved={21000}) == 21001


def test_a_removed_server_frees_its_port(state: StateDir) -> None:
    port = ports.port_for(state, "a", requested=None)
    ports.release(state, "a")
    assert ports.read_ports(state) == {}
    ports.release(state, "a")   # idempotent
    assert port not in ports.read_ports(state).values()


def test_the_holder_of_a_taken_port_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not ports.can_bind(port)
        holder = ports.holder_of(port)
    assert holder is not None and holder.startswith("pid ")


def test_two_servers_asking_for_one_spec_port_is_a_problem_naming_the_first(tmp_path) -> None:
    from mcp_reconcile.manifest import load_manifests

    doc = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {{name: {name}}}\n" \
          "spec: {{source: {{path: {path}}}, port: 24000}}\n"
    server = tmp_path / "s.py"
    server.write_text("")
    (tmp_path / "a.yaml").write_text(doc.format(name="a", path=server))
    (tmp_path / "b.yaml").write_text(doc.format(name="b", path=server))
    result = load_manifests([tmp_path])
    assert [s.name for s in result.specs] == ["a"]
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'b.yaml'}[0] spec.port: port 24000 is already the spec.port of 'a' ({tmp_path / 'a.yaml'}[0])"]
