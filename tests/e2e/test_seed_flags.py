"""The seed's own command line (issue 12, point 6): `--config servers_config.json --all --monitor-duration N`.

Its servers_config.json launcher forms (`uv run mcp-server-time`, `npx -y @modelcontextprotocol/server-everything`)
install real packages and reach Ready, in the `mcpServers` shape and in the seed's legacy `servers` shape (with
`type` and `health_check`); `--all` exits as `apply` does (1 after a failed install); and when the
controller ends, its output names the runners that keep running and how to stop them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.conftest import INSTALL_TIMEOUT_S, Controller, Harness, wait_until

pytestmark = pytest.mark.e2e

SEED_CONFIG = {"mcpServers": {
    "time": {"command": "uv", "args": ["run", "mcp-server-time"]},
    "everything": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]},
}}
# The same servers in the seed's own legacy format (SPEC section 1: `servers` with `type` and `health_check`).
LEGACY_SEED_CONFIG = {"servers": {
    "time": {"type": "python", "command": "uv", "args": ["run", "mcp-server-time"],
             "health_check": {"interval": 5, "timeout": 5}},
    "everything": {"type": "nodejs", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"],
                   "health_check": {"interval": 5, "timeout": 5}},
}}
# Long enough for a first install of a package that does not exist to fail (a registry look-up), short enough
# that the test sees monitoring end by itself.
FAILING_MONITOR_S = 30.0
# Bound on the controller leaving once monitoring ends (passes cut short, runners left alone).
EXIT_SLACK_S = 30.0


def seed_run(h: Harness, config: Path, *args: str) -> Controller:
    """The seed's command line, in the background, as the seed's README writes it (`--config`, no `run`)."""
    n = len(h.controllers)
    err, out = h.root / f"seed-{n}.stderr", h.root / f"seed-{n}.stdout"
    argv = [sys.executable, "-m", "mcp_reconcile", "--config", str(config), *args, "--state-dir", str(h.state_dir)]
    with open(err, "wb") as err_fh, open(out, "wb") as out_fh:
        process = subprocess.Popen(argv, env=h.env, stdout=out_fh, stderr=err_fh, stdin=subprocess.DEVNULL,
                                   cwd=h.root)
    controller = Controller(process, err, out)
    h.controllers.append(controller)
    return controller


def rows_of(h: Harness, config: Path) -> dict[str, dict[str, Any]]:
    from mcp_reconcile.settings import Options
    from mcp_reconcile.status import collect

    h.note_records()
    return {row["name"]: row for row in collect(Options(state_dir=str(h.state_dir), manifests=[str(config)]))}


@pytest.mark.parametrize("seed_config", [SEED_CONFIG, LEGACY_SEED_CONFIG], ids=["mcpServers", "legacy"])
def test_the_seeds_servers_config_reaches_ready_with_all_and_names_what_keeps_running(
        local: Harness, seed_config: dict[str, Any]) -> None:
    config = local.root / "servers_config.json"
    config.write_text(json.dumps(seed_config))
    controller = seed_run(local, config, "--all", "--monitor-duration", "900")

    wait_until(lambda: rows_of(local, config), lambda rows: all(
        n in rows and rows[n]["ready"] and rows[n]["endpoint"] for n in ("time", "everything")),
        timeout_s=INSTALL_TIMEOUT_S, what="time and everything Ready")
    report = local.state_dir / "reports" / "test_report.json"
    wait_until(lambda: report.exists() and json.loads(report.read_text() or "{}"), bool,
               timeout_s=INSTALL_TIMEOUT_S, what="the --all test report")
    code = controller.stop()

    out = controller.stdout_path.read_text()
    assert code == 0, f"{out}\n{controller.stderr()[-3000:]}"
    assert "2 runner(s) keep running:" in out and "  everything  http://127.0.0.1:" in out, out
    assert f"mcp-reconcile stop-all --state-dir {local.state_dir}" in out, out
    assert all(row["endpoint"] for row in rows_of(local, config).values())


@pytest.mark.parametrize("shape", ["mcpServers", "legacy"])
def test_all_exits_1_after_a_failed_install_and_says_what_keeps_running(local: Harness, shape: str) -> None:
    config = local.root / "servers_config.json"
    servers = {"steady": {"command": "python", "args": [str(local.fault_server("well_behaved.py"))]},
               "nope": {"command": "uvx", "args": ["mcp-reconcile-no-such-package-4f1c9e"]}}
    if shape == "legacy":
        servers = {name: {"type": "python", **entry} for name, entry in servers.items()}
    config.write_text(json.dumps({"mcpServers" if shape == "mcpServers" else "servers": servers}))
    controller = seed_run(local, config, "--all", "--monitor-duration", str(FAILING_MONITOR_S))

    code = controller.process.wait(FAILING_MONITOR_S + EXIT_SLACK_S)

    out = controller.stdout_path.read_text()
    assert code == 1, f"{out}\n{controller.stderr()[-3000:]}"
    assert "failed: nope: install failed:" in out, out
    assert "1 runner(s) keep running:\n  steady  http://127.0.0.1:" in out, out
    assert "mcp-reconcile stop-all" in out, out
    failed = rows_of(local, config)["nope"]
    assert failed["phase"] == "Failed" and "install failed" in failed["message"], failed
    assert failed["restarts"] == 0, failed
