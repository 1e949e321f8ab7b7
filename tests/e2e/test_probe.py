"""Health probes ask the server itself, now: through the runner, in the server's own era, and a stopped
(SIGSTOP) server fails its probe instead of looking healthy."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from mcp_reconcile.probe import HANDSHAKE, STATELESS, LeanProbe


async def _probe_twice(endpoint: str) -> tuple[object, object]:
    probe = LeanProbe(endpoint)
    try:
        return await probe.probe(5.0), await probe.probe(5.0)
    finally:
        await probe.aclose()


@pytest.mark.e2e
def test_probes_use_each_servers_era_and_fail_when_the_server_stops_answering(real) -> None:
    real.cli("apply")
    everything, time_server = real.run_record("everything"), real.run_record("time")

    first, second = asyncio.run(_probe_twice(everything["endpoint"]))
    assert first.ok and second.ok, (first, second)
    assert second.era == HANDSHAKE and second.protocol_version
    first, second = asyncio.run(_probe_twice(time_server["endpoint"]))
    assert first.ok and second.ok, (first, second)
    assert second.era == STATELESS and second.protocol_version == "2026-07-28"

    os.kill(everything["server_pid"], signal.SIGSTOP)
    try:
        async def stopped() -> object:
            return await LeanProbe(everything["endpoint"]).probe(0.5)

        result = asyncio.run(stopped())
        assert not result.ok and "0.5" in (result.error or ""), result
    finally:
        os.kill(everything["server_pid"], signal.SIGCONT)


def test_a_probe_of_a_closed_port_fails_with_the_reason() -> None:
    async def closed() -> object:
        return await LeanProbe("http://127.0.0.1:9/mcp").probe(1.0)

    result = asyncio.run(closed())
    assert not result.ok and result.error and "ConnectionRefused" in result.error
