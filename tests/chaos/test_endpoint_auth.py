"""`spec.endpointAuth`: the runner's endpoint wants the bearer token, and the controller's own probes and tests
send it; the server itself never sees it, and it is written nowhere."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.chaos

TOKEN = "ep-tok-91c4e7a2d05b"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}


def test_a_guarded_endpoint_refuses_clients_without_the_token_while_probes_and_tests_get_through(local) -> None:
    local.env["GUARDED_TOKEN"] = TOKEN
    local.write_manifest("guarded", {"source": {"path": str(local.fault_server("well_behaved.py"))},
                                     "env": {"EP_TOKEN": "${GUARDED_TOKEN}"},
                                     "endpointAuth": {"tokenEnv": "EP_TOKEN"},
                                     "tests": {"performance": {"requests": 10, "p95Ms": 2000}, "concurrency": 5}})
    local.cli("apply")
    rows = local.wait_until(local.rows, lambda r: local.probed_ready(r, "guarded"),
                            what="guarded Ready on a probe that carried the token")
    endpoint = rows["guarded"]["endpoint"]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    assert httpx.post(endpoint, json=INITIALIZE, headers=headers).status_code == 401
    assert httpx.post(endpoint, json=INITIALIZE, headers={**headers, "Authorization": "Bearer wrong"}
                      ).status_code == 401
    assert httpx.post(endpoint, json=INITIALIZE, headers={**headers, "Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 200

    tested = local.cli("test", "guarded", expect=None)
    report = json.loads((local.state_dir / "reports" / "test_report.json").read_text())
    checks = {c["name"]: c for c in report["servers"][0]["checks"]}
    assert tested.code == 0, tested
    assert checks["auth"]["status"] == "pass", checks["auth"]

    server_pid = local.run_record("guarded")["server_pid"]
    with open(f"/proc/{server_pid}/environ", "rb") as fh:
        assert TOKEN.encode() not in fh.read()   # the runner keeps it
    written = [p for p in local.state_dir.rglob("*") if p.is_file() and p.name != ".key"]
    assert written and all(TOKEN.encode() not in p.read_bytes() for p in written)
    assert all(TOKEN not in out.out + out.err for out in local.outputs)
