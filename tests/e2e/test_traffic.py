"""Everything a server sends besides responses reaches the right client through a runner's endpoint (issue 10).

Real runners over the Python-SDK fault server tests/fixtures/servers/traffic.py, and (marked e2e) over npm
server-everything compared with its own Streamable HTTP transport in the same test. The clients are the
official SDK's (`streamable_http_client` + `ClientSession`, handshake era) with sampling, elicitation, roots,
logging and message callbacks and a progress callback per call.

What a shared server can guarantee, and what it cannot: over one stdio connection a server's sampling request
carries no link to the call that caused it, so the runner hands it to the newest in-flight call whose client
declared the capability. Tested here for the shared default: progress always reaches its own caller (tokens
are remapped), a sampling request reaches the only capable caller in flight, a client without the capability
never gets one, and each of two clients whose requests are emitted one after the other gets its own. Two capable
clients both in flight when the requests come is the case only `--sessions isolated` (one server per client
session) can get right; that test runs the runner with the flag.

Every wait is on an event (a callback, a progress report, the GET stream's response head) with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import conformance  # tests/e2e/conformance.py (tests/e2e is on pytest's pythonpath)
import httpx2
import pytest
from mcp import ClientSession, types
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from runnerlib import runner_endpoint

# the SDK marks logging/sampling/roots deprecated as of 2026-07-28; handshake-era clients still use them
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")

SERVERS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "servers"
TRAFFIC = [sys.executable, "-u", str(SERVERS_DIR / "traffic.py")]
WAIT_S = 30.0   # bound on every wait for an event: generous, other test runs share the 2 cores


# --- a runner ------------------------------------------------------------------------------------------------

def runner_flags() -> str:
    """The runner's --help (which flags this checkout's runner has)."""
    return subprocess.run([sys.executable, "-m", "mcp_reconcile.runner", "--help"], capture_output=True,
                          text=True, timeout=60).stdout


# --- an SDK client that records what reaches it -----------------------------------------------------------------

@dataclass
class Client:
    """One SDK client's callbacks and what they saw. `capable=False` declares no sampling/elicitation/roots."""

    name: str
    capable: bool = True
    hold_sampling: anyio.Event | None = None          # the sampling callback answers only once this is set
    sampled: list[str] = field(default_factory=list)  # the prompts of the sampling requests that reached us
    sampling_arrived: anyio.Event = field(default_factory=anyio.Event)
    elicited: list[str] = field(default_factory=list)
    roots_asked: int = 0
    logs: list[tuple[str, Any]] = field(default_factory=list)
    notifications: list[str] = field(default_factory=list)
    list_changed: anyio.Event = field(default_factory=anyio.Event)
    get_stream: anyio.Event = field(default_factory=anyio.Event)   # the session's GET stream is open
    on_log: Callable[[types.LoggingMessageNotificationParams], Awaitable[None]] | None = None
    on_notification: Callable[[Any], Awaitable[None]] | None = None

    async def _sampling(self, context: ClientRequestContext,
                        params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        prompt = content.text if isinstance(content, types.TextContent) else repr(content)
        self.sampled.append(prompt)
        self.sampling_arrived.set()
        if self.hold_sampling is not None:
            await self.hold_sampling.wait()
        return types.CreateMessageResult(role="assistant", model="test-model",
                                         content=types.TextContent(type="text", text=f"{self.name} answers"))

    async def _elicitation(self, context: ClientRequestContext,
                           params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": f"{self.name}'s answer"})

    async def _roots(self, context: ClientRequestContext) -> types.ListRootsResult:
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri=f"file:///roots/{self.name}")])

    async def _logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append((params.level, params.data))
        if self.on_log is not None:
            await self.on_log(params)

    async def _message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str):
            self.notifications.append(method)
            if method == "notifications/tools/list_changed":
                self.list_changed.set()
            if self.on_notification is not None:
                await self.on_notification(message)

    def callbacks(self) -> dict[str, Any]:
        callbacks: dict[str, Any] = {"logging_callback": self._logging, "message_handler": self._message}
        if self.capable:
            callbacks.update(sampling_callback=self._sampling, elicitation_callback=self._elicitation,
                             list_roots_callback=self._roots)
        return callbacks


