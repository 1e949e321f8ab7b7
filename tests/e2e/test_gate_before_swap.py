"""A gated server's planned restart: the new generation passes its gate before it takes over, or never does.

The fixture `prefixed_echo.py` answers `echo` with env ECHO_PREFIX first, and the manifest's contract call
expects "good-". An env edit to "bad-" makes the new generation fail its gate: the restart fails with the
gate's reason and the old generation goes on serving at the same URL, same process, same answers.
"""

from __future__ import annotations

from typing import Any

import httpx


def _spec(local: Any, prefix: str) -> dict[str, Any]:
    return {"source": {"path": str(local.fault_server("prefixed_echo.py"))}, "env": {"ECHO_PREFIX": prefix},
            "tests": {"gate": True, "calls": [{"tool": "echo", "arguments": {"message": "x"},
                                               "expect": {"contains": "good-x"}}]}}


def _echo(url: str) -> str:
    headers = {"Accept": "application/json, text/event-stream"}
    init = httpx.post(url, headers=headers, timeout=30, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}})
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    answer = httpx.post(url, headers=headers, timeout=30, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"message": "x"}}}).json()
    return str(answer["result"]["content"][0]["text"])


def test_a_new_generation_that_fails_its_gate_never_takes_over(local: Any) -> None:
    local.write_manifest("gated", _spec(local, "good-"))
    local.cli("apply")
    before = local.status()["gated"]
    assert before["ready"] and _echo(before["url"]) == "good-x"

    local.write_manifest("gated", _spec(local, "bad-"))
    failed = local.cli("apply", expect=1)
    assert "good-x" in failed.out + failed.err   # the gate's expectation, in the restart's failure
    after = local.status()["gated"]
    assert (after["url"], after["server_pid"]) == (before["url"], before["server_pid"])
    assert _echo(after["url"]) == "good-x"   # the old generation still serves


def test_a_new_generation_that_passes_its_gate_is_swapped_in_and_tested_once(local: Any) -> None:
    local.write_manifest("gated", _spec(local, "good-"))
    local.cli("apply")
    before = local.status()["gated"]
    spec = _spec(local, "good-")
    spec["env"]["OTHER"] = "changed"   # a planned restart that keeps the answers right
    local.write_manifest("gated", spec)
    done = local.cli("apply")
    assert "swapped in place" in done.out, done.out
    assert "passed before the swap" in done.out, done.out
    after = local.status()["gated"]
    assert after["url"] == before["url"] and after["server_pid"] != before["server_pid"]
    assert after["ready"], after   # the gate's verdict belongs to the process that now serves
