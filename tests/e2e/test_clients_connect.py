"""Entries written by `mcp-reconcile clients write` reach the running servers, as an agent would use them:
the Streamable HTTP URL of a Claude Code `.mcp.json` entry with the MCP SDK's HTTP client, and Claude
Desktop's `connect` entry launched as its stdio command (the bridge, a real runner and the server behind it)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.e2e

# Bound on one client session against a server (its first answer included).
SESSION_TIMEOUT_S = 120.0


async def tools_over(target: Any) -> set[str]:
    from mcp import Client

    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with Client(target) as client:
            result = await client.list_tools()
    return {tool.name for tool in result.tools}


def test_written_entries_reach_the_running_servers_and_remove_leaves_the_file_clean(real) -> None:
    from mcp import StdioServerParameters

    home = real.root / "home"
    home.mkdir()
    real.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    real.cli("apply")
    real.wait_ready("everything", "time")

    real.cli("clients", "write", "--client", "claude-code", "--scope", "project")
    real.cli("clients", "write", "--client", "claude-desktop")
    project = json.loads((real.root / ".mcp.json").read_text())["mcpServers"]
    desktop = json.loads((home / ".config" / "Claude" / "claude_desktop_config.json").read_text())["mcpServers"]
    assert set(project) == set(desktop) == {"everything", "time"}
    endpoints = {row["name"]: row["endpoint"] for row in real.status().values()}
    assert {name: entry["url"] for name, entry in project.items()} == endpoints

    assert "echo" in anyio.run(tools_over, project["everything"]["url"])
    assert "get_current_time" in anyio.run(tools_over, project["time"]["url"])
    bridge = desktop["time"]
    params = StdioServerParameters(command=bridge["command"], args=bridge["args"], env=real.env)
    assert "get_current_time" in anyio.run(tools_over, params)

    listed = json.loads(real.cli("clients", "list", "-o", "json").out)["clients"]
    mine = {(r["client"], r["scope"]): r for r in listed}
    assert mine["claude-code", "project"]["servers"] == [{"name": "everything", "owner": "managed"},
                                                          {"name": "time", "owner": "managed"}]
    real.cli("clients", "remove", "--client", "claude-code", "--scope", "project")
    assert json.loads((real.root / ".mcp.json").read_text()) == {"mcpServers": {}}
