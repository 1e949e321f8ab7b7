"""npm sources: an isolated `npm install --prefix DIR` per server, never global.

The server's command is its package's `bin`, started through `DIR/node_modules/.bin/<bin>`; the
exact version installed comes from `DIR/node_modules/PKG/package.json`, so an unpinned spec still
records what it got.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from mcp_reconcile.errors import PermanentError
from mcp_reconcile.install import new_record, own_command, package_command
from mcp_reconcile.install.prereq import NPM_HINT, find_executable
from mcp_reconcile.install.retry import ACTION, Manager, Rule, Sleep, retrying, run_manager
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.store import InstallRecord

# A cold install of a reference server takes ~4 s here; a slow registry or big tree gets much longer.
NPM_INSTALL_TIMEOUT_S = 300.0
BIN_SUBDIR = Path("node_modules") / ".bin"

def _npm_line(line: str) -> str:
    """One line of npm's output without its `npm error` prefix and tag, or "" for chatter."""
    text = re.sub(r"^npm (error|ERR!|warn|WARN|notice)\s*", "", line.strip())
    text = re.sub(r"^(notarget|404)\s+", "", text)
    if text.startswith(("A complete log of this run", "Note that you can also install", "tarball, folder")):
        return ""
    return text.strip()


NPM_FAILURES = Manager(
    tool="npm",
    rules=(
        Rule(r"No matching version found for", permanent=True),
        Rule(r"could not be found or you do not have permission", permanent=True),
        Rule(r"\bNot Found\b", permanent=True),
        Rule(r"\b(E404|ETARGET|ENOVERSIONS)\b", permanent=True),
        Rule(r"\b(EINVALIDTAGNAME|EINVALIDPACKAGENAME|EUNSUPPORTEDPROTOCOL|ERESOLVE|EBADPLATFORM)\b",
             permanent=True),
        Rule(r"\b(ECONNRESET|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED|ENOTFOUND|ENETUNREACH|ESOCKETTIMEDOUT)\b",
             permanent=False),
        Rule(r"\bE5\d\d\b|\b5\d\d (Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)",
             permanent=False),
        Rule(r"(?i)socket hang up|\bnetwork\b|timed out", permanent=False),
    ),
    clean=_npm_line,
)


def split_ref(ref: str) -> tuple[str, str | None]:
    """`@scope/pkg@1.2` -> ("@scope/pkg", "1.2"); `pkg` -> ("pkg", None)."""
    at = ref.rfind("@")
    if at > 0:
        return ref[:at], ref[at + 1:] or None
    return ref, None


_EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")


class NpmInstaller:
    kind = "npm"

    def __init__(self, *, sleep: Sleep | None = None, npm: str | None = None) -> None:
        self._sleep = sleep
        self._npm = npm

    async def install(self, spec: ServerSpec, target: Path, *, env: Mapping[str, str]) -> InstallRecord:
        """`npm install` the spec's package into `target` and read back version and command."""
        ref = spec.source.ref
        package, version = split_ref(ref)
        npm = self._npm or find_executable("npm")
        if npm is None:
            raise PermanentError(spec.name, ACTION, f"npm not found on PATH: {NPM_HINT}")
        argv = [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error", ref]
        if _EXACT_VERSION.match(version or ""):
            # an exact pin cannot move: take package metadata from the cache when it is there (npm still
            # goes to the registry for anything the cache lacks), which spares a metadata round trip per package
            argv.insert(2, "--prefer-offline")
        env = {**env, "npm_config_update_notifier": "false"}
        await retrying(lambda: run_manager(argv, NPM_FAILURES, server=spec.name, package=package, ref=ref,
                                           env=env, timeout_s=NPM_INSTALL_TIMEOUT_S, cwd=str(target)),
                       server=spec.name, source=str(spec.source), sleep=self._sleep)
        manifest = _package_json(spec.name, target, package)
        version = str(manifest.get("version", ""))
        bin_dir = target / BIN_SUBDIR

        def linked_bin() -> list[str]:
            linked = bin_dir / _bin_name(spec.name, package, manifest)
            if not linked.exists():
                raise PermanentError(spec.name, ACTION, f"npm did not link {linked}; set spec.command")
            return [str(linked)]

        return new_record(spec, target, installer="npm", resolved_version=version,
                          command=own_command(spec, linked_bin))

    def command_for(self, spec: ServerSpec, record: InstallRecord) -> list[str]:
        return package_command(spec, record, self.bin_dir(record))

    def bin_dir(self, record: InstallRecord) -> Path | None:
        return Path(record["dir"]) / BIN_SUBDIR


def _package_json(server: str, target: Path, package: str) -> dict[str, object]:
    path = target / "node_modules" / package / "package.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PermanentError(server, ACTION, f"npm: {package} not installed as expected ({path}: {exc})") from exc
    if not isinstance(data, dict):
        raise PermanentError(server, ACTION, f"npm: {path} is not a package manifest")
    return data


def _bin_name(server: str, package: str, manifest: dict[str, object]) -> str:
    """The command npm linked for the package: its only bin, or the one named like the package."""
    unscoped = package.rsplit("/", 1)[-1]
    declared = manifest.get("bin")
    if isinstance(declared, str) and declared:
        return unscoped
    if isinstance(declared, dict) and declared:
        if len(declared) == 1:
            return str(next(iter(declared)))
        if unscoped in declared:
            return unscoped
        names = ", ".join(sorted(str(k) for k in declared))
        raise PermanentError(server, ACTION,
                             f"{package} has several commands ({names}); set spec.command to the one to run")
    raise PermanentError(server, ACTION, f"{package} declares no command (no `bin` in package.json); "
                                         "set spec.command")
