"""PyPI sources: a venv per server at `DIR/venv`, filled by the bundled uv (pip as the fallback).

The venv is made `--relocatable` because it is built in a staging dir and renamed into place; the
pip fallback's scripts carry absolute shebangs, so its command runs the script through the venv's
python instead. Version and console script are read from the installed dist-info.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping
from importlib.metadata import PathDistribution
from pathlib import Path

import structlog

from mcp_reconcile import proc
from mcp_reconcile.errors import PermanentError
from mcp_reconcile.install import new_record, own_command, package_command
from mcp_reconcile.install.prereq import PYTHON_HINT, uv_binary, venv_available
from mcp_reconcile.install.retry import ACTION, Manager, Rule, Sleep, retrying, run_manager
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.store import InstallRecord

# Making a venv is local work (~0.1 s with uv, a few s with ensurepip).
VENV_TIMEOUT_S = 120.0
# uv installs mcp-server-time cold in ~1.7 s here; pip and big dependency trees take far longer.
PIP_INSTALL_TIMEOUT_S = 600.0
BIN_SUBDIR = Path("venv") / "bin"

log = structlog.get_logger("mcp_reconcile")


def _uv_line(line: str) -> str:
    text = re.sub(r"^\s*(error:|cause:|Caused by:|╰─▶|\u00d7)\s*", "", line)
    return re.sub(r",? we can conclude that your requirements? (are|is) unsatisfiable\.?$", "", text).strip()


def _pip_line(line: str) -> str:
    return re.sub(r"^\s*(ERROR:|WARNING:)\s*", "", line).strip()


UV_FAILURES = Manager(
    tool="uv",
    rules=(
        Rule(r"not found in the package registry", permanent=True),
        Rule(r"there is no version of|no versions of", permanent=True),
        Rule(r"No solution found", permanent=True),
        Rule(r"(?i)failed to parse|invalid requirement|expected package name", permanent=True),
        Rule(r"\b5\d\d\b.*(?i:server error|unavailable|bad gateway|gateway)", permanent=False),
        Rule(r"(?i)error sending request|failed to fetch|dns error|connection (reset|refused|closed)"
             r"|timed out|\bnetwork\b", permanent=False),
    ),
    clean=_uv_line,
)

PIP_FAILURES = Manager(
    tool="pip",
    rules=(  # pip says "no matching distribution" after failed retries too: network signs come first
        Rule(r"Retrying \(Retry|NewConnectionError|ConnectionResetError|Read timed out"
             r"|Temporary failure in name resolution|HTTP error 5\d\d", permanent=False),
        Rule(r"No matching distribution found for", permanent=True),
        Rule(r"Could not find a version that satisfies", permanent=True),
        Rule(r"(?i)invalid requirement", permanent=True),
    ),
    clean=_pip_line,
)

_PROJECT = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(?:[@<>=!~;(]|$)")


def project_name(server: str, ref: str) -> str:
    """The project a requirement installs: `mcp-server-time==1` -> `mcp-server-time`."""
    match = _PROJECT.match(ref)
    if match is None:
        raise PermanentError(server, ACTION, f"cannot tell the project name of {ref!r}; write it as "
                                             "`name==version` or `name @ url`")
    return match.group(1)


def normalise(name: str) -> str:
    """PEP 503 name normalisation, used to match dists and scripts to the project."""
    return re.sub(r"[-_.]+", "-", name).lower()


class PypiInstaller:
    kind = "pypi"

    def __init__(self, *, sleep: Sleep | None = None) -> None:
        self._sleep = sleep

    async def install(self, spec: ServerSpec, target: Path, *, env: Mapping[str, str]) -> InstallRecord:
        """Make `target/venv`, install the requirement into it, and read back version and script."""
        ref = spec.source.ref
        project = project_name(spec.name, ref)
        venv = target / "venv"
        python = venv / "bin" / "python"
        uv = await self._make_venv(spec, venv, env=env)
        if uv is not None:
            argv = [uv, "pip", "install", "--python", str(python), ref]
            manager, installer = UV_FAILURES, "uv"
        else:
            argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", ref]
            manager, installer = PIP_FAILURES, "pip"
        env = {**env, "UV_NO_PROGRESS": "1"}
        await retrying(lambda: run_manager(argv, manager, server=spec.name, package=project, ref=ref, env=env,
                                           timeout_s=PIP_INSTALL_TIMEOUT_S),
                       server=spec.name, source=str(spec.source), sleep=self._sleep)
        dist = _find_dist(spec.name, venv, project)
        bin_dir = venv / "bin"

        def console_script() -> list[str]:
            script = str(bin_dir / _console_script(spec.name, project, dist))
            return [script] if installer == "uv" else [str(python), script]

        return new_record(spec, target, installer=installer, resolved_version=dist.version,
                          command=own_command(spec, console_script))

    def command_for(self, spec: ServerSpec, record: InstallRecord) -> list[str]:
        return package_command(spec, record, self.bin_dir(record))

    def bin_dir(self, record: InstallRecord) -> Path | None:
        return Path(record["dir"]) / BIN_SUBDIR

    async def _make_venv(self, spec: ServerSpec, venv: Path, *, env: Mapping[str, str]) -> str | None:
        """Create the venv with uv and return uv's path; with `python -m venv` (None) when uv cannot run.
        Both run with the installer's `env`, which holds no manifest's ${VAR} secrets."""
        uv = uv_binary()
        why = "uv not found (the `uv` package is missing or has no binary)"
        if uv is not None:
            try:
                made = await proc.run_command([uv, "venv", "--relocatable", "--quiet", "--python", sys.executable,
                                               str(venv)], env=env, timeout_s=VENV_TIMEOUT_S)
            except OSError as exc:
                why = f"{uv} cannot run: {exc}"
            else:
                if made.returncode == 0 and not made.timed_out:
                    return uv
                why = f"`uv venv` failed: {_last_line(made.stderr) or f'exit {made.returncode}'}"
            shutil.rmtree(venv, ignore_errors=True)
        if not venv_available():
            raise PermanentError(spec.name, ACTION, f"{why}, and {sys.executable} has no venv: {PYTHON_HINT}")
        log.warning("install.fallback", server=spec.name, source=str(spec.source), installer="pip", reason=why)
        made = await proc.run_command([sys.executable, "-m", "venv", str(venv)], env=env, timeout_s=VENV_TIMEOUT_S)
        if made.returncode != 0 or made.timed_out:
            reason = _last_line(made.stderr) or f"exit {made.returncode}"
            raise PermanentError(spec.name, ACTION, f"python -m venv failed: {reason}")
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _find_dist(server: str, venv: Path, project: str) -> PathDistribution:
    """The installed dist-info of `project` in the venv's site-packages (never the controller's own)."""
    wanted = normalise(project)
    for info in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
        dist = PathDistribution(info)
        try:
            name = dist.metadata["Name"]
        except (OSError, TypeError):  # a dist-info without METADATA
            continue
        if name and normalise(name) == wanted:
            return dist
    raise PermanentError(server, ACTION, f"{project} is not in {venv} after the install")


def _console_script(server: str, project: str, dist: PathDistribution) -> str:
    """The dist's only console script, or the one named like the project."""
    scripts = sorted(ep.name for ep in dist.entry_points.select(group="console_scripts"))
    if len(scripts) == 1:
        return scripts[0]
    wanted = normalise(project)
    matching = [s for s in scripts if normalise(s) == wanted]
    if len(matching) == 1:
        return matching[0]
    if not scripts:
        raise PermanentError(server, ACTION, f"{project} declares no console script; set spec.command")
    raise PermanentError(server, ACTION, f"{project} has several console scripts ({', '.join(scripts)}); "
                                         "set spec.command to the one to run")
