"""`import FILE -d DIR --take-over`: the client's own stdio entries become managed ones, the rest stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def run(home: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "MCP_RECONCILE_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "mcp_reconcile", *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_cursor_entries_become_endpoint_urls_and_everything_else_stays(home: Path, tmp_path: Path) -> None:
    cursor = home / ".cursor" / "mcp.json"
    cursor.parent.mkdir()
    original = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]},
                               "remote": {"url": "https://example.com/mcp"}}, "other": {"keep": True}}
    cursor.write_text(json.dumps(original, indent=2))
    done = run(home, tmp_path, "import", str(cursor), "-d", "manifests", "--take-over")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "manifests" / "time.yaml").exists()
    port = json.loads((tmp_path / "state" / "ports.json").read_text())["time"]
    data = json.loads(cursor.read_text())
    assert data["mcpServers"]["time"] == {"url": f"http://127.0.0.1:{port}/mcp"}
    assert data["mcpServers"]["remote"] == original["mcpServers"]["remote"]   # not imported: untouched
    assert data["other"] == {"keep": True}
    assert json.loads(Path(f"{cursor}.mcpr-backup").read_text()) == original
    listed = run(home, tmp_path, "clients", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert "time" in listed.stdout


def test_claude_desktop_gets_a_connect_entry(home: Path, tmp_path: Path) -> None:
    config = home / ".config" / "Claude" / "claude_desktop_config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}))
    done = run(home, tmp_path, "import", str(config), "-d", "manifests", "--take-over")
    assert done.returncode == 0, done.stderr
    entry = json.loads(config.read_text())["mcpServers"]["time"]
    assert entry["args"][:2] == ["connect", "time"] and entry["command"].endswith("mcp-reconcile")


def test_an_unknown_file_needs_client_and_changes_nothing(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "somewhere.json"
    text = json.dumps({"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}})
    config.write_text(text)
    done = run(home, tmp_path, "import", str(config), "-d", "manifests", "--take-over")
    assert done.returncode == 1 and "--client" in done.stderr
    assert config.read_text() == text
    named = run(home, tmp_path, "import", str(config), "-d", "manifests", "--overwrite", "--take-over",
                "--client", "cursor")
    assert named.returncode == 0, named.stderr
    assert "url" in json.loads(config.read_text())["mcpServers"]["time"]


def test_take_over_without_a_directory_is_refused(home: Path, tmp_path: Path) -> None:
    config = home / ".cursor" / "mcp.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}))
    done = run(home, tmp_path, "import", str(config), "--take-over")
    assert done.returncode == 1 and "-d DIR" in done.stderr
