"""Prometheus metrics for `mcp-reconcile run --metrics-port PORT` (http://127.0.0.1:PORT/metrics).

Fed without touching the loop's logic, three ways:
- the audit stream: `on_event` is a structlog processor (events.OBSERVERS, after redaction) that counts
  events written, restarts, runner exits, failed probes and alerts from the events the controller emits anyway;
- two observations the audit log does not carry (a healthy probe writes no event; nor does a pass):
  loop/metered.py hands each probe result and each pass duration to `on_probe` / `observe_pass`;
- at scrape time, `ServerCollector` reads state.json (phase, Ready, last exit) and the run records, and asks
  psutil for the CPU seconds and RSS of each server's process group.

Labels are server names, phases, event names and alert kinds: never an env value, so never a secret.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mcp_reconcile import handover
from mcp_reconcile.errors import StoreError
from mcp_reconcile.observe import runner_liveness
from mcp_reconcile.proc import group_members
from mcp_reconcile.store import StateDir, read_json

PHASES = ("Pending", "Installing", "Starting", "Running", "Degraded", "CrashLoopBackOff", "Stopped", "Failed")
# Probe round trips are milliseconds on loopback; a slow npx server or a hung one reaches the timeout (5 s).
PROBE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Bound on asking one runner for its endpoint's counts during a scrape.
STATS_TIMEOUT_S = 0.5
PASS_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0)
ALERT_FAILURES = {"alert.failed": "failed", "alert.dropped": "dropped"}


class Metrics:
    """Every metric of one controller process, in a registry of its own."""

    def __init__(self, state: StateDir) -> None:
        self.registry = r = CollectorRegistry()
        self.events_written = Counter("mcp_reconcile_events_written", "Audit events written to events.jsonl",
                                      ["event"], registry=r)
        self.alerts_sent = Counter("mcp_reconcile_alerts_sent", "Alerts delivered to the webhook", ["kind"],
                                   registry=r)
        self.alerts_lost = Counter("mcp_reconcile_alerts_lost", "Alerts not delivered (failed or dropped)",
                                   ["reason"], registry=r)
        self.restarts = Counter("mcp_reconcile_server_restarts", "Restarts of a server by this controller",
                                ["server"], registry=r)
        self.exits = Counter("mcp_reconcile_runner_exits", "Runner exits seen (crashes and stops)", ["server"],
                             registry=r)
        self.probes = Counter("mcp_reconcile_probes", "MCP health probes by result", ["server", "result"],
                              registry=r)
        self.probe_duration = Histogram("mcp_reconcile_probe_duration_seconds",
                                        "Round trip of successful MCP health probes (ping or server/discover)",
                                        ["server"], buckets=PROBE_BUCKETS_S, registry=r)
        self.pass_duration = Histogram("mcp_reconcile_pass_duration_seconds", "Per-server reconcile passes",
                                       buckets=PASS_BUCKETS_S, registry=r)
        self.queue_depth = Gauge("mcp_reconcile_queue_depth", "Server names waiting in the work queue "
                                 "(due or delayed), as of the last pass", registry=r)
        self.last_exit_code = Gauge("mcp_reconcile_server_last_exit_code",
                                    "Exit code of the server's last exit seen (128+N: killed by signal N)",
                                    ["server"], registry=r)
        self.state = state
        self._known: set[str] = set()
        self._lock = threading.Lock()
        r.register(ServerCollector(state))
        ProcessCollector(registry=r)   # the controller's own process_cpu_seconds_total, RSS, fds

    def known(self, name: str) -> None:
        """Give a server's counters their 0 so that the first restart is an increase, not a new series."""
        with self._lock:
            if name in self._known:
                return
            self._known.add(name)
        self.restarts.labels(server=name)
        self.exits.labels(server=name)
        for result in ("ok", "failed"):
            self.probes.labels(server=name, result=result)

    def on_event(self, _logger: Any, _name: str, event_dict: Any) -> Any:
        """structlog processor: count what the audit stream says; the event passes on unchanged."""
        event = str(event_dict.get("event", ""))
        self.events_written.labels(event=event).inc()
        server = event_dict.get("server")
        if event == "server.restarting" and isinstance(server, str):
            self.restarts.labels(server=server).inc()
        elif event == "runner.exited" and isinstance(server, str):
            self.exits.labels(server=server).inc()
            self._note_exit_code(server)
        elif event == "alert.sent":
            self.alerts_sent.labels(kind=str(event_dict.get("kind", ""))).inc()
        elif event in ALERT_FAILURES:
            self.alerts_lost.labels(reason=ALERT_FAILURES[event]).inc(int(event_dict.get("count", 1) or 1))
        return event_dict

    def _note_exit_code(self, server: str) -> None:
        """The runner recorded its server's exit before it left; the pass woken by this event clears the
        record (and a restart clears the ledger's copy), so the code is read now."""
        try:
            exit_info = (self.state.read_run(server) or {}).get("exit") or {}
        except (OSError, ValueError, StoreError):
            return
        code, sig = exit_info.get("code"), exit_info.get("signal")
        if isinstance(code, int) or isinstance(sig, int):   # the shell's convention, as observe.py reads it
            self.last_exit_code.labels(server=server).set(code if isinstance(code, int) else 128 + sig)

    def on_probe(self, name: str, result: Any) -> None:
        self.known(name)
        self.probes.labels(server=name, result="ok" if result.ok else "failed").inc()
        if result.ok and result.latency_ms is not None:
            self.probe_duration.labels(server=name).observe(result.latency_ms / 1000)

    def observe_pass(self, seconds: float, *, queue_depth: int) -> None:
        self.pass_duration.observe(seconds)
        self.queue_depth.set(queue_depth)

    def serve(self, port: int) -> Any:
        """Serve /metrics on 127.0.0.1:`port` from a daemon thread; returns the server (`.shutdown()`)."""
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        return server


