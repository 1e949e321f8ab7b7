"""The runner shim end to end: real runner processes (started with proc.spawn_runner) over fault servers
from tests/fixtures/servers/ and, marked e2e, over the real server-everything (handshake era) and
mcp-server-time (stateless era) installed once per session from the registries.

Waits are bounded: on the runner's exit (Popen.wait), on pidfds of servers, on liveness sockets, or on the
run record reaching a state (polled: a file has no event). Teardown stops every runner and reaps every
server group it recorded, so a failing test leaves no process behind.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from runnerlib import (
    DISCOVER_META,
    EVERYTHING_PKG,
    TIME_PKG,
    WAIT_S,
    Runner,
    Runners,
    fault_server,
    initialize,
    is_gone,
    modern,
    post,
    rpc,
    wait_gone,
    wait_until,
)

from mcp_reconcile import proc


def test_a_handshake_server_is_served_with_a_session_for_each_client(runners: Runners) -> None:
    runner = runners.start(fault_server("well_behaved"))
    record = runner.wait_state("running")
    assert (record["era"], record["protocol_version"]) == ("handshake", "2025-11-25")
    assert record["endpoint"] == f"http://127.0.0.1:{record['port']}/mcp"
    first, second = initialize(runner, "2025-03-26"), initialize(runner)
    assert first.status_code == second.status_code == 200
    assert first.json()["result"]["protocolVersion"] == "2025-03-26"  # the client's, both handshake era
    assert first.json()["result"]["serverInfo"]["name"] == "well-behaved"  # the server's own result
    assert first.headers["mcp-session-id"] != second.headers["mcp-session-id"]
    session = first.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert post(runner, initialized, session=session).status_code == 202
    answer = post(runner, rpc("tools/call", "x-1", {"name": "echo", "arguments": {"message": "hi"}}),
                  session=session)
    assert answer.json() == {"jsonrpc": "2.0", "id": "x-1",
                             "result": {"content": [{"type": "text", "text": "hi"}]}}


def test_a_second_runner_for_the_same_server_starts_nothing_and_leaves_the_first_ones_record(
        runners: Runners) -> None:
    first = runners.start(fault_server("well_behaved"))
    record = first.wait_state("running")
    second = runners.start(fault_server("well_behaved"), wait=False)   # a racing controller's runner

    assert second.wait_exit() == 75   # EX_TEMPFAIL: run/srv.lock is held
    assert second.record() == record
    assert psutil.Process(record["server_pid"]).is_running()
    servers = [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == fault_server("well_behaved")]
    assert servers == [record["server_pid"]]
    assert "another runner already serves 'srv'" in second.log.read_text()


def test_the_endpoint_refuses_what_streamable_http_does_not_allow(runners: Runners) -> None:
    runner = runners.start(fault_server("well_behaved"))
    session = initialize(runner).headers["mcp-session-id"]
    assert httpx.get(runner.url, timeout=WAIT_S).status_code == 406   # GET is an SSE stream or nothing
    assert httpx.get(runner.url, headers={"Accept": "text/event-stream"}, timeout=WAIT_S).status_code == 400
    assert httpx.get(runner.url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": "nope"},
                     timeout=WAIT_S).status_code == 404
    assert httpx.post(runner.url.replace("/mcp", "/other"), json=rpc("ping"), timeout=WAIT_S).status_code == 404
    assert post(runner, rpc("ping")).status_code == 400  # no session
    assert post(runner, rpc("ping"), session="not-a-session").status_code == 404
    assert post(runner, [rpc("ping")], session=session).status_code == 400  # type: ignore[arg-type]
    not_json = httpx.post(runner.url, content=b"{nope", timeout=WAIT_S)
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, -32700)
    assert post(runner, rpc("ping"), session=session).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    delete = httpx.delete(runner.url, headers={"Mcp-Session-Id": session}, timeout=WAIT_S)
    assert delete.status_code == 204
    assert post(runner, rpc("ping"), session=session).status_code == 404


def test_a_stateless_server_serves_both_eras_without_sessions_for_modern_clients(runners: Runners) -> None:
    runner = runners.start(fault_server("stateless_ok"))
    record = runner.wait_state("running")
    assert (record["era"], record["protocol_version"]) == ("stateless", "2026-07-28")
    answer = post(runner, rpc("tools/list", 7, {"_meta": DISCOVER_META}), headers=modern("tools/list"))
    assert answer.status_code == 200
    assert "mcp-session-id" not in answer.headers
    assert answer.json()["id"] == 7
    assert [tool["name"] for tool in answer.json()["result"]["tools"]] == ["echo"]
    ping = post(runner, rpc("ping", 8, {"_meta": DISCOVER_META}), headers=modern("ping"))  # removed in 2026-07-28
    assert (ping.status_code, ping.json()["id"], ping.json()["error"]["code"]) == (404, 8, -32601)

    # a handshake-era client is served by translation: its own session, its ping goes to the server
    legacy = initialize(runner, "2025-06-18")
    assert legacy.status_code == 200, legacy.text
    result = legacy.json()["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "stateless-ok"
    session = legacy.headers["mcp-session-id"]
    assert post(runner, rpc("ping", 9), session=session).json() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    echoed = post(runner, rpc("tools/call", 10, {"name": "echo", "arguments": {"message": "hi"}}), session=session)
    assert echoed.json()["result"]["content"][0]["text"] == "hi"


def test_http_rules_of_each_era_are_kept(runners: Runners) -> None:
    runner = runners.start(fault_server("stateless_ok"))
    runner.wait_state("running")
    mismatch = post(runner, rpc("tools/list", 1, {"_meta": DISCOVER_META}), headers=modern("tools/list", "2025-06-18"))
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (400, -32020)
    other = post(runner, rpc("tools/list", 2, {"_meta": {**DISCOVER_META,
                                                        "io.modelcontextprotocol/protocolVersion": "2099-01-01"}}),
                 headers=modern("tools/list", "2099-01-01"))
    assert (other.status_code, other.json()["error"]["code"]) == (400, -32022)
    no_meta = post(runner, rpc("tools/list", 4, {}), headers=modern("tools/list"))
    assert (no_meta.status_code, no_meta.json()["error"]["code"]) == (400, -32602)
    wrong_method = post(runner, rpc("tools/list", 5, {"_meta": DISCOVER_META}), headers=modern("tools/call"))
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (400, -32020)
    session = initialize(runner).headers["mcp-session-id"]
    bogus = post(runner, rpc("tools/list", 3), session=session, headers={"MCP-Protocol-Version": "bogus"})
    assert bogus.status_code == 400


def test_a_client_asking_a_newer_version_than_the_server_speaks_is_told_the_servers(runners: Runners) -> None:
    runner = runners.start(fault_server("well_behaved"))
    runner.wait_state("running")
    served = runner.record()["protocol_version"]
    assert initialize(runner, "2025-11-25").json()["result"]["protocolVersion"] == served
    assert initialize(runner, "2024-11-05").json()["result"]["protocolVersion"] == "2024-11-05"
    assert initialize(runner, "1999-01-01").json()["result"]["protocolVersion"] == served


ASKS_THE_CLIENT = textwrap.dedent('''
    import json, sys
    def send(message):
        sys.stdout.write(json.dumps(message) + "\\n")
        sys.stdout.flush()
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        if message["method"] == "initialize":
            send({"jsonrpc": "2.0", "id": message["id"], "result": {"protocolVersion": "2025-06-18",
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "asks", "version": "1"}}})
        elif message["method"] == "tools/call":
            token = message["params"].get("_meta", {}).get("progressToken")
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": 1, "total": 2}})
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}})
            send({"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage", "params": {}})
            reply = json.loads(sys.stdin.readline())
            send({"jsonrpc": "2.0", "id": message["id"],
                  "result": {"content": [{"type": "text", "text": json.dumps(reply)}]}})
        else:
            send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "nope"}})
''')


def _sse_messages(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in lines if line.startswith("data: ")]


def test_server_messages_reach_the_client_whose_request_is_in_flight_over_sse(
        runners: Runners, tmp_path: Path) -> None:
    script = tmp_path / "asks_the_client.py"
    script.write_text(ASKS_THE_CLIENT)
    runner = runners.start([sys.executable, "-u", str(script)])
    capable = initialize(runner, capabilities={"sampling": {}}).headers["mcp-session-id"]

    async def call_and_answer_sampling() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": capable}
        call = rpc("tools/call", 3, {"name": "anything", "arguments": {}, "_meta": {"progressToken": "mine"}})
        async with httpx.AsyncClient(timeout=WAIT_S) as http, \
                http.stream("POST", runner.url, json=call, headers=headers) as response:
            assert response.headers["content-type"] == "text/event-stream"
            async for line in response.aiter_lines():
                for message in _sse_messages([line]):
                    seen.append(message)
                    if message.get("method") == "sampling/createMessage":
                        answered = await http.post(runner.url, headers=headers, json={
                            "jsonrpc": "2.0", "id": message["id"], "result": {"role": "assistant", "content": {
                                "type": "text", "text": "sampled"}, "model": "m"}})
                        assert answered.status_code == 202
        return seen

    seen = asyncio.run(call_and_answer_sampling())
    assert [m.get("method") for m in seen] == ["notifications/progress", "notifications/message",
                                               "sampling/createMessage", None]
    assert seen[0]["params"]["progressToken"] == "mine"   # the client's own token, not the runner's
    reply = json.loads(seen[-1]["result"]["content"][0]["text"])
    assert (reply["id"], reply["result"]["content"]["text"]) == ("srv-1", "sampled")   # the server's own id

    # a client that cannot sample: the server hears so, and the client gets a plain JSON answer
    plain = initialize(runner).headers["mcp-session-id"]
    answer = post(runner, rpc("tools/call", 4, {"name": "anything", "arguments": {}}), session=plain,
                  headers={"Accept": "application/json"}).json()
    reply = json.loads(answer["result"]["content"][0]["text"])
    assert (reply["id"], reply["error"]["code"]) == ("srv-1", -32601)
    assert "sampling" in reply["error"]["message"]


GIVES_UP_ON_THE_CLIENT = ASKS_THE_CLIENT.replace(
    'reply = json.loads(sys.stdin.readline())',
    'send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "srv-1", '
    '"reason": "took too long"}}); reply = "gave up"')


def test_a_server_cancelling_its_request_tells_the_client_holding_it_under_the_id_it_knows(
        runners: Runners, tmp_path: Path) -> None:
    script = tmp_path / "gives_up.py"
    script.write_text(GIVES_UP_ON_THE_CLIENT)
    runner = runners.start([sys.executable, "-u", str(script)])
    session = initialize(runner, capabilities={"sampling": {}}).headers["mcp-session-id"]
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": session}
    with httpx.Client(timeout=WAIT_S) as http:
        response = http.post(runner.url, json=rpc("tools/call", 3, {"name": "anything", "arguments": {}}),
                             headers=headers)
        seen = _sse_messages(response.text.splitlines())
        assert [m.get("method") for m in seen] == ["notifications/message", "sampling/createMessage",
                                                   "notifications/cancelled", None]
        asked, cancelled = seen[1], seen[2]
        assert cancelled["params"] == {"requestId": asked["id"], "reason": "took too long"}
        late = http.post(runner.url, headers=headers, json={"jsonrpc": "2.0", "id": asked["id"], "result": {}})
        assert late.status_code == 400   # nothing is open under that id any more


def test_a_server_that_crashes_on_start_leaves_its_exit_code_in_the_record(runners: Runners) -> None:
    runner = runners.start(fault_server("crash_on_start"))
    assert runner.wait_exit() == 3
    record = runner.record()
    assert record["state"] == "exited" and record["era"] is None
    assert record["exit"] is not None and (record["exit"]["code"], record["exit"]["signal"]) == (3, None)
    assert "refusing to start" in (runner.state.log_path("srv")).read_text()


def test_a_server_that_never_answers_fails_startup_at_the_bound(runners: Runners) -> None:
    runner = runners.start(fault_server("never_answers"), args=["--startup-timeout", "1"])
    assert runner.wait_exit() == 124
    record = runner.record()
    assert record["state"] == "exited" and record["exit"] is not None
    assert record["exit"]["code"] == 0  # it left when its stdin closed, first step of the stop sequence


def test_a_command_that_cannot_run_is_recorded_as_exit_127(runners: Runners, tmp_path: Path) -> None:
    runner = runners.start([str(tmp_path / "no-such-server")])
    assert runner.wait_exit() == 127
    assert runner.record()["exit"]["code"] == 127  # type: ignore[index]


def test_a_server_that_exits_by_itself_passes_its_exit_code_on(runners: Runners) -> None:
    # discover + initialize are two answers; the third request is answered, then the server exits 1
    runner = runners.start(fault_server("exit_after_n"), env={"EXIT_AFTER_N": "3"})
    session = initialize(runner).headers["mcp-session-id"]
    assert post(runner, rpc("ping"), session=session).json()["result"] == {}
    assert runner.wait_exit() == 1
    record = runner.record()
    assert record["state"] == "exited" and record["exit"]["code"] == 1  # type: ignore[index]


def test_stopping_the_runner_of_a_forking_server_leaves_no_grandchild(runners: Runners, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    runner = runners.start(fault_server("forks_child"), env={"CHILD_PID_FILE": str(pid_file)})
    runner.wait_state("running")
    grandchild = int(pid_file.read_text())
    pgid = runner.record()["server_pgid"]
    assert os.getpgid(grandchild) == pgid
    runner.popen.send_signal(signal.SIGTERM)
    assert runner.wait_exit() == 0
    assert runner.record()["state"] == "exited"
    assert wait_gone(grandchild) and is_gone(grandchild)
    assert proc.group_members(pgid) == []  # type: ignore[arg-type]


def test_the_runner_stays_lean_no_heavy_imports_and_no_openssl_for_tls(runners: Runners) -> None:
    runner = runners.start(fault_server("well_behaved"))
    runner.wait_state("running")
    assert "libssl" not in Path(f"/proc/{runner.popen.pid}/maps").read_text()
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, mcp_reconcile.runner; print(' '.join(sys.modules))"],
        check=True, capture_output=True, text=True, timeout=WAIT_S).stdout.split()
    heavy = {"psutil", "structlog", "jsonschema", "mcp", "yaml", "httpx", "pydantic", "anyio"}
    assert heavy.isdisjoint(name.split(".")[0] for name in imported)


# --- real servers from the registries ------------------------------------------------------------------------

def _install(argv: Sequence[str]) -> None:
    """Run one install step; a failure shows the package manager's own words."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def everything_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    prefix = tmp_path_factory.mktemp("npm")
    _install(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", EVERYTHING_PKG])
    return [str(prefix / "node_modules" / ".bin" / "mcp-server-everything")]


@pytest.fixture(scope="session")
def time_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    venv = tmp_path_factory.mktemp("pypi") / "venv"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "/work/main/.venv/bin/uv"
    _install([uv, "venv", "-q", str(venv)])
    _install([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), TIME_PKG])
    return [str(venv / "bin" / "mcp-server-time")]