@asynccontextmanager
async def connect(url: str, client: Client) -> AsyncIterator[ClientSession]:
    """An initialized SDK session at `url`; `client.get_stream` is set once the GET stream's head arrives."""

    async def on_response(response: httpx2.Response) -> None:
        if response.request.method == "GET" and response.status_code == 200:
            client.get_stream.set()

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(WAIT_S, read=300.0), event_hooks={"response": [on_response]})
    async with http, streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write, **client.callbacks()) as session:
        await session.initialize()
        yield session


@dataclass
class Progress:
    """A progress callback that records, and can wake a waiter when a report with a given message arrives."""

    reports: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    seen: dict[str, anyio.Event] = field(default_factory=dict)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.reports.append((progress, total, message))
        self.event(message or "").set()

    def event(self, message: str) -> anyio.Event:
        return self.seen.setdefault(message, anyio.Event())

    async def wait_for(self, message: str) -> None:
        with anyio.fail_after(WAIT_S):
            await self.event(message).wait()


def text_of(result: Any) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one async scenario within the bound."""

    async def bounded() -> None:
        with anyio.fail_after(4 * WAIT_S):
            await scenario()

    anyio.run(bounded)


class Calls:
    """Tool calls started in the background, each with its own progress recorder, awaited at the end."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        self.group = group
        self.results: dict[str, Any] = {}

    def start(self, key: str, session: ClientSession, tool: str, arguments: dict[str, Any]) -> Progress:
        progress = Progress()

        async def call() -> None:
            self.results[key] = await session.call_tool(tool, arguments, progress_callback=progress)

        self.group.start_soon(call)
        return progress


# --- one client receives each kind ---------------------------------------------------------------------------

def test_a_handshake_sdk_client_receives_progress_logs_sampling_elicitation_roots_and_list_changed(
        tmp_path: Path) -> None:
    alice = Client("alice")

    async def scenario() -> None:
        async with connect(url, alice) as session:
            progress = Progress()
            result = await session.call_tool("progress", {"steps": 3, "label": "a"}, progress_callback=progress)
            assert text_of(result) == "a reported 3 steps"
            assert progress.reports == [(1, 3, "a 1/3"), (2, 3, "a 2/3"), (3, 3, "a 3/3")]

            await session.set_logging_level("warning")
            assert text_of(await session.call_tool("log_levels", {"label": "a"})) == "a logged 2"
            await session.set_logging_level("debug")
            assert text_of(await session.call_tool("log_levels", {"label": "b"})) == "b logged 4"
            assert alice.logs == [("warning", "a warning"), ("error", "a error"), ("debug", "b debug"),
                                  ("info", "b info"), ("warning", "b warning"), ("error", "b error")]

            assert text_of(await session.call_tool("sample", {"prompt": "hi"})) == "sampled 'hi': alice answers"
            assert alice.sampled == ["hi"]
            assert text_of(await session.call_tool("elicit", {"question": "what?"})) == "accept: alice's answer"
            assert alice.elicited == ["what?"]
            assert text_of(await session.call_tool("roots", {})) == "file:///roots/alice"
            assert alice.roots_asked == 1

            with anyio.fail_after(WAIT_S):
                await alice.get_stream.wait()   # list_changed is tied to no request: it rides the GET stream
            assert text_of(await session.call_tool("add_tool", {"name": "extra"})) == "added extra"
            with anyio.fail_after(WAIT_S):
                await alice.list_changed.wait()
            assert "extra" in {tool.name for tool in (await session.list_tools()).tools}
            assert text_of(await session.call_tool("extra", {})) == "extra works"

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


def test_list_changed_reaches_every_session_and_each_sees_the_new_tool(tmp_path: Path) -> None:
    alice, bob = Client("alice"), Client("bob", capable=False)

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b:
            with anyio.fail_after(WAIT_S):
                await alice.get_stream.wait()
                await bob.get_stream.wait()
            assert text_of(await a.call_tool("add_tool", {"name": "shared_extra"})) == "added shared_extra"
            with anyio.fail_after(WAIT_S):
                await alice.list_changed.wait()
                await bob.list_changed.wait()
            assert "shared_extra" in {tool.name for tool in (await b.list_tools()).tools}
            assert text_of(await b.call_tool("shared_extra", {})) == "shared_extra works"

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


