"""`--help`: each subcommand lists only the flags it honours, each with help text and its default; the seed
script's flags sit under one heading of the bare command; the README's command table names no flag that the
command does not take."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_reconcile import cli

README = Path(__file__).resolve().parents[2] / "README.md"
SHARED = {"-h", "--help"}
MANIFESTS = {"-f", "--filename", "--config"}
STATE = {"--state-dir"}
OUTPUT = {"-o", "--output"}
APPLY = {"--dry-run", "--force", "--skip-prerequisites", "--max-parallel-installs", "--max-parallel-starts", "--test"}
FOLLOW = {"-n", "--lines", "--since", "--follow"}
# The flags each command honours (what its code reads from Options), and nothing else.
HONOURED = {
    "apply": MANIFESTS | STATE | APPLY | {"--sequential", "--install"},
    "plan": MANIFESTS | STATE | OUTPUT | {"--detailed-exitcode"},
    "validate": MANIFESTS | OUTPUT,
    "run": MANIFESTS | STATE | APPLY | {"--monitor-duration", "--resync-interval", "--webhook-url", "--metrics-port"},
    "status": MANIFESTS | STATE | OUTPUT | {"--watch"},
    "describe": MANIFESTS | STATE | OUTPUT,
    "events": STATE | OUTPUT | FOLLOW | {"--server"},
    "logs": STATE | FOLLOW,
    "test": MANIFESTS | STATE | {"--junit", "--force"},
    "import": STATE | {"-d", "--dir", "--overwrite", "--take-over", "--client"},
    "stop-all": STATE,
}
LEGACY = {"--install", "--test", "--monitor", "--all", "--monitor-duration", "--sequential", "--skip-prerequisites",
          "--force"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", sorted(HONOURED))
def test_a_subcommand_lists_only_the_flags_it_honours(command: str) -> None:
    parser = subcommands()[command]
    flags = {s for a in parser._actions for s in a.option_strings} - SHARED

    assert flags == HONOURED[command]


@pytest.mark.parametrize("command", sorted(set(subcommands()) - {"runner", "connect"}))
def test_every_option_has_help_and_shows_its_default(command: str) -> None:
    parser = subcommands()[command]
    text = flat(parser.format_help())

    for action in options(parser):
        assert action.help, f"{command} {action.option_strings[0]} has no help text"
        field = cli.Options.__dataclass_fields__.get(action.dest)
        default = field.default if field is not None else None
        if action.nargs == 0 or default in (None, "", False) or default is dataclass_missing():
            continue
        shown = flat(parser._get_formatter()._get_help_string(action) or "")   # type: ignore[attr-defined]
        value = f"{default:g}" if isinstance(default, float) else str(default)
        assert "(default: " in shown and shown in text, f"{command} {action.option_strings[0]}: no default"
        assert value in shown or "$" in shown, f"{command} {action.option_strings[0]}: {shown}"


def dataclass_missing() -> object:
    import dataclasses

    return dataclasses.MISSING


def test_the_legacy_flags_are_grouped_under_one_heading_of_the_bare_command() -> None:
    parser = cli.build_parser()
    legacy = next(g for g in parser._action_groups if g.title and g.title.startswith("legacy"))

    assert {s for a in legacy._group_actions for s in a.option_strings if s.startswith("--")} == LEGACY
    for group in parser._action_groups:
        if group is not legacy:
            assert not {s for a in group._group_actions for s in a.option_strings} & LEGACY, group.title


@pytest.mark.parametrize(("argv", "expected"), [
    pytest.param(["plan", "--all"], "unrecognized arguments: --all", id="plan --all"),
    pytest.param(["plan", "--monitor-duration", "3"], "unrecognized arguments: --monitor-duration 3",
                 id="plan --monitor-duration"),
    pytest.param(["status", "--force"], "unrecognized arguments: --force", id="status --force"),
    pytest.param(["logs", "x", "-f", "m"], "unrecognized arguments: -f m", id="logs -f"),
])
def test_a_flag_a_command_ignores_is_refused(argv: list[str], expected: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse(argv)

    assert exc.value.code == 1
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "field", "value"), [
    pytest.param(["--install"], "install_only", True, id="--install"),
    pytest.param(["--all"], "command", "run", id="--all runs the loop"),
    pytest.param(["--monitor", "--monitor-duration", "3"], "monitor_duration_s", 3.0, id="--monitor-duration"),
    pytest.param(["--sequential"], "max_parallel_installs", 1, id="--sequential"),
    pytest.param(["--state-dir", "/s", "status"], "state_dir", "/s", id="a flag before the subcommand is kept"),
    pytest.param(["events", "--since", "2h"], "since_s", 7200.0, id="--since 2h"),
    pytest.param(["events", "--since", "90"], "since_s", 90.0, id="--since in plain seconds"),
])
def test_the_legacy_and_global_spellings_still_parse(argv: list[str], field: str, value: object) -> None:
    assert getattr(cli.parse(argv), field) == value


def test_help_runs_as_a_program_and_shows_defaults() -> None:
    done = subprocess.run([sys.executable, "-m", "mcp_reconcile", "apply", "--help"], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 0, done.stderr
    assert "--max-parallel-installs N" in done.stdout and "(default: 4)" in flat(done.stdout)
    assert "--all" not in done.stdout and "--monitor" not in done.stdout


def readme_rows() -> list[tuple[str, set[str]]]:
    """(command, the --flags its row of the README's command table names)."""
    rows = []
    for line in README.read_text().splitlines():
        match = re.match(r"^\| `mcp-reconcile ([a-z-]+|\[)", line)
        if match and (match.group(1) in HONOURED or match.group(1) == "["):
            rows.append((match.group(1), set(re.findall(r"(?<![\w-])--[a-z][a-z-]+|(?<![\w-])-[a-z]\b", line))))
    return rows


def test_the_readme_names_each_commands_own_flags_only() -> None:
    rows = readme_rows()
    assert {command for command, _ in rows} >= set(HONOURED) - {"apply"}, rows

    for command, flags in rows:
        allowed = HONOURED.get(command, {s for a in cli.build_parser()._actions for s in a.option_strings})
        allowed |= {"--dry-run"} if command == "plan" else set()   # "plan (or bare --dry-run)"
        assert flags <= allowed | SHARED, f"README row of {command}: {flags - allowed}"
    assert next(flags for command, flags in rows if command == "[") >= {"--install", "--test", "--monitor", "--all"}
