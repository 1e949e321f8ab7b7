"""Which servers an MCPClient selects: named ones as named, else by labels among the running ones."""

from __future__ import annotations

from pathlib import Path

from mcp_reconcile.clientspec import ClientSpec, selected
from mcp_reconcile.model import DesiredState, ServerSpec, Source


def _server(name: str, team: str, state: DesiredState = DesiredState.running) -> ServerSpec:
    return ServerSpec(name=name, source=Source("npm", "p@1.0.0"), labels={"team": team}, desired_state=state)


SERVERS = [_server("a1", "a"), _server("a2", "a", DesiredState.stopped), _server("b1", "b")]


def _client(**kwargs: object) -> ClientSpec:
    return ClientSpec(name="c", client="cursor", scope="user", path=None, project_dir=Path("/"), **kwargs)  # type: ignore[arg-type]


def test_named_servers_are_selected_in_the_order_given_whatever_their_state() -> None:
    assert [s.name for s in selected(_client(servers=("b1", "a2")), SERVERS)] == ["b1", "a2"]


def test_a_selector_picks_running_servers_with_every_label() -> None:
    assert [s.name for s in selected(_client(match_labels={"team": "a"}), SERVERS)] == ["a1"]


def test_neither_means_every_running_server() -> None:
    assert [s.name for s in selected(_client(), SERVERS)] == ["a1", "b1"]