# --- two clients at once -------------------------------------------------------------------------------------

def test_two_concurrent_clients_each_receive_only_their_own_progress(tmp_path: Path) -> None:
    """Both clients pick the same request ids and so the same progress tokens; the runner's remap keeps them
    apart while both calls are in flight and interleave."""
    alice, bob, opener = Client("alice"), Client("bob"), Client("opener", capable=False)

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b, connect(url, opener) as o, \
                anyio.create_task_group() as group:
            calls = Calls(group)
            a_progress = calls.start("a", a, "progress_gated", {"label": "a", "gate": "ga"})
            await a_progress.wait_for("a before")
            b_progress = calls.start("b", b, "progress_gated", {"label": "b", "gate": "gb"})
            await b_progress.wait_for("b before")
            await o.call_tool("open_gate", {"gate": "ga"})
            await a_progress.wait_for("a after")
            await o.call_tool("open_gate", {"gate": "gb"})
            await b_progress.wait_for("b after")
        assert a_progress.reports == [(1, 2, "a before"), (2, 2, "a after")]
        assert b_progress.reports == [(1, 2, "b before"), (2, 2, "b after")]
        assert (text_of(calls.results["a"]), text_of(calls.results["b"])) == ("a done", "b done")

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


def test_two_concurrent_clients_each_receive_only_their_own_sampling_request(tmp_path: Path) -> None:
    """Alice's request is still unanswered when Bob's call asks for his: both in flight at once, each with
    the request its own call caused."""
    release = anyio.Event()
    alice, bob = Client("alice", hold_sampling=release), Client("bob", hold_sampling=release)

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b, anyio.create_task_group() as group:
            calls = Calls(group)
            calls.start("a", a, "sample", {"prompt": "from alice"})
            with anyio.fail_after(WAIT_S):
                await alice.sampling_arrived.wait()
            calls.start("b", b, "sample", {"prompt": "from bob"})
            with anyio.fail_after(WAIT_S):
                await bob.sampling_arrived.wait()
            release.set()
        assert (alice.sampled, bob.sampled) == (["from alice"], ["from bob"])
        assert text_of(calls.results["a"]) == "sampled 'from alice': alice answers"
        assert text_of(calls.results["b"]) == "sampled 'from bob': bob answers"

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


def test_a_client_without_the_sampling_capability_is_never_sent_another_clients_sampling_request(
        tmp_path: Path) -> None:
    """Bob's unrelated call is the newest in flight when Alice's tool asks for sampling; Bob declared no
    sampling, so the request must go to Alice (had it gone to Bob, his SDK would have refused it and Alice's
    call would fail)."""
    alice, bob, opener = Client("alice"), Client("bob", capable=False), Client("opener", capable=False)

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b, connect(url, opener) as o, \
                anyio.create_task_group() as group:
            calls = Calls(group)
            a_progress = calls.start("a", a, "sample", {"prompt": "from alice", "gate": "ga"})
            await a_progress.wait_for("from alice asking")
            b_progress = calls.start("b", b, "wait", {"gate": "gb", "label": "b"})
            await b_progress.wait_for("b waiting")
            await o.call_tool("open_gate", {"gate": "ga"})
            with anyio.fail_after(WAIT_S):
                await alice.sampling_arrived.wait()
            await o.call_tool("open_gate", {"gate": "gb"})
        assert alice.sampled == ["from alice"]
        assert text_of(calls.results["a"]) == "sampled 'from alice': alice answers"
        assert text_of(calls.results["b"]) == "b released"
        assert bob.logs == [] and "notifications/progress" in bob.notifications

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


def test_a_clients_log_lines_reach_it_and_not_another_client_with_a_call_in_flight(tmp_path: Path) -> None:
    alice, bob, opener = Client("alice"), Client("bob"), Client("opener", capable=False)

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b, connect(url, opener) as o, \
                anyio.create_task_group() as group:
            calls = Calls(group)
            b_progress = calls.start("b", b, "wait", {"gate": "gb", "label": "b"})
            await b_progress.wait_for("b waiting")
            assert text_of(await a.call_tool("log_levels", {"label": "a"})) == "a logged 4"
            await o.call_tool("open_gate", {"gate": "gb"})
        assert alice.logs == [("debug", "a debug"), ("info", "a info"), ("warning", "a warning"),
                              ("error", "a error")]
        assert (bob.logs, opener.logs) == ([], [])

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


