"""Alerts on status change, recovery and critical failure: an event always, a webhook POST when configured.

The original design note alerted on these three moments (SPEC section 11). A phase transition is one
event, `server.phase_changed`, whose `alert` field names the alert it raised (`announce_transition`); an
alert outside a transition (a backoff reset after a recovery) is an `alert.raised` event. Either way
`AlertSink.notify(alert)` only records and enqueues. A
background task posts each alert as JSON with a short timeout, one try, and reports a failure as an
`alert.failed` event: a dead or slow webhook never blocks or breaks reconciliation. The queue is bounded
and drops the oldest alert first (`alert.dropped`), since the newest state is the one worth knowing.

An alert carries only `kind, server, phase, previous_phase, message, ts`; anything else a caller puts in
the dict is left out, and known secret values are redacted from the message, so environment values never
leave the host. The webhook URL itself may embed a token (Slack and others do), so it is never logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

import httpx
import structlog

from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.events import REDACTOR
from mcp_reconcile.model import Phase

log = structlog.get_logger("mcp_reconcile")

AlertKind = Literal["status_changed", "recovered", "critical"]
ALERT_KINDS: frozenset[str] = frozenset({"status_changed", "recovered", "critical"})
ALERT_KEYS = ("kind", "server", "phase", "previous_phase", "message", "ts")

# Phases that page someone: the server is down and the controller cannot bring it back by itself.
CRITICAL_PHASES = frozenset({Phase.Failed.value, Phase.CrashLoopBackOff.value})
# Phases from which reaching Running is worth a "recovered" alert.
TROUBLED_PHASES = CRITICAL_PHASES | {Phase.Degraded.value}

# One POST may take this long before it counts as failed; a webhook is a courtesy, not a dependency.
POST_TIMEOUT_S = 5.0
# Alerts waiting for delivery beyond this drop the oldest first.
MAX_QUEUED_ALERTS = 100
# On shutdown, pending alerts get this long to go out before they are dropped.
DRAIN_TIMEOUT_S = 2.0


class Alert(TypedDict):
    """What is posted, exactly: `ts` is ISO 8601 UTC; `previous_phase` is None for a new server."""

    kind: str
    server: str
    phase: str
    previous_phase: str | None
    message: str
    ts: str


def _phase_name(phase: Phase | str | None) -> str | None:
    return phase.value if isinstance(phase, Phase) else phase


def alert_kind(previous_phase: Phase | str | None, phase: Phase | str) -> AlertKind | None:
    """Which alert a phase transition deserves, or None when the phase did not change."""
    before, after = _phase_name(previous_phase), _phase_name(phase)
    if before == after:
        return None
    if after in CRITICAL_PHASES:
        return "critical"
    if after == Phase.Running.value and before in TROUBLED_PHASES:
        return "recovered"
    return "status_changed"


class AlertGate:
    """One `critical` alert per incident, and one `recovered` alert when the incident is really over.

    A crash-looping server flips between CrashLoopBackOff, Starting and Running on every cycle; without a gate
    each flip is a webhook post. The first critical alert opens an incident; while it is open, that server's
    other alerts are held back, and `recovered` goes out only once the server has settled (its restart backoff
    reset after `resetAfterSeconds` of health), or at once if it recovered with no backoff to wait out.
    """

    def __init__(self) -> None:
        self.open: set[str] = set()

    def admit(self, kind: AlertKind, server: str, *, settled: bool) -> bool:
        """Whether an alert of `kind` for `server` goes out now."""
        if kind == "critical":
            if server in self.open:
                return False
            self.open.add(server)
            return True
        if server not in self.open:
            return True
        if kind == "recovered" and settled:
            self.open.discard(server)
            return True
        return False

    def reset(self, server: str) -> None:
        """An edit reset the server's backoff: its incident ends with it (no alert: the edit is no recovery),
        so a new generation that fails again raises a `critical` alert of its own."""
        self.open.discard(server)

    def settled(self, server: str) -> bool:
        """The server's backoff reset: True when that closes an open incident (a `recovered` alert is due)."""
        if server in self.open:
            self.open.discard(server)
            return True
        return False


def announce_transition(sink: AlertSink, gate: AlertGate, server: str, *, previous: str | None, phase: str,
                        message: str, settled: bool) -> AlertKind | None:
    """The one event of a phase transition, `server.phase_changed`, naming the alert it raised (if any).

    The alert is a side effect of the transition (the webhook POST), not a second event: an `alert.raised`
    beside every `server.phase_changed` logged each transition twice (issue 12). The gate may hold the alert
    back during an incident; the transition is logged all the same. Returns the kind of alert sent.
    """
    kind = alert_kind(previous, phase)
    sent = kind if kind and gate.admit(kind, server, settled=settled) else None
    log.info("server.phase_changed", server=server, phase=phase, previous_phase=previous, reason=message,
             alert=sent)
    if sent:
        sink.notify(make_alert(sent, server, phase=phase, previous_phase=previous, message=message), logged=True)
    return sent


