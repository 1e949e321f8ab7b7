"""The fault-injection servers of tests/fixtures/servers/ show their fault, and only it.

Each server runs as `python -u FILE` in a session of its own; tests talk raw JSON lines over its stdio. Every
wait is bounded (select on the pipes, the liveness socket, `Popen.wait(timeout=)`), and teardown kills each
process group, so a forked grandchild cannot outlive a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import liveness  # tests/fixtures/servers is on pytest's pythonpath (pyproject)
import pytest

from mcp_reconcile.proc import signal_group

SERVERS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
WAIT_S = 10.0  # bound on every wait for an event: generous, since other test runs share the 2 cores
Json = dict[str, Any]



class Pipe:
    """Line reader over a raw pipe fd with a bound on every read (no blocking readline)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def read_line(self, timeout_s: float = WAIT_S) -> bytes | None:
        """The next line without its newline; None at EOF; TimeoutError at the bound."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            if self.eof:
                rest, self.buffer = self.buffer, b""
                return rest or None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise TimeoutError(f"no line within {timeout_s}s")
            chunk = os.read(self.fd, 65536)
            self.buffer += chunk
            self.eof = not chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def read_until_eof(self, timeout_s: float = WAIT_S) -> list[bytes]:
        lines = []
        while (line := self.read_line(timeout_s)) is not None:
            lines.append(line)
        return lines

    def wait_for(self, needle: str, timeout_s: float = WAIT_S) -> bytes:
        """The first line containing `needle`."""
        while (line := self.read_line(timeout_s)) is not None:
            if needle.encode() in line:
                return line
        raise EOFError(f"pipe closed before a line with {needle!r}")


class RawServer:
    """A fault server spawned in its own session, spoken to in raw JSON lines."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        self.stdin = popen.stdin
        self.stdout = Pipe(popen.stdout.fileno())
        self.stderr = Pipe(popen.stderr.fileno())

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send_raw(self, data: bytes) -> None:
        self.stdin.write(data + b"\n")
        self.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_raw(json.dumps(message).encode())

    def request(self, request_id: int | str, method: str, params: Json | None = None) -> None:
        message: Json = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def read_message(self, timeout_s: float = WAIT_S) -> Json:
        line = self.stdout.read_line(timeout_s)
        if line is None:
            raise EOFError("server closed stdout")
        return json.loads(line)

    def call(self, request_id: int | str, method: str, params: Json | None = None) -> Json:
        """One request and its answer (a server that answers in order)."""
        self.request(request_id, method, params)
        return self.read_message()

    def initialize(self, version: str = "2025-06-18") -> Json:
        response = self.call(0, "initialize", {"protocolVersion": version, "capabilities": {},
                                               "clientInfo": {"name": "test", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return response

    def close_stdin(self) -> None:
        self.stdin.close()

    def wait(self, timeout_s: float = WAIT_S) -> int:
        return self.popen.wait(timeout=timeout_s)

    def kill_group(self) -> None:
        signal_group(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=WAIT_S)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None and not stream.closed:
                stream.close()


Spawn = Callable[..., RawServer]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `tests/fixtures/servers/NAME.py` with extra env; every group is SIGKILLed at teardown."""
    started: list[RawServer] = []

    def _spawn(name: str, **env: str) -> RawServer:
        popen = subprocess.Popen(
            [sys.executable, "-u", str(SERVERS_DIR / f"{name}.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env}, start_new_session=True)
        server = RawServer(popen)
        started.append(server)
        return server

    yield _spawn
    for server in started:
        server.kill_group()


@pytest.fixture
def listener() -> Iterator[Any]:
    with liveness.LivenessListener() as live:
        yield live


def _text(response: Json) -> str:
    return response["result"]["content"][0]["text"]


def _echo(message: str) -> Json:
    return {"name": "echo", "arguments": {"message": message}}


# -- the well-behaved core ---------------------------------------------------------------------------------

def test_well_behaved_speaks_the_handshake_era_protocol_and_exits_0_on_stdin_eof(spawn: Spawn) -> None:
    server = spawn("well_behaved")
    init = server.initialize("2025-03-26")
    assert init["id"] == 0
    assert init["result"]["protocolVersion"] == "2025-03-26"
    assert init["result"]["capabilities"] == {"tools": {}}
    assert init["result"]["serverInfo"]["name"] == "well-behaved"
    assert server.call(1, "ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    tools = server.call(2, "tools/list")["result"]["tools"]
    assert [tool["name"] for tool in tools] == ["echo"]
    assert tools[0]["inputSchema"]["required"] == ["message"]
    jsonschema.Draft202012Validator.check_schema(tools[0]["inputSchema"])
    assert server.call(3, "tools/call", _echo("hello")) == {
        "jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "hello"}]}}
    unknown_tool = server.call(4, "tools/call", {"name": "nope", "arguments": {}})
    assert unknown_tool["result"]["isError"] is True
    assert server.call(5, "resources/list")["error"]["code"] == -32601
    server.close_stdin()
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 0


def test_well_behaved_answers_an_unknown_protocol_version_with_2025_06_18(spawn: Spawn) -> None:
    assert spawn("well_behaved").initialize("1999-01-01")["result"]["protocolVersion"] == "2025-06-18"


def test_well_behaved_rejects_malformed_and_non_object_lines_and_keeps_serving(spawn: Spawn) -> None:
    server = spawn("well_behaved")
    server.initialize()
    server.send_raw(b"{this is not json")
    assert server.read_message() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
    for not_an_object in (b"[1, 2]", b"42"):
        server.send_raw(not_an_object)
        response = server.read_message()
        assert (response["id"], response["error"]["code"]) == (None, -32600)
    assert server.call(7, "ping")["result"] == {}


HANDSHAKE_SERVERS = [
    pytest.param("well_behaved", {}, id="well_behaved"),
    pytest.param("exit_after_n", {"EXIT_AFTER_N": "100"}, id="exit_after_n"),
    pytest.param("ignore_sigterm", {}, id="ignore_sigterm"),
    pytest.param("ignore_stdin_close", {}, id="ignore_stdin_close"),
    pytest.param("slow_initialize", {"SLOW_INIT_S": "0"}, id="slow_initialize"),
    pytest.param("slow_responses", {}, id="slow_responses"),
    pytest.param("hang_on_ping", {}, id="hang_on_ping"),
    pytest.param("crash_on_malformed", {}, id="crash_on_malformed"),
    pytest.param("invalid_input_schema", {}, id="invalid_input_schema"),
    pytest.param("forks_child", {}, id="forks_child"),
]


@pytest.mark.parametrize(("name", "env"), HANDSHAKE_SERVERS)
def test_a_handshake_era_fault_server_refuses_server_discover_and_its_liveness_socket_closes_when_killed(
        spawn: Spawn, listener: Any, name: str, env: dict[str, str]) -> None:
    server = spawn(name, **env, **listener.env())
    conn = listener.accept(WAIT_S)
    assert server.initialize()["result"]["protocolVersion"] == "2025-06-18"
    discover = server.call(1, "server/discover", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                            "io.modelcontextprotocol/clientCapabilities": {}}})
    assert discover["error"]["code"] == -32601
    server.kill_group()
    assert listener.wait_closed(conn, WAIT_S)


# -- one fault each ----------------------------------------------------------------------------------------

def test_crash_on_start_writes_to_stderr_and_exits_3(spawn: Spawn, listener: Any) -> None:
    server = spawn("crash_on_start", **listener.env())
    conn = listener.accept(WAIT_S)
    assert server.wait() == 3
    assert server.stderr.read_until_eof()
    assert listener.wait_closed(conn, WAIT_S)


def test_exit_after_n_exits_1_after_answering_n_requests(spawn: Spawn) -> None:
    server = spawn("exit_after_n", EXIT_AFTER_N="2")
    server.initialize()
    assert server.call(1, "ping")["result"] == {}
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 1


def test_ignore_sigterm_survives_sigterm_and_stdin_eof_until_sigkill(spawn: Spawn, listener: Any) -> None:
    server = spawn("ignore_sigterm", **listener.env())
    conn = listener.accept(WAIT_S)
    server.initialize()
    signal_group(server.pid, signal.SIGTERM)
    server.stderr.wait_for("ignoring SIGTERM")
    assert server.call(1, "ping")["result"] == {}  # the signal was delivered before this was read
    server.close_stdin()
    server.stderr.wait_for("staying alive")
    signal_group(server.pid, signal.SIGTERM)
    server.stderr.wait_for("ignoring SIGTERM")
    assert server.popen.poll() is None
    signal_group(server.pid, signal.SIGKILL)
    assert listener.wait_closed(conn, WAIT_S)
    assert server.wait() == -signal.SIGKILL


def test_ignore_stdin_close_stays_alive_after_eof_and_dies_on_sigterm(spawn: Spawn, listener: Any) -> None:
    server = spawn("ignore_stdin_close", **listener.env())
    conn = listener.accept(WAIT_S)
    server.initialize()
    server.close_stdin()
    server.stderr.wait_for("staying alive")
    assert server.popen.poll() is None
    signal_group(server.pid, signal.SIGTERM)
    assert listener.wait_closed(conn, WAIT_S)
    assert server.wait() == -signal.SIGTERM


def test_slow_initialize_answers_initialize_no_sooner_than_its_delay(spawn: Spawn) -> None:
    server = spawn("slow_initialize", SLOW_INIT_S="0.3")
    started = time.monotonic()
    assert server.initialize()["result"]["protocolVersion"] == "2025-06-18"
    assert time.monotonic() - started >= 0.3  # a lower bound the sleep guarantees, not a timing threshold


def test_slow_responses_delays_calls_and_pings_but_answers_every_one_in_flight(spawn: Spawn) -> None:
    server = spawn("slow_responses", SLOW_MS="200")
    server.initialize()
    started = time.monotonic()
    for request_id in range(1, 4):
        server.request(request_id, "tools/call", _echo(f"m{request_id}"))
    server.request(4, "ping")
    answers = {message["id"]: message for message in (server.read_message() for _ in range(4))}
    assert time.monotonic() - started >= 0.2  # lower bound guaranteed by the timer
    assert {request_id: _text(answers[request_id]) for request_id in (1, 2, 3)} == {1: "m1", 2: "m2", 3: "m3"}
    assert answers[4]["result"] == {}


def test_garbage_stdout_mixes_non_json_lines_among_correct_answers(spawn: Spawn) -> None:
    server = spawn("garbage_stdout")
    server.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    server.request(1, "ping")
    garbage, messages = [], []
    while len(messages) < 2:
        line = server.stdout.read_line()
        assert line is not None
        try:
            messages.append(json.loads(line))
        except ValueError:
            garbage.append(line)
    assert len(garbage) > len(messages)  # a banner first, then one line before every answer
    assert [message["id"] for message in messages] == [0, 1]
    assert messages[0]["result"]["protocolVersion"] == "2025-06-18"


def test_hang_on_ping_never_answers_ping_after_the_handshake(spawn: Spawn) -> None:
    server = spawn("hang_on_ping")
    server.initialize()
    server.request(1, "ping")
    assert server.call(2, "tools/list")["id"] == 2  # answered in order: the ping before it was dropped
    server.close_stdin()
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 0
    server.stderr.wait_for("not answering ping")


def test_hang_on_ping_with_star_drops_every_request_after_initialize(spawn: Spawn) -> None:
    server = spawn("hang_on_ping", HANG_METHODS="*")
    server.initialize()
    server.request(1, "tools/list")
    server.request(2, "ping")
    server.close_stdin()
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 0


def test_never_answers_stays_silent_even_to_initialize_and_bad_lines(spawn: Spawn) -> None:
    server = spawn("never_answers")
    server.request(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
    server.send_raw(b"{not json")
    server.request(1, "ping")
    server.close_stdin()
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 0


def test_crash_on_malformed_exits_2_on_a_line_that_is_not_json(spawn: Spawn) -> None:
    server = spawn("crash_on_malformed")
    server.initialize()
    server.send_raw(b"{not json")
    assert server.stdout.read_until_eof() == []
    assert server.wait() == 2


def test_wrong_ids_answers_the_handshake_right_and_then_offsets_ids(spawn: Spawn) -> None:
    server = spawn("wrong_ids")
    assert server.initialize()["id"] == 0
    assert server.call(7, "ping")["id"] == 1007
    assert server.call("abc", "ping")["id"] == "abc-wrong"


def test_wrong_ids_in_swap_mode_gives_each_request_in_flight_another_requests_result(spawn: Spawn) -> None:
    server = spawn("wrong_ids", WRONG_IDS_MODE="swap")
    server.initialize()
    server.request(10, "tools/call", _echo("a"))
    server.request(11, "tools/call", _echo("b"))
    answers = {message["id"]: _text(message) for message in (server.read_message(), server.read_message())}
    assert answers == {10: "b", 11: "a"}


def test_invalid_input_schema_advertises_a_schema_that_jsonschema_rejects(spawn: Spawn) -> None:
    server = spawn("invalid_input_schema")
    server.initialize()
    (tool,) = server.call(1, "tools/list")["result"]["tools"]
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft202012Validator.check_schema(tool["inputSchema"])
    assert _text(server.call(2, "tools/call", _echo("still works"))) == "still works"


def test_forks_child_leaves_a_grandchild_in_its_group_that_only_a_group_kill_ends(
        spawn: Spawn, listener: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    server = spawn("forks_child", CHILD_PID_FILE=str(pid_file), **listener.env())
    server_conn = listener.accept(WAIT_S)
    server.initialize()  # the pid file is written before the server reads stdin
    grandchild = int(pid_file.read_text())
    grandchild_conn = listener.accept(WAIT_S)
    assert grandchild != server.pid
    assert os.getpgid(grandchild) == os.getpgid(server.pid) == server.pid
    assert os.getsid(grandchild) == server.pid
    server.close_stdin()
    assert server.wait() == 0
    assert os.getpgid(grandchild) == server.pid  # orphaned, still in the group
    signal_group(server.pid, signal.SIGKILL)
    assert listener.wait_closed(grandchild_conn, WAIT_S)
    assert listener.wait_closed(server_conn, WAIT_S)


# -- the stateless era -------------------------------------------------------------------------------------

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}


def test_stateless_ok_answers_server_discover_and_marks_results_complete(spawn: Spawn) -> None:
    server = spawn("stateless_ok")
    assert server.call(1, "server/discover", {"_meta": MODERN_META})["result"] == {
        "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "resultType": "complete", "ttlMs": 0,
        "cacheScope": "private", "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "stateless-ok",
                                                                                  "version": "1"}}}
    listed = server.call(2, "tools/list", {"_meta": MODERN_META})["result"]
    assert ([tool["name"] for tool in listed["tools"]], listed["resultType"]) == (["echo"], "complete")
    called = server.call(3, "tools/call", {**_echo("hi"), "_meta": MODERN_META})["result"]
    assert called == {"content": [{"type": "text", "text": "hi"}], "resultType": "complete"}


def test_stateless_ok_refuses_the_handshake_ping_and_requests_without_the_envelope(spawn: Spawn) -> None:
    server = spawn("stateless_ok")
    refused = server.call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})["error"]
    assert (refused["code"], refused["data"]["supported"]) == (-32022, ["2026-07-28"])
    assert server.call(2, "ping", {"_meta": MODERN_META})["error"]["code"] == -32601
    assert server.call(3, "tools/list")["error"]["code"] == -32602
    old = {"_meta": {**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2025-06-18"}}
    assert server.call(4, "server/discover", old)["error"]["code"] == -32022


# -- the mcp SDK client against them -----------------------------------------------------------------------

async def _sdk_session(path: Path, mode: str) -> tuple[str, list[str], str]:
    from mcp import Client, StdioServerParameters  # the SDK costs 0.5 s to import: only these tests pay

    async with asyncio.timeout(WAIT_S):
        params = StdioServerParameters(command=sys.executable, args=["-u", str(path)])
        async with Client(params, mode=mode) as client:
            tools = await client.list_tools()
            called = await client.call_tool("echo", {"message": "via sdk"})
            text = called.content[0].text  # type: ignore[union-attr]
            return client.protocol_version, [tool.name for tool in tools.tools], text


def test_the_sdk_client_talks_to_well_behaved_in_legacy_mode() -> None:
    version, tools, text = asyncio.run(_sdk_session(SERVERS_DIR / "well_behaved.py", "legacy"))
    assert (version, tools, text) == ("2025-11-25", ["echo"], "via sdk")


def test_the_sdk_client_in_auto_mode_falls_back_to_the_handshake_on_well_behaved() -> None:
    version, _, _ = asyncio.run(_sdk_session(SERVERS_DIR / "well_behaved.py", "auto"))
    assert version == "2025-11-25"


def test_the_sdk_client_in_auto_mode_lands_on_2026_07_28_with_stateless_ok() -> None:
    version, tools, text = asyncio.run(_sdk_session(SERVERS_DIR / "stateless_ok.py", "auto"))
    assert (version, tools, text) == ("2026-07-28", ["echo"], "via sdk")
