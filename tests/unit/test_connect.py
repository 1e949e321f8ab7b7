"""`mcp-reconcile connect` against a small Streamable HTTP endpoint written here (real sockets on 127.0.0.1),
which can be told to fail: 503s, a refused port, a forgotten session, a cut stream.

The bridge runs in-process (its stdin a real pipe, its stdout a queue of lines) so a short retry budget can
be given; `main` runs as the CLI does, in a subprocess. Every wait is on an event with a bound.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mcp_reconcile.connect import Locator
from mcp_reconcile.connecthttp import Target
from mcp_reconcile.stdiobridge import Bridge

# Bound on every wait in these tests (the box is shared: generous, never reached when things work).
WAIT_S = 20.0
INIT_PARAMS = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
               "clientInfo": {"name": "unit", "version": "1"}}


class Endpoint:
    """An MCP endpoint with sessions, SSE answers, a GET stream, and faults on request."""

    def __init__(self, port: int = 0) -> None:
        self.sessions: set[str] = set()
        self.seen: list[tuple[str, dict[str, str], dict[str, Any] | None]] = []   # method, headers, body
        self.changed = threading.Condition()
        self.fail_next: list[int] = []        # statuses answered to the next POSTs instead of serving them
        self.release = threading.Event()      # lets the `slow` tool answer
        self.stream: queue.Queue[dict[str, Any] | None] = queue.Queue()   # to the GET stream; None ends it
        self.event_ids = 0
        self.opened = 0                       # sessions opened so far (ids s0, s1, ...)
        self.token: str | None = None
        self._start(port)

    def _start(self, port: int) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.record("POST", self.headers, body)
                if endpoint.token and self.headers.get("Authorization") != f"Bearer {endpoint.token}":
                    return self.reply(401, b"unauthorized\n", "text/plain")
                if endpoint.fail_next:
                    return self.reply(endpoint.fail_next.pop(0), b"", "text/plain")
                sid = self.headers.get("Mcp-Session-Id")
                if body.get("method") == "initialize":
                    sid, endpoint.opened = f"s{endpoint.opened}", endpoint.opened + 1
                    endpoint.sessions.add(sid)
                    result = {"protocolVersion": body["params"]["protocolVersion"], "capabilities": {},
                              "serverInfo": {"name": "endpoint", "version": "1"}}
                    return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode(),
                                      "application/json", [("Mcp-Session-Id", sid)])
                if sid not in endpoint.sessions:
                    error = {"jsonrpc": "2.0", "id": body.get("id"), "error": {"code": -32600, "message": "no session"}}
                    return self.reply(404, json.dumps(error).encode(), "application/json")
                if "id" not in body or "method" not in body:
                    return self.reply(202, b"", "text/plain")
                name = (body.get("params") or {}).get("name")
                if name == "slow":   # an SSE answer: progress, then (once released) the result
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    self.event({"jsonrpc": "2.0", "method": "notifications/progress",
                                "params": {"progressToken": "p", "progress": 1}})
                    endpoint.release.wait(WAIT_S)
                    return self.event({"jsonrpc": "2.0", "id": body["id"], "result": {"content": [], "slow": True}})
                result = {"echo": body.get("params"), "session": sid}
                self.reply(200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode(),
                           "application/json")

            def do_GET(self) -> None:
                endpoint.record("GET", self.headers, None)
                if self.headers.get("Mcp-Session-Id") not in endpoint.sessions:
                    return self.reply(404, b"session not found\n", "text/plain")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                while (message := endpoint.stream.get(timeout=WAIT_S)) is not None:
                    endpoint.event_ids += 1
                    self.event(message, event_id=str(endpoint.event_ids))

            def do_DELETE(self) -> None:
                endpoint.record("DELETE", self.headers, None)
                endpoint.sessions.discard(self.headers.get("Mcp-Session-Id", ""))
                self.reply(204, b"", "text/plain")

            def reply(self, status: int, body: bytes, ctype: str, headers: list[tuple[str, str]] = ()) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def event(self, message: dict[str, Any], event_id: str | None = None) -> None:
                head = f"id: {event_id}\n" if event_id else ""
                self.wfile.write(f"{head}event: message\ndata: {json.dumps(message)}\n\n".encode())
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, method: str, headers: Any, body: dict[str, Any] | None) -> None:
        with self.changed:
            self.seen.append((method, dict(headers.items()), body))
            self.changed.notify_all()

    def wait_for(self, what: str, predicate: Any) -> list[tuple[str, dict[str, str], dict[str, Any] | None]]:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.seen), timeout=WAIT_S), \
                f"timed out waiting for {what}; seen: {self.seen}"
            return list(self.seen)

    def posted(self, method: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, b) for m, h, b in self.seen if m == "POST" and b is not None and b.get("method") == method]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        self.stop()
        self._start(self.port)


class Client:
    """The stdio side: a real pipe into the bridge, its output lines in a queue."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        read_fd, self._write_fd = os.pipe()
        self.exit_code: list[int] = []
        stdin = os.fdopen(read_fd, "rb")
        self.thread = threading.Thread(target=lambda: self.exit_code.append(bridge.run(stdin)), daemon=True)
        self.thread.start()

    def write(self, line: bytes) -> None:  # the bridge's stdout
        self.lines.put(json.loads(line))

    def flush(self) -> None:
        pass

    def send(self, message: dict[str, Any]) -> None:
        os.write(self._write_fd, json.dumps(message).encode() + b"\n")

    def next(self) -> dict[str, Any]:
        return self.lines.get(timeout=WAIT_S)

    def answer(self, request_id: Any) -> dict[str, Any]:
        """The next line, which must be the response to `request_id`."""
        message = self.next()
        assert message.get("id") == request_id and "method" not in message, message
        return message

    def initialize(self, endpoint: Endpoint) -> dict[str, Any]:
        """The handshake, done when the endpoint has the `initialized` notification (faults may follow)."""
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
        answer = self.answer(0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        endpoint.wait_for("notifications/initialized", lambda _: endpoint.posted("notifications/initialized"))
        return answer

    def close(self) -> int:
        os.close(self._write_fd)
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the bridge did not leave after stdin closed"
        return self.exit_code[0]


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.release.set()
    ep.stream.put(None)
    ep.stop()


def bridge_to(endpoint: Endpoint, *, retry_budget_s: float = WAIT_S, token: str | None = None) -> Client:
    client = Client.__new__(Client)
    bridge = Bridge(lambda: Target(endpoint.port, "/mcp", token, "EP_TOKEN"), client,  # type: ignore[arg-type]
                    name="unit", retry_budget_s=retry_budget_s, drain_timeout_s=WAIT_S)
    Client.__init__(client, bridge)
    return client


def call(request_id: int, name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def test_messages_carry_the_session_and_version_and_an_sse_answer_arrives_line_by_line(endpoint) -> None:
    client = bridge_to(endpoint)
    assert client.initialize(endpoint)["result"]["protocolVersion"] == "2025-06-18"
    endpoint.release.set()
    client.send(call(1, "slow"))
    progress = client.next()
    assert progress["method"] == "notifications/progress"
    assert client.answer(1)["result"]["slow"] is True
    headers, _ = endpoint.posted("tools/call")[0]
    assert headers["Mcp-Session-Id"] == "s0" and headers["MCP-Protocol-Version"] == "2025-06-18"
    assert headers["Accept"] == "application/json, text/event-stream"
    assert headers["Content-Type"] == "application/json"
    assert "Mcp-Session-Id" not in endpoint.posted("initialize")[0][0]
    assert client.close() == 0


def test_a_long_call_blocks_neither_the_next_request_nor_its_cancellation(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    client.send(call(1, "slow"))
    assert client.next()["method"] == "notifications/progress"   # the slow call is in flight now
    client.send(call(2, "echo"))
    assert client.answer(2)["result"]["session"] == "s0"
    client.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}})
    endpoint.wait_for("the cancellation", lambda seen: endpoint.posted("notifications/cancelled"))
    endpoint.release.set()
    assert client.answer(1)["result"]["slow"] is True
    client.close()


