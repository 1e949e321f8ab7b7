"""The session's GET stream behind a real runner: resumable with Last-Event-ID, and logs only where asked;
and a POST's own SSE stream, dropped mid-call, resumed with GET + Last-Event-ID up to its answer.

A client whose stream dropped reconnects with the last event id it saw and gets what it missed, in order; a
client that reconnects without one starts fresh. A log message tied to no request reaches the sessions that
asked for its level (logging/setLevel), and no one else. Waits are bounded (httpx timeouts, asyncio.wait_for).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import runnerlib as harness

Runner, Runners = harness.Runner, harness.Runners
post, rpc, initialize, fault_server = harness.post, harness.rpc, harness.initialize, harness.fault_server
WAIT_S = harness.WAIT_S


def _call(runner: Runner, session: str, tool: str, **arguments: Any) -> None:
    answer = post(runner, rpc("tools/call", 1, {"name": tool, "arguments": arguments}), session=session,
                  headers={"Accept": "application/json"}).json()
    assert "result" in answer, answer


async def _events(runner: Runner, session: str, count: int, *, last_event_id: str | None = None,
                  then: Any = None) -> list[tuple[str | None, dict[str, Any]]]:
    """Open the GET stream, run `then()` once it is open, and read `count` events (id, message)."""
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    seen: list[tuple[str | None, dict[str, Any]]] = []
    async with httpx.AsyncClient(timeout=WAIT_S) as http, http.stream("GET", runner.url, headers=headers) as response:
        assert response.status_code == 200
        if then is not None:
            await asyncio.to_thread(then)
        event_id = None

        async def read() -> None:
            nonlocal event_id
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    seen.append((event_id, json.loads(line[6:])))
                    event_id = None
                    if len(seen) == count:
                        return

        if count:
            await asyncio.wait_for(read(), WAIT_S)
    return seen


def test_a_dropped_stream_resumes_with_last_event_id_and_misses_nothing(runners: Runners) -> None:
    runner = runners.start(fault_server("announces"))
    session = initialize(runner).headers["mcp-session-id"]
    first = asyncio.run(_events(runner, session, 1, then=lambda: _call(runner, session, "announce")))
    (last_id, message), = first
    assert last_id and message["method"] == "notifications/tools/list_changed"
    _call(runner, session, "announce", count=3)   # while the client has no stream open
    resumed = asyncio.run(_events(runner, session, 3, last_event_id=last_id))
    ids = [event_id for event_id, _ in resumed]
    assert all(ids) and len(set(ids)) == 3 and last_id not in ids
    assert [m["method"] for _, m in resumed] == ["notifications/tools/list_changed"] * 3
    # reconnecting without Last-Event-ID starts fresh: only what happens from then on
    fresh = asyncio.run(_events(runner, session, 1, then=lambda: _call(runner, session, "announce")))
    assert fresh[0][0] not in ids


def test_an_unknown_last_event_id_replays_nothing(runners: Runners) -> None:
    runner = runners.start(fault_server("announces"))
    session = initialize(runner).headers["mcp-session-id"]
    assert "result" in post(runner, rpc("logging/setLevel", 2, {"level": "debug"}), session=session).json()
    asyncio.run(_events(runner, session, 1, then=lambda: _call(runner, session, "log", data="seen")))
    _call(runner, session, "log", data="missed")   # while the stream is down
    heard = asyncio.run(_events(runner, session, 1, last_event_id="another-runners-7",
                                then=lambda: _call(runner, session, "log", data="new")))
    assert [m["params"]["data"] for _, m in heard] == ["new"]


def test_unrelated_log_messages_reach_only_sessions_that_asked_for_their_level(runners: Runners) -> None:
    runner = runners.start(fault_server("announces"))
    warned, silent = (initialize(runner).headers["mcp-session-id"] for _ in range(2))
    assert "result" in post(runner, rpc("logging/setLevel", 2, {"level": "warning"}), session=warned).json()

    def trigger() -> None:
        _call(runner, silent, "log", level="debug", data="too low")
        _call(runner, silent, "log", level="error", data="for warned")

    async def both() -> tuple[Any, Any]:
        heard_warned = asyncio.create_task(_events(runner, warned, 1))
        heard_silent = asyncio.create_task(_events(runner, silent, 0))
        await asyncio.sleep(0)   # let both streams open before the logs go out
        await asyncio.to_thread(trigger)
        return await heard_warned, await heard_silent

    heard_warned, _ = asyncio.run(both())
    assert [m["params"]["data"] for _, m in heard_warned] == ["for warned"]


# --- a POST's own SSE stream, dropped mid-call --------------------------------------------------------------

def _first_event_then_drop(runner: Runner, session: str, gate: str) -> tuple[str, dict[str, Any]]:
    """POST a call that reports progress 1/2 and then waits on `gate`; read that first event and hang up."""
    call = rpc("tools/call", 7, {"name": "progress_gated", "arguments": {"label": "long", "gate": gate},
                                 "_meta": {"progressToken": "mine"}})
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": session}
    with httpx.Client(timeout=WAIT_S) as http, http.stream("POST", runner.url, json=call, headers=headers) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in reply.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                assert event_id is not None, "a handshake-era session's POST stream numbers its events"
                return event_id, json.loads(line[6:])
    raise AssertionError("the POST stream ended before its first event")


def test_a_post_stream_dropped_mid_call_resumes_with_last_event_id_up_to_the_answer(runners: Runners) -> None:
    runner = runners.start(fault_server("traffic"))
    session = initialize(runner).headers["mcp-session-id"]
    last_id, first = _first_event_then_drop(runner, session, "g1")
    assert first["params"]["message"] == "long before" and first["params"]["progressToken"] == "mine"

    rest = asyncio.run(_events(runner, session, 2, last_event_id=last_id,
                               then=lambda: _call(runner, session, "open_gate", gate="g1")))
    progress, answer = (message for _, message in rest)
    assert progress["params"]["message"] == "long after" and progress["params"]["progressToken"] == "mine"
    assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == "long done"
    assert all(event_id and event_id != last_id for event_id, _ in rest)

    # the answer was read: the session keeps nothing of that stream; resuming it again is refused plainly, and
    # the session's own GET stream is not disturbed by the attempt
    again = httpx.get(runner.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": session,
                                           "Last-Event-ID": last_id}, timeout=WAIT_S)
    assert again.status_code == 400 and "no longer keeps" in again.text


def test_a_call_its_client_cancels_is_answered_at_once_not_at_the_timeout(runners: Runners) -> None:
    runner = runners.start(fault_server("traffic"))
    session = initialize(runner).headers["mcp-session-id"]
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": session}

    async def call_then_cancel() -> dict[str, Any]:
        call = rpc("tools/call", 9, {"name": "wait", "arguments": {"gate": "never", "label": "c"},
                                     "_meta": {"progressToken": "t"}})
        async with httpx.AsyncClient(timeout=WAIT_S) as http, \
                http.stream("POST", runner.url, json=call, headers=headers) as reply:
            lines = reply.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):   # "c waiting": the call is in the server's hands
                    break
            cancelled = await http.post(runner.url, headers=headers, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}})
            assert cancelled.status_code == 202
            async for line in lines:
                if line.startswith("data: "):
                    return json.loads(line[6:])
        raise AssertionError("the POST stream ended without an answer")

    answer = asyncio.run(asyncio.wait_for(call_then_cancel(), WAIT_S))
    assert answer["id"] == 9 and answer["error"]["code"] == -32800


def test_a_post_stream_whose_answer_came_while_the_client_was_away_replays_it_whole(runners: Runners) -> None:
    runner = runners.start(fault_server("traffic"))
    session = initialize(runner).headers["mcp-session-id"]
    last_id, _ = _first_event_then_drop(runner, session, "g2")
    _call(runner, session, "open_gate", gate="g2")   # the call finishes while no one reads its stream
    rest = asyncio.run(_events(runner, session, 2, last_event_id=last_id))
    assert [message.get("id", message.get("method")) for _, message in rest] == ["notifications/progress", 7]
