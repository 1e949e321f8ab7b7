"""The MCPClient kind through the CLI, as a user runs it: plan shows client changes, apply writes them,
edits and deletions of the MCPClient are reconciled, and a broken manifest never removes anything.

HOME points at the test's tmp dir, so every client file is the test's own. The servers are local scripts with
desiredState: stopped (nothing to start; each still gets its stable port, which is what the entries name).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = """\
apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {{name: {name}, labels: {{team: {team}}}}}
spec:
  source: {{path: {script}}}
  desiredState: stopped
"""

CURSOR = """\
apiVersion: mcp-reconcile/v1
kind: MCPClient
metadata: {{name: my-cursor}}
spec:
  client: cursor
  {select}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "MCP_RECONCILE_STATE_DIR": str(tmp_path / "state")}


def cli(env: dict[str, str], tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_reconcile", *argv, "-f", str(tmp_path / "manifests")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def write_manifests(tmp_path: Path, select: str) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir(exist_ok=True)
    script = tmp_path / "server.py"
    script.write_text("print('never started')\n")
    for name, team in (("alpha", "a"), ("beta", "b")):
        (manifests / f"{name}.yaml").write_text(SERVER.format(name=name, team=team, script=script))
    (manifests / "cursor.yaml").write_text(CURSOR.format(select=select))


def cursor_servers(env: dict[str, str]) -> dict[str, dict[str, str]]:
    path = Path(env["HOME"]) / ".cursor" / "mcp.json"
    return json.loads(path.read_text())["mcpServers"] if path.exists() else {}


def test_plan_shows_client_changes_and_apply_writes_them_once(tmp_path: Path, env: dict[str, str]) -> None:
    write_manifests(tmp_path, "servers: [alpha, beta]")
    planned = cli(env, tmp_path, "plan", "--detailed-exitcode")
    assert planned.returncode == 2, planned.stderr
    assert "+ client cursor (my-cursor): add alpha" in planned.stdout
    assert not (Path(env["HOME"]) / ".cursor").exists()   # plan writes nothing
    applied = cli(env, tmp_path, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    entries = cursor_servers(env)
    ports = json.loads((tmp_path / "state" / "ports.json").read_text())
    assert entries == {name: {"url": f"http://127.0.0.1:{ports[name]}/mcp"} for name in ("alpha", "beta")}
    before = (Path(env["HOME"]) / ".cursor" / "mcp.json").read_bytes()
    again = cli(env, tmp_path, "plan", "--detailed-exitcode")
    assert again.returncode == 0 and "client" not in again.stdout
    assert cli(env, tmp_path, "apply").returncode == 0
    assert (Path(env["HOME"]) / ".cursor" / "mcp.json").read_bytes() == before


def test_a_users_own_entries_stay_and_an_edit_or_a_deletion_is_reconciled(tmp_path: Path, env: dict[str, str]) -> None:
    cursor = Path(env["HOME"]) / ".cursor" / "mcp.json"
    cursor.parent.mkdir()
    cursor.write_text(json.dumps({"mcpServers": {"mine": {"command": "my-server"}}, "theme": "dark"}, indent=2))
    write_manifests(tmp_path, "servers: [alpha, beta]")
    assert cli(env, tmp_path, "apply").returncode == 0
    write_manifests(tmp_path, "servers: [alpha]")   # beta is no longer selected
    planned = cli(env, tmp_path, "plan")
    assert "- client cursor (my-cursor): remove beta" in planned.stdout, planned.stdout
    assert cli(env, tmp_path, "apply").returncode == 0
    assert sorted(cursor_servers(env)) == ["alpha", "mine"]
    (tmp_path / "manifests" / "cursor.yaml").unlink()   # the MCPClient is deleted: its entries go
    assert cli(env, tmp_path, "apply").returncode == 0
    data = json.loads(cursor.read_text())
    assert data == {"mcpServers": {"mine": {"command": "my-server"}}, "theme": "dark"}


def test_a_broken_mcpclient_manifest_removes_nothing_and_names_the_field(tmp_path: Path, env: dict[str, str]) -> None:
    write_manifests(tmp_path, "servers: [alpha]")
    assert cli(env, tmp_path, "apply").returncode == 0
    (tmp_path / "manifests" / "cursor.yaml").write_text(CURSOR.format(select="servers: [alpha]\n  scop: user"))
    applied = cli(env, tmp_path, "apply")
    assert applied.returncode == 1
    assert "cursor.yaml" in applied.stderr and "scop" in applied.stderr
    assert sorted(cursor_servers(env)) == ["alpha"]
    unknown = cli(env, tmp_path, "validate")
    assert unknown.returncode == 1


def test_an_unknown_client_is_a_problem_naming_spec_client(tmp_path: Path, env: dict[str, str]) -> None:
    write_manifests(tmp_path, "servers: [alpha]")
    (tmp_path / "manifests" / "cursor.yaml").write_text(
        CURSOR.format(select="servers: [alpha]").replace("client: cursor", "client: notepad"))
    checked = cli(env, tmp_path, "validate")
    assert checked.returncode == 1
    assert "spec.client" in checked.stderr and "unknown client 'notepad'" in checked.stderr


def test_under_run_adding_and_deleting_an_mcpclient_updates_the_file(tmp_path: Path, env: dict[str, str]) -> None:
    import signal
    import time

    write_manifests(tmp_path, "servers: [alpha]")
    (tmp_path / "manifests" / "cursor.yaml").unlink()
    controller = subprocess.Popen([sys.executable, "-m", "mcp_reconcile", "run", "-f", str(tmp_path / "manifests")],
                                  env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(done, what: str) -> None:   # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert controller.poll() is None, "the controller exited"
            time.sleep(0.1)

    try:
        wait_for(lambda: (tmp_path / "state" / "ports.json").exists() or
                 (tmp_path / "state" / "state.json").exists(), "the controller's first pass")
        (tmp_path / "manifests" / "cursor.yaml").write_text(CURSOR.format(select="servers: [alpha]"))
        wait_for(lambda: "alpha" in cursor_servers(env), "alpha's entry in ~/.cursor/mcp.json")
        (tmp_path / "manifests" / "cursor.yaml").unlink()
        wait_for(lambda: cursor_servers(env) == {}, "the entry removed with its MCPClient")
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(60)


def test_two_mcpclients_on_one_file_are_a_problem_and_cli_written_entries_outlive_a_deleted_one(
        tmp_path: Path, env: dict[str, str]) -> None:
    write_manifests(tmp_path, "servers: [alpha]")
    assert cli(env, tmp_path, "clients", "write", "--client", "cursor", "beta").returncode == 0   # by hand
    assert cli(env, tmp_path, "apply").returncode == 0
    assert sorted(cursor_servers(env)) == ["alpha", "beta"]   # the MCPClient leaves `clients write`'s entry
    (tmp_path / "manifests" / "cursor2.yaml").write_text(
        CURSOR.format(select="servers: [beta]").replace("my-cursor", "other-cursor"))
    twice = cli(env, tmp_path, "apply")
    assert twice.returncode == 1 and "already kept by MCPClient my-cursor" in twice.stderr, twice.stderr
    (tmp_path / "manifests" / "cursor2.yaml").unlink()
    (tmp_path / "manifests" / "cursor.yaml").unlink()
    assert cli(env, tmp_path, "apply").returncode == 0
    assert sorted(cursor_servers(env)) == ["beta"]   # only what the deleted MCPClient wrote is gone
