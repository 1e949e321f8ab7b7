"""`mcp-reconcile import` writes manifests that validate and plan exactly like the foreign file itself."""

from __future__ import annotations

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
       "WEATHER_API_KEY": "w-123456"}


def _plan_lines(paths: list[str]) -> tuple[list[str], str]:
    load = load_manifests(paths, environ=ENV, key=KEY)
    specs = load.by_name
    return sorted(s.name for s in load.specs), plan_text(plan(specs, Observed(), now=0.0))


@pytest.mark.parametrize("fixture", FOREIGN)
def test_imported_manifests_plan_identically_to_the_foreign_file(fixture: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "manifests"
    assert cli.main(["import", str(FIXTURES / fixture), "-d", str(out)]) == 0
    capsys.readouterr()
    written = sorted(out.glob("*.yaml"))
    assert written, "import wrote no manifest"

    assert cli.main(["validate", "-f", str(out)]) in (0, 1)
    direct_names, direct_plan = _plan_lines([str(FIXTURES / fixture)])
    imported_names, imported_plan = _plan_lines([str(out)])
    assert imported_names == direct_names
    assert imported_plan == direct_plan


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