def test_a_sampling_request_no_connected_client_can_answer_fails_with_an_error_that_says_why(
        tmp_path: Path) -> None:
    bob = Client("bob", capable=False)

    async def scenario() -> None:
        async with connect(url, bob) as b:
            with pytest.raises(MCPError, match="no connected client can answer sampling/createMessage"):
                await b.call_tool("sample", {"prompt": "anyone?"})   # the SDK server passes the error on

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)


HAS_ISOLATED = "--sessions" in runner_flags()


@pytest.mark.xfail(not HAS_ISOLATED, strict=False,
                   reason="the runner has no --sessions flag yet (issue 10: spec.sessions isolated)")
def test_with_isolated_sessions_two_capable_clients_in_flight_at_once_each_get_their_own_sampling_request(
        tmp_path: Path) -> None:
    """Both sampling calls are in flight before either asks, and a third capable client's unrelated call is
    newer than both; then Bob's asks first. Over one shared stdio connection nothing tells whose call caused
    a sampling request (the runner would hand both to the newest capable call); with one server per client
    session it cannot go wrong."""
    alice, bob, carol = Client("alice"), Client("bob"), Client("carol")

    async def scenario() -> None:
        async with connect(url, alice) as a, connect(url, bob) as b, connect(url, carol) as c, \
                anyio.create_task_group() as group:
            calls = Calls(group)
            a_progress = calls.start("a", a, "sample", {"prompt": "from alice", "gate": "go"})
            await a_progress.wait_for("from alice asking")
            b_progress = calls.start("b", b, "sample", {"prompt": "from bob", "gate": "go"})
            await b_progress.wait_for("from bob asking")
            c_progress = calls.start("c", c, "wait", {"gate": "go", "label": "c"})
            await c_progress.wait_for("c waiting")
            await b.call_tool("open_gate", {"gate": "go"})   # opens Bob's server's gate (only Bob's, isolated)
            with anyio.fail_after(WAIT_S):
                await bob.sampling_arrived.wait()
            await a.call_tool("open_gate", {"gate": "go"})
            with anyio.fail_after(WAIT_S):
                await alice.sampling_arrived.wait()
            await c.call_tool("open_gate", {"gate": "go"})
        assert (alice.sampled, bob.sampled, carol.sampled) == (["from alice"], ["from bob"], [])
        assert text_of(calls.results["a"]) == "sampled 'from alice': alice answers"
        assert text_of(calls.results["b"]) == "sampled 'from bob': bob answers"
        assert text_of(calls.results["c"]) == "c released"

    args = ["--sessions", "isolated"] + (["--max-sessions", "4"] if "--max-sessions" in runner_flags() else [])
    with runner_endpoint(TRAFFIC, tmp_path, args=args if HAS_ISOLATED else ()) as url:
        run(scenario)


# --- server-everything: through the endpoint as through its own HTTP transport ----------------------------------


SESSION_SUFFIX = re.compile(r"\s*(- SessionId \S+|from session \S+)?\s*$")   # natively: the HTTP session's id
SIMULATED_LOGS = {"Debug-level message", "Info-level message", "Notice-level message", "Warning-level message",
                  "Error-level message", "Critical-level message", "Alert level-message", "Emergency-level message"}
WATCHED_URI = "demo://resource/static/document/features.md"
# Not offered through a shared server, by design: the runner declares no roots for a server many clients share.
SHARED_WITHOUT = {"get-roots-list"}


@dataclass
class EverythingSeen:
    """What one SDK client observed of server-everything, with ids, session ids and random levels taken out."""

    tools: set[str] = field(default_factory=set)
    progress: list[tuple[float, float | None, str | None]] = field(default_factory=list)
    long_running: str = ""
    acknowledged: list[str] = field(default_factory=list)   # the subscribe/unsubscribe log lines
    simulated: list[str] = field(default_factory=list)      # simulated log lines (random levels)
    updated: list[str] = field(default_factory=list)
    sampling: str = ""
    sampled: list[str] = field(default_factory=list)
    elicitation: str = ""
    elicited: list[str] = field(default_factory=list)
    roots: str = ""


