"""Regression tests for the review findings fixed in ff6c3eb, in-process: a missing `-f` path or a broken
manifest never plans a removal, invalid backoff and command values are located validation errors, `status`
survives a corrupt run record, and `run --dry-run` only plans.

Converged state dirs are written by hand as in test_cli_plan.py: install records, and run records whose
runner is this very test process (its pid, create_time and command line are what observation verifies)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import pytest

from mcp_reconcile import cli
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.store import StateDir

REPO = Path(__file__).resolve().parents[2]
WELL_BEHAVED = REPO / "tests" / "fixtures" / "servers" / "well_behaved.py"
NO_CHANGES = "No changes. Servers match the manifests.\n"
HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\n"

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
WriteManifest = Callable[..., Path]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-f manifests/` means the bundled examples; no manifest path or state dir leaks in from the environment."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MCP_RECONCILE_MANIFESTS", raising=False)
    monkeypatch.delenv("MCP_RECONCILE_STATE_DIR", raising=False)


def converge(state: StateDir, paths: Sequence[str | Path]) -> list[ServerSpec]:
    """What a successful apply of `paths` leaves: installed, running (under this process), files remembered."""
    result = load_manifests([str(p) for p in paths], key=state.hmac_key())
    assert result.problems == []
    me = psutil.Process()
    ledger = Ledger(state)
    for spec in result.specs:
        state.write_install({"server": spec.name, "source": str(spec.source), "resolved_version": "1.0.0",
                             "installer": spec.source.kind, "generation": spec.install_generation,
                             "digests": dict(spec.digests), "installed_at": 0.0})
        state.write_run({"server": spec.name, "runner_pid": me.pid, "runner_create_time": me.create_time(),
                         "runner_cmdline": me.cmdline(), "server_pid": None, "endpoint": "http://127.0.0.1:1/mcp",
                         "generation": spec.runtime_generation, "digests": dict(spec.digests), "started_at": 0.0,
                         "state": "running"})
        ledger.update(spec.name, file=os.path.abspath(spec.origin.file), tested_generation=spec.runtime_generation,
                      test_passed=True)
    ledger.save()
    return result.specs


def action_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  ")]


# --- 1. a missing -f path or a broken manifest plans no removal ----------------------------------------------

@pytest.mark.parametrize("extra", [
    pytest.param([], id="the only -f path is missing"),
    pytest.param(["-f", "manifests/"], id="one of two -f paths is missing"),
])
def test_a_missing_manifest_directory_plans_no_stop_or_uninstall_of_known_servers(
        run_cli: RunCli, state_dir: StateDir, tmp_path: Path, extra: list[str]) -> None:
    """A typo in -f says nothing about intent: the servers the state dir knows are left alone."""
    converge(state_dir, ["manifests/"])
    missing = tmp_path / "no-such-dir"

    code, out, err = run_cli(["plan", "--detailed-exitcode", "-f", str(missing), *extra,
                              "--state-dir", str(state_dir.root)])

    assert (code, out) == (1, NO_CHANGES), out
    assert f"{missing}: no such file or directory" in err
    assert "Traceback" not in err


def test_a_missing_manifest_directory_plans_no_removal_of_servers_only_the_ledger_knows(
        run_cli: RunCli, state_dir: StateDir, tmp_path: Path) -> None:
    """Ledger entries without records (a server apply has not started yet) are protected as well."""
    ledger = Ledger(state_dir)
    ledger.update("remembered", file=str(tmp_path / "gone" / "remembered.yaml"), phase="Stopped")
    ledger.save()
    missing = tmp_path / "gone"

    code, out, err = run_cli(["plan", "-o", "json", "-f", str(missing), "--state-dir", str(state_dir.root)])

    assert code == 1
    assert json.loads(out)["actions"] == []
    assert f"{missing}: no such file or directory" in err


@pytest.mark.parametrize("relative", [pytest.param(False, id="absolute -f"), pytest.param(True, id="relative -f")])
def test_an_installed_only_server_whose_manifest_turns_into_bad_yaml_is_not_uninstalled(
        run_cli: RunCli, write_manifest: WriteManifest, state_dir: StateDir, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, relative: bool) -> None:
    """`desiredState: installed` never starts the server; the ledger must still remember its file."""
    good = HEAD + f"metadata: {{name: a}}\nspec: {{source: {{path: {WELL_BEHAVED}}}, desiredState: installed}}\n"
    path = write_manifest(good, "a.yaml")
    monkeypatch.chdir(tmp_path)
    manifests = "manifests" if relative else str(path.parent)
    state = ["--state-dir", str(state_dir.root)]
    code, out, err = run_cli(["apply", "--install", "-f", manifests, *state])
    assert code == 0, out + err
    assert state_dir.read_install("a"), "apply --install wrote no install record"
    assert not state_dir.run_record_path("a").exists()

    path.write_text(good.replace("desiredState: installed}", "desiredState: installed"))   # YAML error
    code, out, err = run_cli(["plan", "--detailed-exitcode", "-f", manifests, *state])

    assert (code, out) == (1, NO_CHANGES), out
    assert "invalid YAML" in err and "Traceback" not in err
    assert state_dir.read_install("a")


# --- 2. validation errors located, never a traceback ---------------------------------------------------------

@pytest.mark.parametrize(("spec", "where", "reason"), [
    pytest.param("{source: {npm: a@1.0.0}, restartBackoff: {initialSeconds: 5, maxSeconds: 2}}",
                 "spec.restartBackoff.maxSeconds", "maxSeconds must be at least initialSeconds",
                 id="restartBackoff maxSeconds below initialSeconds"),
    pytest.param("""{source: {npm: a@1.0.0}, command: "a 'b"}""", "spec.command", "cannot split into words",
                 id="a command with an unclosed quote"),
])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_an_invalid_value_is_a_validation_error_at_its_path(
        run_cli: RunCli, write_manifest: WriteManifest, tmp_path: Path, command: str, spec: str, where: str,
        reason: str) -> None:
    path = write_manifest(HEAD + f"metadata: {{name: a}}\nspec: {spec}\n")

    code, out, err = run_cli([command, "-f", str(path), "--state-dir", str(tmp_path / "state")])

    assert code == 1, out
    assert err.startswith(f"error: {path}[0] {where}: {reason}"), err
    assert "Traceback" not in err


def test_the_json_validation_report_locates_the_bad_backoff(run_cli: RunCli, write_manifest: WriteManifest) -> None:
    path = write_manifest(HEAD + "metadata: {name: a}\n"
                          "spec: {source: {npm: a@1.0.0}, restartBackoff: {initialSeconds: 5, maxSeconds: 2}}\n")
    code, out, _ = run_cli(["validate", "-o", "json", "-f", str(path)])
    doc = json.loads(out)
    assert (code, doc["valid"]) == (1, False)
    assert [(p["document"], p["path"]) for p in doc["problems"]] == [(0, "spec.restartBackoff.maxSeconds")]


# --- 9. status survives a corrupt run record -----------------------------------------------------------------

@pytest.mark.parametrize("output", ["text", "json"])
def test_status_with_a_corrupt_run_record_still_shows_the_other_servers(
        run_cli: RunCli, state_dir: StateDir, output: str) -> None:
    converge(state_dir, ["manifests/"])
    state_dir.run_record_path("time").write_text("\x00garbage{not json")

    code, out, err = run_cli(["status", "-o", output, "-f", "manifests/", "--state-dir", str(state_dir.root)])

    assert code == 0, err
    assert "Traceback" not in err
    if output == "json":
        rows = {row["name"]: row for row in json.loads(out)["servers"]}
        assert set(rows) == {"everything", "time"}
        assert rows["everything"]["endpoint"] == "http://127.0.0.1:1/mcp"
        assert rows["time"]["endpoint"] is None
    else:
        assert "everything" in out and "http://127.0.0.1:1/mcp" in out, out


# --- 10. run --dry-run only plans ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    pytest.param(["run", "--dry-run"], id="run --dry-run"),
    pytest.param(["run", "--dry-run", "--monitor-duration", "5"], id="run --dry-run --monitor-duration"),
    pytest.param(["apply", "--dry-run"], id="apply --dry-run"),
    pytest.param(["--dry-run", "--monitor"], id="--dry-run --monitor"),
    pytest.param(["--dry-run"], id="bare --dry-run"),
])
def test_dry_run_parses_to_the_plan_command(argv: list[str]) -> None:
    assert cli.parse([*argv, "-f", "manifests/"]).command == "plan"


def test_run_dry_run_prints_the_plan_and_starts_nothing(run_cli: RunCli, tmp_path: Path) -> None:
    state = tmp_path / "state"
    planned = run_cli(["plan", "-f", "manifests/", "--state-dir", str(state)])
    assert run_cli(["run", "--dry-run", "-f", "manifests/", "--state-dir", str(state)]) == planned
    assert planned[0] == 0
    assert not state.exists(), "a dry run must not write to the state dir"
