"""Alerts: the events they leave, and delivery to a real local webhook (live, dead, slow, failing)."""

from __future__ import annotations

import asyncio
import http.server
import json
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from mcp_reconcile.alerts import AlertGate, AlertSink, alert_kind, make_alert
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.events import Redactor
from mcp_reconcile.model import Phase

# Bound on any wait for the webhook or the sink; nothing here should come close.
WAIT_S = 10.0
TS = "2026-11-25T10:00:00+00:00"


class Webhook:
    """A stdlib HTTP server on 127.0.0.1 in a thread; each POSTed JSON body lands in `received`.

    With `hold` cleared, the handler waits (bounded) for it before answering: a slow webhook.
    """

    def __init__(self, *, status: int = 204) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.put(json.loads(body))
                hook.hold.wait(WAIT_S)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:  # keep pytest output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    async def next_post(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.received.get, timeout=WAIT_S)

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT_S)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.close()


@pytest.fixture
def failing_webhook() -> Iterator[Webhook]:
    hook = Webhook(status=500)
    hook.thread.start()
    yield hook
    hook.close()


def closed_port_url() -> str:
    """A URL on a loopback port that was just free: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def drained(sink: AlertSink) -> None:
    """Wait (bounded) until the sink has posted or failed every queued alert."""
    async with asyncio.timeout(WAIT_S):
        await sink.drained()


def only(logs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The one captured event called `name`."""
    [entry] = [entry for entry in logs if entry["event"] == name]
    return entry


def alert(server: str = "everything", kind: str = "critical") -> dict[str, Any]:
    return dict(make_alert(kind, server, phase="CrashLoopBackOff", previous_phase="Running",  # type: ignore[arg-type]
                           message="exited 3 times in 60 s", ts=TS))


def test_a_posted_alert_arrives_as_json_with_exactly_the_documented_keys(webhook: Webhook) -> None:
    async def main() -> dict[str, Any]:
        sink = AlertSink(webhook.url)
        await sink.start()
        sink.notify({**alert(), "env": {"API_KEY": "hunter22"}, "generation": "abc"})
        posted = await webhook.next_post()
        await sink.aclose()
        return posted

    assert asyncio.run(main()) == {"kind": "critical", "server": "everything", "phase": "CrashLoopBackOff",
                                   "previous_phase": "Running", "message": "exited 3 times in 60 s", "ts": TS}


def test_known_secret_values_are_redacted_from_the_posted_message(webhook: Webhook) -> None:
    async def main() -> dict[str, Any]:
        sink = AlertSink(webhook.url, redact=Redactor(["hunter22"]).scrub)
        await sink.start()
        sink.notify({**alert(), "message": "auth failed with key hunter22"})
        posted = await webhook.next_post()
        await sink.aclose()
        return posted

    assert "hunter22" not in asyncio.run(main())["message"]


def test_a_dead_webhook_does_not_raise_and_logs_alert_failed() -> None:
    url = closed_port_url()

    async def main(logs: list[dict[str, Any]]) -> dict[str, Any]:
        sink = AlertSink(url)
        await sink.start()
        sink.notify(alert())
        await drained(sink)
        await sink.aclose()
        return only(logs, "alert.failed")

    with structlog.testing.capture_logs() as logs:
        failed = asyncio.run(main(logs))
    assert (failed["server"], failed["kind"], failed["log_level"]) == ("everything", "critical", "warning")
    assert "ConnectError" in failed["error"]
    assert url not in json.dumps(logs)  # the URL may hold a token


def test_a_webhook_answering_an_error_status_logs_alert_failed(failing_webhook: Webhook) -> None:
    async def main(logs: list[dict[str, Any]]) -> dict[str, Any]:
        sink = AlertSink(failing_webhook.url)
        await sink.start()
        sink.notify(alert())
        await drained(sink)
        await sink.aclose()
        return only(logs, "alert.failed")

    with structlog.testing.capture_logs() as logs:
        failed = asyncio.run(main(logs))
    assert failed["error"] == "webhook answered HTTP 500"


def test_a_slow_webhook_does_not_block_notify_and_later_alerts_still_arrive(webhook: Webhook) -> None:
    webhook.hold.clear()

    async def main() -> list[str]:
        sink = AlertSink(webhook.url, timeout_s=WAIT_S * 2)
        await sink.start()
        sink.notify(alert("first"))
        first = await webhook.next_post()  # the webhook now holds this request open
        sink.notify(alert("second"))  # returns while the first post is still in flight
        sink.notify(alert("third"))
        assert not webhook.hold.is_set() and sink.pending == 2
        webhook.hold.set()
        rest = [await webhook.next_post(), await webhook.next_post()]
        await sink.aclose()
        return [post["server"] for post in (first, *rest)]

    assert asyncio.run(main()) == ["first", "second", "third"]