async def observe_everything(url: str) -> EverythingSeen:
    """One capable client's tour of server-everything: the long-running operation with a progress token;
    `logging/setLevel debug`, a resource subscription, simulated logging and subscriber updates on (two of
    each: one at once, then one every 5 s) and off again; then the sampling, elicitation and roots tools."""
    seen = EverythingSeen()
    logs_due, updates_due = anyio.Event(), anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        text = SESSION_SUFFIX.sub("", str(params.data))
        if text in SIMULATED_LOGS:
            seen.simulated.append(text)
            if len(seen.simulated) >= 2:
                logs_due.set()
        elif params.logger != "everything-server":   # its roots sync notes when it asked for roots
            seen.acknowledged.append(text)

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            seen.updated.append(str(message.params.uri))
            if len(seen.updated) >= 2:
                updates_due.set()

    client = Client("tester", on_log=on_log, on_notification=on_message)
    async with connect(url, client) as session:
        seen.tools = {tool.name for tool in (await session.list_tools()).tools}
        progress = Progress()
        result = await session.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                         progress_callback=progress)
        seen.progress, seen.long_running = progress.reports, text_of(result)

        with anyio.fail_after(WAIT_S):
            await client.get_stream.wait()
        await session.set_logging_level("debug")
        await session.subscribe_resource(WATCHED_URI)
        await session.call_tool("toggle-simulated-logging", {})
        await session.call_tool("toggle-subscriber-updates", {})
        with anyio.fail_after(WAIT_S):
            await logs_due.wait()
            await updates_due.wait()
        await session.call_tool("toggle-simulated-logging", {})
        await session.call_tool("toggle-subscriber-updates", {})
        await session.unsubscribe_resource(WATCHED_URI)

        if "trigger-sampling-request" in seen.tools:
            result = await session.call_tool("trigger-sampling-request", {"prompt": "hello", "maxTokens": 10})
            seen.sampling, seen.sampled = text_of(result), list(client.sampled)
        if "trigger-elicitation-request" in seen.tools:
            seen.elicitation = text_of(await session.call_tool("trigger-elicitation-request", {}))
            seen.elicited = list(client.elicited)
        if "get-roots-list" in seen.tools:
            seen.roots = text_of(await session.call_tool("get-roots-list", {}))
    seen.simulated, seen.updated = seen.simulated[:2], seen.updated[:2]   # more may come before the toggle-off
    return seen


def _session_args(sessions: str) -> list[str]:
    return ["--sessions", sessions] if sessions != "shared" else []


@pytest.mark.e2e
@pytest.mark.parametrize("sessions", ["shared", "isolated"])
def test_server_everything_through_the_endpoint_behaves_as_through_its_own_http_transport(
        tmp_path: Path, sessions: str) -> None:
    """Progress, logs after setLevel, subscription updates, sampling, elicitation and roots: the same
    notifications and the same results, measured side by side in the same test."""
    entry = conformance.ensure_everything()
    with conformance.everything_http() as native_server, \
            runner_endpoint(["node", str(entry)], tmp_path, args=_session_args(sessions)) as url:
        native = anyio.run(observe_everything, native_server.url)
        through = anyio.run(observe_everything, url)
    print(f"\n{sessions}: native {native}\nthrough the endpoint {through}")
    assert native.progress == [(1, 4, None), (2, 4, None), (3, 4, None), (4, 4, None)]
    assert (through.progress, through.long_running) == (native.progress, native.long_running)
    assert native.acknowledged == [f"Received Subscribe Resource request for URI: {WATCHED_URI}",
                                   f"Received Unsubscribe Resource request: {WATCHED_URI}"]
    assert through.acknowledged == native.acknowledged
    assert len(through.simulated) == len(native.simulated) == 2
    assert through.updated == native.updated == [WATCHED_URI, WATCHED_URI]
    assert native.sampled == ["Resource trigger-sampling-request context: hello"]
    assert (through.sampling, through.sampled) == (native.sampling, native.sampled)
    assert "tester answers" in native.sampling
    assert native.elicited and (through.elicitation, through.elicited) == (native.elicitation, native.elicited)
    assert "file:///roots/tester" in native.roots
    if sessions == "isolated":   # the client's own initialize reaches its own server: the same tools, roots too
        assert (through.tools, through.roots) == (native.tools, native.roots)
    else:
        assert through.tools - native.tools == set()
        assert native.tools - through.tools - {"trigger-url-elicitation"} == SHARED_WITHOUT
        assert through.roots == ""