def make_alert(kind: AlertKind, server: str, *, phase: Phase | str,
               previous_phase: Phase | str | None = None, message: str = "",
               ts: datetime.datetime | str | None = None) -> Alert:
    """An alert with every key set; `ts` defaults to now (a timestamp for readers, not a decision)."""
    if ts is None:
        ts = datetime.datetime.now(datetime.UTC)
    return Alert(kind=kind, server=server, phase=str(_phase_name(phase)),
                 previous_phase=_phase_name(previous_phase), message=message,
                 ts=ts.isoformat() if isinstance(ts, datetime.datetime) else ts)


def clean_alert(alert: Mapping[str, Any], *, redact: Callable[[Any], Any]) -> Alert:
    """Only the documented keys, as strings, with secrets redacted: whatever a caller passed in."""
    previous = _phase_name(alert.get("previous_phase"))
    ts = alert.get("ts") or datetime.datetime.now(datetime.UTC)
    return Alert(
        kind=str(alert.get("kind", "status_changed")),
        server=str(alert.get("server", "")),
        phase=str(_phase_name(alert.get("phase")) or ""),
        previous_phase=None if previous is None else str(previous),
        message=str(redact(str(alert.get("message", "")))),
        ts=ts.isoformat() if isinstance(ts, datetime.datetime) else str(ts),
    )


def check_webhook_url(url: str) -> httpx.URL:
    """The parsed URL, or a user-facing error that does not echo the URL (it may hold a token)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise McpReconcileError("alert webhook: not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise McpReconcileError("alert webhook: not an http(s) URL")
    return parsed


class AlertSink:
    """Records every alert as an event and, with a webhook URL, posts it from a background task.

    Use from the event loop's thread: `await sink.start()`, then `sink.notify(alert)` any number of
    times, then `await sink.aclose()`. Without a URL, start/aclose do nothing and notify only logs.
    """

    def __init__(self, webhook_url: str | None = None, *, timeout_s: float = POST_TIMEOUT_S,
                 max_queued: int = MAX_QUEUED_ALERTS, redact: Callable[[Any], Any] = REDACTOR.scrub) -> None:
        self._url = check_webhook_url(webhook_url) if webhook_url else None
        self._timeout_s = timeout_s
        self._max_queued = max(1, max_queued)
        self._redact = redact
        self._queue: collections.deque[Alert] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Alerts queued and not yet posted."""
        return len(self._queue)

    def notify(self, alert: Mapping[str, Any], *, logged: bool = False) -> None:
        """Record the alert and queue it for the webhook; returns at once and never raises for delivery.

        `logged`: the caller's own event already says so (a phase transition), so no `alert.raised` is added."""
        clean = clean_alert(alert, redact=self._redact)
        level = "warning" if clean["kind"] == "critical" else "info"
        # the event gets its own `ts` from the log chain; the alert's ts goes to the webhook
        fields = {key: value for key, value in clean.items() if key != "ts"}
        if not logged:
            getattr(log, level)("alert.raised", **fields)
        if self._url is None:
            return
        if len(self._queue) >= self._max_queued:
            dropped = self._queue.popleft()
            log.warning("alert.dropped", server=dropped["server"], kind=dropped["kind"],
                        reason=f"more than {self._max_queued} alerts waiting for the webhook")
        self._queue.append(clean)
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        """Start the delivery task (no-op without a webhook, or when already started)."""
        if self._url is None or self._task is not None:
            return
        self._client = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        self._task = asyncio.create_task(self._deliver(), name="alerts.deliver")

    async def drained(self) -> None:
        """Wait until every queued alert has been posted or has failed (callers bound the wait)."""
        await self._idle.wait()

    async def aclose(self, *, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Give queued alerts a bounded chance to go out, then stop the task and close the client."""
        if self._task is None:
            if self._queue:
                log.warning("alert.dropped", count=len(self._queue), reason="closed before start()")
                self._queue.clear()
            return
        try:
            async with asyncio.timeout(drain_timeout_s):
                await self.drained()
        except TimeoutError:
            if self._queue:
                log.warning("alert.dropped", count=len(self._queue), reason="shutting down")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self) -> None:
        """Post queued alerts one at a time, oldest first, until cancelled."""
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._post(self._queue.popleft())

    async def _post(self, alert: Alert) -> None:
        """One try; every failure becomes an `alert.failed` event and the task goes on."""
        assert self._client is not None and self._url is not None
        try:
            response = await self._client.post(self._url, json=alert)
        except Exception as exc:  # the delivery task must outlive any failure; each one is reported
            log.warning("alert.failed", server=alert["server"], kind=alert["kind"],
                        error=self._describe(exc))
            return
        if response.status_code >= 400:
            log.warning("alert.failed", server=alert["server"], kind=alert["kind"],
                        error=f"webhook answered HTTP {response.status_code}")
            return
        log.debug("alert.sent", server=alert["server"], kind=alert["kind"])

    def _describe(self, exc: BaseException) -> str:
        """The error's class and message, with the URL (which may hold a token) taken out."""
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if self._url is not None:
            text = text.replace(str(self._url), "(webhook)")
        return text
