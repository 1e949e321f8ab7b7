"""Secrets stay out of what the controller writes and of what its helper commands see (issue 12, point 7):
a secret inside a composed env value is redacted on its own, `uv venv` and the host-tool probes get no
manifest secret, and a probe error quoting a secret is redacted before state.json is written."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog

from mcp_reconcile import events, install, proc
from mcp_reconcile.errors import PermanentError
from mcp_reconcile.install import prereq, pypi
from mcp_reconcile.install.pypi import PypiInstaller
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import build_spec
from mcp_reconcile.model import API_VERSION, KIND, Origin, ServerSpec, Source
from mcp_reconcile.proc import CommandResult
from mcp_reconcile.store import StateDir

SECRET = "abc123-very-secret"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    events.REDACTOR.update(())


def composed_spec() -> ServerSpec:
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "api"},
           "spec": {"source": {"npm": "pkg@1.0.0"}, "env": {"Authorization": "Bearer ${TOK}", "MODE": "plain"}}}
    return build_spec(doc, origin=Origin("/srv/manifests/api.yaml"), environ={"TOK": SECRET}, key=b"k" * 32)


def test_a_secret_inside_a_composed_value_is_redacted_from_the_audit_log_on_its_own(tmp_path: Path) -> None:
    spec = composed_spec()
    assert spec.env["Authorization"] == f"Bearer {SECRET}"
    events.configure(tmp_path / "events.jsonl", secrets=spec.secret_values(), stderr=None)

    events.get_logger().warning("probe.failed", server="api", error=f"401: token {SECRET} rejected")

    text = (tmp_path / "events.jsonl").read_text()
    assert SECRET not in text
    assert "401: token (sensitive) rejected" in text
    launch = install.launch_spec(spec, {"installer": "npm", "dir": str(tmp_path), "command": ["server"]}, {})
    assert SECRET in launch.secret_values()   # the test suite scrubs the server's stderr with these


def test_a_probe_error_quoting_a_secret_is_redacted_before_state_json_is_written(tmp_path: Path) -> None:
    events.REDACTOR.update(composed_spec().secret_values())
    state = StateDir(tmp_path / "state")
    ledger = Ledger(state)

    ledger.update("api", last_probe={"ok": False, "error": f"HTTP 500: echo Bearer {SECRET}", "latency_ms": 1.0})
    ledger.save()

    text = state.state_file.read_text()
    assert SECRET not in text
    assert json.loads(text)["servers"]["api"]["last_probe"]["error"] == "HTTP 500: echo (sensitive)"


class RecordingUv:
    """Stands in for proc.run_command: records each command's environment; `uv venv` makes the venv, the
    install fails as uv does for a package that does not exist."""

    def __init__(self) -> None:
        self.envs: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, **_: object) -> CommandResult:
        self.envs.append((argv[1], dict(env) if env is not None else dict(os.environ)))
        if argv[1] == "venv":
            python = Path(argv[-1]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("")
            return CommandResult(tuple(argv), 0, "", "", 0.0, False)
        return CommandResult(tuple(argv), 1, "", "error: No solution found when resolving dependencies", 0.0, False)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_uv_venv_runs_with_the_installers_environment_not_the_controllers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str) -> None:
    monkeypatch.setenv("OTHER_SERVERS_TOKEN", SECRET)
    fake = RecordingUv()
    monkeypatch.setattr(proc, "run_command", fake)
    monkeypatch.setattr(pypi, "uv_binary", lambda: "/opt/uv")
    spec = ServerSpec(name="demo", source=Source("pypi", "no-such-server"), install_generation="g1")
    installer_env = {"PATH": os.environ["PATH"], "HOME": "/root"}

    with pytest.raises(PermanentError), structlog.testing.capture_logs():
        await PypiInstaller().install(spec, tmp_path, env=installer_env)

    assert [step for step, _ in fake.envs] == ["venv", "pip"]
    for _, env in fake.envs:
        assert "OTHER_SERVERS_TOKEN" not in env
    assert fake.envs[0][1] == installer_env


def test_the_node_version_probe_runs_with_a_minimal_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTHER_SERVERS_TOKEN", SECRET)
    seen = tmp_path / "env.txt"
    node = tmp_path / "node"
    node.write_text(f"#!/bin/sh\nenv > {seen}\necho v20.1.0\n")
    node.chmod(node.stat().st_mode | stat.S_IXUSR)

    assert prereq.node_version(str(node)) == "v20.1.0"

    names = {line.split("=", 1)[0] for line in seen.read_text().splitlines() if "=" in line}
    assert "OTHER_SERVERS_TOKEN" not in names
    assert "PATH" in names
