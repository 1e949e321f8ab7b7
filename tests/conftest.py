"""Shared fixtures, kept generic: a tmp state dir, a manifest writer, and the CLI run in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import structlog

from mcp_reconcile.store import StateDir

# (exit code, stdout, stderr) of one in-process CLI run.
CliResult = tuple[int, str, str]


@pytest.fixture
def state_dir(tmp_path: Path) -> StateDir:
    """A StateDir under tmp_path; not created on disk until something writes to it."""
    return StateDir(tmp_path / "state")


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """`write_manifest(text, name="manifest.yaml")` writes dedented text under tmp_path/manifests/."""

    def write(text: str, name: str = "manifest.yaml") -> Path:
        path = tmp_path / "manifests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[Sequence[str]], CliResult]]:
    """`run_cli(argv)` calls `mcp_reconcile.cli.main` in-process and returns (code, stdout, stderr).

    argparse's SystemExit becomes an exit code; any other exception propagates (a traceback is a bug).
    The global structlog configuration a command sets up is restored afterwards.
    """
    from mcp_reconcile import cli

    saved = structlog.get_config()

    def run(argv: Sequence[str]) -> CliResult:
        capsys.readouterr()  # drop whatever an earlier step printed
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    structlog.configure(**saved)
