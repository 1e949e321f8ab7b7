"""`plan` / `--dry-run`, `validate` (and `status` on a damaged state dir) end to end, in-process: manifests + a
tmp state dir -> text, JSON, exit codes. A missing `-f` path or a broken manifest never plans a removal, bad
values are located validation errors, `run --dry-run` only plans. A "converged" state dir is written by hand:
install records, and run records whose runner is this very test process (its pid, create_time and command
line are what observation verifies)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from mcp_reconcile import cli
from mcp_reconcile.ledger import Ledger
from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.store import StateDir

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "manifests"
SECRET = "sk-test-SECRET-12345"
OLD_SECRET = "sk-test-OLDSECRET-00000"

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]
WriteManifest = Callable[..., Path]

EVERYTHING = "npm:@modelcontextprotocol/server-everything@2026.8.31"
TIME = "pypi:mcp-server-time==2026.10.19"
GATE = "tests.gate: the new generation must pass before Ready"
FRESH_PLAN = f"""\
Symbols: + create / start, ? test

mcp-reconcile will perform the following actions:
  + install   everything  (new server: {EVERYTHING})
  + install   time        (new server: {TIME})
  + start     everything  (new server)
  + start     time        (new server)
  ? test      everything  ({GATE})
  ? test      time        ({GATE})

