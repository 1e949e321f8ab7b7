"""Small operator-facing fixes (issue 13): a failed action names its server once; `stop-all` on a state dir
that does not exist says so, exits 1 and creates nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mcp_reconcile.apply import Outcome
from mcp_reconcile.model import Action, ActionKind
from mcp_reconcile.oneshot import print_outcome

RunCli = Callable[[Sequence[str]], tuple[int, str, str]]


def test_a_failed_action_names_its_server_once(capsys: pytest.CaptureFixture[str]) -> None:
    action = Action(ActionKind.install, "py", "new server")
    print_outcome(Outcome(action, False, error="py: install failed: no matching distribution"))

    assert capsys.readouterr().out == "  FAILED install   py: install failed: no matching distribution\n"


def test_stop_all_on_a_mistyped_state_dir_exits_1_and_creates_nothing(run_cli: RunCli, tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    code, out, err = run_cli(["stop-all", "--state-dir", str(typo)])

    assert (code, out) == (1, "")
    assert err == (f"error: {typo}: no such state dir, so no runners to stop (check --state-dir or "
                   "$MCP_RECONCILE_STATE_DIR)\n")
    assert not typo.exists()
