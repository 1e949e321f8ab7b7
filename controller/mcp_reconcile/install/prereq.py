"""What a server needs on the host before it can be installed (SPEC section 5), and where to find it.

npm sources need `node` >= 18 and `npm` on PATH; pypi sources need the bundled `uv` or a python with
`venv`; a `.js` path source needs `node`. Checks have no side effects: the one command they run,
`node --version`, is cached per binary (path + mtime) and runs with a minimal environment (`probe_env`: PATH,
HOME, locale and the like, never a secret). `${VAR}`s are the manifest loader's job.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from mcp_reconcile import proc
from mcp_reconcile.errors import PrerequisiteError
from mcp_reconcile.model import ALWAYS_INHERITED, ServerSpec

MIN_NODE_MAJOR = 18
# `node --version` answers in well under a second; more means a broken install.
NODE_VERSION_TIMEOUT_S = 10.0
NODE_HINT = f"install Node.js {MIN_NODE_MAJOR}+ from https://nodejs.org or your package manager"
NPM_HINT = f"install npm (it ships with Node.js {MIN_NODE_MAJOR}+ from https://nodejs.org; Debian: apt install npm)"
PYTHON_HINT = "pip install uv (recommended), or install python3-venv so that `python3 -m venv` works"
JS_SUFFIXES = (".js", ".mjs", ".cjs")

_node_versions: dict[tuple[str, int], str | None] = {}
_node_versions_lock = threading.Lock()


def check_prerequisites(spec: ServerSpec) -> list[PrerequisiteError]:
    """Every missing host tool for `spec`, each with how to get it; empty when all is there."""
    kind = spec.source.kind
    if kind == "npm":
        return _node_problems(spec.name) + _npm_problems(spec.name)
    if kind == "pypi":
        return _python_problems(spec.name)
    if kind == "path" and spec.command is None and spec.source.ref.endswith(JS_SUFFIXES):
        return _node_problems(spec.name)
    return []


def find_executable(name: str, *, first_in: Path | None = None, path: str | None = None) -> str | None:
    """Absolute path of `name`, looked up in `first_in` (an install's bin dir) before PATH."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    if first_in is not None:
        candidate = first_in / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name, path=path if path is not None else os.environ.get("PATH", os.defpath))


def uv_binary() -> str | None:
    """The uv that ships as the `uv` PyPI wheel beside this controller, if it is there."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return None


def venv_available() -> bool:
    """Whether `sys.executable -m venv` can make a venv with pip (Debian splits ensurepip out)."""
    return all(importlib.util.find_spec(mod) is not None for mod in ("venv", "ensurepip"))


def node_version(node: str) -> str | None:
    """`node --version` of this binary ("v20.1.0"), cached by path and mtime; None if it will not run."""
    try:
        key = (node, os.stat(node).st_mtime_ns)
    except OSError:
        return None
    with _node_versions_lock:
        if key in _node_versions:
            return _node_versions[key]
    version = _run_for_output([node, "--version"], timeout_s=NODE_VERSION_TIMEOUT_S)
    with _node_versions_lock:
        _node_versions[key] = version
    return version


def node_major(version: str) -> int | None:
    match = re.match(r"v?(\d+)\.", version)
    return int(match.group(1)) if match else None


def _node_problems(server: str) -> list[PrerequisiteError]:
    node = find_executable("node")
    if node is None:
        return [PrerequisiteError(server, f"node >= {MIN_NODE_MAJOR} not found on PATH", NODE_HINT)]
    version = node_version(node)
    major = node_major(version) if version else None
    if major is None:
        return [PrerequisiteError(server, f"node >= {MIN_NODE_MAJOR} not found ({node} --version failed)",
                                  NODE_HINT)]
    if major < MIN_NODE_MAJOR:
        return [PrerequisiteError(server, f"node >= {MIN_NODE_MAJOR} not found (found {version})", NODE_HINT)]
    return []


def _npm_problems(server: str) -> list[PrerequisiteError]:
    if find_executable("npm") is None:
        return [PrerequisiteError(server, "npm not found on PATH", NPM_HINT)]
    return []


def _python_problems(server: str) -> list[PrerequisiteError]:
    if uv_binary() is not None or venv_available():
        return []
    return [PrerequisiteError(server, "neither uv nor python3 with venv found", PYTHON_HINT)]


def probe_env() -> dict[str, str]:
    """What a host-tool probe runs with: the variables every child inherits, none of the controller's others."""
    return {k: v for k, v in os.environ.items() if k in ALWAYS_INHERITED}


def _run_for_output(argv: Sequence[str], *, timeout_s: float) -> str | None:
    """Stripped stdout of a short command, or None; usable with or without a running event loop.

    proc.run_command is async and callers of the checks may be inside a loop, so it runs on a
    private loop in a short-lived thread.
    """
    result: list[str | None] = [None]

    def work() -> None:
        try:
            done = asyncio.run(proc.run_command(argv, env=probe_env(), timeout_s=timeout_s))
        except OSError:
            return
        if done.returncode == 0 and not done.timed_out:
            result[0] = done.stdout.strip()

    thread = threading.Thread(target=work, name="prereq-check", daemon=True)
    thread.start()
    thread.join(timeout_s + proc.COMMAND_KILL_GRACE_S + 5.0)
    return result[0]


__all__ = ["check_prerequisites", "find_executable", "node_version", "uv_binary", "venv_available"]