def test_a_webhook_slower_than_the_timeout_is_logged_as_failed(webhook: Webhook) -> None:
    webhook.hold.clear()

    async def main(logs: list[dict[str, Any]]) -> dict[str, Any]:
        sink = AlertSink(webhook.url, timeout_s=0.05)
        await sink.start()
        sink.notify(alert())
        await drained(sink)  # the post times out: the webhook holds it until the test ends
        await sink.aclose()
        return only(logs, "alert.failed")

    with structlog.testing.capture_logs() as logs:
        failed = asyncio.run(main(logs))
    assert "Timeout" in failed["error"]


def test_beyond_the_bound_the_oldest_queued_alert_is_dropped_with_an_event() -> None:
    async def main(logs: list[dict[str, Any]]) -> int:
        sink = AlertSink(closed_port_url(), max_queued=2)  # not started: alerts stay queued
        for name in ("a", "b", "c"):
            sink.notify(alert(name))
        pending = sink.pending
        await sink.aclose()
        return pending

    with structlog.testing.capture_logs() as logs:
        pending = asyncio.run(main(logs))
    assert pending == 2
    dropped = [entry for entry in logs if entry["event"] == "alert.dropped"]
    assert dropped[0]["server"] == "a"


def test_every_alert_is_an_event_even_without_a_webhook() -> None:
    async def main() -> None:
        sink = AlertSink(None)
        await sink.start()
        sink.notify(make_alert("recovered", "time", phase=Phase.Running, previous_phase=Phase.CrashLoopBackOff,
                               message="healthy again", ts=TS))
        await sink.aclose()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    assert logs == [{"event": "alert.raised", "log_level": "info", "kind": "recovered", "server": "time",
                     "phase": "Running", "previous_phase": "CrashLoopBackOff", "message": "healthy again"}]


@pytest.mark.parametrize("url", [
    pytest.param("ftp://example.invalid/hook", id="not http"),
    pytest.param("http://", id="no host"),
])
def test_a_webhook_url_that_is_not_http_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(McpReconcileError) as caught:
        AlertSink(url)
    assert url not in str(caught.value)


@pytest.mark.parametrize(("previous", "phase", "expected"), [
    pytest.param(Phase.Running, Phase.CrashLoopBackOff, "critical", id="crash loop is critical"),
    pytest.param(Phase.Starting, Phase.Failed, "critical", id="failed is critical"),
    pytest.param(Phase.CrashLoopBackOff, Phase.Running, "recovered", id="back from a crash loop"),
    pytest.param(Phase.Degraded, Phase.Running, "recovered", id="back from degraded"),
    pytest.param(Phase.Starting, Phase.Running, "status_changed", id="a normal start"),
    pytest.param(None, Phase.Pending, "status_changed", id="a new server"),
    pytest.param(Phase.Running, Phase.Running, None, id="no change"),
    pytest.param("Running", "Degraded", "status_changed", id="phase names as strings"),
])
def test_alert_kind_classifies_phase_transitions(previous: Phase | str | None, phase: Phase | str,
                                                 expected: str | None) -> None:
    assert alert_kind(previous, phase) == expected


def test_a_crash_loop_raises_one_critical_alert_and_one_recovered_when_it_has_settled() -> None:
    gate = AlertGate()
    # a server flapping: each cycle would be critical -> status change -> recovered
    flaps = [("critical", False), ("status_changed", False), ("recovered", False)] * 3
    sent = [kind for kind, settled in flaps if gate.admit(kind, "flappy", settled=settled)]
    assert sent == ["critical"]
    assert gate.admit("status_changed", "steady", settled=True)   # other servers are not held back
    assert gate.settled("flappy") is True    # its backoff reset: the recovered alert is due, once
    assert gate.settled("flappy") is False
    assert gate.admit("critical", "flappy", settled=False)    # a new incident


def test_a_recovery_with_no_backoff_to_wait_out_is_announced_at_once() -> None:
    gate = AlertGate()
    assert gate.admit("critical", "s", settled=True)          # e.g. Failed: a bad install
    assert gate.admit("recovered", "s", settled=True)         # fixed and Running, nothing to wait out
    assert gate.open == set()