Plan: 2 to install, 2 to start, 0 to restart, 2 to test, 0 to stop, 0 to remove.
"""
NO_CHANGES = "No changes. Servers match the manifests.\n"
HEAD = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\n"
WELL_BEHAVED = REPO / "tests" / "fixtures" / "servers" / "well_behaved.py"


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-f manifests/` means the bundled examples; no manifest path or state dir leaks in from the environment."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MCP_RECONCILE_MANIFESTS", raising=False)
    monkeypatch.delenv("MCP_RECONCILE_STATE_DIR", raising=False)


def specs_for(paths: Sequence[str | Path], state: StateDir, environ: Mapping[str, str] | None = None
              ) -> list[ServerSpec]:
    result = load_manifests([str(p) for p in paths], environ=dict(os.environ if environ is None else environ),
                            key=state.hmac_key())
    assert result.problems == []
    return result.specs


def write_installed(state: StateDir, spec: ServerSpec) -> None:
    state.write_install({"server": spec.name, "source": str(spec.source), "resolved_version": "1.0.0",
                         "installer": spec.source.kind, "generation": spec.install_generation,
                         "digests": dict(spec.digests), "installed_at": 0.0})


def write_running(state: StateDir, spec: ServerSpec, *, runner_pid: int | None = None) -> None:
    """A run record whose runner is this test process, unless `runner_pid` names another one."""
    me = psutil.Process()
    state.write_run({"server": spec.name, "runner_pid": runner_pid or me.pid,
                     "runner_create_time": me.create_time(), "runner_cmdline": me.cmdline(),
                     "server_pid": None, "endpoint": "http://127.0.0.1:1/mcp", "generation": spec.runtime_generation,
                     "digests": dict(spec.digests), "started_at": 0.0, "state": "running"})


def converge(state: StateDir, specs: Sequence[ServerSpec]) -> None:
    """What a successful apply leaves: installed, running, and the gated generation tested."""
    ledger = Ledger(state)
    for spec in specs:
        write_installed(state, spec)
        write_running(state, spec)
        ledger.update(spec.name, file=spec.origin.file, tested_generation=spec.runtime_generation,
                      test_passed=True)
    ledger.save()


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


# --- plan ---------------------------------------------------------------------------------------------------

def test_a_dry_run_on_an_empty_state_dir_plans_install_and_start(run_cli: RunCli, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, err = run_cli(["--dry-run", "-f", "manifests/", "--state-dir", str(state)])
    assert (code, out, err) == (0, FRESH_PLAN, "")
    assert not state.exists(), "a dry run must not write to the state dir"


def test_plan_is_the_same_as_dry_run(run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli(["plan", "-f", "manifests/", "--state-dir", str(tmp_path)]) == (0, FRESH_PLAN, "")


def test_detailed_exitcode_is_2_when_there_are_changes(run_cli: RunCli, tmp_path: Path) -> None:
    code, out, _ = run_cli(["--dry-run", "--detailed-exitcode", "-f", "manifests/", "--state-dir", str(tmp_path)])
    assert (code, out) == (2, FRESH_PLAN)


def test_detailed_exitcode_is_0_when_converged(run_cli: RunCli, state_dir: StateDir) -> None:
    converge(state_dir, specs_for(["manifests/"], state_dir))
    assert run_cli(["plan", "--detailed-exitcode", "-f", "manifests/", "--state-dir", str(state_dir.root)]) == (
        0, NO_CHANGES, "")


def test_the_json_plan_has_the_same_actions_as_the_text(run_cli: RunCli, tmp_path: Path) -> None:
    code, out, _ = run_cli(["plan", "-o", "json", "-f", "manifests/", "--state-dir", str(tmp_path)])
    assert code == 0
    doc = json.loads(out)
    text_lines = [line.split() for line in FRESH_PLAN.splitlines() if line.startswith("  ")]
    assert [[a["symbol"], a["action"], a["server"]] for a in doc["actions"]] == [w[:3] for w in text_lines]
    assert [a["reason"] for a in doc["actions"]] == [line.split("(", 1)[1][:-1] for line in
                                                     FRESH_PLAN.splitlines() if line.startswith("  ")]
    assert doc["summary_line"] == FRESH_PLAN.splitlines()[-1]
    assert (doc["changes"], doc["problems"], doc["summary"]["install"]) == (True, [], 2)


def test_a_rotated_secret_shows_as_sensitive_and_its_value_nowhere(
        run_cli: RunCli, write_manifest: WriteManifest, state_dir: StateDir,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_manifest("""
        apiVersion: mcp-reconcile/v1
        kind: MCPServer
        metadata: {name: api}
        spec:
          source: {npm: "api-server@1.0.0"}
          env:
            API_KEY: ${API_KEY}
            TZ: UTC
        """)
    converge(state_dir, specs_for([path], state_dir, environ={"API_KEY": OLD_SECRET}))
    monkeypatch.setenv("API_KEY", SECRET)
    argv = ["plan", "-f", str(path), "--state-dir", str(state_dir.root)]
    code, text, err = run_cli(argv)
    assert code == 0
    assert "  ~ restart   api  (changed: env.API_KEY (sensitive))" in text.splitlines()
    _, as_json, _ = run_cli([*argv, "-o", "json"])
    assert json.loads(as_json)["actions"][0]["changed_fields"] == ["env.API_KEY"]
    for secret in (SECRET, OLD_SECRET):
        assert secret not in text + err + as_json
        assert secret not in "".join(p.read_text(errors="replace") for p in state_dir.root.rglob("*.json"))


def _record_of_a_gone_runner(record: dict[str, Any]) -> str:
    record["runner_pid"] = pid = gone_pid()
    return f"runner record is stale (runner pid {pid} is gone)"


def _record_of_a_reused_pid(record: dict[str, Any]) -> str:
    record["runner_create_time"] -= 3600  # same pid, but a process started an hour earlier: not ours
    return f"runner record is stale (pid {record['runner_pid']} now belongs to another process)"


def _record_of_another_command(record: dict[str, Any]) -> str:
    record["runner_cmdline"] = ["mcp-reconcile", "runner", "time"]
    return f"runner record is stale (pid {record['runner_pid']} now belongs to another process)"


def _record_of_an_exit(record: dict[str, Any]) -> str:
    record.update(state="exited", exit={"code": 3, "signal": None, "at": 0.0})
    return "exited with code 3"


@pytest.mark.parametrize("tamper", [
    pytest.param(_record_of_a_gone_runner, id="the runner pid is gone"),
    pytest.param(_record_of_a_reused_pid, id="the pid was reused by a process with another create_time"),
    pytest.param(_record_of_another_command, id="the pid runs another command line"),
    pytest.param(_record_of_an_exit, id="the runner recorded the server's exit"),
])
def test_a_run_record_that_is_not_a_live_runner_is_planned_as_a_start_with_the_reason(
        run_cli: RunCli, state_dir: StateDir, tamper: Callable[[dict[str, Any]], str]) -> None:
    """SPEC §4: a pid counts as ours only with the same create_time and command line."""
    converge(state_dir, specs_for(["manifests/"], state_dir))
    record = dict(state_dir.read_run("time") or {})
    reason = tamper(record)
    state_dir.write_run(record)  # type: ignore[arg-type]
    code, out, _ = run_cli(["plan", "-f", "manifests/", "--state-dir", str(state_dir.root)])
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("  ")] == [
        f"  + start     time  ({reason})", f"  ? test      time  ({GATE})"]


def test_an_empty_manifest_removes_every_known_server_stop_first(run_cli: RunCli, state_dir: StateDir) -> None:
    converge(state_dir, specs_for(["manifests/"], state_dir))
    code, out, _ = run_cli(["plan", "--detailed-exitcode", "-f", "/dev/null", "--state-dir", str(state_dir.root)])
    assert code == 2
    assert [line for line in out.splitlines() if line.startswith("  ")] == [
        "  - stop      everything  (removed from manifests)", "  - stop      time        (removed from manifests)",
        "  - uninstall everything  (removed from manifests)", "  - uninstall time        (removed from manifests)"]
    assert out.splitlines()[-1] == "Plan: 0 to install, 0 to start, 0 to restart, 2 to stop, 2 to remove."


@pytest.mark.parametrize(("broken", "message"), [
    pytest.param("spec: {source: {npm: a@1.0.0}, colour: blue}\n",
                 "[0] spec: unknown field(s) ('colour' was unexpected)", id="a schema violation"),
    pytest.param("spec: {source: {npm: a@1.0.0}\n", ":5: invalid YAML: ", id="invalid YAML"),
])
def test_a_broken_manifest_leaves_its_running_server_alone_and_exits_1(
        run_cli: RunCli, write_manifest: WriteManifest, state_dir: StateDir, broken: str, message: str) -> None:
    """Last good state (SPEC §5): neither restarted nor removed while its manifest is broken."""
    head = "apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: a}\n"
    path = write_manifest(head + "spec: {source: {npm: a@1.0.0}}\n", "a.yaml")
    converge(state_dir, specs_for([path], state_dir))
    path.write_text(head + broken)
    code, out, err = run_cli(["plan", "--detailed-exitcode", "-f", str(path.parent),
                              "--state-dir", str(state_dir.root)])
    assert (code, out) == (1, NO_CHANGES)
    assert err.startswith(f"error: {path}{message}")


# --- errors: exit 1, message on stderr, never a traceback ---------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("kind: [unclosed\n", ":2: invalid YAML: ", id="invalid YAML"),
    pytest.param("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: a}\nspec: {source: {}}\n",
                 "[0] spec.source: exactly one of npm / pypi / path is required", id="a schema violation"),
    pytest.param("apiVersion: mcp-reconcile/v1\nkind: MCPServer\nmetadata: {name: a}\n"
                 "spec: {source: {npm: a@1}, env: {K: '${MCP_TEST_UNSET_VAR}'}}\n",
                 "[0] spec.env.K: ${MCP_TEST_UNSET_VAR} is not set", id="a missing variable"),
])
@pytest.mark.parametrize("command", ["plan", "validate"])
def test_a_bad_manifest_exits_1_with_the_message_on_stderr(
        run_cli: RunCli, write_manifest: WriteManifest, tmp_path: Path, command: str, text: str,
        expected: str) -> None:
    path = write_manifest(text)
    state = ["--state-dir", str(tmp_path / "state")] if command == "plan" else []   # validate reads no state
    code, _, err = run_cli([command, "-f", str(path), *state])
    assert code == 1
    assert err.startswith(f"error: {path}{expected}")
    assert "Traceback" not in err


def test_a_missing_manifest_path_exits_1(run_cli: RunCli, tmp_path: Path) -> None:
    code, _, err = run_cli(["plan", "-f", str(tmp_path / "nope"), "--state-dir", str(tmp_path)])
    assert (code, err) == (1, f"error: {tmp_path / 'nope'}: no such file or directory\n")


def test_a_corrupt_state_file_exits_1_naming_it(run_cli: RunCli, state_dir: StateDir) -> None:
    state_dir.ensure()
    state_dir.state_file.write_text("{not json")
    code, out, err = run_cli(["plan", "-f", "manifests/", "--state-dir", str(state_dir.root)])
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {state_dir.state_file}: ")
    assert "Traceback" not in err


def _a_regular_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "state").write_text("not a dir\n")
    return tmp_path / "state", "exists and is not a directory"


def _below_a_regular_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "state", os.strerror(errno.ENOTDIR)


def _a_lock_that_is_a_directory(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "state" / ".lock").mkdir(parents=True)
    return tmp_path / "state" / ".lock", os.strerror(errno.EISDIR)


@pytest.mark.parametrize("unusable", [
    pytest.param(_a_regular_file, id="the state dir is a regular file"),
    pytest.param(_below_a_regular_file, id="the state dir is below a regular file"),
    pytest.param(_a_lock_that_is_a_directory, id="its lock file cannot be opened"),
])
@pytest.mark.parametrize("command", ["apply", "run", "stop-all"])
def test_an_unusable_state_dir_exits_1_naming_the_path_and_the_reason(
        run_cli: RunCli, tmp_path: Path, command: str, unusable: Callable[[Path], tuple[Path, str]]) -> None:
    path, reason = unusable(tmp_path)
    state = path.parent if path.name == ".lock" else path
    manifests = ["-f", "manifests/"] if command != "stop-all" else []   # stop-all reads no manifest
    code, out, err = run_cli([command, *manifests, "--state-dir", str(state)])
    assert (code, out, err) == (1, "", f"error: cannot lock the state dir: {path}: {reason}\n")


def test_a_usage_error_exits_1_not_2(run_cli: RunCli, tmp_path: Path) -> None:
    code, _, err = run_cli(["plan", "--detailed-exitcode", "-o", "yaml", "--state-dir", str(tmp_path)])
    assert "invalid choice: 'yaml'" in err
    assert code == 1


# --- validate -----------------------------------------------------------------------------------------------

def test_validate_lists_every_problem_in_file_order(run_cli: RunCli) -> None:
    broken = FIXTURES / "broken"
    code, out, err = run_cli(["validate", "-f", str(broken)])
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"error: {broken / '01-bad-yaml.yaml'}:6: invalid YAML: expected ',' or '}}', but got '<scalar>'",
        f"error: {broken / '02-schema.yaml'}[0] spec.source.npm: 'not a package' is not name@version",
        f"error: {broken / '02-schema.yaml'}[1] spec.restartPolicy: 'Sometimes' is not one of "
        "['Always', 'OnFailure', 'Never']",
        f"error: {broken / '03-kind.yaml'}[0] kind: unknown kind 'Deployment' (expected MCPServer or MCPClient)",
    ]


def test_validate_as_json_lists_the_problems_located(run_cli: RunCli) -> None:
    broken = FIXTURES / "broken"
    code, out, _ = run_cli(["validate", "-o", "json", "-f", str(broken)])
    doc = json.loads(out)
    assert (code, doc["valid"]) == (1, False)
    assert [(p["file"], p["document"], p["path"], p["line"]) for p in doc["problems"]] == [
        (str(broken / "01-bad-yaml.yaml"), None, None, 6),
        (str(broken / "02-schema.yaml"), 0, "spec.source.npm", None),
        (str(broken / "02-schema.yaml"), 1, "spec.restartPolicy", None),
        (str(broken / "03-kind.yaml"), 0, "kind", None)]


def test_validate_accepts_the_bundled_manifests(run_cli: RunCli) -> None:
    assert run_cli(["validate", "-f", "manifests/"]) == (0, "2 server(s) valid: everything, time\n", "")


def test_validate_of_dev_null_is_zero_valid_servers(run_cli: RunCli) -> None:
    assert run_cli(["validate", "-f", "/dev/null"]) == (0, "0 server(s) valid: (none)\n", "")


# --- a missing -f path or a broken manifest plans no removal ---------------------------------------------------

@pytest.mark.parametrize("extra", [
    pytest.param([], id="the only -f path is missing"),
    pytest.param(["-f", "/dev/null"], id="a missing path beside an empty one"),
])
def test_a_missing_manifest_directory_plans_no_stop_or_uninstall_of_known_servers(
        run_cli: RunCli, state_dir: StateDir, tmp_path: Path, extra: list[str]) -> None:
    """A typo in -f says nothing about intent: the servers the state dir knows are left alone."""
    converge(state_dir, specs_for(["manifests/"], state_dir))
    missing = tmp_path / "no-such-dir"

    code, out, err = run_cli(["plan", "--detailed-exitcode", "-f", str(missing), *extra,
                              "--state-dir", str(state_dir.root)])

    assert (code, out) == (1, NO_CHANGES), out
    assert f"{missing}: no such file or directory" in err
    assert "Traceback" not in err


def test_a_missing_manifest_directory_plans_no_uninstall_of_an_installed_server_in_json(
        run_cli: RunCli, state_dir: StateDir, tmp_path: Path) -> None:
    """Installed but not running (no run record): no uninstall either; the JSON plan names the missing path."""
    converge(state_dir, specs_for(["manifests/"], state_dir))
    for name in ("everything", "time"):
        state_dir.remove_run(name)
    missing = tmp_path / "gone"

    code, out, err = run_cli(["plan", "-o", "json", "-f", str(missing), "--state-dir", str(state_dir.root)])

    doc = json.loads(out)
    assert (code, doc["actions"], doc["changes"]) == (1, [], False), out
    assert [(p["file"], p["reason"]) for p in doc["problems"]] == [(str(missing), "no such file or directory")]
    assert "Traceback" not in err


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


# --- bad values are validation errors at their path, never a traceback -----------------------------------------

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

    state = ["--state-dir", str(tmp_path / "state")] if command == "plan" else []   # validate reads no state
    code, out, err = run_cli([command, "-f", str(path), *state])

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


def test_a_server_over_streamable_http_is_refused_rather_than_silently_run_over_stdio(
        write_manifest: WriteManifest, run_cli: RunCli) -> None:
    path = write_manifest("""
        apiVersion: mcp-reconcile/v1
        kind: MCPServer
        metadata: {name: web}
        spec:
          source: {npm: "@scope/web@1.0.0"}
          transport: streamable-http
          port: 8080
    """)
    code, _out, err = run_cli(["validate", "-f", str(path)])
    assert code == 1
    assert "spec.transport: only stdio servers are run for now" in err and "Traceback" not in err


# --- status survives a corrupt run record ----------------------------------------------------------------------

@pytest.mark.parametrize("output", ["text", "json"])
def test_status_with_a_corrupt_run_record_still_shows_the_other_servers(
        run_cli: RunCli, state_dir: StateDir, output: str) -> None:
    converge(state_dir, specs_for(["manifests/"], state_dir))
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


# --- run --dry-run only plans ----------------------------------------------------------------------------------

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
    """Nothing desired and nothing known, so that a `run --dry-run` that ran the controller after all would
    touch no process: it stops after 0.1 s, prints no plan, and creates the state dir."""
    state = tmp_path / "state"
    where = ["-f", "/dev/null", "--state-dir", str(state)]

    planned = run_cli(["plan", *where])

    assert planned == (0, NO_CHANGES, "")
    assert run_cli(["run", "--dry-run", "--monitor-duration", "0.1", *where]) == planned
    assert not state.exists(), "a dry run must not write to the state dir"
