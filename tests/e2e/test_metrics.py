"""`run --metrics-port`: Prometheus metrics of the bundled servers, read with prometheus-client's own parser.

The controller serves /metrics on 127.0.0.1 (port 0: any free port, named by the `metrics.serving` event).
A kill -9 of a server must show as a restart of that server and no other; probe latency must have samples;
a secret of a manifest must appear nowhere in the exposition.
"""

from __future__ import annotations

import os
import signal
import urllib.request

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

SECRET = "metrics-secret-5b9e27"
SCRAPE_TIMEOUT_S = 5.0


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The exposition text and every sample, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))))


def test_a_killed_server_shows_as_a_restart_with_probe_latency_and_no_secret(real) -> None:
    time_doc = real.read_manifest("time")
    time_doc["spec"].setdefault("env", {})["TIME_API_TOKEN"] = "${METRICS_TEST_TOKEN}"
    real.write_text("time.yaml", yaml.safe_dump(time_doc, sort_keys=False))
    real.env["METRICS_TEST_TOKEN"] = SECRET

    real.start_controller("--metrics-port", "0")
    url = real.wait_event("metrics.serving")[0]["url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    real.wait_ready("everything", "time")
    before = real.run_record("everything")

    def restarts(samples: dict, server: str) -> float:  # type: ignore[type-arg]
        return value(samples, "mcp_reconcile_server_restarts_total", server=server) or 0.0

    _, first = real.wait_until(lambda: scrape(url), lambda s: value(s[1], "mcp_reconcile_server_up",
                                                                     server="everything") == 1.0,
                               what="everything up in /metrics")
    assert restarts(first, "everything") == 0.0

    os.kill(before["server_pid"], signal.SIGKILL)
    text, samples = real.wait_until(lambda: scrape(url), lambda s: restarts(s[1], "everything") >= 1.0,
                                    what="mcp_reconcile_server_restarts_total{server=everything} to go up")
    real.wait_ready("everything", what="everything Ready again after kill -9")
    text, samples = scrape(url)

    assert restarts(samples, "everything") == 1.0 and restarts(samples, "time") == 0.0
    assert value(samples, "mcp_reconcile_runner_exits_total", server="everything") == 1.0
    assert value(samples, "mcp_reconcile_server_last_exit_code", server="everything") == 128 + signal.SIGKILL
    for server in ("everything", "time"):
        count = value(samples, "mcp_reconcile_probe_duration_seconds_count", server=server)
        assert count and count >= 1, f"no probe latency samples for {server}"
        assert (value(samples, "mcp_reconcile_probe_duration_seconds_sum", server=server) or 0) > 0
        assert value(samples, "mcp_reconcile_server_ready", server=server) == 1.0
        assert value(samples, "mcp_reconcile_server_phase", server=server, phase="Running") == 1.0
        assert (value(samples, "mcp_reconcile_server_resident_memory_bytes", server=server) or 0) > 1 << 20
        assert value(samples, "mcp_reconcile_server_cpu_seconds_total", server=server) is not None
    assert (value(samples, "mcp_reconcile_pass_duration_seconds_count") or 0) >= 2
    assert (value(samples, "mcp_reconcile_events_written_total", event="server.restarting") or 0) == 1.0
    assert SECRET not in text

    # the endpoint's own counts, read from the live runner at scrape time
    endpoint = real.run_record("everything")["endpoint"]
    counted = value(samples, "mcp_reconcile_endpoint_requests_total", server="everything") or 0.0
    failed = value(samples, "mcp_reconcile_endpoint_errors_total", server="everything") or 0.0
    headers = {"Accept": "application/json, text/event-stream"}
    init = httpx.post(endpoint, headers=headers, timeout=30, json={"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}})
    headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
    for i in range(3):
        httpx.post(endpoint, headers=headers, timeout=30, json={"jsonrpc": "2.0", "id": i + 1, "method": "tools/list"})
    httpx.post(endpoint, headers=headers, timeout=30, json={"jsonrpc": "2.0", "id": 9, "method": "no/such/method"})
    _, samples = scrape(url)
    assert (value(samples, "mcp_reconcile_endpoint_requests_total", server="everything") or 0) >= counted + 4
    assert (value(samples, "mcp_reconcile_endpoint_errors_total", server="everything") or 0) >= failed + 1
    assert (value(samples, "mcp_reconcile_endpoint_request_duration_seconds_count", server="everything") or 0) >= 4
    print(f"\n/metrics: {len(text)} bytes, {len(samples)} samples; probe count everything="
          f"{value(samples, 'mcp_reconcile_probe_duration_seconds_count', server='everything'):g}")


def test_a_metrics_port_in_use_is_a_clear_error(real) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = real.cli("run", "--monitor-duration", "1", "--metrics-port", str(port), expect=1)
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1" in result.err
