"""A 2026-07-28 server's questions (multi round-trip `input_required`) reach a handshake-era client as the server
requests it knows, through a real runner, with the official SDK client on both sides of the comparison.

The fixture server `asks_for_input.py` speaks only 2026-07-28. The SDK client in `legacy` mode (handshake
era) gets elicitation and sampling requests on its call's SSE stream, answers them, and sees only the final
result; in `2026-07-28` mode it gets the same final result, the SDK doing the rounds itself (passed through
unchanged). A client that cannot answer gets a clear error, and the server is never left waiting.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import runnerlib as harness

Runners, fault_server = harness.Runners, harness.fault_server


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def _call(url: str, tool: str, *, mode: str, answer: bool = True) -> tuple[str, bool, list[str]]:
    from mcp import Client, types

    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> Any:
        asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"ok": True})

    async def sample(context: Any, params: Any) -> Any:
        asked.append("sampling")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="Lisbon"),
                                         model="test-model")

    callbacks: dict[str, Any] = {"elicitation_callback": elicit, "sampling_callback": sample} if answer else {}
    from mcp.shared.exceptions import MCPError

    async with Client(url, mode=mode, **callbacks) as client:  # type: ignore[arg-type]
        try:
            result = await client.call_tool(tool, {})
        except MCPError as exc:   # a JSON-RPC error answer
            return str(exc), True, asked
        return _text(result), bool(result.is_error), asked


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_one_round_of_elicitation_reaches_the_client_and_the_final_result_comes_back(
        runners: Runners, mode: str) -> None:
    runner = runners.start(fault_server("asks_for_input"))
    text, failed, asked = asyncio.run(_call(runner.url, "confirm", mode=mode))
    assert not failed, text
    assert text == 'confirmed: {"action": "accept", "content": {"ok": true}}'
    assert asked == ["elicitation"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_two_rounds_sampling_then_elicitation_keep_the_servers_state(runners: Runners, mode: str) -> None:
    runner = runners.start(fault_server("asks_for_input"))
    text, failed, asked = asyncio.run(_call(runner.url, "plan_trip", mode=mode))
    assert (text, failed, asked) == ("trip to Lisbon: accept", False, ["sampling", "elicitation"])


def test_a_client_without_the_capability_gets_an_error_that_says_why(runners: Runners) -> None:
    runner = runners.start(fault_server("asks_for_input"))
    text, failed, asked = asyncio.run(_call(runner.url, "confirm", mode="legacy", answer=False))
    assert failed and asked == []
    assert "did not declare elicitation" in text, text
    # the runner and its server go on answering
    _, add_failed, _ = asyncio.run(_call(runner.url, "echo", mode="legacy", answer=False))
    assert add_failed   # echo without a message: the server's own tool error, so the round trip works


def test_a_2026_07_28_client_is_never_sent_a_server_request(runners: Runners) -> None:
    """That era has no server-to-client requests (it asks with input_required): when a handshake-era server asks
    for sampling during such a client's call, the server is told no client can answer, at once."""
    import json

    import httpx

    runner = runners.start([sys.executable, "-u", str(harness.SERVERS_DIR / "traffic.py")])
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "sample", "arguments": {"prompt": "hi"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "tools/call", "Mcp-Name": "sample"}
    answer = httpx.post(runner.url, json=call, headers=headers, timeout=harness.WAIT_S)
    messages = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")] \
        if answer.headers.get("content-type", "").startswith("text/event-stream") else [answer.json()]
    assert all(m.get("method") != "sampling/createMessage" for m in messages), messages
    assert messages[-1].get("id") == 1, messages
