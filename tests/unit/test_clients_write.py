"""`mcp-reconcile clients write | remove` on realistic client configs: every client, every rule.

Each case puts a real-looking config (user entries, comments, unrelated settings) at the client's documented
path under a tmp $HOME (or the project dir), then runs the CLI in-process as a user would.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomlkit
from ruamel.yaml import YAML

from mcp_reconcile import cli
from mcp_reconcile.clients.catalog import CLIENTS, Where

FIXTURES = Path(__file__).parents[1] / "fixtures" / "clients"
SECRET = "s3cr3t-token-value-never-written"

MANIFESTS = {
    "time.yaml": """apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {name: time}
spec:
  source: {pypi: "mcp-server-time==2026.10.19"}
  port: 24101
""",
    "secure.yaml": """apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {name: secure}
spec:
  source: {pypi: "mcp-server-time==2026.10.19"}
  port: 24102
  path: /api/mcp
  env:
    EP_TOKEN: ${SECURE_TOKEN}
  endpointAuth: {tokenEnv: EP_TOKEN}
""",
    "idle.yaml": """apiVersion: mcp-reconcile/v1
kind: MCPServer
metadata: {name: idle}
spec:
  source: {pypi: "mcp-server-time==2026.10.19"}
  port: 24103
  desiredState: stopped
