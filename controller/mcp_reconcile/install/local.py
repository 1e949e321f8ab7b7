"""Path sources: a server file that runs in place; nothing is installed.

The install only checks that the file is there and writes the record, so observation sees the
server "installed" like any other. Change detection stays generation-based; the file's sha256
prefix is recorded as its version for the audit trail only.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mcp_reconcile.errors import PermanentError
from mcp_reconcile.install import new_record
from mcp_reconcile.install.prereq import JS_SUFFIXES, find_executable
from mcp_reconcile.install.retry import ACTION
from mcp_reconcile.model import ServerSpec
from mcp_reconcile.store import InstallRecord

# Hex digits of the file's sha256 recorded as its "version".
DIGEST_CHARS = 12


def script_path(spec: ServerSpec) -> Path:
    """The server file (absolute; the manifest loader makes it so, relative ones resolve from cwd)."""
    return Path(spec.source.ref).expanduser().absolute()


class LocalInstaller:
    kind = "path"

    async def install(self, spec: ServerSpec, target: Path, *, env: Mapping[str, str]) -> InstallRecord:
        path = script_path(spec)
        if not path.is_file():
            raise PermanentError(spec.name, ACTION, f"local server file {path} not found")
        command = self.command_for(spec, None)
        return new_record(spec, target, installer="local", resolved_version=_digest(path), command=command)

    def command_for(self, spec: ServerSpec, record: InstallRecord | None) -> list[str]:
        """How to run the file: spec.command as its interpreter if given, else by its suffix.

        The path is appended to spec.command unless the command or the args already name it.
        """
        path = script_path(spec)
        if spec.command:
            named = {spec.source.ref, str(path)}
            mentioned = any(part in named for part in (*spec.command, *spec.args))
            return list(spec.command) if mentioned else [*spec.command, str(path)]
        if path.suffix == ".py":
            return [sys.executable, str(path)]
        if path.suffix in JS_SUFFIXES:
            return [find_executable("node") or "node", str(path)]
        if os.access(path, os.X_OK):
            return [str(path)]
        raise PermanentError(spec.name, ACTION, f"do not know how to run {path} (not .py, .js or .mjs, and not "
                                                "executable); set spec.command")

    def bin_dir(self, record: InstallRecord) -> Path | None:
        return None


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            sha.update(block)
    return sha.hexdigest()[:DIGEST_CHARS]
