"""`run --metrics-port PORT`: the controller with Prometheus metrics (metrics.py), its loop left as it is.

Most metrics come from the audit stream (an events processor) and from the state dir at scrape time. Two
things the audit log does not carry, each probe result (a healthy probe writes no event) and each pass's
duration, are taken here by extending the two methods the loop already calls for them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from mcp_reconcile import events
from mcp_reconcile.errors import McpReconcileError
from mcp_reconcile.loop.controller import Controller
from mcp_reconcile.loop.result import PassResult
from mcp_reconcile.metrics import Metrics
from mcp_reconcile.settings import Options
from mcp_reconcile.store import StateDir


class MeteredController(Controller):
    def __init__(self, opts: Options, state: StateDir, *, metrics: Metrics) -> None:
        super().__init__(opts, state)
        self.metrics = metrics

    def on_probe(self, name: str, result: Any) -> None:
        self.metrics.on_probe(name, result)
        super().on_probe(name, result)

    async def reconcile(self, name: str) -> PassResult:
        self.metrics.known(name)
        started = time.perf_counter()
        try:
            return await super().reconcile(name)
        finally:
            self.metrics.observe_pass(time.perf_counter() - started, queue_depth=len(self.queue))


def run_metered(opts: Options) -> int:
    """run_controller (loop/controller.py) with /metrics served on 127.0.0.1:opts.metrics_port meanwhile."""
    state = StateDir(opts.state_dir)
    metrics = Metrics(state)
    with state.locked():
        try:
            server = metrics.serve(opts.metrics_port or 0)
        except OSError as exc:
            raise McpReconcileError(f"--metrics-port {opts.metrics_port}: cannot listen on 127.0.0.1: "
                                    f"{exc.strerror or exc}") from None
        events.OBSERVERS.append(metrics.on_event)
        try:
            events.configure(state.events_file, stderr="json" if not sys.stderr.isatty() else "console")
            events.get_logger().info("metrics.serving", url=f"http://127.0.0.1:{server.server_port}/metrics")
            return asyncio.run(MeteredController(opts, state, metrics=metrics).run())
        finally:
            events.OBSERVERS.remove(metrics.on_event)
            server.shutdown()
            server.server_close()
