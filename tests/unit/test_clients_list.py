"""`mcp-reconcile clients list`: every known client, its config files (present or not), and who owns each entry;
plus the JSON(C) member editor's edge cases that realistic fixtures do not reach."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.test_clients_write import CURSOR, GOOSE, config_path, place, run, world  # noqa: F401 (fixture)

from mcp_reconcile.clients.catalog import CLIENTS
from mcp_reconcile.clients.jsonedit import JsonText
from mcp_reconcile.formats import jsonc


def test_list_shows_every_client_its_files_and_which_entries_are_managed(world: Path,  # noqa: F811
                                                                        capsys: pytest.CaptureFixture) -> None:
    path, _ = place(CURSOR)
    assert run(world, "write", "--client", "cursor", "time") == 0
    capsys.readouterr()
    assert run(world, "list", "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)["clients"]
    assert {(r["client"], r["scope"]) for r in rows} == {(c.name, s) for c in CLIENTS.values() for s in c.paths}
    by_key = {(r["client"], r["scope"]): r for r in rows}
    row = by_key["cursor", "user"]
    assert row["file"] == str(path) and row["exists"] is True
    assert row["servers"] == [{"name": "linear", "owner": "user"}, {"name": "postgres", "owner": "user"},
                              {"name": "time", "owner": "managed"}]
    assert by_key["vscode", "project"]["exists"] is False and by_key["vscode", "project"]["servers"] == []

    path.write_text(path.read_text().replace("24101", "24999"))
    assert run(world, "list") == 0
    out = capsys.readouterr().out
    assert f"cursor [user] {path}\n    linear: not managed\n    postgres: not managed\n" \
           "    time: managed, edited by hand\n" in out
    assert f"goose [user] {config_path(GOOSE)} (absent)" in out


def test_list_also_shows_project_files_written_from_another_directory(world: Path,  # noqa: F811
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    assert run(world, "write", "--client", "claude-code", "--scope", "project", "time") == 0
    elsewhere = world / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert run(world, "list", "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)["clients"]
    written = [r for r in rows if r["file"] == str(world / "project" / ".mcp.json")]
    assert written == [{"client": "claude-code", "scope": "project", "file": str(world / "project" / ".mcp.json"),
                        "exists": True, "servers": [{"name": "time", "owner": "managed"}]}]


def test_list_reports_a_broken_config_and_goes_on(world: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    path = config_path(CURSOR)
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    assert run(world, "list") == 0
    out = capsys.readouterr().out
    assert f"cursor [user] {path}\n    error: {path}" in out and "goose [user]" in out


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('{"x": 1}', '{"x": 1,\n  "s": {\n    "a": 1\n  }}', id="a single-line object gets the member"),
    pytest.param('{\n  "s": {}\n}\n', '{\n  "s": {\n    "a": 1\n  }\n}\n', id="an empty object is opened"),
    pytest.param('{\n  "s": { /* none yet */ }\n}\n', '{\n  "s": {\n    "a": 1 /* none yet */ }\n}\n',
                 id="a comment inside an empty object stays"),
    pytest.param('{\n\t"s": {\n\t\t"b": 2,\n\t},\n}\n', '{\n\t"s": {\n\t\t"b": 2,\n\t\t"a": 1,\n\t},\n}\n',
                 id="tabs and trailing commas are the file's style"),
])
def test_json_member_insertion_follows_the_files_style(text: str, expected: str) -> None:
    doc = JsonText(text, file="t.json")
    doc.set_member(("s", "a"), 1)
    assert doc.text == expected
    assert doc.delete_member(("s", "a"))
    before = jsonc.loads(text, file="t.json")
    assert jsonc.loads(doc.text, file="t.json") == {"s": {}, **before}


def test_json_member_edits_refuse_a_container_that_is_not_an_object() -> None:
    from mcp_reconcile.errors import ManifestError

    doc = JsonText('{"mcpServers": []}', file="/x/mcp.json")
    with pytest.raises(ManifestError, match=r"/x/mcp.json mcpServers: is not an object"):
        doc.set_member(("mcpServers", "a"), {})


def test_the_pure_api_plans_without_touching_disk(tmp_path: Path) -> None:
    from mcp_reconcile.clients import Connect, Record, Target, desired_entries, plan_write
    from mcp_reconcile.store import StateDir

    client = CLIENTS["codex"]
    entries = desired_entries(client, "user", [Target("b", "http://127.0.0.1:2/mcp", "TOK"),
                                               Target("a", "http://127.0.0.1:1/mcp")],
                              connect=Connect("/usr/bin/mcp-reconcile", "/state"))
    assert list(entries) == ["a", "b"]
    assert entries["b"].value == {"url": "http://127.0.0.1:2/mcp", "bearer_token_env_var": "TOK"}
    change = plan_write(client, "user", tmp_path / "config.toml", entries, Record(StateDir(tmp_path / "state")))
    assert [(e.name, e.action) for e in change.entries] == [("a", "add"), ("b", "add")]
    assert change.diff().startswith("--- /dev/null\n+++ ")
    assert list(tmp_path.iterdir()) == []
