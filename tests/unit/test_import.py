"""`mcp-reconcile import` writes manifests that validate and plan exactly like the foreign file itself."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mcp_reconcile import cli
from mcp_reconcile.manifest import load_manifests
from mcp_reconcile.model import Observed
from mcp_reconcile.plan import plan
from mcp_reconcile.render import plan_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
FOREIGN = sorted(p.name for p in FIXTURES.glob("*.json"))
KEY = b"k" * 32
ENV = {"EVERYTHING_TOKEN": "tok-123456", "OPENWEATHER_API_KEY": "ow-123456", "WEATHER_REGION": "eu",
       "CACHE_DIR": "/tmp/c", "PGPASSWORD": "pw-123456", "PGUSER": "me", "PG_DSN_TOKEN": "dsn-123456",
       "BRAVE_API_KEY": "brave-123456", "GITHUB_TOKEN": "gh-123456", "API_KEY": "api-123456",
       "WEATHER_API_KEY": "w-123456", "TZ": "UTC"}
RunCli = Callable[[Sequence[str]], tuple[int, str, str]]


def _plan_lines(paths: list[str]) -> tuple[list[str], str]:
    load = load_manifests(paths, environ=ENV, key=KEY)
    assert load.problems == []
    specs = load.by_name
    return sorted(s.name for s in load.specs), plan_text(plan(specs, Observed(), now=0.0))


@pytest.mark.parametrize("fixture", FOREIGN)
def test_imported_manifests_validate_and_plan_identically_to_the_foreign_file(
        fixture: str, tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    source, out, state = str(FIXTURES / fixture), tmp_path / "manifests", str(tmp_path / "state")
    code, _, err = run_cli(["import", source, "-d", str(out)])
    assert code == 0, err
    assert sorted(out.glob("*.yaml")), "import wrote no manifest"

    code, valid, err = run_cli(["validate", "-f", str(out)])
    assert (code, err) == (0, ""), valid + err
    code, imported_plan, err = run_cli(["plan", "-f", str(out), "--state-dir", state])
    assert (code, err) == (0, ""), err
    code, direct_plan, err = run_cli(["plan", "-f", source, "--state-dir", state])
    assert code == 0, err
    assert imported_plan == direct_plan
    assert "+ install" in imported_plan

    direct_names, direct_lines = _plan_lines([source])
    assert _plan_lines([str(out)]) == (direct_names, direct_lines)


def test_import_refuses_to_overwrite_an_existing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = FIXTURES / "servers_config.json"
    assert cli.main(["import", str(source), "-d", str(tmp_path)]) == 0
    first = {p: p.read_text() for p in tmp_path.glob("*.yaml")}
    (next(iter(first))).write_text("# my edits\n")
    capsys.readouterr()
    assert cli.main(["import", str(source), "-d", str(tmp_path)]) == 1
    assert "would overwrite" in capsys.readouterr().err
    assert (next(iter(first))).read_text() == "# my edits\n"


def test_import_of_a_file_that_is_no_mcp_config_is_a_clear_error(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "package.json"
    bogus.write_text('{"name": "x", "version": "1.0.0"}')
    assert cli.main(["import", str(bogus)]) == 1
    err = capsys.readouterr().err
    assert str(bogus) in err and "Traceback" not in err


def test_literal_secrets_of_a_client_config_never_land_in_a_manifest(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "claude_desktop_config.json"
    config.write_text('{"mcpServers": {"github": {"command": "npx", "args": ["-y", "@scope/gh@1.0.0"],'
                      ' "env": {"GITHUB_TOKEN": "ghp-literal-SECRET-42", "LOG_LEVEL": "debug"}}}}')
    out = tmp_path / "manifests"
    assert cli.main(["import", str(config), "-d", str(out)]) == 0
    manifest = (out / "github.yaml").read_text()
    secrets_file = out / "github.secrets.env"
    assert "ghp-literal-SECRET-42" not in manifest and "LOG_LEVEL: debug" in manifest
    assert "envFile: github.secrets.env" in manifest
    assert (secrets_file.stat().st_mode & 0o777) == 0o600
    assert 'GITHUB_TOKEN="ghp-literal-SECRET-42"' in secrets_file.read_text()
    assert "ghp-literal-SECRET-42" not in capsys.readouterr().out

    load = load_manifests([str(out)], environ={}, key=KEY)
    assert not load.problems
    spec = load.by_name["github"]
    assert spec.env["GITHUB_TOKEN"] == "ghp-literal-SECRET-42" and "GITHUB_TOKEN" in spec.secret_keys

    assert cli.main(["import", str(config)]) == 0
    printed = capsys.readouterr()
    assert "ghp-literal-SECRET-42" not in printed.out + printed.err
    assert "GITHUB_TOKEN: ${GITHUB_TOKEN}" in printed.out


def test_the_legacy_config_flag_plans_from_servers_config_json(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path, monkeypatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["--config", str(FIXTURES / "servers_config.json"), "--dry-run", "--state-dir",
                     str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "+ install   filesystem" in out and "Plan:" in out


def test_import_into_a_dir_that_is_a_regular_file_exits_1_saying_so(tmp_path: Path, run_cli: RunCli) -> None:
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("keep me\n")
    code, out, err = run_cli(["import", str(FIXTURES / "cursor_mcp.json"), "-d", str(not_a_dir)])
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == f"error: -d {not_a_dir} is not a directory"
    assert not_a_dir.read_text() == "keep me\n"


def test_import_under_a_regular_file_exits_1_naming_the_path_and_the_reason(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "notes.txt").write_text("")
    below_a_file = tmp_path / "notes.txt" / "manifests"
    code, out, err = run_cli(["import", str(FIXTURES / "cursor_mcp.json"), "-d", str(below_a_file)])
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == f"error: import: {below_a_file}: {os.strerror(errno.ENOTDIR)}"
