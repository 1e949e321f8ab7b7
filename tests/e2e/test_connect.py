"""`mcp-reconcile connect NAME` as a stdio client launches it: the official MCP SDK's stdio client, the bridge,
a real runner and server-everything behind it, and kill -9 of the server, then of its runner, in the middle of
one client session (the controller restarts them; the bridge rides it out)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

pytestmark = pytest.mark.e2e

MCP_RECONCILE = str(Path(sys.executable).parent / "mcp-reconcile")   # the venv's console script, as users run it
# Bound on one client session over the bridge (a server restart included).
SESSION_TIMEOUT_S = 120.0
# Bound on the bridge's exit after its stdin closed with nothing in flight.
EXIT_TIMEOUT_S = 15.0


def bridge_argv(real: Any) -> list[str]:
    return [MCP_RECONCILE, "connect", "everything", "--state-dir", str(real.state_dir)]


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def bridges_of(real: Any) -> list[int]:
    """Live bridge processes of this state dir."""
    return [p.pid for p in psutil.process_iter(["cmdline", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and "connect" in (p.info["cmdline"] or [])
            and str(real.state_dir) in (p.info["cmdline"] or [])]


async def a_session_through_a_server_crash(real: Any) -> dict[str, Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    argv = bridge_argv(real)
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=real.env)
    seen: dict[str, Any] = {"progress": []}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen["progress"].append((progress, total))

    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            seen["init"] = await session.initialize()
            seen["tools"] = {tool.name for tool in (await session.list_tools()).tools}
            seen["echo"] = text_of(await session.call_tool("echo", {"message": "hello through the bridge"}))
            long_run = await session.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3},
                                               progress_callback=on_progress)
            seen["long"] = text_of(long_run)
            seen["bridges"] = bridges_of(real)
            before = real.run_record("everything")
            os.kill(before["server_pid"], signal.SIGKILL)
            seen["killed"] = before["server_pid"]
            # sent right after the crash: the bridge waits out the restart, in the same client session
            seen["echo after crash"] = text_of(await session.call_tool("echo", {"message": "still here"}))
            seen["after"] = real.run_record("everything")
            # kill -9 of the runner: nobody holds the port until the controller starts the next runner
            os.kill(seen["after"]["runner_pid"], signal.SIGKILL)
            seen["echo after runner crash"] = text_of(await session.call_tool("echo", {"message": "and here"}))
            seen["after runner"] = real.run_record("everything")
            seen["bridges after"] = bridges_of(real)
    return seen


def test_an_sdk_stdio_client_works_through_the_bridge_and_a_server_crash_mid_session(real) -> None:
    real.start_controller()
    real.wait_ready("everything")
    seen = anyio.run(a_session_through_a_server_crash, real)
    assert seen["init"].server_info.name
    assert {"echo", "trigger-long-running-operation"} <= seen["tools"]
    assert "hello through the bridge" in seen["echo"]
    assert "completed" in seen["long"]
    assert seen["progress"] == [(1, 3), (2, 3), (3, 3)]
    assert "still here" in seen["echo after crash"]
    assert seen["after"]["server_pid"] != seen["killed"], "the echo after the crash came from a new server"
    assert "and here" in seen["echo after runner crash"]
    assert seen["after runner"]["runner_pid"] != seen["after"]["runner_pid"], "answered by the next runner"
    assert len(seen["bridges"]) == 1 and seen["bridges after"] == seen["bridges"], "one bridge, never restarted"
    real.wait_until(lambda: bridges_of(real), lambda left: not left, timeout_s=EXIT_TIMEOUT_S,
                    what="no bridge left after the client closed")


async def a_subscription_through_the_bridge(real: Any) -> list[str]:
    """Subscribe to a resource and have server-everything send its simulated updates (every 5 s): they come
    on no request's stream, so only the session's GET stream can carry them to the client."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    argv = bridge_argv(real)
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=real.env)
    updated: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            updated.append(str(message.params.uri))
            arrived.set()

    with anyio.fail_after(SESSION_TIMEOUT_S):
        async with stdio_client(params) as (read, write), \
                ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            uri = str((await session.list_resources()).resources[0].uri)
            await session.subscribe_resource(uri)
            await session.call_tool("toggle-subscriber-updates", {})
            await arrived.wait()
            return [uri, *updated]


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")   # a handshake-era session: it is not
def test_server_notifications_tied_to_no_request_reach_the_client_over_the_session_stream(real) -> None:
    real.cli("apply")
    real.wait_ready("everything")
    uri, *updated = anyio.run(a_subscription_through_the_bridge, real)
    assert updated and set(updated) == {uri}


def test_closing_stdin_makes_the_bridge_end_its_session_and_exit_0(real) -> None:
    from mcp_reconcile.sessionbook import SessionBook

    real.cli("apply")
    real.wait_ready("everything")
    book = SessionBook(real.state_dir / "run" / "everything.sessions.jsonl")   # the runner's own record of them
    before = set(book.load())
    bridge = subprocess.Popen(bridge_argv(real), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=real.env)
    try:
        assert bridge.stdin is not None and bridge.stdout is not None
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}
        bridge.stdin.write(json.dumps(initialize).encode() + b"\n")
        bridge.stdin.flush()
        answer = json.loads(bridge.stdout.readline())
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"], answer
        bridge.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n'
                           b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}\n')
        bridge.stdin.flush()
        assert json.loads(bridge.stdout.readline()) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        opened = set(book.load()) - before
        assert len(opened) == 1
        bridge.stdin.close()
        code = bridge.wait(EXIT_TIMEOUT_S)
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    stderr = bridge.stderr.read().decode() if bridge.stderr else ""
    assert code == 0, stderr
    assert bridges_of(real) == []
    assert not opened & set(book.load()), "the bridge DELETEs its session on the way out"


def test_a_server_unknown_to_the_state_dir_is_a_clear_error(real) -> None:
    done = subprocess.run([MCP_RECONCILE, "connect", "nosuch", "--state-dir", str(real.state_dir)],
                          capture_output=True, text=True, timeout=EXIT_TIMEOUT_S, env=real.env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "'nosuch'" in done.stderr and str(real.state_dir) in done.stderr