@pytest.mark.e2e
def test_a_shared_server_everything_offers_a_url_capable_client_its_url_elicitation_tool(tmp_path: Path) -> None:
    entry = conformance.ensure_everything()

    async def tools(url: str) -> set[str]:
        async with connect(url, Client("tester")) as session:
            return {tool.name for tool in (await session.list_tools()).tools}

    with conformance.everything_http() as native_server, runner_endpoint(["node", str(entry)], tmp_path) as url:
        native, through = anyio.run(tools, native_server.url), anyio.run(tools, url)
    assert "trigger-url-elicitation" in native
    assert native - through == SHARED_WITHOUT


@pytest.mark.e2e
def test_a_log_line_written_while_handling_a_clients_subscribe_reaches_it_without_set_level(
        tmp_path: Path) -> None:
    entry = conformance.ensure_everything()

    async def acknowledgement(url: str) -> list[str]:
        arrived, lines = anyio.Event(), []

        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            lines.append(SESSION_SUFFIX.sub("", str(params.data)))
            arrived.set()

        client = Client("tester", on_log=on_log)
        async with connect(url, client) as session:
            with anyio.fail_after(WAIT_S):
                await client.get_stream.wait()
            await session.subscribe_resource(WATCHED_URI)
            with anyio.fail_after(10.0):   # natively it comes at once
                await arrived.wait()
        return lines

    with conformance.everything_http() as native_server, \
            runner_endpoint(["node", str(entry)], tmp_path, args=["--sessions", "isolated"]) as url:
        native = anyio.run(acknowledgement, native_server.url)
        assert native == [f"Received Subscribe Resource request for URI: {WATCHED_URI}"]
        assert anyio.run(acknowledgement, url) == native


# --- a POST stream cut mid-call: the SDK client resumes it ------------------------------------------------------

class CuttingProxy:
    """A loopback TCP proxy in front of a runner that cuts the first connection that carries an SSE event, right
    after it (a dropped network path, not a runner fault). The Host header is
    rewritten to the runner's, whose DNS-rebinding check would refuse the proxy's port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut = anyio.Event()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        ours, theirs = f"127.0.0.1:{self.port}".encode(), f"127.0.0.1:{self.target_port}".encode()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                writer.write(data.replace(b"Host: " + ours, b"Host: " + theirs).replace(
                    b"host: " + ours, b"host: " + theirs))
                await writer.drain()

        async def downstream() -> None:
            while data := await reader.read(65536):
                client_writer.write(data)
                await client_writer.drain()
                if not self.cut.is_set() and b"event: message" in data:   # a stream's first event (one write)
                    self.cut.set()
                    return   # hang up on both sides mid-stream

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_writer.close()
        writer.close()


def test_an_sdk_client_whose_post_stream_is_cut_mid_call_resumes_it_and_gets_the_answer(tmp_path: Path) -> None:
    alice, opener = Client("alice"), Client("opener", capable=False)

    async def scenario() -> None:
        proxy = CuttingProxy(int(url.rsplit(":", 1)[1].split("/")[0]))
        server = await proxy.start()
        try:
            async with connect(f"http://127.0.0.1:{proxy.port}/mcp", alice) as session, \
                    connect(url, opener) as other:
                progress = Progress()
                call = asyncio.ensure_future(session.call_tool(
                    "progress_gated", {"label": "cut", "gate": "resume"}, progress_callback=progress))
                with anyio.fail_after(WAIT_S):
                    await proxy.cut.wait()   # the client saw "cut before" and then lost the connection
                assert text_of(await other.call_tool("open_gate", {"gate": "resume"})) == "opened resume"
                with anyio.fail_after(WAIT_S):
                    result = await call
                assert text_of(result) == "cut done"
                assert progress.reports == [(1, 2, "cut before"), (2, 2, "cut after")]
        finally:
            server.close()

    with runner_endpoint(TRAFFIC, tmp_path) as url:
        run(scenario)