""",
}


@dataclass(frozen=True)
class Case:
    client: str
    scope: str
    fixture: str
    user_entry: str          # an entry of the user's in the fixture


CASES = [
    Case("claude-desktop", "user", "claude_desktop_config.json", "filesystem"),
    Case("claude-code", "user", "claude.json", "github"),
    Case("claude-code", "project", "dot_mcp.json", "sentry"),
    Case("vscode", "user", "vscode_mcp.json", "perplexity"),
    Case("vscode", "project", "vscode_mcp.json", "fetch"),
    Case("cursor", "user", "cursor_mcp.json", "linear"),
    Case("cursor", "project", "cursor_mcp.json", "postgres"),
    Case("windsurf", "user", "windsurf_mcp_config.json", "figma"),
    Case("gemini-cli", "user", "gemini_settings.json", "git"),
    Case("gemini-cli", "project", "gemini_settings.json", "git"),
    Case("codex", "user", "codex_config.toml", "context7"),
    Case("codex", "project", "codex_config.toml", "figma"),
    Case("goose", "user", "goose_config.yaml", "github"),
    Case("zed", "user", "zed_settings.json", "github"),
    Case("zed", "project", "zed_settings.json", "github"),
    Case("cline", "user", "cline_mcp_settings.json", "brave-search"),
    Case("lm-studio", "user", "lmstudio_mcp.json", "hf-mcp-server"),
]
IDS = [f"{c.client}-{c.scope}" for c in CASES]
CURSOR = next(c for c in CASES if c.client == "cursor" and c.scope == "user")
GOOSE = next(c for c in CASES if c.client == "goose")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tmp HOME, XDG_CONFIG_HOME and project dir (the cwd), and manifests for three servers."""
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    for var in ("APPDATA", "CODEX_HOME", "MCP_RECONCILE_MANIFESTS", "MCP_RECONCILE_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("SECURE_TOKEN", SECRET)
    monkeypatch.chdir(project)
    (tmp_path / "manifests").mkdir()
    for name, text in MANIFESTS.items():
        (tmp_path / "manifests" / name).write_text(text)
    return tmp_path


def config_path(case: Case) -> Path:
    return CLIENTS[case.client].path(case.scope, Where.here(platform="linux"))


def place(case: Case) -> tuple[Path, bytes]:
    path = config_path(case)
    path.parent.mkdir(parents=True, exist_ok=True)
    original = (FIXTURES / case.fixture).read_bytes()
    path.write_bytes(original)
    return path, original


def run(world: Path, *args: str) -> int:
    return cli.main(["clients", *args, "-f", str(world / "manifests"), "--state-dir", str(world / "state")])


def entries(case: Case, path: Path) -> dict:
    text = path.read_text()
    client = CLIENTS[case.client]
    if client.format == "toml":
        data = tomlkit.parse(text).unwrap()
    elif client.format == "yaml":
        data = YAML(typ="safe").load(text)
    else:
        from mcp_reconcile.formats import jsonc
        data = jsonc.loads(text, file=str(path))
    return data.get(client.container, {})


def write(world: Path, case: Case, *extra: str) -> int:
    return run(world, "write", "--client", case.client, "--scope", case.scope, *extra)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_write_adds_running_servers_and_keeps_every_user_entry_and_setting(world: Path, case: Case) -> None:
    path, original = place(case)
    before = entries(case, path)
    assert write(world, case) == 0
    after = entries(case, path)
    assert after[case.user_entry] == before[case.user_entry]
    assert set(after) == set(before) | {"time", "secure"}          # `idle` is stopped: not written
    assert Path(str(path) + ".mcpr-backup").read_bytes() == original
    text = path.read_text()
    for line in original.decode().splitlines():                    # comments and settings, as they were
        if not line.strip().startswith(('"' + case.user_entry, case.user_entry)) and line.strip() not in "{}":
            assert line.rstrip(",") in text, line


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_second_write_changes_no_byte(world: Path, case: Case) -> None:
    path, _ = place(case)
    assert write(world, case) == 0
    first, stat = path.read_bytes(), path.stat()
    backup = Path(str(path) + ".mcpr-backup").read_bytes()
    assert write(world, case) == 0
    assert path.read_bytes() == first
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino
    assert Path(str(path) + ".mcpr-backup").read_bytes() == backup


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_remove_takes_out_only_our_entries_and_restores_the_users_file(world: Path, case: Case) -> None:
    path, original = place(case)
    assert write(world, case) == 0
    assert run(world, "remove", "--client", case.client, "--scope", case.scope) == 0
    assert path.read_bytes() == original
    record = json.loads((world / "state" / "clients.json").read_text())
    assert record["entries"] == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dry_run_prints_the_diff_and_writes_nothing(world: Path, case: Case, capsys: pytest.CaptureFixture) -> None:
    path, original = place(case)
    assert write(world, case, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"--- {path}" in out and f"+++ {path}" in out
    assert any(line.startswith("+") and "time" in line for line in out.splitlines())
    assert path.read_bytes() == original
    assert not Path(str(path) + ".mcpr-backup").exists()
    assert not (world / "state" / "clients.json").exists()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_user_entry_of_the_same_name_is_refused_without_force(world: Path, case: Case,
                                                                capsys: pytest.CaptureFixture) -> None:
    path, original = place(case)
    assert write(world, case, case.user_entry) != 0   # no such server: a clear error
    assert f"no server {case.user_entry}" in capsys.readouterr().err
    renamed = original.decode().replace(case.user_entry, "time")
    path.write_text(renamed)
    assert write(world, case) == 1
    err = capsys.readouterr().err
    assert str(path) in err and f"{CLIENTS[case.client].container}.time" in err and "--force" in err
    assert path.read_text() == renamed
    assert write(world, case, "--force") == 0
    assert entries(case, path)["time"] != entries(case, FIXTURES / case.fixture).get(case.user_entry)
    assert run(world, "remove", "--client", case.client, "--scope", case.scope) == 0   # --force made it ours
    assert "time" not in entries(case, path)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_secret_is_written_and_the_token_reaches_the_client_by_name(world: Path, case: Case,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path, _ = place(case)
    assert write(world, case) == 0
    out = capsys.readouterr().out
    for written in (path.read_text(), (world / "state" / "clients.json").read_text(), out):
        assert SECRET not in written
    secure = json.dumps(entries(case, path)["secure"])
    assert "EP_TOKEN" in secure or "connect" in secure      # an env reference the client expands, or the bridge
    assert "EP_TOKEN" in out or "stdio bridge" in out


EXPECTED_ENTRIES = {   # the shapes each client's documentation gives (see clients/catalog.py)
    ("claude-code", "project"): {"type": "http", "url": "http://127.0.0.1:24102/api/mcp",
                                 "headers": {"Authorization": "Bearer ${EP_TOKEN}"}},
    ("cursor", "user"): {"url": "http://127.0.0.1:24102/api/mcp",
                         "headers": {"Authorization": "Bearer ${env:EP_TOKEN}"}},
    ("windsurf", "user"): {"serverUrl": "http://127.0.0.1:24102/api/mcp",
                           "headers": {"Authorization": "Bearer ${env:EP_TOKEN}"}},
    ("gemini-cli", "user"): {"httpUrl": "http://127.0.0.1:24102/api/mcp",
                             "headers": {"Authorization": "Bearer ${EP_TOKEN}"}},
    ("codex", "user"): {"url": "http://127.0.0.1:24102/api/mcp", "bearer_token_env_var": "EP_TOKEN"},
}
EXPECTED_ENTRIES.update({(client, "project"): EXPECTED_ENTRIES[client, "user"]
                         for client in ("cursor", "gemini-cli", "codex")})


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_client_gets_its_native_entry_or_a_connect_entry(world: Path, case: Case) -> None:
    path, _ = place(case)
    assert write(world, case) == 0
    found = entries(case, path)
    expected = EXPECTED_ENTRIES.get((case.client, case.scope))
    if expected is not None:
        assert found["secure"] == expected
    else:   # no documented env expansion for headers (or no HTTP at all): the bridge, by absolute paths
        command = found["secure"].get("command") or found["secure"].get("cmd")
        assert Path(command).is_absolute() and Path(command).name == "mcp-reconcile"
        assert found["secure"]["args"] == ["connect", "secure", "--state-dir", str(world / "state")]
    plain_url = "http://127.0.0.1:24101/mcp"
    assert plain_url in json.dumps(found["time"]) or case.client == "claude-desktop"


def test_an_entry_edited_by_hand_is_the_users_now(world: Path, capsys: pytest.CaptureFixture) -> None:
    case = CURSOR
    path, _ = place(case)
    assert write(world, case) == 0
    path.write_text(path.read_text().replace("http://127.0.0.1:24101/mcp", "http://127.0.0.1:9999/mcp"))
    edited = path.read_bytes()
    assert write(world, case) == 1
    assert "changed by hand" in capsys.readouterr().err
    assert run(world, "remove", "--client", "cursor") == 0
    assert b"9999" in path.read_bytes() and b'"secure"' not in path.read_bytes()
    assert path.read_bytes() != edited


def test_a_symlinked_config_is_written_through_the_link(world: Path) -> None:
    case = CURSOR
    target = world / "dotfiles" / "mcp.json"
    target.parent.mkdir()
    target.write_bytes((FIXTURES / case.fixture).read_bytes())
    link = config_path(case)
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    assert write(world, case) == 0
    assert link.is_symlink() and "secure" in entries(case, target)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_missing_config_is_created_and_a_dry_run_never_allocates_a_port(world: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    (world / "manifests" / "time.yaml").write_text(MANIFESTS["time.yaml"].replace("  port: 24101\n", ""))
    assert run(world, "write", "--client", "cursor", "time", "--dry-run") == 0
    assert "http://127.0.0.1:<port>/mcp" in capsys.readouterr().out
    assert not (world / "state" / "ports.json").exists()
    assert run(world, "write", "--client", "cursor", "time") == 0
    port = json.loads((world / "state" / "ports.json").read_text())["time"]
    path = config_path(CURSOR)
    assert json.loads(path.read_text()) == {"mcpServers": {"time": {"url": f"http://127.0.0.1:{port}/mcp"}}}
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_client_without_the_scope_or_an_unknown_client_is_a_clear_error(world: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    assert run(world, "write", "--client", "windsurf", "--scope", "project") == 1
    assert "windsurf has no project scope" in capsys.readouterr().err
    assert run(world, "write", "--client", "emacs") == 1
    assert "unknown client 'emacs'" in capsys.readouterr().err


def test_a_broken_config_is_reported_with_its_file_and_left_alone(world: Path, capsys: pytest.CaptureFixture) -> None:
    path = config_path(CURSOR)
    path.parent.mkdir(parents=True)
    path.write_text('{"mcpServers": {"a": }')
    assert run(world, "write", "--client", "cursor") == 1
    assert str(path) in capsys.readouterr().err
    assert path.read_text() == '{"mcpServers": {"a": }'


def test_a_write_without_names_drops_our_entries_of_servers_no_longer_running(world: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    path, original = place(CURSOR)
    assert write(world, CURSOR) == 0
    (world / "manifests" / "secure.yaml").write_text(MANIFESTS["secure.yaml"] + "  desiredState: stopped\n")
    assert write(world, CURSOR, "time") == 0            # named servers: nothing else is touched
    assert "secure" in entries(CURSOR, path)
    assert write(world, CURSOR) == 0
    assert "- secure remove (no longer a running server)" in capsys.readouterr().out
    assert set(entries(CURSOR, path)) == {"linear", "postgres", "time"}
    assert run(world, "remove", "--client", "cursor") == 0
    assert path.read_bytes() == original


def test_an_identical_entry_the_user_wrote_is_not_taken_over_without_force(world: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    path = config_path(CURSOR)
    path.parent.mkdir(parents=True)
    mine = '{"mcpServers": {"time": {"url": "http://127.0.0.1:24101/mcp"}}}\n'
    path.write_text(mine)
    assert write(world, CURSOR, "time") == 1
    assert "identical to ours" in capsys.readouterr().err
    assert run(world, "remove", "--client", "cursor", "time") == 0
    assert path.read_text() == mine                    # not ours: never removed
