"""metrics.py fed directly: the events processor counts what the audit stream says, redaction runs before it,
and the scrape-time collector reads phase and Ready from state.json."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcp_reconcile import events
from mcp_reconcile.metrics import Metrics
from mcp_reconcile.probe import ProbeResult
from mcp_reconcile.store import StateDir


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_events_through_the_configured_chain_become_counters_and_secrets_never_labels(tmp_path: Path) -> None:
    metrics = Metrics(StateDir(tmp_path / "state"))
    events.OBSERVERS.append(metrics.on_event)
    try:
        events.configure(tmp_path / "events.jsonl", secrets=["hunter2-secret"], stderr=None)
        log = events.get_logger()
        log.warning("server.restarting", server="alpha", restarts=1, reason="exited")
        log.warning("server.restarting", server="alpha", restarts=2, reason="exited")
        log.info("runner.exited", server="alpha")
        log.debug("alert.sent", server="alpha", kind="critical")
        log.warning("alert.dropped", count=3, reason="shutting down")
        log.info("hunter2-secret", server="beta")   # an event name is never a secret; if it were, it is redacted
    finally:
        events.OBSERVERS.remove(metrics.on_event)
        events.configure_silent()
    got = samples(metrics)
    assert got[("mcp_reconcile_server_restarts_total", (("server", "alpha"),))] == 2
    assert got[("mcp_reconcile_runner_exits_total", (("server", "alpha"),))] == 1
    assert got[("mcp_reconcile_alerts_sent_total", (("kind", "critical"),))] == 1
    assert got[("mcp_reconcile_alerts_lost_total", (("reason", "dropped"),))] == 3
    assert got[("mcp_reconcile_events_written_total", (("event", "server.restarting"),))] == 2
    assert "hunter2-secret" not in generate_latest(metrics.registry).decode()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 6   # the file still gets every event


def test_probe_results_fill_the_histogram_and_the_collector_reads_phase_and_ready(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ensure()
    state.state_file.write_text(json.dumps({"version": 1, "servers": {"alpha": {
        "phase": "CrashLoopBackOff", "conditions": [{"type": "Ready", "status": "False"}]}}}))
    metrics = Metrics(state)
    metrics.on_probe("alpha", ProbeResult(True, 12.5, "handshake", "2025-11-25", None))
    metrics.on_probe("alpha", ProbeResult(False, None, None, None, "no answer within 5 s"))
    got = samples(metrics)
    assert got[("mcp_reconcile_probe_duration_seconds_count", (("server", "alpha"),))] == 1
    assert got[("mcp_reconcile_probe_duration_seconds_sum", (("server", "alpha"),))] == 0.0125
    assert got[("mcp_reconcile_probes_total", (("result", "failed"), ("server", "alpha")))] == 1
    assert got[("mcp_reconcile_server_restarts_total", (("server", "alpha"),))] == 0   # known: a series at 0
    assert got[("mcp_reconcile_server_phase", (("phase", "CrashLoopBackOff"), ("server", "alpha")))] == 1
    assert got[("mcp_reconcile_server_phase", (("phase", "Running"), ("server", "alpha")))] == 0
    assert got[("mcp_reconcile_server_ready", (("server", "alpha"),))] == 0
    assert got[("mcp_reconcile_server_up", (("server", "alpha"),))] == 0


def test_the_processor_passes_the_event_on_unchanged() -> None:
    metrics = Metrics(StateDir("/nonexistent-state-dir"))
    event = {"event": "probe.failed", "server": "alpha", "error": "x"}
    assert metrics.on_event(None, "warning", dict(event)) == event


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(tmp_path: Path) -> None:
    import re

    metrics = Metrics(StateDir(tmp_path / "state"))
    metrics.on_probe("alpha", ProbeResult(True, 1.0, "handshake", "2025-11-25", None))
    metrics.observe_pass(0.01, queue_depth=0)
    metrics.alerts_sent.labels(kind="critical")
    text = generate_latest(metrics.registry).decode()   # families without samples still have a TYPE line
    suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exposed = {name + suffix for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
               for suffix in suffixes.get(kind, ("",))}
    dashboard = (Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json").read_text()
    wanted = set(re.findall(r"mcp_reconcile_[a-z_]+", dashboard)) - {"mcp_reconcile_"}
    assert wanted and wanted - exposed == set()