async def _list_and_echo(url: str, tag: str, calls: int) -> tuple[list[str], list[str]]:
    from mcp import Client

    async with Client(url) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        results = await asyncio.gather(*(client.call_tool("echo", {"message": f"{tag}-{i}"})
                                         for i in range(calls)))
        return tools, [result.content[0].text for result in results]  # type: ignore[union-attr]


def _print_memory(runner: Runner, capsys: pytest.CaptureFixture[str], what: str) -> None:
    memory = psutil.Process(runner.popen.pid).memory_full_info()
    with capsys.disabled():
        print(f"\n[runner memory, {what}] rss {memory.rss / 2**20:.1f} MB, uss {memory.uss / 2**20:.1f} MB, "
              f"pss {memory.pss / 2**20:.1f} MB")


@pytest.mark.e2e
def test_server_everything_is_served_in_the_handshake_era(
        runners: Runners, everything_command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    runner = runners.start(everything_command)
    record = runner.wait_state("running")
    assert record["era"] == "handshake"
    live = psutil.Process(record["runner_pid"])
    assert record["runner_create_time"] == live.create_time()  # exactly psutil's
    assert record["runner_cmdline"] == live.cmdline()
    assert proc.is_same_process(record["runner_pid"], record["runner_create_time"], record["runner_cmdline"])
    assert (record["server_pid"], record["server_pgid"]) == (runner.server_pid, os.getpgid(runner.server_pid))
    tools, echoes = asyncio.run(_list_and_echo(runner.url, "one", 1))
    assert "echo" in tools and echoes == ["Echo: one-0"]
    _print_memory(runner, capsys, "server-everything attached, idle after one client")


@pytest.mark.e2e
def test_mcp_server_time_a_dual_era_server_serves_clients_of_both_eras(
        runners: Runners, time_command: list[str]) -> None:
    from mcp import Client

    runner = runners.start(time_command)
    record = runner.wait_state("running")
    assert record["era"] == "handshake"   # what today's clients speak; 2026-07-28 clients are translated

    async def use(mode: str) -> tuple[str, list[str], str]:
        async with Client(runner.url, mode=mode) as client:  # type: ignore[arg-type]
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("get_current_time", {"timezone": "Etc/UTC"})
            return client.protocol_version, tools, result.content[0].text  # type: ignore[union-attr]

    for mode, version in (("auto", "2026-07-28"), ("legacy", record["protocol_version"])):
        got, tools, text = asyncio.run(use(mode))
        assert got == version, mode
        assert "get_current_time" in tools and "Etc/UTC" in text, mode


@pytest.mark.e2e
def test_two_clients_at_once_each_get_their_own_answers(
        runners: Runners, everything_command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    runner = runners.start(everything_command)
    runner.wait_state("running")

    async def same_ids_at_once() -> list[dict[str, Any]]:
        sessions = [initialize(runner).headers["mcp-session-id"] for _ in range(2)]
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            return [reply.json() for reply in await asyncio.gather(*(
                http.post(runner.url, headers={"Mcp-Session-Id": session},
                          json=rpc("tools/call", 1, {"name": "echo", "arguments": {"message": tag}}))
                for session, tag in zip(sessions, ("A", "B"), strict=True)))]

    first, second = asyncio.run(same_ids_at_once())  # both clients chose id 1
    assert (first["id"], first["result"]["content"][0]["text"]) == (1, "Echo: A")
    assert (second["id"], second["result"]["content"][0]["text"]) == (1, "Echo: B")

    async def two_sdk_clients() -> list[tuple[list[str], list[str]]]:
        return list(await asyncio.gather(_list_and_echo(runner.url, "left", 20),
                                         _list_and_echo(runner.url, "right", 20)))

    (_, left), (_, right) = asyncio.run(two_sdk_clients())
    assert left == [f"Echo: left-{i}" for i in range(20)]
    assert right == [f"Echo: right-{i}" for i in range(20)]
    _print_memory(runner, capsys, "server-everything attached, after 2 clients x 20 concurrent calls")


@pytest.mark.e2e
def test_ping_goes_to_the_server_and_a_stopped_server_does_not_answer_it(
        runners: Runners, everything_command: list[str]) -> None:
    runner = runners.start(everything_command, args=["--request-timeout", "2"])
    runner.wait_state("running")
    session = initialize(runner).headers["mcp-session-id"]
    assert post(runner, rpc("ping", 5), session=session).json() == {"jsonrpc": "2.0", "id": 5, "result": {}}
    os.kill(runner.server_pid, signal.SIGSTOP)
    try:
        frozen = post(runner, rpc("ping", 6), session=session)
        assert frozen.status_code == 504  # the runner never answers ping itself
        assert frozen.json()["id"] == 6 and "error" in frozen.json()
    finally:
        os.kill(runner.server_pid, signal.SIGCONT)
    assert post(runner, rpc("ping", 7), session=session).json()["result"] == {}


@pytest.mark.e2e
def test_foreign_host_or_origin_gets_403_and_a_missing_token_401(
        runners: Runners, everything_command: list[str]) -> None:
    token = "s3cret-token-for-the-test"
    runner = runners.start(everything_command, args=["--token-env", "RUNNER_TEST_TOKEN"],
                           env={"RUNNER_TEST_TOKEN": token})
    runner.wait_state("running")
    bearer = {"Authorization": f"Bearer {token}"}
    assert initialize(runner, headers={**bearer, "Host": f"evil.example:{runner.port}"}).status_code == 403
    assert initialize(runner, headers={**bearer, "Origin": "http://evil.example"}).status_code == 403
    assert initialize(runner, headers={**bearer, "Origin": "http://localhost:5173"}).status_code == 200
    assert initialize(runner).status_code == 401
    assert initialize(runner, headers={"Authorization": "Bearer wrong"}).status_code == 401
    reply = initialize(runner, headers=bearer)
    assert reply.status_code == 200
    session = reply.headers["mcp-session-id"]
    env_dump = post(runner, rpc("tools/call", 2, {"name": "get-env", "arguments": {}}), session=session,
                    headers=bearer).json()
    text = env_dump["result"]["content"][0]["text"]
    assert "RUNNER_TEST_TOKEN" not in text and token not in text  # removed from the server's env


@pytest.mark.e2e
def test_sigterm_to_the_runner_records_the_exit_and_leaves_no_process(
        runners: Runners, everything_command: list[str]) -> None:
    runner = runners.start(everything_command)
    record = runner.wait_state("running")
    server_pid, pgid = record["server_pid"], record["server_pgid"]
    runner.popen.send_signal(signal.SIGTERM)
    assert runner.wait_exit() == 0
    record = runner.record()
    assert record["state"] == "exited" and record["exit"] is not None
    assert record["exit"]["code"] == 0  # it left on stdin close, within the stop timeout
    assert wait_gone(server_pid) and is_gone(server_pid)  # type: ignore[arg-type]
    assert proc.group_members(pgid) == []  # type: ignore[arg-type]


@pytest.mark.e2e
def test_kill_9_of_the_runner_takes_the_server_down_with_it(
        runners: Runners, everything_command: list[str]) -> None:
    runner = runners.start(everything_command)
    record = runner.wait_state("running")
    server_pid, pgid = record["server_pid"], record["server_pgid"]
    runner.popen.kill()
    assert runner.wait_exit() == -signal.SIGKILL
    assert wait_gone(server_pid) and is_gone(server_pid)  # type: ignore[arg-type]
    assert wait_until(lambda: proc.group_members(pgid) == [], what="empty server group")  # type: ignore[arg-type]
    assert runner.record()["state"] == "running"  # no exit record: the controller's next pass reaps


@pytest.mark.e2e
@pytest.mark.parametrize("server", ["everything", "time", "stateless_ok", "stateless_only"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_official_sdk_in_either_mode_uses_every_kind_of_server_through_the_endpoint(
        runners: Runners, request: pytest.FixtureRequest, server: str, mode: str) -> None:
    from mcp import Client

    command = {"everything": lambda: request.getfixturevalue("everything_command"),
               "time": lambda: request.getfixturevalue("time_command"),
               "stateless_ok": lambda: fault_server("stateless_ok"),
               "stateless_only": lambda: fault_server("stateless_only")}[server]()
    tool, arguments = {"everything": ("echo", {"message": "hi"}),
                       "time": ("get_current_time", {"timezone": "Etc/UTC"}),
                       "stateless_ok": ("echo", {"message": "hi"}),
                       "stateless_only": ("add", {"a": 1, "b": 2})}[server]
    runner = runners.start(command)
    runner.wait_state("running")

    async def use() -> tuple[list[str], bool]:
        async with Client(runner.url, mode=mode) as client:  # type: ignore[arg-type]
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool(tool, arguments)
            return tools, bool(result.is_error)

    tools, failed = asyncio.run(use())
    assert tool in tools and not failed


def test_keep_alive_survives_early_refusals_and_hostile_bodies_get_clear_statuses(runners: Runners) -> None:
    import http.client
    import socket

    runner = runners.start(fault_server("well_behaved"), env={"EP_TOKEN": "s3cret"},
                           args=["--token-env", "EP_TOKEN"])
    runner.wait_state("running")
    conn = http.client.HTTPConnection("127.0.0.1", runner.port, timeout=WAIT_S)
    body = json.dumps(rpc("initialize", 0, {"protocolVersion": "2025-06-18", "capabilities": {},
                                            "clientInfo": {"name": "t", "version": "1"}}))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    conn.request("POST", "/mcp", body=body, headers=headers)   # no token: refused before the body is read
    refused = conn.getresponse()
    refused.read()
    assert (refused.status, refused.getheader("connection")) == (401, "close")
    conn.request("POST", "/mcp", body=body, headers={**headers, "Authorization": "Bearer s3cret"})
    assert conn.getresponse().status == 200   # http.client reconnected: no BrokenPipe on the next request
    conn.close()

    auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    deep = httpx.post(runner.url, content=b"[" * 100_000 + b"]" * 100_000, headers=auth, timeout=WAIT_S)
    assert (deep.status_code, deep.json()["error"]["code"]) == (400, -32700)
    huge_headers = httpx.post(runner.url, json=rpc("ping"), timeout=WAIT_S,
                              headers={**auth, "X-Pad": "x" * 100_000})
    assert huge_headers.status_code == 431

    # a client that sends half a request head and stops is cut off (slowloris), not kept forever
    from mcp_reconcile import gateway

    with socket.create_connection(("127.0.0.1", runner.port), timeout=WAIT_S) as slow:
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.settimeout(gateway.HEADER_TIMEOUT_S + WAIT_S)
        started = time.monotonic()
        assert slow.recv(1) == b""   # closed by the runner
        assert time.monotonic() - started < gateway.HEADER_TIMEOUT_S + WAIT_S


def test_the_session_stream_carries_notifications_tied_to_no_request(runners: Runners, tmp_path: Path) -> None:
    script = tmp_path / "announces.py"
    script.write_text(textwrap.dedent('''
        import json, sys
        def send(message):
            sys.stdout.write(json.dumps(message) + "\\n")
            sys.stdout.flush()
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("method") == "initialize":
                send({"jsonrpc": "2.0", "id": message["id"], "result": {"protocolVersion": "2025-06-18",
                      "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "a", "version": "1"}}})
            elif message.get("method") == "tools/call":
                send({"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}})
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
            elif "id" in message and "method" in message:
                send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "nope"}})
    '''))
    runner = runners.start([sys.executable, "-u", str(script)])
    sessions = [initialize(runner).headers["mcp-session-id"] for _ in range(2)]

    async def listen_then_trigger() -> list[list[dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            async def listen(session: str, opened: asyncio.Event) -> list[dict[str, Any]]:
                headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
                async with http.stream("GET", runner.url, headers=headers) as response:
                    assert response.status_code == 200
                    opened.set()
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            return [json.loads(line[len("data: "):])]
                return []
            events = [asyncio.Event(), asyncio.Event()]
            listeners = [asyncio.create_task(listen(s, e)) for s, e in zip(sessions, events, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), WAIT_S)
            await http.post(runner.url, json=rpc("tools/call", 1, {"name": "x", "arguments": {}}),
                            headers={"Mcp-Session-Id": sessions[0], "Accept": "application/json"})
            return list(await asyncio.wait_for(asyncio.gather(*listeners), WAIT_S))

    heard = asyncio.run(listen_then_trigger())
    assert heard == [[{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]] * 2


TOOLS_FROM_ARGV = textwrap.dedent('''
    import json, sys
    def send(message):
        sys.stdout.write(json.dumps(message) + "\\n")
        sys.stdout.flush()
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue
        if message["method"] == "initialize":
            send({"jsonrpc": "2.0", "id": message["id"], "result": {"protocolVersion": "2025-06-18",
                  "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "t", "version": "1"}}})
        elif message["method"] == "tools/list":
            send({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": [
                {"name": name, "inputSchema": {"type": "object"}} for name in sys.argv[1:]]}})
        else:
            send({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "nope"}})
''')


def test_a_swap_keeps_the_old_generation_when_the_new_one_fails_and_announces_changed_tools(
        runners: Runners, tmp_path: Path) -> None:
    from mcp_reconcile.handover import ask_runner, control_address

    script = tmp_path / "tools.py"
    script.write_text(TOOLS_FROM_ARGV)
    runner = runners.start([sys.executable, "-u", str(script), "one"])
    record = runner.wait_state("running")
    assert record["swappable"] is True
    session = initialize(runner).headers["mcp-session-id"]
    address = control_address(str(runner.state.root), "srv")
    base = {"op": "replace", "state_dir": str(runner.state.root), "name": "srv", "env": dict(os.environ),
            "startup_timeout": 10}

    def ask(request: dict[str, Any]) -> dict[str, Any] | None:
        return asyncio.run(ask_runner(address, {**base, **request}, timeout_s=WAIT_S))

    failed = ask({"generation": "g2", "argv": fault_server("crash_on_start")})
    assert failed is not None and failed["ok"] is False and "keeps serving" in failed["error"]
    assert runner.record()["server_pid"] == record["server_pid"]
    assert ask({"name": "other", "generation": "g2", "argv": [sys.executable, str(script)]})["ok"] is False

    async def swap_while_listening() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session}
            async with http.stream("GET", runner.url, headers=headers) as stream:
                swapped = await ask_runner(address, {**base, "generation": "g3",
                                                     "argv": [sys.executable, "-u", str(script), "one", "two"]},
                                           timeout_s=WAIT_S)
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        return swapped, [json.loads(line[len("data: "):])]
        return swapped, []

    swapped, heard = asyncio.run(swap_while_listening())
    assert swapped is not None and swapped["ok"] is True, swapped
    assert heard == [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}]
    after = runner.record()
    assert (after["runner_pid"], after["generation"]) == (record["runner_pid"], "g3")
    assert after["server_pid"] != record["server_pid"]
    assert wait_gone(record["server_pid"])   # the old generation, drained, was stopped
    tools = post(runner, rpc("tools/list", 9), session=session).json()["result"]["tools"]
    assert [t["name"] for t in tools] == ["one", "two"]
