"""Installers against the real registries: server-everything (npm) and mcp-server-time (PyPI).

The two servers are installed once per module, in parallel, into a tmp state dir; each test then
starts what the records say and asks it for its tools over MCP.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from mcp_reconcile import proc
from mcp_reconcile.errors import PermanentError
from mcp_reconcile.install import ensure_installed, launch_spec
from mcp_reconcile.model import ServerSpec, Source
from mcp_reconcile.store import InstallRecord, StateDir

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EVERYTHING = ServerSpec(name="everything", source=Source("npm", "@modelcontextprotocol/server-everything@2026.8.31"),
                        install_generation="everything-1")
TIME = ServerSpec(name="time", source=Source("pypi", "mcp-server-time==2026.10.19"), install_generation="time-1")
# Bound on one MCP session: start, list tools, shut down (cold start is under 1 s here).
SESSION_TIMEOUT_S = 60.0
# Bound on an install that must fail at once (a retry would add seconds of backoff, 4 runs ~ a minute).
FAILING_INSTALL_TIMEOUT_S = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[StateDir, dict[str, InstallRecord]]:
    """Both reference servers installed in parallel into one state dir."""
    state = StateDir(tmp_path_factory.mktemp("install-e2e") / "state")

    async def install_both() -> list[tuple[InstallRecord, bool]]:
        return await asyncio.gather(ensure_installed(EVERYTHING, state), ensure_installed(TIME, state))

    results = asyncio.run(install_both())
    assert [changed for _, changed in results] == [True, True]
    return state, {"everything": results[0][0], "time": results[1][0]}


class CountingRunCommand:
    """Wraps proc.run_command and records every argv it runs."""

    def __init__(self) -> None:
        self.real = proc.run_command
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: Sequence[str], **kw: object) -> proc.CommandResult:
        self.calls.append(tuple(argv))
        return await self.real(argv, **kw)  # type: ignore[arg-type]


async def tool_names(spec: ServerSpec, record: InstallRecord) -> set[str]:
    """Start the installed server as launch_spec says and list its tools over stdio."""
    from mcp import Client, StdioServerParameters

    launch = launch_spec(spec, record, os.environ)
    params = StdioServerParameters(command=launch.argv[0], args=list(launch.argv[1:]), env=dict(launch.env),
                                   cwd=launch.cwd)
    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with Client(params) as client:
            result = await client.list_tools()
    return {tool.name for tool in result.tools}


async def test_installed_servers_start_from_their_records_and_list_tools(installed) -> None:
    state, records = installed

    everything_tools = await tool_names(EVERYTHING, records["everything"])
    time_tools = await tool_names(TIME, records["time"])

    assert "echo" in everything_tools
    assert {"get_current_time", "convert_time"} <= time_tools
    assert records["everything"]["resolved_version"] == "2026.8.31"
    assert records["time"]["resolved_version"] == "2026.10.19"
    assert records["everything"]["command"][0].startswith(str(state.install_dir("everything")) + os.sep)
    assert records["time"]["command"][0].startswith(str(state.install_dir("time")) + os.sep)


async def test_a_second_ensure_installed_runs_no_package_manager(installed, monkeypatch) -> None:
    state, records = installed
    counting = CountingRunCommand()
    monkeypatch.setattr(proc, "run_command", counting)

    again = await asyncio.gather(ensure_installed(EVERYTHING, state), ensure_installed(TIME, state))

    assert counting.calls == []
    assert again == [(records["everything"], False), (records["time"], False)]


@pytest.mark.parametrize(("spec", "runs", "names"), [
    pytest.param(ServerSpec(name="ghost", install_generation="g1", source=Source(
        "npm", "@modelcontextprotocol/server-does-not-exist-xyz@1.0.0")),
        1, "@modelcontextprotocol/server-does-not-exist-xyz", id="an npm package that does not exist"),
    pytest.param(ServerSpec(name="old-time", install_generation="g1", source=Source(
        "pypi", "mcp-server-time==0.0.999")),
        2, "mcp-server-time==0.0.999", id="a pypi version that does not exist"),
])
async def test_a_missing_package_or_version_fails_permanently_at_once(
        tmp_path: Path, monkeypatch, spec: ServerSpec, runs: int, names: str) -> None:
    state = StateDir(tmp_path / "state")
    counting = CountingRunCommand()
    monkeypatch.setattr(proc, "run_command", counting)

    with capture_logs() as events, anyio.fail_after(FAILING_INSTALL_TIMEOUT_S), \
            pytest.raises(PermanentError) as failure:
        await ensure_installed(spec, state)

    assert re.match(rf"{spec.name}: install failed: (npm|uv): .*{re.escape(names)}", str(failure.value))
    assert len(counting.calls) == runs  # npm install / uv venv + uv pip install, each once
    assert [e for e in events if e["event"] == "install.retried"] == []
    assert sorted(p.name for p in state.install_dir(spec.name).parent.iterdir()) == []


async def test_a_failed_upgrade_leaves_the_previous_install_usable(installed) -> None:
    state, records = installed
    bad = ServerSpec(name="time", source=Source("pypi", "mcp-server-time==0.0.999"), install_generation="time-2")

    with anyio.fail_after(FAILING_INSTALL_TIMEOUT_S), pytest.raises(PermanentError, match="mcp-server-time"):
        await ensure_installed(bad, state)

    assert state.read_install("time") == records["time"]
    assert sorted(p.name for p in state.install_dir("time").parent.iterdir()) == ["everything", "time"]
    assert "get_current_time" in await tool_names(TIME, records["time"])