def group_usage(pgid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and RSS bytes of the live members of process group `pgid`."""
    cpu = 0.0
    rss = 0
    found = False
    for pid in group_members(pgid):
        try:
            p = psutil.Process(pid)
            times = p.cpu_times()
            cpu += times.user + times.system
            rss += p.memory_info().rss
            found = True
        except psutil.Error:   # exited between listing and reading
            continue
    return (cpu, rss) if found else None


def endpoint_stats(state: StateDir, name: str) -> dict[str, Any] | None:
    """The endpoint's counts, asked of the live runner over its control socket (bounded: a scrape never hangs)."""
    answer = handover.ask_runner_blocking(handover.control_address(str(state.root), name), {
        "op": "stats", "state_dir": str(state.root.absolute()), "name": name}, timeout_s=STATS_TIMEOUT_S)
    return answer if answer is not None and answer.get("ok") else None


class ServerCollector(Collector):
    """Per-server state read at scrape time from the state dir (the loop does not have to report it)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        try:
            ledger = (read_json(self.state.state_file) or {}).get("servers", {})
        except StoreError:   # being moved aside by hand, say: the run records and processes still tell a lot
            ledger = {}
        names = sorted(set(ledger) | self.state.known_servers())
        up = GaugeMetricFamily("mcp_reconcile_server_up", "1 if the server's runner is alive and serving",
                               labels=["server"])
        ready = GaugeMetricFamily("mcp_reconcile_server_ready", "1 if the server's Ready condition is True",
                                  labels=["server"])
        phase = GaugeMetricFamily("mcp_reconcile_server_phase", "1 for the server's current phase, 0 for the others",
                                  labels=["server", "phase"])
        cpu = CounterMetricFamily("mcp_reconcile_server_cpu_seconds",
                                  "CPU time (user + system) of the server's live process group", labels=["server"])
        rss = GaugeMetricFamily("mcp_reconcile_server_resident_memory_bytes",
                                "Resident memory of the server's live process group", labels=["server"])
        requests = CounterMetricFamily("mcp_reconcile_endpoint_requests",
                                       "Requests forwarded through the server's endpoint (by its current runner)",
                                       labels=["server"])
        errors = CounterMetricFamily("mcp_reconcile_endpoint_errors",
                                     "Endpoint requests answered with an error (JSON-RPC or HTTP)", labels=["server"])
        latency = HistogramMetricFamily("mcp_reconcile_endpoint_request_duration_seconds",
                                        "Time from a request's arrival at the endpoint to its answer",
                                        labels=["server"])
        for name in names:
            entry = ledger.get(name, {})
            try:
                run = self.state.read_run(name) or {}
            except StoreError:
                run = {}
            alive = run.get("state") == "running" and runner_liveness(run).alive
            up.add_metric([name], 1.0 if alive else 0.0)
            is_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in entry.get("conditions", []))
            ready.add_metric([name], 1.0 if is_ready else 0.0)
            current = entry.get("phase")
            for p in PHASES:
                phase.add_metric([name, p], 1.0 if p == current else 0.0)
            stats = endpoint_stats(self.state, name) if alive and run.get("swappable") else None
            if stats is not None:
                requests.add_metric([name], float(stats.get("requests", 0)))
                errors.add_metric([name], float(stats.get("errors", 0)))
                latency.add_metric([name], [(le, float(c)) for le, c in stats.get("buckets", [])],
                                   sum_value=float(stats.get("seconds", 0.0)))
            usage = group_usage(run["server_pgid"]) if alive and run.get("server_pgid") else None
            if usage is not None:
                cpu.add_metric([name], usage[0])
                rss.add_metric([name], float(usage[1]))
        yield from (up, ready, phase, cpu, rss, requests, errors, latency)