def test_503s_are_retried_in_the_same_session_and_answered_once(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    endpoint.fail_next = [503, 502, 503]
    client.send(call(1, "echo"))
    assert client.answer(1)["result"]["session"] == "s0"
    assert len(endpoint.posted("tools/call")) == 4
    assert {h["Mcp-Session-Id"] for h, _ in endpoint.posted("tools/call")} == {"s0"}
    client.close()
    assert client.lines.empty()


def test_a_request_sent_while_the_endpoint_is_down_is_answered_when_it_is_back(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    endpoint.stop()   # connection refused from now on
    client.send(call(1, "echo"))
    endpoint.restart()   # the same port, and it still knows the session (as runners do)
    endpoint.sessions.add("s0")
    assert client.answer(1)["result"]["session"] == "s0"
    client.close()


def test_a_forgotten_session_is_opened_again_with_the_clients_own_initialize(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    endpoint.sessions.clear()
    client.send(call(1, "echo"))
    answer = client.answer(1)
    replayed = endpoint.posted("initialize")
    assert len(replayed) == 2 and replayed[1][1]["params"] == INIT_PARAMS
    new_session = answer["result"]["session"]
    assert new_session != "s0"
    initialized = endpoint.posted("notifications/initialized")
    assert initialized[-1][0]["Mcp-Session-Id"] == new_session
    client.close()
    assert client.lines.empty(), "the replayed initialize's answer is the bridge's, not the client's"


def test_past_the_retry_budget_a_request_is_answered_with_an_error_naming_the_endpoint(endpoint) -> None:
    client = bridge_to(endpoint, retry_budget_s=0.3)
    client.initialize(endpoint)
    endpoint.stop()
    client.send(call(1, "echo"))
    error = client.answer(1)["error"]
    assert error["code"] == -32000
    assert f"http://127.0.0.1:{endpoint.port}/mcp" in error["message"] and "unreachable" in error["message"]
    endpoint.restart()
    endpoint.sessions.add("s0")
    client.send(call(2, "echo"))   # the bridge is still there
    assert client.answer(2)["result"]["session"] == "s0"
    client.close()


def test_a_missing_token_is_explained_in_the_error(endpoint) -> None:
    endpoint.token = "right"
    client = bridge_to(endpoint, token="t0ken-given")
    client.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS})
    error = client.answer(0)["error"]
    assert "bearer token" in error["message"] and "EP_TOKEN" in error["message"]
    assert "t0ken-given" not in error["message"]
    client.close()


def test_the_session_stream_delivers_server_messages_and_is_reopened_from_the_last_event_id(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    endpoint.wait_for("the GET stream", lambda seen: any(m == "GET" for m, _, _ in seen))
    endpoint.stream.put({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    assert client.next() == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    endpoint.stream.put({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {}})
    assert client.next()["method"] == "sampling/createMessage"
    client.send({"jsonrpc": "2.0", "id": 7, "result": {"role": "assistant"}})
    endpoint.wait_for("the client's answer", lambda seen: any(
        b is not None and b.get("id") == 7 and "result" in b for _, _, b in seen))
    answer_headers = next(h for m, h, b in endpoint.seen if b is not None and b.get("id") == 7)
    assert answer_headers["Mcp-Session-Id"] == "s0"
    endpoint.stream.put(None)   # the server ends the stream: the bridge opens it again
    seen = endpoint.wait_for("the GET stream reopened", lambda seen: sum(m == "GET" for m, _, _ in seen) >= 2)
    reopened = [h for m, h, _ in seen if m == "GET"][1]
    assert reopened["Last-Event-ID"] == "2" and reopened["Mcp-Session-Id"] == "s0"
    client.close()


def test_closing_stdin_lets_the_request_in_flight_finish_then_ends_the_session(endpoint) -> None:
    client = bridge_to(endpoint)
    client.initialize(endpoint)
    client.send(call(1, "slow"))
    assert client.next()["method"] == "notifications/progress"
    os.close(client._write_fd)   # stdin closes while the call is in flight
    endpoint.release.set()
    assert client.answer(1)["result"]["slow"] is True
    client.thread.join(WAIT_S)
    assert client.exit_code == [0]
    seen = endpoint.wait_for("the DELETE", lambda seen: any(m == "DELETE" for m, _, _ in seen))
    assert [h["Mcp-Session-Id"] for m, h, _ in seen if m == "DELETE"] == ["s0"]


# --- the command --------------------------------------------------------------------------------------------

def connect(state_dir: Path, *args: str, env: dict[str, str] | None = None,
            stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mcp_reconcile", "connect", *args, "--state-dir", str(state_dir)],
                          input=stdin, capture_output=True, timeout=WAIT_S, env=env or dict(os.environ))


def test_an_unknown_server_is_an_error_naming_the_state_dir(tmp_path) -> None:
    done = connect(tmp_path, "nosuch")
    assert done.returncode == 1
    assert b"nosuch" in done.stderr and str(tmp_path).encode() in done.stderr
    assert done.stdout == b""


def test_a_required_token_missing_from_the_environment_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "srv.json").write_text(json.dumps(
        {"server": "srv", "port": 1, "endpoint": "http://127.0.0.1:1/x/mcp", "token_env": "SRV_TOKEN"}))
    env = {k: v for k, v in os.environ.items() if k != "SRV_TOKEN"}
    done = connect(tmp_path, "srv", env=env)
    assert done.returncode == 1 and b"SRV_TOKEN" in done.stderr


def test_the_command_forwards_with_the_token_from_its_environment_and_never_prints_it(tmp_path, endpoint) -> None:
    endpoint.token = "s3cret-value"
    (tmp_path / "ports.json").write_text(json.dumps({"srv": endpoint.port}))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "srv.json").write_text(json.dumps(
        {"server": "srv", "port": endpoint.port, "endpoint": f"http://127.0.0.1:{endpoint.port}/mcp",
         "token_env": "SRV_TOKEN"}))
    lines = [{"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}, call(1, "echo")]
    done = connect(tmp_path, "srv", env={**os.environ, "SRV_TOKEN": "s3cret-value"},
                   stdin=b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["id"] for a in answers] == [0, 1] and "result" in answers[1]
    assert b"s3cret" not in done.stderr
    assert any(m == "DELETE" for m, _, _ in endpoint.seen)


def test_sigterm_ends_the_session_and_exits_0_without_waiting_for_a_call_in_flight(tmp_path, endpoint) -> None:
    (tmp_path / "ports.json").write_text(json.dumps({"srv": endpoint.port}))
    bridge = subprocess.Popen([sys.executable, "-m", "mcp_reconcile", "connect", "srv", "--state-dir", str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert bridge.stdin is not None and bridge.stdout is not None
        for message in ({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT_PARAMS}, call(1, "slow")):
            bridge.stdin.write(json.dumps(message).encode() + b"\n")
            bridge.stdin.flush()
        assert json.loads(bridge.stdout.readline())["id"] == 0
        assert json.loads(bridge.stdout.readline())["method"] == "notifications/progress"   # the call is in flight
        bridge.terminate()
        assert bridge.wait(WAIT_S) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    endpoint.wait_for("the DELETE", lambda seen: any(m == "DELETE" for m, _, _ in seen))


def test_the_locator_reads_the_run_record_and_falls_back_to_ports_json(tmp_path) -> None:
    locator = Locator(tmp_path, "srv", environ={"T": "tok"})
    assert locator.find() is None
    (tmp_path / "ports.json").write_text(json.dumps({"srv": 24001}))
    assert locator() == Target(24001, "/mcp", None, None)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "srv.json").write_text(json.dumps(
        {"server": "srv", "port": 24002, "endpoint": "http://127.0.0.1:24002/a/mcp", "token_env": "T"}))
    assert locator() == Target(24002, "/a/mcp", "tok", "T")
    (tmp_path / "run" / "srv.json").write_text(json.dumps({"server": "srv", "port": None, "endpoint": None}))
    assert locator() == Target(24001, "/a/mcp", "tok", "T"), "a starting runner's record keeps the last address"
